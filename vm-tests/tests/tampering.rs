//! A tampered /usr, or an initrd that does not belong to the disk, never runs.

use keel_vm_tests::{
    assert_refused, boot, build_fixture, corruption_target_bytes, disk_copy, flip_byte, shared_fixture, usr_a_start, Console, CORRUPTION_TARGET,
};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

/// The initrd stopped in the usr stage, said why and that /usr was not used, and powered off.
fn assert_refused_in_usr_stage(console: &Console, reason: &str) {
    assert_refused(console, "usr", reason);
    assert!(console.has("/usr was NOT used"), "{}", console.text);
    assert!(console.has("powering off (rd.emergency)"), "{}", console.text);
}

#[test]
fn a_flipped_byte_in_a_usr_file_stops_the_machine_when_the_file_is_read() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "data-flip").unwrap();
    let image = std::fs::read(&disk).unwrap();
    let marker = &corruption_target_bytes()[..256];
    let usr_start = usr_a_start(&disk).unwrap() as usize;
    let at = usr_start + image[usr_start..].windows(marker.len()).position(|w| w == marker).expect("the target file is in USR-A");
    flip_byte(&disk, (at + 1000) as u64).unwrap();

    let console = boot(&[&disk], &fixture.initrd, &format!("keel.test=read:{CORRUPTION_TARGET}"), TIMEOUT).unwrap();
    assert!(!console.timed_out, "the machine carried on:\n{}", console.text);
    assert!(!console.has(&format!("read {CORRUPTION_TARGET} ok")), "the corrupt file was read:\n{}", console.text);
    assert!(!console.real_init().contains(&"done"), "the real init carried on:\n{}", console.text);
    assert!(console.has("device-mapper: verity") && console.has("is corrupted"), "dm-verity did not report it:\n{}", console.text);
    assert!(console.has("Kernel panic"), "panic_on_corruption did not stop the machine:\n{}", console.text);
}

#[test]
fn a_flipped_byte_in_the_hash_tree_is_refused_before_switch_root() {
    let fixture = shared_fixture().unwrap();
    let usr = &fixture.manifest.usr;
    let tree = usr.hash_offset + u64::from(usr.verity.hash_block_size);
    // The top block (checked against the root hash) and a bottom block (checked against the level above).
    for (name, offset, reason) in [
        ("tree-top-flip", tree + 17, "the top hash block (block 0) does not match the root hash"),
        ("tree-bottom-flip", tree + 4096 + 900, "hash block 1 (level 0) does not match its digest in level 1"),
    ] {
        let disk = disk_copy(fixture, name).unwrap();
        flip_byte(&disk, usr_a_start(&disk).unwrap() + offset).unwrap();
        let console = boot(&[&disk], &fixture.initrd, "", TIMEOUT).unwrap();
        assert_refused_in_usr_stage(&console, reason);
    }
}

#[test]
fn an_initrd_baked_with_another_root_hash_refuses_the_disk() {
    let wrong = build_fixture("wrong-root-hash", Default::default(), |manifest| manifest.usr.root_hash[5] ^= 0x40).unwrap();
    let disk = disk_copy(&wrong, "wrong-root-hash").unwrap();
    let console = boot(&[&disk], &wrong.initrd, "", TIMEOUT).unwrap();
    assert_refused_in_usr_stage(&console, "does not match the root hash in the initrd");
}

#[test]
fn a_command_line_root_hash_that_differs_from_the_baked_one_is_refused() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "cmdline-hash").unwrap();
    let console = boot(&[&disk], &fixture.initrd, &format!("verity.usrhash={}", "ab".repeat(32)), TIMEOUT).unwrap();
    assert_refused_in_usr_stage(&console, "refusing, because the initrd's hash is the one that is trusted");
}
