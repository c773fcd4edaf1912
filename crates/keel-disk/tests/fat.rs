//! `fat_path_exists` against real FAT volumes: made by mkfs.vfat (FAT12, FAT16 and FAT32,
//! 512- and 4096-byte sectors, one sector per cluster where the width allows, so that
//! directories span many clusters), filled by mtools as keel-image fills the ESP and, where
//! the running kernel has vfat, by the kernel itself, with files deleted again. Each of
//! hundreds of paths is asked of the lookup and of an oracle: `Path::exists` on the
//! kernel's read-only vfat mount (root, loop devices and vfat needed, else skipped with a
//! message) and mtools' own lookup (`mattrib`), which judges the paths without trailing
//! dots or wildcards.

use keel_disk::{fat_path_exists, LayoutSizes, SectorSize, FIRST_BOOT_FLAG};
use keel_test_support::{run, scratch_dir, LoopDevice};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("fat-{name}"))
}

/// Why the kernel cannot be asked here, if it cannot.
fn kernel_unavailable() -> Option<&'static str> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root");
    }
    let has_vfat = || std::fs::read_to_string("/proc/filesystems").is_ok_and(|list| list.lines().any(|line| line.trim_end().ends_with("\tvfat")));
    if !has_vfat() {
        let _ = Command::new("modprobe").arg("vfat").output();
    }
    (!has_vfat()).then_some("the running kernel has no vfat")
}

/// One volume to fill: its FAT width and sector size, and the image's size.
struct Shape {
    fat: u32,
    sector: u64,
    mib: u64,
}

const SHAPES: [Shape; 6] = [
    Shape { fat: 12, sector: 512, mib: 2 },
    Shape { fat: 12, sector: 4096, mib: 8 },
    Shape { fat: 16, sector: 512, mib: 24 },
    Shape { fat: 16, sector: 4096, mib: 64 },
    Shape { fat: 32, sector: 512, mib: 48 },
    Shape { fat: 32, sector: 4096, mib: 300 },
];

impl Shape {
    fn name(&self) -> String {
        format!("fat{}-{}", self.fat, self.sector)
    }

    fn sector_size(&self) -> SectorSize {
        SectorSize::new(self.sector).unwrap()
    }

    fn format(&self, image: &Path) {
        File::create(image).unwrap().set_len(self.mib << 20).unwrap();
        // FAT12 cannot number that many one-sector clusters: mkfs.vfat picks its cluster.
        let per_cluster: &[&str] = if self.fat == 12 { &[] } else { &["-s", "1"] };
        let (fat, sector) = (self.fat.to_string(), self.sector.to_string());
        let mut args = vec!["-F", &fat, "-S", &sector];
        args.extend(per_cluster);
        args.extend(["-n", "EFI-SYSTEM", image.to_str().unwrap()]);
        run("mkfs.vfat", &args);
    }
}

/// What a volume is filled with: directories (with a trailing '/'), files, and files
/// created and then deleted again. Long and short names, mixed case, names one letter
/// apart, and a directory of 180 entries that needs many clusters.
fn tree() -> (Vec<String>, Vec<String>) {
    let mut paths: Vec<String> = [
        "flatcar/",
        "flatcar/first_boot",
        "EFI/",
        "EFI/BOOT/",
        "EFI/BOOT/BOOTX64.EFI",
        "EFI/Linux/",
        "deep/",
        "deep/a/",
        "deep/a/b/",
        "deep/a/b/c/",
        "deep/a/b/c/d/",
        "deep/a/b/c/d/Leaf File.txt",
        "Case/",
        "Case/ReadMe.md",
        "Case/README",
        "Case/readme.txt",
        "x",
        "thirteen-char",
        "twenty-six-characters-long",
        "with space.txt",
        "UPPER.TXT",
        "lower.txt",
        "dots.in.name.tar.gz",
        "ab",
        "abc",
        "abcdefgh.ijk",
        "abcdefghi.jk",
        "many/",
    ]
    .iter()
    .map(|path| path.to_string())
    .collect();
    let mut deleted = Vec::new();
    for index in 0..180 {
        paths.push(match index % 3 {
            0 => format!("many/F{index}.TXT"),
            1 => format!("many/a long file name number {index}.conf"),
            _ => format!("many/MixedCase{index}.Data"),
        });
        if index % 7 == 0 {
            deleted.push(format!("many/deleted entry {index}.txt"));
        }
    }
    deleted.extend(["gone-directory/".to_string(), "flatcar/first_boot.old".to_string(), "SHORT.DEL".to_string()]);
    (paths, deleted)
}

fn fill_with_mtools(image: &Path, scratch: &Path) {
    let empty = scratch.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let target = |path: &str| format!("::{}", path.trim_end_matches('/'));
    let (paths, deleted) = tree();
    for path in paths.iter().chain(&deleted) {
        if path.ends_with('/') {
            run("mmd", &["-i", image.to_str().unwrap(), &target(path)]);
        } else {
            run("mcopy", &["-i", image.to_str().unwrap(), empty.to_str().unwrap(), &target(path)]);
        }
    }
    for path in &deleted {
        let tool = if path.ends_with('/') { "mrd" } else { "mdel" };
        run(tool, &["-i", image.to_str().unwrap(), &target(path)]);
    }
    // A name past ASCII, which the kernel with iocharset ascii cannot create.
    run("mcopy", &["-i", image.to_str().unwrap(), empty.to_str().unwrap(), "::caf\u{e9} cr\u{e8}me"]);
}

