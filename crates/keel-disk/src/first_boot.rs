//! The disk's part of first boot: ROOT grows to fill the disk and the disk gets its own
//! identity. Each is one rewrite of the partition table, and `write_gpt` writes the
//! backup before the primary, so a power cut at any point leaves a table that reads
//! either as before (the primary is intact) or as after (the primary is torn and the
//! backup at the disk's end is whole). Running again converges; a table that is already
//! right is not written at all.

use crate::gpt::usable_range;
use crate::gpt::{disk_sectors, read_gpt_of_image, DurableWrite, UnsupportedShape};
use crate::layout::ALIGNMENT_BYTES;
use crate::{read_gpt, write_gpt, Gpt, GptPartition, Guid, SectorSize};
use anyhow::{bail, ensure};
use std::io::{Read, Seek};

/// Flatcar's image disk GUID: while a disk still has it, first boot gives it its own.
pub const IMAGE_DISK_GUID: &str = "00000000-0000-0000-0000-000000000001";

/// The first-boot flag, relative to the ESP's root (Flatcar's `/boot/flatcar/first_boot`):
/// the image ships it, and keel-init removes it once first boot has succeeded.
pub const FIRST_BOOT_FLAG: &str = "flatcar/first_boot";

/// The partition first boot grows: Flatcar's ROOT, which must end the layout.
pub const ROOT_NAME: &str = "ROOT";

/// A GPT attribute bit of a partition (ROOT, or one a first-boot config formats) that is set
/// while keel formats it. mkfs's writes reach the
/// disk in no particular order, so after a power cut a half-made filesystem can look whole;
/// this bit, written through the table's own power-safe rewrite before mkfs starts and
/// cleared after mkfs's data is on disk, is what tells it apart. Bits 48-63 belong to the
/// partition type: 48-56 are Chrome OS's gptprio and 59-63 the Discoverable Partitions
/// Specification's, so keel takes 57, which neither uses.
pub const ROOT_FORMAT_PENDING: u64 = 1 << 57;

/// What `grow_root` did, in sectors of the disk's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grown {
    pub old_sectors: u64,
    pub new_sectors: u64,
}

/// Reads the table for a rewrite: a damaged primary is fine (the rewrite repairs it from
/// the backup), and a table that does not fit the disk is refused before anything is written.
pub(crate) fn table_for_rewrite(dev: &mut (impl Read + Seek), sector_size: SectorSize, image_bytes: Option<u64>) -> anyhow::Result<(Gpt, u64)> {
    let gpt = read_gpt_of_image(dev, sector_size, image_bytes)?;
    let sectors = disk_sectors(dev, sector_size)?;
    let (_, last_usable) = usable_range(sectors, sector_size);
    if let Some(beyond) = gpt.partitions.iter().find(|p| p.last_lba > last_usable) {
        // Either the image is bigger than the disk (which the boot refuses before this) or
        // the table's own entry arrays are smaller than the 128 entries keel writes.
        return Err(UnsupportedShape(format!(
            "partition {} ({:?}) ends at sector {}, past the last sector {last_usable} a table with 128-entry arrays leaves usable: \
             the disk is smaller than the image, or its partitions reach into where keel's backup table would go",
            beyond.number, beyond.name, beyond.last_lba
        ))
        .into());
    }
    Ok((gpt, sectors))
}

/// True when the table on disk is exactly what `partitions` and `disk_guid` describe
/// with both copies intact, agreeing, and the backup at the disk's end.
pub(crate) fn already_written(gpt: &Gpt, sectors: u64, disk_guid: Guid, partitions: &[GptPartition]) -> bool {
    gpt.primary_intact
        && gpt.backup_intact
        && gpt.copies_agree
        && gpt.protective_mbr_current
        && gpt.backup_lba == sectors - 1
        && gpt.disk_guid == disk_guid
        && gpt.last_usable == usable_range(sectors, gpt.sector_size).1
        && gpt.partitions == partitions
}

/// Writes the table `disk_guid` and `partitions` describe, unless the disk holds exactly it
/// already (both copies intact and agreeing, the backup at the disk's end). Returns whether
/// it wrote: a second run of a step that wrote it writes nothing.
pub fn write_gpt_unless_current(
    dev: &mut impl DurableWrite,
    sector_size: SectorSize,
    disk_guid: Guid,
    partitions: &[GptPartition],
) -> anyhow::Result<bool> {
    let sectors = disk_sectors(dev, sector_size)?;
    if read_gpt(dev, sector_size).is_ok_and(|gpt| already_written(&gpt, sectors, disk_guid, partitions)) {
        return Ok(false);
    }
    write_gpt(dev, sector_size, disk_guid, partitions)?;
    Ok(true)
}

