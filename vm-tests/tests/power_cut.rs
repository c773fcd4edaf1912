//! A power cut at any moment of first boot is survived: QEMU is SIGKILLed (its disk in
//! writethrough mode, so every write the guest saw complete is in the image) at moments
//! spread over the kernel's boot and each stage in which first boot writes, the machine
//! boots again, and every run ends in the state an uninterrupted first boot reaches: the
//! same partition table shape, a clean ext4 filling ROOT, the image's own file still
//! there, and the first-boot flag gone. Each run must really have been cut, and the cuts
//! must really have landed in every stage they aim at.

use keel_disk::{Gpt, IMAGE_DISK_GUID};
use keel_test_support::ignition::{many_files_config, tree_differences, Snapshot};
use keel_vm_tests::{
    artifacts, assert_root_fills, boot_machine, check_partition_filesystems, check_root_ext4, disk_copy, esp_has_flag, ext4_blocks, fixture_4kn,
    format_root, image_table, on_root, partition_contents, resize_disk, root_snapshot, shared_fixture, stage_millis, Bus, Console, Disk, Fixture,
    Machine,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(180);
const DISK_BYTES: u64 = 2 << 30;
const CACHE: &str = "writethrough";

/// How ROOT ships in the image the machine first boots.
#[derive(Clone, Copy, Debug)]
enum Shipped {
    /// Blank: first boot formats it (the format is what a cut can leave half done).
    Blank,
    /// ext4 holding a file: first boot grows it online (the file must survive).
    Ext4WithFile,
}

/// keel-init's stages in boot order; each logs `keel: [uptime] <stage>: ... (N ms)` as it ends.
/// `ignition-kargs` runs only for a config with kernel arguments, which no scenario here has.
const STAGES: [&str; 12] = [
    "mounts",
    "config",
    "modules",
    "usr",
    "first-boot",
    "ignition-fetch",
    "ignition-disks",
    "root",
    "etc",
    "ignition-files",
    "first-boot-done",
    "switch-root",
];

/// When to cut the power.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// This long after QEMU started: the kernel's own boot, before keel-init.
    InKernel(Duration),
    /// This long into `stage` (after the stage before it logged its end): first boot's
    /// disk work runs in ignition-disks, root, etc, ignition-files and first-boot-done.
    Into(&'static str, Duration),
}

impl Moment {
    /// The stage this moment aims at, as `landed_in` names it.
    fn aim(self) -> &'static str {
        match self {
            Moment::InKernel(_) => "kernel",
            Moment::Into(stage, _) => stage,
        }
    }
}

/// The index in `STAGES` of the stage whose end `line` logs, if it logs one.
fn finished_stage(line: &str) -> Option<usize> {
    let rest = line.strip_prefix("keel: [")?.split_once("] ")?.1;
    if !rest.ends_with(" ms)") {
        return None;
    }
    STAGES.iter().position(|stage| rest.starts_with(&format!("{stage}: ")))
}

/// The stage the power went in: the one after the last stage keel-init reported finished,
/// "kernel" before keel-init started, "real root" after it switched root.
fn landed_in(console: &Console) -> &'static str {
    match console.text.lines().rev().find_map(finished_stage) {
        Some(index) => STAGES.get(index + 1).copied().unwrap_or("real root"),
        None if console.has("keel-init starting") => STAGES[0],
        None => "kernel",
    }
}

fn table(image: &Path) -> Gpt {
    image_table(image).unwrap()
}

fn image_for(fixture: &Fixture, shipped: Shipped, name: &str) -> PathBuf {
    let disk = disk_copy(fixture, name).unwrap();
    if let Shipped::Ext4WithFile = shipped {
        let tree = disk.with_extension("tree");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("shipped"), "written before the cut").unwrap();
        format_root(&disk, &["mkfs.ext4", "-q", "-F", "-L", "ROOT", "-d", tree.to_str().unwrap()], &[]).unwrap();
        std::fs::remove_dir_all(&tree).unwrap();
    }
    resize_disk(&disk, DISK_BYTES).unwrap();
    disk
}

/// Boots `disk`, a copy of `fixture`'s image, on a disk of the sector size the image was
/// built for (with `data`, a second disk, after it), cutting the power at `moment`.
fn boot_through(fixture: &Fixture, disk: &Path, data: Option<&Path>, config: Option<&Path>, moment: Option<Moment>) -> Console {
    let mut stage_seen_at = None;
    let machine = Machine {
        kernel: &artifacts().unwrap().kernel,
        disks: std::iter::once(Disk::of_fixture(Bus::Virtio, disk, fixture)).chain(data.map(|data| Disk::on(Bus::Virtio, data))).collect(),
        plugged_in_later: None,
        firmware_config: config,
    };
    boot_machine(&machine, &fixture.initrd, "", TIMEOUT, CACHE, |text, elapsed| match moment {
        None => false,
        Some(Moment::InKernel(at)) => elapsed >= at,
        Some(Moment::Into(stage, delay)) => {
            let before = STAGES.iter().position(|s| *s == stage).expect("a stage of keel-init") - 1;
            if stage_seen_at.is_none() && text.lines().any(|line| finished_stage(line) == Some(before)) {
                stage_seen_at = Some(elapsed);
            }
            stage_seen_at.is_some_and(|seen| elapsed >= seen + delay)
        }
    })
    .unwrap()
}

