//! An Ignition config's partitions for one disk (`storage.disks[]`), planned against the
//! disk's table without writing anything: which entries are kept, created, deleted, resized
//! or recreated, by Ignition's rules, and the whole table the disk has afterwards. Placement
//! (a start or size left out or 0) is what `sgdisk` would choose, so a disk Ignition
//! partitioned is found matching, and a disk keel partitioned matches on the next run.
//!
//! Ignition resolves a 0 by running `sgdisk --pretend` with every listed partition that
//! exists deleted and every one that should exist created; `Gdisk` below is that run,
//! reimplemented from gdisk's source (gpt.cc, gptcl.cc, support.cc) down to its quirks.
//!
//! Where keel departs from Ignition, on purpose:
//! - A partition with number 0 is the existing one of its label, when exactly one exists
//!   that no numbered partition of the config names; Ignition makes another on every run.
//!   A number-0 partition that is made takes the lowest number that is free and that no
//!   partition of the config names, so a rerun finds neither a deletion nor a numbered
//!   partition taking its place.
//! - A resize keeps the partition's attribute bits; sgdisk's delete and create loses them.
//! - Placement is against the table keel writes (128-entry arrays, the backup at the
//!   disk's end), not the usable area of the table on the disk, so a disk that grew since
//!   its table was written plans the same on every run.
//! - A plan that a second run would not find as made (first boot runs again after a power
//!   cut) is refused before anything is written: Ignition's placement has such corners, as
//!   when an unaligned start, which sgdisk makes when no aligned one fits, lowers the
//!   alignment the next run places with.

use crate::gpt::{usable_range, ENTRY_COUNT, NAME_UNITS};
use crate::{Gpt, GptPartition, Guid, SectorSize};

const MIB: u64 = 1 << 20;

/// The highest partition number of the table keel writes.
const MAX_NUMBER: u32 = ENTRY_COUNT as u32;

/// sgdisk's type for a partition made without `--typecode`: 8300, "Linux filesystem".
const LINUX_FILESYSTEM: Guid = Guid([0x0f, 0xc6, 0x3d, 0xaf, 0x84, 0x83, 0x47, 0x72, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4]);

/// One entry of `storage.disks[].partitions`, in keel-disk's terms (validated already).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRequest {
    /// 0: the one partition already named `label` if there is exactly one that no other
    /// request names by number (so a second run finds what the first made), else the lowest
    /// number that is free after the config's deletions and that no request names.
    pub number: u32,
    pub label: Option<String>,
    pub start_mib: Option<u64>,
    pub size_mib: Option<u64>,
    pub type_guid: Option<Guid>,
    pub guid: Option<Guid>,
    pub wipe_partition_entry: bool,
    /// `shouldExist`, with nil counting as true.
    pub should_exist: bool,
    pub resize: bool,
}

/// One disk's `wipeTable` and partitions, in config order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRequest {
    pub wipe_table: bool,
    pub partitions: Vec<PartitionRequest>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionAction {
    /// Exists and matches.
    Keep,
    /// Did not exist; made.
    Create,
    /// Existed; `shouldExist: false` with `wipePartitionEntry` removes it.
    Delete,
    /// Existed with everything but its size matching, and `resize: true`.
    Resize,
    /// Existed without matching, and `wipePartitionEntry: true`: deleted and made anew.
    Recreate,
    /// `shouldExist: false`, and it does not exist.
    StaysAbsent,
}

impl PartitionAction {
    /// Whether the table changes for it.
    fn changes_table(self) -> bool {
        !matches!(self, PartitionAction::Keep | PartitionAction::StaysAbsent)
    }
}

/// What the plan does with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOutcome {
    /// Index of the request in `TableRequest::partitions`.
    pub request: usize,
    /// The partition's number (a number-0 request's, resolved).
    pub number: u32,
    pub action: PartitionAction,
}

/// A disk's table after the config's partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablePlan {
    /// Every partition the disk has afterwards, ordered by number.
    pub partitions: Vec<GptPartition>,
    pub disk_guid: Guid,
    /// One per request, in request order.
    pub outcomes: Vec<PartitionOutcome>,
}

/// A request the disk's table cannot satisfy, with Ignition's reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitioningError(pub String);

impl std::fmt::Display for PartitioningError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PartitioningError {}