/// Extends ROOT, the last partition, to the last whole MiB of the disk, moving the
/// backup table to the disk's end (and repairing a damaged primary). `None` when there
/// was nothing to do.
pub fn grow_root(dev: &mut impl DurableWrite, sector_size: SectorSize) -> anyhow::Result<Option<Grown>> {
    let (gpt, sectors) = table_for_rewrite(dev, sector_size, None)?;
    let root = gpt.by_name(ROOT_NAME)?.ok_or_else(|| UnsupportedShape(format!("the disk has no partition named {ROOT_NAME}")))?;
    if let Some(after) = gpt.partitions.iter().find(|p| p.last_lba > root.last_lba) {
        return Err(UnsupportedShape(format!(
            "{ROOT_NAME} (partition {}) is not the last partition on the disk (partition {} comes after it), so it cannot grow into the free space",
            root.number, after.number
        ))
        .into());
    }
    let (_, last_usable) = usable_range(sectors, sector_size);
    let alignment = ALIGNMENT_BYTES / sector_size.bytes();
    // A disk under 1 MiB has no aligned end: ROOT stays as it is.
    let aligned_end = ((last_usable + 1) / alignment * alignment).checked_sub(1).unwrap_or(root.last_lba);
    let new_last = aligned_end.max(root.last_lba);
    let mut partitions = gpt.partitions.clone();
    for partition in partitions.iter_mut().filter(|p| p.number == root.number) {
        partition.last_lba = new_last;
    }
    if already_written(&gpt, sectors, gpt.disk_guid, &partitions) {
        return Ok(None);
    }
    write_gpt(dev, sector_size, gpt.disk_guid, &partitions)?;
    Ok(Some(Grown { old_sectors: root.last_lba + 1 - root.first_lba, new_sectors: new_last + 1 - root.first_lba }))
}

/// Flatcar's disk-uuid: when the disk GUID is still `image_default`, the disk and ROOT get
/// new GUIDs from `fresh_guid`, skipping any already on the disk (the /usr slots keep
/// theirs: bootloaders name them).
/// A table left half-written by an earlier run is completed either way. Returns the new
/// disk GUID, or `None` when the disk already had its own.
pub fn randomize_identity(
    dev: &mut impl DurableWrite,
    sector_size: SectorSize,
    image_default: Guid,
    mut fresh_guid: impl FnMut() -> Guid,
) -> anyhow::Result<Option<Guid>> {
    let (gpt, sectors) = table_for_rewrite(dev, sector_size, None)?;
    let mut partitions = gpt.partitions.clone();
    let renamed = gpt.disk_guid == image_default;
    // GUIDs must be unique on the disk (cgpt rejects a table with two alike) and not zero.
    let mut taken: Vec<Guid> = partitions.iter().map(|p| p.guid).chain([gpt.disk_guid, Guid::ZERO]).collect();
    let mut unique_guid = || -> anyhow::Result<Guid> {
        for _ in 0..8 {
            let guid = fresh_guid();
            if !taken.contains(&guid) {
                taken.push(guid);
                return Ok(guid);
            }
        }
        bail!("the GUID source keeps giving GUIDs already on the disk; nothing was changed")
    };
    let disk_guid = if renamed {
        // Two partitions named ROOT would get one GUID: refused (Ambiguous) before any write.
        let root_number = gpt.by_name(ROOT_NAME)?.map(|root| root.number);
        let root_guid = unique_guid()?;
        for partition in partitions.iter_mut().filter(|p| Some(p.number) == root_number) {
            partition.guid = root_guid;
        }
        unique_guid()?
    } else {
        gpt.disk_guid
    };
    if !already_written(&gpt, sectors, disk_guid, &partitions) {
        write_gpt(dev, sector_size, disk_guid, &partitions)?;
    }
    Ok(renamed.then_some(disk_guid))
}

/// Sets or clears `ROOT_FORMAT_PENDING` on partition `number`; a table that already says
/// so is not written.
pub fn set_format_pending(dev: &mut impl DurableWrite, sector_size: SectorSize, number: u32, pending: bool) -> anyhow::Result<()> {
    let (gpt, sectors) = table_for_rewrite(dev, sector_size, None)?;
    ensure!(gpt.partition(number).is_some(), "the disk has no partition {number}; nothing was changed");
    let mut partitions = gpt.partitions.clone();
    for partition in partitions.iter_mut().filter(|p| p.number == number) {
        partition.attributes = if pending { partition.attributes | ROOT_FORMAT_PENDING } else { partition.attributes & !ROOT_FORMAT_PENDING };
    }
    if !already_written(&gpt, sectors, gpt.disk_guid, &partitions) {
        write_gpt(dev, sector_size, gpt.disk_guid, &partitions)?;
    }
    Ok(())
}

/// Rewrites a table whose primary copy is damaged (or whose copies disagree) from the
/// intact backup, unchanged otherwise. Returns whether it wrote. The kernel makes no
/// partitions from a disk with a damaged primary, so this is what lets such a disk boot.
/// `image_bytes`: the image's size, at whose end its backup may still be (see
/// `read_gpt_of_image`).
pub fn repair_table(dev: &mut impl DurableWrite, sector_size: SectorSize, image_bytes: Option<u64>) -> anyhow::Result<bool> {
    let (gpt, sectors) = table_for_rewrite(dev, sector_size, image_bytes)?;
    if already_written(&gpt, sectors, gpt.disk_guid, &gpt.partitions) {
        return Ok(false);
    }
    write_gpt(dev, sector_size, gpt.disk_guid, &gpt.partitions)?;
    Ok(true)
}
