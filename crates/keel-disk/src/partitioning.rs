//! An Ignition config's partitions for one disk (`storage.disks[]`), planned against the
//! disk's table without writing anything: which entries are kept, created, deleted, resized
//! or recreated, by Ignition's rules, and the whole table the disk has afterwards. Placement
//! (a start or size left out or 0) is what `sgdisk` would choose, so a disk Ignition
//! partitioned is found matching, and a disk keel partitioned matches on the next run.

use crate::{Gpt, GptPartition, Guid, SectorSize};

/// One entry of `storage.disks[].partitions`, in keel-disk's terms (validated already).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRequest {
    /// 0: the one partition already named `label` if there is exactly one (so a second run
    /// finds what the first made), else the lowest number free after the config's deletions.
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
    let _ = (current, disk_sectors, sector_size, request, fresh_guid);
    Err(PartitioningError("partitioning is not implemented yet".into()))
}
