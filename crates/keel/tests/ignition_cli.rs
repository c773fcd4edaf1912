//! `keel ignition validate|render|apply` as a user runs them: the examples in `ignition-examples/`
//! applied to a fresh base root (and again, to prove a rerun converges), validation verdicts and
//! their report lines, render's base order, and hostile input: huge configs, symlinks in the root
//! pointing outside it, unclean paths, deep and wide merge trees, a gzip bomb and a hash that fails
//! last. Each hostile run must fail (or, for symlinks, stay inside the root), leave a sentinel
//! directory outside the root byte for byte as it was, and keep its peak memory bounded.

use keel_test_support::ignition::{make_base_root, snapshot, today_and_yesterday, tree_differences, Snapshot};
use keel_test_support::scratch_dir;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ignition-examples");
const RESULT_FILE: &str = "etc/.ignition-result.json";
/// Far above what keel needs for any input here, far below the input held a few times over.
const PEAK_MEMORY_BOUND_KIB: u64 = 300 << 10;

fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel")).args(args).output().unwrap_or_else(|e| panic!("cannot run keel: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// A run that must succeed: its stdout.
fn succeeded(output: Output) -> String {
    assert!(output.status.success(), "keel failed:\nstdout: {}\nstderr: {}", text(&output.stdout), text(&output.stderr));
    text(&output.stdout)
}

/// A run that must fail with status 1: its stderr.
fn failed(output: Output) -> String {
    assert_eq!(output.status.code(), Some(1), "keel did not fail:\nstdout: {}\nstderr: {}", text(&output.stdout), text(&output.stderr));
    text(&output.stderr)
}

/// keel under GNU time: its output, and its peak resident memory in KiB.
fn keel_measured(dir: &Path, args: &[&str]) -> (Output, u64) {
    let peak_file = dir.join("peak-kib");
    let output = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&peak_file)
        .arg(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run /usr/bin/time: {e}"));
    let peak = fs::read_to_string(&peak_file).unwrap();
    // GNU time prefixes "Command exited with non-zero status N" when keel fails.
    let peak_kib = peak.lines().last().and_then(|line| line.trim().parse().ok()).unwrap_or_else(|| panic!("no peak in {peak:?}"));
    (output, peak_kib)
}

fn assert_bounded(what: &str, peak_kib: u64) {
    eprintln!("{what}: peak {} MiB", peak_kib >> 10);
    assert!(peak_kib < PEAK_MEMORY_BOUND_KIB, "{what} peaked at {} MiB", peak_kib >> 10);
}

/// A test's directory with `root/` made as a fresh base root, and `outside/` beside it: a sentinel
/// tree no apply may touch.
struct Scene {
    dir: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

impl Scene {
    fn new(name: &str) -> Scene {
        let dir = scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("ignition-cli-{name}"));
        let (root, outside) = (dir.join("root"), dir.join("outside"));
        make_base_root(&root);
        fs::create_dir_all(outside.join("etc")).unwrap();
        fs::write(outside.join("sentinel"), "outside the root\n").unwrap();
        fs::write(outside.join("etc/passwd"), "not the root's passwd\n").unwrap();
        Scene { dir, root, outside }
    }

    fn config(&self, name: &str, json: &str) -> String {
        let path = self.dir.join(name);
        fs::write(&path, json).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn apply(&self, config: &str, extra: &[&str]) -> Output {
        keel(&[&["ignition", "apply", "--root", self.root.to_str().unwrap(), config][..], extra].concat())
    }

    fn root_snapshot(&self) -> Snapshot {
        snapshot(&self.root, &today_and_yesterday())
    }

    fn outside_snapshot(&self) -> Snapshot {
        snapshot(&self.outside, &today_and_yesterday())
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.root.join(path)).unwrap_or_else(|e| panic!("cannot read /{path}: {e}"))
    }

    fn meta(&self, path: &str) -> fs::Metadata {
        fs::symlink_metadata(self.root.join(path)).unwrap_or_else(|e| panic!("/{path}: {e}"))
    }