fn fill_with_kernel(image: &Path, sector: u64, mount: &Path) {
    let mut device = LoopDevice::attach(image, sector);
    device.mount(mount, "rw");
    let (paths, deleted) = tree();
    for path in paths.iter().chain(&deleted) {
        let at = mount.join(path.trim_end_matches('/'));
        if path.ends_with('/') {
            std::fs::create_dir(&at).unwrap_or_else(|e| panic!("{}: {e}", at.display()));
        } else {
            std::fs::write(&at, b"").unwrap_or_else(|e| panic!("{}: {e}", at.display()));
        }
    }
    for path in &deleted {
        let at = mount.join(path.trim_end_matches('/'));
        if path.ends_with('/') {
            std::fs::remove_dir(&at).unwrap();
        } else {
            std::fs::remove_file(&at).unwrap();
        }
    }
}

/// The paths asked: each name made and deleted, in other cases, cut short, extended,
/// with trailing dots or a slash, through `.` and `..`, and names 8.3 aliases may have.
fn queries() -> Vec<String> {
    let (paths, deleted) = tree();
    let mut asked = BTreeSet::new();
    for path in paths.iter().chain(&deleted).map(|path| path.trim_end_matches('/')) {
        let (parent, name) = path.rsplit_once('/').map_or(("", path), |(parent, name)| (parent, name));
        let within = |other: &str| if parent.is_empty() { other.to_string() } else { format!("{parent}/{other}") };
        let swapped: String = name.chars().map(|c| if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }).collect();
        let stem: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).take(6).collect::<String>().to_uppercase();
        for variant in [
            path.to_string(),
            path.to_uppercase(),
            path.to_lowercase(),
            within(&swapped),
            within(&name[..name.len() - 1]),
            within(&format!("{name}x")),
            format!("{path}."),
            format!("{path}/"),
            format!("{path}/."),
            format!("{path}/../{name}"),
            within(&format!("{stem}~1")),
            within(&format!("{stem}~2")),
            within(&format!("{stem}~1.TXT")),
        ] {
            asked.insert(variant);
        }
    }
    for extra in
        ["", "nothing", "caf\u{e9} cr\u{e8}me", "caf? cr?me", "CAF? CR?ME", "CAF?CR~1", "flatcar/first_boot/x", "EFI-SYSTEM", "EFI-SY~1", "..."]
    {
        asked.insert(extra.to_string());
    }
    asked.into_iter().collect()
}

/// mtools' answers, for the paths its lookup reads as the kernel does: not those with
/// trailing dots (vfat drops them, mtools does not), wildcards, or letters past ASCII
/// (mtools matches them through the locale, vfat with iocharset ascii never does).
fn mtools_answers(image: &Path, asked: &[String]) -> Vec<Option<bool>> {
    let judged =
        |path: &str| path.is_ascii() && !path.contains(['*', '?', '[', '"']) && !path.trim_end_matches('/').ends_with('.') && !path.is_empty();
    let mut missing = BTreeSet::new();
    let targets: Vec<String> = asked.iter().filter(|path| judged(path)).map(|path| format!("::{path}")).collect();
    for batch in targets.chunks(200) {
        let output = Command::new("mattrib").arg("-i").arg(image).args(batch).output().unwrap();
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            let Some(name) = line.strip_prefix("mattrib: File \"::").and_then(|rest| rest.strip_suffix("\" not found")) else {
                panic!("mattrib said something other than \"not found\": {line}");
            };
            missing.insert(name.to_string());
        }
    }
    asked.iter().map(|path| judged(path).then(|| !missing.contains(path))).collect()
}

struct Tally {
    asked: usize,
    present: usize,
}

/// Compares the lookup with the oracle's answers (None: the oracle does not judge it).
fn compare(what: &str, device: &Path, sector: SectorSize, asked: &[String], answers: &[Option<bool>]) -> Tally {
    let mut tally = Tally { asked: 0, present: 0 };
    let mut wrong = Vec::new();
    for (path, answer) in asked.iter().zip(answers) {
        let Some(expected) = answer else { continue };
        let found = fat_path_exists(&mut File::open(device).unwrap(), sector, path);
        match found {
            Ok(found) if found == *expected => {}
            other => wrong.push(format!("{path:?}: {other:?}, {expected} expected")),
        }
        tally.asked += 1;
        tally.present += usize::from(*expected);
    }
    assert!(wrong.is_empty(), "{what}: {} of {} differ:\n{}", wrong.len(), tally.asked, wrong.join("\n"));
    eprintln!("{what}: {} paths agree ({} present, {} absent)", tally.asked, tally.present, tally.asked - tally.present);
    tally
}

