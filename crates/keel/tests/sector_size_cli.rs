//! `keel image build --sector-size 4096` and the disk commands on what it builds: an image
//! file is read in the sector size the command line gives (512 unless told), a block
//! device in its own logical sectors (a loop device of 4096-byte sectors here, so this
//! test needs root).

mod support;

use keel_manifest::{ImageManifest, SectorSize};
use keel_test_support::{run, scratch_dir, LoopDevice};
use std::path::{Path, PathBuf};
use support::{failure_of, keel, stdout_of};

/// A 4096-byte-sector image of a tiny /usr, and its manifest.
fn image_4096(dir: &Path) -> (PathBuf, ImageManifest) {
    let usr = dir.join("usr");
    std::fs::create_dir_all(usr.join("share/keel/etc")).unwrap();
    std::fs::write(usr.join("share/keel/etc/os-release"), "ID=keel\n").unwrap();
    let image = dir.join("disk.img");
    let built = stdout_of(keel(&[
        "image",
        "build",
        "--usr",
        usr.to_str().unwrap(),
        "--output",
        image.to_str().unwrap(),
        "--sector-size",
        "4096",
        "--esp-mib",
        "2",
        "--usr-mib",
        "8",
        "--oem-mib",
        "2",
        "--root-mib",
        "4",
    ]));
    assert!(built.contains("sector size: 4096 bytes"), "{built}");
    let manifest = ImageManifest::from_json(&std::fs::read_to_string(image.with_extension("json")).unwrap()).unwrap();
    (image, manifest)
}

#[test]
fn a_4096_byte_sector_image_is_read_as_one_when_told_or_when_on_such_a_device() {
    let dir = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "sector-size-cli");
    let (image, manifest) = image_4096(&dir);
    assert_eq!(manifest.sector_size, SectorSize::Bytes4096);
    let image = image.to_str().unwrap();

    // As a file it is read in 512-byte sectors unless told otherwise, and says so.
    let error = failure_of(keel(&["usr", "show", image]));
    assert!(
        error.contains("is an image file with a GPT made for 4096-byte sectors, and was read with 512-byte sectors: give --sector-size 4096"),
        "{error}"
    );
    let slots = stdout_of(keel(&["usr", "show", image, "--sector-size", "4096"]));
    assert!(slots.starts_with("USR-A  partition 3  priority 1  tries 0  successful 1\n"), "{slots}");
    let error = failure_of(keel(&["usr", "show", image, "--sector-size", "1024"]));
    assert!(error.contains("512 and 4096"), "{error}");

    // A device of 4096-byte sectors is read in them without being told, and not otherwise.
    {
        let device = LoopDevice::attach(Path::new(image), 4096);
        let slots = stdout_of(keel(&["usr", "prioritize", &device.device, "B"]));
        assert!(slots.contains("USR-B  partition 4  priority 2"), "{slots}");
        let error = failure_of(keel(&["usr", "show", &device.device, "--sector-size", "512"]));
        assert!(error.contains("has 4096-byte sectors, not 512-byte sectors"), "{error}");
    }
    let slots = stdout_of(keel(&["usr", "show", image, "--sector-size", "4096"]));
    assert!(slots.contains("USR-B  partition 4  priority 2"), "the change through the device is in the file: {slots}");

    // First boot's rewrites on the file, told its sector size.
    let error = failure_of(keel(&["disk", "randomize-guids", image]));
    assert!(error.contains("give --sector-size 4096"), "{error}");
    let renamed = stdout_of(keel(&["disk", "randomize-guids", image, "--sector-size", "4096"]));
    assert!(renamed.contains("disk GUID is now"), "{renamed}");
    run("truncate", &["--size=+16M", image]);
    let grown = stdout_of(keel(&["disk", "grow-root", image, "--sector-size", "4096"]));
    assert!(grown.contains("ROOT grew from 1024 to 5120 4096-byte sectors"), "{grown}");
    let verify = {
        let device = LoopDevice::attach(Path::new(image), 4096);
        run("sgdisk", &["-v", &device.device])
    };
    assert!(verify.contains("No problems found"), "{verify}");
}