    /// Mode (permission bits), uid, gid.
    fn attrs(&self, path: &str) -> (u32, u32, u32) {
        let meta = self.meta(path);
        (meta.permissions().mode() & 0o7777, meta.uid(), meta.gid())
    }

    fn link_target(&self, path: &str) -> String {
        fs::read_link(self.root.join(path)).unwrap().to_str().unwrap().to_owned()
    }

    fn line_of(&self, path: &str, prefix: &str) -> String {
        let contents = self.read(path);
        contents.lines().find(|line| line.starts_with(prefix)).unwrap_or_else(|| panic!("/{path} has no line {prefix:?}:\n{contents}")).to_owned()
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = chunk.iter().enumerate().fold(0u32, |word, (index, byte)| word | u32::from(*byte) << (16 - 8 * index));
        for index in 0..4 {
            if index <= chunk.len() {
                encoded.push(ALPHABET[(word >> (18 - 6 * index) & 63) as usize] as char);
            } else {
                encoded.push('=');
            }
        }
    }
    encoded
}

fn data_url(bytes: &[u8]) -> String {
    format!("data:;base64,{}", base64(bytes))
}

fn files_config(files: &str) -> String {
    format!(r#"{{"ignition": {{"version": "3.4.0"}}, "storage": {{"files": [{files}]}}}}"#)
}

fn file_entry(path: &str, source: &str) -> String {
    format!(r#"{{"path": "{path}", "overwrite": true, "contents": {{"source": "{source}"}}}}"#)
}

/// The spot checks of what one example promises, on the root it was applied to.
fn check_example(name: &str, scene: &Scene) {
    let s = scene;
    match name {
        "app-user-owned-tree.ign" => {
            assert_eq!(s.line_of("etc/passwd", "app:"), "app:x:2000:2000::/var/lib/app:/usr/sbin/nologin");
            assert_eq!(s.line_of("etc/group", "app:"), "app:x:2000:deploy");
            assert!(s.line_of("etc/shadow", "deploy:").starts_with("deploy:$6$rounds=4096$saltsalt$2pqkQ0dm0Uaq3UQ9"));
            assert_eq!(s.attrs("var/lib/app/data"), (0o750, 2000, 2000));
            assert_eq!(s.attrs("var/log/app"), (0o770, 2000, 2000));
            assert_eq!(s.read("var/lib/app/config.toml"), "listen = \"127.0.0.1:8080\"\ndata = \"/var/lib/app/data\"\n");
            assert_eq!(s.attrs("var/lib/app/config.toml"), (0o640, 2000, 2000));
        }
        "append-to-existing-files.ign" => {
            assert_eq!(s.read("etc/hosts"), "127.0.0.1 localhost\n10.0.0.10 registry.internal\n10.0.0.11 ntp.internal\n");
            assert_eq!(s.read("etc/environment"), "LANG=C.UTF-8\nHTTP_PROXY=http://proxy.internal:3128\n");
            assert_eq!(s.attrs("etc/environment"), (0o644, 0, 0));
        }
        "files-gzip-verified.ign" => {
            assert!(s.read("etc/systemd/timesyncd.conf.d/10-ntp.conf").starts_with("[Time]\nNTP=time.example.com"));
            let sha256 = Command::new("sha256sum").arg(s.root.join("etc/cluster/hosts")).output().unwrap();
            assert!(text(&sha256.stdout).starts_with("153d4cc0f53a2d5fbe8ee69fee181512b348308d4741239661e1b7a28b8a3e26 "));
            assert_eq!(s.attrs("etc/cluster/hosts"), (0o640, 0, 0));
            assert_eq!(s.read("opt/bin/hello"), "#!/bin/sh\necho hello from ignition\n");
            assert_eq!(s.attrs("opt/bin/hello"), (0o755, 0, 0));
        }
        "links-hard-and-soft.ign" => {
            assert_eq!(s.link_target("opt/tools/current"), "v1.2.3");
            assert_eq!(s.link_target("opt/bin/tool"), "/opt/tools/current/tool");
            assert_eq!(s.link_target("etc/localtime"), "/usr/share/zoneinfo/Europe/Berlin");
            assert_eq!(s.meta("opt/tools/tool-hardlink").ino(), s.meta("opt/tools/v1.2.3/tool").ino());
            assert_eq!(s.read("opt/tools/tool-hardlink"), "#!/bin/sh\necho tool 1.2.3\n");
            assert_eq!(s.attrs("opt/tools/v1.2.3/tool"), (0o755, 0, 0));
        }
        "mask-update-services.ign" => {
            assert_eq!(s.link_target("etc/systemd/system/update-engine.service"), "/dev/null");
            assert_eq!(s.link_target("etc/systemd/system/locksmithd.service"), "/dev/null");
            assert_eq!(s.read("etc/systemd/system-preset/20-ignition.preset"), "disable systemd-timesyncd.service\n");
        }
        "merge-child-config.ign" => {
            // The merged child's file wins over the parent's, as in Ignition 2.14 (a child config
            // is merged over its parent: internal/exec/config_fetcher.go:85, docs/operator-notes.md
            // "the child config's values override the parent config's values"; its files stage
            // writes this same line), whatever the parent's own contents say.
            assert_eq!(s.read("etc/motd.d/10-team.conf"), "Managed by the platform team.\n");
            assert_eq!(s.link_target("etc/systemd/system/locksmithd.service"), "/dev/null");
        }
        "sysctl-and-hostname.ign" => {
            assert_eq!(s.read("etc/hostname"), "worker-01\n");
            assert_eq!(s.line_of("etc/sysctl.d/90-kubernetes.conf", "vm."), "vm.max_map_count = 262144");
            assert_eq!(s.attrs("etc/sysctl.d/90-kubernetes.conf"), (0o644, 0, 0));
        }
        "systemd-service-with-dropin.ign" => {
            assert!(s.read("etc/systemd/system/metrics-agent.service").contains("ExecStart=/opt/bin/metrics-agent --listen 127.0.0.1:9100\n"));
            assert_eq!(s.read("etc/systemd/system/systemd-journald.service.d/10-rate-limit.conf"), "[Service]\nEnvironment=SYSTEMD_LOG_LEVEL=info\n");
            assert_eq!(s.read("etc/systemd/system-preset/20-ignition.preset"), "enable metrics-agent.service\n");
        }
        "template-unit-instances.ign" => {
            assert!(s.read("etc/systemd/system/backup@.service").contains("ExecStart=/opt/bin/backup /%I\n"));
            assert_eq!(
                s.read("etc/systemd/system-preset/20-ignition.preset"),
                "enable backup@.service home etc var-lib\ndisable getty@.service tty2\n"
            );
        }
        "user-ssh-key-groups.ign" => {
            let core = s.line_of("etc/passwd", "core:");
            assert!(core.contains(":CoreOS Admin:/home/core:"), "{core}");
            let uid: u32 = core.split(':').nth(2).unwrap().parse().unwrap();
            let docker = s.line_of("etc/group", "docker:");
            assert!(docker.ends_with(":core") && docker.split(':').nth(2).unwrap().parse::<u32>().unwrap() < 1000, "{docker}");
            assert!(s.line_of("etc/group", "sudo:").ends_with(":core"));
            let keys = s.read("home/core/.ssh/authorized_keys.d/ignition");
            assert!(keys.contains("admin@laptop\n") && keys.contains("ci@build\n"), "{keys}");
            assert_eq!(s.attrs("home/core/.ssh/authorized_keys.d/ignition").0, 0o600);
            assert_eq!(s.attrs("home/core/.ssh"), (0o700, uid, s.attrs("home/core").2));
            assert_eq!(s.attrs("home/core/.ssh/authorized_keys.d/ignition").1, uid);
        }
        "vendor-base-config.ign" => {
            assert_eq!(s.attrs("etc/oem-agent"), (0o700, 0, 0));
            assert_eq!(s.attrs("etc/oem-agent/agent.conf"), (0o600, 0, 0));
            assert_eq!(s.read("etc/motd.d/00-vendor.conf"), "This machine runs on Example Cloud.\n");
            assert_eq!(s.read("etc/systemd/system-preset/20-ignition.preset"), "enable oem-agent.service\n");
        }
        other => panic!("{other} has no spot checks: add them here"),
    }
}

#[test]
fn every_example_applies_as_it_promises_and_a_rerun_changes_nothing() {
    let mut examples: Vec<PathBuf> =
        fs::read_dir(EXAMPLES).unwrap().map(|entry| entry.unwrap().path()).filter(|path| path.extension().is_some_and(|ext| ext == "ign")).collect();
    examples.sort();
    assert_eq!(examples.len(), 11, "{examples:?}");
    for example in examples {
        let name = example.file_name().unwrap().to_str().unwrap().to_owned();
        let scene = Scene::new(name.trim_end_matches(".ign"));
        // The append example promises an append to an existing file.
        fs::write(scene.root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        let config = example.to_str().unwrap();
        let first = scene.apply(config, &[]);
        let first_out = text(&first.stdout) + &text(&first.stderr);
        succeeded(first);
        check_example(&name, &scene);
        let mut applied = scene.root_snapshot();
        // The dry run on the applied root plans the result file only: its only operation line.
        let dry_run = scene.apply(config, &["--dry-run"]);
        let dry_run_out = text(&dry_run.stdout) + &text(&dry_run.stderr);
        let plan = succeeded(dry_run);
        let operations: Vec<&str> = plan.lines().filter(|line| line.starts_with("  ")).collect();
        assert_eq!(operations.len(), 1, "{name}: {plan}");
        assert!(operations[0].contains("write /etc/.ignition-result.json "), "{name}: {plan}");
        assert_eq!(scene.root_snapshot(), applied, "{name}: --dry-run changed the root");
        let second = scene.apply(config, &[]);
        let second_out = text(&second.stdout) + &text(&second.stderr);
        succeeded(second);
        let mut reapplied = scene.root_snapshot();
        // The result file nests the previous one on every run, as Ignition's does.
        assert!(reapplied.remove(RESULT_FILE).is_some() && applied.remove(RESULT_FILE).is_some());
        assert_eq!(tree_differences("first apply", &applied, "second apply", &reapplied), Vec::<String>::new(), "{name}");
        if name == "app-user-owned-tree.ign" {
            for out in [&first_out, &dry_run_out, &second_out] {
                assert!(!out.contains("saltsalt") && !out.contains("2pqkQ0dm0Uaq3UQ9"), "the password hash leaked:\n{out}");
            }
        }
    }
}

#[test]
fn examples_applied_one_after_another_to_one_root_all_take_effect() {
    let scene = Scene::new("one-after-another");
    for example in ["systemd-service-with-dropin.ign", "vendor-base-config.ign", "mask-update-services.ign"] {
        succeeded(scene.apply(&format!("{EXAMPLES}/{example}"), &[]));
    }
    assert_eq!(
        scene.read("etc/systemd/system-preset/20-ignition.preset"),
        "enable metrics-agent.service\nenable oem-agent.service\ndisable systemd-timesyncd.service\n"
    );
    assert!(scene.meta("etc/systemd/system/metrics-agent.service").is_file() && scene.meta("etc/systemd/system/oem-agent.service").is_file());
}

#[test]
fn validate_exits_0_with_only_warnings_and_names_their_json_paths() {
    let scene = Scene::new("validate-warnings");
    let config = scene.config(
        "warned.ign",
        r#"{"ignition": {"version": "3.4.0"}, "systemd": {"units": [{"name": "ok.service", "enabled": true, "contents": "[Service]\nExecStart=/bin/true\n"}]}}"#,
    );
    let report = succeeded(keel(&["ignition", "validate", &config]));
    assert_eq!(report, format!("{config}: warning at $.systemd.units[0].contents: unit \"ok.service\" is enabled, but has no [Install] section, so enabling it does nothing\n"));
    let clean = scene.config("clean.ign", r#"{"ignition": {"version": "3.4.0"}}"#);
    assert_eq!(succeeded(keel(&["ignition", "validate", &clean])), "");
}

#[test]
fn validate_exits_1_with_an_error_and_names_its_json_path() {
    let scene = Scene::new("validate-error");
    let config = scene.config("error.ign", &files_config(r#"{"path": "relative/path"}, {"path": "/etc/ok", "mode": 420}"#));
    let output = keel(&["ignition", "validate", &config]);
    let report = text(&output.stdout);
    assert!(failed(output).contains("the config has errors"));
    assert!(report.starts_with(&format!("{config}: error at $.storage.files[0].path: ")), "{report}");
    assert_eq!(report.lines().count(), 1, "{report}");
}

#[test]
fn validate_names_line_and_column_of_a_json_syntax_error() {
    let scene = Scene::new("validate-syntax");
    let config = scene.config("syntax.ign", "{\"ignition\": {\"version\": \"3.4.0\"},\n  \"storage\": {,}}");
    let message = failed(keel(&["ignition", "validate", &config]));
    assert!(message.contains("line 2 column 15"), "{message}");
}

#[test]
fn validate_of_a_spec_2_config_names_the_supported_range() {
    let scene = Scene::new("validate-v2");
    let config = scene.config("v2.ign", r#"{"ignition": {"version": "2.2.0"}}"#);
    let message = failed(keel(&["ignition", "validate", &config]));
    assert!(message.contains("2.2.0 is not supported") && message.contains("3.0.0 through 3.6.0"), "{message}");
}

/// A config whose only file is `/etc/motd.d/order` with `contents`, plus whatever `extra` adds.
fn motd_config(version: &str, contents: &str, extra: &str) -> String {
    format!(
        r#"{{"ignition": {{"version": "{version}"{extra}}}, "storage": {{"files": [{{"path": "/etc/motd.d/order", "overwrite": true, "contents": {{"source": "data:,{contents}"}}}}]}}}}"#
    )
}

#[test]
fn render_merges_bases_in_order_then_the_user_config_and_its_children() {
    let scene = Scene::new("render");
    let first = scene.config("first.ign", &motd_config("3.0.0", "first", r#""#));
    let second = scene.config("second.ign", &motd_config("3.2.0", "second", r#""#));
    let child = r#"{"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "/etc/child", "contents": {"source": "data:,child"}}]}}"#;
    let merge = format!(r#", "config": {{"merge": [{{"source": "{}"}}]}}"#, data_url(child.as_bytes()));
    let user = scene.config("user.ign", &motd_config("3.4.0", "user", &merge));
    let without_user = scene.config("empty.ign", r#"{"ignition": {"version": "3.4.0"}}"#);

    // Render sorts keys, so a file's contents source comes right before its path.
    let source_of = |rendered: &str, path: &str| -> String {
        let (before, _) = rendered.split_once(&format!("\"path\": \"{path}\"")).unwrap_or_else(|| panic!("no {path} in {rendered}"));
        let (_, source) = before.rsplit_once("\"source\": \"").unwrap();
        source.split('"').next().unwrap().to_owned()
    };
    let bases_only = succeeded(keel(&["ignition", "render", &without_user, "--base", &first, "--base", &second]));
    assert_eq!(source_of(&bases_only, "/etc/motd.d/order"), "data:,second");
    let reversed = succeeded(keel(&["ignition", "render", &without_user, "--base", &second, "--base", &first]));
    assert_eq!(source_of(&reversed, "/etc/motd.d/order"), "data:,first");
    let rendered = succeeded(keel(&["ignition", "render", &user, "--base", &first, "--base", &second]));
    assert_eq!(source_of(&rendered, "/etc/motd.d/order"), "data:,user");
    assert_eq!(source_of(&rendered, "/etc/child"), "data:,child");

    // The output is a config keel reads back to the same config.
    let rendered_file = scene.config("rendered.ign", &rendered);
    assert!(succeeded(keel(&["ignition", "validate", &rendered_file])).is_empty());
    assert_eq!(succeeded(keel(&["ignition", "render", &rendered_file])), rendered);
}

#[test]
fn a_100_mb_config_is_refused_before_it_is_read_whole() {
    let scene = Scene::new("huge-config");
    let path = scene.dir.join("huge.ign");
    fs::File::create(&path).unwrap().set_len(100 << 20).unwrap();
    let config = path.to_str().unwrap();
    for command in ["validate", "render"] {
        let (output, peak) = keel_measured(&scene.dir, &["ignition", command, config]);
        assert!(failed(output).contains("more than keel reads in a config"));
        assert_bounded(&format!("{command} of a 100 MB config"), peak);
    }
    let before = scene.root_snapshot();
    let (output, peak) = keel_measured(&scene.dir, &["ignition", "apply", "--root", scene.root.to_str().unwrap(), config]);
    assert!(failed(output).contains("more than keel reads in a config"));
    assert_bounded("apply of a 100 MB config", peak);
    assert_eq!(scene.root_snapshot(), before);
}

#[test]
fn a_30_mb_config_with_a_huge_data_url_applies_in_bounded_memory() {
    let scene = Scene::new("huge-data-url");
    let contents: Vec<u8> = (0..22u32 << 20).map(|index| (index.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let config = scene.config("huge-url.ign", &files_config(&file_entry("/var/big", &data_url(&contents))));
    assert!(fs::metadata(&config).unwrap().len() > 29 << 20);
    let (output, peak) = keel_measured(&scene.dir, &["ignition", "apply", "--root", scene.root.to_str().unwrap(), &config]);
    succeeded(output);
    assert_bounded("apply of a 30 MB data: URL", peak);
    assert!(fs::read(scene.root.join("var/big")).unwrap() == contents, "/var/big is not the decoded URL");
}

/// Applies `config` and checks it left everything outside the root as it was; its output.
fn apply_contained(scene: &Scene, config: &str) -> Output {
    let outside = scene.outside_snapshot();
    let output = scene.apply(config, &[]);
    assert_eq!(tree_differences("before", &outside, "after", &scene.outside_snapshot()), Vec::<String>::new(), "{config} reached outside the root");
    output
}

#[test]
fn symlinks_in_the_root_that_point_outside_resolve_inside_the_root() {
    let scene = Scene::new("symlinks");
    let outside = scene.outside.to_str().unwrap().to_owned();
    // From root/etc on the host, ../../outside is the sentinel directory.
    assert_eq!(scene.outside, scene.dir.join("outside"));
    symlink(&outside, scene.root.join("etc/absolute")).unwrap();
    symlink("../../outside", scene.root.join("etc/relative")).unwrap();
    symlink(format!("{outside}/sentinel"), scene.root.join("etc/absolute-file")).unwrap();
    symlink("../../outside/sentinel", scene.root.join("etc/relative-file")).unwrap();
    symlink(format!("{outside}/sentinel"), scene.root.join("link-to-outside")).unwrap();
    let files = [
        file_entry("/etc/absolute/sentinel", "data:,through-absolute-parent"),
        file_entry("/etc/relative/sentinel", "data:,through-relative-parent"),
        file_entry("/etc/absolute-file", "data:,replaces-absolute-link"),
        file_entry("/etc/relative-file", "data:,replaces-relative-link"),
    ]
    .join(", ");
    let hard_link = r#"], "links": [{"path": "/hard", "target": "/link-to-outside", "hard": true}"#;
    let config = scene.config("symlinks.ign", &files_config(&format!("{files}{hard_link}")));
    succeeded(apply_contained(&scene, &config));
    // A parent link is followed as a chroot would: the absolute one from the root, the relative
    // one clamped at it; a final link is replaced; a hard link links the link, not its target.
    let inside = scene.outside.strip_prefix("/").unwrap();
    assert_eq!(scene.read(&format!("{}/sentinel", inside.display())), "through-absolute-parent");
    assert_eq!(scene.read("outside/sentinel"), "through-relative-parent");
    assert_eq!(scene.read("etc/absolute-file"), "replaces-absolute-link");
    assert_eq!(scene.read("etc/relative-file"), "replaces-relative-link");
    assert!(scene.meta("etc/absolute-file").is_file() && scene.meta("etc/relative-file").is_file());
    assert!(scene.meta("hard").file_type().is_symlink());
    assert_eq!(scene.meta("hard").ino(), scene.meta("link-to-outside").ino());
}

#[test]
fn an_etc_that_is_a_symlink_outside_keeps_every_write_inside_the_root() {
    let scene = Scene::new("etc-symlink");
    fs::rename(scene.root.join("etc"), scene.dir.join("real-etc")).unwrap();
    let outside_etc = scene.outside.join("etc");
    symlink(&outside_etc, scene.root.join("etc")).unwrap();
    let config = scene.config(
        "etc.ign",
        &format!(
            r#"{{"ignition": {{"version": "3.4.0"}}, "passwd": {{"users": [{{"name": "core"}}]}}, "storage": {{"files": [{}]}}}}"#,
            file_entry("/etc/hostname", "data:,inside")
        ),
    );
    succeeded(apply_contained(&scene, &config));
    let inside_etc = outside_etc.strip_prefix("/").unwrap().to_str().unwrap().to_owned();
    assert_eq!(scene.read(&format!("{inside_etc}/hostname")), "inside");
    assert!(scene.read(&format!("{inside_etc}/passwd")).starts_with("core:"));
}

#[test]
fn unclean_paths_are_refused_at_validation() {
    let scene = Scene::new("dotdot");
    let before = scene.root_snapshot();
    for (index, path) in ["/etc/../../outside/sentinel", "/etc/./hostname", "/etc//hostname", "/etc/hostname/"].iter().enumerate() {
        let config = scene.config(&format!("unclean-{index}.ign"), &files_config(&file_entry(path, "data:,x")));
        let output = keel(&["ignition", "validate", &config]);
        let report = text(&output.stdout);
        failed(output);
        assert!(report.contains("error at $.storage.files[0].path: ") && report.contains("not in its simplest form"), "{path}: {report}");
        let message = failed(apply_contained(&scene, &config));
        assert!(message.contains("$.storage.files[0].path") && message.contains("not in its simplest form"), "{path}: {message}");
    }
    assert_eq!(scene.root_snapshot(), before);
}

/// A user config merging `depth` configs nested one in the next, the innermost writing a file.
fn nested_merges(depth: usize) -> String {
    let mut config = files_config(&file_entry("/etc/innermost", "data:,deep"));
    for _ in 0..depth {
        config = format!(r#"{{"ignition": {{"version": "3.4.0", "config": {{"merge": [{{"source": "{}"}}]}}}}}}"#, data_url(config.as_bytes()));
    }
    config
}

/// A config merging `children` copies of `child`: each reference its own URL (the copies differ
/// in trailing spaces only), since validation refuses two references with one source.
fn merging(children: usize, child: &str) -> String {
    let references: Vec<String> =
        (0..children).map(|copy| format!(r#"{{"source": "{}"}}"#, data_url(format!("{child}{}", " ".repeat(copy)).as_bytes()))).collect();
    format!(r#"{{"ignition": {{"version": "3.4.0", "config": {{"merge": [{}]}}}}}}"#, references.join(", "))
}

#[test]
fn merge_chains_12_deep_are_refused_and_10_deep_apply() {
    let scene = Scene::new("deep-merge");
    let before = scene.root_snapshot();
    let deep = scene.config("deep.ign", &nested_merges(12));
    let (output, peak) = keel_measured(&scene.dir, &["ignition", "apply", "--root", scene.root.to_str().unwrap(), &deep]);
    assert!(failed(output).contains("references nest more than 10 deep"));
    assert_bounded("apply of a 12 deep merge chain", peak);
    assert_eq!(scene.root_snapshot(), before);
    let allowed = scene.config("allowed.ign", &nested_merges(10));
    succeeded(scene.apply(&allowed, &[]));
    assert_eq!(scene.read("etc/innermost"), "deep");
}

#[test]
fn a_fan_out_of_100_children_is_refused_and_one_child_merged_many_times_applies_once() {
    let scene = Scene::new("wide-merge");
    let before = scene.root_snapshot();
    let child = files_config(&file_entry("/etc/child", "data:,child"));
    let wide = scene.config("wide.ign", &merging(100, &child));
    let (output, peak) = keel_measured(&scene.dir, &["ignition", "apply", "--root", scene.root.to_str().unwrap(), &wide]);
    assert!(failed(output).contains("more than 64 referenced configs in all"));
    assert_bounded("apply of 100 merged children", peak);
    assert_eq!(scene.root_snapshot(), before);
    // The same child merged again and again, as close to a cycle as data: URLs come.
    let repeated = scene.config("repeated.ign", &merging(64, &child));
    succeeded(scene.apply(&repeated, &[]));
    assert_eq!(scene.read("etc/child"), "child");
    // And a tree of them: 8 children of 8 children each is 72 configs in all.
    let tree = scene.config("tree.ign", &merging(8, &merging(8, &child)));
    assert!(failed(scene.apply(&tree, &[])).contains("more than 64 referenced configs in all"));
}

fn gzip(bytes_of_zeros: u64) -> Vec<u8> {
    let output = Command::new("sh")
        .args(["-c", &format!("head -c {bytes_of_zeros} /dev/zero | gzip -9")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run gzip: {e}"));
    assert!(output.status.success());
    output.stdout
}

fn gzipped_file(path: &str, compressed: &[u8]) -> String {
    format!(r#"{{"path": "{path}", "contents": {{"compression": "gzip", "source": "{}"}}}}"#, data_url(compressed))
}

#[test]
fn a_gzip_bomb_in_a_file_is_refused_in_bounded_memory() {
    let scene = Scene::new("gzip-bomb");
    let before = scene.root_snapshot();
    let bomb = gzip(1 << 30);
    let config = scene.config("bomb.ign", &files_config(&gzipped_file("/var/bomb", &bomb)));
    let (output, peak) = keel_measured(&scene.dir, &["ignition", "apply", "--root", scene.root.to_str().unwrap(), &config]);
    assert!(failed(output).contains("the contents are larger than"));
    assert_bounded("apply of a 1 GiB gzip bomb", peak);
    assert_eq!(scene.root_snapshot(), before);
}

#[test]
fn many_files_just_under_the_size_limit_are_refused_in_bounded_memory() {
    let scene = Scene::new("gzip-bombs");
    let before = scene.root_snapshot();
    let bomb = gzip(200 << 20);
    let files: Vec<String> = (0..4).map(|index| gzipped_file(&format!("/var/bomb{index}"), &bomb)).collect();
    let config = scene.config("bombs.ign", &files_config(&files.join(", ")));
    let (output, peak) = keel_measured(&scene.dir, &["ignition", "apply", "--root", scene.root.to_str().unwrap(), &config]);
    assert!(failed(output).contains("add up to more than 268435456 bytes"));
    assert_bounded("apply of four 200 MiB gzip bombs", peak);
    assert_eq!(scene.root_snapshot(), before);
}

#[test]
fn nothing_is_written_when_the_last_contents_fail_their_hash() {
    let scene = Scene::new("hash-fails-last");
    let before = scene.root_snapshot();
    let wrong = format!("sha256-{}", "0".repeat(64));
    let config = scene.config(
        "hash.ign",
        &format!(
            r#"{{"ignition": {{"version": "3.4.0"}}, "passwd": {{"users": [{{"name": "core"}}]}},
                "storage": {{"directories": [{{"path": "/var/early"}}], "files": [{}, {}, {{"path": "/var/z-last", "contents": {{"source": "data:,bad", "verification": {{"hash": "{wrong}"}}}}}}]}},
                "systemd": {{"units": [{{"name": "a.service", "mask": true}}]}}}}"#,
            file_entry("/etc/hostname", "data:,first"),
            file_entry("/var/lib/second", "data:,second"),
        ),
    );
    let message = failed(apply_contained(&scene, &config));
    assert!(message.contains("$.storage.files[2].contents") && message.contains("/var/z-last"), "{message}");
    assert_eq!(tree_differences("before", &before, "after", &scene.root_snapshot()), Vec::<String>::new());
}
