//! A first-boot config's `storage.disks` and `storage.filesystems`, in `ignition-disks`:
//! planned whole against the disks as they are (every refusal and mismatch found before any
//! write), then carried out: each disk's new table in one power-safe write with the kernel
//! told, then each filesystem between setting and clearing a pending mark. Every step
//! converges on a second run, as first boot repeats until it is done.
//!
//! Disks the config names are the user's explicit choice, on whatever disk they are; on the
//! boot disk the partitions first boot itself reads (ESP, USR-A, USR-B, OEM) are refused.

use crate::devices::{block_devices, device_node, partition_number, BootDisk, DeviceWatcher, FoundDevice, SysBlock};
use crate::first_boot::{self, RootDisk};
use crate::log::Log;
use crate::mkfs::{make_filesystem, wipe_signatures, NewFilesystem};
use anyhow::{bail, Context};
use keel_cmdline::{BootParams, DeviceSpec};
use keel_disk::{
    add_kernel_partition, delete_kernel_partition, logical_sector_size, plan_table, probe_filesystem, read_gpt, resize_kernel_partition,
    set_format_pending, usable_range, write_gpt_unless_current, FsKind, Gpt, GptPartition, Guid, PartitionAction, PartitionRequest, Probe,
    SectorSize, TablePlan, TableRequest, ROOT_FORMAT_PENDING, TYPE_ESP, TYPE_USR, USR_A_GUID, USR_B_GUID,
};
use keel_ignition::config::latest::{Disk, Filesystem};
use keel_ignition::Latest;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Boot-disk partitions first boot reads before this stage (or boots from): never changed.
const PROTECTED_NAMES: [&str; 4] = ["BIOS-BOOT", "USR-A", "USR-B", "OEM"];
/// Names first boot finds the boot disk's partitions by: a new partition may not take one.
const BOOT_DISK_NAMES: [&str; 6] = ["EFI-SYSTEM", "BIOS-BOOT", "USR-A", "USR-B", "OEM", "ROOT"];
/// mkfs.xfs refuses a smaller filesystem; found in the plan rather than halfway through.
const XFS_MIN_BYTES: u64 = 300 << 20;
/// sysfs counts partition starts and sizes in 512-byte units, whatever the sector size.
const SYSFS_UNIT: u64 = 512;

/// A whole disk as this stage sees it.
struct KnownDisk {
    /// Its sysfs name (`vdb`).
    name: String,
    node: PathBuf,
    sector_size: SectorSize,
    sectors: u64,
    /// Its table now: `None` when it has none at all, an error text when it is unreadable.
    table: Result<Option<Gpt>, String>,
    boot: bool,
}

/// A device a filesystem goes on: partition `number` of disk `disk` (an index into the
/// known disks) as the plan leaves it, or the whole disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Partition { disk: usize, number: u32 },
    Disk(usize),
}

/// One config disk's table change.
struct TableWork {
    disk: usize,
    /// `$.storage.disks[i]`, for messages.
    at: String,
    request: TableRequest,
    plan: TablePlan,
}

impl TableWork {
    /// Whether the config changes the disk's table at all: a disk whose partitions are all
    /// kept is not written (it may hold no table, but a filesystem or a volume, on purpose).
    fn changes_table(&self) -> bool {
        self.request.wipe_table || self.plan.outcomes.iter().any(|o| !matches!(o.action, PartitionAction::Keep | PartitionAction::StaysAbsent))
    }

    /// Whether the config gives partition `number` a size of its own.
    fn sizes(&self, number: u32) -> bool {
        self.plan.outcomes.iter().any(|o| o.number == number && self.request.partitions.get(o.request).is_some_and(|r| r.size_mib.is_some()))
    }
}

/// How every boot finds the partitions first boot needs: a config may not make a second one
/// that answers (the next boot would find two), nor make ROOT one no boot finds.
pub struct Finds<'a> {
    /// `usr=`, looked up on every disk.
    pub usr: &'a DeviceSpec,
    /// The device this boot found ROOT on (major, minor), and `root=` and `rootfstype=`.
    pub root: (u64, u64),
    pub root_spec: &'a DeviceSpec,
    pub root_fstype: Option<&'a str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FilesystemAction {
    /// A filesystem of the config's format, label and UUID is there, and wipeFilesystem is
    /// not set: kept, not written.
    Keep,
    /// Signatures wiped, and a new filesystem made unless the format is `none`.
    Make,
    /// `none` on a device with nothing on it: nothing to do.
    Nothing,
}

struct FilesystemWork {
    at: String,
    device: String,
    target: Target,
    /// `None` for format `none`.
    kind: Option<FsKind>,
    label: Option<String>,
    uuid: Option<String>,
    options: Vec<String>,
    action: FilesystemAction,
}

/// The config's storage work, planned.
pub struct StoragePlan {
    disks: Vec<KnownDisk>,
    tables: Vec<TableWork>,
    filesystems: Vec<FilesystemWork>,
}

/// Whether the config asks anything of disks and filesystems: nothing is planned (or waited
/// for) when it does not.
fn asks_for_storage(config: &Latest) -> bool {
    config.storage.as_ref().is_some_and(|storage| {
        storage.disks.as_ref().is_some_and(|disks| !disks.is_empty()) || storage.filesystems.as_ref().is_some_and(|list| !list.is_empty())
    })
}

/// The `ignition-disks` stage: the boot disk's own GUIDs, the config's partitions, ROOT
/// grown (unless the config sizes it), then the config's filesystems. Returns what it did.
pub fn ignition_disks(
    config: &Latest,
    params: &BootParams,
    boot_disk: &BootDisk,
    root: &FoundDevice,
    root_disk: Option<&RootDisk>,
    watcher: &DeviceWatcher,
    log: &mut Log,
) -> anyhow::Result<String> {
    let timeout = params.device_timeout;
    // Planned before keel's own first write, so a config the disks cannot satisfy stops first
    // boot with every disk as it was; planned again after it, against the table it left.
    let asks = asks_for_storage(config);
    let mut wait = |deadline| watcher.wait_until(deadline);
    let finds = Finds { usr: &params.usr_data, root: (root.major, root.minor), root_spec: &params.root, root_fstype: params.root_fstype.as_deref() };
    if asks {
        plan(config, boot_disk, &finds, timeout, &mut wait)?;
    }
    let mut detail = vec![first_boot::give_identity(params, boot_disk)?];
    let storage = if asks { Some(plan(config, boot_disk, &finds, timeout, &mut wait)?) } else { None };
    for line in storage.as_ref().map(StoragePlan::partition).transpose()?.unwrap_or_default() {
        log.info(&format!("ignition-disks: {line}"));
    }
    let root_sized = root_disk.is_some_and(|root_disk| storage.as_ref().is_some_and(|s| s.sizes_boot_partition(root_disk.root_number)));
    detail.push(if root_sized {
        "ROOT keeps the size the config gives it, so it was not grown".to_string()
    } else {
        first_boot::grow_root_partition(boot_disk, root, root_disk)?
    });
    if let Some(storage) = &storage {
        for line in storage.make_filesystems()? {
            log.info(&format!("ignition-disks: {line}"));
        }
        detail.push(format!("the config's {} disks and {} filesystems done", storage.tables.len(), storage.filesystems.len()));
    }
    Ok(detail.join("; "))
}

/// Plans the config's disks and filesystems, waiting up to `timeout` (`rd.timeout=`; `None`:
/// for ever) for the devices it names to appear (`wait` waits for a change until the
/// deadline it is given, false once it has passed). Reads only.
fn plan(
    config: &Latest,
    boot_disk: &BootDisk,
    finds: &Finds,
    timeout: Option<Duration>,
    wait: &mut dyn FnMut(Option<Instant>) -> anyhow::Result<bool>,
) -> anyhow::Result<StoragePlan> {
    let storage = config.storage.as_ref();
    let disks = storage.and_then(|s| s.disks.as_deref()).unwrap_or_default();
    let filesystems = storage.and_then(|s| s.filesystems.as_deref()).unwrap_or_default();
    let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
    loop {
        match plan_once(disks, filesystems, boot_disk, finds) {
            Ok(plan) => return Ok(plan),
            Err(Unplanned::Waiting(device)) => {
                if !wait(deadline)? {
                    bail!("{device} did not appear within {} s (rd.timeout=); nothing was written", timeout.unwrap_or_default().as_secs());
                }
            }
            Err(Unplanned::Refused(error)) => return Err(error.context("nothing was written")),
        }
    }
}

/// Why one planning pass did not give a plan: a device not there (yet), or a refusal.
enum Unplanned {
    Waiting(String),
    Refused(anyhow::Error),
}

impl From<anyhow::Error> for Unplanned {
    fn from(error: anyhow::Error) -> Unplanned {
        Unplanned::Refused(error)
    }
}

fn plan_once(disks: &[Disk], filesystems: &[Filesystem], boot_disk: &BootDisk, finds: &Finds) -> Result<StoragePlan, Unplanned> {
    let devices = block_devices();
    let known = known_disks(&devices, boot_disk);
    let root = root_target(finds, &devices, &known);
    let mut tables = Vec::new();
    for (index, config_disk) in disks.iter().enumerate() {
        let at = format!("$.storage.disks[{index}]");
        let disk = match resolve(&config_disk.device, &devices, &known, &tables)? {
            Some(Target::Disk(disk)) => disk,
            Some(Target::Partition { .. }) => {
                return Err(anyhow::anyhow!("{at}.device {:?} is a partition, not a disk", config_disk.device).into());
            }
            None => return Err(Unplanned::Waiting(config_disk.device.clone())),
        };
        if let Some(other) = tables.iter().find(|work: &&TableWork| work.disk == disk) {
            return Err(anyhow::anyhow!("{at}.device {:?} is the same disk as {}.device", config_disk.device, other.at).into());
        }
        let request = table_request(config_disk, &at)?;
        let work = plan_disk(&known[disk], disk, request, finds, at)?;
        tables.push(work);
    }
    if let Some(Target::Partition { disk, number }) = root {
        root_partition_stays(disk, number, &known, &tables, finds)?;
    }
    let mut planned = Vec::new();
    for (index, filesystem) in filesystems.iter().enumerate() {
        let at = format!("$.storage.filesystems[{index}]");
        let Some(target) = resolve(&filesystem.device, &devices, &known, &tables)? else {
            return Err(Unplanned::Waiting(filesystem.device.clone()));
        };
        if let Some(other) = planned.iter().find(|work: &&FilesystemWork| work.target == target || same_disk_twice(work.target, target)) {
            return Err(anyhow::anyhow!(
                "{at}.device {:?} is the same device as {}.device, or a whole disk and one of its partitions",
                filesystem.device,
                other.at
            )
            .into());
        }
        let work = plan_filesystem(filesystem, target, &known, &tables, at)?;
        if work.action == FilesystemAction::Make {
            if Some(target) == root {
                root_stays_findable(&work, target, &known, &tables, finds)?;
            } else {
                not_posing_as_root(&work, target, &known, finds)?;
            }
            if work.kind == Some(FsKind::Xfs) {
                let bytes = size_when_made(target, &known, &tables, root)?;
                if bytes < XFS_MIN_BYTES {
                    return Err(anyhow::anyhow!(
                        "{}: {} has {} MiB; mkfs.xfs makes no filesystem under {} MiB",
                        work.at,
                        work.device,
                        bytes >> 20,
                        XFS_MIN_BYTES >> 20
                    )
                    .into());
                }
            }
        }
        planned.push(work);
    }
    Ok(StoragePlan { disks: known, tables, filesystems: planned })
}

