//! A keel machine's normal life: first boot into a verified /usr, and state that lasts.

use keel_vm_tests::{assert_reached_real_init, boot, disk_copy, shared_fixture};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn first_boot_runs_the_real_init_on_verified_usr_writable_root_and_etc_overlay() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "first-boot").unwrap();
    let console = boot(&[&disk], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&console);
    let lines = console.real_init();
    let line = |prefix: &str| lines.iter().find(|l| l.starts_with(prefix)).copied().unwrap_or_else(|| panic!("no {prefix:?} in:\n{}", console.text));

    // /usr: read-only, from the dm-verity device, which the kernel reports verified.
    let usr = line("mount /usr ");
    assert!(usr.starts_with("mount /usr /dev/mapper/usr ext4 ro,"), "{usr}");
    assert!(line("usr-device ").ends_with("dm-name usr"));
    let table = line("dm usr: verity ");
    assert!(table.ends_with("1 panic_on_corruption"), "{table}");
    assert!(table.contains(&keel_verity::encode_hex(&fixture.manifest.usr.root_hash)), "{table}");
    assert_eq!(line("dm usr: status"), "dm usr: status Verified");
    assert_eq!(line("usr-slot "), "usr-slot USR-A");
    // /: ROOT (partition 9), read-write; it was blank, so keel formatted it.
    assert!(line("mount / ").starts_with("mount / /dev/vda9 ext4 rw,"));
    assert!(console.has("formatted as ext4 because it was blank"), "{}", console.text);
    // /etc: an overlay whose lower layer is the OS defaults in /usr.
    let etc = line("mount /etc ");
    assert!(etc.starts_with("mount /etc overlay overlay rw,"), "{etc}");
    assert!(etc.contains("lowerdir=/sysroot/usr/share/keel/etc,upperdir=/sysroot/etc,workdir=/sysroot/.etc-work"), "{etc}");
    // The timeline reached the real root.
    assert!(line("timeline ").contains("\"stage\": \"switch-root\""));
}

#[test]
fn files_written_to_root_and_etc_on_first_boot_are_there_on_the_second() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "persistence").unwrap();
    let first = boot(&[&disk], &fixture.initrd, "keel.test=write", TIMEOUT).unwrap();
    assert_reached_real_init(&first);
    assert!(first.real_init().contains(&"wrote"), "{}", first.text);

    let second = boot(&[&disk], &fixture.initrd, "keel.test=check", TIMEOUT).unwrap();
    assert_reached_real_init(&second);
    let lines = second.real_init();
    assert!(lines.contains(&"root-file written on first boot"), "{}", second.text);
    assert!(lines.contains(&"etc-file written on first boot"), "{}", second.text);
    assert!(!second.has("formatted as ext4"), "the second boot formatted ROOT again:\n{}", second.text);
}

#[test]
fn the_usr_slot_named_on_the_command_line_is_the_one_booted() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "usr-b").unwrap();
    // Put the /usr image in USR-B and wreck USR-A, so only honouring the name can boot.
    let gpt = keel_vm_tests::image_table(&disk).unwrap();
    let (a, b) = (gpt.by_name("USR-A").unwrap().unwrap(), gpt.by_name("USR-B").unwrap().unwrap());
    let bytes = std::fs::read(&disk).unwrap();
    let mut image = bytes.clone();
    let sector_size = gpt.sector_size;
    let (a_start, b_start, len) = (a.start_bytes(sector_size) as usize, b.start_bytes(sector_size) as usize, a.size_bytes(sector_size) as usize);
    image.copy_within(a_start..a_start + len, b_start);
    image[a_start..a_start + len].fill(0);
    std::fs::write(&disk, image).unwrap();

    let console = boot(&[&disk], &fixture.initrd, "verity.usr=PARTUUID=e03dd35c-7c2d-4a47-b3fe-27f15780a57c", TIMEOUT).unwrap();
    assert_reached_real_init(&console);
    assert!(console.has("verified: dm-verity device /dev/mapper/usr from /dev/vda4 (slot USR-B)"), "{}", console.text);
    assert!(console.real_init().contains(&"dm usr: status Verified"));
    assert!(console.real_init().contains(&"usr-slot USR-B"), "{}", console.text);
}

#[test]
fn a_usr_hashed_with_sha512_and_1024_byte_hash_blocks_boots_verified() {
    use keel_verity::HashAlgorithm;
    let layout = keel_vm_tests::VerityLayout { algorithm: HashAlgorithm::Sha512, hash_block_size: 1024, ..Default::default() };
    let fixture = keel_vm_tests::build_fixture("sha512", layout, |_| {}).unwrap();
    let disk = disk_copy(&fixture, "sha512").unwrap();
    let console = boot(&[&disk], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&console);
    let lines = console.real_init();
    let table = lines.iter().find(|l| l.starts_with("dm usr: verity ")).unwrap_or_else(|| panic!("{}", console.text));
    assert!(table.contains(" 4096 1024 ") && table.contains(" sha512 "), "{table}");
    assert!(lines.contains(&"dm usr: status Verified"), "{}", console.text);
}
