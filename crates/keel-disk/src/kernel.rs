//! Asking the running kernel a disk's logical sector size (the unit of its partition
//! table), and telling it what first boot changed: a partition that grew while its
//! disk is in use (BLKPG; rereading the whole table fails while /usr is open), and a
//! mounted filesystem that should fill its grown partition (the same ioctls resize2fs,
//! xfs_growfs and `btrfs filesystem resize` use for an online grow).

use crate::{FsKind, GptPartition, SectorSize};
use anyhow::{bail, Context};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

const BLKPG: u32 = 0x1269; // _IO(0x12, 105)
const BLKRRPART: u32 = 0x125f; // _IO(0x12, 95)
const BLKSSZGET: u32 = 0x1268; // _IO(0x12, 104), an int
const BLKROSET: u32 = 0x125d; // _IO(0x12, 93), an int
const BLKPG_ADD_PARTITION: libc::c_int = 1;
const BLKPG_DEL_PARTITION: libc::c_int = 2;
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
const EXT4_IOC_RESIZE_FS: u32 = 0x4008_6610; // _IOW('f', 16, __u64)
const XFS_IOC_FSGEOMETRY_V1: u32 = 0x8070_5864; // _IOR('X', 100, struct xfs_fsop_geom_v1)
const XFS_IOC_FSGROWFSDATA: u32 = 0x4010_586e; // _IOW('X', 110, struct xfs_growfs_data)
const BTRFS_IOC_RESIZE: u32 = 0x5000_9403; // _IOW(0x94, 3, struct btrfs_ioctl_vol_args)
const FIFREEZE: u32 = 0xc004_5877; // _IOWR('X', 119, int)
const FITHAW: u32 = 0xc004_5878; // _IOWR('X', 120, int)

#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut BlkpgPartition,
}

#[repr(C)]
#[derive(Default)]
struct XfsGeometryV1 {
    blocksize: u32,
    rtextsize: u32,
    agblocks: u32,
    agcount: u32,
    logblocks: u32,
    sectsize: u32,
    inodesize: u32,
    imaxpct: u32,
    datablocks: u64,
    rtblocks: u64,
    rtextents: u64,
    logstart: u64,
    uuid: [u8; 16],
    sunit: u32,
    swidth: u32,
    version: i32,
    flags: u32,
    logsectsize: u32,
    rtsectsize: u32,
    dirblocksize: u32,
}

#[repr(C)]
struct XfsGrowfsData {
    newblocks: u64,
    imaxpct: u32,
}

#[repr(C)]
struct BtrfsVolArgs {
    fd: i64,
    name: [u8; 4088],
}

static_assertions::const_assert_eq!(std::mem::size_of::<BlkpgPartition>(), 152);
static_assertions::const_assert_eq!(std::mem::size_of::<XfsGeometryV1>(), 112);
static_assertions::const_assert_eq!(std::mem::size_of::<XfsGrowfsData>(), 16);
static_assertions::const_assert_eq!(std::mem::size_of::<BtrfsVolArgs>(), 4096);

/// Makes the kernel refuse (`true`) or allow again every write to the block device `device`
/// (BLKROSET). A read-only mount is not enough to keep a filesystem's bytes as they are: ext4
/// cleans up orphan inodes even then; on a read-only device it skips that.
pub fn set_device_read_only(device: &File, read_only: bool) -> anyhow::Result<()> {
    let mut flag: libc::c_int = read_only.into();
    ioctl(device, BLKROSET, &mut flag).context("the kernel refused to change whether the device is read-only")
}

