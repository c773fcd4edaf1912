//! Finding block devices without udev: the kernel's uevents say when something changed,
//! sysfs says what exists, and the GPT and filesystem superblocks say which device is which.

use crate::drivers::{modalias_in_uevent, present_modaliases};
use anyhow::{bail, Context};
use keel_cmdline::DeviceSpec;
use keel_disk::{
    logical_sector_size, probe_filesystem, read_gpt_of_image, repair_table, reread_partition_table, Gpt, GptPartition, Guid, Probe, SectorSize,
    SectorSizeMismatch, SmallerThanImage, ROOT_FORMAT_PENDING,
};
use keel_kmod::{DriverLoad, Drivers};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use std::cell::RefCell;
use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

const SYS_BLOCK: &str = "/sys/class/block";
/// How many uevents one wake reads at most.
const MAX_EVENTS_PER_WAKE: usize = 1024;
/// The longest a wait goes without looking again, event or not.
const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a disk that holds this image but cannot boot it (too small for it, or of the
/// other sector size) may be all there is before the wait gives up: time for the boot
/// disk to appear if that one is a stray.
const UNBOOTABLE_IMAGE_GRACE: Duration = Duration::from_secs(3);
/// How long a wait goes before it repairs a damaged table: time for every disk to appear,
/// so that a copy of the image on another disk is seen as a second candidate (and nothing
/// is repaired) rather than taken for the boot disk because it came first.
const REPAIR_AFTER: Duration = Duration::from_secs(2);
/// sysfs counts a block device's size in 512-byte units, whatever its logical sector size.
const SYSFS_SIZE_UNIT: u64 = 512;

/// A block device as sysfs shows it.
#[derive(Clone, Debug)]
pub(crate) struct SysBlock {
    pub(crate) name: String,
    pub(crate) major: u64,
    pub(crate) minor: u64,
    /// For a partition: its disk's name and its number there.
    pub(crate) partition_of: Option<(String, u32)>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|text| text.trim().to_string())
}

pub(crate) fn block_devices() -> Vec<SysBlock> {
    let Ok(entries) = fs::read_dir(SYS_BLOCK) else { return Vec::new() };
    let mut devices: Vec<SysBlock> = entries
        .flatten()
        .filter_map(|entry| {
            let dir = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if read_trimmed(&dir.join("size")).is_none_or(|size| size == "0") {
                return None;
            }
            let (major, minor) = read_trimmed(&dir.join("dev"))?.split_once(':').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))?;
            let partition_of = match read_trimmed(&dir.join("partition")) {
                Some(number) => {
                    // /sys/class/block/vda3 -> ../../devices/.../block/vda/vda3: the parent is the disk.
                    let real = fs::canonicalize(&dir).ok()?;
                    let disk = real.parent()?.file_name()?.to_string_lossy().to_string();
                    Some((disk, number.parse().ok()?))
                }
                None => None,
            };
            Some(SysBlock { name, major, minor, partition_of })
        })
        .collect();
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    devices
}

/// `/dev/<name>`, made from sysfs's numbers if devtmpfs has not made it yet, so that a
/// device sysfs shows can always be opened without waiting for another event. A node
/// that is already there must be that very block device.
pub(crate) fn device_node(device: &SysBlock) -> anyhow::Result<PathBuf> {
    // sysfs writes the '/' of a device name (cciss/c0d0) as '!'.
    let node = Path::new("/dev").join(device.name.replace('!', "/"));
    let dev = makedev(device.major, device.minor);
    match mknod(&node, SFlag::S_IFBLK, Mode::from_bits_truncate(0o600), dev) {
        Ok(()) => Ok(node),
        Err(nix::errno::Errno::EEXIST) => {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let meta = fs::symlink_metadata(&node).with_context(|| format!("cannot stat {}", node.display()))?;
            if !meta.file_type().is_block_device() || meta.rdev() != dev {
                bail!("{} exists but is not block device {}:{}", node.display(), device.major, device.minor);
            }
            Ok(node)
        }
        Err(error) => Err(error).with_context(|| format!("cannot create {}", node.display())),
    }
}

/// The partition table on the block device `node`, read (like the kernel reads it) in the
/// device's own logical sectors; `image_bytes` as in `keel_disk::read_gpt_of_image`.
fn read_table(node: &Path, image_bytes: Option<u64>) -> anyhow::Result<Gpt> {
    let mut file = File::open(node).with_context(|| format!("cannot open {}", node.display()))?;
    let sector_size = logical_sector_size(&file).with_context(|| format!("{}", node.display()))?;
    read_gpt_of_image(&mut file, sector_size, image_bytes)
}