/// Plans `request` against `current` (`None`: the disk has no table, or `wipe_table` is
/// set and the old one is ignored) on a disk of `disk_sectors` sectors of `sector_size`,
/// drawing the GUIDs of new partitions (and of a new table) from `fresh_guid`.
pub fn plan_table(
    current: Option<&Gpt>,
    disk_sectors: u64,
    sector_size: SectorSize,
    request: &TableRequest,
    fresh_guid: &mut dyn FnMut() -> Guid,
) -> Result<TablePlan, PartitioningError> {
    let geometry = Geometry::new(disk_sectors, sector_size)?;
    let kept_table = current.filter(|_| !request.wipe_table);
    if let Some(gpt) = kept_table
        && gpt.sector_size != sector_size
    {
        return Err(error(format!("the disk's table was read in {}, but the disk has {sector_size}", gpt.sector_size)));
    }
    let existing = kept_table.map_or(&[][..], |gpt| &gpt.partitions[..]);
    check_existing(existing)?;
    let disk_guid = match kept_table {
        Some(gpt) => gpt.disk_guid,
        None => fresh_guid(),
    };
    let (partitions, outcomes) = plan_partitions(existing, &geometry, &request.partitions, fresh_guid)?;
    // A wiped table is planned from nothing on every run, so a rerun lays it out the same.
    if !request.wipe_table && outcomes.iter().any(|outcome| outcome.action.changes_table()) {
        check_rerun_keeps(&partitions, &geometry, &request.partitions)?;
    }
    Ok(TablePlan { partitions, disk_guid, outcomes })
}

fn error(message: String) -> PartitioningError {
    PartitioningError(message)
}

/// The disk as the table keel writes lays it out.
struct Geometry {
    sector_size: SectorSize,
    disk_sectors: u64,
    first_usable: u64,
    last_usable: u64,
}

impl Geometry {
    fn new(disk_sectors: u64, sector_size: SectorSize) -> Result<Geometry, PartitioningError> {
        let (first_usable, last_usable) = usable_range(disk_sectors, sector_size);
        // write_gpt's own limit: both tables and at least two usable sectors.
        if last_usable <= first_usable {
            return Err(error(format!("a disk of {disk_sectors} {sector_size} is too small for a partition table")));
        }
        Ok(Geometry { sector_size, disk_sectors, first_usable, last_usable })
    }

    /// `mib` MiB in sectors, exactly, as Ignition converts `startMiB` and `sizeMiB`.
    fn sectors_of_mib(&self, mib: u64) -> Option<u64> {
        mib.checked_mul(MIB / self.sector_size.bytes())
    }
}

/// The disk's table as the planner relies on it: numbers the table keel writes has, and
/// partitions that are whole and apart. `read_gpt` ensures the last two; the first is the
/// limit of keel's own tables.
fn check_existing(existing: &[GptPartition]) -> Result<(), PartitioningError> {
    for (index, partition) in existing.iter().enumerate() {
        let number = partition.number;
        if !(1..=MAX_NUMBER).contains(&number) {
            return Err(error(format!("the disk's partition {number} is numbered past the {MAX_NUMBER} entries of the table keel writes")));
        }
        if partition.last_lba < partition.first_lba {
            return Err(error(format!(
                "the disk's partition {number} ends (sector {}) before it starts (sector {})",
                partition.last_lba, partition.first_lba
            )));
        }
        if existing[..index].iter().any(|other| other.number == number) {
            return Err(error(format!("the disk's table has partition {number} twice")));
        }
    }
    first_overlap(existing).map_or(Ok(()), |(low, high)| Err(error(format!("the disk's partitions {low} and {high} overlap"))))
}

/// Two partitions sharing a sector, lower number first.
fn first_overlap(partitions: &[GptPartition]) -> Option<(u32, u32)> {
    let mut by_start: Vec<&GptPartition> = partitions.iter().collect();
    by_start.sort_by_key(|p| (p.first_lba, p.number));
    by_start
        .windows(2)
        .find(|pair| pair[1].first_lba <= pair[0].last_lba)
        .map(|pair| (pair[0].number.min(pair[1].number), pair[0].number.max(pair[1].number)))
}

/// How many sectors `partition` spans (its ends are checked to be in order).
fn sectors_of(partition: &GptPartition) -> u64 {
    (partition.last_lba - partition.first_lba).saturating_add(1)
}

/// One request on its way through the plan, in Ignition's order (number 0 last).
struct Spec<'a> {
    /// Its index in the config's list.
    index: usize,
    request: &'a PartitionRequest,
    /// `None`: a number-0 request that no existing partition answers to, numbered when made.
    number: Option<u32>,
    existing: Option<&'a GptPartition>,
    /// In sectors, an existing partition's own where left out (unless its entry may be
    /// wiped); `None` and `Some(0)` are both sgdisk's "default".
    start: Option<u64>,
    size: Option<u64>,
}

