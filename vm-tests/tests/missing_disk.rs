//! Waiting for a disk that never comes ends, and says what it waited for.

use keel_vm_tests::{assert_refused, boot, shared_fixture};
use std::time::Duration;

#[test]
fn with_no_disk_the_initrd_gives_up_after_rd_timeout_naming_the_device() {
    let fixture = shared_fixture().unwrap();
    let console = boot(&[], &fixture.initrd, "rd.timeout=3", Duration::from_secs(120)).unwrap();
    assert_refused(&console, "usr", "timed out after 3 s waiting for PARTLABEL=USR-A (rd.timeout=): no block device appeared");
    assert!(console.has("powering off (rd.emergency)"), "{}", console.text);
}
