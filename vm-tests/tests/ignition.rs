//! Ignition at first boot: a user's config, from any of the places Flatcar reads one, turns
//! the generic image into their machine; base configs from the initrd and a vendor's OEM
//! partition merge under it; a bad config stops first boot before anything is written, and
//! secrets never reach the console.

use base64::Engine;
use keel_disk::LayoutSizes;
use keel_test_support::ignition::Snapshot;
use keel_vm_tests::{
    artifacts, assert_reached_real_init, assert_refused, boot_machine, build_vendor_fixture, cmdline_with_esp_kernel_args, disk_copy, esp_has_flag,
    file_digest, resize_disk, root_snapshot, shared_fixture, stage_millis, test_sizes, workspace, Bus, Console, Disk, Fixture, Machine, Vendor,
    RESULT_FILE,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(180);
/// What no console line may show: the user's password hash and SSH key.
const PASSWORD_HASH: &str = "$6$keelsalt$SecretHashThatMustNeverBePrinted";
const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeelTestKeyNeverPrinted core@keel";

/// A user with a password and an SSH key, a file they own, a unit enabled by preset and a
/// drop-in for another unit: the config of the first scenarios.
fn user_config() -> String {
    serde_json::json!({
        "ignition": {"version": "3.4.0"},
        "passwd": {"users": [{"name": "core", "passwordHash": PASSWORD_HASH, "sshAuthorizedKeys": [SSH_KEY]}]},
        "storage": {"files": [{"path": "/home/core/hello", "contents": {"source": "data:,hello%0A"}, "mode": 0o600, "user": {"name": "core"}}]},
        "systemd": {"units": [
            {"name": "hello.service", "enabled": true, "contents": "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"},
            {"name": "getty@.service", "dropins": [{"name": "10-keel.conf", "contents": "[Service]\nTTYVTDisallocate=no\n"}]}
        ]}
    })
    .to_string()
}

fn write_config(dir: &Path, name: &str, config: &str) -> PathBuf {
    let path = dir.join(format!("{name}.ign"));
    std::fs::write(&path, config).unwrap();
    path
}

fn boot_disk(fixture: &Fixture, disk: &Path, firmware_config: Option<&Path>, cmdline: &str) -> Console {
    let machine = Machine {
        kernel: &artifacts().unwrap().kernel,
        disks: vec![Disk::of_fixture(Bus::Virtio, disk, fixture)],
        plugged_in_later: None,
        firmware_config,
    };
    boot_machine(&machine, &fixture.initrd, cmdline, TIMEOUT, "unsafe", |_, _| false).unwrap()
}

fn node<'a>(tree: &'a Snapshot, path: &str) -> &'a keel_test_support::ignition::Node {
    tree.get(path).unwrap_or_else(|| panic!("ROOT has no /{path}; it has {:?}", tree.keys().collect::<Vec<_>>()))
}

fn text(tree: &Snapshot, path: &str) -> String {
    String::from_utf8_lossy(node(tree, path).contents.as_deref().unwrap_or_default()).into_owned()
}

fn assert_no_secret(console: &Console) {
    for secret in [PASSWORD_HASH, "SecretHashThatMustNeverBePrinted", "KeelTestKeyNeverPrinted"] {
        assert!(!console.has(secret), "a secret reached the console:\n{}", console.text);
    }
}

/// The machine `user_config` describes, as ROOT holds it after first boot.
fn assert_provisioned(tree: &Snapshot) {
    let passwd = text(tree, "etc/passwd");
    assert!(passwd.lines().any(|line| line.starts_with("core:") && line.contains(":1000:")), "{passwd}");
    let key = node(tree, "home/core/.ssh/authorized_keys.d/ignition");
    assert_eq!((key.mode, key.uid), (0o600, 1000));
    assert_eq!(text(tree, "home/core/.ssh/authorized_keys.d/ignition"), format!("{SSH_KEY}\n"));
    assert_eq!((node(tree, "home/core/.ssh").mode, node(tree, "home/core/.ssh").uid), (0o700, 1000));
    let hello = node(tree, "home/core/hello");
    assert_eq!((hello.mode, hello.uid, hello.contents.as_deref()), (0o600, 1000, Some(&b"hello\n"[..])));
    assert!(text(tree, "etc/systemd/system/hello.service").contains("ExecStart=/bin/true"));
    assert_eq!(text(tree, "etc/systemd/system-preset/20-ignition.preset"), "enable hello.service\n");
    assert!(text(tree, "etc/systemd/system/getty@.service.d/10-keel.conf").contains("TTYVTDisallocate=no"));
    let result: serde_json::Value = serde_json::from_str(&text(tree, RESULT_FILE)).unwrap();
    assert_eq!(result["userConfigProvided"], true, "{result}");
    assert_eq!(node(tree, RESULT_FILE).mode, 0o600);
}

