//! Finding block devices without udev: the kernel's uevents say when something changed,
//! sysfs says what exists, and the GPT and filesystem superblocks say which device is which.

use anyhow::{bail, Context};
use keel_cmdline::DeviceSpec;
use keel_disk::{probe_filesystem, read_gpt, repair_table, reread_partition_table, Gpt, Guid, Probe, SmallerThanImage, ROOT_FORMAT_PENDING};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use std::cell::RefCell;
use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SYS_BLOCK: &str = "/sys/class/block";
/// The longest a wait goes without looking again, event or not.
const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a disk too small for its image may be all there is before the wait gives up:
/// time for the boot disk to appear if the small one is a stray.
const SMALLER_THAN_IMAGE_GRACE: Duration = Duration::from_secs(3);

/// A block device as sysfs shows it.
#[derive(Clone, Debug)]
struct SysBlock {
    name: String,
    major: u64,
    minor: u64,
    /// For a partition: its disk's name and its number there.
    partition_of: Option<(String, u32)>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|text| text.trim().to_string())
}

fn block_devices() -> Vec<SysBlock> {
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
fn device_node(device: &SysBlock) -> anyhow::Result<PathBuf> {
    let node = Path::new("/dev").join(&device.name);
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

/// The partition table on the block device `node`.
pub fn read_table(node: &Path) -> anyhow::Result<Gpt> {
    read_gpt(&mut File::open(node).with_context(|| format!("cannot open {}", node.display()))?)
}

/// A partition or disk that matched a device spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundDevice {
    pub node: PathBuf,
    pub major: u64,
    pub minor: u64,
}

/// What one look at the devices saw, for the message when the wait runs out, and what
/// it changed, for the log.
#[derive(Default)]
struct Seen {
    lines: Vec<String>,
    changes: Vec<String>,
    /// A disk whose table is too big for it: no wait can make that disk bootable.
    smaller_than_image: Option<String>,
}

fn found(device: &SysBlock) -> anyhow::Result<FoundDevice> {
    Ok(FoundDevice { node: device_node(device)?, major: device.major, minor: device.minor })
}

/// One look for `spec` among the devices present now. More than one match is an error:
/// a second disk carrying the same image (or planted to) must not decide what boots.
fn look_for(spec: &DeviceSpec, seen: &mut Seen) -> anyhow::Result<Option<FoundDevice>> {
    let mut matches = matching_devices(spec, seen)?;
    match matches.len() {
        0 => Ok(None),
        1 => Ok(matches.pop()),
        _ => {
            let nodes: Vec<String> = matches.iter().map(|m| m.node.display().to_string()).collect();
            bail!("{spec} matches {} devices ({}): name the one to boot with PARTUUID= or a /dev path", nodes.len(), nodes.join(", "))
        }
    }
}

/// Names that mark a disk as carrying a keel (Flatcar) image: only such disks are repaired.
const IMAGE_PARTITIONS: [&str; 3] = ["USR-A", "USR-B", "ROOT"];

/// Without the `gpt` parameter the kernel ignores a disk whose primary table is damaged (a
/// power cut while first boot rewrote it can leave one), whatever names the device to boot:
/// on a disk carrying an image, the intact backup is copied over it and the kernel told.
fn repair_torn_tables(devices: &[SysBlock], seen: &mut Seen) -> anyhow::Result<()> {
    for disk in devices.iter().filter(|d| d.partition_of.is_none()) {
        let Ok(gpt) = read_table(&device_node(disk)?) else { continue };
        if !gpt.primary_intact && gpt.partitions.iter().any(|p| IMAGE_PARTITIONS.contains(&p.name.as_str())) {
            repair_primary_table(disk, seen)?;
        }
    }
    Ok(())
}

fn matching_devices(spec: &DeviceSpec, seen: &mut Seen) -> anyhow::Result<Vec<FoundDevice>> {
    let mut devices = block_devices();
    seen.lines.clear();
    seen.smaller_than_image = None;
    let changes_before = seen.changes.len();
    repair_torn_tables(&devices, seen)?;
    if seen.changes.len() > changes_before {
        devices = block_devices();
    }
    let mut matches = Vec::new();
    match spec {
        DeviceSpec::Path(path) => {
            let wanted = Path::new(path);
            seen.lines.push(format!("block devices: {}", devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(" ")));
            if let Some(device) = devices.iter().find(|device| wanted == Path::new("/dev").join(&device.name)) {
                matches.push(found(device)?);
            } else if wanted.exists() {
                use std::os::unix::fs::{FileTypeExt, MetadataExt};
                let meta = fs::metadata(wanted).with_context(|| format!("cannot stat {path}"))?;
                if !meta.file_type().is_block_device() {
                    bail!("{path} is not a block device");
                }
                let (major, minor) = (nix::sys::stat::major(meta.rdev()), nix::sys::stat::minor(meta.rdev()));
                matches.push(FoundDevice { node: wanted.to_path_buf(), major, minor });
            }
        }
        DeviceSpec::PartLabel(_) | DeviceSpec::PartUuid(_) => {
            let wanted_guid = match spec {
                DeviceSpec::PartUuid(text) => Some(Guid::parse(text).context("PARTUUID= is not a GUID")?),
                _ => None,
            };
            for disk in devices.iter().filter(|d| d.partition_of.is_none()) {
                let gpt = match read_table(&device_node(disk)?) {
                    Ok(gpt) => gpt,
                    Err(error) => {
                        if error.downcast_ref::<SmallerThanImage>().is_some() {
                            seen.smaller_than_image = Some(format!("{}: {error:#}; nothing was changed", disk.name));
                        }
                        seen.lines.push(format!("{}: no usable GPT ({error:#})", disk.name));
                        continue;
                    }
                };
                let names: Vec<String> = gpt.partitions.iter().map(|p| format!("{}={}", p.number, p.name)).collect();
                seen.lines.push(format!("{}: GPT with {}", disk.name, names.join(" ")));
                let partition = match (spec, wanted_guid) {
                    (DeviceSpec::PartLabel(name), _) => gpt.by_name(name),
                    (_, Some(guid)) => gpt.by_guid(guid),
                    _ => None,
                };
                let Some(partition) = partition else { continue };
                let child = devices.iter().find(|d| d.partition_of.as_ref() == Some(&(disk.name.clone(), partition.number)));
                match child {
                    Some(child) => matches.push(found(child)?),
                    None => {
                        seen.lines.push(format!("{}: partition {} is in the GPT but the kernel has not added it yet", disk.name, partition.number))
                    }
                }
            }
        }
        DeviceSpec::Label(_) | DeviceSpec::Uuid(_) => {
            let mut blank_named = Vec::new();
            for device in &devices {
                let node = device_node(device)?;
                let probe = match File::open(&node).and_then(|mut f| probe_filesystem(&mut f)) {
                    Ok(probe) => probe,
                    Err(error) => {
                        seen.lines.push(format!("{}: unreadable ({error})", device.name));
                        continue;
                    }
                };
                seen.lines.push(format!("{}: {probe:?}", device.name));
                match (&probe, spec) {
                    (Probe::Filesystem(fs), DeviceSpec::Label(label)) if &fs.label == label => matches.push(found(device)?),
                    (Probe::Filesystem(fs), DeviceSpec::Uuid(uuid)) if fs.uuid.eq_ignore_ascii_case(uuid) => {
                        matches.push(found(device)?);
                    }
                    (_, DeviceSpec::Label(label)) if stands_in_for_label(&probe, device, &devices, label)? => {
                        blank_named.push(found(device)?);
                    }
                    _ => {}
                }
            }
            // A partition named like the label stands in only when no filesystem has it, and
            // only while it is blank or keel's format of it was cut short: formatting gives it
            // that label (Flatcar's `root=LABEL=ROOT` on a first boot).
            if matches.is_empty() {
                matches = blank_named;
            }
        }
    }
    Ok(matches)
}

fn repair_primary_table(disk: &SysBlock, seen: &mut Seen) -> anyhow::Result<()> {
    let node = device_node(disk)?;
    let mut file = fs::OpenOptions::new().read(true).write(true).open(&node).with_context(|| format!("cannot open {}", node.display()))?;
    repair_table(&mut file).with_context(|| format!("cannot repair the GPT of {}", node.display()))?;
    file.sync_all().with_context(|| format!("cannot flush {}", node.display()))?;
    reread_partition_table(&file).with_context(|| format!("{}", node.display()))?;
    seen.changes.push(format!("{}: its primary GPT was damaged; rewrote it from the intact backup", disk.name));
    Ok(())
}

/// The disk a partition is on, and the partition's number there; `None` for a device
/// that is not a partition.
pub fn disk_of(partition: &FoundDevice) -> anyhow::Result<Option<(FoundDevice, u32)>> {
    let devices = block_devices();
    let Some(device) = devices.iter().find(|d| d.major == partition.major && d.minor == partition.minor) else {
        bail!("{} is no longer in sysfs", partition.node.display())
    };
    let Some((disk_name, number)) = &device.partition_of else { return Ok(None) };
    let disk = devices.iter().find(|d| &d.name == disk_name).with_context(|| format!("the disk of {} is not in sysfs", device.name))?;
    Ok(Some((found(disk)?, *number)))
}

/// Partition `number` of `disk` as the kernel has it now, if it has it.
pub fn partition_on(disk: &FoundDevice, number: u32) -> anyhow::Result<Option<FoundDevice>> {
    let devices = block_devices();
    let Some(disk) = devices.iter().find(|d| d.major == disk.major && d.minor == disk.minor) else { return Ok(None) };
    devices.iter().find(|d| d.partition_of.as_ref() == Some(&(disk.name.clone(), number))).map(found).transpose()
}

/// The size the kernel gives a block device now, in bytes.
pub fn kernel_size_bytes(device: &FoundDevice) -> anyhow::Result<u64> {
    let path = format!("/sys/dev/block/{}:{}/size", device.major, device.minor);
    let sectors: u64 =
        read_trimmed(Path::new(&path)).with_context(|| format!("cannot read {path}"))?.parse().with_context(|| format!("bad {path}"))?;
    Ok(sectors * 512)
}

/// Whether `device` is a partition named `label` that keel will format: blank, or marked
/// ROOT_FORMAT_PENDING because a format was cut short (its half-written content may
/// probe as anything).
fn stands_in_for_label(probe: &Probe, device: &SysBlock, devices: &[SysBlock], label: &str) -> anyhow::Result<bool> {
    let Some((disk_name, number)) = &device.partition_of else { return Ok(false) };
    let Some(disk) = devices.iter().find(|d| &d.name == disk_name) else { return Ok(false) };
    let Ok(gpt) = read_table(&device_node(disk)?) else { return Ok(false) };
    Ok(gpt.partition(*number).is_some_and(|p| p.name == label && (*probe == Probe::Blank || p.attributes & ROOT_FORMAT_PENDING != 0)))
}

/// Listens to the kernel's uevents. Open it before loading drivers: an event that comes
/// between a look and the wait then still wakes the wait.
pub struct DeviceWatcher {
    socket: OwnedFd,
    /// What waiting changed on the disks (a repaired table), until `take_changes`.
    changes: RefCell<Vec<String>>,
}

impl DeviceWatcher {
    pub fn open() -> anyhow::Result<DeviceWatcher> {
        let socket =
            socket(AddressFamily::Netlink, SockType::Datagram, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, SockProtocol::NetlinkKObjectUEvent)
                .context("cannot open the kernel uevent socket")?;
        // Group 1: the kernel's own events (udev re-broadcasts on group 2).
        bind(socket.as_raw_fd(), &NetlinkAddr::new(0, 1)).context("cannot listen to kernel uevents")?;
        Ok(DeviceWatcher { socket, changes: RefCell::new(Vec::new()) })
    }

    /// Looks for `spec` now, after every uevent, and at least every second (a read that
    /// failed while a disk spun up, or a size change, brings no new event), until
    /// `timeout` runs out (`None`: for ever).
    pub fn wait_for(&self, spec: &DeviceSpec, timeout: Option<Duration>) -> anyhow::Result<FoundDevice> {
        let started = Instant::now();
        let mut seen = Seen::default();
        let mut smaller_since = None;
        loop {
            let looked = look_for(spec, &mut seen);
            self.changes.borrow_mut().append(&mut seen.changes);
            if let Some(device) = looked? {
                return Ok(device);
            }
            // A disk too small for its image stays so; once nothing else has turned up for
            // a while, waiting on would only hide the reason.
            match (&seen.smaller_than_image, smaller_since) {
                (None, _) => smaller_since = None,
                (Some(_), None) => smaller_since = Some(Instant::now()),
                (Some(disk), Some(since)) if since.elapsed() >= SMALLER_THAN_IMAGE_GRACE => {
                    bail!("{spec} did not appear, and {disk}. Write the image to a disk at least as big as the image")
                }
                (Some(_), Some(_)) => {}
            }
            let remaining = match timeout {
                Some(limit) => match limit.checked_sub(started.elapsed()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => {
                        let seen = if seen.lines.is_empty() { "no block device appeared".to_string() } else { seen.lines.join("; ") };
                        bail!("timed out after {} s waiting for {spec} (rd.timeout=): {seen}", limit.as_secs_f64());
                    }
                },
                None => None,
            };
            self.wait_for_event(remaining)?;
        }
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
        // The content does not matter, only that something changed: drain and look again.
        let mut buffer = [0u8; 8192];
        while recv(self.socket.as_raw_fd(), &mut buffer, MsgFlags::MSG_DONTWAIT).is_ok_and(|n| n > 0) {}
        Ok(())
    }
}