/// A partition or disk that matched a device spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundDevice {
    pub node: PathBuf,
    pub major: u64,
    pub minor: u64,
}

fn found(device: &SysBlock) -> anyhow::Result<FoundDevice> {
    Ok(FoundDevice { node: device_node(device)?, major: device.major, minor: device.minor })
}

/// The disk keel booted from: the one holding the USR partition that verified against the
/// initrd's root hash. It is the only disk keel ever writes to.
#[derive(Clone, Debug)]
pub struct BootDisk {
    pub disk: FoundDevice,
    /// Its logical sector size: the unit of its table, in which keel rewrites it.
    pub sector_size: SectorSize,
    /// Its name in sysfs (`vda`).
    name: String,
}

impl BootDisk {
    /// The disk `usr` is a partition of, when that disk has a readable GPT; `None` for a
    /// /usr that is a whole disk or on an unpartitioned one, and then keel writes nothing.
    pub fn of_verified_usr(usr: &FoundDevice) -> anyhow::Result<Option<BootDisk>> {
        let devices = block_devices();
        let Some(device) = devices.iter().find(|d| d.major == usr.major && d.minor == usr.minor) else {
            bail!("{} is no longer in sysfs", usr.node.display())
        };
        let Some((disk_name, _)) = &device.partition_of else { return Ok(None) };
        let disk = devices.iter().find(|d| &d.name == disk_name).with_context(|| format!("the disk of {} is not in sysfs", device.name))?;
        let disk = found(disk)?;
        Ok(read_table(&disk.node, None).ok().map(|gpt| BootDisk { disk, sector_size: gpt.sector_size, name: disk_name.clone() }))
    }

    /// The boot disk's partition table as it is now.
    pub fn table(&self) -> anyhow::Result<Gpt> {
        read_table(&self.disk.node, None)
    }

    /// `device`'s number on the boot disk, or `None` when it is not one of its partitions.
    pub fn number_of(&self, device: &FoundDevice) -> Option<u32> {
        block_devices()
            .into_iter()
            .find(|d| d.major == device.major && d.minor == device.minor)
            .and_then(|d| d.partition_of)
            .filter(|(disk, _)| *disk == self.name)
            .map(|(_, number)| number)
    }

    /// Partition `number` of the boot disk as the kernel has it now, if it has it.
    pub fn partition(&self, number: u32) -> anyhow::Result<Option<FoundDevice>> {
        block_devices().iter().find(|d| d.partition_of.as_ref() == Some(&(self.name.clone(), number))).map(found).transpose()
    }

    pub fn open_for_writing(&self) -> anyhow::Result<File> {
        let node = &self.disk.node;
        fs::OpenOptions::new().read(true).write(true).open(node).with_context(|| format!("cannot open {} for writing", node.display()))
    }
}

/// Where a device spec may match.
#[derive(Clone, Copy)]
pub enum Scope<'a> {
    /// Any disk: for /usr (which must verify) and for specs that name one device
    /// (`PARTUUID=`, `UUID=`, a path).
    AnyDisk,
    /// Only the boot disk and its partitions: for names anyone can give a disk (`LABEL=`,
    /// `PARTLABEL=`), so that a stick labelled ROOT cannot become the root.
    BootDisk(&'a BootDisk),
}

/// Checks the USR partition that starts at a byte offset of a whole disk.
pub type UsrCheck<'a> = dyn Fn(&File, u64) -> anyhow::Result<()> + 'a;

/// A disk's table as one look read it (shared: the error is read once, shown many times).
type TableRead = Result<Gpt, Rc<anyhow::Error>>;

/// What to look for, where, and which damaged table may be repaired on the way.
pub struct Wanted<'a> {
    pub spec: &'a DeviceSpec,
    pub scope: Scope<'a>,
    /// For /usr only: checks the USR partition of a disk whose primary GPT is damaged,
    /// read through the disk itself (the kernel made no partitions of it), at the
    /// partition's start in bytes. Only a disk whose USR verifies is this machine's, and
    /// only then is its table rewritten from the backup.
    pub repair_if_usr_verifies: Option<&'a UsrCheck<'a>>,
    /// The image's size in bytes: at its end its backup table may still be (see
    /// `keel_disk::read_gpt_of_image`), and a table made for that size is this image's.
    pub image_bytes: Option<u64>,
}

