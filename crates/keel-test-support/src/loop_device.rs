//! Loop devices for tests that need the kernel's view of a disk image (they need root):
//! a logical sector size of the test's choosing, partitions added through BLKPG, mounts.

use crate::run;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device over a file, unmounted, emptied of partitions and detached when dropped
/// (without partscan the kernel leaves BLKPG-added partitions behind on a detached loop).
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub device: String,
    mounted: Option<PathBuf>,
    partitions: bool,
}

impl LoopDevice {
    /// `file` as a disk of `sector_bytes` logical sectors (512 or 4096; the file's length a
    /// multiple of it).
    pub fn attach(file: &Path, sector_bytes: u64) -> LoopDevice {
        let device = run("losetup", &["--find", "--show", "--sector-size", &sector_bytes.to_string(), file.to_str().unwrap()]).trim().to_string();
        LoopDevice { device, mounted: None, partitions: false }
    }

    pub fn path(&self) -> &Path {
        Path::new(&self.device)
    }

    /// The partitions as the kernel sees them, added through BLKPG by partx (libblkid
    /// reads the table, in the device's logical sectors): this also works where the kernel
    /// has no GPT parser of its own, or loop devices no partition scanning.
    pub fn add_partitions(&mut self) {
        run("partx", &["--add", &self.device]);
        self.partitions = true;
    }

    /// Deletes the kernel's partitions of the device when it is dropped, for a test whose
    /// code under test adds them (through BLKPG) itself.
    pub fn delete_partitions_on_drop(&mut self) {
        self.partitions = true;
    }

    pub fn mount(&mut self, at: &Path, options: &str) {
        std::fs::create_dir_all(at).unwrap();
        run("mount", &["-o", options, &self.device, at.to_str().unwrap()]);
        self.mounted = Some(at.to_path_buf());
    }

    /// Makes the device as long as its file now is.
    pub fn refresh_capacity(&self) {
        run("losetup", &["--set-capacity", &self.device]);
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Some(at) = &self.mounted {
            let _ = Command::new("umount").arg(at).output();
        }
        if self.partitions {
            let _ = Command::new("partx").args(["--delete", &self.device]).output();
        }
        let _ = Command::new("losetup").args(["--detach", &self.device]).output();
    }
}

/// Runs `with` on the disk image `file` as a disk of `sector_bytes` logical sectors: the
/// file itself for 512, which is how every tool reads a file, and a loop device of that
/// sector size otherwise (sgdisk, cgpt and the kernel take a block device's logical sector
/// size; for a file none of them has an option).
pub fn as_disk<T>(file: &Path, sector_bytes: u64, with: impl FnOnce(&Path) -> T) -> T {
    if sector_bytes == 512 {
        return with(file);
    }
    let device = LoopDevice::attach(file, sector_bytes);
    with(device.path())
}
