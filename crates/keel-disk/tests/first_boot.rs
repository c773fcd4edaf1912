//! First boot's table rewrites on image files, checked with sgdisk, and cut short at
//! every point of their writes to prove that a power cut leaves a readable table from
//! which running again reaches the same end.

mod support;
use keel_disk::{grow_root, randomize_identity, read_gpt, repair_table, set_format_pending, Gpt, Guid, ROOT_FORMAT_PENDING, SECTOR_SIZE};
use keel_test_support::{damage_both_gpts, damage_primary_gpt, overwrite};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use support::{image, sgdisk, MIB};

const IMAGE_DEFAULT: &str = keel_disk::IMAGE_DISK_GUID;

fn open_rw(path: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(path).unwrap()
}

fn table(path: &Path) -> Gpt {
    read_gpt(&mut File::open(path).unwrap()).unwrap()
}

/// An image whose partitions hold recognisable bytes, on a disk of `disk_mib`.
fn grown_disk(name: &str, disk_mib: u64) -> std::path::PathBuf {
    let path = image(name);
    for p in table(&path).partitions {
        overwrite(&path, p.start_bytes(), &vec![p.number as u8; p.size_bytes() as usize]);
    }
    OpenOptions::new().write(true).open(&path).unwrap().set_len(disk_mib * MIB).unwrap();
    path
}

fn counter_guids() -> impl FnMut() -> Guid {
    let mut next = 0u8;
    move || {
        next += 1;
        Guid::from_random_bytes([next; 16])
    }
}

/// cgpt (Chrome OS's reference) warns about any invalid header or entry array, and shows
/// ROOT where keel's table has it.
fn assert_cgpt_finds_both_tables_valid(path: &Path) {
    let output = support::cgpt(&["show"], path);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && !text.contains("WARNING") && !text.contains("INVALID"), "{text}");
    let root = table(path).by_name("ROOT").unwrap().clone();
    let size = root.last_lba + 1 - root.first_lba;
    assert!(
        text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()[..]
            == [&root.first_lba.to_string(), &size.to_string(), &root.number.to_string(), "Label:", "\"ROOT\""]),
        "{text}"
    );
}

#[test]
fn root_grows_to_the_disk_end_and_nothing_else_changes() {
    let path = grown_disk("grow", 64);
    let before = fs::read(&path).unwrap();
    let old = table(&path);

    let grown = grow_root(&mut open_rw(&path)).unwrap().expect("ROOT grows");
    assert!(sgdisk(&["-v"], &path).contains("No problems found"));
    assert_cgpt_finds_both_tables_valid(&path);
    let new = table(&path);
    let root = new.by_name("ROOT").unwrap();
    assert_eq!(root.last_lba + 1, 64 * MIB / SECTOR_SIZE - 2048, "ROOT ends on the last whole MiB before the backup table");
    assert_eq!(grown.new_sectors, root.last_lba + 1 - root.first_lba);
    assert_eq!(new.disk_guid, old.disk_guid);

    let after = fs::read(&path).unwrap();
    for p in old.partitions.iter().filter(|p| p.name != "ROOT") {
        assert_eq!(new.partition(p.number), Some(p), "entry {} changed", p.number);
        let range = p.start_bytes() as usize..(p.start_bytes() + p.size_bytes()) as usize;
        assert!(before[range.clone()] == after[range], "the bytes of partition {} changed", p.number);
    }
    let old_root = old.by_name("ROOT").unwrap();
    let range = old_root.start_bytes() as usize..(old_root.start_bytes() + old_root.size_bytes()) as usize;
    assert!(before[range.clone()] == after[range], "ROOT's existing bytes changed");

    assert_eq!(grow_root(&mut open_rw(&path)).unwrap(), None, "a second run changes nothing");
}