/// The table as a shape: everything but the GUIDs first boot draws at random.
fn shape(gpt: &Gpt) -> Vec<(u32, String, u64, u64, u64, String)> {
    gpt.partitions.iter().map(|p| (p.number, p.type_guid.to_string(), p.first_lba, p.last_lba, p.attributes, p.name.clone())).collect()
}

/// What the uninterrupted first boot left, to hold every cut run to.
struct Reference {
    table: Gpt,
    /// ROOT's tree, when first boot applied an Ignition config.
    tree: Option<Snapshot>,
    /// The second disk's partitions and filesystems, when the machine has one.
    data: Option<Vec<DataPartition>>,
}

/// A partition of the second disk as a cut run must end it: all but the GUIDs a config
/// without them leaves to chance.
type DataPartition = (u32, String, String, u64, u64, (String, String, String));

fn data_shape(data: &Path) -> Result<Vec<DataPartition>, String> {
    let contents = partition_contents(data).map_err(|e| format!("the second disk's table is unreadable: {e:#}"))?;
    Ok(contents.into_iter().map(|c| (c.number, c.name, c.type_guid, c.first_lba, c.last_lba, c.filesystem)).collect())
}

/// Checks the end state against the uninterrupted run's; an error says what differs.
fn check_end_state(disk: &Path, data: Option<&Path>, reference: &Reference, shipped: Shipped) -> Result<(), String> {
    if let (Some(expected), Some(data)) = (&reference.data, data) {
        let found = data_shape(data)?;
        if &found != expected {
            return Err(format!("the second disk differs:\n{found:?}\nvs\n{expected:?}"));
        }
        check_partition_filesystems(data).map_err(|e| format!("{e:#}"))?;
    }
    if let Some(tree) = &reference.tree {
        let after = root_snapshot(disk).map_err(|e| format!("cannot read ROOT's tree: {e:#}"))?;
        let differences = tree_differences("uninterrupted", tree, "after the cut", &after);
        if !differences.is_empty() {
            return Err(format!("ROOT's tree differs:\n{}", differences.join("\n")));
        }
    }
    let reference = &reference.table;
    let gpt = image_table(disk).map_err(|e| format!("table unreadable: {e:#}"))?;
    if !(gpt.primary_intact && gpt.backup_intact && gpt.copies_agree) {
        return Err("the table's copies are not both intact and agreeing".into());
    }
    if shape(&gpt) != shape(reference) {
        return Err(format!("table shape differs: {:?} vs {:?}", shape(&gpt), shape(reference)));
    }
    if gpt.disk_guid.to_string() == IMAGE_DISK_GUID {
        return Err("the disk kept the image's GUID".into());
    }
    for name in ["USR-A", "USR-B", "EFI-SYSTEM", "OEM"] {
        if gpt.by_name(name).ok().flatten().map(|p| p.guid) != reference.by_name(name).ok().flatten().map(|p| p.guid) {
            return Err(format!("{name}'s GUID changed"));
        }
    }
    check_root_ext4(disk).map_err(|e| format!("{e:#}"))?;
    let (blocks, block_size) = ext4_blocks(disk).map_err(|e| format!("{e:#}"))?;
    let root_bytes = gpt.by_name("ROOT").ok().flatten().map(|p| p.size_bytes(gpt.sector_size)).unwrap_or(0);
    if blocks * block_size != root_bytes {
        return Err(format!("ext4 holds {} bytes of ROOT's {root_bytes}", blocks * block_size));
    }
    if let Shipped::Ext4WithFile = shipped {
        let content = on_root(disk, "debugfs", &["-R", "cat /shipped"]).map_err(|e| format!("{e:#}"))?;
        if !content.contains("written before the cut") {
            return Err(format!("the shipped file is gone or changed: {content:?}"));
        }
    }
    if esp_has_flag(disk).map_err(|e| format!("{e:#}"))? {
        return Err("the first-boot flag is still on the ESP".into());
    }
    Ok(())
}

/// A blank second disk of `bytes` for the run `name`, when the scenario has one.
fn data_disk_for(fixture: &Fixture, bytes: Option<u64>, name: &str) -> Option<PathBuf> {
    let bytes = bytes?;
    let path = fixture.dir.join(format!("{name}.data.img"));
    let _ = std::fs::remove_file(&path);
    std::fs::File::create(&path).unwrap().set_len(bytes).unwrap();
    Some(path)
}

