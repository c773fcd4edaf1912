//! Images checked by the field's own tools: sgdisk, e2fsck, veritysetup, debugfs.

use keel_disk::IMAGE_DISK_GUID;
use keel_disk::{read_gpt, Guid, LayoutSizes, Probe, SectorSize};
use keel_image::{build, ImageSpec};
use keel_test_support::{run, scratch_dir};
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

fn spec(tree: &Path, output: PathBuf) -> ImageSpec {
    ImageSpec {
        usr_tree: tree.to_path_buf(),
        os: "keel".into(),
        sizes: LayoutSizes { esp: 2 * MIB, bios_boot: MIB, usr: 16 * MIB, oem: 2 * MIB, oem_config: MIB, root: 8 * MIB },
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
    let dir = scratch("reference");
    let tree = usr_tree(&dir);
    let image = dir.join("disk.img");
    let manifest = build(&spec(&tree, image.clone())).unwrap();
    let image_str = image.to_str().unwrap();

    assert!(run("sgdisk", &["-v", image_str]).contains("No problems found"));
    let gpt = read_gpt(&mut fs::File::open(&image).unwrap(), SectorSize::Bytes512).unwrap();
    let sector_size = gpt.sector_size;
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
    let first = build(&spec(&first_tree, dir.join("one.img"))).unwrap();
    let second = build(&spec(&second_tree, dir.join("two.img"))).unwrap();
    assert_eq!(first, second);
    assert!(fs::read(dir.join("one.img")).unwrap() == fs::read(dir.join("two.img")).unwrap(), "images differ");

    fs::write(second_tree.join("bin/hello"), "changed").unwrap();
    let changed = build(&spec(&second_tree, dir.join("three.img"))).unwrap();
    assert_ne!(changed.usr.root_hash, first.usr.root_hash);
    assert_ne!(changed.usr.verity.salt, first.usr.verity.salt, "the salt follows the content");
}
