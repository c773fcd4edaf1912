//! Disk images and reference tools shared by keel-disk's integration tests.
#![allow(dead_code)] // each test file uses its own subset

use keel_disk::{flatcar_layout, plan_layout, write_gpt, Guid, LayoutSizes};
use keel_test_support::{process_dir, run};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MIB: u64 = 1 << 20;

pub fn small_sizes() -> LayoutSizes {
    LayoutSizes { esp: 2 * MIB, bios_boot: MIB, usr: 8 * MIB, oem: 2 * MIB, oem_config: MIB, root: 4 * MIB }
}

pub fn image(name: &str) -> PathBuf {
    let path = process_dir(env!("CARGO_TARGET_TMPDIR")).join(format!("gpt-{name}.img"));
    let layout = plan_layout(&flatcar_layout(&small_sizes()).unwrap(), |spec| Guid::from_random_bytes([spec.number as u8; 16])).unwrap();
    let file = File::create(&path).unwrap();
    file.set_len(layout.disk_bytes).unwrap();
    let mut file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    write_gpt(&mut file, Guid::parse("00000000-0000-0000-0000-000000000001").unwrap(), &layout.partitions).unwrap();
    path
}

pub fn sgdisk(args: &[&str], path: &Path) -> String {
    run("sgdisk", &[args, &[path.to_str().unwrap()]].concat())
}

/// Debian's `cgpt` (vboot-utils), the reference for the gptprio bits. Returns its output
/// whether it succeeded or not: some of its refusals are exit status 0.
pub fn cgpt(args: &[&str], path: &Path) -> std::process::Output {
    Command::new("cgpt").args(args).arg(path).output().expect("cgpt must be installed; `cargo xtask setup` installs it")
}
