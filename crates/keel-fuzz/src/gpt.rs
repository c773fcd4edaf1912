//! `keel_disk::read_gpt` on a disk image, and every first-boot rewrite of that disk:
//! `grow_root`, `randomize_identity`, `set_format_pending`, `repair_table` and the gptprio
//! changes `set_slot_gptprio`, `prioritize_slot` and `mark_slot_successful`.
//!
//! An input is `PARAMS_LEN` bytes of parameters (the rewrites' arguments, and how the disk
//! is made), then the image. The image goes at the start of a disk that may be bigger, as
//! when an image is written to a real disk, and each rewrite gets its own copy of that
//! disk. Held to:
//! - a table that reads is well formed: partitions numbered in order, inside the usable
//!   area and apart;
//! - a rewrite that fails has changed nothing: in memory no write can fail, so a failure is
//!   a refusal, and keel refuses before it writes;
//! - a rewrite that succeeds leaves a table that reads with both copies intact and agreeing,
//!   the backup at the disk's end and the MBR protective; it wrote nothing but the MBR's
//!   partition record and the two copies (the MBR's boot code and every partition's data
//!   are kept), changed only what it is about, and a second run writes nothing.

use crate::Seed;
use keel_disk::{
    flatcar_layout, grow_root, mark_slot_successful, plan_layout, prioritize_slot, randomize_identity, read_gpt, read_usr_slots, repair_table,
    set_format_pending, set_slot_gptprio, slot_of, write_gpt, Gpt, GptPartition, Gptprio, GptprioChange, Grown, Guid, LayoutSizes, Slot, TableWrite,
    ALIGNMENT_SECTORS, GPTPRIO_MASK, IMAGE_DISK_GUID, ROOT_FORMAT_PENDING, ROOT_NAME, SECTOR_SIZE,
};
use std::cell::RefCell;
use std::io::Cursor;

const SECTOR: usize = SECTOR_SIZE as usize;
/// What write_gpt writes at the disk's start: MBR, header and 32 sectors of entries
/// (128 of 128 bytes); the backup is the entries and the header in the last 33 sectors.
const PRIMARY_SECTORS: usize = 34;
const BACKUP_SECTORS: usize = 33;
/// The largest entry array keel reads; the checksum fix-up skips larger ones too.
const MAX_ENTRY_ARRAY_BYTES: u64 = 1 << 20;

/// The in-memory disk the rewrites work on.
type Disk = Cursor<Vec<u8>>;

// keel-disk's API is called from this block only (and `read_usr_slots` from `run`), so
// that a change of its signatures is one edit here.

fn read_table(disk: &[u8]) -> Result<Gpt, String> {
    read_gpt(&mut Cursor::new(disk)).map_err(|e| format!("{e:#}"))
}

fn write_table(disk: &mut Disk, disk_guid: Guid, partitions: &[GptPartition]) {
    write_gpt(disk, disk_guid, partitions).expect("write_gpt refused a seed's table");
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

fn rewrite(which: Rewrite, params: &Params, disk: &mut Disk) -> Result<Outcome, String> {
    let outcome = match which {
        Rewrite::GrowRoot => grow_root(disk).map(Outcome::Grown),
        Rewrite::RandomizeIdentity => randomize_identity(disk, image_disk_guid(), params.guid_source()).map(Outcome::Identity),
        Rewrite::SetFormatPending => set_format_pending(disk, params.number, params.pending).map(|()| Outcome::FormatPendingSet),
        Rewrite::RepairTable => repair_table(disk, None).map(Outcome::Repaired),
        Rewrite::SetSlotGptprio => set_slot_gptprio(disk, params.slot, &params.change).map(Outcome::Gptprio),
        Rewrite::PrioritizeSlot => prioritize_slot(disk, params.slot, params.max).map(Outcome::Gptprio),
        Rewrite::MarkSlotSuccessful => mark_slot_successful(disk, params.slot).map(Outcome::Gptprio),
    };
    outcome.map_err(|e| format!("{e:#}"))
}

// End of the keel-disk block.

/// How many bytes of an input are parameters; the rest is the disk image.
const PARAMS_LEN: usize = 23;
/// Each unit of `Params::disk_growth` adds this many sectors after the image: 255 units
/// reach past the 1 MiB boundary, so ROOT can grow to it. No further: every byte of the
/// disk is copied and compared several times per input.
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
    /// The disk is the image and then `disk_growth * GROWTH_STEP_SECTORS` zero sectors.
    disk_growth: u8,
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
    /// after `guid_period` (1 to 4) GUIDs, so that a source that repeats itself is tried too.
    guid_seed: [u8; 16],
    guid_period: u8,
}