/// Whether `a` and `b` are a whole disk and a partition of it: a filesystem on the disk would
/// wipe the table the other one needs.
fn same_disk_twice(a: Target, b: Target) -> bool {
    match (a, b) {
        (Target::Disk(disk), Target::Partition { disk: other, .. }) | (Target::Partition { disk: other, .. }, Target::Disk(disk)) => disk == other,
        _ => false,
    }
}

/// The device this boot found ROOT on, as a target, when it is a disk or partition of one.
fn root_target(finds: &Finds, devices: &[SysBlock], known: &[KnownDisk]) -> Option<Target> {
    let device = devices.iter().find(|d| (d.major, d.minor) == finds.root)?;
    match &device.partition_of {
        Some((disk_name, number)) => known.iter().position(|d| &d.name == disk_name).map(|disk| Target::Partition { disk, number: *number }),
        None => known.iter().position(|d| d.name == device.name).map(Target::Disk),
    }
}

/// ROOT's partition, as the config's tables leave it, must still answer to `root=`.
fn root_partition_stays(disk: usize, number: u32, known: &[KnownDisk], tables: &[TableWork], finds: &Finds) -> anyhow::Result<()> {
    let Some(work) = tables.iter().find(|work| work.disk == disk) else { return Ok(()) };
    let after = work.plan.partitions.iter().find(|p| p.number == number);
    let lost = match (after, finds.root_spec) {
        (None, _) => Some("deletes it".to_string()),
        (Some(p), DeviceSpec::PartLabel(label)) if p.name != *label => Some(format!("renames it to {:?}", p.name)),
        (Some(p), DeviceSpec::PartUuid(guid)) if !p.guid.to_string().eq_ignore_ascii_case(guid) => Some(format!("gives it the GUID {}", p.guid)),
        _ => None,
    };
    match lost {
        Some(lost) => bail!(
            "{}: partition {number} of {} is ROOT (root={}), and the config {lost}: no later boot would find ROOT",
            work.at,
            known[disk].node.display(),
            finds.root_spec
        ),
        None => Ok(()),
    }
}

/// ROOT made anew by the config must still be ROOT to the `root` stage and to every later
/// boot, also after a power cut in the middle of it: a filesystem keel mounts, of the type
/// `rootfstype=` says, on the boot disk (where keel finds a blank or half-made ROOT by its
/// partition name and the pending mark), with the label `root=LABEL=` names.
fn root_stays_findable(work: &FilesystemWork, target: Target, known: &[KnownDisk], tables: &[TableWork], finds: &Finds) -> anyhow::Result<()> {
    let at = &work.at;
    let Target::Partition { disk, number } = target else {
        bail!("{at}: ROOT is a whole disk; keel reformats only a ROOT partition of the boot disk")
    };
    if !known[disk].boot {
        bail!("{at}: ROOT is not on the boot disk; keel reformats only a ROOT on the disk it booted from (after a cut format no boot would find it)");
    }
    let Some(kind) = work.kind else { bail!("{at}: format none would leave ROOT without a filesystem") };
    if !matches!(kind, FsKind::Ext4 | FsKind::Xfs | FsKind::Btrfs) {
        bail!("{at}: ROOT cannot be {}: keel mounts ROOT as ext4, xfs or btrfs", kind.mount_type());
    }
    if !crate::root::can_mount(kind) {
        bail!(
            "{at}: ROOT would be made {kind} but this initrd cannot mount {kind}: rebuild it with `keel initrd build --root-filesystems ext4,{kind}`",
            kind = kind.mount_type()
        );
    }
    if let Some(fstype) = finds.root_fstype.filter(|fstype| *fstype != kind.mount_type()) {
        bail!("{at}: rootfstype={fstype} is on the command line, and ROOT would be made {}", kind.mount_type());
    }
    // The name the config's table leaves: what a rerun after a cut format looks for.
    let name = table_after(disk, known, tables).and_then(|partitions| partitions.iter().find(|p| p.number == number)).map(|p| p.name.clone());
    match finds.root_spec {
        DeviceSpec::Label(label) if work.label.as_deref() != Some(label.as_str()) => {
            bail!("{at}: later boots find ROOT by its filesystem label (root={}), so the new filesystem needs \"label\": {label:?}", finds.root_spec)
        }
        DeviceSpec::Label(label) if name.as_deref() != Some(label.as_str()) => bail!(
            "{at}: root={} names a label that ROOT's partition name ({name:?}) is not: after a cut format no boot would find ROOT",
            finds.root_spec
        ),
        DeviceSpec::Uuid(_) => bail!(
            "{at}: later boots find ROOT by its filesystem UUID (root={}), which a cut format leaves nowhere; use root=LABEL= to reformat ROOT",
            finds.root_spec
        ),
        _ => Ok(()),
    }
}

/// A filesystem made elsewhere on the boot disk may not answer to `root=` as ROOT does.
fn not_posing_as_root(work: &FilesystemWork, target: Target, known: &[KnownDisk], finds: &Finds) -> anyhow::Result<()> {
    let disk = match target {
        Target::Disk(disk) | Target::Partition { disk, .. } => disk,
    };
    let poses = match finds.root_spec {
        DeviceSpec::Label(label) => work.label.as_deref() == Some(label.as_str()),
        DeviceSpec::Uuid(uuid) => work.uuid.as_deref().is_some_and(|u| canonical_uuid(u) == canonical_uuid(uuid)),
        _ => false,
    };
    if poses && known[disk].boot {
        bail!("{}: a filesystem answering to root={} besides ROOT would leave later boots two ROOTs", work.at, finds.root_spec);
    }
    Ok(())
}

/// How big `target` is when its filesystem is made: ROOT grows to the disk's end first
/// (unless the config sizes it, or a partition comes after it), as the grow step does.
fn size_when_made(target: Target, known: &[KnownDisk], tables: &[TableWork], root: Option<Target>) -> anyhow::Result<u64> {
    let (disk_index, number) = match target {
        Target::Disk(disk) => return Ok(known[disk].sectors * known[disk].sector_size.bytes()),
        Target::Partition { disk, number } => (disk, number),
    };
    let disk = &known[disk_index];
    let partitions = table_after(disk_index, known, tables).unwrap_or_default();
    let partition = partitions.iter().find(|p| p.number == number).with_context(|| format!("partition {number} is not in the table"))?;
    let sized = tables.iter().any(|work| work.disk == disk_index && work.sizes(number));
    let last = partitions.iter().all(|p| p.last_lba <= partition.last_lba);
    if Some(target) == root && disk.boot && !sized && last && partition.name == keel_disk::ROOT_NAME {
        let alignment = keel_disk::ALIGNMENT_BYTES / disk.sector_size.bytes();
        let (_, last_usable) = usable_range(disk.sectors, disk.sector_size);
        let grown_end = ((last_usable + 1) / alignment * alignment).saturating_sub(1).max(partition.last_lba);
        return Ok((grown_end + 1 - partition.first_lba) * disk.sector_size.bytes());
    }
    Ok(partition.size_bytes(disk.sector_size))
}

/// Every whole disk there is, with its table read. Device-mapper devices, RAM disks and
/// optical drives hold no table a config partitions.
fn known_disks(devices: &[SysBlock], boot_disk: &BootDisk) -> Vec<KnownDisk> {
    const NOT_DISKS: [&str; 4] = ["dm-", "ram", "zram", "sr"];
    devices
        .iter()
        .filter(|device| device.partition_of.is_none() && !NOT_DISKS.iter().any(|prefix| device.name.starts_with(prefix)))
        .filter_map(|device| {
            let node = device_node(device).ok()?;
            let mut file = File::open(&node).ok()?;
            let sector_size = logical_sector_size(&file).ok()?;
            let sectors = file.seek(SeekFrom::End(0)).ok()? / sector_size.bytes();
            let table = read_table(&mut file, sector_size);
            let boot = device.major == boot_disk.disk.major && device.minor == boot_disk.disk.minor;
            Some(KnownDisk { name: device.name.clone(), node, sector_size, sectors, table, boot })
        })
        .collect()
}

/// A disk's table; `None` when nothing on it looks like a partition table (no GPT header at
/// either end, no MBR boot signature), which is a disk to partition from scratch.
fn read_table(file: &mut File, sector_size: SectorSize) -> Result<Option<Gpt>, String> {
    match read_gpt(file, sector_size) {
        Ok(gpt) => Ok(Some(gpt)),
        Err(error) => {
            let mut head = vec![0u8; 2 * sector_size.bytes() as usize];
            let read = file.seek(SeekFrom::Start(0)).and_then(|_| file.read_exact(&mut head));
            let looks_partitioned = read.is_err() || head[510..512] == [0x55, 0xaa] || head[sector_size.bytes() as usize..].starts_with(b"EFI PART");
            // A whole-disk vfat also ends its first sector with 55 AA, but is a filesystem.
            let filesystem = matches!(probe_filesystem(file), Ok(Probe::Filesystem(_)));
            if looks_partitioned && !filesystem {
                Err(format!("{error:#}"))
            } else {
                Ok(None)
            }
        }
    }
}

