//! The EFI system partition: vfat, carrying the first-boot flag that tells keel-init a
//! machine has not finished its first boot yet.

use crate::EspFile;
use anyhow::{bail, ensure, Context};
use keel_disk::{SectorSize, FIRST_BOOT_FLAG};
use std::path::Path;
use std::process::Command;

/// What a file can take beyond its size: the rest of its last cluster, for the clusters
/// mkfs.vfat makes on ESPs of Flatcar's size. A guess made to fail early with advice;
/// mcopy still refuses what does not fit.
const CLUSTER_ROOM: u64 = 4096;
/// The FATs, root directory and reserved sectors of an ESP up to Flatcar's 128 MiB.
const FAT_ROOM: u64 = 1 << 20;
/// FAT timestamps start in 1980; an earlier epoch is stored as this.
const FAT_EPOCH: u64 = 315_532_800;

/// Formats `image` (already sized) as vfat of `sector_size` logical sectors (the disk's:
/// Linux does not mount a FAT of smaller sectors than its device's) labelled `EFI-SYSTEM`
/// and writes the empty first-boot flag and `files` (UKIs, say). `--invariant` and
/// SOURCE_DATE_EPOCH make the bytes depend only on the arguments.
pub fn make_esp(image: &Path, volume_id: u32, epoch: u64, sector_size: SectorSize, files: &[EspFile]) -> anyhow::Result<()> {
    let mut needed = 0;
    for file in files {
        let bytes = std::fs::metadata(&file.source).with_context(|| format!("cannot read {}", file.source.display()))?.len();
        needed += bytes.div_ceil(CLUSTER_ROOM) * CLUSTER_ROOM;
    }
    let esp_bytes = std::fs::metadata(image).with_context(|| format!("cannot read {}", image.display()))?.len();
    ensure!(
        needed + FAT_ROOM <= esp_bytes,
        "the ESP's {} MiB cannot hold {needed} bytes of files and the FAT: give a larger --esp-mib",
        esp_bytes >> 20
    );
    let epoch = epoch.max(FAT_EPOCH).to_string();
    let sector_bytes = sector_size.bytes().to_string();
    run(Command::new("mkfs.vfat").args(["--invariant", "-S", &sector_bytes, "-i", &format!("{volume_id:08x}"), "-n", "EFI-SYSTEM"]).arg(image))?;
    let flag_source = image.with_extension("first_boot");
    std::fs::write(&flag_source, b"").with_context(|| format!("cannot write {}", flag_source.display()))?;
    let flag = EspFile { path: FIRST_BOOT_FLAG.to_string(), source: flag_source.clone() };
    let result = std::iter::once(&flag).chain(files).try_for_each(|file| copy_in(image, &epoch, file));
    let _ = std::fs::remove_file(&flag_source);
    result
}

/// Copies `file` into the FAT at `image`, making the directories of its path first.
fn copy_in(image: &Path, epoch: &str, file: &EspFile) -> anyhow::Result<()> {
    let mtools = |program: &str| {
        let mut command = Command::new(program);
        command.env("SOURCE_DATE_EPOCH", epoch).arg("-i").arg(image);
        command
    };
    let mut directory = String::new();
    for component in file.path.split('/').rev().skip(1).collect::<Vec<_>>().into_iter().rev() {
        ensure!(!component.is_empty() && component != "." && component != "..", "{} is not a plain path on the ESP", file.path);
        directory = if directory.is_empty() { component.to_string() } else { format!("{directory}/{component}") };
        // mmd fails on a directory that exists: ask first.
        let exists = mtools("mdir").arg("-b").arg(format!("::{directory}")).output().is_ok_and(|out| out.status.success());
        if !exists {
            run(mtools("mmd").arg(format!("::{directory}")))?;
        }
    }
    run(mtools("mcopy").arg(&file.source).arg(format!("::{}", file.path))).with_context(|| format!("cannot put {} on the ESP", file.path))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let program = command.get_program().to_string_lossy().to_string();
    let output = command.output().with_context(|| format!("cannot run {program} (dosfstools and mtools make the ESP)"))?;
    if !output.status.success() {
        bail!("{program} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}
