//! First boot makes the image's small disk the machine's: ROOT fills the disk, the disk
//! gets its own GUIDs, ROOT gets (or keeps and grows) its filesystem, and the first-boot
//! flag goes, so the second boot changes nothing.

use keel_disk::{Gpt, IMAGE_DISK_GUID};
use keel_test_support::{damage_both_gpts, damage_primary_gpt, run};
use keel_vm_tests::{
    assert_reached_real_init, assert_refused, assert_root_fills, boot, check_ext4_grown_like_resize2fs, check_root_ext4, check_root_filesystem,
    copy_root, disk_copy, esp_has_flag, ext4_blocks, format_root, image_table, resize_disk, shared_fixture, stage_millis, Console,
    FIXTURE_SECTOR_SIZE,
};
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(180);
const GIB: u64 = 1 << 30;

fn table(image: &Path) -> Gpt {
    image_table(image).unwrap()
}

/// The sectors both copies of the table live in (MBR, primary, and the backup at the end),
/// read without loading a 20 GiB sparse image into memory.
fn table_sectors(image: &Path) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let gpt = table(image);
    let sector = gpt.sector_size.bytes();
    let mut file = std::fs::File::open(image).unwrap();
    let mut bytes = vec![0u8; (gpt.first_usable * sector) as usize];
    file.read_exact(&mut bytes).unwrap();
    let backup_bytes = file.metadata().unwrap().len() - (gpt.last_usable + 1) * sector;
    let mut backup = vec![0u8; backup_bytes as usize];
    file.seek(SeekFrom::End(-(backup_bytes as i64))).unwrap();
    file.read_exact(&mut backup).unwrap();
    bytes.extend(backup);
    bytes
}

#[test]
fn root_fills_a_2_gib_disk_and_the_second_boot_does_not_redo_first_boot() {
    root_fills_the_disk_once(2 * GIB, "2 GiB");
}

#[test]
fn root_fills_a_20_gib_disk() {
    root_fills_the_disk_once(20 * GIB, "20 GiB");
}

/// The image on a `disk_bytes` disk: first boot grows and formats ROOT, gives the disk its
/// own GUIDs and clears the flag; the second boot writes nothing and finds first boot's files.
fn root_fills_the_disk_once(disk_bytes: u64, name: &str) {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, &format!("grow-{}", name.replace(' ', ""))).unwrap();
    let before = table(&disk);
    resize_disk(&disk, disk_bytes).unwrap();
    assert!(esp_has_flag(&disk).unwrap(), "the image ships without the first-boot flag");

    let first = boot(&[&disk], &fixture.initrd, "keel.test=write", TIMEOUT).unwrap();
    assert_reached_real_init(&first);
    assert!(first.has("first-boot: first boot (the ESP holds the first-boot flag)"), "{}", first.text);
    assert!(first.has("ROOT grew from 64 to"), "{}", first.text);
    assert!(first.has("formatted as ext4 because it was blank"), "{}", first.text);
    assert!(first.has("first-boot-done: first-boot flag flatcar/first_boot removed"), "{}", first.text);

    assert_root_fills(&disk, disk_bytes);
    let after = table(&disk);
    assert_ne!(after.disk_guid.to_string(), IMAGE_DISK_GUID, "the disk kept the image's GUID");
    assert_ne!(after.by_name("ROOT").unwrap().unwrap().guid, before.by_name("ROOT").unwrap().unwrap().guid, "ROOT kept the image's GUID");
    for name in ["USR-A", "USR-B", "EFI-SYSTEM", "OEM"] {
        assert_eq!(after.by_name(name), before.by_name(name), "{name} changed");
    }
    let root = after.by_name("ROOT").unwrap().unwrap();
    let (blocks, block_size) = ext4_blocks(&disk).unwrap();
    assert_eq!(blocks * block_size, root.size_bytes(after.sector_size), "ext4 does not fill ROOT");
    check_root_ext4(&disk).unwrap();
    assert!(!esp_has_flag(&disk).unwrap(), "the first-boot flag is still there");

    let table_after_first = table_sectors(&disk);
    let second = boot(&[&disk], &fixture.initrd, "keel.test=check", TIMEOUT).unwrap();
    assert_reached_real_init(&second);
    assert!(second.has("first-boot: not a first boot"), "{}", second.text);
    assert!(!second.has("formatted as"), "the second boot formatted ROOT:\n{}", second.text);
    assert!(second.real_init().contains(&"root-file written on first boot"), "{}", second.text);
    assert!(table_sectors(&disk) == table_after_first, "the second boot rewrote the table");
    report_first_boot_cost(&first, &second, name);
    let _ = std::fs::remove_file(&disk);
}

