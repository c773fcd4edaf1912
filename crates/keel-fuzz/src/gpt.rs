//! `keel_disk::read_gpt` on a disk image, and every first-boot rewrite of that disk:
//! `grow_root`, `randomize_identity`, `set_format_pending`, `repair_table` and the gptprio
//! changes `set_slot_gptprio`, `prioritize_slot` and `mark_slot_successful`.
//!
//! An input is `PARAMS_LEN` bytes of parameters (the rewrites' arguments, and how the disk
//! is made), then the image. The image goes at the start of a disk that may be bigger, as
//! when an image is written to a real disk, or is split around zeros, so that a table
//! made for a disk of a MiB and more fits a small input. Each rewrite gets its own
//! copy-on-write view of the disk (`SparseDisk`), so that copying the disk and finding what
//! a rewrite changed costs the sectors it wrote, not the disk's size. Held to:
//! - a table that reads is well formed: partitions numbered in order, inside the usable
//!   area and apart;
//! - no rewrite writes past the disk's end (an image file would grow);
//! - a rewrite that fails has changed nothing: in memory no write inside the disk can fail,
//!   so a failure is a refusal, and keel refuses before it writes;
//! - a rewrite that succeeds leaves a table that reads with both copies intact and agreeing,
//!   the backup at the disk's end and the MBR protective; it wrote nothing but the MBR's
//!   partition record and the two copies (the MBR's boot code and every partition's data
//!   are kept), changed only what it is about, and a second run writes nothing.

use crate::Seed;
use keel_disk::{
    crc32, flatcar_layout, grow_root, mark_slot_successful, plan_layout, prioritize_slot, randomize_identity, read_gpt, read_usr_slots, repair_table,
    set_format_pending, set_slot_gptprio, slot_of, write_gpt, DurableWrite, Gpt, GptPartition, Gptprio, GptprioChange, Grown, Guid, LayoutSizes,
    SectorSize, Slot, TableWrite, ALIGNMENT_BYTES, GPTPRIO_MASK, IMAGE_DISK_GUID, ROOT_FORMAT_PENDING, ROOT_NAME,
};
use keel_test_support::SparseDisk;
use std::cell::RefCell;
use std::io::{Cursor, Read, Seek};
use std::ops::Range;
use std::rc::Rc;

/// The sector size the fuzzed disks are read and written with.
const SECTOR_SIZE: SectorSize = SectorSize::Bytes512;
const SECTOR: usize = SECTOR_SIZE.bytes() as usize;
const ALIGNMENT_SECTORS: u64 = ALIGNMENT_BYTES / SECTOR_SIZE.bytes();
/// What write_gpt writes at the disk's start: MBR, header and 32 sectors of entries
/// (128 of 128 bytes); the backup is the entries and the header in the last 33 sectors.
const PRIMARY_SECTORS: usize = 34;
const BACKUP_SECTORS: usize = 33;
/// The largest entry array keel reads; the checksum fix-up skips larger ones too.
const MAX_ENTRY_ARRAY_BYTES: u64 = 1 << 20;

// keel-disk's API is called from this block only (and `read_usr_slots` from `run`), so
// that a change of its signatures is one edit here.

fn read_table(disk: &mut (impl Read + Seek)) -> Result<Gpt, String> {
    read_gpt(disk, SECTOR_SIZE).map_err(|e| format!("{e:#}"))
}

fn write_table(disk: &mut impl DurableWrite, disk_guid: Guid, partitions: &[GptPartition]) {
    write_gpt(disk, SECTOR_SIZE, disk_guid, partitions).expect("write_gpt refused a seed's table");
}

fn image_disk_guid() -> Guid {
    Guid::parse(IMAGE_DISK_GUID).expect("IMAGE_DISK_GUID is a GUID")
}

#[derive(Clone, Copy, Debug)]
enum Rewrite {
    GrowRoot,
    RandomizeIdentity,
    SetFormatPending,
    RepairTable,
    SetSlotGptprio,
    PrioritizeSlot,
    MarkSlotSuccessful,
}

const REWRITES: [Rewrite; 7] = [
    Rewrite::GrowRoot,
    Rewrite::RandomizeIdentity,
    Rewrite::SetFormatPending,
    Rewrite::RepairTable,
    Rewrite::SetSlotGptprio,
    Rewrite::PrioritizeSlot,
    Rewrite::MarkSlotSuccessful,
];

/// What a rewrite returned.
#[derive(Debug)]
enum Outcome {
    Grown(Option<Grown>),
    Identity(Option<Guid>),
    FormatPendingSet,
    Repaired(bool),
    Gptprio(TableWrite),
}

