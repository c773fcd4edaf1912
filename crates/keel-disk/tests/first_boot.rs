//! First boot's table rewrites on image files at both logical sector sizes, checked with
//! sgdisk and cgpt, and cut short at every point of their writes to prove that a power cut
//! leaves a readable table from which running again reaches the same end.

mod support;
use keel_disk::{
    grow_root, randomize_identity, read_gpt, read_gpt_of_image, repair_table, set_format_pending, DurableWrite, Guid, SectorSize, ROOT_FORMAT_PENDING,
};
use keel_test_support::{damage_both_gpts, damage_primary_gpt, overwrite, SparseDisk};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use support::{image, keel_view, reference_view, sgdisk, table, MIB};

const IMAGE_DEFAULT: &str = keel_disk::IMAGE_DISK_GUID;

fn open_rw(path: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(path).unwrap()
}

/// An image whose partitions hold recognisable bytes, on a disk of `disk_mib`.
fn grown_disk(name: &str, disk_mib: u64, sector_size: SectorSize) -> std::path::PathBuf {
    let path = image(name, sector_size);
    for p in table(&path, sector_size).partitions {
        overwrite(&path, p.start_bytes(sector_size), &vec![p.number as u8; p.size_bytes(sector_size) as usize]);
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

/// sgdisk and cgpt find the table whole and read it as keel does.
fn assert_references_agree(path: &Path, sector_size: SectorSize) {
    assert_eq!(reference_view(path, sector_size), keel_view(path, sector_size), "{sector_size}");
}

#[test]
fn root_grows_to_the_disk_end_and_nothing_else_changes() {
    for sector_size in SectorSize::ALL {
        let path = grown_disk("grow", 64, sector_size);
        let before = fs::read(&path).unwrap();
        let old = table(&path, sector_size);

        let grown = grow_root(&mut open_rw(&path), sector_size).unwrap().expect("ROOT grows");
        assert_references_agree(&path, sector_size);
        let new = table(&path, sector_size);
        let root = new.by_name("ROOT").unwrap().unwrap();
        assert_eq!((root.last_lba + 1) * sector_size.bytes(), 63 * MIB, "ROOT ends on the last whole MiB before the backup table");
        assert_eq!(grown.new_sectors, root.last_lba + 1 - root.first_lba);
        assert_eq!(new.disk_guid, old.disk_guid);

        let after = fs::read(&path).unwrap();
        let bytes_of =
            |p: &keel_disk::GptPartition| p.start_bytes(sector_size) as usize..(p.start_bytes(sector_size) + p.size_bytes(sector_size)) as usize;
        for p in old.partitions.iter().filter(|p| p.name != "ROOT") {
            assert_eq!(new.partition(p.number), Some(p), "entry {} changed", p.number);
            assert!(before[bytes_of(p)] == after[bytes_of(p)], "the bytes of partition {} changed", p.number);
        }
        let old_root = old.by_name("ROOT").unwrap().unwrap();
        assert!(before[bytes_of(old_root)] == after[bytes_of(old_root)], "ROOT's existing bytes changed");

        assert_eq!(grow_root(&mut open_rw(&path), sector_size).unwrap(), None, "a second run changes nothing");
    }
}

#[test]
fn the_disk_gets_its_own_identity_once() {
    for sector_size in SectorSize::ALL {
        let path = grown_disk("identity", 32, sector_size);
        let old = table(&path, sector_size);
        assert_eq!(old.disk_guid.to_string(), IMAGE_DEFAULT);
        let new_guid = randomize_identity(&mut open_rw(&path), sector_size, Guid::parse(IMAGE_DEFAULT).unwrap(), counter_guids()).unwrap().unwrap();
        let new = table(&path, sector_size);
        assert_eq!(new.disk_guid, new_guid);
        assert_ne!(new.by_name("ROOT").unwrap().unwrap().guid, old.by_name("ROOT").unwrap().unwrap().guid);
        for name in ["USR-A", "USR-B", "EFI-SYSTEM", "OEM"] {
            assert_eq!(new.by_name(name).unwrap().unwrap().guid, old.by_name(name).unwrap().unwrap().guid, "{name} kept its GUID");
        }
        assert_references_agree(&path, sector_size);

        let before = fs::read(&path).unwrap();
        assert_eq!(randomize_identity(&mut open_rw(&path), sector_size, Guid::parse(IMAGE_DEFAULT).unwrap(), counter_guids()).unwrap(), None);
        assert!(fs::read(&path).unwrap() == before, "a disk with its own GUID is left alone");
    }
}

#[test]
fn disks_too_small_to_align_are_handled_without_overflow() {
    // Under 1 MiB there is no aligned end to grow to; the table is kept (and repaired).
    for sector_size in SectorSize::ALL {
        let sector = sector_size.bytes();
        let root = keel_disk::GptPartition {
            number: 9,
            type_guid: Guid::from_random_bytes([9; 16]),
            guid: Guid::from_random_bytes([8; 16]),
            first_lba: 64 * 1024 / sector,
            last_lba: 96 * 1024 / sector - 1,
            attributes: 0,
            name: "ROOT".into(),
        };
        let mut disk = io::Cursor::new(vec![0u8; 500 * 1024]);
        keel_disk::write_gpt(&mut disk, sector_size, Guid::from_random_bytes([7; 16]), std::slice::from_ref(&root)).unwrap();
        assert_eq!(grow_root(&mut disk, sector_size).unwrap(), None);
        assert_eq!(read_gpt(&mut disk, sector_size).unwrap().by_name("ROOT").unwrap(), Some(&root));
    }
}

#[test]
fn the_format_pending_mark_touches_only_its_own_bit() {
    for sector_size in SectorSize::ALL {
        let path = grown_disk("pending", 32, sector_size);
        let old = table(&path, sector_size);
        let root_number = old.by_name("ROOT").unwrap().unwrap().number.to_string();
        set_format_pending(&mut open_rw(&path), sector_size, 9, true).unwrap();
        let marked = table(&path, sector_size);
        let root = marked.by_name("ROOT").unwrap().unwrap();
        assert_eq!(root.attributes, old.by_name("ROOT").unwrap().unwrap().attributes | ROOT_FORMAT_PENDING);
        assert_references_agree(&path, sector_size);
        assert!(sgdisk(&[&format!("--attributes={root_number}:show")], &path, sector_size).contains(":57:"), "sgdisk sees bit 57");
        for p in old.partitions.iter().filter(|p| p.name != "ROOT") {
            assert_eq!(marked.partition(p.number), Some(p), "entry {} changed", p.number);
        }
        let before = fs::read(&path).unwrap();
        set_format_pending(&mut open_rw(&path), sector_size, 9, true).unwrap();
        assert!(fs::read(&path).unwrap() == before, "marking a marked ROOT wrote the table");
        set_format_pending(&mut open_rw(&path), sector_size, 9, false).unwrap();
        assert_eq!(table(&path, sector_size).partitions, old.partitions);
    }
}

#[test]
fn a_damaged_primary_table_is_repaired_from_the_backup_at_the_image_end_only_when_told_where() {
    for sector_size in SectorSize::ALL {
        // The image was written to a bigger disk: its backup is not at the disk's end.
        let path = grown_disk("repair", 32, sector_size);
        let image_bytes = fs::metadata(image("repair-size", sector_size)).unwrap().len();
        let expected = table(&path, sector_size).partitions;
        damage_primary_gpt(&path, sector_size.bytes());
        assert!(!read_gpt_of_image(&mut File::open(&path).unwrap(), sector_size, Some(image_bytes)).unwrap().primary_intact);
        let before = fs::read(&path).unwrap();
        // Without the image's size no rewrite finds the table, and none writes.
        assert!(grow_root(&mut open_rw(&path), sector_size).is_err());
        assert!(repair_table(&mut open_rw(&path), sector_size, None).is_err());
        assert!(read_gpt_of_image(&mut File::open(&path).unwrap(), sector_size, Some(image_bytes + MIB)).is_err(), "a wrong size found a table");
        assert!(fs::read(&path).unwrap() == before, "a rewrite that found no table wrote");

        assert!(repair_table(&mut open_rw(&path), sector_size, Some(image_bytes)).unwrap());
        let repaired = table(&path, sector_size);
        assert!(repaired.primary_intact && repaired.backup_intact && repaired.copies_agree);
        assert_eq!(repaired.partitions, expected);
        assert_references_agree(&path, sector_size);
    }
}

/// A disk that once held an image and was then reused whole (here: its first MiB and its
/// table wiped, as mkfs does) still has the old backup header somewhere in the middle. No
/// read finds it there, so nothing treats the disk as carrying a table.
#[test]
fn an_old_backup_header_in_the_middle_of_a_disk_is_not_a_table() {
    for sector_size in SectorSize::ALL {
        let path = grown_disk("reused", 32, sector_size);
        overwrite(&path, 0, &vec![0u8; MIB as usize]);
        let len = fs::metadata(&path).unwrap().len();
        for read_with in SectorSize::ALL {
            assert!(read_gpt(&mut File::open(&path).unwrap(), read_with).is_err());
            assert!(read_gpt_of_image(&mut File::open(&path).unwrap(), read_with, Some(len)).is_err());
        }
        let before = fs::read(&path).unwrap();
        assert!(repair_table(&mut open_rw(&path), sector_size, None).is_err());
        assert!(fs::read(&path).unwrap() == before);
    }
}

#[test]
fn repair_rewrites_only_a_damaged_table_and_keeps_its_partitions() {
    for sector_size in SectorSize::ALL {
        let path = grown_disk("repair-only", 32, sector_size);
        assert!(repair_table(&mut open_rw(&path), sector_size, None).unwrap(), "the backup was not at the disk's end");
        let intact = table(&path, sector_size);
        let before = fs::read(&path).unwrap();
        assert!(!repair_table(&mut open_rw(&path), sector_size, None).unwrap());
        assert!(fs::read(&path).unwrap() == before, "an intact table was written");
        overwrite(&path, sector_size.bytes() * 2 + 3, b"torn");
        assert!(!table(&path, sector_size).primary_intact);
        assert!(repair_table(&mut open_rw(&path), sector_size, None).unwrap());
        assert_eq!(table(&path, sector_size), intact);
        assert!(fs::read(&path).unwrap() == before, "the repaired table differs from the intact one");
    }
}

#[test]
fn bad_disks_are_refused_and_left_untouched() {
    for sector_size in SectorSize::ALL {
        // Both tables damaged (on a disk the image was not grown onto, the backup is at its end).
        let path = image("both-damaged", sector_size);
        damage_both_gpts(&path, sector_size.bytes());
        let before = fs::read(&path).unwrap();
        assert!(grow_root(&mut open_rw(&path), sector_size).is_err());
        assert!(randomize_identity(&mut open_rw(&path), sector_size, Guid::parse(IMAGE_DEFAULT).unwrap(), counter_guids()).is_err());
        assert!(fs::read(&path).unwrap() == before);

        // A disk smaller than the image: ROOT would end past it.
        let path = image("too-small", sector_size);
        let root_end = table(&path, sector_size).by_name("ROOT").unwrap().unwrap().last_lba * sector_size.bytes();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(root_end - MIB).unwrap();
        let before = fs::read(&path).unwrap();
        let error = format!("{:#}", grow_root(&mut open_rw(&path), sector_size).unwrap_err());
        assert!(error.contains("smaller than the image"), "{error}");
        assert!(randomize_identity(&mut open_rw(&path), sector_size, Guid::parse(IMAGE_DEFAULT).unwrap(), counter_guids()).is_err());
        assert!(fs::read(&path).unwrap() == before);
    }
}

/// Every rewrite refuses a disk whose table was made for the other sector size, with the
/// reader's message, and writes nothing: rewritten at the disk's size it would lose the
/// partitions it cannot see.
#[test]
fn rewrites_refuse_a_table_of_the_other_sector_size() {
    for built_for in SectorSize::ALL {
        let read_with = built_for.other();
        let path = grown_disk("other-size", 32, built_for);
        let before = fs::read(&path).unwrap();
        let default = Guid::parse(IMAGE_DEFAULT).unwrap();
        let errors = [
            grow_root(&mut open_rw(&path), read_with).map(drop),
            randomize_identity(&mut open_rw(&path), read_with, default, counter_guids()).map(drop),
            set_format_pending(&mut open_rw(&path), read_with, 9, true),
            repair_table(&mut open_rw(&path), read_with, Some(before.len() as u64)).map(drop),
        ];
        for error in errors {
            let text = format!("{:#}", error.unwrap_err());
            assert!(text.contains(&format!("made for {built_for}")) && text.contains(&format!("--sector-size {}", read_with.bytes())), "{text}");
        }
        assert!(fs::read(&path).unwrap() == before, "a rewrite of a table made for {built_for} wrote");
    }
}

/// A disk that held one sector size's install, grown (its backup at the disk's end), and
/// then got the other sector size's image written over its start: the stale backup is not
/// a table, and nothing repairs the disk from it.
#[test]
fn a_stale_backup_of_an_earlier_install_does_not_beat_the_other_sizes_primary() {
    for new_image in SectorSize::ALL {
        let old_install = new_image.other();
        let old_path = grown_disk("stale-backup-old", 32, old_install);
        grow_root(&mut open_rw(&old_path), old_install).unwrap().expect("ROOT grew, and the backup moved to the disk's end");
        let old = fs::read(&old_path).unwrap();
        let path = grown_disk("stale-backup", 32, new_image);
        // The new image is written over the disk's start; the old grown table's backup (its
        // last 33 or 5 sectors) is still at the end, where the new image never reached.
        let backup_bytes = (16384 + old_install.bytes()) as usize;
        overwrite(&path, (old.len() - backup_bytes) as u64, &old[old.len() - backup_bytes..]);
        let before = fs::read(&path).unwrap();
        let error = format!("{:#}", read_gpt(&mut open_rw(&path), old_install).unwrap_err());
        assert!(error.contains(&format!("made for {new_image}")), "{error}");
        let repaired = repair_table(&mut open_rw(&path), old_install, Some(before.len() as u64));
        assert!(repaired.is_err(), "repaired from a stale backup: {repaired:?}");
        assert!(fs::read(&path).unwrap() == before, "the disk changed");
        assert!(read_gpt(&mut open_rw(&path), new_image).is_ok_and(|gpt| gpt.primary_intact), "the new image's own table");
    }
}

/// A disk with a volatile write cache that loses power after `budget` more bytes: the write
/// in flight is cut short (mid-sector if it falls there) and every later write fails. Until
/// `make_durable`, writes are only in the cache: the power cut may have let any subset of
/// them reach the medium, in any order.
struct PowerCut {
    /// What the medium holds for certain.
    durable: SparseDisk,
    /// What the writer sees: the medium with its cached writes.
    visible: SparseDisk,
    /// Writes since the last `make_durable`, with where they went.
    cached: Vec<(u64, Vec<u8>)>,
    budget: usize,
}

impl PowerCut {
    fn new(disk: &SparseDisk, budget: usize) -> PowerCut {
        PowerCut { durable: disk.clone(), visible: disk.clone(), cached: Vec::new(), budget }
    }

    /// Every state the medium can be in after the cut: the durable bytes with each subset
    /// of the cached writes applied.
    fn possible_media(&self) -> impl Iterator<Item = SparseDisk> + '_ {
        (0u32..1 << self.cached.len()).map(|subset| {
            let mut medium = self.durable.clone();
            for (index, (offset, bytes)) in self.cached.iter().enumerate() {
                if subset & (1 << index) != 0 {
                    medium.apply(*offset, bytes);
                }
            }
            medium.rewind().expect("a seek to the start");
            medium
        })
    }
}

impl Read for PowerCut {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.visible.read(buffer)
    }
}

