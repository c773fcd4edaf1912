//! Disks as keel sees them: the GPT (read defensively, written so that every entry keeps
//! its number), the Flatcar partition layout, and which filesystem a partition holds.
//!
//! keel reads and writes GPT itself rather than through the `gpt` crate: that crate's
//! reader asserts (panics) on entry sizes other than 128, which a hostile or merely
//! unusual disk can present to PID 1, and its writer packs entries together, which would
//! renumber Flatcar's sparse layout (OEM is partition 6, ROOT partition 9).

mod crc32;
mod fat;
mod first_boot;
mod gpt;
mod gptprio;
mod guid;
mod kernel;
mod layout;
mod partitioning;
mod probe;
mod sector;

pub use crc32::crc32;
pub use fat::{fat_path_exists, FatError};
pub use first_boot::{
    grow_root, randomize_identity, repair_table, set_format_pending, write_gpt_unless_current, Grown, FIRST_BOOT_FLAG, IMAGE_DISK_GUID,
    ROOT_FORMAT_PENDING, ROOT_NAME,
};
pub use gpt::{
    printable, read_gpt, read_gpt_of_image, usable_range, write_gpt, Ambiguous, DurableWrite, Gpt, GptPartition, SectorSizeMismatch,
    SmallerThanImage, UnsupportedShape,
};
pub use gptprio::{
    mark_slot_successful, prioritize, prioritize_slot, read_usr_slots, rewrite_gptprio, set_slot_gptprio, slot_of, Gptprio, GptprioChange, Slot,
    SlotState, TableWrite, UsrSlots, GPTPRIO_MASK, GPTPRIO_MAX,
};
pub use guid::Guid;
pub use kernel::{
    add_kernel_partition, delete_kernel_partition, grow_mounted_filesystem, logical_sector_size, mounted_partition, reread_partition_table,
    resize_kernel_partition, set_device_read_only, FsGrowth,
};
pub use layout::{
    flatcar_layout, plan_layout, LayoutSizes, PartitionSpec, PlannedLayout, ALIGNMENT_BYTES, TYPE_ESP, TYPE_USR, USR_A_GUID, USR_B_GUID,
};
pub use partitioning::{plan_table, PartitionAction, PartitionOutcome, PartitionRequest, PartitioningError, TablePlan, TableRequest};
pub use probe::{ext4_needs_recovery, probe_filesystem, Filesystem, FsKind, Probe};
pub use sector::SectorSize;
