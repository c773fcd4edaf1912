//! `keel disk grow-root` on a running machine grows a mounted ext4 online to the geometry
//! resize2fs gives the same filesystem. Growing ext4 needs CAP_SYS_RESOURCE, which the host
//! test (keel-disk's tests/kernel.rs) may not have; root in the VM has it.

use keel_test_support::run;
use keel_vm_tests::{
    assert_reached_real_init, assert_root_fills, boot, check_ext4_grown_like_resize2fs, check_root_ext4, copy_root, disk_copy, format_root,
    resize_disk, shared_fixture,
};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(180);
const GIB: u64 = 1 << 30;

#[test]
fn keel_disk_grow_root_grows_a_mounted_ext4_as_resize2fs_would() {
    let fixture = shared_fixture().unwrap();
    let system = disk_copy(fixture, "grow-cli-system").unwrap();
    // A second disk whose only partition, ROOT, holds a 64 MiB ext4, now on a 1 GiB disk.
    let data = fixture.dir.join("grow-cli-data.img");
    std::fs::File::create(&data).unwrap().set_len(66 << 20).unwrap();
    run("sgdisk", &["-n", "1:2048:+64M", "-c", "1:ROOT", data.to_str().unwrap()]);
    format_root(&data, &["mkfs.ext4", "-q", "-F", "-L", "GROWN"], &[]).unwrap();
    let start = data.with_extension("start.ext4");
    copy_root(&data, &start).unwrap();
    resize_disk(&data, GIB).unwrap();

    // The system's own ROOT by path: the data disk has a partition named ROOT too.
    let console = boot(&[&system, &data], &fixture.initrd, "root=/dev/vda9 keel.test=grow-root:/dev/vdb", TIMEOUT).unwrap();
    assert_reached_real_init(&console);
    let lines = console.real_init();
    assert!(lines.contains(&"grow-root exit 0"), "{}", console.text);
    let grown = lines.iter().find(|l| l.starts_with("grow-root /run/grow-root: ext4 grew from")).unwrap_or_else(|| panic!("{}", console.text));
    let (_, sizes) = grown.split_once("grew from ").unwrap();
    let mib: Vec<u64> = sizes.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert!(matches!(mib[..], [before, after] if before < 64 && after > 900), "{grown}");
    assert_root_fills(&data, GIB);

    check_root_ext4(&data).unwrap();
    check_ext4_grown_like_resize2fs(&data, &start).unwrap();
    for path in [&system, &data, &start] {
        std::fs::remove_file(path).unwrap();
    }
}