impl Seek for PowerCut {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.visible.seek(to)
    }
}

impl Write for PowerCut {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::other("power cut"));
        }
        let n = bytes.len().min(self.budget);
        self.budget -= n;
        self.cached.push((self.visible.stream_position()?, bytes[..n].to_vec()));
        self.visible.write(&bytes[..n])
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DurableWrite for PowerCut {
    fn make_durable(&mut self) -> io::Result<()> {
        if self.budget == 0 {
            return Err(io::Error::other("power cut"));
        }
        self.durable = self.visible.clone();
        self.cached.clear();
        Ok(())
    }
}

/// Everything a table rewrite writes: the MBR's sector, two 16 KiB entry arrays and two
/// header sectors.
fn table_write_bytes(sector_size: SectorSize) -> usize {
    3 * sector_size.bytes() as usize + 2 * 16384
}

/// Where a power cut may fall: every half 512-byte sector of the writes.
const CUT_EVERY: usize = 256;

/// Cuts `step` at every half sector of its writes, with every subset of the writes not yet
/// made durable reaching the medium; after each cut the table must read, and running the
/// step again must give exactly the uninterrupted result. Returns how many media it tried.
fn survives_every_cut(
    name: &str,
    sector_size: SectorSize,
    disk: &SparseDisk,
    step: impl Fn(&mut dyn DurableWrite),
    uninterrupted: &SparseDisk,
) -> usize {
    let mut media = 0;
    for budget in (0..=table_write_bytes(sector_size)).step_by(CUT_EVERY) {
        let mut cut = PowerCut::new(disk, budget);
        step(&mut cut);
        for mut medium in cut.possible_media() {
            media += 1;
            let after_cut = read_gpt(&mut medium, sector_size);
            assert!(after_cut.is_ok(), "{name} ({sector_size}): no readable table after a cut at byte {budget}: {:?}", after_cut.err());
            // Power back: run again, uninterrupted.
            step(&mut medium);
            assert!(medium.holds_the_same_as(uninterrupted), "{name} ({sector_size}): a cut at byte {budget} led elsewhere");
        }
    }
    media
}