/// First boot's cost: its stages against the stages a later boot runs too (first-boot and root).
fn report_first_boot_cost(first: &Console, later: &Console, disk: &str) {
    let millis = |console: &Console, stage: &str| stage_millis(console, stage).unwrap_or_else(|| panic!("no time for {stage} in:\n{}", console.text));
    let first_boot_stages = ["first-boot", "ignition-fetch", "ignition-disks", "root", "ignition-files", "first-boot-done"];
    let first_costs: Vec<String> = first_boot_stages.iter().map(|stage| format!("{stage} {:.0} ms", millis(first, stage))).collect();
    let later_total: f64 = ["first-boot", "root"].iter().map(|stage| millis(later, stage)).sum();
    eprintln!("first boot on a {disk} disk: {}; a later boot: {later_total:.0} ms for first-boot and root", first_costs.join(", "));
}

#[test]
fn an_ext4_root_shipped_with_files_grows_online_and_keeps_them() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "grow-ext4").unwrap();
    let tree = disk.with_extension("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("shipped"), "in the image").unwrap();
    format_root(&disk, &["mkfs.ext4", "-q", "-F", "-L", "ROOT", "-d", tree.to_str().unwrap()], &[]).unwrap();
    std::fs::remove_dir_all(&tree).unwrap();
    let start = disk.with_extension("start.ext4");
    copy_root(&disk, &start).unwrap();
    let (blocks_before, _) = ext4_blocks(&disk).unwrap();
    resize_disk(&disk, 2 * GIB).unwrap();

    let console = boot(&[&disk], &fixture.initrd, "keel.test=read:/shipped", TIMEOUT).unwrap();
    assert_reached_real_init(&console);
    assert!(console.has("filesystem grown from"), "{}", console.text);
    assert!(!console.has("formatted as"), "a shipped filesystem was formatted over:\n{}", console.text);
    assert!(console.real_init().contains(&"read /shipped ok"), "{}", console.text);
    assert_root_fills(&disk, 2 * GIB);
    let (blocks, block_size) = ext4_blocks(&disk).unwrap();
    assert!(blocks > blocks_before);
    assert_eq!(blocks * block_size, table(&disk).by_name("ROOT").unwrap().unwrap().size_bytes(FIXTURE_SECTOR_SIZE), "ext4 does not fill ROOT");
    check_root_ext4(&disk).unwrap();
    check_ext4_grown_like_resize2fs(&disk, &start).unwrap();
    std::fs::remove_file(&start).unwrap();
}

/// keel.root.fs= formats a blank ROOT as asked; a ROOT shipped with that filesystem grows.
fn other_filesystem(name: &str, mkfs: &[&str], env: &[(&str, &str)]) {
    let fixture = shared_fixture().unwrap();
    let blank = disk_copy(fixture, &format!("{name}-blank")).unwrap();
    resize_disk(&blank, 2 * GIB).unwrap();
    let console = boot(&[&blank], &fixture.initrd, &format!("keel.root.fs={name}"), TIMEOUT).unwrap();
    assert_reached_real_init(&console);
    assert!(console.has(&format!("formatted as {name} because it was blank")), "{}", console.text);
    assert!(console.real_init().iter().any(|l| l.starts_with(&format!("mount / /dev/vda9 {name} rw"))), "{}", console.text);
    assert_root_fills(&blank, 2 * GIB);
    check_root_filesystem(&blank, name).unwrap();

    let shipped = disk_copy(fixture, &format!("{name}-shipped")).unwrap();
    format_root(&shipped, mkfs, env).unwrap();
    resize_disk(&shipped, 2 * GIB).unwrap();
    let console = boot(&[&shipped], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&console);
    assert!(!console.has("formatted as"), "{}", console.text);
    let grown = console.text.lines().find(|l| l.contains("filesystem grown from")).unwrap_or_else(|| panic!("{}", console.text));
    let mib: Vec<u64> = grown.rsplit("grown from ").next().unwrap().split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert!(mib.len() >= 2 && mib[0] < 100 && mib[1] > 1500, "{name} did not grow to fill the 2 GiB disk: {grown}");
    check_root_filesystem(&shipped, name).unwrap();
}

#[test]
fn xfs_root_is_formatted_on_request_and_grown_when_shipped() {
    // mkfs.xfs refuses filesystems under 300 MB unless it believes it runs under fstests.
    other_filesystem("xfs", &["mkfs.xfs", "-q", "-f", "-L", "ROOT"], &[("TEST_DIR", "/tmp"), ("TEST_DEV", "root"), ("QA_CHECK_FS", "1")]);
}