impl Wanted<'_> {
    /// `spec` on any disk, without repairs: a spec that names one device.
    pub fn anywhere(spec: &DeviceSpec) -> Wanted<'_> {
        Wanted { spec, scope: Scope::AnyDisk, repair_if_usr_verifies: None, image_bytes: None }
    }
}

/// What one look at the devices saw, for the message when the wait runs out, and what
/// it changed, for the log.
#[derive(Default)]
struct Seen {
    lines: Vec<String>,
    changes: Vec<String>,
    /// A disk holding this image that cannot boot it, and why: too small for the image, or
    /// of the other sector size. No wait can change that.
    unbootable_image: Option<String>,
    /// Damaged disks (major, minor) whose USR was read during this wait, and whether it
    /// verified: each is read once, and every one still present counts in every look, so
    /// "only one candidate" holds for the whole wait, not just one look.
    usr_verdicts: Vec<((u64, u64), bool)>,
    /// The wait has gone on for `REPAIR_AFTER`: a damaged boot disk may now be repaired.
    repair_allowed: bool,
}

impl Seen {
    /// Records something worth a log line once, however many looks see it.
    fn note(&mut self, change: String) {
        if !self.changes.contains(&change) {
            self.changes.push(change);
        }
    }
}

/// One look at the devices: the list sysfs gives now, and each disk's table read at most
/// once. A look reads a fixed number of sectors per device, whatever the devices' sizes.
struct Look {
    devices: Vec<SysBlock>,
    image_bytes: Option<u64>,
    tables: RefCell<Vec<(String, TableRead)>>,
}

impl Look {
    fn now(image_bytes: Option<u64>) -> Look {
        Look { devices: block_devices(), image_bytes, tables: RefCell::new(Vec::new()) }
    }

    fn disks(&self) -> impl Iterator<Item = &SysBlock> {
        self.devices.iter().filter(|d| d.partition_of.is_none())
    }

    fn table(&self, disk: &SysBlock) -> TableRead {
        if let Some((_, table)) = self.tables.borrow().iter().find(|(name, _)| *name == disk.name) {
            return table.clone();
        }
        let table = device_node(disk).and_then(|node| read_table(&node, self.image_bytes)).map_err(Rc::new);
        self.tables.borrow_mut().push((disk.name.clone(), table.clone()));
        table
    }

    fn in_scope(&self, device: &SysBlock, scope: Scope) -> bool {
        match scope {
            Scope::AnyDisk => true,
            Scope::BootDisk(boot) => device.name == boot.name || device.partition_of.as_ref().is_some_and(|(disk, _)| *disk == boot.name),
        }
    }
}

/// One look for what is wanted among the devices present now. More than one match is an
/// error: a second disk carrying the same image (or planted to) must not decide what boots.
fn look_for(wanted: &Wanted, seen: &mut Seen) -> anyhow::Result<Option<FoundDevice>> {
    let mut matches = matching_devices(wanted, seen)?;
    match matches.len() {
        0 => Ok(None),
        1 => Ok(matches.pop()),
        _ => {
            let nodes: Vec<String> = matches.iter().map(|m| m.node.display().to_string()).collect();
            bail!("{} matches {} devices ({}): name the one to boot with PARTUUID= or a /dev path", wanted.spec, nodes.len(), nodes.join(", "))
        }
    }
}

/// The partition of `disk`'s table `gpt` that `spec` names: by `PARTLABEL=`, `PARTUUID=`,
/// or a path the kernel would give it (`/dev/vda3`, `/dev/nvme0n1p3`).
fn partition_in<'g>(gpt: &'g Gpt, disk: &str, spec: &DeviceSpec) -> anyhow::Result<Option<&'g GptPartition>> {
    Ok(match spec {
        DeviceSpec::PartLabel(name) => gpt.by_name(name)?,
        DeviceSpec::PartUuid(text) => gpt.by_guid(Guid::parse(text).context("PARTUUID= is not a GUID")?)?,
        DeviceSpec::Path(path) => path.strip_prefix("/dev/").and_then(|name| partition_number(disk, name)).and_then(|number| gpt.partition(number)),
        DeviceSpec::Label(_) | DeviceSpec::Uuid(_) => None,
    })
}