#[test]
fn a_power_cut_anywhere_in_first_boot_leaves_a_table_that_converges() {
    let mut outcomes = 0;
    for sector_size in SectorSize::ALL {
        let disk = SparseDisk::new(fs::read(grown_disk("cut-source", 32, sector_size)).unwrap());
        let mut reference = disk.clone();
        grow_root(&mut reference, sector_size).unwrap();
        outcomes += survives_every_cut(
            "grow",
            sector_size,
            &disk,
            |dev| {
                let _ = grow_root(&mut DynDisk(dev), sector_size);
            },
            &reference,
        );

        let default = Guid::parse(IMAGE_DEFAULT).unwrap();
        let mut reference = disk.clone();
        randomize_identity(&mut reference, sector_size, default, counter_guids()).unwrap();
        outcomes += survives_every_cut(
            "identity",
            sector_size,
            &disk,
            |dev| {
                let _ = randomize_identity(&mut DynDisk(dev), sector_size, default, counter_guids());
            },
            &reference,
        );
    }
    eprintln!("{outcomes} power-cut outcomes, each followed by a clean rerun");
}

/// A writer chosen at run time (a cut disk or a whole one), for the rewrites' generic API.
struct DynDisk<'a>(&'a mut dyn DurableWrite);

impl Read for DynDisk<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.0.read(buffer)
    }
}

