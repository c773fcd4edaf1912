//! keel writes only to the disk it booted from (the one whose /usr verified), and nothing
//! on another disk can take over the boot: a data disk that once held an image, a stick
//! labelled ROOT, a write-protected stick with a damaged copy of the image, a shared
//! object named by `LD_PRELOAD=` on the command line. Each foreign disk's bytes are
//! compared before and after; each boot must reach the real root (or stop at once with a
//! clear message), never time out.

use keel_test_support::run;
use keel_vm_tests::{
    assert_reached_real_init, assert_refused, boot, disk_copy, file_digest, format_root, image_table, resize_disk, shared_fixture, READ_ONLY_DISK,
};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(180);
const MIB: u64 = 1 << 20;

fn scratch(name: &str) -> PathBuf {
    shared_fixture().unwrap().dir.join(format!("foreign-{name}-{}.img", std::process::id()))
}

/// A disk that held a keel image on a bigger disk and was then reformatted whole as ext4:
/// the old image's backup GPT header is still in the middle of it, CRC-valid.
#[test]
fn a_data_disk_that_once_held_an_image_is_never_written() {
    let fixture = shared_fixture().unwrap();
    let data = scratch("reused");
    run("cp", &["--sparse=always", fixture.image.to_str().unwrap(), data.to_str().unwrap()]);
    let image_bytes = std::fs::metadata(&data).unwrap().len();
    resize_disk(&data, image_bytes + 64 * MIB).unwrap();
    // Only the filesystem's own structures are written: the old header stays where it was.
    run("mkfs.ext4", &["-q", "-F", "-E", "nodiscard,lazy_itable_init=1", "-L", "DATA", data.to_str().unwrap()]);
    let old_header = std::fs::read(&data).unwrap()[image_bytes as usize - 512..][..8].to_vec();
    assert_eq!(old_header, b"EFI PART", "the old backup header did not survive mkfs: the scenario proves nothing");
    let before = file_digest(&data).unwrap();

    let disk = disk_copy(fixture, "foreign-reused-boot").unwrap();
    for round in ["first boot", "later boot", "boot with the boot disk's primary GPT torn"] {
        if round.contains("torn") {
            // Now both disks are candidates for a repair: the old /usr on the data disk still
            // verifies, but its start is ext4's, not a protective MBR.
            keel_vm_tests::flip_byte(&disk, 512 + 40).unwrap();
        }
        let console = boot(&[&data, &disk], &fixture.initrd, "", TIMEOUT).unwrap();
        assert_reached_real_init(&console);
        assert_eq!(file_digest(&data).unwrap(), before, "the data disk was written during the {round}:\n{}", console.text);
        if round.contains("torn") {
            assert!(console.has("vdb: its primary GPT was damaged; its PARTLABEL=USR-A verified"), "{}", console.text);
        }
    }
    let _ = std::fs::remove_file(&data);
    let _ = std::fs::remove_file(&disk);
}

/// A stick whose whole-disk ext4 is labelled ROOT and carries its own /sbin/init, attached
/// while the boot disk's ROOT is still blank (first boot): `root=LABEL=ROOT` must not find it.
#[test]
fn a_stick_labelled_root_does_not_become_the_root_on_first_boot() {
    let fixture = shared_fixture().unwrap();
    let tree = scratch("stick-tree").with_extension("d");
    std::fs::create_dir_all(tree.join("sbin")).unwrap();
    std::fs::write(tree.join("sbin/init"), "#!/bin/sh\necho FOREIGN-INIT-RAN\npoweroff -f\n").unwrap();
    run("chmod", &["755", tree.join("sbin/init").to_str().unwrap()]);
    let stick = scratch("stick");
    std::fs::File::create(&stick).unwrap().set_len(64 * MIB).unwrap();
    run("mkfs.ext4", &["-q", "-F", "-L", "ROOT", "-d", tree.to_str().unwrap(), stick.to_str().unwrap()]);
    let before = file_digest(&stick).unwrap();

    let disk = disk_copy(fixture, "foreign-stick-boot").unwrap();
    let console = boot(&[&stick, &disk], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&console);
    assert!(!console.has("FOREIGN-INIT-RAN"), "the stick's init ran:\n{}", console.text);
    assert!(console.has("formatted as ext4 because it was blank"), "{}", console.text);
    assert!(console.has("it has LABEL=ROOT too, but is not on the boot disk: ignored"), "{}", console.text);
    assert_eq!(file_digest(&stick).unwrap(), before, "the stick was written");
    let _ = std::fs::remove_dir_all(&tree);
    let _ = std::fs::remove_file(&stick);
    let _ = std::fs::remove_file(&disk);
}