impl Spec<'_> {
    /// How messages name the partition: its number, and for a number-0 request its label.
    fn describe(&self, number: Option<u32>) -> String {
        match (self.request.number, number, &self.request.label) {
            (0, Some(number), Some(label)) => format!("partition {number} (number 0 in the config, label {label:?})"),
            (0, None, Some(label)) => format!("the partition labelled {label:?} (number 0 in the config)"),
            (0, _, None) => format!("partitions[{}] (number 0 and no label)", self.index),
            (number, _, _) => format!("partition {number}"),
        }
    }

    /// Its start or size is sgdisk's to choose: a 0 that Ignition resolves by the pretend run.
    fn sgdisk_chooses(&self) -> bool {
        self.start.unwrap_or(0) == 0 || self.size.unwrap_or(0) == 0
    }
}

/// Where sgdisk's pretend run put a partition that should exist.
#[derive(Clone, Copy)]
struct Placed {
    number: u32,
    extent: Extent,
}

/// Plans `requests` against the partitions `existing` (already checked): the partitions
/// afterwards, by number, and one outcome per request, in request order.
fn plan_partitions(
    existing: &[GptPartition],
    geometry: &Geometry,
    requests: &[PartitionRequest],
    fresh_guid: &mut dyn FnMut() -> Guid,
) -> Result<(Vec<GptPartition>, Vec<PartitionOutcome>), PartitioningError> {
    let numbers = numbers_of_requests(existing, requests)?;
    // Ignition's stable sort: number-0 partitions last, the others in config order.
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&index| requests[index].number == 0);
    let specs = order.iter().map(|&index| spec_of(index, &requests[index], numbers[index], existing, geometry)).collect::<Result<Vec<_>, _>>()?;
    let placements = pretend(existing, geometry, &specs)?;

    let mut outcomes: Vec<Option<PartitionOutcome>> = vec![None; requests.len()];
    let mut replaced: Vec<u32> = Vec::new();
    let mut made: Vec<GptPartition> = Vec::new();
    for (spec, placed) in specs.iter().zip(&placements) {
        let request = spec.request;
        let (number, action) = match (spec.existing, placed) {
            (None, None) => (spec.number.unwrap_or(0), PartitionAction::StaysAbsent),
            (None, Some(placed)) => {
                made.push(new_entry(spec, placed, fresh_guid)?);
                (placed.number, PartitionAction::Create)
            }
            (Some(existing), None) => {
                if !request.wipe_partition_entry {
                    return Err(error(format!(
                        "partition {} exists but is specified as nonexistant and wipePartitionEntry is false",
                        existing.number
                    )));
                }
                replaced.push(existing.number);
                (existing.number, PartitionAction::Delete)
            }
            (Some(existing), Some(placed)) => {
                let action = match_existing(spec, existing, placed)?;
                match action {
                    PartitionAction::Recreate => made.push(new_entry(spec, placed, fresh_guid)?),
                    PartitionAction::Resize => made.push(GptPartition { last_lba: placed.extent.last, ..existing.clone() }),
                    _ => {}
                }
                if action.changes_table() {
                    replaced.push(existing.number);
                }
                (existing.number, action)
            }
        };
        outcomes[spec.index] = Some(PartitionOutcome { request: spec.index, number, action });
    }

    let mut partitions: Vec<GptPartition> = existing.iter().filter(|p| !replaced.contains(&p.number)).cloned().chain(made).collect();
    partitions.sort_by_key(|p| p.number);
    check_writable(&partitions, geometry)?;
    Ok((partitions, outcomes.into_iter().flatten().collect()))
}

/// The number each request means. A number-0 request means the existing partition of its
/// label when exactly one has it, among those no numbered request names: what an earlier
/// run made for it, which it would otherwise make again on every run.
fn numbers_of_requests(existing: &[GptPartition], requests: &[PartitionRequest]) -> Result<Vec<Option<u32>>, PartitioningError> {
    let named: Vec<u32> = requests.iter().map(|r| r.number).filter(|&number| number != 0).collect();
    let mut numbers = Vec::with_capacity(requests.len());
    for request in requests {
        let number = match (request.number, &request.label) {
            (0, Some(label)) => {
                let found: Vec<u32> = existing.iter().filter(|p| p.name == *label && !named.contains(&p.number)).map(|p| p.number).collect();
                match found[..] {
                    [] => None,
                    [number] => Some(number),
                    _ => {
                        let listed: Vec<String> = found.iter().map(u32::to_string).collect();
                        return Err(error(format!(
                            "the partition labelled {label:?} has no number, and the disk's partitions {} all have that label: which one is meant is ambiguous",
                            listed.join(", ")
                        )));
                    }
                }
            }
            (0, None) => None,
            (number, _) => Some(number),
        };
        numbers.push(number);
    }
    for (index, number) in numbers.iter().enumerate() {
        if let Some(number) = number
            && let Some(other) = numbers[..index].iter().position(|n| n == &Some(*number))
        {
            return Err(error(format!("partitions[{other}] and partitions[{index}] of this disk both mean partition {number}")));
        }
    }
    Ok(numbers)
}