#[test]
fn the_disk_gets_its_own_identity_once() {
    let path = grown_disk("identity", 32);
    let old = table(&path);
    assert_eq!(old.disk_guid.to_string(), IMAGE_DEFAULT);
    let new_guid = randomize_identity(&mut open_rw(&path), Guid::parse(IMAGE_DEFAULT).unwrap(), counter_guids()).unwrap().unwrap();
    let new = table(&path);
    assert_eq!(new.disk_guid, new_guid);
    assert_ne!(new.by_name("ROOT").unwrap().guid, old.by_name("ROOT").unwrap().guid);
    for name in ["USR-A", "USR-B", "EFI-SYSTEM", "OEM"] {
        assert_eq!(new.by_name(name).unwrap().guid, old.by_name(name).unwrap().guid, "{name} kept its GUID");
    }
    assert!(sgdisk(&["-v"], &path).contains("No problems found"));
    assert_cgpt_finds_both_tables_valid(&path);

    let before = fs::read(&path).unwrap();
    assert_eq!(randomize_identity(&mut open_rw(&path), Guid::parse(IMAGE_DEFAULT).unwrap(), counter_guids()).unwrap(), None);
    assert!(fs::read(&path).unwrap() == before, "a disk with its own GUID is left alone");
}

#[test]
fn disks_too_small_to_align_are_handled_without_overflow() {
    // Under 1 MiB there is no aligned end to grow to; the table is kept (and repaired).
    let root = keel_disk::GptPartition {
        number: 9,
        type_guid: Guid::from_random_bytes([9; 16]),
        guid: Guid::from_random_bytes([8; 16]),
        first_lba: 100,
        last_lba: 200,
        attributes: 0,
        name: "ROOT".into(),
    };
    let mut disk = io::Cursor::new(vec![0u8; 1000 * 512]);
    keel_disk::write_gpt(&mut disk, Guid::from_random_bytes([7; 16]), std::slice::from_ref(&root)).unwrap();
    assert_eq!(grow_root(&mut disk).unwrap(), None);
    assert_eq!(read_gpt(&mut disk).unwrap().by_name("ROOT"), Some(&root));
}

#[test]
fn the_format_pending_mark_touches_only_its_own_bit() {
    let path = grown_disk("pending", 32);
    let old = table(&path);
    let root_number = old.by_name("ROOT").unwrap().number.to_string();
    set_format_pending(&mut open_rw(&path), 9, true).unwrap();
    let marked = table(&path);
    let root = marked.by_name("ROOT").unwrap();
    assert_eq!(root.attributes, old.by_name("ROOT").unwrap().attributes | ROOT_FORMAT_PENDING);
    assert!(sgdisk(&["-v"], &path).contains("No problems found"));
    assert!(sgdisk(&[&format!("--attributes={root_number}:show")], &path).contains(":57:"), "sgdisk sees bit 57");
    for p in old.partitions.iter().filter(|p| p.name != "ROOT") {
        assert_eq!(marked.partition(p.number), Some(p), "entry {} changed", p.number);
    }
    let before = fs::read(&path).unwrap();
    set_format_pending(&mut open_rw(&path), 9, true).unwrap();
    assert!(fs::read(&path).unwrap() == before, "marking a marked ROOT wrote the table");
    set_format_pending(&mut open_rw(&path), 9, false).unwrap();
    assert_eq!(table(&path).partitions, old.partitions);
}

#[test]
fn a_damaged_primary_table_is_repaired_from_the_backup_even_on_a_bigger_disk() {
    // The image was written to a bigger disk: its backup is not at the disk's end.
    let path = grown_disk("repair", 32);
    let expected = table(&path).partitions;
    damage_primary_gpt(&path);
    assert!(!table(&path).primary_intact);
    grow_root(&mut open_rw(&path)).unwrap();
    let repaired = table(&path);
    assert!(repaired.primary_intact && repaired.backup_intact && repaired.copies_agree);
    assert_eq!(repaired.partitions.len(), expected.len());
    assert!(sgdisk(&["-v"], &path).contains("No problems found"));
}

#[test]
fn repair_rewrites_only_a_damaged_table_and_keeps_its_partitions() {
    let path = grown_disk("repair-only", 32);
    assert!(repair_table(&mut open_rw(&path)).unwrap(), "the backup was not at the disk's end");
    let intact = table(&path);
    let before = fs::read(&path).unwrap();
    assert!(!repair_table(&mut open_rw(&path)).unwrap());
    assert!(fs::read(&path).unwrap() == before, "an intact table was written");
    overwrite(&path, SECTOR_SIZE * 2 + 3, b"torn");
    assert!(!table(&path).primary_intact);
    assert!(repair_table(&mut open_rw(&path)).unwrap());
    assert_eq!(table(&path), intact);
    assert!(fs::read(&path).unwrap() == before, "the repaired table differs from the intact one");
}

