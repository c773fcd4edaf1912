//! Flatcar's production layout (1 GiB USR-A) on a disk bigger than the image: what users
//! boot, so what the boot's costs are measured at. A later boot does not slow down with the
//! disk's size or with other, bigger disks attached.

use keel_vm_tests::{assert_reached_real_init, boot, default_layout_fixture, disk_copy, resize_disk, stage_millis, Console};
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);
const GIB: u64 = 1 << 30;

fn stage(console: &Console, name: &str) -> f64 {
    stage_millis(console, name).unwrap_or_else(|| panic!("no timing for stage {name}:\n{}", console.text))
}

/// A sparse file of `bytes` with nothing written: a blank disk as big as a real one.
fn blank_disk(path: &Path, bytes: u64) {
    std::fs::File::create(path).unwrap().set_len(bytes).unwrap();
}

#[test]
fn a_later_boot_of_the_default_layout_takes_the_same_time_with_an_8_tib_blank_disk_attached() {
    let fixture = default_layout_fixture().unwrap();
    let disk = disk_copy(fixture, "later-boot-4gib").unwrap();
    resize_disk(&disk, 4 * GIB).unwrap();
    let first = boot(&[&disk], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&first);
    assert!(first.has("first-boot: first boot"), "{}", first.text);

    let later = boot(&[&disk], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&later);
    assert!(later.has("first-boot: not a first boot"), "{}", later.text);

    eprintln!(
        "default layout, 4 GiB disk: first boot: usr {:.0} ms, first-boot {:.0} ms, /init to real init {:?} s; \
         later boot: usr {:.0} ms, first-boot {:.0} ms, /init to real init {:?} s",
        stage(&first, "usr"),
        stage(&first, "first-boot"),
        first.initrd_seconds(),
        stage(&later, "usr"),
        stage(&later, "first-boot"),
        later.initrd_seconds(),
    );

    let big = fixture.dir.join("blank-8tib.img");
    blank_disk(&big, 8 << 40);
    let with_big = boot(&[&disk, &big], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&with_big);
    eprintln!(
        "later boot with an 8 TiB blank disk attached too: usr {:.0} ms, first-boot {:.0} ms, /init to real init {:?} s",
        stage(&with_big, "usr"),
        stage(&with_big, "first-boot"),
        with_big.initrd_seconds(),
    );
    let _ = std::fs::remove_file(&big);
    let _ = std::fs::remove_file(&disk);
}