fn spec_of<'a>(
    index: usize,
    request: &'a PartitionRequest,
    number: Option<u32>,
    existing: &'a [GptPartition],
    geometry: &Geometry,
) -> Result<Spec<'a>, PartitioningError> {
    let existing = number.and_then(|number| existing.iter().find(|p| p.number == number));
    let mut spec = Spec { index, request, number, existing, start: None, size: None };
    let sectors = |mib: Option<u64>, field: &str| match mib {
        Some(mib) => match geometry.sectors_of_mib(mib) {
            Some(sectors) => Ok(Some(sectors)),
            None => Err(error(format!("{}: {field} {mib} is more sectors than any disk has", spec.describe(number)))),
        },
        None => Ok(None),
    };
    let (start, size) = (sectors(request.start_mib, "startMiB")?, sectors(request.size_mib, "sizeMiB")?);
    // Left out, an existing partition's start and size stay as they are; with its entry
    // allowed to be wiped, they are sgdisk's defaults instead.
    let unchanged = existing.filter(|_| !request.wipe_partition_entry);
    spec.start = start.or(unchanged.map(|p| p.first_lba));
    spec.size = size.or(unchanged.map(sectors_of));
    Ok(spec)
}

/// Ignition's `sgdisk --pretend`: every listed partition that exists deleted, then every
/// one that should exist created, in order. Returns where each spec's partition went
/// (`None` for those that should not exist). Any creation sgdisk would refuse is an error,
/// as the pretend run's failure is Ignition's.
fn pretend(existing: &[GptPartition], geometry: &Geometry, specs: &[Spec]) -> Result<Vec<Option<Placed>>, PartitioningError> {
    let mut gdisk = Gdisk::load(existing, geometry);
    for spec in specs {
        if let Some(existing) = spec.existing {
            gdisk.delete(existing.number);
        }
    }
    // A number-0 partition made must not take a number the config names (one it deletes,
    // say): the next run would take it for that one.
    let reserved: Vec<u32> = specs.iter().filter_map(|spec| spec.number).collect();
    let mut placements = Vec::with_capacity(specs.len());
    for spec in specs {
        if !spec.request.should_exist {
            placements.push(None);
            continue;
        }
        let number = match spec.number {
            Some(number) => number,
            None => gdisk.first_free_number(&reserved).ok_or_else(|| {
                error(format!("{}: no partition number is free among the {MAX_NUMBER} of the table keel writes", spec.describe(None)))
            })?,
        };
        let (start, size) = (spec.start.unwrap_or(0), spec.size.unwrap_or(0));
        let extent = gdisk.create(number, start, size).map_err(|refusal| {
            error(format!("could not create {} from sector {} to {}: {}", spec.describe(Some(number)), refusal.start, refusal.end, refusal.reason))
        })?;
        placements.push(Some(Placed { number, extent }));
    }
    Ok(placements)
}

/// Ignition's matrix for a partition that exists and should: kept when it matches,
/// recreated when its entry may be wiped, resized when only its size differs and
/// `resize` is set, else an error. A start or size sgdisk chooses is compared as chosen.
fn match_existing(spec: &Spec, existing: &GptPartition, placed: &Placed) -> Result<PartitionAction, PartitioningError> {
    let request = spec.request;
    let (start, size) = if spec.sgdisk_chooses() { (Some(placed.extent.first), Some(placed.extent.len())) } else { (spec.start, spec.size) };
    let common = common_mismatch(request, existing, start);
    let existing_size = sectors_of(existing);
    let size_mismatch = size.filter(|&size| size != existing_size).map(|size| format!("size did not match (specified {size}, got {existing_size})"));
    let Some(mismatch) = common.clone().or(size_mismatch) else {
        return Ok(PartitionAction::Keep);
    };
    if request.wipe_partition_entry {
        return Ok(PartitionAction::Recreate);
    }
    if request.resize && common.is_none() {
        // sgdisk recreates it at its old start, which it moves only to align an unaligned
        // start; moving it would lose the data a resize keeps.
        if placed.extent.first != existing.first_lba {
            return Err(error(format!(
                "partition {} cannot be resized in place: sgdisk would start it at sector {} instead of {} to align it",
                existing.number, placed.extent.first, existing.first_lba
            )));
        }
        return Ok(PartitionAction::Resize);
    }
    Err(error(format!("partition {} didn't match: {mismatch}", existing.number)))
}