fn kernel_answers(image: &Path, sector: u64, mount: &Path, asked: &[String]) -> (LoopDevice, Vec<Option<bool>>) {
    let mut device = LoopDevice::attach(image, sector);
    device.mount(mount, "ro");
    let answers = asked.iter().map(|path| Some(mount.join(path).exists())).collect();
    (device, answers)
}

#[test]
fn the_lookup_agrees_with_mtools_and_the_kernel_on_volumes_mtools_filled() {
    let asked = queries();
    let kernel = kernel_unavailable();
    if let Some(reason) = kernel {
        eprintln!("kernel comparison skipped: {reason}");
    }
    let (mut by_mtools, mut by_kernel) = (0, 0);
    for shape in SHAPES {
        let dir = scratch(&format!("mtools-{}", shape.name()));
        let image = dir.join("esp.img");
        shape.format(&image);
        fill_with_mtools(&image, &dir);
        by_mtools += compare(&format!("{} vs mtools", shape.name()), &image, shape.sector_size(), &asked, &mtools_answers(&image, &asked)).asked;
        if kernel.is_none() {
            let (device, answers) = kernel_answers(&image, shape.sector, &dir.join("mnt"), &asked);
            by_kernel += compare(&format!("{} vs the kernel", shape.name()), device.path(), shape.sector_size(), &asked, &answers).asked;
        }
    }
    eprintln!("{by_mtools} answers compared with mtools, {by_kernel} with the kernel");
    assert!(by_mtools > 1000, "too few paths judged: {by_mtools}");
}

#[test]
fn the_lookup_agrees_with_the_kernel_on_volumes_the_kernel_filled() {
    if let Some(reason) = kernel_unavailable() {
        eprintln!("skipped: {reason}");
        return;
    }
    let asked = queries();
    for shape in SHAPES {
        let dir = scratch(&format!("kernel-{}", shape.name()));
        let image = dir.join("esp.img");
        shape.format(&image);
        fill_with_kernel(&image, shape.sector, &dir.join("mnt"));
        let (device, answers) = kernel_answers(&image, shape.sector, &dir.join("mnt"), &asked);
        compare(&format!("{} filled by the kernel", shape.name()), device.path(), shape.sector_size(), &asked, &answers);
    }
}

/// A device that counts the positioned reads made of it.
struct CountedReads {
    file: File,
    reads: usize,
}

impl Read for CountedReads {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buffer)
    }
}

impl Seek for CountedReads {
    fn seek(&mut self, position: SeekFrom) -> std::io::Result<u64> {
        self.reads += 1;
        self.file.seek(position)
    }
}

/// keel-image's ESP (crates/keel-image/src/esp.rs) at the default layout's size: mkfs.vfat
/// --invariant, then mmd and mcopy of the empty flag, at both sector sizes; then the flag
/// deleted. Finding the flag takes a handful of reads, not a mount.
#[test]
fn the_flag_on_the_esp_keel_builds() {
    for sector in SectorSize::ALL {
        let dir = scratch(&format!("esp-{}", sector.bytes()));
        let image = dir.join("esp.img");
        File::create(&image).unwrap().set_len(LayoutSizes::default().esp).unwrap();
        let image_arg = image.to_str().unwrap();
        run("mkfs.vfat", &["--invariant", "-S", &sector.bytes().to_string(), "-i", "0b9cdb6f", "-n", "EFI-SYSTEM", image_arg]);
        let flag = dir.join("first_boot");
        std::fs::write(&flag, b"").unwrap();
        let (flag_dir, _) = FIRST_BOOT_FLAG.rsplit_once('/').unwrap();
        run("mmd", &["-i", image_arg, &format!("::{flag_dir}")]);
        run("mcopy", &["-i", image_arg, flag.to_str().unwrap(), &format!("::{FIRST_BOOT_FLAG}")]);
        let exists = |path: &str| fat_path_exists(&mut File::open(&image).unwrap(), sector, path).unwrap();
        let mut device = CountedReads { file: File::open(&image).unwrap(), reads: 0 };
        assert!(fat_path_exists(&mut device, sector, FIRST_BOOT_FLAG).unwrap(), "{sector}");
        eprintln!("{sector}: the flag found in {} reads", device.reads);
        assert!(device.reads <= 8, "{sector}: {} reads", device.reads);
        assert!(exists(flag_dir));
        run("mdel", &["-i", image_arg, &format!("::{FIRST_BOOT_FLAG}")]);
        assert!(!exists(FIRST_BOOT_FLAG), "{sector}: the deleted flag");
        assert!(exists(flag_dir));
        if kernel_unavailable().is_none() {
            run("mcopy", &["-i", image_arg, flag.to_str().unwrap(), &format!("::{FIRST_BOOT_FLAG}")]);
            let mount = dir.join("mnt");
            let mut device = LoopDevice::attach(&image, sector.bytes());
            device.mount(&mount, "ro");
            assert!(mount.join(FIRST_BOOT_FLAG).exists());
            let on_device = fat_path_exists(&mut File::open(device.path()).unwrap(), sector, FIRST_BOOT_FLAG).unwrap();
            assert!(on_device, "{sector}: through the loop device");
        }
    }
}
