use crate::gpt::usable_range;
use crate::{GptPartition, Guid, SectorSize};
use anyhow::{ensure, Context};

const MIB: u64 = 1 << 20;
/// Partitions start and end on 1 MiB boundaries, as every partitioning tool does today,
/// whatever the sector size: 2048 sectors of 512 bytes, 256 of 4096.
pub const ALIGNMENT_BYTES: u64 = MIB;

// Flatcar's type GUIDs (cgpt's names in comments).
pub const TYPE_ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const TYPE_BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
pub const TYPE_USR: &str = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6"; // flatcar-rootfs
const TYPE_LINUX_DATA: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
const TYPE_OEM_CONFIG: &str = "c95dc21a-df0e-4340-8d7b-26cbfa9a03e0"; // flatcar-reserved
const TYPE_ROOT: &str = "3884dd41-8582-4404-b9a8-e9b84f2df50e"; // flatcar-resize
/// Flatcar's fixed partition GUIDs for the two /usr slots: grub and update_engine name them.
pub const USR_A_GUID: &str = "7130c94a-213a-4e5a-8e26-6cce9662f132";
pub const USR_B_GUID: &str = "e03dd35c-7c2d-4a47-b3fe-27f15780a57c";
/// Chrome OS gptprio: priority 1, successful, so firmware-less boots and cgpt agree on A.
const USR_A_ATTRIBUTES: u64 = 1 << 48 | 1 << 56;

/// One partition of a layout. A size of 0 leaves its slot empty (Flatcar's 5 and 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSpec {
    pub number: u32,
    pub label: String,
    pub type_guid: Guid,
    /// Fixed GUIDs stay; the rest are the builder's to choose.
    pub fixed_guid: Option<Guid>,
    pub size_bytes: u64,
    pub attributes: u64,
}

/// Sizes of Flatcar's partitions, in bytes; each a whole number of MiB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutSizes {
    pub esp: u64,
    pub bios_boot: u64,
    pub usr: u64,
    pub oem: u64,
    pub oem_config: u64,
    pub root: u64,
}

impl Default for LayoutSizes {
    /// Flatcar's production sizes; ROOT's is what the image ships with before first boot grows it.
    fn default() -> Self {
        LayoutSizes { esp: 128 * MIB, bios_boot: 2 * MIB, usr: 1024 * MIB, oem: 128 * MIB, oem_config: 64 * MIB, root: 64 * MIB }
    }
}

/// Flatcar's nine-slot layout.
pub fn flatcar_layout(sizes: &LayoutSizes) -> anyhow::Result<Vec<PartitionSpec>> {
    let spec = |number: u32, label: &str, type_guid: &str, fixed: Option<&str>, size_bytes: u64, attributes: u64| {
        Ok::<_, anyhow::Error>(PartitionSpec {
            number,
            label: label.to_string(),
            type_guid: Guid::parse(type_guid)?,
            fixed_guid: fixed.map(Guid::parse).transpose()?,
            size_bytes,
            attributes,
        })
    };
    Ok(vec![
        spec(1, "EFI-SYSTEM", TYPE_ESP, None, sizes.esp, 0)?,
        spec(2, "BIOS-BOOT", TYPE_BIOS_BOOT, None, sizes.bios_boot, 0)?,
        spec(3, "USR-A", TYPE_USR, Some(USR_A_GUID), sizes.usr, USR_A_ATTRIBUTES)?,
        spec(4, "USR-B", TYPE_USR, Some(USR_B_GUID), sizes.usr, 0)?,
        spec(6, "OEM", TYPE_LINUX_DATA, None, sizes.oem, 0)?,
        spec(7, "OEM-CONFIG", TYPE_OEM_CONFIG, None, sizes.oem_config, 0)?,
        spec(9, "ROOT", TYPE_ROOT, None, sizes.root, 0)?,
    ])
}

/// A layout placed on a disk: where each partition starts, and how big the disk is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedLayout {
    /// The unit of the partitions' LBAs: the sector size the table is to be written with.
    pub sector_size: SectorSize,
    pub disk_bytes: u64,
    pub partitions: Vec<GptPartition>,
}