impl Outcome {
    /// Whether the rewrite says it wrote nothing; `None` when its result does not tell
    /// (`randomize_identity` completes a half-written table and still returns `None`).
    fn says_nothing_written(&self) -> Option<bool> {
        match self {
            Outcome::Grown(grown) => Some(grown.is_none()),
            Outcome::Identity(_) | Outcome::FormatPendingSet => None,
            Outcome::Repaired(wrote) => Some(!wrote),
            Outcome::Gptprio(write) => Some(*write == TableWrite::AlreadyRight),
        }
    }
}

/// `on_disk`: the GUIDs of the disk and its partitions, for a GUID source that repeats them.
fn rewrite(which: Rewrite, params: &Params, disk: &mut impl DurableWrite, on_disk: &[Guid]) -> Result<Outcome, String> {
    let outcome = match which {
        Rewrite::GrowRoot => grow_root(disk, SECTOR_SIZE).map(Outcome::Grown),
        Rewrite::RandomizeIdentity => randomize_identity(disk, SECTOR_SIZE, image_disk_guid(), params.guid_source(on_disk)).map(Outcome::Identity),
        Rewrite::SetFormatPending => set_format_pending(disk, SECTOR_SIZE, params.number, params.pending).map(|()| Outcome::FormatPendingSet),
        Rewrite::RepairTable => repair_table(disk, SECTOR_SIZE, None).map(Outcome::Repaired),
        Rewrite::SetSlotGptprio => set_slot_gptprio(disk, SECTOR_SIZE, params.slot, &params.change).map(Outcome::Gptprio),
        Rewrite::PrioritizeSlot => prioritize_slot(disk, SECTOR_SIZE, params.slot, params.max).map(Outcome::Gptprio),
        Rewrite::MarkSlotSuccessful => mark_slot_successful(disk, SECTOR_SIZE, params.slot).map(Outcome::Gptprio),
    };
    outcome.map_err(|e| format!("{e:#}"))
}

// End of the keel-disk block.

/// How many bytes of an input are parameters; the rest is the disk image.
const PARAMS_LEN: usize = 25;
/// Each unit of `Params::disk_growth` inserts this many zero sectors: 255 units reach past
/// the 1 MiB boundary, so ROOT can grow to it.
const GROWTH_STEP_SECTORS: usize = 9;

const FIX_CHECKSUMS: u8 = 1 << 0;
const PENDING: u8 = 1 << 1;
const SLOT_B: u8 = 1 << 2;
const HAS_PRIORITY: u8 = 1 << 3;
const HAS_TRIES: u8 = 1 << 4;
const HAS_SUCCESSFUL: u8 = 1 << 5;
const SUCCESSFUL: u8 = 1 << 6;
const HAS_MAX: u8 = 1 << 7;

/// The rewrites' arguments and how the disk is made. Every byte value means something,
/// out-of-range priorities, tries and partition numbers included.
#[derive(Clone, Debug)]
struct Params {
    /// The disk is the image with `disk_growth * GROWTH_STEP_SECTORS` zero sectors inserted
    /// before its last `tail_sectors` (all of them when the image is shorter).
    disk_growth: u8,
    tail_sectors: u8,
    /// Recompute the checksums of the headers the disk seems to have (sector 1, the backup
    /// it names, the last sector), so that mutations reach the fields behind the checksums.
    fix_checksums: bool,
    /// `set_format_pending`'s arguments.
    number: u32,
    pending: bool,
    /// The gptprio rewrites' slot, `set_slot_gptprio`'s change and `prioritize_slot`'s max.
    slot: Slot,
    change: GptprioChange,
    max: Option<u8>,
    /// `randomize_identity`'s GUIDs: `guid_seed` with its last byte counting up, repeating
    /// after `guid_period` (1 to 4) GUIDs; but draw `i` (of the first 8) is a GUID already
    /// on the disk when bit `i` of `reused` is set, chosen by byte `i` of the seed. A source
    /// that repeats itself or the disk is what randomize_identity must see through.
    guid_seed: [u8; 16],
    guid_period: u8,
    reused: u8,
}

impl Params {
    /// Bytes 0 and 1 shape the disk, 2 holds the flags, 3 to 6 the numbers, 7 to 24 the
    /// GUID source.
    fn decode(bytes: &[u8; PARAMS_LEN]) -> Params {
        let flag = |bit: u8| bytes[2] & bit != 0;
        Params {
            disk_growth: bytes[0],
            tail_sectors: bytes[1],
            fix_checksums: flag(FIX_CHECKSUMS),
            pending: flag(PENDING),
            slot: if flag(SLOT_B) { Slot::B } else { Slot::A },
            number: u32::from(bytes[3]),
            change: GptprioChange {
                priority: flag(HAS_PRIORITY).then_some(bytes[4]),
                tries: flag(HAS_TRIES).then_some(bytes[5]),
                successful: flag(HAS_SUCCESSFUL).then_some(flag(SUCCESSFUL)),
            },
            max: flag(HAS_MAX).then_some(bytes[6]),
            guid_period: 1 + bytes[7] % 4,
            reused: bytes[8],
            guid_seed: bytes[9..].try_into().expect("16 bytes of GUID seed"),
        }
    }