impl Params {
    fn decode(bytes: &[u8; PARAMS_LEN]) -> Params {
        let flags = bytes[1];
        let flag = |bit: u8| flags & bit != 0;
        Params {
            disk_growth: bytes[0],
            fix_checksums: flag(FIX_CHECKSUMS),
            pending: flag(PENDING),
            slot: if flag(SLOT_B) { Slot::B } else { Slot::A },
            number: u32::from(bytes[2]),
            change: GptprioChange {
                priority: flag(HAS_PRIORITY).then_some(bytes[3]),
                tries: flag(HAS_TRIES).then_some(bytes[4]),
                successful: flag(HAS_SUCCESSFUL).then_some(flag(SUCCESSFUL)),
            },
            max: flag(HAS_MAX).then_some(bytes[5]),
            guid_period: 1 + bytes[6] % 4,
            guid_seed: bytes[7..].try_into().expect("16 bytes of GUID seed"),
        }
    }

    fn encode(&self) -> [u8; PARAMS_LEN] {
        let flag = |set: bool, bit: u8| if set { bit } else { 0 };
        let mut bytes = [0u8; PARAMS_LEN];
        bytes[0] = self.disk_growth;
        bytes[1] = flag(self.fix_checksums, FIX_CHECKSUMS)
            | flag(self.pending, PENDING)
            | flag(self.slot == Slot::B, SLOT_B)
            | flag(self.change.priority.is_some(), HAS_PRIORITY)
            | flag(self.change.tries.is_some(), HAS_TRIES)
            | flag(self.change.successful.is_some(), HAS_SUCCESSFUL)
            | flag(self.change.successful == Some(true), SUCCESSFUL)
            | flag(self.max.is_some(), HAS_MAX);
        bytes[2] = u8::try_from(self.number).expect("a seed's partition number fits a byte");
        bytes[3] = self.change.priority.unwrap_or(0);
        bytes[4] = self.change.tries.unwrap_or(0);
        bytes[5] = self.max.unwrap_or(0);
        bytes[6] = self.guid_period - 1;
        bytes[7..].copy_from_slice(&self.guid_seed);
        bytes
    }

    fn guid_source(&self) -> impl FnMut() -> Guid + use<> {
        let (seed, period) = (self.guid_seed, self.guid_period);
        let mut drawn = 0u8;
        move || {
            let mut bytes = seed;
            bytes[15] = bytes[15].wrapping_add(drawn % period);
            drawn = drawn.wrapping_add(1);
            Guid(bytes)
        }
    }
}

/// The disk and the copies the rewrites work on, kept from one input to the next:
/// allocating them afresh costs more (in page faults) than the rewrites themselves.
#[derive(Default)]
struct Buffers {
    disk: Vec<u8>,
    rewritten: Vec<u8>,
    rerun: Vec<u8>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::default();
}

/// A disk holding `bytes`, in `buffer`'s memory; `into_inner` gives the memory back.
fn disk_from(buffer: &mut Vec<u8>, bytes: &[u8]) -> Disk {
    let mut memory = std::mem::take(buffer);
    memory.clear();
    memory.extend_from_slice(bytes);
    Cursor::new(memory)
}

pub fn run(input: &[u8]) {
    let Some((params, image)) = input.split_first_chunk::<PARAMS_LEN>() else { return };
    let params = Params::decode(params);
    BUFFERS.with_borrow_mut(|buffers| {
        let disk = &mut buffers.disk;
        disk.clear();
        disk.extend_from_slice(image);
        disk.resize(image.len() + usize::from(params.disk_growth) * GROWTH_STEP_SECTORS * SECTOR, 0);
        if params.fix_checksums {
            fix_checksums(disk);
        }
        let before = read_table(disk);
        if let Ok(gpt) = &before {
            check_well_formed(gpt, disk.len());
        }
        // Only for panics: what it reads is read_gpt's table, checked above.
        let _ = read_usr_slots(&mut Cursor::new(&disk[..]));
        for which in REWRITES {
            check_rewrite(which, &params, &buffers.disk, before.as_ref().ok(), &mut buffers.rewritten, &mut buffers.rerun);
        }
    });
}