/// Ignition's partitionMatchesCommon, in its order: the first of start, GUID, type GUID and
/// label that differs (GUIDs compare as values, so case does not matter).
fn common_mismatch(request: &PartitionRequest, existing: &GptPartition, start: Option<u64>) -> Option<String> {
    if let Some(start) = start
        && start != existing.first_lba
    {
        return Some(format!("starting sector did not match (specified {start}, got {})", existing.first_lba));
    }
    if let Some(guid) = request.guid
        && guid != existing.guid
    {
        return Some(format!("GUID did not match (specified \"{guid}\", got \"{}\")", existing.guid));
    }
    if let Some(type_guid) = request.type_guid
        && type_guid != existing.type_guid
    {
        return Some(format!("type GUID did not match (specified \"{type_guid}\", got \"{}\")", existing.type_guid));
    }
    if let Some(label) = &request.label
        && *label != existing.name
    {
        return Some(format!("label did not match (specified {label:?}, got {:?})", existing.name));
    }
    None
}

/// The entry sgdisk's `--new` makes, with the config's name, type and GUID where given:
/// Linux filesystem type, a random GUID, no name and no attribute bits otherwise.
fn new_entry(spec: &Spec, placed: &Placed, fresh_guid: &mut dyn FnMut() -> Guid) -> Result<GptPartition, PartitioningError> {
    let name = spec.request.label.clone().unwrap_or_default();
    // The config's validation limits labels to 36 bytes; a NUL would end the name on disk.
    if name.encode_utf16().count() > NAME_UNITS || name.contains('\0') {
        return Err(error(format!(
            "{}: the label {name:?} does not fit a GPT entry, which holds {NAME_UNITS} UTF-16 units and no NUL",
            spec.describe(Some(placed.number))
        )));
    }
    Ok(GptPartition {
        number: placed.number,
        type_guid: spec.request.type_guid.unwrap_or(LINUX_FILESYSTEM),
        guid: spec.request.guid.unwrap_or_else(&mut *fresh_guid),
        first_lba: placed.extent.first,
        last_lba: placed.extent.last,
        attributes: 0,
        name,
    })
}

/// The planned table is one `write_gpt` takes: inside its usable sectors (a partition the
/// disk's own table left room for may reach into the arrays keel writes), and apart. Its
/// numbers are within the entries already: the disk's are checked, and sgdisk's are.
fn check_writable(partitions: &[GptPartition], geometry: &Geometry) -> Result<(), PartitioningError> {
    let (first_usable, last_usable) = (geometry.first_usable, geometry.last_usable);
    if let Some(outside) = partitions.iter().find(|p| p.first_lba < first_usable || p.last_lba > last_usable) {
        return Err(error(format!(
            "partition {} ({:?}) spans sectors {}..={}, outside the usable sectors {first_usable}..={last_usable} of the table keel writes \
             (128-entry arrays at both ends of the disk)",
            outside.number, outside.name, outside.first_lba, outside.last_lba
        )));
    }
    first_overlap(partitions).map_or(Ok(()), |(low, high)| Err(error(format!("partitions {low} and {high} would overlap"))))
}

/// Plans the config again against the table this plan makes, as first boot does when it
/// runs again after a power cut: everything must be found as made. Otherwise the second run
/// would fail, or move partitions, on a disk the first already changed, so the config is
/// refused before the first run writes anything.
fn check_rerun_keeps(planned: &[GptPartition], geometry: &Geometry, requests: &[PartitionRequest]) -> Result<(), PartitioningError> {
    let refused = |why: String| {
        error(format!(
            "first boot running this config again (after a power cut, say) would not find the table it makes: {why}; \
             nothing was written"
        ))
    };
    // A run that finds everything as made draws no GUID, and keeps the table as it is.
    let (_, outcomes) = plan_partitions(planned, geometry, requests, &mut || Guid::ZERO).map_err(|e| refused(e.0))?;
    match outcomes.iter().find(|outcome| outcome.action.changes_table()) {
        Some(outcome) => {
            let verb = match outcome.action {
                PartitionAction::Create => "make",
                PartitionAction::Delete => "delete",
                PartitionAction::Resize => "resize",
                _ => "recreate",
            };
            Err(refused(format!("partitions[{}] would {verb} partition {} again", outcome.request, outcome.number)))
        }
        None => Ok(()),
    }
}

/// Sectors `first..=last`, as GPT entries give them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Extent {
    first: u64,
    last: u64,
}

impl Extent {
    fn len(self) -> u64 {
        self.last - self.first + 1
    }

    fn contains(self, sector: u64) -> bool {
        (self.first..=self.last).contains(&sector)
    }
}

/// gdisk's MIN_AF_ALIGNMENT and SMALLEST_ADVANCED_FORMAT (gpt.h): on disks of at least
/// this many sectors, partitions are aligned on at least 8 sectors whatever their starts.
const MIN_ADVANCED_FORMAT_ALIGNMENT: u64 = 8;
const SMALLEST_ADVANCED_FORMAT: u64 = 585_937_500;

