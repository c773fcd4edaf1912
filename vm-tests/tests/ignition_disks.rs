//! Ignition's `storage.disks` and `storage.filesystems` at first boot: a second disk is
//! partitioned and formatted as the config says, ROOT itself is reformatted before it is
//! mounted, a first boot run again changes nothing, and the boot disk's own partitions are
//! refused before anything is written.

use keel_vm_tests::{
    artifacts, assert_reached_real_init, assert_refused, boot_machine, default_layout_fixture, disk_copy, esp_has_flag, file_digest,
    partition_contents, resize_disk, root_snapshot, shared_fixture, stage_millis, Bus, Console, Disk, Fixture, Machine, PartitionContent,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(240);
const DATA_DISK_BYTES: u64 = 1 << 30;
const LINUX_SWAP: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";

fn write_config(fixture: &Fixture, name: &str, config: &serde_json::Value) -> PathBuf {
    let path = fixture.dir.join(format!("{name}.ign"));
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// A blank disk of `bytes`, as a cloud attaches a new volume.
fn blank_disk(fixture: &Fixture, name: &str, bytes: u64) -> PathBuf {
    let path = fixture.dir.join(format!("{name}.data.img"));
    let _ = std::fs::remove_file(&path);
    std::fs::File::create(&path).unwrap().set_len(bytes).unwrap();
    path
}

fn boot(fixture: &Fixture, disks: &[&Path], config: &Path, cmdline: &str) -> Console {
    let machine = Machine {
        kernel: &artifacts().unwrap().kernel,
        disks: disks
            .iter()
            .enumerate()
            .map(|(index, disk)| if index == 0 { Disk::of_fixture(Bus::Virtio, disk, fixture) } else { Disk::on(Bus::Virtio, disk) })
            .collect(),
        plugged_in_later: None,
        firmware_config: Some(config),
    };
    boot_machine(&machine, &fixture.initrd, cmdline, TIMEOUT, "unsafe", |_, _| false).unwrap()
}

fn fs(content: &PartitionContent) -> (&str, &str, &str) {
    (&content.filesystem.0, &content.filesystem.1, &content.filesystem.2)
}

/// The second disk's config: numbered partitions, one by label only (number 0), one filling
/// the rest; ext4 with a given UUID by partition label, swap and vfat by kernel name, btrfs by
/// partition UUID.
fn data_disk_config() -> serde_json::Value {
    serde_json::json!({
        "ignition": {"version": "3.4.0"},
        "storage": {
            "disks": [{"device": "/dev/vdb", "wipeTable": true, "partitions": [
                {"number": 1, "label": "DATA", "sizeMiB": 96},
                {"number": 2, "label": "SWAP", "sizeMiB": 32, "typeGuid": LINUX_SWAP},
                {"number": 3, "label": "EXCHANGE", "sizeMiB": 48},
                {"label": "SCRATCH", "sizeMiB": 0, "guid": "5b1e0a3c-7d2f-4e6a-9c8b-1a2b3c4d5e6f"}
            ]}],
            "filesystems": [
                {"device": "/dev/disk/by-partlabel/DATA", "format": "ext4", "label": "data", "uuid": "6f9ad4e4-3b2c-4e1a-9b8d-2e2c5a1b7c3d", "options": ["-m", "0"]},
                {"device": "/dev/vdb2", "format": "swap", "label": "swap", "uuid": "0e6c1a6a-2b1e-4c55-8f6e-7a1d2c3b4a59"},
                {"device": "/dev/vdb3", "format": "vfat", "label": "EXCHANGE", "uuid": "1A2B-3C4D"},
                {"device": "/dev/disk/by-partuuid/5b1e0a3c-7d2f-4e6a-9c8b-1a2b3c4d5e6f", "format": "btrfs", "label": "scratch", "uuid": "2c8e4b1d-9a7f-4e3c-b6d5-0f1e2d3c4b5a"}
            ],
            "files": [{"path": "/etc/data-disk", "contents": {"source": "data:,partitioned"}}]
        }
    })
}

#[test]
fn a_second_disk_is_partitioned_and_formatted_by_the_config_and_a_repeated_first_boot_changes_nothing() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "ignition-data-disk").unwrap();
    let data = blank_disk(fixture, "ignition-data-disk", DATA_DISK_BYTES);
    let config = write_config(fixture, "ignition-data-disk", &data_disk_config());

    let first = boot(fixture, &[&disk, &data], &config, "");
    assert_reached_real_init(&first);
    assert!(!esp_has_flag(&disk).unwrap(), "first boot did not finish:\n{}", first.text);
    let contents = partition_contents(&data).unwrap();
    let shape: Vec<(u32, &str, &str)> = contents.iter().map(|c| (c.number, c.name.as_str(), c.type_guid.as_str())).collect();
    assert_eq!(
        shape,
        [
            (1, "DATA", "0fc63daf-8483-4772-8e79-3d69d8477de4"),
            (2, "SWAP", LINUX_SWAP),
            (3, "EXCHANGE", "0fc63daf-8483-4772-8e79-3d69d8477de4"),
            (4, "SCRATCH", "0fc63daf-8483-4772-8e79-3d69d8477de4")
        ]
    );
    assert_eq!((contents[0].first_lba, contents[0].last_lba), (2048, 2048 + 96 * 2048 - 1));
    // Size 0 fills the rest, to the table's last usable sector, as sgdisk does.
    assert_eq!(contents[3].last_lba, DATA_DISK_BYTES / 512 - 34);
    assert_eq!(fs(&contents[0]), ("ext4", "data", "6f9ad4e4-3b2c-4e1a-9b8d-2e2c5a1b7c3d"));
    assert_eq!(fs(&contents[1]), ("swap", "swap", "0e6c1a6a-2b1e-4c55-8f6e-7a1d2c3b4a59"));
    assert_eq!(fs(&contents[2]), ("vfat", "EXCHANGE", "1A2B-3C4D"));
    assert_eq!(fs(&contents[3]), ("btrfs", "scratch", "2c8e4b1d-9a7f-4e3c-b6d5-0f1e2d3c4b5a"));
    assert_eq!(String::from_utf8_lossy(root_snapshot(&disk).unwrap()["etc/data-disk"].contents.as_deref().unwrap()), "partitioned");
    eprintln!("data disk: ignition-disks {:?} ms", stage_millis(&first, "ignition-disks"));

    // First boot again (as after a power cut): every partition and filesystem is kept, so
    // the disk keeps every byte but its table's GUIDs (wipeTable draws new ones).
    let again = boot(fixture, &[&disk, &data], &config, "ignition.firstboot");
    assert_reached_real_init(&again);
    assert!(again.has("ext4 kept") && again.has("swap kept") && again.has("vfat kept") && again.has("btrfs kept"), "{}", again.text);
    let after = partition_contents(&data).unwrap();
    let without_guids =
        |contents: &[PartitionContent]| contents.iter().map(|c| (c.number, c.first_lba, c.last_lba, c.filesystem.clone())).collect::<Vec<_>>();
    assert_eq!(without_guids(&after), without_guids(&contents));
    let _ = std::fs::remove_file(&disk);
    let _ = std::fs::remove_file(&data);
}