impl Seek for DynDisk<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.0.seek(to)
    }
}

impl Write for DynDisk<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.write(bytes)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl DurableWrite for DynDisk<'_> {
    fn make_durable(&mut self) -> io::Result<()> {
        self.0.make_durable()
    }
}

/// The model must be able to fail: a rewrite that made nothing durable between its backup
/// and its primary (as keel's did before) can leave a torn primary and a stale backup.
#[test]
fn the_power_cut_model_catches_a_rewrite_without_ordering() {
    for sector_size in SectorSize::ALL {
        let disk = SparseDisk::new(fs::read(grown_disk("cut-model", 32, sector_size)).unwrap());
        let mut reference = disk.clone();
        grow_root(&mut reference, sector_size).unwrap();
        let mut found_a_bad_medium = false;
        for budget in (0..=table_write_bytes(sector_size)).step_by(CUT_EVERY) {
            let mut cut = PowerCut::new(&disk, budget);
            // The same bytes grow_root writes, in its order, but never made durable.
            for (offset, bytes) in table_writes(&mut reference, sector_size) {
                let _ = cut.seek(SeekFrom::Start(offset)).and_then(|_| cut.write_all(&bytes));
            }
            found_a_bad_medium |= cut.possible_media().any(|mut medium| read_gpt(&mut medium, sector_size).is_err());
        }
        assert!(found_a_bad_medium, "losing unordered writes never broke the table ({sector_size}): the model cannot tell");
    }
}

/// The MBR, backup array and header, primary array and header of the table on `disk`.
fn table_writes(disk: &mut SparseDisk, sector_size: SectorSize) -> Vec<(u64, Vec<u8>)> {
    let sector = sector_size.bytes();
    let last = disk.size() - sector;
    let array = 16384;
    [(0, sector), (last - array, array), (last, sector), (2 * sector, array), (sector, sector)]
        .into_iter()
        .map(|(offset, size)| {
            let mut bytes = vec![0u8; size as usize];
            disk.seek(SeekFrom::Start(offset)).and_then(|_| disk.read_exact(&mut bytes)).unwrap();
            (offset, bytes)
        })
        .collect()
}
