//! The A/B /usr slots and Chrome OS's `gptprio` attribute bits, which the bootloader
//! (Flatcar's grub `gptprio.next`) reads to choose the slot it boots: in a partition
//! entry's 64-bit attributes, priority is bits 48–51, tries 52–55, successful bit 56.
//! Every other attribute bit is kept as it is.
//!
//! The bits and `prioritize` are cgpt's (vboot_reference `cgpt add -P/-T/-S` and
//! `cgpt prioritize -i N [-P max]`), checked byte for byte against Debian's cgpt.
//! Each change is one table rewrite through `write_gpt` (MBR, backup, then primary),
//! so a power cut leaves the old table or the new one; a table that is already right is
//! not written, and a damaged primary is repaired from the backup, as first boot does.

use crate::first_boot::{already_written, table_for_rewrite};
use crate::{write_gpt, DurableWrite, GptPartition, Guid, SectorSize};
use anyhow::{bail, ensure, Context};
use std::fmt;
use std::io::{Read, Seek};
use std::str::FromStr;

const PRIORITY_SHIFT: u32 = 48;
const TRIES_SHIFT: u32 = 52;
const SUCCESSFUL_SHIFT: u32 = 56;
/// The attribute bits gptprio owns: priority, tries and successful.
pub const GPTPRIO_MASK: u64 = 0xf << PRIORITY_SHIFT | 0xf << TRIES_SHIFT | 1 << SUCCESSFUL_SHIFT;
/// layout.rs's USR_A_GUID and USR_B_GUID as values (a test holds them equal).
const USR_A: Guid = Guid([0x71, 0x30, 0xc9, 0x4a, 0x21, 0x3a, 0x4e, 0x5a, 0x8e, 0x26, 0x6c, 0xce, 0x96, 0x62, 0xf1, 0x32]);
const USR_B: Guid = Guid([0xe0, 0x3d, 0xd3, 0x5c, 0x7c, 0x2d, 0x4a, 0x47, 0xb3, 0xfe, 0x27, 0xf1, 0x57, 0x80, 0xa5, 0x7c]);
/// Priority and tries are 4-bit fields.
pub const GPTPRIO_MAX: u8 = 15;

/// The gptprio fields of one partition entry. Built with `new`, so every value fits its bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Gptprio {
    priority: u8,
    tries: u8,
    successful: bool,
}

impl Gptprio {
    /// Priority 0 means "never boot"; the bootloader boots the highest priority that is
    /// successful or has tries left. Both are 0..=15.
    pub fn new(priority: u8, tries: u8, successful: bool) -> anyhow::Result<Gptprio> {
        ensure!(priority <= GPTPRIO_MAX, "priority {priority} is out of range: give 0 to {GPTPRIO_MAX}");
        ensure!(tries <= GPTPRIO_MAX, "tries {tries} is out of range: give 0 to {GPTPRIO_MAX}");
        Ok(Gptprio { priority, tries, successful })
    }

    pub fn from_attributes(attributes: u64) -> Gptprio {
        Gptprio {
            priority: (attributes >> PRIORITY_SHIFT & 0xf) as u8,
            tries: (attributes >> TRIES_SHIFT & 0xf) as u8,
            successful: attributes >> SUCCESSFUL_SHIFT & 1 == 1,
        }
    }

    /// `attributes` with these gptprio bits in place and every other bit as it was.
    pub fn apply_to(self, attributes: u64) -> u64 {
        attributes & !GPTPRIO_MASK
            | u64::from(self.priority) << PRIORITY_SHIFT
            | u64::from(self.tries) << TRIES_SHIFT
            | u64::from(self.successful) << SUCCESSFUL_SHIFT
    }

    pub fn priority(self) -> u8 {
        self.priority
    }

    pub fn tries(self) -> u8 {
        self.tries
    }

    pub fn successful(self) -> bool {
        self.successful
    }
}

/// Which gptprio fields to change (cgpt add's -P, -T, -S); `None` keeps a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GptprioChange {
    pub priority: Option<u8>,
    pub tries: Option<u8>,
    pub successful: Option<bool>,
}

impl GptprioChange {
    pub fn is_empty(&self) -> bool {
        *self == GptprioChange::default()
    }