#[test]
fn btrfs_root_is_formatted_on_request_and_grown_when_shipped() {
    // Mixed block groups let btrfs fit the image's 64 MiB ROOT.
    other_filesystem("btrfs", &["mkfs.btrfs", "-q", "-f", "--mixed", "-L", "ROOT"], &[]);
}

#[test]
fn a_disk_guid_that_is_not_the_image_default_is_left_alone() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "own-guid").unwrap();
    resize_disk(&disk, 2 * GIB).unwrap();
    run("sgdisk", &["-e", "--disk-guid=0d15c0de-0000-4000-8000-000000000001", disk.to_str().unwrap()]);
    let before = table(&disk);
    let console = boot(&[&disk], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&console);
    assert!(console.has("the disk already has its own GUID"), "{}", console.text);
    let after = table(&disk);
    assert_eq!(after.disk_guid, before.disk_guid);
    assert_eq!(after.by_name("ROOT").unwrap().unwrap().guid, before.by_name("ROOT").unwrap().unwrap().guid, "ROOT got a new GUID");
    assert_root_fills(&disk, 2 * GIB);
}

#[test]
fn the_command_line_can_say_it_is_not_a_first_boot() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "not-first").unwrap();
    resize_disk(&disk, 2 * GIB).unwrap();
    let before = table(&disk);
    let console = boot(&[&disk], &fixture.initrd, "flatcar.first_boot=0", TIMEOUT).unwrap();
    assert_reached_real_init(&console);
    assert!(console.has("first-boot: not a first boot"), "{}", console.text);
    assert_eq!(table(&disk).partitions, before.partitions, "the table changed");
    assert!(esp_has_flag(&disk).unwrap(), "the flag was removed without a first boot");
}

#[test]
fn a_damaged_primary_gpt_is_repaired_from_the_backup() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "torn-primary").unwrap();
    resize_disk(&disk, 2 * GIB).unwrap();
    damage_primary_gpt(&disk, FIXTURE_SECTOR_SIZE.bytes());
    // The image's backup is at the image's end, not the disk's: only the manifest's size finds it.
    let image_bytes = Some(fixture.manifest.image_bytes);
    assert!(!keel_disk::read_gpt_of_image(&mut std::fs::File::open(&disk).unwrap(), FIXTURE_SECTOR_SIZE, image_bytes).unwrap().primary_intact);
    // /usr named by path: the repair must not depend on a PARTLABEL= lookup.
    let console = boot(&[&disk], &fixture.initrd, "mount.usr=/dev/vda3", TIMEOUT).unwrap();
    assert_reached_real_init(&console);
    assert!(
        console.has("its primary GPT was damaged; its /dev/vda3 verified, so the table was rewritten from the intact backup"),
        "{}",
        console.text
    );
    assert_root_fills(&disk, 2 * GIB);
}

#[test]
fn a_gpt_damaged_in_both_copies_stops_the_boot_and_changes_nothing() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "torn-both").unwrap();
    damage_both_gpts(&disk, FIXTURE_SECTOR_SIZE.bytes());
    let bytes = std::fs::read(&disk).unwrap();
    let console = boot(&[&disk], &fixture.initrd, "rd.timeout=3", TIMEOUT).unwrap();
    assert_refused(&console, "usr", "no usable GPT");
    assert!(std::fs::read(&disk).unwrap() == bytes, "the disk changed");
}

#[test]
fn a_disk_smaller_than_the_image_is_refused_and_left_alone() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "too-small").unwrap();
    // The image cut 8 MiB short: ROOT now runs past the disk's end, and the backup is gone.
    let bytes = std::fs::metadata(&disk).unwrap().len() - (8 << 20);
    resize_disk(&disk, bytes).unwrap();
    let before = std::fs::read(&disk).unwrap();
    let console = boot(&[&disk], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_refused(&console, "usr", "the disk is smaller than the image; nothing was changed");
    assert!(std::fs::read(&disk).unwrap() == before, "the disk changed");
}

#[test]
fn the_command_line_can_ask_for_a_first_boot_which_keeps_the_flag() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "asked-first").unwrap();
    resize_disk(&disk, 2 * GIB).unwrap();
    // A device path for /usr: the table repair must not depend on how the device is named.
    let console = boot(&[&disk], &fixture.initrd, "flatcar.first_boot=1 mount.usr=/dev/vda3", TIMEOUT).unwrap();
    assert_reached_real_init(&console);
    assert!(console.has("first-boot: first boot (the kernel command line asks for it)"), "{}", console.text);
    assert!(console.has("no flag to clear: the command line asked for this first boot"), "{}", console.text);
    assert_root_fills(&disk, 2 * GIB);
    assert!(esp_has_flag(&disk).unwrap(), "only a detected flag is cleared");
}