/// One ioctl whose argument is `arg`, with the errno as an io::Error. Request numbers are
/// u32 here: glibc declares them unsigned long, musl int (`libc::Ioctl`).
fn ioctl<T>(file: &File, request: u32, arg: *mut T) -> std::io::Result<()> {
    // SAFETY: every caller passes a request number together with a pointer to the
    // #[repr(C)] type that request reads or writes (sizes asserted above), valid for the call.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), request as libc::Ioctl, arg) };
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The logical sector size of the block device `disk`: the unit the kernel reads its
/// partition table in, and so the one keel must read and write it in.
pub fn logical_sector_size(disk: &File) -> anyhow::Result<SectorSize> {
    let mut bytes: libc::c_int = 0;
    ioctl(disk, BLKSSZGET, &mut bytes).context("cannot ask the kernel for the disk's logical sector size")?;
    SectorSize::new(u64::try_from(bytes)?)
}

/// One BLKPG request about partition `number` of `disk`: the kernel's own partitions change
/// while other partitions of the disk are in use (rereading the whole table fails then).
fn blkpg(disk: &File, op: libc::c_int, number: u32, start_bytes: u64, length_bytes: u64) -> anyhow::Result<()> {
    let mut data = BlkpgPartition {
        start: i64::try_from(start_bytes)?,
        length: i64::try_from(length_bytes)?,
        pno: i32::try_from(number)?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg { op, flags: 0, datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int, data: &mut data };
    Ok(ioctl(disk, BLKPG, &mut arg)?)
}

/// Tells the kernel that `partition` of `disk` (an open block device of `sector_size`
/// logical sectors) now has the size the table gives it. Nothing else about the partition
/// may differ from what the kernel has.
pub fn resize_kernel_partition(disk: &File, sector_size: SectorSize, partition: &GptPartition) -> anyhow::Result<()> {
    blkpg(disk, BLKPG_RESIZE_PARTITION, partition.number, partition.start_bytes(sector_size), partition.size_bytes(sector_size))
        .with_context(|| format!("the kernel refused the new size of partition {}", partition.number))
}

/// Tells the kernel that `disk` now has `partition`, which it did not have.
pub fn add_kernel_partition(disk: &File, sector_size: SectorSize, partition: &GptPartition) -> anyhow::Result<()> {
    blkpg(disk, BLKPG_ADD_PARTITION, partition.number, partition.start_bytes(sector_size), partition.size_bytes(sector_size))
        .with_context(|| format!("the kernel refused to add partition {}", partition.number))
}

/// Tells the kernel that `disk` no longer has partition `number`; it refuses while the
/// partition is in use.
pub fn delete_kernel_partition(disk: &File, number: u32) -> anyhow::Result<()> {
    blkpg(disk, BLKPG_DEL_PARTITION, number, 0, 0).with_context(|| format!("the kernel refused to drop partition {number} (is it in use?)"))
}

/// Asks the kernel to read `disk`'s partition table again; it refuses while a partition
/// of the disk is in use.
pub fn reread_partition_table(disk: &File) -> anyhow::Result<()> {
    // SAFETY: BLKRRPART takes no argument.
    let result = unsafe { libc::ioctl(disk.as_raw_fd(), BLKRRPART as libc::Ioctl, 0) };
    if result < 0 {
        return Err(std::io::Error::last_os_error()).context("the kernel could not reread the partition table");
    }
    Ok(())
}

/// Where partition `number` of the block device `disk` is mounted, and as what, from
/// sysfs and /proc/self/mountinfo.
pub fn mounted_partition(disk: &File, number: u32) -> anyhow::Result<Option<(std::path::PathBuf, FsKind)>> {
    use std::os::unix::fs::MetadataExt;
    let rdev = disk.metadata()?.rdev();
    let disk_dir = std::path::PathBuf::from(format!("/sys/dev/block/{}:{}", libc::major(rdev), libc::minor(rdev)));
    let mut partition_dev = None;
    for entry in std::fs::read_dir(&disk_dir).with_context(|| format!("cannot read {}", disk_dir.display()))?.flatten() {
        let is_it = std::fs::read_to_string(entry.path().join("partition")).is_ok_and(|n| n.trim() == number.to_string());
        if is_it {
            partition_dev = Some(std::fs::read_to_string(entry.path().join("dev"))?.trim().to_string());
        }
    }
    let Some(partition_dev) = partition_dev else { return Ok(None) };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(separator) = fields.iter().position(|f| *f == "-") else { continue };
        // btrfs shows an anonymous device number there, so the source is checked too.
        let source_is_it = fields.get(separator + 2).is_some_and(|source| {
            std::fs::metadata(source).is_ok_and(|meta| format!("{}:{}", libc::major(meta.rdev()), libc::minor(meta.rdev())) == partition_dev)
        });
        if fields.get(2) != Some(&partition_dev.as_str()) && !source_is_it {
            continue;
        }
        let kind = match fields.get(separator + 1).copied() {
            Some("ext4") => FsKind::Ext4,
            Some("xfs") => FsKind::Xfs,
            Some("btrfs") => FsKind::Btrfs,
            other => bail!("ROOT is mounted as {}, which keel cannot grow", other.unwrap_or("?")),
        };
        let mount_point = fields.get(4).with_context(|| format!("a mountinfo line without a mount point: {line}"))?;
        return Ok(Some((std::path::PathBuf::from(mount_point.replace("\\040", " ")), kind)));
    }
    Ok(None)
}

/// What `grow_mounted_filesystem` did: the filesystem's size as statfs reports it
/// (its blocks less the fixed metadata), before and after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsGrowth {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

fn statfs_bytes(dir: &File, mount_point: &Path) -> anyhow::Result<(u64, u64)> {
    let stat = rustix::fs::fstatfs(dir).with_context(|| format!("cannot statfs {}", mount_point.display()))?;
    let block_size = stat.f_bsize as u64;
    Ok((block_size, stat.f_blocks as u64 * block_size))
}

/// Grows the filesystem mounted at `mount_point` to fill its device of `device_bytes`
/// bytes, online. Each filesystem treats a grow to the size it already has as done, so
/// running this again after a power cut finishes a grow that was cut short.
pub fn grow_mounted_filesystem(mount_point: &Path, kind: FsKind, device_bytes: u64) -> anyhow::Result<FsGrowth> {
    let dir = File::open(mount_point).with_context(|| format!("cannot open {}", mount_point.display()))?;
    let (block_size, bytes_before) = statfs_bytes(&dir, mount_point)?;
    if bytes_before > device_bytes {
        bail!("the filesystem at {} ({bytes_before} bytes) is larger than its device ({device_bytes} bytes)", mount_point.display());
    }
    let grown = grow(&dir, kind, block_size, device_bytes);
    // A grow that failed partway (ext4 adds groups one batch at a time) is written back too.
    let bytes_after = statfs_bytes(&dir, mount_point)?.1;
    if bytes_after != bytes_before {
        checkpoint(&dir).with_context(|| format!("{} grew, but the grow could not be written back in place", mount_point.display()))?;
    }
    grown?;
    Ok(FsGrowth { bytes_before, bytes_after })
}

/// The grow ioctl of `kind` on the filesystem whose root directory is `dir`.
fn grow(dir: &File, kind: FsKind, block_size: u64, device_bytes: u64) -> anyhow::Result<()> {
    match kind {
        FsKind::Ext4 => {
            let mut blocks = device_bytes / block_size;
            ioctl(dir, EXT4_IOC_RESIZE_FS, &mut blocks).map_err(|error| {
                let hint = if error.raw_os_error() == Some(libc::EPERM) { " (resizing ext4 needs CAP_SYS_RESOURCE)" } else { "" };
                anyhow::Error::from(error).context(format!("the kernel refused to grow the ext4 filesystem{hint}"))
            })?;
        }
        FsKind::Xfs => {
            let mut geometry = XfsGeometryV1::default();
            ioctl(dir, XFS_IOC_FSGEOMETRY_V1, &mut geometry).context("cannot read the XFS geometry")?;
            let newblocks = device_bytes / u64::from(geometry.blocksize);
            if newblocks > geometry.datablocks {
                let mut request = XfsGrowfsData { newblocks, imaxpct: geometry.imaxpct };
                ioctl(dir, XFS_IOC_FSGROWFSDATA, &mut request).context("the kernel refused to grow the XFS filesystem")?;
            }
        }
        FsKind::Btrfs => {
            let mut args = BtrfsVolArgs { fd: 0, name: [0; 4088] };
            args.name[..3].copy_from_slice(b"max");
            ioctl(dir, BTRFS_IOC_RESIZE, &mut args).context("the kernel refused to grow the btrfs filesystem")?;
        }
        FsKind::Vfat | FsKind::Swap => bail!("{} cannot be grown in place", kind.mount_type()),
    }
    Ok(())
}

/// The signals a person or a service manager sends to stop a command. A process that dies
/// between a freeze and its thaw leaves the filesystem frozen (the kernel does not tie a
/// freeze to the process that made it), and every writer hangs; so they are ignored
/// meanwhile, process-wide (a blocked mask would only cover this thread). SIGKILL cannot be.
const STOP_SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Ignores [`STOP_SIGNALS`], returning what to restore.
fn ignore_stop_signals() -> Vec<(libc::c_int, libc::sigaction)> {
    STOP_SIGNALS
        .iter()
        .filter_map(|&signal| {
            // SAFETY: sigaction with valid pointers to initialised structs; SIG_IGN needs no handler.
            unsafe {
                let mut ignore: libc::sigaction = std::mem::zeroed();
                ignore.sa_sigaction = libc::SIG_IGN;
                let mut previous: libc::sigaction = std::mem::zeroed();
                (libc::sigaction(signal, &ignore, &mut previous) == 0).then_some((signal, previous))
            }
        })
        .collect()
}

fn restore_signals(previous: Vec<(libc::c_int, libc::sigaction)>) {
    for (signal, action) in previous {
        // SAFETY: restores an action sigaction itself returned.
        unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
    }
}

/// Freezes and thaws the filesystem at `dir`: a freeze writes every piece of metadata back to its
/// place and leaves the journal or log clean. A grow that is only in the log must be replayed
/// after a power cut, and a kernel other than the one that grew it (the host's, an update's) can
/// refuse to (XFS validates the log's blocks against the size the superblock still gives).
fn checkpoint(dir: &File) -> anyhow::Result<()> {
    let previous = ignore_stop_signals();
    let result = freeze_and_thaw(dir);
    restore_signals(previous);
    result
}

fn freeze_and_thaw(dir: &File) -> anyhow::Result<()> {
    let mut unused: libc::c_int = 0;
    ioctl(dir, FIFREEZE, &mut unused).context("the kernel refused to freeze the filesystem")?;
    // A frozen filesystem blocks every writer: the thaw is tried again rather than given up.
    let mut thawed = ioctl(dir, FITHAW, &mut unused);
    for _ in 0..3 {
        if thawed.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        thawed = ioctl(dir, FITHAW, &mut unused);
    }
    thawed.context("the kernel refused to thaw the filesystem")
}
