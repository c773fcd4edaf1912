//! The harness's own checks fail where they must: a check that cannot fail proves nothing.

use keel_test_support::scratch_dir;
use keel_vm_tests::{esp_has_flag, image_table, test_sizes, work_dir, FIXTURE_SECTOR_SIZE};
use std::process::Command;

#[test]
fn an_esp_whose_fat_cannot_be_read_is_an_error_not_a_removed_flag() {
    let dir = scratch_dir(work_dir(), "harness-esp");
    std::fs::create_dir_all(dir.join("usr")).unwrap();
    std::fs::write(dir.join("usr/os-release"), "ID=keel\n").unwrap();
    let image = dir.join("disk.img");
    let spec = keel_image::ImageSpec {
        usr_tree: dir.join("usr"),
        usr_b_tree: None,
        oem_tree: None,
        os: "keel".into(),
        sizes: test_sizes(),
        sector_size: FIXTURE_SECTOR_SIZE,
        output: image.clone(),
        disk_guid: keel_disk::Guid::parse(keel_disk::IMAGE_DISK_GUID).unwrap(),
        epoch: 0,
        verity: Default::default(),
    };
    keel_image::build(&spec).unwrap();
    let esp = image_table(&image).unwrap().by_name("EFI-SYSTEM").unwrap().unwrap().start_bytes(FIXTURE_SECTOR_SIZE);
    assert!(esp_has_flag(&image).unwrap(), "the image ships with the flag");

    let drive = format!("{}@@{esp}", image.display());
    let removed = Command::new("mdel").args(["-i", &drive, &format!("::{}", keel_disk::FIRST_BOOT_FLAG)]).status().unwrap();
    assert!(removed.success());
    assert!(!esp_has_flag(&image).unwrap(), "a readable ESP without the flag");

    // A cut in the middle of writing the ESP's first sectors: boot sector and FATs gone.
    let file = std::fs::OpenOptions::new().write(true).open(&image).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0; 64 << 10], esp).unwrap();
    let error = esp_has_flag(&image).expect_err("an unreadable ESP read as one without the flag");
    assert!(format!("{error:#}").contains("mtools cannot read the ESP"), "{error:#}");
    std::fs::remove_dir_all(&dir).unwrap();
}