/// The number of partition `name` of `disk` as the kernel names partitions: the disk's
/// name, then `p` if that name ends in a digit (`nvme0n1p3`, `loop1p2`), then the number
/// (`vda3`), with no sign or leading zero.
pub(crate) fn partition_number(disk: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(disk)?;
    let digits = if disk.ends_with(|c: char| c.is_ascii_digit()) { rest.strip_prefix('p')? } else { rest };
    let canonical = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    canonical.then(|| digits.parse().ok()).flatten()
}

/// Without the `gpt` parameter the kernel ignores a disk whose primary table is damaged (a
/// power cut while first boot rewrote it can leave one): the USR partition cannot appear.
/// A disk whose table holds the wanted partition, and whose USR there verifies against the
/// initrd's root hash, is this machine's boot disk: its intact backup is copied over the
/// primary and the kernel told. Any other damaged disk is only reported. Returns whether
/// it wrote.
fn repair_boot_disk(look: &Look, wanted: &Wanted, verifies: &UsrCheck<'_>, seen: &mut Seen) -> bool {
    // Every damaged disk whose USR verifies: a copy of the image on a stick verifies too,
    // so only a single candidate is repaired; two leave the choice to the person.
    let mut candidates = Vec::new();
    for disk in look.disks() {
        let Ok(gpt) = look.table(disk) else { continue };
        // A disk reused for something else (mkfs wipes sector 0) may keep an old backup
        // header and an old, still verifying /usr: only a disk whose start is still a
        // protective MBR (keel's rewrites put it first) is a torn GPT disk.
        if gpt.primary_intact || !gpt.protective_mbr {
            continue;
        }
        let Ok(Some(partition)) = partition_in(&gpt, &disk.name, wanted.spec) else { continue };
        let id = (disk.major, disk.minor);
        let ours = match seen.usr_verdicts.iter().find(|(seen_id, _)| *seen_id == id) {
            Some((_, ours)) => *ours,
            None => {
                let verified = device_node(disk).and_then(|node| {
                    let file = File::open(&node).with_context(|| format!("cannot open {}", node.display()))?;
                    verifies(&file, partition.start_bytes(gpt.sector_size))
                });
                match verified {
                    Ok(()) => {
                        seen.usr_verdicts.push((id, true));
                        true
                    }
                    // A read that failed may succeed later (a disk spinning up): only a
                    // USR that was read and does not verify is settled.
                    Err(error) if error.chain().any(|cause| cause.is::<std::io::Error>()) => {
                        seen.lines.push(format!("{}: its primary GPT is damaged and its USR cannot be read yet: {error:#}", disk.name));
                        continue;
                    }
                    Err(error) => {
                        seen.usr_verdicts.push((id, false));
                        seen.note(format!(
                            "{}: its primary GPT is damaged, and it is not this machine's boot disk (its USR does not verify against \
                             this initrd's root hash), so it is left as it is: {error:#}",
                            disk.name
                        ));
                        false
                    }
                }
            }
        };
        if ours {
            candidates.push((disk, gpt.sector_size));
        }
    }
    let [(disk, sector_size)] = candidates.as_slice() else {
        if candidates.len() > 1 {
            let names: Vec<&str> = candidates.iter().map(|(disk, _)| disk.name.as_str()).collect();
            seen.note(format!(
                "{} all carry this image with a damaged primary GPT: none is repaired; detach all but the boot disk",
                names.join(", ")
            ));
        }
        return false;
    };
    // A failed repair is reported like any other: the wait goes on, and the disk still
    // counts as a candidate, so no other disk becomes the only one.
    let repaired = device_node(disk).and_then(|node| {
        let mut writable =
            fs::OpenOptions::new().read(true).write(true).open(&node).with_context(|| format!("cannot open {} for writing", node.display()))?;
        repair_table(&mut writable, *sector_size, look.image_bytes)?;
        reread_partition_table(&writable).with_context(|| format!("{}", node.display()))
    });
    match repaired {
        Ok(()) => {
            seen.note(format!(
                "{}: its primary GPT was damaged; its {} verified, so the table was rewritten from the intact backup",
                disk.name, wanted.spec
            ));
            true
        }
        Err(error) => {
            seen.note(format!("{}: its primary GPT is damaged and it is left as it is: {error:#}", disk.name));
            false
        }
    }
}