fn table_request(disk: &Disk, at: &str) -> anyhow::Result<TableRequest> {
    let partitions = disk.partitions.as_deref().unwrap_or_default();
    let guid = |text: &Option<String>, field: String| -> anyhow::Result<Option<Guid>> {
        text.as_deref().filter(|text| !text.is_empty()).map(|text| Guid::parse(text).with_context(|| field)).transpose()
    };
    let unsigned = |value: Option<i64>, field: String| -> anyhow::Result<Option<u64>> {
        value.map(|value| u64::try_from(value).with_context(|| format!("{field} is negative"))).transpose()
    };
    let requests = partitions
        .iter()
        .enumerate()
        .map(|(index, partition)| {
            let at = format!("{at}.partitions[{index}]");
            Ok(PartitionRequest {
                number: u32::try_from(partition.number.unwrap_or(0)).with_context(|| format!("{at}.number is out of range"))?,
                label: partition.label.clone(),
                start_mib: unsigned(partition.start_mib, format!("{at}.startMiB"))?,
                size_mib: unsigned(partition.size_mib, format!("{at}.sizeMiB"))?,
                type_guid: guid(&partition.type_guid, format!("{at}.typeGuid"))?,
                guid: guid(&partition.guid, format!("{at}.guid"))?,
                wipe_partition_entry: partition.wipe_partition_entry == Some(true),
                should_exist: partition.should_exist != Some(false),
                resize: partition.resize == Some(true),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(TableRequest { wipe_table: disk.wipe_table == Some(true), partitions: requests })
}

/// Whether partition `partition` of the boot disk is one first boot depends on.
fn protected(partition: &GptPartition) -> bool {
    PROTECTED_NAMES.contains(&partition.name.as_str()) || Guid::parse(TYPE_ESP).is_ok_and(|esp| partition.type_guid == esp)
}

/// Partitions first boot needs are found by name, type and GUID on every boot: /usr's slots
/// (and `usr=`) on any disk, the ESP, OEM and ROOT on the boot disk. A partition the config
/// makes may not take one of those identities, or the next boot would find two.
fn check_identities(plan: &TablePlan, before: &[GptPartition], boot: bool, finds: &Finds, at: &str) -> anyhow::Result<()> {
    let identity_types = [TYPE_ESP, TYPE_USR].map(Guid::parse);
    let slot_guids = [USR_A_GUID, USR_B_GUID].map(Guid::parse);
    let usr_label = match finds.usr {
        DeviceSpec::PartLabel(label) => Some(label.as_str()),
        _ => None,
    };
    let root_label = match finds.root_spec {
        DeviceSpec::PartLabel(label) => Some(label.as_str()),
        _ => None,
    };
    let spec_guids: Vec<&str> = [finds.usr, finds.root_spec]
        .into_iter()
        .filter_map(|spec| match spec {
            DeviceSpec::PartUuid(guid) => Some(guid.as_str()),
            _ => None,
        })
        .collect();
    for outcome in plan.outcomes.iter().filter(|o| matches!(o.action, PartitionAction::Create | PartitionAction::Recreate)) {
        let Some(made) = plan.partitions.iter().find(|p| p.number == outcome.number) else { continue };
        let had_the_name = before.iter().any(|old| old.number == made.number && old.name == made.name);
        let had_the_guid = before.iter().any(|old| old.number == made.number && old.guid == made.guid);
        let name = made.name.as_str();
        let taken_name =
            ["USR-A", "USR-B"].contains(&name) || usr_label == Some(name) || (boot && (BOOT_DISK_NAMES.contains(&name) || root_label == Some(name)));
        let taken = if taken_name && !had_the_name {
            Some(format!("the name {name:?}"))
        } else if boot && identity_types.iter().any(|t| t.as_ref().is_ok_and(|t| *t == made.type_guid)) {
            Some(format!("the type {}", made.type_guid))
        } else if !had_the_guid
            && (slot_guids.iter().any(|g| g.as_ref().is_ok_and(|g| *g == made.guid))
                || spec_guids.iter().any(|g| made.guid.to_string().eq_ignore_ascii_case(g)))
        {
            Some(format!("the GUID {}", made.guid))
        } else {
            None
        };
        if let Some(taken) = taken {
            bail!("{at}.partitions[{}]: partition {} would take {taken}, by which first boot finds its own partitions", outcome.request, made.number);
        }
    }
    Ok(())
}

/// A table keel acts on must be the one the kernel reads, or one keel's own cut write left
/// torn: the protective MBR in place (else the kernel reads the MBR's partitions), and, when
/// a copy is damaged, no kernel partition elsewhere than the intact copy puts it.
fn trusted_table(disk: &KnownDisk) -> anyhow::Result<()> {
    let Ok(Some(gpt)) = &disk.table else { return Ok(()) };
    if !gpt.protective_mbr {
        bail!(
            "sector 0 of {} holds an MBR partition table, which the kernel reads instead of the GPT; set wipeTable to replace both",
            disk.node.display()
        );
    }
    if !(gpt.primary_intact && gpt.backup_intact && gpt.copies_agree) {
        let units = |p: &GptPartition| (p.number, p.start_bytes(disk.sector_size) / SYSFS_UNIT, p.size_bytes(disk.sector_size) / SYSFS_UNIT);
        if let Some((number, _, _)) = kernel_partitions(&disk.name).into_iter().find(|kernel| !gpt.partitions.iter().any(|p| units(p) == *kernel)) {
            bail!("the GPT of {} is damaged, and the kernel's partition {number} is not where its intact copy puts it", disk.node.display());
        }
    }
    Ok(())
}

/// Whether the kernel's partition `number` of `disk` is in use: mounted, or held by a
/// device-mapper target, RAID or another stacked device.
fn in_use(disk: &KnownDisk, number: u32) -> bool {
    let Some(device) = block_devices().into_iter().find(|d| d.partition_of == Some((disk.name.clone(), number))) else { return false };
    let holders = std::fs::read_dir(Path::new("/sys/class/block").join(&device.name).join("holders"));
    let held = holders.is_ok_and(|mut entries| entries.next().is_some());
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|mounts| {
        let id = format!("{}:{}", device.major, device.minor);
        mounts.lines().any(|line| line.split_whitespace().nth(2) == Some(id.as_str()))
    });
    held || mounted
}

fn plan_disk(disk: &KnownDisk, index: usize, request: TableRequest, finds: &Finds, at: String) -> Result<TableWork, Unplanned> {
    let current = match (&disk.table, request.wipe_table) {
        (_, true) => None,
        (Ok(table), false) => table.clone(),
        (Err(error), false) => {
            return Err(
                anyhow::anyhow!("{at}: {} has no GPT keel can read ({error}); set wipeTable to replace what is there", disk.node.display()).into()
            )
        }
    };
    if disk.boot && request.wipe_table {
        return Err(anyhow::anyhow!("{at}: wipeTable on the boot disk {} would destroy the ESP, /usr and OEM partitions", disk.node.display()).into());
    }
    let mut draw_error = None;
    let plan = plan_table(current.as_ref(), disk.sectors, disk.sector_size, &request, &mut || {
        first_boot::early_random_guid().unwrap_or_else(|error| {
            draw_error = Some(error);
            Guid::ZERO
        })
    });
    if let Some(error) = draw_error {
        return Err(error.context("cannot draw GUIDs for new partitions").into());
    }
    let mut plan = plan.map_err(|error| anyhow::anyhow!("{at} on {}: {error}", disk.node.display()))?;
    // A partition made again where a format was cut short (the old table, wiped or not, has
    // the mark on an entry of the same number and extent) keeps the mark: its filesystem is
    // made again, and no table write in between can clear the mark first.
    if let Ok(Some(old)) = &disk.table {
        for partition in plan.partitions.iter_mut() {
            let cut_short = old
                .partitions
                .iter()
                .find(|o| o.number == partition.number && o.first_lba == partition.first_lba && o.last_lba == partition.last_lba);
            partition.attributes |= cut_short.map_or(0, |o| o.attributes & ROOT_FORMAT_PENDING);
        }
    }
    let before = current.as_ref().map_or(&[][..], |gpt| &gpt.partitions[..]);
    if let Some((a, b)) =
        plan.partitions.iter().enumerate().find_map(|(i, p)| plan.partitions[i + 1..].iter().find(|o| o.guid == p.guid).map(|o| (p, o)))
    {
        return Err(
            anyhow::anyhow!("{at}: partitions {} and {} of {} would share the GUID {}", a.number, b.number, disk.node.display(), a.guid).into()
        );
    }
    check_identities(&plan, before, disk.boot, finds, &at)?;
    if !request.wipe_table {
        trusted_table(disk).and_then(|()| repairable(disk)).with_context(|| at.clone())?;
    }
    // Every partition the kernel has where the new table will not is dropped from the kernel
    // after the write: it may not be in use (the write would be done, the drop refused).
    let planned_units = |p: &GptPartition| (p.number, p.start_bytes(disk.sector_size) / SYSFS_UNIT, p.size_bytes(disk.sector_size) / SYSFS_UNIT);
    let moved = kernel_partitions(&disk.name).into_iter().filter(|kernel| !plan.partitions.iter().any(|p| planned_units(p) == *kernel));
    if let Some((number, _, _)) = moved.into_iter().find(|(number, _, _)| in_use(disk, *number)) {
        return Err(anyhow::anyhow!("{at}: the config changes partition {number} of {}, which is in use", disk.node.display()).into());
    }
    for outcome in &plan.outcomes {
        let touched = !matches!(outcome.action, PartitionAction::Keep | PartitionAction::StaysAbsent);
        let existing = before.iter().find(|p| p.number == outcome.number);
        if touched && disk.boot && existing.is_some_and(protected) {
            return Err(anyhow::anyhow!(
                "{at}.partitions[{}]: partition {} of the boot disk ({:?}) is one first boot itself reads or boots from; keel does not change it",
                outcome.request,
                outcome.number,
                existing.map_or("", |p| p.name.as_str())
            )
            .into());
        }
        if touched && existing.is_some() && in_use(disk, outcome.number) {
            return Err(
                anyhow::anyhow!("{at}.partitions[{}]: partition {} of {} is in use", outcome.request, outcome.number, disk.node.display()).into()
            );
        }
    }
    if request.wipe_table {
        // The kernel's partitions of a wiped table must not be in use either.
        if let Some((_, number)) =
            block_devices().into_iter().filter_map(|d| d.partition_of).find(|(name, number)| *name == disk.name && in_use(disk, *number))
        {
            return Err(anyhow::anyhow!("{at}: wipeTable, but partition {number} of {} is in use", disk.node.display()).into());
        }
    }
    Ok(TableWork { disk: index, at, request, plan })
}

/// The table `disk` has once the plan ran: the planned one for a config disk, else its own.
fn table_after<'a>(disk: usize, known: &'a [KnownDisk], tables: &'a [TableWork]) -> Option<&'a [GptPartition]> {
    match tables.iter().find(|work| work.disk == disk) {
        Some(work) => Some(&work.plan.partitions),
        None => known[disk].table.as_ref().ok().and_then(Option::as_ref).map(|gpt| &gpt.partitions[..]),
    }
}

/// udev's escaping of names in `/dev/disk/by-*` links: `\xNN` for a byte it does not allow.
fn udev_unescape(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes.get(index..index + 4).filter(|b| b[0] == b'\\' && b[1] == b'x').and_then(|b| std::str::from_utf8(&b[2..]).ok());
        match escaped.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
            Some(byte) => {
                out.push(byte);
                index += 4;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The one target `matches` picks among every disk's planned partitions; two is an error
/// (udev would pick whichever it saw last).
fn only_partition(
    device: &str,
    known: &[KnownDisk],
    tables: &[TableWork],
    matches: impl Fn(&GptPartition) -> bool,
) -> anyhow::Result<Option<Target>> {
    let mut found = (0..known.len())
        .flat_map(|disk| table_after(disk, known, tables).unwrap_or_default().iter().filter(|p| matches(p)).map(move |p| (disk, p.number)));
    let first = found.next();
    if let (Some((disk, number)), Some((other_disk, other_number))) = (first, found.next()) {
        bail!(
            "{device} is ambiguous: partition {number} of {} and partition {other_number} of {} both answer to it",
            known[disk].node.display(),
            known[other_disk].node.display()
        );
    }
    Ok(first.map(|(disk, number)| Target::Partition { disk, number }))
}

/// The device a config path names, as the plan leaves the disks, without udev: kernel names
/// (`/dev/vdb`, `/dev/vdb1`, `/dev/nvme0n1p1`), and the partition-table and filesystem
/// `/dev/disk/by-*` names. `None`: not there (yet).
fn resolve(device: &str, devices: &[SysBlock], known: &[KnownDisk], tables: &[TableWork]) -> anyhow::Result<Option<Target>> {
    if let Some(label) = device.strip_prefix("/dev/disk/by-partlabel/") {
        let label = udev_unescape(label);
        return only_partition(device, known, tables, |p| p.name == label);
    }
    if let Some(guid) = device.strip_prefix("/dev/disk/by-partuuid/") {
        let guid = Guid::parse(guid).with_context(|| format!("{device} does not name a partition GUID"))?;
        return only_partition(device, known, tables, |p| p.guid == guid);
    }
    let by_filesystem = |wanted: &dyn Fn(&keel_disk::Filesystem) -> bool| -> anyhow::Result<Option<Target>> {
        let mut found = Vec::new();
        for (disk, known_disk) in known.iter().enumerate() {
            let partitions = table_after(disk, known, tables).unwrap_or_default();
            let targets = if partitions.is_empty() {
                vec![Target::Disk(disk)]
            } else {
                partitions.iter().map(|p| Target::Partition { disk, number: p.number }).collect()
            };
            for target in targets {
                if let Ok(Probe::Filesystem(filesystem)) = probe_target(known_disk, target, known, tables)
                    && wanted(&filesystem)
                {
                    found.push(target);
                }
            }
        }
        match found[..] {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            _ => bail!("{device} is ambiguous: {} filesystems answer to it", found.len()),
        }
    };
    if let Some(label) = device.strip_prefix("/dev/disk/by-label/") {
        let label = udev_unescape(label);
        return by_filesystem(&|filesystem| filesystem.label == label);
    }
    if let Some(uuid) = device.strip_prefix("/dev/disk/by-uuid/") {
        let uuid = canonical_uuid(uuid);
        return by_filesystem(&|filesystem| canonical_uuid(&filesystem.uuid) == uuid);
    }
    if device.starts_with("/dev/disk/") {
        bail!(
            "{device}: keel's initrd has no udev, and of the /dev/disk names it knows by-partlabel, by-partuuid, by-label and by-uuid; \
             name the device one of those ways or by its kernel name (/dev/vdb)"
        );
    }
    let Some(name) = device.strip_prefix("/dev/") else {
        bail!("{device} is not a device path under /dev");
    };
    if name.starts_with("mapper/") {
        bail!("{device} is a device-mapper device, which holds no partitions or filesystems a config makes");
    }
    // sysfs writes the '/' of a device name (cciss/c0d0) as '!'.
    let name = name.replace('/', "!");
    if let Some(disk) = known.iter().position(|disk| disk.name == name) {
        return Ok(Some(Target::Disk(disk)));
    }
    for (disk, known_disk) in known.iter().enumerate() {
        let Some(number) = partition_number(&known_disk.name, &name) else { continue };
        if table_after(disk, known, tables).unwrap_or_default().iter().any(|p| p.number == number) {
            return Ok(Some(Target::Partition { disk, number }));
        }
        if tables.iter().any(|work| work.disk == disk) {
            bail!("{device} is partition {number} of {}, which the config's partitions leave out", known_disk.node.display());
        }
    }
    if devices.iter().any(|d| d.name == name) {
        bail!("{device} is not a disk or a partition of a disk keel can partition");
    }
    Ok(None)
}

/// A UUID as Ignition compares them: lower case, and a vfat serial without its dash.
fn canonical_uuid(uuid: &str) -> String {
    let lower = uuid.to_lowercase();
    if lower.len() == 9 && lower.as_bytes()[4] == b'-' {
        lower.replace('-', "")
    } else {
        lower
    }
}

/// A window onto `length` bytes of a device from `start`: a partition the kernel may not
/// have yet, read through its disk.
struct Window<'a> {
    device: &'a mut File,
    start: u64,
    length: u64,
    position: u64,
}

impl Read for Window<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let left = self.length.saturating_sub(self.position);
        let wanted = buffer.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let at = self.start.checked_add(self.position).ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        self.device.seek(SeekFrom::Start(at))?;
        let read = self.device.read(&mut buffer[..wanted])?;
        self.position += read as u64;
        Ok(read)
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let position = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(offset) => self.length.checked_add_signed(offset),
            SeekFrom::Current(offset) => self.position.checked_add_signed(offset),
        };
        self.position = position.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        Ok(self.position)
    }
}

/// What `target` holds now, where the plan puts it: a new partition is read at its planned
/// place, as blkid would see it once the table is written.
fn probe_target(disk: &KnownDisk, target: Target, known: &[KnownDisk], tables: &[TableWork]) -> anyhow::Result<Probe> {
    let mut file = File::open(&disk.node).with_context(|| format!("cannot open {}", disk.node.display()))?;
    let (start, length) = match target {
        Target::Disk(_) => (0, disk.sectors * disk.sector_size.bytes()),
        Target::Partition { disk: index, number } => {
            let partition = table_after(index, known, tables)
                .and_then(|partitions| partitions.iter().find(|p| p.number == number))
                .with_context(|| format!("partition {number} of {} is not in its table", disk.node.display()))?;
            (partition.start_bytes(disk.sector_size), partition.size_bytes(disk.sector_size))
        }
    };
    // The disk's page cache is not the partition's: what mkfs wrote through the partition's
    // node since this disk was last read may sit behind stale cached pages here.
    rustix::fs::fadvise(&file, start, std::num::NonZeroU64::new(length), rustix::fs::Advice::DontNeed)
        .with_context(|| format!("cannot drop the cached pages of {}", disk.node.display()))?;
    Ok(probe_filesystem(&mut Window { device: &mut file, start, length, position: 0 })?)
}

fn target_text(target: Target, known: &[KnownDisk]) -> String {
    match target {
        Target::Disk(disk) => known[disk].node.display().to_string(),
        Target::Partition { disk, number } => format!("partition {number} of {}", known[disk].node.display()),
    }
}

fn plan_filesystem(filesystem: &Filesystem, target: Target, known: &[KnownDisk], tables: &[TableWork], at: String) -> anyhow::Result<FilesystemWork> {
    let device = filesystem.device.clone();
    let (disk_index, number) = match target {
        Target::Disk(disk) => (disk, None),
        Target::Partition { disk, number } => (disk, Some(number)),
    };
    let disk = &known[disk_index];
    if number.is_none() && tables.iter().any(|work| work.disk == disk_index && work.changes_table()) {
        bail!("{at}: {device} is a whole disk the config also partitions; put the filesystem on one of its partitions");
    }
    let planned = number.and_then(|number| table_after(disk_index, known, tables)?.iter().find(|p| p.number == number));
    if number.is_some() {
        repairable(disk).with_context(|| format!("{at}: {device}"))?;
    }
    let format = filesystem.format.as_deref().filter(|format| !format.is_empty());
    let kind = match format {
        None | Some("none") => None,
        Some("ext4") => Some(FsKind::Ext4),
        Some("xfs") => Some(FsKind::Xfs),
        Some("btrfs") => Some(FsKind::Btrfs),
        Some("vfat") => Some(FsKind::Vfat),
        Some("swap") => Some(FsKind::Swap),
        Some(other) => bail!("{at}.format {other:?} is not one keel makes"),
    };
    if filesystem.path.as_deref().is_some_and(|path| !path.is_empty()) {
        bail!("{at}.path: mounting filesystems for the files stage is not supported by keel yet (later boots need a mount unit anyway)");
    }
    let wipe = filesystem.wipe_filesystem == Some(true);
    let pending = planned.is_some_and(|p| p.attributes & ROOT_FORMAT_PENDING != 0);
    let action = if format.is_none() {
        FilesystemAction::Nothing
    } else if wipe || pending {
        FilesystemAction::Make
    } else {
        let found = probe_target(disk, target, known, tables)?;
        match (&found, kind) {
            // `none` without a wipe writes nothing, whatever is there that is not a filesystem.
            (Probe::Blank | Probe::Unknown, None) => FilesystemAction::Nothing,
            (Probe::Blank, Some(_)) => FilesystemAction::Make,
            (Probe::Filesystem(existing), Some(kind))
                if existing.kind == kind
                    && filesystem.label.as_ref().is_none_or(|label| *label == existing.label)
                    && filesystem.uuid.as_ref().is_none_or(|uuid| canonical_uuid(uuid) == canonical_uuid(&existing.uuid)) =>
            {
                FilesystemAction::Keep
            }
            (Probe::Filesystem(existing), _) => bail!(
                "{at}: {device} holds a {} filesystem (label {:?}, UUID {}), not the one the config describes, and wipeFilesystem is not set",
                existing.kind.mount_type(),
                keel_disk::printable(&existing.label),
                existing.uuid
            ),
            (_, _) => {
                bail!("{at}: {device} holds data keel does not recognise as a filesystem; it is not formatted over unless wipeFilesystem is set")
            }
        }
    };
    if action == FilesystemAction::Make {
        if disk.boot && (number.is_none() || planned.is_some_and(protected)) {
            bail!(
                "{at}: {device} is {} of the boot disk, which first boot itself reads or boots from; keel does not format it",
                match planned {
                    Some(p) => format!("partition {} ({:?})", p.number, p.name),
                    None => "the whole".to_string(),
                }
            );
        }
        if number.is_none() && !wipe {
            bail!(
                "{at}: {device} is a whole disk, where keel has no place to mark a format in progress (a power cut could leave a half-made \
                 filesystem that a second run keeps); set wipeFilesystem: true, or put the filesystem on a partition"
            );
        }
        if let Some(kind) = kind {
            let program = crate::mkfs::mkfs_program(kind);
            if !program.exists() {
                bail!("{at}: this initrd cannot make {}: it has no {}", kind.mount_type(), program.display());
            }
        }
        if number.is_some_and(|number| in_use(disk, number)) {
            bail!("{at}: {device} is in use");
        }
        if device.starts_with("/dev/disk/by-label/") || device.starts_with("/dev/disk/by-uuid/") {
            bail!(
                "{at}: {device} names a filesystem by what the new one replaces: after a power cut during the format nothing would answer \
                 to it; name the device by partition label, partition UUID or kernel name to format it"
            );
        }
        if let (Some(kind), Some(uuid)) = (kind, &filesystem.uuid) {
            uuid_fits(kind, uuid).with_context(|| format!("{at}.uuid"))?;
        }
        if let (Some(number), false) = (number, tables.iter().any(|work| work.disk == disk_index && work.changes_table())) {
            marks_safely(disk, number).with_context(|| format!("{at}: {device}"))?;
        }
    }
    Ok(FilesystemWork {
        at,
        device,
        target,
        kind,
        label: filesystem.label.clone(),
        uuid: filesystem.uuid.clone(),
        options: filesystem.options.clone().unwrap_or_default(),
        action,
    })
}

/// A UUID of the config as mkfs for `kind` takes it: an RFC 4122 text, or for vfat a volume
/// serial of 8 hex digits (with or without a dash in the middle). Ignition does not check,
/// and mkfs would refuse only after the tables were written.
fn uuid_fits(kind: FsKind, uuid: &str) -> anyhow::Result<()> {
    if kind == FsKind::Vfat {
        let serial = match uuid.split_once('-') {
            Some((high, low)) if high.len() == 4 && low.len() == 4 => format!("{high}{low}"),
            _ => uuid.to_string(),
        };
        anyhow::ensure!(serial.len() == 8 && serial.bytes().all(|b| b.is_ascii_hexdigit()), "{uuid:?} is not a vfat volume serial (XXXX-XXXX)");
        return Ok(());
    }
    Guid::parse(uuid).map(|_| ())
}

/// A partition of a disk the config does not partition gets its filesystem under the pending
/// mark, which rewrites that disk's table in keel's form: the table must have that form
/// already, and the kernel must see the partition where the table has it (a disk whose MBR
/// the kernel reads instead would get mkfs somewhere else than where keel looked).
fn marks_safely(disk: &KnownDisk, number: u32) -> anyhow::Result<()> {
    let Ok(Some(gpt)) = &disk.table else { bail!("its disk has no GPT keel can read") };
    trusted_table(disk)?;
    rewritable(disk, gpt)?;
    // A table torn by a cut mark is repaired before the format; the kernel follows it then.
    if gpt.primary_intact && gpt.backup_intact && gpt.copies_agree {
        let partition = gpt.partition(number).with_context(|| format!("partition {number} is not in the table of {}", disk.node.display()))?;
        let expected = (partition.start_bytes(disk.sector_size) / SYSFS_UNIT, partition.size_bytes(disk.sector_size) / SYSFS_UNIT);
        if kernel_extent(&disk.name, number) != Some(expected) {
            bail!("the kernel does not see partition {number} of {} where its GPT puts it", disk.node.display());
        }
    }
    Ok(())
}

/// Whether keel can write `gpt` back to `disk` in its own form (128 entries, backup at the
/// end): what the pending mark and the repair of a torn table do.
fn rewritable(disk: &KnownDisk, gpt: &Gpt) -> anyhow::Result<()> {
    let (first, last) = usable_range(disk.sectors, disk.sector_size);
    if let Some(odd) = gpt.partitions.iter().find(|p| p.number > 128 || p.first_lba < first || p.last_lba > last) {
        bail!("partition {} of {} lies outside a table keel can rewrite (128 entries, backup at the end)", odd.number, disk.node.display());
    }
    Ok(())
}

/// A disk a torn table of which `partition()` repairs: checked before any write.
fn repairable(disk: &KnownDisk) -> anyhow::Result<()> {
    match &disk.table {
        Ok(Some(gpt)) if !(gpt.primary_intact && gpt.backup_intact && gpt.copies_agree) => rewritable(disk, gpt),
        _ => Ok(()),
    }
}

/// Where the kernel has partition `number` of the disk `disk_name`, in sysfs's 512-byte units.
fn kernel_extent(disk_name: &str, number: u32) -> Option<(u64, u64)> {
    kernel_partitions(disk_name).into_iter().find(|(n, _, _)| *n == number).map(|(_, start, size)| (start, size))
}

/// The kernel's partitions of the disk `disk_name`: number, start and size in 512-byte units.
fn kernel_partitions(disk_name: &str) -> Vec<(u32, u64, u64)> {
    block_devices()
        .into_iter()
        .filter_map(|device| {
            let (disk, number) = device.partition_of?;
            (disk == disk_name).then_some(())?;
            let read = |field: &str| std::fs::read_to_string(Path::new("/sys/class/block").join(&device.name).join(field)).ok()?.trim().parse().ok();
            Some((number, read("start")?, read("size")?))
        })
        .collect()
}

impl StoragePlan {
    /// Whether the config gives partition `number` of the boot disk a size of its own: keel's
    /// grow of ROOT then leaves that size alone.
    pub fn sizes_boot_partition(&self, number: u32) -> bool {
        self.tables.iter().any(|work| self.disks[work.disk].boot && work.sizes(number))
    }

    /// Writes every planned table and tells the kernel, disk by disk. Returns what it did.
    pub fn partition(&self) -> anyhow::Result<Vec<String>> {
        let mut done = Vec::new();
        for work in &self.tables {
            let disk = &self.disks[work.disk];
            let actions: Vec<String> = work
                .plan
                .outcomes
                .iter()
                .filter(|outcome| outcome.action != PartitionAction::StaysAbsent)
                .map(|outcome| format!("{} {:?}", outcome.number, outcome.action).to_lowercase())
                .collect();
            if !work.changes_table() {
                done.push(format!("{}: {} (nothing to change)", disk.node.display(), actions.join(", ")));
                continue;
            }
            let written = write_table(disk, work.plan.disk_guid, &work.plan.partitions).with_context(|| work.at.clone())?;
            done.push(format!("{}: {} ({written})", disk.node.display(), actions.join(", ")));
        }
        // A disk named but not partitioned by the config whose table a cut write of an earlier
        // run tore (the kernel then has none of its partitions) is repaired from its intact
        // copy, with the kernel told, before anything is made or kept on it.
        let unchanged = self.tables.iter().filter(|work| !work.changes_table()).map(|work| work.disk);
        let targeted = self.filesystems.iter().filter_map(|work| match work.target {
            Target::Partition { disk, .. } if self.tables.iter().all(|table| table.disk != disk || !table.changes_table()) => Some(disk),
            _ => None,
        });
        let mut repaired = Vec::new();
        for index in unchanged.chain(targeted) {
            let disk = &self.disks[index];
            let Ok(Some(gpt)) = &disk.table else { continue };
            if repaired.contains(&index) || (gpt.primary_intact && gpt.backup_intact && gpt.copies_agree) {
                continue;
            }
            repaired.push(index);
            let written = write_table(disk, gpt.disk_guid, &gpt.partitions)?;
            done.push(format!("{}: its damaged table repaired ({written})", disk.node.display()));
        }
        Ok(done)
    }

    /// Makes every planned filesystem. Returns what it did.
    pub fn make_filesystems(&self) -> anyhow::Result<Vec<String>> {
        let mut done = Vec::new();
        for work in &self.filesystems {
            let what = match work.kind {
                Some(kind) => kind.mount_type(),
                None => "none",
            };
            let line = match work.action {
                FilesystemAction::Keep => format!("{}: {what} kept", work.device),
                FilesystemAction::Nothing => format!("{}: nothing to do", work.device),
                FilesystemAction::Make => {
                    self.make(work).with_context(|| format!("{}: cannot make {what} on {}", work.at, work.device))?;
                    format!("{}: {what} made on {}", work.device, target_text(work.target, &self.disks))
                }
            };
            done.push(line);
        }
        Ok(done)
    }

    fn make(&self, work: &FilesystemWork) -> anyhow::Result<()> {
        let (disk, node) = match work.target {
            Target::Disk(disk) => (&self.disks[disk], self.disks[disk].node.clone()),
            Target::Partition { disk, number } => (&self.disks[disk], partition_node(&self.disks[disk], number)?),
        };
        let marked = |pending: bool| -> anyhow::Result<()> {
            let Target::Partition { number, .. } = work.target else { return Ok(()) };
            let mut file = std::fs::OpenOptions::new().read(true).write(true).open(&disk.node)?;
            set_format_pending(&mut file, disk.sector_size, number, pending)
        };
        // Without the mark, a make cut short could pass for a filesystem on the next run.
        marked(true).context("cannot mark the partition before formatting it")?;
        wipe_signatures(&node)?;
        if let Some(kind) = work.kind {
            make_filesystem(&node, &NewFilesystem { kind, label: work.label.as_deref(), uuid: work.uuid.as_deref(), options: &work.options })?;
        }
        marked(false).context("cannot clear the partition's format mark")
    }
}

/// Writes `partitions` as `disk`'s table unless it holds exactly that, and brings the
/// kernel in line. Returns what it did, for the log.
fn write_table(disk: &KnownDisk, disk_guid: Guid, partitions: &[GptPartition]) -> anyhow::Result<String> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk.node)
        .with_context(|| format!("cannot open {} for writing", disk.node.display()))?;
    let wrote = write_gpt_unless_current(&mut file, disk.sector_size, disk_guid, partitions)
        .with_context(|| format!("cannot write the table of {}", disk.node.display()))?;
    let told = tell_kernel(disk, &file, partitions).with_context(|| format!("{}", disk.node.display()))?;
    Ok(format!("{}; {told}", if wrote { "table written" } else { "table already so" }))
}