/// Cuts the power `cuts` times in each of the named stages (`kernel` or a stage of
/// keel-init), boots again each time, and checks every run ends where an uninterrupted
/// first boot does; every cut must have happened, and in every stage named. With `config`,
/// first boot applies that Ignition config (through fw_cfg), and ROOT's tree must end as the
/// uninterrupted run left it. With `data_disk` (its size), the machine has a blank second
/// disk, whose partitions and filesystems must end as the uninterrupted run left them.
fn survives_cuts(fixture: &Fixture, shipped: Shipped, config: Option<&Path>, data_disk: Option<u64>, name: &str, cuts: &[(&'static str, u32)]) {
    let reference_disk = image_for(fixture, shipped, &format!("{name}-reference"));
    let reference_data = data_disk_for(fixture, data_disk, &format!("{name}-reference"));
    let reference = boot_through(fixture, &reference_disk, reference_data.as_deref(), config, None);
    assert!(!reference.timed_out && reference.real_init().contains(&"done"), "the uninterrupted first boot failed:\n{}", reference.text);
    assert!(reference.has("ROOT grew from 64 to"), "the uninterrupted first boot did not grow ROOT:\n{}", reference.text);
    assert_root_fills(&reference_disk, DISK_BYTES);
    let reference_state = Reference {
        table: table(&reference_disk),
        tree: config.map(|_| root_snapshot(&reference_disk).unwrap()),
        data: reference_data.as_deref().map(|data| data_shape(data).unwrap()),
    };
    check_end_state(&reference_disk, reference_data.as_deref(), &reference_state, shipped).unwrap();

    // The kernel's boot lasts until keel-init's first line; each stage as long as it took
    // in the uninterrupted run.
    let kernel_secs = reference
        .text
        .lines()
        .find(|l| l.contains("keel-init starting"))
        .and_then(|l| l.split_once('[')?.1.split_once(']')?.0.trim().parse::<f64>().ok())
        .expect("no keel-init start time");
    let mut moments = Vec::new();
    for &(stage, count) in cuts {
        for k in 0..count {
            moments.push(if stage == "kernel" {
                Moment::InKernel(Duration::from_secs_f64(kernel_secs * f64::from(k + 1) / f64::from(count + 1)))
            } else {
                let millis = stage_millis(&reference, stage).unwrap_or_else(|| panic!("no time for {stage} in:\n{}", reference.text));
                // k = 0: right as the stage starts, whatever the timing jitter.
                Moment::Into(stage, Duration::from_secs_f64(millis / 1000.0 * f64::from(k) / f64::from(count)))
            });
        }
    }

    // One QEMU at a time here: the scenarios run two at a time, one per core.
    let mut outcomes = Vec::new();
    for (index, moment) in moments.iter().copied().enumerate() {
        let disk = image_for(fixture, shipped, &format!("{name}-cut-{index}"));
        let data = data_disk_for(fixture, data_disk, &format!("{name}-cut-{index}"));
        let cut = boot_through(fixture, &disk, data.as_deref(), config, Some(moment));
        let landed = landed_in(&cut);
        let result = if !cut.cut {
            Err(format!("the run ended before its moment came (timed out: {}):\n{}", cut.timed_out, cut.text))
        } else if moment.aim() == "kernel" && landed != "kernel" {
            Err(format!("a cut meant for the kernel's boot landed in {landed}"))
        } else {
            let torn = image_table(&disk).map(|_| ()).map_err(|e| format!("{e:#}"));
            let after = boot_through(fixture, &disk, data.as_deref(), config, None);
            match (&torn, after.real_init().contains(&"done")) {
                (Err(error), _) => Err(format!("no readable table after the cut: {error}")),
                (Ok(()), false) => Err(format!("the boot after the cut failed:\n{}", after.text)),
                (Ok(()), true) => check_end_state(&disk, data.as_deref(), &reference_state, shipped),
            }
        };
        outcomes.push((index, moment, landed, result));
        let _ = std::fs::remove_file(&disk);
        if let Some(data) = data {
            let _ = std::fs::remove_file(data);
        }
    }
    let mut failures = Vec::new();
    let mut landings = std::collections::BTreeMap::<&str, u32>::new();
    for (index, moment, landed, result) in &outcomes {
        eprintln!("{name} cut {index:2} at {moment:?}: in {landed}: {}", if result.is_ok() { "converged" } else { "FAILED" });
        *landings.entry(landed).or_default() += 1;
        if let Err(error) = result {
            failures.push(format!("cut {index} at {moment:?} (in {landed}): {error}"));
        }
    }
    eprintln!("{name}: {} cuts landed in {landings:?}", outcomes.len());
    assert!(failures.is_empty(), "{} of {} cuts failed:\n{}", failures.len(), outcomes.len(), failures.join("\n"));
    let missed: Vec<&str> = cuts.iter().map(|(stage, _)| *stage).filter(|stage| !landings.contains_key(stage)).collect();
    assert!(missed.is_empty(), "no cut landed in {missed:?} (landings: {landings:?})");
}

#[test]
fn a_power_cut_while_first_boot_formats_a_blank_root_is_survived() {
    survives_cuts(
        shared_fixture().unwrap(),
        Shipped::Blank,
        None,
        None,
        "cut-blank",
        &[("kernel", 3), ("ignition-disks", 3), ("root", 4), ("etc", 2), ("first-boot-done", 3)],
    );
}

#[test]
fn a_power_cut_while_first_boot_grows_a_shipped_ext4_root_is_survived() {
    survives_cuts(
        shared_fixture().unwrap(),
        Shipped::Ext4WithFile,
        None,
        None,
        "cut-ext4",
        &[("kernel", 1), ("ignition-disks", 2), ("root", 3), ("etc", 2), ("first-boot-done", 2)],
    );
}

#[test]
fn a_power_cut_while_first_boot_grows_root_on_a_4kn_disk_is_survived() {
    // The table's rewrites are in 4096-byte sectors (ignition-disks), and mkfs meets a disk
    // whose sectors are as big as its blocks (root).
    survives_cuts(fixture_4kn().unwrap(), Shipped::Blank, None, None, "cut-4kn", &[("ignition-disks", 3), ("root", 2), ("first-boot-done", 1)]);
}

#[test]
fn a_power_cut_at_any_moment_of_the_ignition_stages_is_survived() {
    // Enough work that ignition-files lasts long enough to be cut many times: users (passwd,
    // group, shadow, gshadow rewritten, homes made, keys written), files owned by them, units.
    let fixture = shared_fixture().unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&many_files_config(200, 10, 5)).unwrap();
    config["storage"]["files"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"path": "/etc/motd", "append": [{"source": "data:,appended%20once%0A"}]}));
    config["systemd"] = serde_json::json!({"units": [{"name": "bench.service", "enabled": true, "contents": "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"}]});
    let config_path = fixture.dir.join("cut-ignition.ign");
    std::fs::write(&config_path, config.to_string()).unwrap();
    survives_cuts(
        fixture,
        Shipped::Blank,
        Some(&config_path),
        None,
        "cut-ignition",
        &[("ignition-fetch", 5), ("ignition-disks", 5), ("root", 2), ("ignition-files", 10), ("first-boot-done", 2)],
    );
}