    fn encode(&self) -> [u8; PARAMS_LEN] {
        let flag = |set: bool, bit: u8| if set { bit } else { 0 };
        let mut bytes = [0u8; PARAMS_LEN];
        bytes[0] = self.disk_growth;
        bytes[1] = self.tail_sectors;
        bytes[2] = flag(self.fix_checksums, FIX_CHECKSUMS)
            | flag(self.pending, PENDING)
            | flag(self.slot == Slot::B, SLOT_B)
            | flag(self.change.priority.is_some(), HAS_PRIORITY)
            | flag(self.change.tries.is_some(), HAS_TRIES)
            | flag(self.change.successful.is_some(), HAS_SUCCESSFUL)
            | flag(self.change.successful == Some(true), SUCCESSFUL)
            | flag(self.max.is_some(), HAS_MAX);
        bytes[3] = u8::try_from(self.number).expect("a seed's partition number fits a byte");
        bytes[4] = self.change.priority.unwrap_or(0);
        bytes[5] = self.change.tries.unwrap_or(0);
        bytes[6] = self.max.unwrap_or(0);
        bytes[7] = self.guid_period - 1;
        bytes[8] = self.reused;
        bytes[9..].copy_from_slice(&self.guid_seed);
        bytes
    }

    fn guid_source(&self, on_disk: &[Guid]) -> impl FnMut() -> Guid + use<> {
        let (seed, period, reused, on_disk) = (self.guid_seed, self.guid_period, self.reused, on_disk.to_vec());
        let mut drawn = 0usize;
        move || {
            let draw = drawn;
            drawn += 1;
            if draw < 8 && reused & 1 << draw != 0 && !on_disk.is_empty() {
                return on_disk[usize::from(seed[draw]) % on_disk.len()];
            }
            let mut bytes = seed;
            bytes[15] = bytes[15].wrapping_add((draw % usize::from(period)) as u8);
            Guid(bytes)
        }
    }
}

/// The memory each input's disk is made in, kept from one input to the next: allocating
/// a MiB afresh costs page faults, and zeroing it was most of what is left of an input's
/// time after the rewrites. It stays zero but where the last disk put bytes.
#[derive(Default)]
struct DiskMemory {
    bytes: Rc<Vec<u8>>,
    /// Where the last disk's bytes may be other than zero.
    dirty: Vec<Range<usize>>,
}

impl DiskMemory {
    /// The disk `params` and `image` make, as `assemble` makes it.
    fn disk(&mut self, params: &Params, image: &[u8]) -> SparseDisk {
        // The disks over it are gone by the end of each input.
        let bytes = Rc::get_mut(&mut self.bytes).expect("no disk of the last input is left");
        for range in self.dirty.drain(..) {
            bytes[range].fill(0);
        }
        let size = disk_size(params, image);
        if bytes.len() < size {
            bytes.resize(size, 0);
        }
        self.dirty = fill(params, image, &mut bytes[..size]);
        SparseDisk::over(Rc::clone(&self.bytes), size)
    }
}

thread_local! {
    static MEMORY: RefCell<DiskMemory> = RefCell::default();
}

pub fn run(input: &[u8]) {
    let Some((params, image)) = input.split_first_chunk::<PARAMS_LEN>() else { return };
    let params = Params::decode(params);
    MEMORY.with_borrow_mut(|memory| {
        let original = memory.disk(&params, image);
        let before = read_table(&mut original.clone());
        if let Ok(gpt) = &before {
            check_well_formed(gpt, original.size());
        }
        // Only for panics: what it reads is read_gpt's table, checked above.
        let _ = read_usr_slots(&mut original.clone(), SECTOR_SIZE);
        let before = before.ok();
        let on_disk = guids_on(before.as_ref());
        for which in REWRITES {
            check_rewrite(which, &params, &original, before.as_ref(), &on_disk);
        }
    });
}

/// Makes `disk` of `image` as `params` say: zeros inserted, checksums fixed.
fn assemble(params: &Params, image: &[u8], disk: &mut Vec<u8>) {
    disk.clear();
    disk.resize(disk_size(params, image), 0);
    fill(params, image, disk);
}

/// The image's head and tail, which `disk_growth` steps of zeros go between.
fn split<'a>(params: &Params, image: &'a [u8]) -> (&'a [u8], &'a [u8]) {
    image.split_at(image.len() - (usize::from(params.tail_sectors) * SECTOR).min(image.len()))
}

fn disk_size(params: &Params, image: &[u8]) -> usize {
    image.len() + usize::from(params.disk_growth) * GROWTH_STEP_SECTORS * SECTOR
}