/// Looks once; when nothing matched and a damaged boot disk could be repaired, repairs it
/// and looks again. No disk is repaired by a look that found the wanted device.
fn matching_devices(wanted: &Wanted, seen: &mut Seen) -> anyhow::Result<Vec<FoundDevice>> {
    seen.lines.clear();
    seen.unbootable_image = None;
    let look = Look::now(wanted.image_bytes);
    let matches = matches_in(&look, wanted, seen)?;
    if let (true, true, Some(verifies)) = (matches.is_empty(), seen.repair_allowed, wanted.repair_if_usr_verifies)
        && repair_boot_disk(&look, wanted, verifies, seen)
    {
        seen.lines.clear();
        return matches_in(&Look::now(wanted.image_bytes), wanted, seen);
    }
    Ok(matches)
}

fn matches_in(look: &Look, wanted: &Wanted, seen: &mut Seen) -> anyhow::Result<Vec<FoundDevice>> {
    let spec = wanted.spec;
    let mut matches = Vec::new();
    match spec {
        DeviceSpec::Path(path) => {
            let wanted_path = Path::new(path);
            seen.lines.push(format!("block devices: {}", look.devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(" ")));
            if let Some(device) = look.devices.iter().find(|device| wanted_path == Path::new("/dev").join(&device.name)) {
                matches.push(found(device)?);
            } else if wanted_path.exists() {
                use std::os::unix::fs::{FileTypeExt, MetadataExt};
                let meta = fs::metadata(wanted_path).with_context(|| format!("cannot stat {path}"))?;
                if !meta.file_type().is_block_device() {
                    bail!("{path} is not a block device");
                }
                let (major, minor) = (nix::sys::stat::major(meta.rdev()), nix::sys::stat::minor(meta.rdev()));
                matches.push(FoundDevice { node: wanted_path.to_path_buf(), major, minor });
            }
        }
        DeviceSpec::PartLabel(_) | DeviceSpec::PartUuid(_) => {
            for disk in look.disks() {
                if !look.in_scope(disk, wanted.scope) {
                    continue;
                }
                let gpt = match look.table(disk) {
                    Ok(gpt) => gpt,
                    Err(error) => {
                        if let Some(why) = wanted.image_bytes.and_then(|image_bytes| unbootable_image(&error, image_bytes)) {
                            seen.unbootable_image = Some(format!("{}: {error:#}; nothing was changed{why}", disk.name));
                        }
                        seen.lines.push(format!("{}: no usable GPT ({error:#})", disk.name));
                        continue;
                    }
                };
                let names: Vec<String> = gpt.partitions.iter().map(|p| format!("{}={}", p.number, p.name)).collect();
                seen.lines.push(format!("{}: GPT with {}", disk.name, names.join(" ")));
                let Some(partition) = partition_in(&gpt, &disk.name, spec).with_context(|| format!("on {}", disk.name))? else { continue };
                let child = look.devices.iter().find(|d| d.partition_of.as_ref() == Some(&(disk.name.clone(), partition.number)));
                match child {
                    Some(child) => matches.push(found(child)?),
                    None => {
                        seen.lines.push(format!("{}: partition {} is in the GPT but the kernel has not added it yet", disk.name, partition.number))
                    }
                }
            }
        }
        DeviceSpec::Label(_) | DeviceSpec::Uuid(_) => {
            for device in &look.devices {
                let node = match device_node(device) {
                    Ok(node) => node,
                    Err(error) => {
                        seen.lines.push(format!("{}: no device node ({error:#})", device.name));
                        continue;
                    }
                };
                let probe = match File::open(&node).and_then(|mut f| probe_filesystem(&mut f)) {
                    Ok(probe) => probe,
                    Err(error) => {
                        seen.lines.push(format!("{}: unreadable ({error})", device.name));
                        continue;
                    }
                };
                let label_matches = match (&probe, spec) {
                    (Probe::Filesystem(fs), DeviceSpec::Label(label)) => &fs.label == label,
                    (Probe::Filesystem(fs), DeviceSpec::Uuid(uuid)) => fs.uuid.eq_ignore_ascii_case(uuid),
                    _ => false,
                };
                seen.lines.push(format!("{}: {probe:?}", device.name));
                if !look.in_scope(device, wanted.scope) {
                    if label_matches {
                        seen.note(format!("{}: it has {spec} too, but is not on the boot disk: ignored", device.name));
                    }
                    continue;
                }
                // On the boot disk, the partition named like the label stands in for it
                // while it is blank or keel's format of it was cut short: formatting gives
                // it that label (Flatcar's `root=LABEL=ROOT` on a first boot).
                let stands_in = matches!((spec, wanted.scope), (DeviceSpec::Label(label), Scope::BootDisk(_)) if stands_in_for_label(look, &probe, device, label));
                if label_matches || stands_in {
                    matches.push(found(device)?);
                }
            }
        }
    }
    Ok(matches)
}