/// Why sgdisk refuses a `--new`: its "Could not create partition N from START to END".
#[derive(Debug)]
struct Refusal {
    start: u64,
    end: u64,
    reason: String,
}

/// sgdisk's table in memory during one command line: entry `n - 1` is partition `n`, as in
/// gdisk's array, whose order some of its searches depend on. The functions are gdisk's,
/// one for one (named after them), quirks included: placement must be exactly sgdisk's.
struct Gdisk {
    first_usable: u64,
    last_usable: u64,
    alignment: u64,
    entries: Vec<Option<Extent>>,
}

impl Gdisk {
    /// The table as sgdisk loads it; `existing` is checked (numbered within the entries).
    fn load(existing: &[GptPartition], geometry: &Geometry) -> Gdisk {
        let mut entries = vec![None; ENTRY_COUNT];
        for partition in existing {
            if let Some(entry) = (partition.number as usize).checked_sub(1).and_then(|slot| entries.get_mut(slot)) {
                *entry = Some(Extent { first: partition.first_lba, last: partition.last_lba });
            }
        }
        let alignment = compute_alignment(existing.iter().map(|p| p.first_lba), geometry.sector_size, geometry.disk_sectors);
        Gdisk { first_usable: geometry.first_usable, last_usable: geometry.last_usable, alignment, entries }
    }