/// Puts `image` on `disk`, zeros of `disk_size`, as `params` say; returns where it wrote.
fn fill(params: &Params, image: &[u8], disk: &mut [u8]) -> Vec<Range<usize>> {
    let (head, tail) = split(params, image);
    let tail_start = disk.len() - tail.len();
    disk[..head.len()].copy_from_slice(head);
    disk[tail_start..].copy_from_slice(tail);
    let mut written = vec![0..head.len(), tail_start..disk.len()];
    if params.fix_checksums {
        written.extend(fix_checksums(disk).into_iter().map(|lba| lba * SECTOR..(lba + 1) * SECTOR));
    }
    written
}

fn guids_on(gpt: Option<&Gpt>) -> Vec<Guid> {
    gpt.map_or_else(Vec::new, |gpt| gpt.partitions.iter().map(|p| p.guid).chain([gpt.disk_guid]).collect())
}

fn check_well_formed(gpt: &Gpt, disk_bytes: u64) {
    let sectors = disk_bytes / SECTOR_SIZE.bytes();
    assert!(gpt.primary_intact || gpt.backup_intact, "a table read from neither copy: {gpt:?}");
    assert!(!gpt.copies_agree || (gpt.primary_intact && gpt.backup_intact), "copies agree, but one is damaged: {gpt:?}");
    assert!(
        gpt.first_usable <= gpt.last_usable && gpt.last_usable < sectors,
        "usable {}..={} on {sectors} sectors",
        gpt.first_usable,
        gpt.last_usable
    );
    assert!(gpt.partitions.first().is_none_or(|p| p.number >= 1), "a partition numbered 0");
    assert!(gpt.partitions.windows(2).all(|pair| pair[0].number < pair[1].number), "partitions out of number order: {:?}", gpt.partitions);
    let mut by_start: Vec<&GptPartition> = gpt.partitions.iter().collect();
    by_start.sort_by_key(|p| p.first_lba);
    for p in &by_start {
        assert!(
            gpt.first_usable <= p.first_lba && p.first_lba <= p.last_lba && p.last_lba <= gpt.last_usable,
            "partition {} spans {}..={}, outside the usable {}..={}",
            p.number,
            p.first_lba,
            p.last_lba,
            gpt.first_usable,
            gpt.last_usable
        );
    }
    for pair in by_start.windows(2) {
        assert!(pair[0].last_lba < pair[1].first_lba, "partitions {} and {} overlap", pair[0].number, pair[1].number);
    }
}

/// `original`: the disk as the input made it, which each rewrite gets a copy of. The
/// disk a rewrite leaves is the same bytes as `original` but where its `changes()` say.
fn check_rewrite(which: Rewrite, params: &Params, original: &SparseDisk, before: Option<&Gpt>, on_disk: &[Guid]) {
    let mut disk = original.clone();
    let result = rewrite(which, params, &mut disk, on_disk);
    // A disk refuses a write past its end, and the refusal may look like any failure; an
    // image file would have grown.
    assert!(!disk.wrote_past_end(), "{which:?} ({result:?}) wrote past the disk's end: it would have changed the disk's size");
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            assert!(disk.is_unchanged(), "{which:?} failed ({error}), but changed the disk first");
            return;
        }
    };
    let before = before.unwrap_or_else(|| panic!("{which:?} succeeded ({outcome:?}) on a disk whose table does not read"));
    if outcome.says_nothing_written() == Some(true) {
        assert!(disk.is_unchanged(), "{which:?} says it wrote nothing ({outcome:?}), but the disk changed");
    }
    check_only_the_table_written(which, &disk);
    // Read through the copy-on-write disk: what the rewrite wrote over the original.
    let after = read_table(&mut disk).unwrap_or_else(|error| panic!("after {which:?} ({outcome:?}) the table does not read: {error}"));
    let sectors = disk.size() / SECTOR_SIZE.bytes();
    assert!(
        after.primary_intact
            && after.backup_intact
            && after.copies_agree
            && after.protective_mbr_current
            && after.last_usable == sectors - PRIMARY_SECTORS as u64,
        "after {which:?} ({outcome:?}) the table is not whole, with its backup at the disk's end: {after:?}"
    );
    check_well_formed(&after, disk.size());
    // The primary names the last sector as its backup: a primary naming itself, with no
    // backup at all, once passed for a whole table (regressions/gpt/primary-names-itself-as-backup).
    let alternate_lba = u64_at(disk.sector(1), 32);
    assert!(alternate_lba == sectors - 1, "after {which:?} ({outcome:?}) the primary names sector {alternate_lba} as its backup, not the last");
    let numbers = |gpt: &Gpt| gpt.partitions.iter().map(|p| p.number).collect::<Vec<_>>();
    assert_eq!(numbers(before), numbers(&after), "{which:?} added, removed or renumbered partitions");
    check_effect(which, params, before, &after, &outcome);

    // The rerun starts, like the first run, at the disk's start.
    let mut again = disk.clone();
    again.rewind().expect("a seek to the start");
    let second = rewrite(which, params, &mut again, on_disk);
    assert!(!again.wrote_past_end(), "{which:?}, run again on its own result, wrote past the disk's end ({second:?})");
    let second = second.unwrap_or_else(|error| panic!("{which:?} succeeded, then failed on its own result: {error}"));
    assert!(second.says_nothing_written() != Some(false), "{which:?}, run again on its own result, says it wrote ({second:?})");
    assert!(again.holds_the_same_as(&disk), "{which:?}, run again on its own result, changed the disk ({second:?})");
}

