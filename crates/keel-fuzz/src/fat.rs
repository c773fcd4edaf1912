//! `keel_disk::fat_path_exists` on a device whose bytes are the input: the first-boot flag
//! is read this way from an ESP anyone with the disk can write. Held to: no panic, and
//! answers that hang together: a path's answer does not change with the case of its ASCII
//! letters or trailing dots; a path exists only where its parent does; any answer at all
//! means the volume opened, so its root exists; and a device of 4096-byte sectors either
//! refuses the volume (its sectors are smaller) or answers as one of 512-byte sectors.

use crate::Seed;
use keel_disk::{fat_path_exists, FatError, SectorSize, FIRST_BOOT_FLAG};
use std::io::Cursor;
use std::process::{Command, Stdio};

/// The paths asked of every input: the flag itself, the same in other spellings, and
/// paths through `.` and `..` and deeper directories.
const PATHS: [&str; 6] = [FIRST_BOOT_FLAG, "flatcar", "FLATCAR/FIRST_~1", "efi/boot/bootx64.efi", "x/../flatcar/./first_boot", "a/b/c/d/e"];

/// An answer, with an error reduced to its text so that two can be compared.
fn look_up(input: &[u8], sector: SectorSize, path: &str) -> Result<bool, String> {
    fat_path_exists(&mut Cursor::new(input), sector, path).map_err(|error| match error {
        FatError::Unmountable(_) => format!("unmountable: {error}"),
        _ => error.to_string(),
    })
}

pub fn run(input: &[u8]) {
    let root = look_up(input, SectorSize::Bytes512, "");
    assert!(root != Ok(false), "the root of a volume that opened does not exist");
    for path in PATHS {
        let answer = look_up(input, SectorSize::Bytes512, path);
        if answer.is_ok() {
            assert_eq!(root, Ok(true), "{path:?} was answered ({answer:?}) on a volume that did not open");
        }
        let other_case: String = path.chars().map(|c| if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }).collect();
        assert_eq!(look_up(input, SectorSize::Bytes512, &other_case), answer, "{other_case:?} and {path:?} answered differently");
        assert_eq!(look_up(input, SectorSize::Bytes512, &format!("{path}..")), answer, "trailing dots changed the answer for {path:?}");
        if answer == Ok(true)
            && let Some((parent, _)) = path.rsplit_once('/')
        {
            assert_eq!(look_up(input, SectorSize::Bytes512, parent), Ok(true), "{path:?} exists but its parent does not");
        }
        let on_4kn = look_up(input, SectorSize::Bytes4096, path);
        assert!(
            on_4kn == answer || on_4kn.as_ref().is_err_and(|error| error.starts_with("unmountable")),
            "4096-byte sectors: {on_4kn:?}, 512: {answer:?}"
        );
    }
}

/// A `kib` KiB FAT volume made by mkfs.vfat with `options`, with the first-boot flag
/// written by mtools when `flag` is set (as keel-image writes it), cut after its last
/// non-zero 4 KiB.
fn made_by(options: &[&str], kib: u64, flag: bool) -> Vec<u8> {
    let path = std::env::temp_dir().join(format!("keel-fuzz-fat-seed-{}.img", std::process::id()));
    std::fs::File::create(&path).and_then(|file| file.set_len(kib << 10)).expect("an image in the temporary directory");
    let image = path.to_str().expect("a UTF-8 temporary directory");
    run_tool("mkfs.vfat", &[&["--invariant", "-i", "0b9cdb6f", "-n", "EFI-SYSTEM"], options, &[image]].concat());
    if flag {
        let empty = path.with_extension("flag");
        std::fs::write(&empty, b"").expect("the flag's source file");
        let (directory, _) = FIRST_BOOT_FLAG.rsplit_once('/').expect("the flag lies in a directory");
        run_tool("mmd", &["-i", image, &format!("::{directory}"), "::EFI", "::EFI/BOOT"]);
        let source = empty.to_str().expect("a UTF-8 temporary directory");
        run_tool("mcopy", &["-i", image, source, &format!("::{FIRST_BOOT_FLAG}")]);
        run_tool("mcopy", &["-i", image, source, "::EFI/BOOT/BOOTX64.EFI"]);
        std::fs::remove_file(&empty).expect("removing the flag's source");
    }
    let mut bytes = std::fs::read(&path).expect("reading the image back");
    std::fs::remove_file(&path).expect("removing the image");
    // Zeros past the last structure only lengthen the seed: a lookup never reads them.
    let used = bytes.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
    bytes.truncate(used.next_multiple_of(4096));
    bytes
}

fn run_tool(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).env("SOURCE_DATE_EPOCH", "315532800").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(status.is_ok_and(|s| s.success()), "{program} {args:?} failed: cargo xtask setup installs dosfstools and mtools");
}

pub fn seeds() -> Vec<Seed> {
    // mtools refuses FAT32 volumes this small, so those seeds are empty volumes.
    vec![
        Seed { name: "fat12-512-flag", bytes: made_by(&["-F", "12", "-S", "512"], 128, true) },
        Seed { name: "fat12-4096-flag", bytes: made_by(&["-F", "12", "-S", "4096"], 128, true) },
        Seed { name: "fat32-512-empty", bytes: made_by(&["-F", "32", "-S", "512", "-s", "1", "-f", "1", "-R", "2"], 256, false) },
        Seed { name: "fat32-4096-empty", bytes: made_by(&["-F", "32", "-S", "4096", "-s", "1", "-f", "1", "-R", "2"], 256, false) },
    ]
}