fn check_well_formed(gpt: &Gpt, disk_bytes: usize) {
    let sectors = (disk_bytes / SECTOR) as u64;
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

fn check_rewrite(which: Rewrite, params: &Params, original: &[u8], before: Option<&Gpt>, rewritten: &mut Vec<u8>, rerun: &mut Vec<u8>) {
    let mut disk = disk_from(rewritten, original);
    let result = rewrite(which, params, &mut disk);
    *rewritten = disk.into_inner();
    let written = &rewritten[..];
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            assert!(written == original, "{which:?} failed ({error}), but changed the disk first");
            return;
        }
    };
    let before = before.unwrap_or_else(|| panic!("{which:?} succeeded ({outcome:?}) on a disk whose table does not read"));
    if outcome.says_nothing_written() == Some(true) {
        assert!(written == original, "{which:?} says it wrote nothing ({outcome:?}), but the disk changed");
    }
    check_only_the_table_written(which, original, written);
    let after = read_table(written).unwrap_or_else(|error| panic!("after {which:?} ({outcome:?}) the table does not read: {error}"));
    let sectors = (written.len() / SECTOR) as u64;
    assert!(
        after.primary_intact
            && after.backup_intact
            && after.copies_agree
            && after.protective_mbr_current
            && after.last_usable == sectors - PRIMARY_SECTORS as u64,
        "after {which:?} ({outcome:?}) the table is not whole, with its backup at the disk's end: {after:?}"
    );
    check_well_formed(&after, written.len());
    let numbers = |gpt: &Gpt| gpt.partitions.iter().map(|p| p.number).collect::<Vec<_>>();
    assert_eq!(numbers(before), numbers(&after), "{which:?} added, removed or renumbered partitions");
    check_effect(which, params, before, &after, &outcome);

    let mut again = disk_from(rerun, written);
    let second = rewrite(which, params, &mut again);
    *rerun = again.into_inner();
    let second = second.unwrap_or_else(|error| panic!("{which:?} succeeded, then failed on its own result: {error}"));
    assert!(second.says_nothing_written() != Some(false), "{which:?}, run again on its own result, says it wrote ({second:?})");
    assert!(rerun.as_slice() == written, "{which:?}, run again on its own result, changed the disk ({second:?})");
}

/// write_gpt writes sector 0 (keeping its boot code and disk signature), sectors 1 to 33
/// and the last 33; any other byte it changed is a partition's data.
fn check_only_the_table_written(which: Rewrite, original: &[u8], written: &[u8]) {
    const BOOT_CODE: usize = 446;
    assert_eq!(original.len(), written.len(), "{which:?} changed the disk's size");
    let sectors = original.len() / SECTOR;
    let boot_code = ..BOOT_CODE.min(original.len());
    assert!(original[boot_code] == written[boot_code], "{which:?} changed the MBR's boot code");
    let between_tables = PRIMARY_SECTORS * SECTOR..sectors.saturating_sub(BACKUP_SECTORS) * SECTOR;
    if !between_tables.is_empty() && original[between_tables.clone()] != written[between_tables.clone()] {
        let first_changed = between_tables.into_iter().find(|&at| original[at] != written[at]);
        panic!("{which:?} changed byte {first_changed:?}, between the two copies of the table");
    }
    let partial_sector = sectors * SECTOR..;
    assert!(original[partial_sector.clone()] == written[partial_sector], "{which:?} wrote into the partial sector at the disk's end");
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

/// CRC-32 (IEEE), as GPT uses; keel-disk's own is private to it.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut n = 0;
        while n < 256 {
            let mut c = n as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[n] = c;
            n += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &byte| TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8))
}

/// Makes the headers the disk seems to have pass their checksums: the backup named by
/// sector 1, the last sector, and sector 1 itself (last, so the primary's checksums cover
/// whatever fixing the others changed).
fn fix_checksums(disk: &mut [u8]) {
    let sectors = disk.len() / SECTOR;
    if sectors < 2 {
        return;
    }
    let named_backup = usize::try_from(u64_at(disk, SECTOR + 32)).ok().filter(|&lba| lba < sectors);
    for lba in named_backup.into_iter().chain([sectors - 1, 1]) {
        fix_header(disk, lba);
    }
}