/// When `error` says a disk holds the table of this image (of `image_bytes`) but cannot
/// boot it, what to do about it. Only this image's own table ends the wait early: a table
/// made for any other size is some other disk's business.
fn unbootable_image(error: &anyhow::Error, image_bytes: u64) -> Option<&'static str> {
    if error.downcast_ref::<SmallerThanImage>().is_some_and(|smaller| smaller.is_of_image(image_bytes)) {
        return Some(". Write the image to a disk at least as big as the image");
    }
    // The mismatch's own message says what to rebuild.
    error.downcast_ref::<SectorSizeMismatch>().is_some_and(|mismatch| mismatch.is_of_image(image_bytes)).then_some("")
}

/// One look for `spec` on any disk, as keel-init makes it but without repairs: what
/// matched (an error when more than one did), what it saw on each device, and how long
/// the look took. For `keel disk find` and the look benchmark.
pub fn look_once(spec: &DeviceSpec, image_bytes: Option<u64>) -> (anyhow::Result<Option<FoundDevice>>, Vec<String>, Duration) {
    let mut seen = Seen::default();
    let started = Instant::now();
    let found = look_for(&Wanted { spec, scope: Scope::AnyDisk, repair_if_usr_verifies: None, image_bytes }, &mut seen);
    let took = started.elapsed();
    seen.lines.append(&mut seen.changes);
    (found, seen.lines, took)
}

/// Whether `device` is a partition named `label` that keel will format: blank, or marked
/// ROOT_FORMAT_PENDING because a format was cut short (its half-written content may
/// probe as anything).
fn stands_in_for_label(look: &Look, probe: &Probe, device: &SysBlock, label: &str) -> bool {
    let Some((disk_name, number)) = &device.partition_of else { return false };
    let Some(disk) = look.devices.iter().find(|d| &d.name == disk_name) else { return false };
    let Ok(gpt) = look.table(disk) else { return false };
    gpt.partition(*number).is_some_and(|p| p.name == label && (*probe == Probe::Blank || p.attributes & ROOT_FORMAT_PENDING != 0))
}

/// The size the kernel gives a block device now, in bytes.
pub fn kernel_size_bytes(device: &FoundDevice) -> anyhow::Result<u64> {
    let path = format!("/sys/dev/block/{}:{}/size", device.major, device.minor);
    let units: u64 = read_trimmed(Path::new(&path)).with_context(|| format!("cannot read {path}"))?.parse().with_context(|| format!("bad {path}"))?;
    Ok(units * SYSFS_SIZE_UNIT)
}

/// What loading the drivers for the devices present did, and what asking cost.
#[derive(Default)]
pub struct PresentDrivers {
    pub loads: Vec<DriverLoad>,
    /// How many devices with a modalias sysfs had, and how long reading it took.
    pub devices: usize,
    pub scanning: Duration,
}

/// Listens to the kernel's uevents. Open it before loading drivers: an event that comes
/// between a look and the wait then still wakes the wait.
pub struct DeviceWatcher {
    socket: OwnedFd,
    /// The initrd's storage drivers, loaded as devices that need them show up.
    drivers: RefCell<Drivers>,
    /// What waiting did (drivers loaded, a table repaired), until `take_changes`.
    changes: RefCell<Vec<String>>,
    /// Drivers that failed to load, for every timeout message: the disk waited for may be
    /// behind one of them.
    driver_failures: RefCell<Vec<String>>,
}

impl DeviceWatcher {
    pub fn open(drivers: Drivers) -> anyhow::Result<DeviceWatcher> {
        let socket =
            socket(AddressFamily::Netlink, SockType::Datagram, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, SockProtocol::NetlinkKObjectUEvent)
                .context("cannot open the kernel uevent socket")?;
        // Group 1: the kernel's own events (udev re-broadcasts on group 2).
        bind(socket.as_raw_fd(), &NetlinkAddr::new(0, 1)).context("cannot listen to kernel uevents")?;
        Ok(DeviceWatcher { socket, drivers: RefCell::new(drivers), changes: RefCell::new(Vec::new()), driver_failures: RefCell::new(Vec::new()) })
    }

