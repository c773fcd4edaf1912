//! keel-init looks for the first-boot flag with keel-disk's own FAT reader, not a vfat mount:
//! it must see what the kernel's vfat sees. The VM's kernel fills blank volumes of every FAT
//! width and both sector sizes with long, short, mixed-case, nested and deleted names, and
//! answers (`[ -e PATH ]` on its mount) each question the host then asks keel's lookup: each
//! name, its case variants, deleted names and names never made. Both must also agree with
//! what the kernel was told to leave there.

use keel_disk::{fat_path_exists, SectorSize};
use keel_vm_tests::{assert_reached_real_init, boot_machine, disk_copy, shared_fixture, Bus, Disk, Machine};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What the kernel is told to do, in order.
enum Step {
    Dir(String),
    File(String),
    Remove(String),
    RemoveDir(String),
}

fn steps() -> Vec<Step> {
    let mut steps = vec![Step::Dir("flatcar".into()), Step::File("flatcar/first_boot".into())];
    for dir in ["EFI/BOOT", "a/b/c/d/e", "Mixed Case Dir/Sub Dir", "many", "gone dir"] {
        steps.push(Step::Dir(dir.into()));
    }
    for file in [
        "EFI/BOOT/BOOTX64.EFI",
        "a/b/c/d/e/leaf.txt",
        "Mixed Case Dir/Sub Dir/A File With A Long Name.json",
        "UPPER.TXT",
        "lower.txt",
        "MiXeD.TxT",
        "name.with.many.dots",
        "exactly13char",
        "x",
        "deleted-long-file-name.txt",
        "DEL.TXT",
    ] {
        steps.push(Step::File(file.into()));
    }
    // Enough entries that the directory spans clusters, its long names across their edges.
    for index in 0..120 {
        steps.push(Step::File(format!("many/entry-number-{index:03}-with-a-long-name")));
    }
    for index in 0..60 {
        steps.push(Step::File(format!("many/S{index}.BIN")));
    }
    steps.extend([
        Step::Remove("deleted-long-file-name.txt".into()),
        Step::Remove("DEL.TXT".into()),
        Step::Remove("many/entry-number-007-with-a-long-name".into()),
        Step::RemoveDir("gone dir".into()),
    ]);
    steps
}

fn quoted(path: &str) -> String {
    format!("'{path}'")
}

fn script(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|step| match step {
            Step::Dir(path) => format!("mkdir -p {}\n", quoted(path)),
            Step::File(path) => format!("touch {}\n", quoted(path)),
            Step::Remove(path) => format!("rm {}\n", quoted(path)),
            Step::RemoveDir(path) => format!("rmdir {}\n", quoted(path)),
        })
        .collect()
}

/// Every path the steps leave, directories with their parents, in lower case: vfat's
/// names match without regard to ASCII case.
fn left_behind(steps: &[Step]) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for step in steps {
        match step {
            Step::Dir(path) | Step::File(path) => {
                let lower = path.to_ascii_lowercase();
                let mut prefix = String::new();
                for part in lower.split('/') {
                    prefix = if prefix.is_empty() { part.to_string() } else { format!("{prefix}/{part}") };
                    paths.insert(prefix.clone());
                }
            }
            Step::Remove(path) | Step::RemoveDir(path) => {
                paths.remove(&path.to_ascii_lowercase());
            }
        }
    }
    paths
}

/// Each path made, in its own case and both others, the removed ones, and some never made.
fn questions(steps: &[Step]) -> Vec<String> {
    let mut asked = BTreeSet::new();
    for step in steps {
        let (Step::Dir(path) | Step::File(path) | Step::Remove(path) | Step::RemoveDir(path)) = step;
        asked.extend([path.clone(), path.to_ascii_lowercase(), path.to_ascii_uppercase()]);
    }
    for never in ["flatcar/first_boot2", "first_boot", "nope", "a/b/x", "many/entry-number-200-with-a-long-name", "lower.txt/child", "many/S60.BIN"] {
        asked.insert(never.to_string());
    }
    asked.into_iter().collect()
}