    /// `current` with this change made; out-of-range values are errors.
    pub fn apply(&self, current: Gptprio) -> anyhow::Result<Gptprio> {
        Gptprio::new(self.priority.unwrap_or(current.priority), self.tries.unwrap_or(current.tries), self.successful.unwrap_or(current.successful))
    }
}

/// One of Flatcar's two /usr slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const BOTH: [Slot; 2] = [Slot::A, Slot::B];

    /// The partition name (GPT label) of the slot.
    pub fn partition_name(self) -> &'static str {
        match self {
            Slot::A => "USR-A",
            Slot::B => "USR-B",
        }
    }

    /// Flatcar's fixed partition GUID of the slot (grub and update_engine name it).
    pub fn partition_guid(self) -> Guid {
        match self {
            Slot::A => USR_A,
            Slot::B => USR_B,
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.partition_name())
    }
}

impl FromStr for Slot {
    type Err = anyhow::Error;

    /// `A`, `B`, `USR-A` or `USR-B`, in any case.
    fn from_str(text: &str) -> anyhow::Result<Slot> {
        match text.to_ascii_uppercase().as_str() {
            "A" | "USR-A" => Ok(Slot::A),
            "B" | "USR-B" => Ok(Slot::B),
            _ => bail!("{text:?} is not a /usr slot: give A, B, USR-A or USR-B"),
        }
    }
}

/// Which slot a partition is, by its name (USR-A, USR-B) or Flatcar's fixed GUID for the
/// slot; `None` for any other partition, and for one whose name and GUID contradict.
pub fn slot_of(partition: &GptPartition) -> Option<Slot> {
    let by_name = Slot::BOTH.into_iter().find(|s| partition.name == s.partition_name());
    let by_guid = Slot::BOTH.into_iter().find(|s| partition.guid == s.partition_guid());
    match (by_name, by_guid) {
        (Some(name), Some(guid)) if name != guid => None,
        (name, guid) => name.or(guid),
    }
}

/// A slot as the partition table describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotState {
    pub slot: Slot,
    /// The partition number (USR-A is 3 in Flatcar's layout).
    pub number: u32,
    pub guid: Guid,
    pub gptprio: Gptprio,
}

/// Both /usr slots of a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsrSlots {
    pub a: SlotState,
    pub b: SlotState,
}

impl UsrSlots {
    pub fn get(&self, slot: Slot) -> &SlotState {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }
}

/// The one partition that is `slot`; none, or more than one, is an error.
fn find_slot(partitions: &[GptPartition], slot: Slot) -> anyhow::Result<&GptPartition> {
    let mut matches = partitions.iter().filter(|p| slot_of(p) == Some(slot));
    let Some(found) = matches.next() else {
        bail!("the disk has no {slot} partition (named {slot} or with partition GUID {}): is it a Flatcar-layout disk?", slot.partition_guid())
    };
    if let Some(second) = matches.next() {
        bail!("partitions {} and {} both claim to be {slot}: fix the partition names or GUIDs first", found.number, second.number);
    }
    Ok(found)
}

fn slot_state(partitions: &[GptPartition], slot: Slot) -> anyhow::Result<SlotState> {
    let p = find_slot(partitions, slot)?;
    Ok(SlotState { slot, number: p.number, guid: p.guid, gptprio: Gptprio::from_attributes(p.attributes) })
}

/// Reads both slots from the partition table (the backup's, when the primary is damaged).
pub fn read_usr_slots(dev: &mut (impl Read + Seek), sector_size: SectorSize) -> anyhow::Result<UsrSlots> {
    let gpt = crate::read_gpt(dev, sector_size)?;
    Ok(UsrSlots { a: slot_state(&gpt.partitions, Slot::A)?, b: slot_state(&gpt.partitions, Slot::B)? })
}

/// Whether a gptprio change had to write the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum TableWrite {
    Written,
    /// The table already said this, with both copies intact: nothing was written.
    AlreadyRight,
}