/// write_gpt writes sector 0 (keeping its boot code and disk signature), sectors 1 to 33
/// and the last 33; any other byte it changed is a partition's data. Only the sectors that
/// differ from the original are looked at (in order, so the first change found is the
/// disk's first); the disk's size cannot change (`SparseDisk::wrote_past_end`).
fn check_only_the_table_written(which: Rewrite, disk: &SparseDisk) {
    const BOOT_CODE: usize = 446;
    let original = disk.base();
    let sectors = original.len() / SECTOR;
    let between_tables = PRIMARY_SECTORS..sectors.saturating_sub(BACKUP_SECTORS);
    for (number, written) in disk.changes() {
        let at = number as usize * SECTOR;
        let original = &original[at..at + written.len()];
        if number == 0 {
            let boot_code = ..BOOT_CODE.min(written.len());
            assert!(original[boot_code] == written[boot_code], "{which:?} changed the MBR's boot code");
        }
        if between_tables.contains(&(number as usize)) {
            let first_changed = (0..written.len()).find(|&i| original[i] != written[i]).map(|i| at + i);
            panic!("{which:?} changed byte {first_changed:?}, between the two copies of the table");
        }
        assert!((number as usize) < sectors, "{which:?} wrote into the partial sector at the disk's end");
    }
}

fn pairs<'a>(before: &'a Gpt, after: &'a Gpt) -> impl Iterator<Item = (&'a GptPartition, &'a GptPartition)> {
    before.partitions.iter().zip(&after.partitions)
}

fn check_effect(which: Rewrite, params: &Params, before: &Gpt, after: &Gpt, outcome: &Outcome) {
    match outcome {
        Outcome::Grown(grown) => check_grown(before, after, *grown),
        Outcome::Identity(new_disk_guid) => check_identity(before, after, *new_disk_guid),
        Outcome::FormatPendingSet => {
            assert!(before.partition(params.number).is_some(), "set_format_pending succeeded on missing partition {}", params.number);
            assert_eq!(after.disk_guid, before.disk_guid, "set_format_pending changed the disk GUID");
            for (old, new) in pairs(before, after) {
                let attributes = match (old.number == params.number, params.pending) {
                    (false, _) => old.attributes,
                    (true, true) => old.attributes | ROOT_FORMAT_PENDING,
                    (true, false) => old.attributes & !ROOT_FORMAT_PENDING,
                };
                assert_eq!(new, &GptPartition { attributes, ..old.clone() }, "set_format_pending({}, {})", params.number, params.pending);
            }
        }
        Outcome::Repaired(_) => {
            assert_eq!((after.disk_guid, &after.partitions), (before.disk_guid, &before.partitions), "repair_table changed the table");
        }
        Outcome::Gptprio(_) => check_gptprio(which, params, before, after),
    }
}

fn check_grown(before: &Gpt, after: &Gpt, grown: Option<Grown>) {
    let old_root = before.by_name(ROOT_NAME).expect("grow_root succeeded with two ROOTs").expect("grow_root succeeded on a disk without ROOT");
    // ROOT ends at the last whole MiB of the disk, unless it already reached further or
    // the disk has no whole MiB.
    let last_mib_end = ((after.last_usable + 1) / ALIGNMENT_SECTORS * ALIGNMENT_SECTORS).checked_sub(1);
    let last_lba = last_mib_end.map_or(old_root.last_lba, |end| end.max(old_root.last_lba));
    for (old, new) in pairs(before, after) {
        let expected = if old.number == old_root.number { GptPartition { last_lba, ..old.clone() } } else { old.clone() };
        assert_eq!(new, &expected, "grow_root on partition {}", old.number);
    }
    assert_eq!(after.disk_guid, before.disk_guid, "grow_root changed the disk GUID");
    let sectors = |p: &GptPartition| p.last_lba + 1 - p.first_lba;
    if let Some(grown) = grown {
        let new_root = after.partition(old_root.number).expect("ROOT is still there");
        assert_eq!(grown, Grown { old_sectors: sectors(old_root), new_sectors: sectors(new_root) }, "grow_root's report");
    }
}

