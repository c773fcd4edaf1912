//! What the kernel command line may and may not do to a keel boot.

use keel_vm_tests::{assert_refused, boot, disk_copy, shared_fixture};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn the_command_line_cannot_mount_something_else_as_usr() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "usrfstype").unwrap();
    let console = boot(&[&disk], &fixture.initrd, "mount.usrfstype=overlay mount.usrflags=lowerdir=/sysroot/a:/sysroot/b", TIMEOUT).unwrap();
    assert_refused(&console, "config", "mount.usrfstype=overlay differs from the /usr filesystem this initrd was built for (ext4)");
}

#[test]
fn rd_break_stops_before_the_named_stage_and_says_it_was_asked_to() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "rd-break").unwrap();
    let console = boot(&[&disk], &fixture.initrd, "rd.break=usr", TIMEOUT).unwrap();
    assert!(!console.timed_out, "the VM did not stop by itself:\n{}", console.text);
    assert!(console.has("BOOT STOPPED before stage usr (rd.break)"), "{}", console.text);
    assert!(!console.has("BOOT FAILED"), "{}", console.text);
    assert!(console.has("modules: ") && !console.has("usr: PARTLABEL"), "{}", console.text);
    assert!(console.real_init().is_empty());
}

#[test]
fn two_disks_carrying_the_same_image_are_refused_not_raced() {
    let fixture = shared_fixture().unwrap();
    let (first, second) = (disk_copy(fixture, "twin-a").unwrap(), disk_copy(fixture, "twin-b").unwrap());
    let console = boot(&[&first, &second], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_refused(&console, "usr", "PARTLABEL=USR-A matches 2 devices (/dev/vda3, /dev/vdb3)");
}