/// Applies `edit` to the partition entries and writes the table, unless it already
/// reads that way. `edit` may change gptprio bits only; anything else it changes is
/// refused before the disk is touched. Both copies damaged is an error, and nothing is
/// written.
pub fn rewrite_gptprio(
    dev: &mut impl DurableWrite,
    sector_size: SectorSize,
    edit: impl FnOnce(&mut [GptPartition]) -> anyhow::Result<()>,
) -> anyhow::Result<TableWrite> {
    let (gpt, sectors) = table_for_rewrite(dev, sector_size, None).context("cannot change the gptprio bits; nothing was written")?;
    let mut partitions = gpt.partitions.clone();
    edit(&mut partitions)?;
    for (old, new) in gpt.partitions.iter().zip(&partitions) {
        let kept = GptPartition { attributes: old.attributes & !GPTPRIO_MASK | new.attributes & GPTPRIO_MASK, ..old.clone() };
        ensure!(*new == kept, "partition {}: a gptprio change touched more than the gptprio bits", old.number);
    }
    if already_written(&gpt, sectors, gpt.disk_guid, &partitions) {
        return Ok(TableWrite::AlreadyRight);
    }
    write_gpt(dev, sector_size, gpt.disk_guid, &partitions)?;
    Ok(TableWrite::Written)
}

/// cgpt's `prioritize` over the partitions `in_group` says it works on (cgpt: the Chrome
/// OS kernels; keel: the /usr slots). `chosen` (which must be in the group) goes above
/// every other member; the others keep their relative order, one priority a distinct
/// old priority, counting down from `max` (1..=15), or by default from the number of
/// such ranks (at most 15). Ranks below 1 are merged into 1; members at priority 0 stay
/// at 0 (cgpt never lowers a member to 0, nor raises one from it unless it is `chosen`).
/// With no `chosen`, the ranks are only renumbered.
pub fn prioritize(
    partitions: &mut [GptPartition],
    in_group: impl Fn(&GptPartition) -> bool,
    chosen: Option<u32>,
    max: Option<u8>,
) -> anyhow::Result<()> {
    if let Some(max) = max {
        ensure!((1..=GPTPRIO_MAX).contains(&max), "the highest priority {max} is out of range: give 1 to {GPTPRIO_MAX}");
    }
    if let Some(number) = chosen {
        let Some(p) = partitions.iter().find(|p| p.number == number) else { bail!("there is no partition {number}") };
        ensure!(in_group(p), "partition {number} ({}) is not one of the partitions prioritize orders", p.name);
    }
    // Each member's rank key: its priority, or one above every priority for `chosen`.
    const ABOVE_ALL: u8 = GPTPRIO_MAX + 1;
    let rank_key = |p: &GptPartition| {
        if Some(p.number) == chosen {
            ABOVE_ALL
        } else {
            Gptprio::from_attributes(p.attributes).priority
        }
    };
    let mut keys: Vec<u8> = partitions.iter().filter(|p| in_group(p)).map(rank_key).collect();
    keys.sort_unstable_by(|a, b| b.cmp(a));
    keys.dedup();
    // Nothing is lowered to 0, so the members already there are left alone.
    if keys.last() == Some(&0) {
        keys.pop();
    }
    let top = max.unwrap_or(keys.len().min(usize::from(GPTPRIO_MAX)) as u8);
    for p in partitions.iter_mut().filter(|p| in_group(p)) {
        let key = rank_key(p);
        if let Some(rank) = keys.iter().position(|&k| k == key) {
            let priority = top.saturating_sub(rank as u8).max(1);
            let current = Gptprio::from_attributes(p.attributes);
            p.attributes = Gptprio { priority, ..current }.apply_to(p.attributes);
        }
    }
    Ok(())
}

fn set_in(partitions: &mut [GptPartition], slot: Slot, change: &GptprioChange) -> anyhow::Result<()> {
    let number = find_slot(partitions, slot)?.number;
    for p in partitions.iter_mut().filter(|p| p.number == number) {
        let new = change.apply(Gptprio::from_attributes(p.attributes)).with_context(|| format!("cannot change {slot}"))?;
        p.attributes = new.apply_to(p.attributes);
    }
    Ok(())
}

fn is_slot(p: &GptPartition) -> bool {
    slot_of(p).is_some()
}

/// cgpt add -P/-T/-S on one slot: sets the fields `change` names and keeps the rest.
pub fn set_slot_gptprio(dev: &mut impl DurableWrite, sector_size: SectorSize, slot: Slot, change: &GptprioChange) -> anyhow::Result<TableWrite> {
    ensure!(!change.is_empty(), "nothing to change: give a priority, tries or successful");
    rewrite_gptprio(dev, sector_size, |partitions| set_in(partitions, slot, change))
}