fn check_identity(before: &Gpt, after: &Gpt, new_disk_guid: Option<Guid>) {
    if before.disk_guid != image_disk_guid() {
        assert_eq!(new_disk_guid, None, "randomize_identity renamed a disk that already had its own GUID");
        assert_eq!((after.disk_guid, &after.partitions), (before.disk_guid, &before.partitions), "randomize_identity on a disk with its own GUID");
        return;
    }
    let disk_guid = new_disk_guid.expect("the disk had the image's GUID, and randomize_identity gave it none");
    assert_eq!(after.disk_guid, disk_guid, "randomize_identity's report");
    let old_guids: Vec<Guid> = before.partitions.iter().map(|p| p.guid).chain([before.disk_guid, Guid::ZERO]).collect();
    assert!(!old_guids.contains(&disk_guid), "the new disk GUID {disk_guid} was already on the disk, or zero");
    for (old, new) in pairs(before, after) {
        if old.name == ROOT_NAME {
            assert_eq!(new, &GptPartition { guid: new.guid, ..old.clone() }, "randomize_identity changed more than ROOT's GUID");
            assert!(!old_guids.contains(&new.guid) && new.guid != disk_guid, "ROOT's new GUID {} was already on the disk, or zero", new.guid);
        } else {
            assert_eq!(new, old, "randomize_identity changed partition {}, which is not ROOT", old.number);
        }
    }
    let distinct = |gpt: &Gpt| {
        let mut guids: Vec<Guid> = gpt.partitions.iter().map(|p| p.guid).collect();
        guids.sort_unstable();
        guids.windows(2).all(|pair| pair[0] != pair[1])
    };
    // Two partitions named ROOT once got one new GUID between them
    // (regressions/gpt/two-partitions-named-root); now the rewrite refuses such a disk.
    assert!(!distinct(before) || distinct(after), "randomize_identity gave two partitions the same GUID: {:?}", after.partitions);
}

fn check_gptprio(which: Rewrite, params: &Params, before: &Gpt, after: &Gpt) {
    assert_eq!(after.disk_guid, before.disk_guid, "{which:?} changed the disk GUID");
    for (old, new) in pairs(before, after) {
        let kept = GptPartition { attributes: old.attributes & !GPTPRIO_MASK | new.attributes & GPTPRIO_MASK, ..old.clone() };
        assert_eq!(new, &kept, "{which:?} changed more than the gptprio bits of partition {}", old.number);
        assert!(slot_of(old).is_some() || new == old, "{which:?} changed partition {}, which is no /usr slot", old.number);
    }
    // The rewrite succeeded, so the slot it is about is one partition (the other slot too,
    // for the two that prioritize).
    let state = |gpt: &Gpt, slot: Slot| gpt.partitions.iter().find(|p| slot_of(p) == Some(slot)).map(|p| Gptprio::from_attributes(p.attributes));
    let chosen = (state(before, params.slot).expect("the slot was there"), state(after, params.slot).expect("the slot is still there"));
    let other = (state(before, params.slot.other()), state(after, params.slot.other()));
    let fields_but_priority = |g: Gptprio| (g.tries(), g.successful());
    match which {
        Rewrite::SetSlotGptprio => {
            let expected = params.change.apply(chosen.0).expect("set_slot_gptprio succeeded, so its change is in range");
            assert_eq!(chosen.1, expected, "set_slot_gptprio({:?}, {:?})", params.slot, params.change);
            assert_eq!(other.1, other.0, "set_slot_gptprio changed the other slot");
        }
        Rewrite::PrioritizeSlot | Rewrite::MarkSlotSuccessful => {
            let (Some(other_before), Some(other_after)) = other else { panic!("{which:?} succeeded without the other slot") };
            assert_eq!(fields_but_priority(other_after), fields_but_priority(other_before), "{which:?} changed the other slot's tries or successful");
            let (max, expected_fields) = match which {
                Rewrite::PrioritizeSlot => (params.max, fields_but_priority(chosen.0)),
                _ => (None, (0, true)),
            };
            assert_eq!(fields_but_priority(chosen.1), expected_fields, "{which:?}: the slot's tries and successful");
            check_prioritized(which, chosen.1.priority(), other_before.priority(), other_after.priority(), max);
        }
        _ => unreachable!("{which:?} is no gptprio rewrite"),
    }
}

