//! The EFI system partition: vfat, carrying the first-boot flag that tells keel-init a
//! machine has not finished its first boot yet.

use anyhow::{bail, Context};
use keel_disk::{SectorSize, FIRST_BOOT_FLAG};
use std::path::Path;
use std::process::Command;

/// FAT timestamps start in 1980; an earlier epoch is stored as this.
const FAT_EPOCH: u64 = 315_532_800;

/// Formats `image` (already sized) as vfat of `sector_size` logical sectors (the disk's:
/// Linux does not mount a FAT of smaller sectors than its device's) labelled `EFI-SYSTEM`
/// and writes the empty first-boot flag. `--invariant` and SOURCE_DATE_EPOCH make the
/// bytes depend only on the arguments.
pub fn make_esp(image: &Path, volume_id: u32, epoch: u64, sector_size: SectorSize) -> anyhow::Result<()> {
    let epoch = epoch.max(FAT_EPOCH).to_string();
    let sector_bytes = sector_size.bytes().to_string();
    run(Command::new("mkfs.vfat").args(["--invariant", "-S", &sector_bytes, "-i", &format!("{volume_id:08x}"), "-n", "EFI-SYSTEM"]).arg(image))?;
    let flag_source = image.with_extension("first_boot");
    std::fs::write(&flag_source, b"").with_context(|| format!("cannot write {}", flag_source.display()))?;
    let (flag_dir, _) = FIRST_BOOT_FLAG.rsplit_once('/').context("the flag path has no directory")?;
    let result = run(Command::new("mmd").env("SOURCE_DATE_EPOCH", &epoch).arg("-i").arg(image).arg(format!("::{flag_dir}"))).and_then(|()| {
        run(Command::new("mcopy").env("SOURCE_DATE_EPOCH", &epoch).arg("-i").arg(image).arg(&flag_source).arg(format!("::{FIRST_BOOT_FLAG}")))
    });
    let _ = std::fs::remove_file(&flag_source);
    result
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let program = command.get_program().to_string_lossy().to_string();
    let output = command.output().with_context(|| format!("cannot run {program} (dosfstools and mtools make the ESP)"))?;
    if !output.status.success() {
        bail!("{program} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}
