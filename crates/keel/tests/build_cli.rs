//! The builders' vendor options on the command line: `keel image build --oem DIR` and
//! `keel initrd build --ignition-base DIR` (their details are tested in keel-image and
//! keel-initrd; here, that the options reach them and a refusal is a failure).

mod support;

use keel_disk::{read_gpt, Probe, SectorSize};
use keel_manifest::{ImageManifest, UsrImage};
use keel_test_support::{run, scratch_dir};
use keel_verity::VerityParams;
use std::io::{Read, Seek, SeekFrom};
use support::{failure_of, keel, stdout_of};

#[test]
fn image_build_puts_the_oem_tree_on_oem() {
    let dir = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "build-cli-oem");
    let (usr, oem) = (dir.join("usr"), dir.join("oem"));
    std::fs::create_dir_all(&usr).unwrap();
    std::fs::create_dir_all(&oem).unwrap();
    std::fs::write(oem.join("config.ign"), r#"{"ignition":{"version":"3.4.0"}}"#).unwrap();
    let image = dir.join("disk.img");
    let path = |path: &std::path::Path| path.to_str().unwrap().to_string();
    let sizes = ["--esp-mib", "2", "--usr-mib", "8", "--oem-mib", "2", "--root-mib", "4"];
    let (usr, oem, image_path) = (path(&usr), path(&oem), path(&image));
    stdout_of(keel(&[&["image", "build", "--usr", &usr, "--oem", &oem, "--output", &image_path][..], &sizes].concat()));

    let mut file = std::fs::File::open(&image).unwrap();
    let partition = read_gpt(&mut file, SectorSize::Bytes512).unwrap().by_name("OEM").unwrap().unwrap().clone();
    let mut bytes = vec![0u8; partition.size_bytes(SectorSize::Bytes512) as usize];
    file.seek(SeekFrom::Start(partition.start_bytes(SectorSize::Bytes512))).unwrap();
    file.read_exact(&mut bytes).unwrap();
    let Probe::Filesystem(filesystem) = keel_disk::probe_filesystem(&mut std::io::Cursor::new(&bytes)).unwrap() else {
        panic!("OEM is not formatted")
    };
    assert_eq!(filesystem.label, "OEM");
    let oem_fs = dir.join("oem.ext4");
    std::fs::write(&oem_fs, bytes).unwrap();
    assert_eq!(run("debugfs", &["-R", "cat /config.ign", oem_fs.to_str().unwrap()]), r#"{"ignition":{"version":"3.4.0"}}"#);

    let missing = path(&dir.join("missing"));
    let error = failure_of(keel(&[&["image", "build", "--usr", &usr, "--oem", &missing, "--output", &image_path][..], &sizes].concat()));
    assert!(error.contains("missing (the OEM tree) is not a directory"), "{error}");
}

#[test]
fn initrd_build_refuses_an_unknown_mkfs_format() {
    let required = ["--manifest", "/dev/null", "--init", "/bin/true", "--kernel-modules", "/nonexistent", "--output", "/nonexistent/initrd"];
    let error = failure_of(keel(&[&["initrd", "build", "--mkfs", "vfat,ntfs"][..], &required].concat()));
    assert!(error.contains("--mkfs: \"ntfs\" is not a format keel can make: use ext4, xfs, btrfs, vfat, swap"), "{error}");
}

#[test]
fn initrd_build_refuses_an_invalid_ignition_base_config() {
    let dir = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "build-cli-ignition-base");
    let base = dir.join("ignition");
    std::fs::create_dir_all(base.join("base.d")).unwrap();
    let config = base.join("base.d/10-bad.ign");
    std::fs::write(&config, r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"relative"}]}}"#).unwrap();
    let manifest = dir.join("disk.json");
    let usr = UsrImage { filesystem: "ext4".into(), hash_offset: 4096 * 100, root_hash: vec![3; 32], verity: VerityParams::new(100, vec![9; 32]) };
    std::fs::write(&manifest, ImageManifest { os: "keel".into(), image_bytes: 1 << 30, sector_size: SectorSize::Bytes512, usr }.to_json()).unwrap();
    let error = failure_of(keel(&[
        "initrd",
        "build",
        "--manifest",
        manifest.to_str().unwrap(),
        "--init",
        "/bin/true",
        "--kernel-modules",
        dir.join("no-modules").to_str().unwrap(),
        "--output",
        dir.join("initrd.img").to_str().unwrap(),
        "--ignition-base",
        base.to_str().unwrap(),
    ]));
    assert!(error.contains(&format!("{}: error at $.storage.files[0].path", config.display())), "{error}");
}