/// cgpt's prioritize over the two slots: the chosen one on top (`max`, when given), the
/// other below it, except that a `max` of 1 leaves no room below and a slot at
/// priority 0 stays there.
fn check_prioritized(which: Rewrite, chosen: u8, other_before: u8, other_after: u8, max: Option<u8>) {
    assert!(chosen >= 1, "{which:?} left the slot at priority 0");
    if let Some(max) = max {
        assert_eq!(chosen, max, "{which:?}: the slot's priority is not the max");
    }
    if max == Some(1) {
        assert!(chosen >= other_after, "{which:?}: the other slot is above the chosen one");
    } else {
        assert!(chosen > other_after, "{which:?}: the chosen slot ({chosen}) is not above the other ({other_after})");
    }
    assert_eq!(other_after == 0, other_before == 0, "{which:?} moved the other slot to or from priority 0");
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Makes the headers the disk seems to have pass their checksums: the backup named by
/// sector 1, the last sector, and sector 1 itself (last, so the primary's checksums cover
/// whatever fixing the others changed). Returns the sectors it wrote to.
fn fix_checksums(disk: &mut [u8]) -> Vec<usize> {
    let sectors = disk.len() / SECTOR;
    if sectors < 2 {
        return Vec::new();
    }
    let named_backup = usize::try_from(u64_at(disk, SECTOR + 32)).ok().filter(|&lba| lba < sectors);
    let fixed: Vec<usize> = named_backup.into_iter().chain([sectors - 1, 1]).collect();
    for &lba in &fixed {
        fix_header(disk, lba);
    }
    fixed
}

fn fix_header(disk: &mut [u8], lba: usize) {
    let at = lba * SECTOR;
    let header = &disk[at..at + SECTOR];
    let array_bytes = u64::from(u32_at(header, 80)) * u64::from(u32_at(header, 84));
    let array_start = u64_at(header, 72).checked_mul(SECTOR_SIZE.bytes()).and_then(|start| usize::try_from(start).ok());
    if let Some(start) = array_start
        && array_bytes <= MAX_ENTRY_ARRAY_BYTES
        && start.saturating_add(array_bytes as usize) <= disk.len()
    {
        let crc = crc32(&disk[start..start + array_bytes as usize]);
        disk[at + 88..at + 92].copy_from_slice(&crc.to_le_bytes());
    }
    let header_size = (u32_at(disk, at + 12) as usize).clamp(92, SECTOR);
    disk[at + 16..at + 20].fill(0);
    let crc = crc32(&disk[at..at + header_size]);
    disk[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
}

/// Flatcar's partitions as keel's image builder lays them out (flatcar_layout and
/// plan_layout give the numbers, names, types, GUIDs and USR-A's gptprio bits), but of 2
/// sectors each instead of MiBs, so that a seed holding them is 40 KiB.
fn flatcar_partitions() -> Vec<GptPartition> {
    const MIB: u64 = 1 << 20;
    let sizes = LayoutSizes { esp: MIB, bios_boot: MIB, usr: MIB, oem: MIB, oem_config: MIB, root: MIB };
    let specs = flatcar_layout(&sizes).expect("Flatcar's layout");
    let layout = plan_layout(&specs, SECTOR_SIZE, |spec| Guid::from_random_bytes([spec.number as u8; 16])).expect("Flatcar's layout placed");
    let mut next = PRIMARY_SECTORS as u64;
    layout
        .partitions
        .into_iter()
        .map(|p| {
            let first_lba = next;
            next += 2;
            GptPartition { first_lba, last_lba: first_lba + 1, ..p }
        })
        .collect()
}

/// A disk of `sectors` zero sectors but for Flatcar's table, on the image's disk GUID.
fn flatcar_disk(sectors: usize) -> Cursor<Vec<u8>> {
    let mut disk = Cursor::new(vec![0u8; sectors * SECTOR]);
    write_table(&mut disk, image_disk_guid(), &flatcar_partitions());
    disk
}

/// Re-lays both entry arrays of `disk` (as write_gpt writes them) as `count` entries of
/// `size` bytes, the backup's array just before its header, keeping the first entries.
fn relay_entries(disk: &mut [u8], count: usize, size: usize) {
    let last = disk.len() / SECTOR - 1;
    let array_sectors = (count * size).div_ceil(SECTOR);
    for (header_lba, new_array_lba) in [(1, 2), (last, last - array_sectors)] {
        let header = header_lba * SECTOR;
        let old_array = u64_at(disk, header + 72) as usize * SECTOR;
        let old: Vec<u8> = disk[old_array..old_array + 128 * 128].to_vec();
        disk[old_array..old_array + 128 * 128].fill(0);
        let new_array = new_array_lba * SECTOR;
        for (index, entry) in old.chunks_exact(128).take(count).enumerate() {
            disk[new_array + index * size..][..128].copy_from_slice(entry);
        }
        disk[header + 72..header + 80].copy_from_slice(&(new_array_lba as u64).to_le_bytes());
        disk[header + 80..header + 84].copy_from_slice(&(count as u32).to_le_bytes());
        disk[header + 84..header + 88].copy_from_slice(&(size as u32).to_le_bytes());
    }
    fix_checksums(disk);
}

/// Entries in a compact seed's arrays: Flatcar numbers its partitions up to 9.
const COMPACT_ENTRIES: usize = 16;
/// Sector 0, the primary header and its 4 sectors of entries; the backup's entries and header.
const COMPACT_HEAD_SECTORS: usize = 2 + COMPACT_ENTRIES * 128 / SECTOR;
const COMPACT_TAIL_SECTORS: usize = COMPACT_HEAD_SECTORS - 1;

/// The size of a disk that a compact seed holds with `steps` of `disk_growth`.
fn compact_disk_sectors(steps: u8) -> usize {
    COMPACT_HEAD_SECTORS + usize::from(steps) * GROWTH_STEP_SECTORS + COMPACT_TAIL_SECTORS
}

/// `disk` (a table as write_gpt writes it, on a disk of `compact_disk_sectors`) as an
/// input of 5.5 KiB: arrays of 16 entries, and only the head (MBR, primary) and the tail
/// (backup) of the disk, with `params` set to put the zeros between them back. Mutations
/// then fall on the table, not on 35 KiB of empty entries and partition data.
fn compact(params: &Params, mut disk: Vec<u8>) -> Vec<u8> {
    relay_entries(&mut disk, COMPACT_ENTRIES, 128);
    let zero_sectors = disk.len() / SECTOR - COMPACT_HEAD_SECTORS - COMPACT_TAIL_SECTORS;
    assert_eq!(zero_sectors % GROWTH_STEP_SECTORS, 0, "a compact seed's disk must grow by whole steps");
    let (head, rest) = disk.split_at(COMPACT_HEAD_SECTORS * SECTOR);
    let (zeros, tail) = rest.split_at(zero_sectors * SECTOR);
    assert!(zeros.iter().all(|&b| b == 0), "a compact seed's disk has data outside its table");
    let disk_growth = u8::try_from(zero_sectors / GROWTH_STEP_SECTORS).expect("a compact seed's disk grows by at most 255 steps");
    let params = Params { disk_growth, tail_sectors: COMPACT_TAIL_SECTORS as u8, ..params.clone() };
    let image = [head, tail].concat();
    let mut assembled = Vec::new();
    assemble(&params, &image, &mut assembled);
    assert!(assembled == disk, "a compact seed does not give back its disk");
    [&params.encode()[..], &image].concat()
}

pub fn seeds() -> Vec<Seed> {
    let first_boot = Params {
        disk_growth: 0,
        tail_sectors: 0,
        fix_checksums: false,
        number: 9,
        pending: true,
        slot: Slot::B,
        change: GptprioChange { priority: Some(2), tries: Some(1), successful: Some(false) },
        max: None,
        guid_seed: [0x5a; 16],
        guid_period: 2,
        // The first draw repeats a GUID on the disk, which randomize_identity must skip.
        reused: 1,
    };
    let update = Params { fix_checksums: true, pending: false, slot: Slot::A, max: Some(2), ..first_boot.clone() };
    // As the image is written: MBR, primary, partitions, backup, and not a sector more.
    let flatcar = flatcar_disk(PRIMARY_SECTORS + 2 * flatcar_partitions().len() + BACKUP_SECTORS).into_inner();
    let as_written = |params: &Params, image: &[u8]| [&params.encode()[..], image].concat();
    // Compact disks: one just big enough for the partitions (83 sectors), one past 1 MiB.
    let (small, big) = (compact_disk_sectors(8), compact_disk_sectors(u8::MAX));
    let mut primary_damaged = compact(&first_boot, flatcar_disk(small).into_inner());
    primary_damaged[PARAMS_LEN + SECTOR..][..SECTOR].fill(0);
    let mut grown = flatcar_disk(big);
    let grew = rewrite(Rewrite::GrowRoot, &update, &mut grown, &[]).expect("ROOT grows on a bigger disk");
    assert!(matches!(grew, Outcome::Grown(Some(_))), "ROOT did not grow: {grew:?}");
    // After a first boot and an update: own GUIDs, ROOT's format under way, USR-B to be tried.
    let mut booted = flatcar_disk(big);
    let on_disk = guids_on(read_table(&mut booted).ok().as_ref());
    for which in [Rewrite::GrowRoot, Rewrite::RandomizeIdentity, Rewrite::SetFormatPending, Rewrite::SetSlotGptprio] {
        rewrite(which, &first_boot, &mut booted, &on_disk).expect("first boot's rewrites on Flatcar's table");
    }
    let mut entries_of_256_bytes = flatcar.clone();
    relay_entries(&mut entries_of_256_bytes, 64, 256);
    vec![
        Seed { name: "flatcar", bytes: as_written(&first_boot, &flatcar) },
        Seed { name: "flatcar-on-a-bigger-disk", bytes: as_written(&Params { disk_growth: u8::MAX, ..update.clone() }, &flatcar) },
        // Legal, and what the gpt crate panics on.
        Seed { name: "flatcar-256-byte-entries", bytes: as_written(&first_boot, &entries_of_256_bytes) },
        Seed { name: "compact-flatcar", bytes: compact(&first_boot, flatcar_disk(small).into_inner()) },
        Seed { name: "compact-primary-damaged", bytes: primary_damaged },
        Seed { name: "compact-root-grown", bytes: compact(&update, grown.into_inner()) },
        Seed { name: "compact-after-first-boot-and-update", bytes: compact(&update, booted.into_inner()) },
    ]
}
