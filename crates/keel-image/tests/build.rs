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
        usr_b_tree: None,
        oem_tree: None,
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
    let (first_tree, first_oem) = (usr_tree(&dir.join("one")), oem_tree(&dir.join("one")));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (second_tree, second_oem) = (usr_tree(&dir.join("two")), oem_tree(&dir.join("two")));
    for sector_size in SectorSize::ALL {
        for with_oem in [false, true] {
            let name = |copy: &str| dir.join(format!("{copy}-{}-oem-{with_oem}.img", sector_size.bytes()));
            let (mut one, mut two) = (spec(&first_tree, name("one"), sector_size), spec(&second_tree, name("two"), sector_size));
            if with_oem {
                (one.oem_tree, two.oem_tree) = (Some(first_oem.clone()), Some(second_oem.clone()));
            }
            assert_eq!(build(&one).unwrap(), build(&two).unwrap());
            assert!(fs::read(&one.output).unwrap() == fs::read(&two.output).unwrap(), "images of {sector_size} (OEM: {with_oem}) differ");
        }
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

/// What a vendor ships on OEM, owned by someone other than root on the build host, as it
/// would be when an unprivileged user builds the image.
fn oem_tree(dir: &Path) -> PathBuf {
    use std::os::unix::fs::{lchown, PermissionsExt};
    let tree = dir.join("oem");
    fs::create_dir_all(tree.join("base")).unwrap();
    fs::create_dir_all(tree.join("private")).unwrap();
    fs::write(tree.join("config.ign"), r#"{"ignition":{"version":"3.4.0"}}"#).unwrap();
    fs::write(tree.join("base/base.ign"), r#"{"ignition":{"version":"3.0.0"}}"#).unwrap();
    fs::write(tree.join("private/key"), "secret\n").unwrap();
    std::os::unix::fs::symlink("../config.ign", tree.join("base/user.ign")).unwrap();
    fs::set_permissions(tree.join("private"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(tree.join("private/key"), fs::Permissions::from_mode(0o600)).unwrap();
    for path in ["", "base", "base/base.ign", "base/user.ign", "private", "private/key", "config.ign"] {
        // Only root can give files away; anyone else's files are theirs already.
        let _ = lchown(tree.join(path), Some(1234), Some(5678));
    }
    tree
}

fn oem_spec(dir: &Path, oem: &Path, name: &str) -> ImageSpec {
    let mut spec = spec(&usr_tree(&dir.join(name)), dir.join(format!("{name}.img")), SectorSize::Bytes512);
    spec.oem_tree = Some(oem.to_path_buf());
    spec
}

/// The OEM partition's bytes, in a file of their own for the e2fsprogs tools.
fn oem_filesystem(image: &Path, to: &Path) -> PathBuf {
    let oem = read_gpt(&mut fs::File::open(image).unwrap(), SectorSize::Bytes512).unwrap().by_name("OEM").unwrap().unwrap().clone();
    extract(image, oem.start_bytes(SectorSize::Bytes512), oem.size_bytes(SectorSize::Bytes512), to);
    to.to_path_buf()
}

#[test]
fn oem_is_an_ext4_of_the_vendor_tree_owned_by_root() {
    let dir = scratch("oem");
    let tree = oem_tree(&dir);
    let spec = oem_spec(&dir, &tree, "disk");
    build(&spec).unwrap();
    let oem = oem_filesystem(&spec.output, &dir.join("oem.ext4"));
    let oem_str = oem.to_str().unwrap();

    let probe = keel_disk::probe_filesystem(&mut fs::File::open(&oem).unwrap()).unwrap();
    let Probe::Filesystem(filesystem) = probe else { panic!("OEM holds no filesystem: {probe:?}") };
    assert_eq!((filesystem.kind, filesystem.label.as_str()), (keel_disk::FsKind::Ext4, "OEM"));
    let header = run("dumpe2fs", &["-h", oem_str]);
    assert!(!header.contains("has_journal"), "{header}");
    run("e2fsck", &["-fn", oem_str]);

    assert_eq!(run("debugfs", &["-R", "cat /config.ign", oem_str]), fs::read_to_string(tree.join("config.ign")).unwrap());
    assert_eq!(run("debugfs", &["-R", "cat /base/base.ign", oem_str]), fs::read_to_string(tree.join("base/base.ign")).unwrap());
    for (path, kind, mode) in [
        ("/", "directory", "0755"),
        ("/config.ign", "regular", "0644"),
        ("/base/user.ign", "symlink", "0777"),
        ("/private", "directory", "0750"),
        ("/private/key", "regular", "0600"),
        ("/lost+found", "directory", "0700"),
    ] {
        let stat = run("debugfs", &["-R", &format!("stat {path}"), oem_str]);
        assert!(stat.contains(&format!("Type: {kind}")) && stat.contains(&format!("Mode:  {mode}")), "{path}: {stat}");
        assert!(stat.contains("User:     0   Group:     0"), "{path} is not owned by root: {stat}");
        assert!(stat.contains("mtime: 0x00000001"), "{path}'s times are not the epoch: {stat}");
    }
    assert!(run("debugfs", &["-R", "stat /base/user.ign", oem_str]).contains("Fast link dest: \"../config.ign\""));

    // The UUID comes from the image's seed: another image, another OEM filesystem.
    let mut other = oem_spec(&dir, &tree, "other");
    other.os = "other".into();
    build(&other).unwrap();
    let other_probe = keel_disk::probe_filesystem(&mut fs::File::open(oem_filesystem(&other.output, &dir.join("other.ext4"))).unwrap()).unwrap();
    let Probe::Filesystem(other_filesystem) = other_probe else { panic!("OEM holds no filesystem: {other_probe:?}") };
    assert_ne!(filesystem.uuid, other_filesystem.uuid);
}

#[test]
fn without_an_oem_tree_oem_stays_blank() {
    let dir = scratch("oem-blank");
    let spec = spec(&usr_tree(&dir), dir.join("disk.img"), SectorSize::Bytes512);
    build(&spec).unwrap();
    let oem = oem_filesystem(&spec.output, &dir.join("oem.part"));
    assert!(fs::read(oem).unwrap().iter().all(|&byte| byte == 0));
}

#[test]
fn an_oem_tree_too_big_for_its_partition_is_refused_with_both_sizes() {
    let dir = scratch("oem-too-big");
    let tree = dir.join("oem");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("blob"), vec![1u8; 3 * MIB as usize]).unwrap();
    let error = format!("{:#}", build(&oem_spec(&dir, &tree, "disk")).unwrap_err());
    assert!(error.contains("3145728 bytes of files") && error.contains("(2097152 bytes)"), "{error}");

    // Within the partition's size but not beside the filesystem's own metadata: mkfs says so.
    fs::write(tree.join("blob"), vec![1u8; 2 * MIB as usize - 4096]).unwrap();
    let error = format!("{:#}", build(&oem_spec(&dir, &tree, "again")).unwrap_err());
    assert!(error.contains("2093056 bytes of files") && error.contains("(2097152 bytes)") && error.contains("allocate"), "{error}");
}

#[test]
fn an_oem_tree_with_a_fifo_is_refused() {
    let dir = scratch("oem-fifo");
    let tree = dir.join("oem");
    fs::create_dir_all(&tree).unwrap();
    run("mkfifo", &[tree.join("pipe").to_str().unwrap()]);
    let error = format!("{:#}", build(&oem_spec(&dir, &tree, "disk")).unwrap_err());
    assert!(error.contains("pipe is a FIFO or socket"), "{error}");
}