impl PlannedLayout {
    pub fn by_name(&self, name: &str) -> Option<&GptPartition> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

/// Places partitions in number order from the first 1 MiB boundary, each aligned, and
/// sizes the disk to end 1 MiB after the last (room for the backup table).
/// Every LBA counts sectors of `sector_size`; the byte offsets are the same at any size.
/// `guid_for` gives partitions without a fixed GUID theirs.
pub fn plan_layout(
    specs: &[PartitionSpec],
    sector_size: SectorSize,
    mut guid_for: impl FnMut(&PartitionSpec) -> Guid,
) -> anyhow::Result<PlannedLayout> {
    let mut specs: Vec<&PartitionSpec> = specs.iter().filter(|s| s.size_bytes > 0).collect();
    specs.sort_by_key(|s| s.number);
    let alignment = ALIGNMENT_BYTES / sector_size.bytes();
    let mut next = alignment;
    let mut partitions = Vec::new();
    for spec in specs {
        ensure!(
            spec.size_bytes % ALIGNMENT_BYTES == 0,
            "partition {} ({}) is {} bytes, not a whole number of MiB",
            spec.number,
            spec.label,
            spec.size_bytes
        );
        let sectors = spec.size_bytes / sector_size.bytes();
        partitions.push(GptPartition {
            number: spec.number,
            type_guid: spec.type_guid,
            guid: spec.fixed_guid.unwrap_or_else(|| guid_for(spec)),
            first_lba: next,
            last_lba: next + sectors - 1,
            attributes: spec.attributes,
            name: spec.label.clone(),
        });
        next = next.checked_add(sectors).context("the layout is larger than any disk")?;
    }
    let disk_sectors = next + alignment;
    ensure!(usable_range(disk_sectors, sector_size).1 >= next - 1, "the backup table does not fit");
    Ok(PlannedLayout { sector_size, disk_bytes: disk_sectors * sector_size.bytes(), partitions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatcar_layout_is_aligned_numbered_and_sparse_at_either_sector_size() {
        let at = |sector_size| plan_layout(&flatcar_layout(&LayoutSizes::default()).unwrap(), sector_size, |_| Guid::ZERO).unwrap();
        for (sector_size, alignment) in [(SectorSize::Bytes512, 2048), (SectorSize::Bytes4096, 256)] {
            let layout = at(sector_size);
            assert_eq!(layout.sector_size, sector_size);
            let numbers: Vec<u32> = layout.partitions.iter().map(|p| p.number).collect();
            assert_eq!(numbers, [1, 2, 3, 4, 6, 7, 9]);
            assert!(layout.partitions.iter().all(|p| p.first_lba % alignment == 0 && (p.last_lba + 1) % alignment == 0));
            let usr_a = layout.by_name("USR-A").unwrap();
            assert_eq!(usr_a.guid.to_string(), USR_A_GUID);
            assert_eq!(usr_a.size_bytes(sector_size), 1 << 30);
            let root = layout.by_name("ROOT").unwrap();
            assert_eq!(layout.disk_bytes, (root.last_lba + 1) * sector_size.bytes() + MIB);
        }
        // The same bytes at either size: only the unit of the LBAs differs.
        let (small, big) = (at(SectorSize::Bytes512), at(SectorSize::Bytes4096));
        assert_eq!(small.disk_bytes, big.disk_bytes);
        for (a, b) in small.partitions.iter().zip(&big.partitions) {
            assert_eq!(
                (a.start_bytes(SectorSize::Bytes512), a.size_bytes(SectorSize::Bytes512)),
                (b.start_bytes(SectorSize::Bytes4096), b.size_bytes(SectorSize::Bytes4096))
            );
        }
    }

    #[test]
    fn refuses_unaligned_sizes() {
        let sizes = LayoutSizes { usr: 1000, ..LayoutSizes::default() };
        for sector_size in SectorSize::ALL {
            assert!(plan_layout(&flatcar_layout(&sizes).unwrap(), sector_size, |_| Guid::ZERO).is_err());
        }
    }
}