#[test]
fn bad_disks_are_refused_and_left_untouched() {
    // Both tables damaged (on a disk the image was not grown onto, the backup is at its end).
    let path = image("both-damaged");
    damage_both_gpts(&path);
    let before = fs::read(&path).unwrap();
    assert!(grow_root(&mut open_rw(&path)).is_err());
    assert!(randomize_identity(&mut open_rw(&path), Guid::parse(IMAGE_DEFAULT).unwrap(), counter_guids()).is_err());
    assert!(fs::read(&path).unwrap() == before);

    // A disk smaller than the image: ROOT would end past it.
    let path = image("too-small");
    let root_end = table(&path).by_name("ROOT").unwrap().last_lba * SECTOR_SIZE;
    OpenOptions::new().write(true).open(&path).unwrap().set_len(root_end - MIB).unwrap();
    let before = fs::read(&path).unwrap();
    let error = format!("{:#}", grow_root(&mut open_rw(&path)).unwrap_err());
    assert!(error.contains("smaller than the image"), "{error}");
    assert!(randomize_identity(&mut open_rw(&path), Guid::parse(IMAGE_DEFAULT).unwrap(), counter_guids()).is_err());
    assert!(fs::read(&path).unwrap() == before);
}

/// A disk that loses power after `budget` more bytes: the write in flight is cut short,
/// mid-sector if it falls there, and every later write fails.
struct PowerCut {
    file: File,
    budget: usize,
}

impl Read for PowerCut {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.file.read(buffer)
    }
}

impl Seek for PowerCut {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.file.seek(to)
    }
}

impl Write for PowerCut {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::other("power cut"));
        }
        let n = bytes.len().min(self.budget);
        self.budget -= n;
        self.file.write(&bytes[..n])
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Everything a table rewrite writes: the MBR, two 16 KiB entry arrays and two headers.
const TABLE_WRITE_BYTES: usize = 512 + 2 * 16384 + 2 * 512;

/// Cuts `step` at every half sector of its writes; after each cut the table must read,
/// and running the step again must give exactly the uninterrupted result.
fn survives_every_cut(name: &str, step: impl Fn(&mut dyn FnMut() -> PowerCut), uninterrupted: &[u8]) -> usize {
    let budgets: Vec<usize> = (0..=TABLE_WRITE_BYTES).step_by(256).collect();
    for &budget in &budgets {
        let path = grown_disk(&format!("{name}-cut"), 64);
        let mut attempts = 0;
        step(&mut || {
            attempts += 1;
            PowerCut { file: open_rw(&path), budget: if attempts == 1 { budget } else { usize::MAX } }
        });
        let after_cut = read_gpt(&mut File::open(&path).unwrap());
        assert!(after_cut.is_ok(), "{name}: no readable table after a cut at byte {budget}: {:?}", after_cut.err());
        // Power back: run again, uninterrupted.
        step(&mut || PowerCut { file: open_rw(&path), budget: usize::MAX });
        assert!(fs::read(&path).unwrap() == uninterrupted, "{name}: a cut at byte {budget} led elsewhere");
    }
    budgets.len()
}

#[test]
fn a_power_cut_anywhere_in_first_boot_leaves_a_table_that_converges() {
    let reference = grown_disk("grow-reference", 64);
    grow_root(&mut open_rw(&reference)).unwrap();
    let grown = fs::read(&reference).unwrap();
    let cuts = survives_every_cut(
        "grow",
        |open| {
            let _ = grow_root(&mut open());
        },
        &grown,
    );

    let reference = grown_disk("identity-reference", 64);
    let default = Guid::parse(IMAGE_DEFAULT).unwrap();
    randomize_identity(&mut open_rw(&reference), default, counter_guids()).unwrap();
    let renamed = fs::read(&reference).unwrap();
    let more = survives_every_cut(
        "identity",
        |open| {
            let _ = randomize_identity(&mut open(), default, counter_guids());
        },
        &renamed,
    );
    eprintln!("{} power cuts, each followed by a clean rerun", cuts + more);
}