/// The config's partitions and filesystems on a second disk, cut while ignition-disks writes
/// the table, tells the kernel, marks each partition and makes each filesystem: every run
/// ends with the same partitions, the same whole filesystems (label and UUID as the config
/// gives them, each passing its checker) and ROOT's tree. Without wipeTable, so the rerun
/// keeps what the cut run made (the data-disk scenario covers wipeTable).
#[test]
fn a_power_cut_while_ignition_partitions_and_formats_a_second_disk_is_survived() {
    let fixture = shared_fixture().unwrap();
    let config = serde_json::json!({
        "ignition": {"version": "3.4.0"},
        "storage": {
            "disks": [{"device": "/dev/vdb", "partitions": [
                {"number": 1, "label": "DATA", "sizeMiB": 96},
                {"number": 2, "label": "SWAP", "sizeMiB": 32, "typeGuid": "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"},
                {"number": 3, "label": "EXCHANGE", "sizeMiB": 48},
                {"label": "SCRATCH"}
            ]}],
            "filesystems": [
                {"device": "/dev/disk/by-partlabel/DATA", "format": "ext4", "label": "data", "uuid": "6f9ad4e4-3b2c-4e1a-9b8d-2e2c5a1b7c3d"},
                {"device": "/dev/vdb2", "format": "swap", "label": "swap", "uuid": "0e6c1a6a-2b1e-4c55-8f6e-7a1d2c3b4a59"},
                {"device": "/dev/disk/by-partlabel/EXCHANGE", "format": "vfat", "label": "EXCHANGE", "uuid": "1A2B-3C4D"},
                {"device": "/dev/vdb4", "format": "xfs", "label": "scratch", "uuid": "2c8e4b1d-9a7f-4e3c-b6d5-0f1e2d3c4b5a", "wipeFilesystem": true}
            ],
            "files": [{"path": "/etc/data-disk", "contents": {"source": "data:,partitioned"}}]
        }
    });
    let config_path = fixture.dir.join("cut-disks.ign");
    std::fs::write(&config_path, config.to_string()).unwrap();
    survives_cuts(fixture, Shipped::Blank, Some(&config_path), Some(1 << 30), "cut-disks", &[("ignition-disks", 10), ("root", 1)]);
}