    /// Loads the drivers for the devices present now, and then for the devices those bring
    /// (virtio_pci's devices ask for virtio_blk), until nothing new is asked for. sysfs is
    /// read once: the kernel announces each device a driver adds in a uevent, queued on the
    /// socket before `finit_module` returns. Devices that show up later (a hotplugged disk)
    /// are the wait's to serve.
    pub fn load_present_drivers(&self) -> PresentDrivers {
        let mut present = PresentDrivers::default();
        let mut loads = self.scan_and_load(&mut present);
        while !loads.is_empty() {
            present.loads.append(&mut loads);
            loads = self.load_announced(&mut present);
        }
        self.note_failures(&present.loads);
        present
    }

    fn note_failures(&self, loads: &[DriverLoad]) {
        self.driver_failures.borrow_mut().extend(loads.iter().filter(|load| load.outcome.is_err()).map(DriverLoad::describe));
    }

    fn scan_and_load(&self, present: &mut PresentDrivers) -> Vec<DriverLoad> {
        let started = Instant::now();
        let mut drivers = self.drivers.borrow_mut();
        let modaliases = present_modaliases(drivers.buses().as_ref());
        present.scanning += started.elapsed();
        present.devices = modaliases.len();
        drivers.load_for(modaliases.iter().map(String::as_str))
    }

    /// Loads the drivers that the devices announced since the last call ask for; when the
    /// kernel dropped events the socket had no room for, those of every device present.
    fn load_announced(&self, present: &mut PresentDrivers) -> Vec<DriverLoad> {
        let mut buffer = [0u8; 8192];
        let mut modaliases = Vec::new();
        // A bounded batch: what a storm of events leaves is the next wake's.
        for _ in 0..MAX_EVENTS_PER_WAKE {
            match recv(self.socket.as_raw_fd(), &mut buffer, MsgFlags::MSG_DONTWAIT) {
                Ok(n) if n > 0 => modaliases.extend(modalias_in_uevent(&buffer[..n]).map(str::to_string)),
                Err(nix::errno::Errno::ENOBUFS) => return self.scan_and_load(present),
                _ => break,
            }
        }
        self.drivers.borrow_mut().load_for(modaliases.iter().map(String::as_str))
    }

    /// Looks for `spec` now, after every uevent, and at least every second (a read that
    /// failed while a disk spun up, or a size change, brings no new event), until
    /// `timeout` runs out (`None`: for ever).
    pub fn wait_for(&self, wanted: &Wanted, timeout: Option<Duration>) -> anyhow::Result<FoundDevice> {
        let spec = wanted.spec;
        let started = Instant::now();
        let mut seen = Seen::default();
        let mut unbootable_since = None;
        loop {
            // A short rd.timeout still gets a look that may repair: the last one before it.
            let last_look = timeout.is_some_and(|limit| started.elapsed() + RECHECK_EVERY >= limit);
            seen.repair_allowed = started.elapsed() >= REPAIR_AFTER || last_look;
            let looked = look_for(wanted, &mut seen);
            self.changes.borrow_mut().append(&mut seen.changes);
            if let Some(device) = looked? {
                return Ok(device);
            }
            // A disk that cannot boot this image stays so; once nothing else has turned up
            // for a while, waiting on would only hide the reason.
            match (&seen.unbootable_image, unbootable_since) {
                (None, _) => unbootable_since = None,
                (Some(_), None) => unbootable_since = Some(Instant::now()),
                (Some(disk), Some(since)) if since.elapsed() >= UNBOOTABLE_IMAGE_GRACE => bail!("{spec} did not appear, and {disk}"),
                (Some(_), Some(_)) => {}
            }
            let remaining = match timeout {
                Some(limit) => match limit.checked_sub(started.elapsed()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => {
                        let mut seen = if seen.lines.is_empty() { vec!["no block device appeared".to_string()] } else { seen.lines };
                        seen.extend(self.changes.borrow().iter().cloned());
                        seen.extend(self.driver_failures.borrow().iter().filter(|failure| !seen.contains(failure)).cloned().collect::<Vec<_>>());
                        let seen = seen.join("; ");
                        bail!("timed out after {} s waiting for {spec} (rd.timeout=): {seen}", limit.as_secs_f64());
                    }
                },
                None => None,
            };
            self.wait_for_event(remaining)?;
        }
    }