/// Flatcar's documented way to give ROOT another filesystem, at the default layout (1 GiB
/// USR-A on a 4 GiB disk): formatted as xfs in ignition-disks, after ROOT grew, and mounted
/// as xfs with the config's files on it; later boots keep it.
#[test]
fn root_is_reprovisioned_as_xfs_by_the_config_before_it_is_mounted() {
    let fixture = default_layout_fixture().unwrap();
    let disk = disk_copy(fixture, "ignition-root-xfs").unwrap();
    resize_disk(&disk, 4 << 30).unwrap();
    let config = write_config(
        fixture,
        "ignition-root-xfs",
        &serde_json::json!({
            "ignition": {"version": "3.4.0"},
            "storage": {
                "filesystems": [{"device": "/dev/disk/by-partlabel/ROOT", "format": "xfs", "label": "ROOT", "wipeFilesystem": true}],
                "files": [{"path": "/etc/on-xfs", "contents": {"source": "data:,yes"}}]
            }
        }),
    );
    let first = boot(fixture, &[&disk], &config, "");
    assert_reached_real_init(&first);
    assert!(first.has("(xfs) mounted at /sysroot"), "ROOT was not mounted as xfs:\n{}", first.text);
    assert!(first.has("ignition-disks: /dev/disk/by-partlabel/ROOT: xfs made"), "{}", first.text);
    let root = partition_contents(&disk).unwrap().into_iter().find(|c| c.name == "ROOT").unwrap();
    assert_eq!((root.filesystem.0.as_str(), root.filesystem.1.as_str()), ("xfs", "ROOT"));
    // Made after the grow: the filesystem fills the grown partition.
    assert!(root.last_lba > (3 << 30) / 512, "ROOT did not grow: {root:?}");
    assert_eq!(String::from_utf8_lossy(root_snapshot(&disk).unwrap()["etc/on-xfs"].contents.as_deref().unwrap()), "yes");
    eprintln!(
        "ROOT as xfs, default layout: ignition-disks {:?} ms, root {:?} ms",
        stage_millis(&first, "ignition-disks"),
        stage_millis(&first, "root")
    );

    let later = boot(fixture, &[&disk], &config, "");
    assert_reached_real_init(&later);
    assert!(later.has("(xfs) mounted at /sysroot") && !later.has("] ignition-"), "{}", later.text);
    assert_eq!(String::from_utf8_lossy(root_snapshot(&disk).unwrap()["etc/on-xfs"].contents.as_deref().unwrap()), "yes");
    let _ = std::fs::remove_file(&disk);
}

/// A config that would delete the boot disk's USR-B (the update slot) stops first boot in
/// ignition-disks, naming it, before the first write to any disk; the flag stays.
#[test]
fn a_config_that_would_change_the_boot_disks_own_partitions_is_refused_before_any_write() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "ignition-disks-refused").unwrap();
    let data = blank_disk(fixture, "ignition-disks-refused", DATA_DISK_BYTES);
    let config = write_config(
        fixture,
        "ignition-disks-refused",
        &serde_json::json!({
            "ignition": {"version": "3.4.0"},
            "storage": {"disks": [
                {"device": "/dev/vdb", "partitions": [{"number": 1, "label": "DATA"}]},
                {"device": "/dev/vda", "partitions": [{"number": 4, "shouldExist": false, "wipePartitionEntry": true}]}
            ]}
        }),
    );
    let (disk_before, data_before) = (file_digest(&disk).unwrap(), file_digest(&data).unwrap());
    let console = boot(fixture, &[&disk, &data], &config, "");
    assert_refused(&console, "ignition-disks", "USR-B");
    assert!(console.has("nothing was written"), "{}", console.text);
    assert_eq!(file_digest(&disk).unwrap(), disk_before, "the boot disk changed");
    assert_eq!(file_digest(&data).unwrap(), data_before, "the data disk changed");
    assert!(esp_has_flag(&disk).unwrap());
    let _ = std::fs::remove_file(&disk);
    let _ = std::fs::remove_file(&data);
}