/// The kernel's device for partition `number` of `disk`.
fn partition_node(disk: &KnownDisk, number: u32) -> anyhow::Result<PathBuf> {
    let device = block_devices()
        .into_iter()
        .find(|d| d.partition_of == Some((disk.name.clone(), number)))
        .with_context(|| format!("the kernel has no partition {number} of {}", disk.node.display()))?;
    device_node(&device)
}

/// Brings the kernel's partitions of `disk` in line with `partitions` (BLKPG: the disk may be
/// in use, which rules out rereading the whole table), then checks sysfs says so. Deletions
/// first, then shrinks, then grows, then additions: the kernel refuses a partition that
/// would overlap one it still has.
fn tell_kernel(disk: &KnownDisk, file: &File, partitions: &[GptPartition]) -> anyhow::Result<String> {
    let sector = disk.sector_size;
    let in_units = |p: &GptPartition| (p.start_bytes(sector) / SYSFS_UNIT, p.size_bytes(sector) / SYSFS_UNIT);
    let mut resizes = Vec::new();
    let mut changes = 0;
    for (number, start, size) in kernel_partitions(&disk.name) {
        match partitions.iter().find(|p| p.number == number) {
            Some(p) if in_units(p) == (start, size) => {}
            Some(p) if in_units(p).0 == start => resizes.push((in_units(p).1 > size, p)),
            _ => {
                delete_kernel_partition(file, number)?;
                changes += 1;
            }
        }
    }
    // Shrinks (false) before grows (true).
    resizes.sort_by_key(|(grows, _)| *grows);
    for (_, partition) in &resizes {
        resize_kernel_partition(file, sector, partition)?;
        changes += 1;
    }
    let present: Vec<u32> = kernel_partitions(&disk.name).iter().map(|(number, _, _)| *number).collect();
    for partition in partitions.iter().filter(|p| !present.contains(&p.number)) {
        add_kernel_partition(file, sector, partition)?;
        changes += 1;
    }
    let view = kernel_partitions(&disk.name);
    for partition in partitions {
        let (start, size) = in_units(partition);
        if !view.contains(&(partition.number, start, size)) {
            bail!("the kernel's partition {} does not have the start and size just written", partition.number);
        }
    }
    if let Some((number, _, _)) = view.iter().find(|(number, _, _)| partitions.iter().all(|p| p.number != *number)) {
        bail!("the kernel still has partition {number}, which the table no longer has");
    }
    Ok(if changes == 0 { "the kernel already had it".to_string() } else { format!("{changes} kernel partition changes") })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::devices::FoundDevice;
    use keel_test_support::{run, LoopDevice};
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;

    fn config(json: &str) -> Latest {
        keel_ignition::parse(json.as_bytes()).unwrap().config
    }

    /// A boot disk (ESP, USR-A, OEM, ROOT, as Flatcar's first partitions are named) and a
    /// blank data disk of `data_mib` MiB, as loop devices; `None` without root.
    struct Disks {
        dir: PathBuf,
        boot: LoopDevice,
        boot_disk: BootDisk,
        data: LoopDevice,
    }

    impl Drop for Disks {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn disks(name: &str, data_mib: u64) -> Option<Disks> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root and loop devices");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("keel-storage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let boot_image = dir.join("boot.img");
        File::create(&boot_image).unwrap().set_len(64 << 20).unwrap();
        let image = boot_image.to_str().unwrap();
        run(
            "sgdisk",
            &["-n1:0:+8M", "-t1:EF00", "-c1:EFI-SYSTEM", "-n2:0:+16M", "-c2:USR-A", "-n3:0:+8M", "-c3:OEM", "-n4:0:+24M", "-c4:ROOT", image],
        );
        let mut boot = LoopDevice::attach(&boot_image, 512);
        boot.add_partitions();
        let usr_node = format!("{}p2", boot.device);
        let rdev = std::fs::metadata(&usr_node).unwrap().rdev();
        let usr = FoundDevice { node: usr_node.into(), major: libc::major(rdev).into(), minor: libc::minor(rdev).into() };
        let boot_disk = BootDisk::of_verified_usr(&usr).unwrap().unwrap();
        let data_image = dir.join("data.img");
        File::create(&data_image).unwrap().set_len(data_mib << 20).unwrap();
        let mut data = LoopDevice::attach(&data_image, 512);
        data.delete_partitions_on_drop();
        Some(Disks { dir, boot, boot_disk, data })
    }

    fn major_minor(node: &str) -> (u64, u64) {
        let rdev = std::fs::metadata(node).unwrap().rdev();
        (libc::major(rdev).into(), libc::minor(rdev).into())
    }

    /// Plans with first boot finding /usr by `PARTLABEL=USR-A` and ROOT (found on the
    /// boot disk's partition 4) by `LABEL=ROOT`, as by default.
    fn plan_now(config: &Latest, disks: &Disks) -> anyhow::Result<StoragePlan> {
        let usr = DeviceSpec::PartLabel("USR-A".into());
        let root = DeviceSpec::Label("ROOT".into());
        let finds = Finds { usr: &usr, root: major_minor(&format!("{}p4", disks.boot.device)), root_spec: &root, root_fstype: None };
        plan(config, &disks.boot_disk, &finds, Some(Duration::ZERO), &mut |_| Ok(false))
    }

    /// What blkid finds on `device`: TYPE, LABEL, UUID.
    fn blkid(device: &str) -> (String, String, String) {
        let value = |tag: &str| {
            let output = std::process::Command::new("blkid").args(["-p", "-s", tag, "-o", "value", device]).output().unwrap();
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        };
        (value("TYPE"), value("LABEL"), value("UUID"))
    }

    /// A second disk partitioned and formatted; the second run (first boot repeated after a
    /// power cut) keeps what `wipeFilesystem: false` describes, remakes what asks to be wiped,
    /// and writes no table.
    #[test]
    fn a_data_disk_is_partitioned_and_formatted_and_a_second_run_converges() {
        // Big enough for xfs (300 MB at least) in what is left after the other partitions.
        let Some(disks) = disks("data", 512) else { return };
        let tag = std::process::id();
        let data = &disks.data.device;
        let json = format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{
                "disks":[{{"device":"{data}","partitions":[
                    {{"number":1,"label":"kt-a-{tag}","sizeMiB":64}},
                    {{"number":2,"label":"kt-b-{tag}","sizeMiB":32,"typeGuid":"C12A7328-F81F-11D2-BA4B-00A0C93EC93B"}},
                    {{"label":"kt-c-{tag}","sizeMiB":0}}]}}],
                "filesystems":[
                    {{"device":"/dev/disk/by-partlabel/kt-a-{tag}","format":"ext4","label":"data","uuid":"6F9AD4E4-3B2C-4E1A-9B8D-2E2C5A1B7C3D"}},
                    {{"device":"{data}p2","format":"vfat","label":"EFI","uuid":"ABCD-1234"}},
                    {{"device":"/dev/disk/by-partlabel/kt-c-{tag}","format":"xfs","label":"scratch","wipeFilesystem":true}}]}}}}"#
        );
        let config = config(&json);
        let first = plan_now(&config, &disks).unwrap();
        first.partition().unwrap();
        first.make_filesystems().unwrap();
        assert_eq!(blkid(&format!("{data}p1")), ("ext4".into(), "data".into(), "6f9ad4e4-3b2c-4e1a-9b8d-2e2c5a1b7c3d".into()));
        assert_eq!(blkid(&format!("{data}p2")), ("vfat".into(), "EFI".into(), "ABCD-1234".into()));
        let (kind, label, first_xfs_uuid) = blkid(&format!("{data}p3"));
        assert_eq!((kind.as_str(), label.as_str()), ("xfs", "scratch"));
        let table = run("sgdisk", &["-p", data]);
        assert!(table.contains("kt-b-") && table.contains("EF00"), "{table}");
        // The number-0 partition took the next number and filled the rest of the disk, up
        // to the table's last usable sector.
        let info = run("sgdisk", &["-i", "3", data]);
        assert!(info.contains("Last sector: 1048542"), "{info}");

        // Something written to the kept filesystem must survive the second run.
        let mount_point = disks.dir.join("mnt");
        std::fs::create_dir_all(&mount_point).unwrap();
        run("mount", &[&format!("{data}p1"), mount_point.to_str().unwrap()]);
        std::fs::write(mount_point.join("kept"), "yes").unwrap();
        run("umount", &[mount_point.to_str().unwrap()]);

        let second = plan_now(&config, &disks).unwrap();
        assert!(second.tables[0].plan.outcomes.iter().all(|o| o.action == PartitionAction::Keep), "{:?}", second.tables[0].plan.outcomes);
        let actions: Vec<FilesystemAction> = second.filesystems.iter().map(|f| f.action).collect();
        assert_eq!(actions, [FilesystemAction::Keep, FilesystemAction::Keep, FilesystemAction::Make]);
        let lines = second.partition().unwrap();
        assert!(lines[0].contains("nothing to change"), "{lines:?}");
        second.make_filesystems().unwrap();
        run("mount", &[&format!("{data}p1"), mount_point.to_str().unwrap()]);
        let kept = std::fs::read_to_string(mount_point.join("kept"));
        run("umount", &[mount_point.to_str().unwrap()]);
        assert_eq!(kept.unwrap(), "yes");
        assert_ne!(blkid(&format!("{data}p3")).2, first_xfs_uuid, "wipeFilesystem: true did not make the filesystem again");
    }

    /// The partitions first boot reads are never changed, and a refusal comes before any write.
    #[test]
    fn the_boot_disks_own_partitions_are_refused_before_anything_is_written() {
        let Some(disks) = disks("protected", 64) else { return };
        let boot = &disks.boot.device;
        let data = &disks.data.device;
        let before = run("sgdisk", &["-p", boot]);
        for (json, expected) in [
            (format!(r#""disks":[{{"device":"{boot}","partitions":[{{"number":2,"shouldExist":false,"wipePartitionEntry":true}}]}}]"#), "USR-A"),
            (format!(r#""disks":[{{"device":"{boot}","wipeTable":true}}]"#), "wipeTable on the boot disk"),
            (format!(r#""filesystems":[{{"device":"{boot}p3","format":"ext4","wipeFilesystem":true}}]"#), "OEM"),
            (format!(r#""filesystems":[{{"device":"{boot}p1","format":"vfat","wipeFilesystem":true}}]"#), "EFI-SYSTEM"),
            (format!(r#""filesystems":[{{"device":"{boot}","format":"ext4","wipeFilesystem":true}}]"#), "whole"),
            (format!(r#""filesystems":[{{"device":"{data}","format":"ext4"}}]"#), "whole disk"),
            (r#""filesystems":[{"device":"/dev/disk/by-id/virtio-x","format":"ext4"}]"#.to_string(), "no udev"),
            (format!(r#""filesystems":[{{"device":"{data}","format":"ext4","path":"/var/data","wipeFilesystem":true}}]"#), "path"),
        ] {
            let config = config(&format!(r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{{json}}}}}"#));
            let error = format!("{:#}", plan_now(&config, &disks).err().unwrap_or_else(|| panic!("{json} was planned")));
            assert!(error.contains(expected) && error.contains("nothing was written"), "{json}: {error}");
        }
        assert_eq!(run("sgdisk", &["-p", boot]), before);
        // ROOT is the config's to reformat.
        let config = config(&format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"filesystems":[{{"device":"{boot}p4","format":"btrfs","label":"ROOT","wipeFilesystem":true,"options":["--mixed"]}}]}}}}"#
        ));
        let plan = plan_now(&config, &disks).unwrap();
        plan.make_filesystems().unwrap();
        assert_eq!(blkid(&format!("{boot}p4")).0, "btrfs");
        assert!(read_gpt(&mut File::open(boot).unwrap(), SectorSize::new(512).unwrap())
            .unwrap()
            .partitions
            .iter()
            .all(|p| p.attributes & ROOT_FORMAT_PENDING == 0));
    }

    /// A filesystem that is not the config's is never formatted over without wipeFilesystem.
    #[test]
    fn a_different_filesystem_is_an_error_unless_wiped() {
        let Some(disks) = disks("mismatch", 64) else { return };
        let data = &disks.data.device;
        // Unique on this machine: a by-label look sees every disk.
        let old = format!("old{}", std::process::id() % 100_000);
        run("mkfs.ext4", &["-q", "-F", "-L", &old, data]);
        let mismatch = config(&format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"filesystems":[{{"device":"{data}","format":"xfs","wipeFilesystem":false}}]}}}}"#
        ));
        let error = format!("{:#}", plan_now(&mismatch, &disks).err().unwrap());
        assert!(error.contains("holds a ext4 filesystem") && error.contains(&format!("{old:?}")), "{error}");
        let keep = config(&format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"filesystems":[{{"device":"/dev/disk/by-label/{old}","format":"ext4","label":"{old}"}}]}}}}"#
        ));
        let planned = plan_now(&keep, &disks).unwrap();
        assert_eq!(planned.filesystems[0].action, FilesystemAction::Keep);
        assert_eq!(planned.filesystems[0].target, Target::Disk(planned.disks.iter().position(|d| d.node == Path::new(data)).unwrap()));
        // Made again, nothing would answer to the name after a cut mkfs: refused.
        let remake = config(&format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"filesystems":[{{"device":"/dev/disk/by-label/{old}","format":"ext4","label":"{old}","wipeFilesystem":true}}]}}}}"#
        ));
        let error = format!("{:#}", plan_now(&remake, &disks).err().unwrap());
        assert!(error.contains("names a filesystem by what the new one replaces"), "{error}");
    }

    fn digest(path: &str) -> Vec<u8> {
        let mut bytes = Vec::new();
        File::open(path).unwrap().read_to_end(&mut bytes).unwrap();
        bytes
    }

    /// A disk entry that changes nothing writes nothing: not even a table over a whole-disk
    /// filesystem that has none (Ignition runs no sgdisk then either).
    #[test]
    fn a_disk_whose_partitions_all_stay_is_not_written() {
        let Some(disks) = disks("untouched", 64) else { return };
        let data = &disks.data.device;
        run("mkfs.ext4", &["-q", "-F", data]);
        let before = digest(data);
        let config = config(&format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"disks":[{{"device":"{data}","partitions":[{{"number":1,"shouldExist":false}}]}}]}}}}"#
        ));
        let plan = plan_now(&config, &disks).unwrap();
        let lines = plan.partition().unwrap();
        assert!(lines[0].contains("nothing to change"), "{lines:?}");
        assert!(digest(data) == before, "the disk was written");
        assert_eq!(blkid(data).0, "ext4");
    }

    /// wipeTable rebuilds the table from nothing, but a partition made at the place of one
    /// whose format was cut short keeps the mark: the second run makes its filesystem again
    /// instead of keeping a half-made one.
    #[test]
    fn a_cut_format_is_redone_even_when_the_table_is_wiped() {
        let Some(disks) = disks("wiped-pending", 64) else { return };
        let data = &disks.data.device;
        let json = format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"disks":[{{"device":"{data}","wipeTable":true,"partitions":[{{"number":1,"sizeMiB":32}}]}}],
                "filesystems":[{{"device":"{data}p1","format":"ext4","label":"half"}}]}}}}"#
        );
        let config = config(&json);
        let first = plan_now(&config, &disks).unwrap();
        first.partition().unwrap();
        // As a cut run leaves it: mkfs got far enough to be recognised, the mark still set.
        run("mkfs.ext4", &["-q", "-F", "-L", "half", &format!("{data}p1")]);
        set_format_pending(&mut std::fs::OpenOptions::new().read(true).write(true).open(data).unwrap(), SectorSize::new(512).unwrap(), 1, true)
            .unwrap();
        let second = plan_now(&config, &disks).unwrap();
        assert_eq!(second.filesystems[0].action, FilesystemAction::Make);
        assert!(second.tables[0].plan.partitions[0].attributes & ROOT_FORMAT_PENDING != 0, "the wiped table dropped the mark");
        second.partition().unwrap();
        second.make_filesystems().unwrap();
        let gpt = read_gpt(&mut File::open(data).unwrap(), SectorSize::new(512).unwrap()).unwrap();
        assert_eq!(gpt.partitions[0].attributes & ROOT_FORMAT_PENDING, 0);
    }

    /// A partition the config adds to the boot disk may not take a name, type or GUID by which
    /// first boot finds its own; nor may two partitions share a GUID.
    #[test]
    fn new_boot_disk_partitions_cannot_pose_as_first_boots_own() {
        let Some(disks) = disks("identities", 64) else { return };
        let boot = &disks.boot.device;
        let data = &disks.data.device;
        let usr_b = keel_disk::USR_B_GUID;
        let usr_type = keel_disk::TYPE_USR;
        for (partitions, on, expected) in [
            (r#"{"number":10,"label":"OEM","sizeMiB":1}"#.to_string(), boot, "the name \"OEM\""),
            (r#"{"number":10,"label":"DATA","sizeMiB":1,"typeGuid":"C12A7328-F81F-11D2-BA4B-00A0C93EC93B"}"#.to_string(), boot, "the type"),
            (format!(r#"{{"number":10,"label":"DATA","sizeMiB":1,"typeGuid":"{usr_type}"}}"#), boot, "the type"),
            (format!(r#"{{"number":10,"label":"DATA","sizeMiB":1,"guid":"{usr_b}"}}"#), boot, "the GUID"),
            (
                r#"{"number":1,"sizeMiB":1,"guid":"5b1e0a3c-7d2f-4e6a-9c8b-1a2b3c4d5e6f"},{"number":2,"sizeMiB":1,"guid":"5B1E0A3C-7D2F-4E6A-9C8B-1A2B3C4D5E6F"}"#
                    .to_string(),
                data,
                "would share the GUID",
            ),
        ] {
            let json = format!(r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"disks":[{{"device":"{on}","partitions":[{partitions}]}}]}}}}"#);
            let error = format!("{:#}", plan_now(&config(&json), &disks).err().unwrap_or_else(|| panic!("{json} was planned")));
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    /// Growing a partition into one the same config deletes: the kernel is told of the
    /// deletion before the grow, which it would refuse as an overlap.
    #[test]
    fn the_kernel_drops_a_neighbour_before_a_partition_grows_into_it() {
        let Some(disks) = disks("grow-into", 64) else { return };
        let data = &disks.data.device;
        run("sgdisk", &["-n1:1M:+20M", "-n2:0:+20M", data]);
        run("partx", &["--add", data]);
        let json = format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"disks":[{{"device":"{data}","partitions":[
                {{"number":1,"resize":true,"sizeMiB":40}},{{"number":2,"shouldExist":false,"wipePartitionEntry":true}}]}}]}}}}"#
        );
        let plan = plan_now(&config(&json), &disks).unwrap();
        plan.partition().unwrap();
        let sectors = std::fs::read_to_string(format!("/sys/class/block/{}p1/size", data.trim_start_matches("/dev/"))).unwrap();
        assert_eq!(sectors.trim(), (40 * 2048).to_string());
        assert!(!Path::new(&format!("{data}p2")).exists() || kernel_extent(data.trim_start_matches("/dev/"), 2).is_none());
    }

    /// A config that reformats ROOT must leave it findable by `root=` on the next boot.
    #[test]
    fn root_is_reformatted_only_as_something_later_boots_find() {
        let Some(disks) = disks("root-label", 64) else { return };
        let boot = &disks.boot.device;
        let spec = DeviceSpec::Label("ROOT".into());
        let usr = DeviceSpec::PartLabel("USR-A".into());
        let root = Finds { usr: &usr, root: major_minor(&format!("{boot}p4")), root_spec: &spec, root_fstype: None };
        for (filesystem, expected) in [
            (r#""format":"ext4","label":"root","wipeFilesystem":true"#, "needs \"label\": \"ROOT\""),
            (r#""format":"vfat","label":"ROOT","wipeFilesystem":true"#, "ROOT cannot be vfat"),
            (r#""format":"none","wipeFilesystem":true"#, "without a filesystem"),
        ] {
            let json = format!(r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"filesystems":[{{"device":"{boot}p4",{filesystem}}}]}}}}"#);
            let error = format!("{:#}", plan(&config(&json), &disks.boot_disk, &root, Some(Duration::ZERO), &mut |_| Ok(false)).err().unwrap());
            assert!(error.contains(expected), "{json}: {error}");
        }
        let json = format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"filesystems":[{{"device":"{boot}p4","format":"ext4","label":"ROOT","wipeFilesystem":true}}]}}}}"#
        );
        assert!(plan(&config(&json), &disks.boot_disk, &root, Some(Duration::ZERO), &mut |_| Ok(false)).is_ok());
        // Renamed by the same config, a blank or half-made ROOT would answer to nothing.
        let json = format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"disks":[{{"device":"{boot}","partitions":[{{"number":4,"label":"DATA","wipePartitionEntry":true}}]}}],
                "filesystems":[{{"device":"{boot}p4","format":"ext4","label":"ROOT","wipeFilesystem":true}}]}}}}"#
        );
        let error = format!("{:#}", plan(&config(&json), &disks.boot_disk, &root, Some(Duration::ZERO), &mut |_| Ok(false)).err().unwrap());
        assert!(error.contains("ROOT's partition name (Some(\"DATA\"))"), "{error}");
    }

    #[test]
    fn udev_escapes_are_undone_and_anything_else_is_kept() {
        assert_eq!(udev_unescape(r"my\x20data"), "my data");
        assert_eq!(udev_unescape(r"a\x2fb"), "a/b");
        assert_eq!(udev_unescape(r"odd\x2"), r"odd\x2");
        assert_eq!(udev_unescape(r"\xzz"), r"\xzz");
        assert_eq!(udev_unescape("ROOT"), "ROOT");
    }

    #[test]
    fn uuids_compare_as_ignition_compares_them() {
        assert_eq!(canonical_uuid("ABCD-1234"), canonical_uuid("abcd1234"));
        assert_eq!(canonical_uuid("6F9AD4E4-3B2C-4E1A-9B8D-2E2C5A1B7C3D"), "6f9ad4e4-3b2c-4e1a-9b8d-2e2c5a1b7c3d");
    }

    /// Tears the primary GPT header of `device` (as a cut between the array and header
    /// writes leaves it): the header's CRC no longer matches.
    fn tear_primary(device: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().read(true).write(true).open(device).unwrap();
        file.seek(SeekFrom::Start(512 + 16)).unwrap();
        file.write_all(&[0xde, 0xad, 0xbe, 0xef]).unwrap();
        file.sync_all().unwrap();
    }

    /// What a reboot does to the kernel's view of a disk whose primary is torn: nothing.
    fn reboot_kernel_view(device: &str) {
        let _ = std::process::Command::new("partx").args(["--delete", device]).output();
    }

    fn primary_intact(device: &str) -> bool {
        read_gpt(&mut File::open(device).unwrap(), SectorSize::new(512).unwrap()).unwrap().primary_intact
    }

    /// One 32 MiB partition on `data` with an ext4 labelled `label` on it, without wipeTable.
    fn one_partition_config(data: &str, label: &str) -> Latest {
        config(&format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"disks":[{{"device":"{data}","partitions":[{{"number":1,"sizeMiB":32}}]}}],
                "filesystems":[{{"device":"{data}p1","format":"ext4","label":"{label}"}}]}}}}"#
        ))
    }

    /// A config disk without wipeTable whose table a cut write tore in the primary (the
    /// kernel then has none of its partitions): the rerun, which keeps every partition,
    /// repairs the table, gives the kernel its partitions, and (`mark_cut`: the cut was of the
    /// pending mark's own write) makes the filesystem again; a third run finds it all done.
    fn torn_table_is_repaired(name: &str, mark_cut: bool) {
        let Some(disks) = disks(name, 64) else { return };
        let data = &disks.data.device;
        let config = one_partition_config(data, name);
        let first = plan_now(&config, &disks).unwrap();
        first.partition().unwrap();
        if mark_cut {
            let mut disk = std::fs::OpenOptions::new().read(true).write(true).open(data).unwrap();
            set_format_pending(&mut disk, SectorSize::new(512).unwrap(), 1, true).unwrap();
        } else {
            first.make_filesystems().unwrap();
        }
        tear_primary(data);
        reboot_kernel_view(data);
        let second = plan_now(&config, &disks).unwrap();
        assert_eq!(second.filesystems[0].action, if mark_cut { FilesystemAction::Make } else { FilesystemAction::Keep });
        let lines = second.partition().unwrap();
        assert!(lines.iter().any(|l| l.contains("repaired")), "{lines:?}");
        second.make_filesystems().unwrap();
        assert!(primary_intact(data), "the rerun left the primary torn");
        assert!(kernel_extent(data.trim_start_matches("/dev/"), 1).is_some(), "the kernel has no partition 1");
        assert_eq!(blkid(&format!("{data}p1")).1, name);
        let third = plan_now(&config, &disks).unwrap();
        assert_eq!(third.filesystems[0].action, FilesystemAction::Keep);
    }

    #[test]
    fn a_config_disks_table_torn_by_a_cut_clear_is_repaired_on_the_rerun() {
        torn_table_is_repaired("torn-clear", false);
    }

    #[test]
    fn a_config_disks_table_torn_by_a_cut_mark_is_repaired_and_the_format_redone() {
        torn_table_is_repaired("torn-mark", true);
    }

    /// A disk whose GPT backup is stale (an MBR image written over its start) and whose
    /// kernel view is the MBR's: refused, not "repaired" back into the stale GPT.
    #[test]
    fn a_stale_backup_gpt_under_an_mbr_is_refused() {
        use std::io::Write;
        let Some(disks) = disks("r2", 64) else { return };
        let data = &disks.data.device;
        run("sgdisk", &["-n1:1M:+16M", data]);
        // An MBR with one partition at 20 MiB, 8 MiB long; the primary GPT zeroed.
        let mut mbr = vec![0u8; 512];
        let record = &mut mbr[446..462];
        record[4] = 0x83;
        record[8..12].copy_from_slice(&(40960u32).to_le_bytes());
        record[12..16].copy_from_slice(&(16384u32).to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        {
            let mut file = std::fs::OpenOptions::new().write(true).open(data).unwrap();
            file.write_all(&mbr).unwrap();
            file.write_all(&vec![0u8; 512 * 33]).unwrap();
            file.sync_all().unwrap();
        }
        run("addpart", &[data, "1", "40960", "16384"]);
        let json = format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"filesystems":[{{"device":"{data}p1","format":"ext4","wipeFilesystem":true}}]}}}}"#
        );
        let error = format!("{:#}", plan_now(&config(&json), &disks).err().expect("the MBR disk was planned"));
        assert!(error.contains("holds an MBR partition table"), "{error}");
    }

    /// `disks` whose data disk has a GPT with partition 1 at 1 MiB, 16 MiB long, which the
    /// kernel has at `kernel_start` (in 512-byte sectors).
    fn disks_with_partition_1(name: &str, kernel_start: u64) -> Option<Disks> {
        let disks = disks(name, 64)?;
        run("sgdisk", &["-n1:1M:+16M", &disks.data.device]);
        run("addpart", &[&disks.data.device, "1", &kernel_start.to_string(), "32768"]);
        Some(disks)
    }

    /// A config disk whose partitions all stay, and whose kernel view of partition 1 is not
    /// the GPT's: refused, as mkfs would land where keel did not look.
    #[test]
    fn a_partition_the_kernel_sees_elsewhere_than_its_gpt_is_not_formatted() {
        let Some(disks) = disks_with_partition_1("r3", 40960) else { return };
        let data = &disks.data.device;
        let json = format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"disks":[{{"device":"{data}","partitions":[{{"number":1}}]}}],
                "filesystems":[{{"device":"{data}p1","format":"ext4","label":"r3","wipeFilesystem":true}}]}}}}"#
        );
        let error = format!("{:#}", plan_now(&config(&json), &disks).err().expect("planned a format where the kernel does not see the partition"));
        assert!(error.contains("the kernel does not see partition 1"), "{error}");
    }

    /// A disk the config only formats a partition of, whose mark clear a cut tore: the rerun
    /// keeps the filesystem and repairs the table.
    #[test]
    fn a_filesystem_only_disks_table_torn_by_a_cut_clear_is_repaired() {
        let Some(disks) = disks_with_partition_1("r4", 2048) else { return };
        let data = &disks.data.device;
        let json =
            format!(r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"filesystems":[{{"device":"{data}p1","format":"ext4","label":"r4"}}]}}}}"#);
        let config = config(&json);
        let first = plan_now(&config, &disks).unwrap();
        first.partition().unwrap();
        first.make_filesystems().unwrap();
        tear_primary(data);
        reboot_kernel_view(data);
        let second = plan_now(&config, &disks).unwrap();
        second.partition().unwrap();
        second.make_filesystems().unwrap();
        assert!(primary_intact(data), "the rerun left the primary torn");
        assert_eq!(blkid(&format!("{data}p1")).1, "r4");
    }

    /// Flatcar's ROOT-as-xfs example on an image whose ROOT is small until keel grows it
    /// (before the filesystems are made): planned for the grown size.
    #[test]
    fn root_as_xfs_is_measured_after_the_grow() {
        let Some(disks) = disks("r5", 64) else { return };
        // The boot disk's file grows as a disk bigger than the image would be.
        let image = disks.dir.join("boot.img");
        File::options().write(true).open(&image).unwrap().set_len(1 << 30).unwrap();
        run("losetup", &["--set-capacity", &disks.boot.device]);
        let json = format!(
            r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"filesystems":[{{"device":"{}p4","format":"xfs","label":"ROOT","wipeFilesystem":true}}]}}}}"#,
            disks.boot.device
        );
        let error = plan_now(&config(&json), &disks).err().map(|e| format!("{e:#}"));
        assert!(error.is_none(), "refused although ROOT grows to ~1 GiB before mkfs: {error:?}");
    }
}
