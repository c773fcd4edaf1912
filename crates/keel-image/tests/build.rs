//! Images checked by the field's own tools: sgdisk, e2fsck, veritysetup, debugfs, fsck.vfat
//! and mtools, for disks of both logical sector sizes (a 4096-byte-sector image through a
//! loop device of that sector size, so that test needs root).

use keel_disk::IMAGE_DISK_GUID;
use keel_disk::{read_gpt, Guid, LayoutSizes, Probe, SectorSize};
use keel_image::{build, ImageSpec};
use keel_test_support::{as_disk, run, scratch_dir};
use keel_verity::encode_hex;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("image-{name}"))
}

fn usr_tree(dir: &Path) -> PathBuf {
    let tree = dir.join("usr");
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::create_dir_all(tree.join("share/keel/etc")).unwrap();
    fs::write(tree.join("bin/hello"), "#!/bin/sh\necho hello\n").unwrap();
    fs::write(tree.join("share/keel/etc/os-release"), "ID=keel\n").unwrap();
    fs::write(tree.join("share/big"), vec![0x42u8; 3 * MIB as usize]).unwrap();
    std::os::unix::fs::symlink("hello", tree.join("bin/hi")).unwrap();
    tree
}

fn spec(tree: &Path, output: PathBuf, sector_size: SectorSize) -> ImageSpec {
    ImageSpec {
        usr_tree: tree.to_path_buf(),
        os: "keel".into(),
        sizes: LayoutSizes { esp: 2 * MIB, bios_boot: MIB, usr: 16 * MIB, oem: 2 * MIB, oem_config: MIB, root: 8 * MIB },
        sector_size,
        output,
        disk_guid: Guid::parse(IMAGE_DISK_GUID).unwrap(),
        epoch: 0,
        verity: Default::default(),
    }
}

fn extract(image: &Path, start: u64, len: u64, to: &Path) {
    let mut file = fs::File::open(image).unwrap();
    file.seek(SeekFrom::Start(start)).unwrap();
    let mut bytes = vec![0u8; len as usize];
    file.read_exact(&mut bytes).unwrap();
    fs::write(to, bytes).unwrap();
}

#[test]
fn image_passes_the_reference_tools() {
    for sector_size in SectorSize::ALL {
        image_of_sector_size_passes_the_reference_tools(sector_size);
    }
}

fn image_of_sector_size_passes_the_reference_tools(sector_size: SectorSize) {
    let dir = scratch(&format!("reference-{}", sector_size.bytes()));
    let tree = usr_tree(&dir);
    let image = dir.join("disk.img");
    let manifest = build(&spec(&tree, image.clone(), sector_size)).unwrap();
    assert_eq!((manifest.sector_size, manifest.image_bytes), (sector_size, fs::metadata(&image).unwrap().len()));

    let verify = as_disk(&image, sector_size.bytes(), |disk| run("sgdisk", &["-v", disk.to_str().unwrap()]));
    assert!(verify.contains("No problems found"), "{verify}");
    let gpt = read_gpt(&mut fs::File::open(&image).unwrap(), sector_size).unwrap();
    assert!(read_gpt(&mut fs::File::open(&image).unwrap(), sector_size.other()).is_err(), "the table reads at the other sector size too");
    assert_eq!(gpt.disk_guid.to_string(), IMAGE_DISK_GUID);
    let usr = gpt.by_name("USR-A").unwrap().unwrap();
    let root = gpt.by_name("ROOT").unwrap().unwrap();

    let usr_file = dir.join("usr-a.part");
    extract(&image, usr.start_bytes(sector_size), usr.size_bytes(sector_size), &usr_file);
    let usr_str = usr_file.to_str().unwrap();
    let verify = Command::new("veritysetup")
        .args(["verify", usr_str, usr_str, &encode_hex(&manifest.usr.root_hash)])
        .arg(format!("--hash-offset={}", manifest.usr.hash_offset))
        .output()
        .unwrap();
    assert!(verify.status.success(), "veritysetup rejected USR-A: {}", String::from_utf8_lossy(&verify.stderr));

    let fs_file = dir.join("usr.ext4");
    extract(&image, usr.start_bytes(sector_size), manifest.usr.hash_offset, &fs_file);
    let fs_str = fs_file.to_str().unwrap();
    run("e2fsck", &["-fn", fs_str]);
    assert_eq!(run("debugfs", &["-R", "cat /share/keel/etc/os-release", fs_str]).lines().last(), Some("ID=keel"));
    assert!(run("debugfs", &["-R", "stat /bin/hello", fs_str]).contains("mtime: 0x00000001"), "epoch 0 is stamped as 1 s");

    let esp = gpt.by_name("EFI-SYSTEM").unwrap().unwrap();
    let esp_file = dir.join("esp.vfat");
    extract(&image, esp.start_bytes(sector_size), esp.size_bytes(sector_size), &esp_file);
    let esp_str = esp_file.to_str().unwrap();
    let fat_sector_bytes = u16::from_le_bytes(fs::read(&esp_file).unwrap()[11..13].try_into().unwrap());
    assert_eq!(u64::from(fat_sector_bytes), sector_size.bytes(), "the ESP's FAT is not of the disk's sectors");
    run("fsck.vfat", &["-n", esp_str]);
    assert!(run("mdir", &["-i", esp_str, "-b", "::flatcar"]).contains("::/flatcar/first_boot"), "the ESP lacks the first-boot flag");
    assert!(run("mlabel", &["-i", esp_str, "-s", "::"]).contains("EFI-SYSTEM"));

    let mut root_part = fs::File::open(&image).unwrap();
    root_part.seek(SeekFrom::Start(root.start_bytes(sector_size))).unwrap();
    assert_eq!(keel_disk::probe_filesystem(&mut root_part.take(root.size_bytes(sector_size))).unwrap(), Probe::Blank);
}