/// A blank FAT volume of `width` bits and `sector` bytes a sector, with the kernel's script
/// and the questions on it.
fn blank_volume(dir: &Path, width: u32, sector: SectorSize, mib: u64, fill: &str, asked: &[String]) -> PathBuf {
    let image = dir.join(format!("fat{width}-{}.img", sector.bytes()));
    let _ = std::fs::remove_file(&image);
    std::fs::File::create(&image).unwrap().set_len(mib << 20).unwrap();
    let mut mkfs = Command::new("mkfs.vfat");
    mkfs.args(["-F", &width.to_string(), "-S", &sector.bytes().to_string()]);
    if width != 12 {
        mkfs.args(["-s", "1"]);
    }
    let made = mkfs.arg(&image).output().unwrap();
    assert!(made.status.success(), "mkfs.vfat: {}", String::from_utf8_lossy(&made.stderr));
    for (name, text) in [("fill.sh", fill.to_string()), ("ask.txt", asked.iter().map(|path| format!("{path}\n")).collect())] {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let copied = Command::new("mcopy").arg("-i").arg(&image).arg(&file).arg(format!("::{name}")).output().unwrap();
        assert!(copied.status.success(), "mcopy: {}", String::from_utf8_lossy(&copied.stderr));
    }
    image
}

#[test]
fn keels_fat_lookup_sees_what_the_kernels_vfat_wrote_on_every_fat_width_and_sector_size() {
    let fixture = shared_fixture().unwrap();
    let dir = fixture.dir.join("esp-flag");
    std::fs::create_dir_all(&dir).unwrap();
    let steps = steps();
    let fill = script(&steps);
    let asked = questions(&steps);
    let volumes = [
        (12, SectorSize::Bytes512, 4),
        (16, SectorSize::Bytes512, 32),
        (32, SectorSize::Bytes512, 64),
        (16, SectorSize::Bytes4096, 64),
        (32, SectorSize::Bytes4096, 300),
    ]
    .map(|(width, sector, mib)| (width, sector, blank_volume(&dir, width, sector, mib, &fill, &asked)));

    // First boot loads vfat (it clears the ESP's flag), so the real root can mount them.
    let disk = disk_copy(fixture, "esp-flag").unwrap();
    let mut disks = vec![Disk::of_fixture(Bus::Virtio, &disk, fixture)];
    disks.extend(volumes.iter().map(|(_, sector, image)| Disk { sector_size: *sector, ..Disk::on(Bus::Virtio, image) }));
    let machine = Machine { kernel: &keel_vm_tests::artifacts().unwrap().kernel, disks, plugged_in_later: None, firmware_config: None };
    let fills: Vec<String> = ["vdb", "vdc", "vdd", "vde", "vdf"].iter().map(|name| format!("keel.test=fat-fill:/dev/{name}")).collect();
    let console = boot_machine(&machine, &fixture.initrd, &fills.join(" "), Duration::from_secs(240), "unsafe", |_, _| false).unwrap();
    assert_reached_real_init(&console);
    for name in ["vdb", "vdc", "vdd", "vde", "vdf"] {
        assert!(console.real_init().contains(&format!("fat-fill /dev/{name} exit 0").as_str()), "{name}:\n{}", console.text);
    }

    let left = left_behind(&steps);
    let mut compared = 0;
    for ((width, sector, image), name) in volumes.iter().zip(["vdb", "vdc", "vdd", "vde", "vdf"]) {
        let mut device = std::fs::File::open(image).unwrap();
        let prefix = format!("fat-answer /dev/{name} ");
        let kernel: Vec<(bool, &str)> = console
            .real_init()
            .into_iter()
            .filter_map(|line| line.strip_prefix(prefix.as_str()))
            .map(|answer| answer.strip_prefix("yes ").map_or_else(|| (false, answer.strip_prefix("no ").unwrap_or(answer)), |path| (true, path)))
            .collect();
        assert_eq!(kernel.len(), asked.len(), "{name}: the kernel answered {} of {} questions", kernel.len(), asked.len());
        for ((kernel_found, kernel_path), path) in kernel.into_iter().zip(&asked) {
            assert_eq!(kernel_path, path, "{name}: answers out of order");
            let found = fat_path_exists(&mut device, *sector, path).unwrap_or_else(|error| panic!("FAT{width}/{sector:?} {path}: {error}"));
            let at = format!("FAT{width}, {} bytes a sector: {path:?}", sector.bytes());
            assert_eq!(found, kernel_found, "{at}: keel's lookup and the kernel's vfat disagree");
            assert_eq!(found, left.contains(&path.to_ascii_lowercase()), "{at}: not what the kernel was told to leave");
            compared += 1;
        }
        assert!(fat_path_exists(&mut device, *sector, keel_disk::FIRST_BOOT_FLAG).unwrap(), "FAT{width}: the flag");
    }
    eprintln!("{compared} lookups on {} volumes the kernel wrote agree with the kernel's own answers", volumes.len());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&disk);
}