/// First boot with the config from wherever `firmware_config` and `cmdline` put it, then a
/// later boot (which runs no Ignition stage), then a first boot forced again by the command
/// line (which applies the config again): ROOT is the provisioned machine after the first,
/// and neither of the others changes it.
fn provisions_and_converges(fixture: &Fixture, disk: &Path, firmware_config: Option<&Path>, cmdline: &str, source: &str) {
    let first = boot_disk(fixture, disk, firmware_config, cmdline);
    assert_reached_real_init(&first);
    assert_no_secret(&first);
    assert!(first.has(&format!("ignition-fetch: user config from {source}")), "{}", first.text);
    for stage in ["ignition-disks: ", "ignition-files: "] {
        assert!(first.has(stage), "no {stage} in:\n{}", first.text);
    }
    let provisioned = root_snapshot(disk).unwrap();
    assert_provisioned(&provisioned);
    assert!(!esp_has_flag(disk).unwrap(), "first boot did not finish");

    let later = boot_disk(fixture, disk, firmware_config, cmdline);
    assert_reached_real_init(&later);
    assert!(!later.has("] ignition-"), "a later boot ran an Ignition stage:\n{}", later.text);
    let after_later = root_snapshot(disk).unwrap();
    let differences = keel_test_support::ignition::tree_differences("first boot", &provisioned, "later boot", &after_later);
    assert!(differences.is_empty(), "{}", differences.join("\n"));

    let again = boot_disk(fixture, disk, firmware_config, &format!("{cmdline} ignition.firstboot"));
    assert_reached_real_init(&again);
    assert!(again.has("ignition-files: 1 operations applied"), "a second apply did more than rewrite the result file:\n{}", again.text);
    let after_again = root_snapshot(disk).unwrap();
    let differences = keel_test_support::ignition::tree_differences("first boot", &provisioned, "second apply", &after_again);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[test]
fn a_config_through_qemu_fw_cfg_provisions_users_keys_files_and_units_and_later_boots_change_nothing() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "ignition-fw-cfg").unwrap();
    let config = write_config(&fixture.dir, "ignition-fw-cfg", &user_config());
    provisions_and_converges(fixture, &disk, Some(&config), "", "QEMU fw_cfg opt/org.flatcar-linux/config");
    let _ = std::fs::remove_file(&disk);
}

#[test]
fn a_config_in_a_data_url_on_the_kernel_command_line_provisions_the_machine() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "ignition-data-url").unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(user_config());
    let cmdline = format!("ignition.config.url=data:;base64,{encoded}");
    provisions_and_converges(fixture, &disk, None, &cmdline, "the kernel command line's ignition.config.url");
    let _ = std::fs::remove_file(&disk);
}

/// A directory of Ignition files: (path under it, config).
fn config_tree(dir: &Path, files: &[(&str, String)]) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    for (path, config) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, config).unwrap();
    }
    dir.to_path_buf()
}