/// cgpt prioritize over the two /usr slots: `slot` gets the highest priority (`max`, or
/// by default 2 when the other slot has a priority and 1 when it has none), the other
/// slot the next lower one, or 1 when `max` is 1; a slot at priority 0 stays there.
pub fn prioritize_slot(dev: &mut impl DurableWrite, sector_size: SectorSize, slot: Slot, max: Option<u8>) -> anyhow::Result<TableWrite> {
    rewrite_gptprio(dev, sector_size, |partitions| {
        let number = find_slot(partitions, slot)?.number;
        find_slot(partitions, slot.other())?;
        prioritize(partitions, is_slot, Some(number), max)
    })
}

/// Marks the booted slot good, as CoreOS did and Flatcar inherited: once a boot has
/// lasted, update_engine runs `coreos-setgoodroot`, which is `cgpt add -S1 -T0` on the
/// booted /usr partition ("success=1, tries=0") and then `cgpt prioritize` of it, with no
/// -P. Chrome OS's `chromeos-setgoodkernel` marks the kernel named by `kern_guid=`
/// successful with cgpt too (only its opening lines could be checked here, so keel
/// follows the CoreOS script, whose text could). So: successful 1, tries 0, and this slot
/// above the other. Normally the booted slot is already on top and only the first two
/// change; after a fallback boot (the updated slot used up its tries) the slot that did
/// boot goes back on top. One table write does all three; the differential test holds
/// it to cgpt's two commands.
pub fn mark_slot_successful(dev: &mut impl DurableWrite, sector_size: SectorSize, slot: Slot) -> anyhow::Result<TableWrite> {
    let good = GptprioChange { successful: Some(true), tries: Some(0), priority: None };
    rewrite_gptprio(dev, sector_size, |partitions| {
        set_in(partitions, slot, &good)?;
        let number = find_slot(partitions, slot)?.number;
        find_slot(partitions, slot.other())?;
        prioritize(partitions, is_slot, Some(number), None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(number: u32, name: &str, guid: Guid, attributes: u64) -> GptPartition {
        GptPartition {
            number,
            type_guid: Guid::from_random_bytes([9; 16]),
            guid,
            first_lba: u64::from(number) * 100,
            last_lba: u64::from(number) * 100 + 99,
            attributes,
            name: name.to_string(),
        }
    }

    #[test]
    fn every_field_value_round_trips_and_every_other_bit_is_kept() {
        let backgrounds = [0, u64::MAX, !GPTPRIO_MASK, 0x8000_0000_0000_0005, 0xa5a5_a5a5_a5a5_a5a5, 1 << 57 | 1 << 63 | 1 << 47];
        for background in backgrounds {
            for priority in 0..=GPTPRIO_MAX {
                for tries in 0..=GPTPRIO_MAX {
                    for successful in [false, true] {
                        let fields = Gptprio::new(priority, tries, successful).unwrap();
                        let attributes = fields.apply_to(background);
                        assert_eq!(attributes & !GPTPRIO_MASK, background & !GPTPRIO_MASK, "a bit outside gptprio changed");
                        assert_eq!(Gptprio::from_attributes(attributes), fields);
                        let expected = u64::from(priority) << 48 | u64::from(tries) << 52 | u64::from(successful) << 56;
                        assert_eq!(attributes & GPTPRIO_MASK, expected);
                    }
                }
            }
        }
    }

    #[test]
    fn each_single_bit_lands_where_chrome_os_puts_it() {
        assert_eq!(Gptprio::new(1, 0, false).unwrap().apply_to(0), 1 << 48);
        assert_eq!(Gptprio::new(8, 0, false).unwrap().apply_to(0), 1 << 51);
        assert_eq!(Gptprio::new(0, 1, false).unwrap().apply_to(0), 1 << 52);
        assert_eq!(Gptprio::new(0, 8, false).unwrap().apply_to(0), 1 << 55);
        assert_eq!(Gptprio::new(0, 0, true).unwrap().apply_to(0), 1 << 56);
        assert_eq!(GPTPRIO_MASK, 0x01ff_0000_0000_0000);
    }

    #[test]
    fn out_of_range_values_are_errors() {
        for (priority, tries) in [(16, 0), (0, 16), (255, 255)] {
            let error = Gptprio::new(priority, tries, false).unwrap_err().to_string();
            assert!(error.contains("out of range") && error.contains("0 to 15"), "{error}");
        }
        let change = GptprioChange { tries: Some(16), ..Default::default() };
        assert!(change.apply(Gptprio::default()).is_err());
    }

    #[test]
    fn slot_names_and_partitions() {
        for (text, slot) in [("A", Slot::A), ("b", Slot::B), ("USR-A", Slot::A), ("usr-b", Slot::B)] {
            assert_eq!(text.parse::<Slot>().unwrap(), slot);
        }
        for bad in ["", "C", "USR-C", "ROOT", "AB"] {
            assert!(bad.parse::<Slot>().unwrap_err().to_string().contains("give A, B, USR-A or USR-B"));
        }
        let a_guid = Slot::A.partition_guid();
        assert_eq!(a_guid.to_string(), crate::layout::USR_A_GUID);
        assert_eq!(Slot::B.partition_guid().to_string(), crate::layout::USR_B_GUID);
        assert_eq!(slot_of(&partition(3, "USR-A", Guid::ZERO, 0)), Some(Slot::A));
        assert_eq!(slot_of(&partition(3, "usr", a_guid, 0)), Some(Slot::A), "the fixed GUID alone names the slot");
        assert_eq!(slot_of(&partition(4, "USR-B", Slot::B.partition_guid(), 0)), Some(Slot::B));
        assert_eq!(slot_of(&partition(4, "USR-B", a_guid, 0)), None, "contradicting name and GUID");
        assert_eq!(slot_of(&partition(9, "ROOT", Guid::ZERO, 0)), None);
    }

    fn priorities(partitions: &[GptPartition]) -> Vec<u8> {
        partitions.iter().map(|p| Gptprio::from_attributes(p.attributes).priority).collect()
    }

    fn with_priorities(values: &[u8]) -> Vec<GptPartition> {
        let g = |n: u8| Guid::from_random_bytes([n; 16]);
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| partition(i as u32 + 1, "k", g(i as u8), Gptprio::new(v, 3, true).unwrap().apply_to(1 << 60)))
            .collect()
    }

    #[test]
    fn prioritize_follows_cgpt() {
        // (start, chosen, max) -> end, worked through cgpt_prioritize.c by hand.
        type Case = (&'static [u8], Option<u32>, Option<u8>, &'static [u8]);
        let cases: [Case; 8] = [
            (&[1, 0], Some(2), None, &[1, 2]),
            (&[1, 2], Some(1), None, &[2, 1]),
            (&[0, 0], Some(2), None, &[0, 1]),
            (&[5, 5, 3], Some(3), None, &[1, 1, 2]),
            (&[1, 0], Some(2), Some(15), &[14, 15]),
            (&[3, 2, 1], Some(3), Some(2), &[1, 1, 2]),
            (&[7, 3, 0], None, None, &[2, 1, 0]),
            (&[0, 0, 0], None, None, &[0, 0, 0]),
        ];
        for (start, chosen, max, end) in cases {
            let mut partitions = with_priorities(start);
            prioritize(&mut partitions, |_| true, chosen, max).unwrap();
            assert_eq!(priorities(&partitions), end, "{start:?} chosen {chosen:?} max {max:?}");
            for (old, new) in with_priorities(start).iter().zip(&partitions) {
                assert_eq!(old.attributes & !(0xf << 48), new.attributes & !(0xf << 48), "only priority bits change");
            }
        }
    }

    #[test]
    fn prioritize_compresses_more_ranks_than_fit() {
        // 16 distinct priorities plus the chosen one: 16 ranks above 0 counting down from 15.
        let start: Vec<u8> = (0..=15).rev().chain([0]).collect();
        let mut partitions = with_priorities(&start);
        prioritize(&mut partitions, |_| true, Some(17), None).unwrap();
        let expected: Vec<u8> = (1..=14).rev().chain([1, 0, 15]).collect();
        assert_eq!(priorities(&partitions), expected);
    }

    #[test]
    fn prioritize_refuses_bad_requests() {
        let mut partitions = with_priorities(&[1, 2]);
        for (chosen, max) in [(Some(3), None), (Some(1), Some(0)), (Some(1), Some(16))] {
            assert!(prioritize(&mut partitions, |_| true, chosen, max).is_err());
        }
        assert!(prioritize(&mut partitions, |p| p.number == 2, Some(1), None).unwrap_err().to_string().contains("not one of"));
        assert_eq!(partitions, with_priorities(&[1, 2]));
    }
}