    /// Waits for the next uevent (or a second), loading the drivers new devices ask for;
    /// false, without waiting, once `deadline` (`None`: none) has passed.
    pub fn wait_until(&self, deadline: Option<Instant>) -> anyhow::Result<bool> {
        let left = match deadline {
            Some(deadline) => match deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero()) {
                Some(left) => Some(left),
                None => return Ok(false),
            },
            None => None,
        };
        self.wait_for_event(left)?;
        Ok(true)
    }

    /// What the waits so far changed on the disks, for the log.
    pub fn take_changes(&self) -> Vec<String> {
        std::mem::take(&mut self.changes.borrow_mut())
    }

    fn wait_for_event(&self, timeout: Option<Duration>) -> anyhow::Result<()> {
        let wait = timeout.map_or(RECHECK_EVERY, |left| left.min(RECHECK_EVERY));
        let timeout = PollTimeout::try_from(wait.as_millis().clamp(1, i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(error) => return Err(error).context("cannot wait for kernel uevents"),
        }
        // Something changed: look again, after loading the drivers that new devices ask for.
        let loads = self.load_announced(&mut PresentDrivers::default());
        self.note_failures(&loads);
        self.changes.borrow_mut().extend(loads.iter().map(DriverLoad::describe));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{partition_number, unbootable_image};
    use keel_disk::{flatcar_layout, plan_layout, read_gpt, write_gpt, Guid, LayoutSizes, SectorSize};
    use std::io::Cursor;

    /// A Flatcar-layout image of `sector_size` in memory, and its size.
    fn image(sector_size: SectorSize) -> (Vec<u8>, u64) {
        const MIB: u64 = 1 << 20;
        let sizes = LayoutSizes { esp: MIB, bios_boot: MIB, usr: MIB, oem: MIB, oem_config: MIB, root: MIB };
        let layout = plan_layout(&flatcar_layout(&sizes).unwrap(), sector_size, |_| Guid::from_random_bytes([1; 16])).unwrap();
        let mut disk = Cursor::new(vec![0u8; layout.disk_bytes as usize]);
        write_gpt(&mut disk, sector_size, Guid::from_random_bytes([2; 16]), &layout.partitions).unwrap();
        (disk.into_inner(), layout.disk_bytes)
    }

    #[test]
    fn only_this_images_own_table_on_a_disk_that_cannot_boot_it_ends_the_wait() {
        for sector_size in SectorSize::ALL {
            let (bytes, image_bytes) = image(sector_size);
            // Written to a disk of the other sector size.
            let error = read_gpt(&mut Cursor::new(&bytes), sector_size.other()).unwrap_err();
            assert_eq!(unbootable_image(&error, image_bytes), Some(""), "{error:#}");
            assert_eq!(unbootable_image(&error, image_bytes + (1 << 20)), None, "another image's table");
            // Written to a disk too small for it.
            let error = read_gpt(&mut Cursor::new(&bytes[..bytes.len() - (2 << 20)]), sector_size).unwrap_err();
            assert!(unbootable_image(&error, image_bytes).is_some_and(|advice| advice.contains("at least as big")), "{error:#}");
            assert_eq!(unbootable_image(&error, image_bytes + (1 << 20)), None, "another image's table");
        }
        assert_eq!(unbootable_image(&anyhow::anyhow!("no valid GPT"), 1 << 30), None);
    }

    #[test]
    fn partition_paths_follow_the_kernels_names() {
        assert_eq!(partition_number("vda", "vda3"), Some(3));
        assert_eq!(partition_number("nvme0n1", "nvme0n1p3"), Some(3));
        assert_eq!(partition_number("loop1", "loop1p12"), Some(12));
        // nvme0n12 is namespace 12, not partition 2 of nvme0n1; vdap3 is no partition name.
        for (disk, name) in [("nvme0n1", "nvme0n12"), ("loop1", "loop12"), ("vda", "vdap3"), ("vda", "vda03"), ("vda", "vda+3"), ("vda", "vda")] {
            assert_eq!(partition_number(disk, name), None, "{name} on {disk}");
        }
    }
}