    fn used(&self) -> impl Iterator<Item = (u32, Extent)> + '_ {
        self.entries.iter().enumerate().filter_map(|(index, entry)| Some((index as u32 + 1, (*entry)?)))
    }

    fn delete(&mut self, number: u32) {
        if let Some(entry) = (number as usize).checked_sub(1).and_then(|slot| self.entries.get_mut(slot)) {
            *entry = None;
        }
    }

    /// IsFree.
    fn is_free(&self, sector: u64) -> bool {
        (self.first_usable..=self.last_usable).contains(&sector) && !self.used().any(|(_, extent)| extent.contains(sector))
    }

    /// Every sector of `from..=to` free, as Align's loops of IsFree ask.
    fn all_free(&self, from: u64, to: u64) -> bool {
        from >= self.first_usable && to <= self.last_usable && !self.used().any(|(_, extent)| extent.first <= to && extent.last >= from)
    }

    /// FindFirstAvailable: the first free sector from `start` on (gdisk's 0 is `None`).
    fn first_available(&self, start: u64) -> Option<u64> {
        let mut first = start.max(self.first_usable);
        loop {
            let mut moved = false;
            for (_, extent) in self.used() {
                if extent.contains(first) {
                    first = extent.last.checked_add(1)?;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        (first <= self.last_usable).then_some(first)
    }

    /// FindLastInFree: the sector before the next partition to start after `start`, by
    /// gdisk's scan in entry order (which, with a one-sector partition right before another,
    /// can answer that one sector), or the last usable sector.
    fn last_in_free(&self, start: u64) -> u64 {
        let mut nearest_end = self.last_usable;
        for (_, extent) in self.used() {
            if nearest_end > extent.first && extent.first > start {
                nearest_end = extent.first - 1;
            }
        }
        nearest_end
    }

    /// FindFirstInLargest: the first sector of the largest free block, the first of equal
    /// ones; 0 when nothing is free.
    fn first_in_largest(&self) -> u64 {
        let (mut start, mut selected_size, mut selected) = (0, 0, 0);
        while let Some(first_block) = self.first_available(start) {
            let last_block = self.last_in_free(first_block);
            let size = last_block - first_block + 1;
            if size > selected_size {
                (selected_size, selected) = (size, first_block);
            }
            match last_block.checked_add(1) {
                Some(next) => start = next,
                None => break,
            }
        }
        selected
    }

    /// Align: an unaligned sector moves to the aligned one before it when every sector
    /// between is free, else to the one after it likewise, else stays.
    fn align(&self, sector: u64) -> u64 {
        if sector.is_multiple_of(self.alignment) {
            return sector;
        }
        let earlier = sector / self.alignment * self.alignment;
        if earlier >= self.first_usable && self.all_free(earlier, sector - 1) {
            return earlier;
        }
        match earlier.checked_add(self.alignment) {
            Some(later) if later <= self.last_usable && self.all_free(sector + 1, later) => later,
            _ => sector,
        }
    }

    /// FindFirstFreePart, skipping `reserved`: the lowest number without an entry.
    fn first_free_number(&self, reserved: &[u32]) -> Option<u32> {
        self.entries.iter().zip(1..).find(|(entry, number)| entry.is_none() && !reserved.contains(number)).map(|(_, number)| number)
    }

    /// `sgdisk --new=NUMBER:START:+SIZE` (gptcl.cc, then CreatePartition). A 0 START is
    /// the largest free block's first sector, aligned; a 0 SIZE ends where the free space
    /// holding *that* sector ends, whatever START was given. A given start is aligned only
    /// after its end was computed; a given size is exact.
    fn create(&mut self, number: u32, start: u64, size: u64) -> Result<Extent, Refusal> {
        let largest = self.first_in_largest();
        let low = self.align(largest);
        let high = self.last_in_free(low);
        let start = if start == 0 { low } else { start };
        // IeeeToInt: "+SIZE" ends SIZE - 1 past the start; past u64 it is bad input, 0.
        let end = match size {
            0 => high,
            size => start.checked_add(size - 1).unwrap_or(0),
        };
        let refuse = |reason: String| Err(Refusal { start, end, reason });
        let Some(slot) = (number as usize).checked_sub(1).filter(|&slot| slot < self.entries.len()) else {
            return refuse(format!("the table keel writes has partition numbers 1 to {MAX_NUMBER}"));
        };
        if let Some(extent) = self.entries[slot] {
            return refuse(format!("partition {number} already spans sectors {}..={}", extent.first, extent.last));
        }
        let aligned = self.align(start);
        let fill = size == 0;
        if !self.is_free(aligned) {
            return refuse(self.why_taken(aligned, largest));
        }
        let fits = aligned <= end && self.last_in_free(aligned) >= end;
        if !fits {
            return refuse(if fill {
                format!(
                    "without a size it fills the free space from the largest free block's start, sectors {low}..={high}, \
                     which does not hold sector {aligned}"
                )
            } else if aligned > end {
                "it would end past the last sector a disk can have".to_string()
            } else if end > self.last_usable {
                format!("it would end past the last usable sector, {}", self.last_usable)
            } else {
                self.why_cut_short(aligned, end)
            });
        }
        let extent = Extent { first: aligned, last: end };
        self.entries[slot] = Some(extent);
        Ok(extent)
    }

    fn why_taken(&self, sector: u64, largest: u64) -> String {
        if largest == 0 {
            return "no sector of the disk is free".to_string();
        }
        match self.used().find(|(_, extent)| extent.contains(sector)) {
            Some((number, _)) => format!("sector {sector} belongs to partition {number}"),
            None => format!("sector {sector} is outside the usable sectors {}..={}", self.first_usable, self.last_usable),
        }
    }

    fn why_cut_short(&self, first: u64, end: u64) -> String {
        let next = self.used().filter(|(_, extent)| extent.first > first && extent.first <= end).min_by_key(|(_, extent)| extent.first);
        match next {
            Some((number, extent)) => format!("it would run into partition {number}, which starts at sector {}", extent.first),
            None => format!("sectors {first}..={end} are not all free"),
        }
    }
}

/// ComputeAlignment, run when sgdisk loads a table: 1 MiB in sectors, halved until it
/// divides every partition's start, but not below 8 sectors on a disk of 300 GB or more.
fn compute_alignment(starts: impl Iterator<Item = u64>, sector_size: SectorSize, disk_sectors: u64) -> u64 {
    let mut alignment = MIB / sector_size.bytes();
    for start in starts {
        while !start.is_multiple_of(alignment) {
            alignment /= 2;
        }
    }
    if alignment < MIN_ADVANCED_FORMAT_ALIGNMENT && disk_sectors >= SMALLEST_ADVANCED_FORMAT {
        MIN_ADVANCED_FORMAT_ALIGNMENT
    } else {
        alignment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64 MiB disk of 512-byte sectors: usable 34..=131038.
    fn geometry() -> Geometry {
        Geometry::new(131_072, SectorSize::Bytes512).unwrap()
    }

    fn gdisk(extents: &[(u32, u64, u64)]) -> Gdisk {
        let existing: Vec<GptPartition> = extents
            .iter()
            .map(|&(number, first_lba, last_lba)| GptPartition {
                number,
                type_guid: LINUX_FILESYSTEM,
                guid: Guid::ZERO,
                first_lba,
                last_lba,
                attributes: 0,
                name: String::new(),
            })
            .collect();
        Gdisk::load(&existing, &geometry())
    }

    #[test]
    fn alignment_is_the_largest_power_of_two_dividing_every_start_up_to_a_mib() {
        let of = |starts: &[u64], sector_size, disk_sectors| compute_alignment(starts.iter().copied(), sector_size, disk_sectors);
        assert_eq!(of(&[], SectorSize::Bytes512, 131_072), 2048);
        assert_eq!(of(&[], SectorSize::Bytes4096, 131_072), 256);
        assert_eq!(of(&[2048, 1 << 30], SectorSize::Bytes512, 131_072), 2048);
        assert_eq!(of(&[2048, 4096 + 64], SectorSize::Bytes512, 131_072), 64);
        assert_eq!(of(&[34], SectorSize::Bytes512, 131_072), 2);
        assert_eq!(of(&[2048, 35], SectorSize::Bytes512, 131_072), 1);
        // gdisk's guard for Advanced Format drives: big disks never go below 8.
        assert_eq!(of(&[35], SectorSize::Bytes512, SMALLEST_ADVANCED_FORMAT - 1), 1);
        assert_eq!(of(&[35], SectorSize::Bytes512, SMALLEST_ADVANCED_FORMAT), 8);
        assert_eq!(of(&[64], SectorSize::Bytes512, SMALLEST_ADVANCED_FORMAT), 64);
    }

    #[test]
    fn the_largest_free_block_wins_and_the_first_of_equal_ones() {
        // Free: 34..=2047 (2014), 4096..=8191 (4096), 10240..=14335 (4096), 16384..=131038.
        let disk = gdisk(&[(1, 2048, 4095), (2, 8192, 10239), (3, 14336, 16383)]);
        assert_eq!(disk.first_in_largest(), 16384);
        let disk = gdisk(&[(1, 2048, 4095), (2, 8192, 10239), (3, 14336, 131_038 - 4096)]);
        assert_eq!(disk.first_in_largest(), 4096, "the first of the blocks of 4096");
        assert_eq!(gdisk(&[(1, 34, 131_038)]).first_in_largest(), 0, "nothing free");
    }

    #[test]
    fn align_moves_back_then_forward_over_free_sectors_only() {
        let disk = gdisk(&[(1, 2048, 4095)]);
        assert_eq!(disk.align(6000), 4096, "back over free sectors");
        assert_eq!(disk.align(4097), 4096, "back");
        assert_eq!(disk.align(100), 100, "0 is before the usable area, and 2048 is taken: stays");
        assert_eq!(gdisk(&[]).align(100), 2048, "0 is before the usable area: forward");
        let disk = gdisk(&[(1, 2048, 4200)]);
        assert_eq!(disk.align(4301), 6144, "4096..=4200 is taken: forward");
        let disk = gdisk(&[(1, 2048, 4200), (2, 6144, 8191)]);
        assert_eq!(disk.align(4301), 4301, "taken both ways: stays");
    }

    /// gdisk scans entries in number order and only takes a partition's start when it is
    /// before the end found so far: a one-sector partition right before a partition of a
    /// lower number is not seen, and the free space seems to reach into it.
    #[test]
    fn last_in_free_keeps_gdisks_entry_order_quirk() {
        assert_eq!(gdisk(&[(1, 5000, 5000), (2, 5001, 6000)]).last_in_free(4096), 4999);
        assert_eq!(gdisk(&[(1, 5001, 6000), (2, 5000, 5000)]).last_in_free(4096), 5000);
    }

    #[test]
    fn new_partitions_are_placed_as_sgdisk_places_them() {
        let mut disk = gdisk(&[(1, 2048, 4095)]);
        // Default start: the largest block's first sector, aligned; default end: its end.
        assert_eq!(disk.create(2, 0, 0).unwrap(), Extent { first: 4096, last: 131_038 });
        let mut disk = gdisk(&[(1, 2048, 4095)]);
        assert_eq!(disk.create(2, 0, 100).unwrap(), Extent { first: 4096, last: 4195 });
        // A given start with a default end: the end of the largest block, so a start in
        // another block fails.
        let mut disk = gdisk(&[(1, 8192, 10239)]);
        let refusal = disk.create(2, 2048, 0).unwrap_err();
        assert_eq!((refusal.start, refusal.end), (2048, 131_038));
        assert!(refusal.reason.contains("largest free block's start, sectors 10240..=131038"), "{}", refusal.reason);
        // A given start is aligned after its end was computed: the size shrinks.
        let mut disk = gdisk(&[(1, 2048, 4095)]);
        assert_eq!(disk.create(2, 4100, 100).unwrap(), Extent { first: 4096, last: 4199 });
        let refusal = gdisk(&[(1, 2048, 4095)]).create(129, 0, 0).unwrap_err();
        assert!(refusal.reason.contains("1 to 128"), "{}", refusal.reason);
    }

    #[test]
    fn free_numbers_skip_used_and_reserved_ones() {
        let disk = gdisk(&[(1, 2048, 4095), (3, 4096, 8191)]);
        assert_eq!(disk.first_free_number(&[]), Some(2));
        assert_eq!(disk.first_free_number(&[2, 4]), Some(5));
        let full: Vec<(u32, u64, u64)> = (1..=128).map(|n| (n, 34 + u64::from(n), 34 + u64::from(n))).collect();
        assert_eq!(gdisk(&full).first_free_number(&[]), None);
    }
}
