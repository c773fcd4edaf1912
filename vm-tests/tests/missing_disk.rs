//! Waiting for a disk that never comes ends, and says what it waited for.

use keel_vm_tests::{boot, shared_fixture};
use std::time::Duration;

#[test]
fn with_no_disk_the_initrd_gives_up_after_rd_timeout_naming_the_device() {
    let fixture = shared_fixture().unwrap();
    let console = boot(&[], &fixture.initrd, "rd.timeout=3", Duration::from_secs(120)).unwrap();
    assert!(!console.timed_out, "the initrd waited for ever:\n{}", console.text);
    assert!(console.has("BOOT FAILED"), "{}", console.text);
    assert!(console.has("timed out after 3 s waiting for PARTLABEL=USR-A (rd.timeout=): no block device appeared"), "{}", console.text);
    assert!(console.real_init().is_empty());
    assert!(console.has("powering off (rd.emergency)"), "{}", console.text);
}