#[test]
fn the_oem_partitions_config_ign_provisions_the_machine_and_beats_fw_cfg() {
    let scratch = shared_fixture().unwrap().dir.join("ignition-oem-tree");
    let tree = config_tree(&scratch, &[("config.ign", user_config())]);
    let fixture = build_vendor_fixture("ignition-oem", test_sizes(), &Vendor { oem: Some(&tree), ignition_base: None }).unwrap();
    let disk = disk_copy(&fixture, "ignition-oem").unwrap();
    // Ignition asks the system config (Flatcar's OEM config.ign) before the platform's.
    let ignored = write_config(&fixture.dir, "ignored", r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/from-fw-cfg"}]}}"#);
    provisions_and_converges(&fixture, &disk, Some(&ignored), "", "OEM partition /config.ign");
    assert!(!root_snapshot(&disk).unwrap().contains_key("etc/from-fw-cfg"), "fw_cfg's config was applied too");
    let _ = std::fs::remove_file(&disk);
}

#[test]
fn base_configs_from_the_initrd_then_the_oem_partition_then_the_platform_merge_under_the_user_config() {
    let file = |path: &str, contents: &str| serde_json::json!({"path": path, "contents": {"source": format!("data:,{contents}")}, "overwrite": true});
    let config = |files: Vec<serde_json::Value>| serde_json::json!({"ignition": {"version": "3.4.0"}, "storage": {"files": files}}).to_string();
    let scratch = shared_fixture().unwrap().dir.join("ignition-bases");
    // Each later layer overrides the earlier ones on the files they share; the user config
    // overrides all of them.
    let initrd = config_tree(
        &scratch.join("initrd"),
        &[
            (
                "base.d/10-initrd.ign",
                config(vec![file("/etc/layer", "initrd-base"), file("/etc/initrd-only", "initrd"), file("/etc/motd", "initrd")]),
            ),
            ("base.platform.d/qemu/10-initrd.ign", config(vec![file("/etc/platform-layer", "initrd-platform")])),
        ],
    );
    let oem = config_tree(
        &scratch.join("oem"),
        &[
            ("base/10-vendor.ign", config(vec![file("/etc/layer", "oem-base"), file("/etc/vendor", "vendor")])),
            ("base.platform.d/qemu/10-qemu.ign", config(vec![file("/etc/platform-layer", "oem-platform"), file("/etc/platform", "qemu")])),
            ("base.platform.d/metal/10-metal.ign", config(vec![file("/etc/platform", "metal"), file("/etc/metal-only", "metal")])),
        ],
    );
    let fixture = build_vendor_fixture("ignition-bases", test_sizes(), &Vendor { oem: Some(&oem), ignition_base: Some(&initrd) }).unwrap();
    let disk = disk_copy(&fixture, "ignition-bases").unwrap();
    let user = write_config(&fixture.dir, "ignition-bases-user", &config(vec![file("/etc/motd", "user")]));

    let console = boot_disk(&fixture, &disk, Some(&user), "");
    assert_reached_real_init(&console);
    assert!(console.has("4 base configs; platform qemu"), "{}", console.text);
    let root = root_snapshot(&disk).unwrap();
    for (path, expected) in [
        ("etc/layer", "oem-base"),
        ("etc/initrd-only", "initrd"),
        ("etc/vendor", "vendor"),
        ("etc/platform-layer", "oem-platform"),
        ("etc/platform", "qemu"),
        ("etc/motd", "user"),
    ] {
        assert_eq!(text(&root, path), expected, "/{path}");
    }
    assert!(!root.contains_key("etc/metal-only"), "another platform's base config was applied");

    // The platform the command line names is the one whose base configs apply, and, as in
    // Ignition, the platform decides where the user config comes from: metal reads no fw_cfg.
    let metal = disk_copy(&fixture, "ignition-bases-metal").unwrap();
    let console = boot_disk(&fixture, &metal, Some(&user), "ignition.platform.id=metal");
    assert_reached_real_init(&console);
    assert!(console.has("ignition-fetch: no user config; 3 base configs; platform metal"), "{}", console.text);
    let root = root_snapshot(&metal).unwrap();
    assert_eq!(
        (text(&root, "etc/platform"), text(&root, "etc/metal-only"), text(&root, "etc/motd")),
        ("metal".into(), "metal".into(), "initrd".into())
    );
    assert!(!root.contains_key("etc/platform-layer"), "qemu's base configs were applied on metal");
    let _ = std::fs::remove_file(&disk);
    let _ = std::fs::remove_file(&metal);
}

/// docs/vendors.md's worked example, on the default layout (1 GiB USR-A, 4 GiB disk): the
/// image built with `--oem ignition-examples/oem` provisions the machine with the vendor's
/// base configs, its qemu platform config and its config.ign.
#[test]
fn the_vendor_example_oem_partition_provisions_the_default_layout() {
    let oem = workspace().join("ignition-examples/oem");
    let fixture = build_vendor_fixture("ignition-vendor-example", LayoutSizes::default(), &Vendor { oem: Some(&oem), ignition_base: None }).unwrap();
    let disk = disk_copy(&fixture, "ignition-vendor-example").unwrap();
    resize_disk(&disk, 4 << 30).unwrap();
    let console = boot_disk(&fixture, &disk, None, "");
    assert_reached_real_init(&console);
    assert!(console.has("ignition-fetch: user config from OEM partition /config.ign"), "{}", console.text);
    let root = root_snapshot(&disk).unwrap();
    assert_eq!(text(&root, "etc/hostname"), "example-cloud-node\n");
    assert!(text(&root, "etc/sysctl.d/10-example-cloud.conf").contains("tcp_keepalive_time"));
    assert!(text(&root, "etc/systemd/timesyncd.conf.d/10-example-cloud.conf").contains("NTP=time.example-cloud.net"));
    assert!(text(&root, "etc/motd.d/10-example-cloud.conf").contains("Example Cloud"));
    assert!(text(&root, "etc/systemd/system/qemu-guest-agent.service").contains("qemu-ga"));
    assert_eq!(text(&root, "etc/systemd/system-preset/20-ignition.preset"), "enable qemu-guest-agent.service\n");
    eprintln!(
        "vendor example, default layout: ignition-fetch {:?} ms, ignition-disks {:?} ms, ignition-files {:?} ms",
        stage_millis(&console, "ignition-fetch"),
        stage_millis(&console, "ignition-disks"),
        stage_millis(&console, "ignition-files")
    );
    let _ = std::fs::remove_file(&disk);
}

#[test]
fn kernel_arguments_are_on_the_next_boots_command_line_after_exactly_one_reboot() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "ignition-kargs").unwrap();
    let config = serde_json::json!({
        "ignition": {"version": "3.4.0"},
        "kernelArguments": {"shouldExist": ["keel.karg=added", "nosmt", "keel.karg.quoted=\"two words\""], "shouldNotExist": ["keel.karg.drop=1"]},
        "storage": {"files": [{"path": "/etc/kargs-done", "contents": {"source": "data:,yes"}}]}
    });
    let config = write_config(&fixture.dir, "ignition-kargs", &config.to_string());
    // The boot loader's own arguments, one of which the config removes.
    let loader_arguments = "keel.karg.drop=1";
    let boot = || boot_disk(fixture, &disk, Some(&config), &cmdline_with_esp_kernel_args(&disk, loader_arguments).unwrap());

    let first = boot();
    assert!(first.has("rebooting so that the boot loader applies them"), "no reboot for the kernel arguments:\n{}", first.text);
    assert!(first.has("reboot: Restarting system"), "the machine did not restart:\n{}", first.text);
    assert!(first.real_init().is_empty() && !first.has("] ignition-disks: "), "first boot went on past ignition-kargs:\n{}", first.text);
    assert!(esp_has_flag(&disk).unwrap(), "the reboot ended first boot");

    let second = boot();
    assert_reached_real_init(&second);
    assert!(!second.has("rebooting so that"), "a second reboot:\n{}", second.text);
    assert!(second.has("ignition-kargs: the kernel arguments are on this boot's command line already"), "{}", second.text);
    let cmdline = second.real_init().into_iter().find_map(|line| line.strip_prefix("cmdline ")).unwrap_or_default().to_string();
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    assert!(words.contains(&"keel.karg=added") && words.contains(&"nosmt") && !words.contains(&"keel.karg.drop=1"), "{cmdline}");
    assert!(cmdline.contains("keel.karg.quoted=\"two words\""), "an argument with quoted spaces did not arrive whole: {cmdline}");
    assert_eq!(text(&root_snapshot(&disk).unwrap(), "etc/kargs-done"), "yes");
    assert!(!esp_has_flag(&disk).unwrap(), "first boot did not finish after the reboot");

    let later = boot();
    assert_reached_real_init(&later);
    assert!(!later.has("] ignition-") && later.has("keel.karg=added"), "{}", later.text);
    let _ = std::fs::remove_file(&disk);
}