/// A write-protected stick holding a copy of the image whose primary table is damaged: the
/// boot disk is found and boots; the stick is neither repaired nor does it stop the boot.
#[test]
fn a_write_protected_stick_with_a_damaged_copy_of_the_image_is_left_alone() {
    let fixture = shared_fixture().unwrap();
    let stick = scratch("torn").with_extension("").with_extension(&READ_ONLY_DISK[1..]);
    run("cp", &["--sparse=always", fixture.image.to_str().unwrap(), stick.to_str().unwrap()]);
    keel_vm_tests::flip_byte(&stick, 512 + 8).unwrap();
    assert!(!image_table(&stick).unwrap().primary_intact);
    let before = file_digest(&stick).unwrap();

    let disk = disk_copy(fixture, "foreign-torn-boot").unwrap();
    let console = boot(&[&disk, &stick], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&console);
    assert!(!console.has("rewritten from the intact backup"), "{}", console.text);
    assert_eq!(file_digest(&stick).unwrap(), before, "the stick was written");
    let _ = std::fs::remove_file(&stick);
    let _ = std::fs::remove_file(&disk);
}

/// The kernel hands PID 1 unknown `key=value` words as its environment. A shared object
/// planted as a whole disk and named by `LD_PRELOAD=` would run inside mkfs (glibc) on first
/// boot: keel starts every program with a fixed environment, so its code never runs.
#[test]
fn ld_preload_on_the_command_line_runs_no_code() {
    let fixture = shared_fixture().unwrap();
    let source = scratch("preload").with_extension("c");
    std::fs::write(
        &source,
        "#include <fcntl.h>\n#include <unistd.h>\n__attribute__((constructor)) static void planted(void) {\n\
         static const char m[] = \"PLANTED-CODE-RAN\\n\";\n write(2, m, sizeof m - 1);\n\
         int fd = open(\"/dev/console\", O_WRONLY);\n if (fd >= 0) write(fd, m, sizeof m - 1);\n}\n",
    )
    .unwrap();
    let object = source.with_extension("so");
    run("gcc", &["-shared", "-fPIC", "-O2", "-o", object.to_str().unwrap(), source.to_str().unwrap()]);
    // The object works as planted: on the host it runs inside any glibc program.
    let host = Command::new("/bin/true").env("LD_PRELOAD", &object).output().unwrap();
    assert!(String::from_utf8_lossy(&host.stderr).contains("PLANTED-CODE-RAN"), "the planted object does not run under LD_PRELOAD");
    // As a disk: whole sectors.
    let len = std::fs::metadata(&object).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&object).unwrap().set_len(len.div_ceil(4096) * 4096).unwrap();

    let disk = disk_copy(fixture, "foreign-preload-boot").unwrap();
    let console = boot(&[&disk, &object], &fixture.initrd, "LD_PRELOAD=/dev/vdb", TIMEOUT).unwrap();
    assert_reached_real_init(&console);
    assert!(console.has("formatted as ext4 because it was blank"), "mkfs did not run, so the scenario proves nothing:\n{}", console.text);
    assert!(!console.has("PLANTED-CODE-RAN"), "the planted code ran:\n{}", console.text);
    for path in [&source, &object, &disk] {
        let _ = std::fs::remove_file(path);
    }
}

/// ROOT is not the last partition (a vendor added one after it): first boot cannot grow
/// ROOT, says so, does everything else, and the next boot is an ordinary one.
#[test]
fn first_boot_skips_the_grow_when_root_is_not_last_and_does_not_loop() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "foreign-root-not-last").unwrap();
    resize_disk(&disk, 512 * MIB).unwrap();
    run("sgdisk", &["-e", "-n", "10:0:+32M", "-c", "10:VENDOR", disk.to_str().unwrap()]);
    let first = boot(&[&disk], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&first);
    assert!(first.has("grow ROOT SKIPPED"), "{}", first.text);
    assert!(first.has("first-boot-done: first-boot flag flatcar/first_boot removed"), "{}", first.text);
    let later = boot(&[&disk], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&later);
    assert!(later.has("first-boot: not a first boot"), "{}", later.text);
    let _ = std::fs::remove_file(&disk);
}

/// The boot disk itself is write-protected on first boot: identity and grow are reported as
/// skipped, nothing is written, and the boot stops at ROOT (which cannot be mounted for
/// writing) at once with the reason, instead of waiting or looping through first boot.
#[test]
fn a_write_protected_boot_disk_is_not_written_and_the_boot_stops_with_the_reason() {
    let fixture = shared_fixture().unwrap();
    let copy = disk_copy(fixture, "foreign-protected").unwrap();
    let disk = copy.with_extension(&READ_ONLY_DISK[1..]);
    std::fs::rename(&copy, &disk).unwrap();
    format_root(&disk, &["mkfs.ext4", "-q", "-F", "-L", "ROOT"], &[]).unwrap();
    let before = file_digest(&disk).unwrap();
    let console = boot(&[&disk], &fixture.initrd, "", TIMEOUT).unwrap();
    assert!(console.has("give the disk its own GUIDs SKIPPED"), "{}", console.text);
    assert_refused(&console, "root", "cannot mount /dev/vda9");
    assert_eq!(file_digest(&disk).unwrap(), before, "the write-protected disk changed");
    let _ = std::fs::remove_file(&disk);
}
