//! A power cut at any moment of first boot is survived: QEMU is SIGKILLed (its disk in
//! writethrough mode, so every write the guest saw complete is in the image) at moments
//! spread over the whole first boot, the machine boots again, and every run ends in the
//! state an uninterrupted first boot reaches: the same partition table shape, a clean
//! ext4 filling ROOT, the image's own file still there, and the first-boot flag gone.

use keel_disk::{read_gpt, Gpt, IMAGE_DISK_GUID};
use keel_vm_tests::{
    boot_until, check_root_ext4, disk_copy, esp_has_flag, ext4_blocks, format_root, on_root, resize_disk, shared_fixture, stage_millis, Console,
    Fixture,
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

/// When to cut the power.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// This long after QEMU started: the kernel's own boot, before keel-init.
    SinceStart(Duration),
    /// This long after keel-init logged the end of a stage: first boot's disk work runs
    /// in the stages after `usr` (first-boot, root, etc, first-boot-done).
    After(&'static str, Duration),
}

fn table(image: &Path) -> Gpt {
    read_gpt(&mut std::fs::File::open(image).unwrap()).unwrap()
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

fn boot_through(disk: &Path, initrd: &Path, moment: Option<Moment>) -> Console {
    let mut stage_seen_at = None;
    boot_until(&[disk], initrd, "", TIMEOUT, CACHE, |text, elapsed| match moment {
        None => false,
        Some(Moment::SinceStart(at)) => elapsed >= at,
        Some(Moment::After(stage, delay)) => {
            if stage_seen_at.is_none() && text.contains(&format!("] {stage}: ")) {
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

/// Checks the end state against the uninterrupted run's; an error says what differs.
fn check_end_state(disk: &Path, reference: &Gpt, shipped: Shipped) -> Result<(), String> {
    let gpt = read_gpt(&mut std::fs::File::open(disk).unwrap()).map_err(|e| format!("table unreadable: {e:#}"))?;
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
    let root_bytes = gpt.by_name("ROOT").ok().flatten().map(|p| p.size_bytes()).unwrap_or(0);
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

/// Where the cut landed: the last stage keel-init reported before it.
fn cut_after(console: &Console) -> String {
    console
        .text
        .lines()
        .rfind(|line| line.starts_with("keel: ["))
        .and_then(|line| line.split_once("] ").map(|(_, rest)| rest.split(':').next().unwrap_or(rest).to_string()))
        .unwrap_or_else(|| "before keel-init".to_string())
}

fn survives_cuts(shipped: Shipped, name: &str, kernel_points: u32, disk_points: u32) {
    let fixture = shared_fixture().unwrap();
    let reference_disk = image_for(fixture, shipped, &format!("{name}-reference"));
    let reference = boot_through(&reference_disk, &fixture.initrd, None);
    assert!(reference.real_init().contains(&"done"), "the uninterrupted first boot failed:\n{}", reference.text);
    check_end_state(&reference_disk, &table(&reference_disk), shipped).unwrap();
    let reference_table = table(&reference_disk);

    // The kernel's boot lasts until keel-init's first line; first boot's disk work from
    // the usr stage's end to the flag's removal (the stages' own times, plus a margin).
    let kernel_secs = reference
        .text
        .lines()
        .find(|l| l.contains("keel-init starting"))
        .and_then(|l| l.split_once('[')?.1.split_once(']')?.0.trim().parse::<f64>().ok())
        .expect("no keel-init start time");
    let disk_work_ms: f64 =
        ["first-boot", "root", "etc", "first-boot-done"].iter().map(|s| stage_millis(&reference, s).unwrap_or(0.0)).sum::<f64>() + 100.0;
    let mut moments: Vec<Moment> =
        (1..=kernel_points).map(|k| Moment::SinceStart(Duration::from_secs_f64(kernel_secs * f64::from(k) / f64::from(kernel_points + 1)))).collect();
    moments.extend(
        (0..disk_points).map(|k| Moment::After("usr", Duration::from_secs_f64(disk_work_ms / 1000.0 * f64::from(k) / f64::from(disk_points)))),
    );
    // Right as each later stage starts, whatever the timing jitter: the format (or grow),
    // the /etc overlay, and the flag's removal.
    moments.extend(["first-boot", "root", "etc"].map(|stage| Moment::After(stage, Duration::ZERO)));

    // One QEMU at a time here: the two scenarios run in parallel, one per core.
    let mut outcomes = Vec::new();
    for (index, moment) in moments.iter().copied().enumerate() {
        let disk = image_for(fixture, shipped, &format!("{name}-cut-{index}"));
        let cut = boot_through(&disk, &fixture.initrd, Some(moment));
        let torn = read_gpt(&mut std::fs::File::open(&disk).unwrap()).map(|_| ()).map_err(|e| format!("{e:#}"));
        let after = boot_through(&disk, &fixture.initrd, None);
        let result = match (&torn, after.real_init().contains(&"done")) {
            (Err(error), _) => Err(format!("no readable table after the cut: {error}")),
            (Ok(()), false) => Err(format!("the boot after the cut failed:\n{}", after.text)),
            (Ok(()), true) => check_end_state(&disk, &reference_table, shipped),
        };
        outcomes.push((index, moment, cut_after(&cut), result));
        let _ = std::fs::remove_file(&disk);
    }
    let mut failures = Vec::new();
    for (index, moment, landed, result) in &outcomes {
        eprintln!("{name} cut {index:2} at {moment:?}: after {landed}: {}", if result.is_ok() { "converged" } else { "FAILED" });
        if let Err(error) = result {
            failures.push(format!("cut {index} at {moment:?} (after {landed}): {error}"));
        }
    }
    let distinct: std::collections::BTreeSet<&String> = outcomes.iter().map(|(_, _, landed, _)| landed).collect();
    eprintln!("{name}: {} cuts, landing after {} different stages: {distinct:?}", outcomes.len(), distinct.len());
    assert!(failures.is_empty(), "{} of {} cuts did not converge:\n{}", failures.len(), outcomes.len(), failures.join("\n"));
}

#[test]
fn a_power_cut_while_first_boot_formats_a_blank_root_is_survived() {
    survives_cuts(Shipped::Blank, "cut-blank", 3, 9);
}

#[test]
fn a_power_cut_while_first_boot_grows_a_shipped_ext4_root_is_survived() {
    survives_cuts(Shipped::Ext4WithFile, "cut-ext4", 1, 5);
}