/// A config that must stop first boot in ignition-fetch: the report names `reason`, nothing
/// on the disk changed (not even the disk's GUIDs or ROOT's size), and the flag stays.
fn refused_before_any_write(name: &str, config: &str, reason: &str) {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, name).unwrap();
    let config = write_config(&fixture.dir, name, config);
    let before = file_digest(&disk).unwrap();
    let console = boot_disk(fixture, &disk, Some(&config), "");
    assert_refused(&console, "ignition-fetch", reason);
    assert_no_secret(&console);
    assert_eq!(file_digest(&disk).unwrap(), before, "the refused config changed the disk");
    assert!(esp_has_flag(&disk).unwrap(), "the first-boot flag is gone");
    let _ = std::fs::remove_file(&disk);
}

#[test]
fn an_invalid_config_stops_first_boot_before_any_write_naming_the_json_path() {
    let mut config: serde_json::Value = serde_json::from_str(&user_config()).unwrap();
    config["storage"]["files"].as_array_mut().unwrap().push(serde_json::json!({"path": "etc/relative", "contents": {"source": "data:,x"}}));
    refused_before_any_write("ignition-invalid", &config.to_string(), "$.storage.files[1].path");
}

#[test]
fn a_file_whose_verification_hash_does_not_match_stops_first_boot_before_any_write() {
    let mut config: serde_json::Value = serde_json::from_str(&user_config()).unwrap();
    let wrong = format!("sha512-{}", "0".repeat(128));
    config["storage"]["files"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"path": "/etc/checked", "contents": {"source": "data:,x", "verification": {"hash": wrong}}}));
    refused_before_any_write("ignition-bad-hash", &config.to_string(), "$.storage.files[1].contents");
}