#[test]
fn same_tree_copied_later_gives_the_same_bytes() {
    let dir = scratch("reproducible");
    let first_tree = usr_tree(&dir.join("one"));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second_tree = usr_tree(&dir.join("two"));
    for sector_size in SectorSize::ALL {
        let (one, two) = (dir.join(format!("one-{}.img", sector_size.bytes())), dir.join(format!("two-{}.img", sector_size.bytes())));
        let first = build(&spec(&first_tree, one.clone(), sector_size)).unwrap();
        let second = build(&spec(&second_tree, two.clone(), sector_size)).unwrap();
        assert_eq!(first, second);
        assert!(fs::read(one).unwrap() == fs::read(two).unwrap(), "images of {sector_size} differ");
    }

    let first = build(&spec(&first_tree, dir.join("one.img"), SectorSize::Bytes512)).unwrap();
    fs::write(second_tree.join("bin/hello"), "changed").unwrap();
    let changed = build(&spec(&second_tree, dir.join("three.img"), SectorSize::Bytes512)).unwrap();
    assert_ne!(changed.usr.root_hash, first.usr.root_hash);
    assert_ne!(changed.usr.verity.salt, first.usr.verity.salt, "the salt follows the content");
}

/// /usr lies at the same bytes at either sector size: only the tables and the ESP differ.
#[test]
fn the_sector_size_changes_only_the_tables_and_the_esp() {
    let dir = scratch("sector-sizes");
    let tree = usr_tree(&dir);
    let (small, big) = (dir.join("512.img"), dir.join("4096.img"));
    let small_manifest = build(&spec(&tree, small.clone(), SectorSize::Bytes512)).unwrap();
    let big_manifest = build(&spec(&tree, big.clone(), SectorSize::Bytes4096)).unwrap();
    assert_eq!(small_manifest.usr, big_manifest.usr, "the /usr a sector size builds differs");
    let (small, big) = (fs::read(small).unwrap(), fs::read(big).unwrap());
    assert_eq!(small.len(), big.len());
    let esp = read_gpt(&mut std::io::Cursor::new(&small), SectorSize::Bytes512).unwrap().by_name("EFI-SYSTEM").unwrap().unwrap().clone();
    let esp = esp.start_bytes(SectorSize::Bytes512) as usize..(esp.start_bytes(SectorSize::Bytes512) + esp.size_bytes(SectorSize::Bytes512)) as usize;
    let differing: Vec<usize> = (0..small.len()).step_by(4096).filter(|&at| small[at..at + 4096] != big[at..at + 4096]).collect();
    let tables = |at: &usize| *at < MIB as usize || *at >= small.len() - MIB as usize;
    assert!(differing.iter().all(|at| tables(at) || esp.contains(at)), "bytes outside the tables and the ESP differ: {differing:?}");
}

#[test]
fn verity_blocks_smaller_than_the_sectors_are_refused() {
    let dir = scratch("small-verity-blocks");
    let tree = usr_tree(&dir);
    let mut spec = spec(&tree, dir.join("disk.img"), SectorSize::Bytes4096);
    spec.verity.data_block_size = 512;
    let error = build(&spec).unwrap_err().to_string();
    assert!(error.contains("smaller than the image's 4096-byte sectors"), "{error}");
}