fn fix_header(disk: &mut [u8], lba: usize) {
    let at = lba * SECTOR;
    let header = &disk[at..at + SECTOR];
    let array_bytes = u64::from(u32_at(header, 80)) * u64::from(u32_at(header, 84));
    let array_start = u64_at(header, 72).checked_mul(SECTOR_SIZE).and_then(|start| usize::try_from(start).ok());
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

/// Flatcar's table as keel's image builder makes it (flatcar_layout and plan_layout give
/// the numbers, names, types, GUIDs and USR-A's gptprio bits), on the image's disk GUID,
/// but with partitions of 2 sectors instead of MiBs, so that the seed is 40 KiB.
fn flatcar_image() -> Vec<u8> {
    const MIB: u64 = 1 << 20;
    let sizes = LayoutSizes { esp: MIB, bios_boot: MIB, usr: MIB, oem: MIB, oem_config: MIB, root: MIB };
    let specs = flatcar_layout(&sizes).expect("Flatcar's layout");
    let layout = plan_layout(&specs, |spec| Guid::from_random_bytes([spec.number as u8; 16])).expect("Flatcar's layout placed");
    let mut next = PRIMARY_SECTORS as u64;
    let partitions: Vec<GptPartition> = layout
        .partitions
        .into_iter()
        .map(|p| {
            let first_lba = next;
            next += 2;
            GptPartition { first_lba, last_lba: first_lba + 1, ..p }
        })
        .collect();
    let mut disk = Cursor::new(vec![0u8; (next as usize + BACKUP_SECTORS) * SECTOR]);
    write_table(&mut disk, image_disk_guid(), &partitions);
    disk.into_inner()
}

/// `image` with both entry arrays re-laid as 64 entries of 256 bytes: legal, and what the
/// `gpt` crate panics on.
fn with_256_byte_entries(mut image: Vec<u8>) -> Vec<u8> {
    let last = image.len() / SECTOR - 1;
    for header_lba in [1, last] {
        let header = header_lba * SECTOR;
        let array = u64_at(&image, header + 72) as usize * SECTOR;
        let old: Vec<u8> = image[array..array + 128 * 128].to_vec();
        let new = &mut image[array..array + 128 * 128];
        new.fill(0);
        for (index, entry) in old.chunks_exact(128).take(64).enumerate() {
            new[index * 256..index * 256 + 128].copy_from_slice(entry);
        }
        image[header + 80..header + 84].copy_from_slice(&64u32.to_le_bytes());
        image[header + 84..header + 88].copy_from_slice(&256u32.to_le_bytes());
    }
    fix_checksums(&mut image);
    image
}

pub fn seeds() -> Vec<Seed> {
    let input = |params: &Params, image: &[u8]| [&params.encode()[..], image].concat();
    let flatcar = flatcar_image();
    let first_boot = Params {
        disk_growth: 0,
        fix_checksums: false,
        number: 9,
        pending: true,
        slot: Slot::B,
        change: GptprioChange { priority: Some(2), tries: Some(1), successful: Some(false) },
        max: None,
        guid_seed: [0x5a; 16],
        guid_period: 2,
    };
    let on_bigger_disk = Params { disk_growth: u8::MAX, fix_checksums: true, pending: false, slot: Slot::A, max: Some(2), ..first_boot.clone() };
    let mut primary_damaged = flatcar.clone();
    primary_damaged[SECTOR..2 * SECTOR].fill(0);
    // The table after a first boot and an update: own GUIDs, ROOT's format under way, and
    // USR-B about to be tried.
    let mut booted = Cursor::new(flatcar.clone());
    for which in [Rewrite::RandomizeIdentity, Rewrite::SetFormatPending, Rewrite::SetSlotGptprio] {
        rewrite(which, &first_boot, &mut booted).expect("first boot's rewrites on Flatcar's table");
    }
    vec![
        Seed { name: "flatcar", bytes: input(&first_boot, &flatcar) },
        Seed { name: "flatcar-on-a-bigger-disk", bytes: input(&on_bigger_disk, &flatcar) },
        Seed { name: "flatcar-primary-damaged", bytes: input(&first_boot, &primary_damaged) },
        Seed { name: "flatcar-after-first-boot-and-update", bytes: input(&on_bigger_disk, booted.get_ref()) },
        Seed { name: "flatcar-256-byte-entries", bytes: input(&first_boot, &with_256_byte_entries(flatcar)) },
    ]
}
