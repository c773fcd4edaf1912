//! First boot, on the boot disk (the one whose /usr verified): decide whether this is one, give the disk its
//! own identity, grow ROOT to fill the disk, and clear the first-boot flag once every
//! step has succeeded. Each step converges when run again, so a boot cut short by a
//! power cut is finished by the next, which is a first boot again until the flag is gone.

use crate::devices::{kernel_size_bytes, BootDisk, FoundDevice};
use crate::log::Log;
use crate::mounts::mount_at;
use anyhow::{bail, Context};
use keel_cmdline::{BootParams, FirstBootRequest};
use keel_disk::{
    fat_path_exists, grow_root, probe_filesystem, randomize_identity, read_gpt, resize_kernel_partition, Ambiguous, FsKind, Guid, Probe, SectorSize,
    UnsupportedShape, FIRST_BOOT_FLAG, ROOT_NAME, TYPE_ESP,
};
use nix::mount::{umount, MsFlags};
use std::fs::File;
use std::path::Path;

const ESP_MOUNT: &str = "/run/keel/esp";

/// ROOT as a partition of the boot disk: the only ROOT keel formats, marks or grows.
pub struct RootDisk {
    pub boot_disk: BootDisk,
    pub root_number: u32,
}

impl RootDisk {
    /// `None` when ROOT is not a partition of the boot disk (`root=` named another
    /// device): it is mounted as it is, and nothing is written to it.
    pub fn of(boot_disk: Option<&BootDisk>, root: &FoundDevice) -> Option<RootDisk> {
        let boot_disk = boot_disk?;
        boot_disk.number_of(root).map(|root_number| RootDisk { boot_disk: boot_disk.clone(), root_number })
    }
}

/// This boot is a first boot.
pub struct FirstBoot {
    /// Why, for the log.
    pub reason: &'static str,
    /// The vfat ESP whose flag is cleared at the end: set when the flag is what made this a
    /// first boot (found here, or `detected` by the bootloader), not when the command line
    /// simply asks for one.
    flag_on: Option<FoundDevice>,
    /// The boot disk's logical sector size, in which the ESP's FAT is read.
    sector_size: SectorSize,
}

/// A random GUID that does not wait for the kernel's entropy pool: early in boot
/// getrandom() would block, and libuuid (inside mkfs) instead retries for about a second
/// per UUID. Identifiers need to be unique, not secret, so GRND_INSECURE is the right call.
pub fn early_random_guid() -> anyhow::Result<Guid> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        filled += rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::INSECURE).context("getrandom failed")?;
    }
    Ok(Guid::from_random_bytes(bytes))
}

/// The boot disk's ESP, when it has one with a vfat filesystem on it.
pub(crate) fn find_esp(boot_disk: &BootDisk) -> anyhow::Result<Option<FoundDevice>> {
    let gpt = boot_disk.table()?;
    let esp_type = Guid::parse(TYPE_ESP)?;
    let mut esps = gpt.partitions.iter().filter(|p| p.type_guid == esp_type);
    let Some(entry) = esps.next() else { return Ok(None) };
    if let Some(second) = esps.next() {
        bail!("partitions {} and {} are both ESPs: which one holds the first-boot flag is ambiguous", entry.number, second.number);
    }
    let Some(esp) = boot_disk.partition(entry.number)? else { return Ok(None) };
    let probe = probe_filesystem(&mut File::open(&esp.node).with_context(|| format!("cannot open {}", esp.node.display()))?)?;
    Ok(matches!(probe, Probe::Filesystem(fs) if fs.kind == FsKind::Vfat).then_some(esp))
}

/// Mounts the ESP to write it (only first boot does: the flag, the kernel arguments), runs
/// `with` on its mount point, and unmounts it again.
pub(crate) fn with_esp<T>(esp: &FoundDevice, with: impl FnOnce(&Path) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mount_point = Path::new(ESP_MOUNT);
    crate::root::load_filesystem_modules(FsKind::Vfat)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // Names as keel's FAT reader reads them (codepage 437, iocharset ascii): Debian's kernel
    // would otherwise decode them as UTF-8, and could find a flag the reader does not.
    mount_at(&esp.node.display().to_string(), mount_point, Some("vfat"), flags, Some("utf8=0"))?;
    let result = with(mount_point);
    let unmounted = umount(mount_point).with_context(|| format!("cannot unmount the ESP from {ESP_MOUNT}"));
    let value = result?;
    unmounted?;
    Ok(value)
}

/// Whether this boot is a first boot: the command line decides when it says, otherwise
/// the flag file on the ESP does. An ESP that cannot be read is logged, not fatal: the
/// boot goes on as a later boot would (nothing is written), and says why.
pub fn detect(params: &BootParams, boot_disk: &BootDisk, log: &mut Log) -> Option<FirstBoot> {
    let esp = find_esp(boot_disk).unwrap_or_else(|error| {
        log.error(&format!("first-boot: cannot look for the ESP: {error:#}"));
        None
    });
    let (reason, flag_on) = match params.first_boot {
        FirstBootRequest::No => return None,
        FirstBootRequest::Yes => ("the kernel command line asks for it", None),
        FirstBootRequest::Detected => ("the bootloader found the first-boot flag", esp),
        FirstBootRequest::Unsaid => {
            let esp = esp?;
            match flag_on_esp(&esp, boot_disk.sector_size) {
                Ok(true) => ("the ESP holds the first-boot flag", Some(esp)),
                Ok(false) => return None,
                Err(error) => {
                    log.error(&format!(
                        "first-boot: cannot read the first-boot flag, so this is not treated as a first boot: {error:#}; if this \
                         machine was never provisioned, repair the ESP or boot once with flatcar.first_boot=1"
                    ));
                    return None;
                }
            }
        }
    };
    Some(FirstBoot { reason, flag_on, sector_size: boot_disk.sector_size })
}

/// Whether `error` comes from the disk itself: a table whose shape rules the step out, or a
/// disk that cannot be written. No later boot can do better, so first boot reports the
/// step as skipped and goes on instead of failing every boot.
fn disk_rules_it_out(error: &anyhow::Error) -> bool {
    const READ_ONLY: [i32; 3] = [libc::EROFS, libc::EACCES, libc::EPERM];
    error.chain().any(|cause| {
        cause.is::<UnsupportedShape>()
            || cause.is::<Ambiguous>()
            || cause.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error).is_some_and(|code| READ_ONLY.contains(&code))
    })
}

/// Runs one first-boot step on the boot disk: its result, or what it was skipped for
/// when the disk rules it out; any other error stops the boot.
fn step(name: &str, run: impl FnOnce() -> anyhow::Result<String>) -> anyhow::Result<String> {
    match run() {
        Ok(done) => Ok(done),
        Err(error) if disk_rules_it_out(&error) => Ok(format!("{name} SKIPPED: {error:#}")),
        Err(error) => Err(error.context(format!("first boot could not {name}"))),
    }
}

/// The boot disk's own GUIDs (Flatcar's disk-uuid), drawn when it still has the image's.
/// Returns what it did, for the log.
pub fn give_identity(params: &BootParams, boot_disk: &BootDisk) -> anyhow::Result<String> {
    step("give the disk its own GUIDs", || {
        let mut disk = boot_disk.open_for_writing()?;
        // A failed draw gives the zero GUID, which randomize_identity never uses; the draw's
        // own error is what the person needs to see.
        let mut draw_error = None;
        let renamed = randomize_identity(&mut disk, boot_disk.sector_size, params.image_disk_guid, || {
            early_random_guid().unwrap_or_else(|error| {
                draw_error = Some(error);
                Guid::ZERO
            })
        });
        let renamed = match (renamed, draw_error) {
            (Err(_), Some(draw_error)) => return Err(draw_error.context("cannot draw the disk's new GUIDs; nothing was changed")),
            (renamed, _) => renamed?,
        };
        Ok(match renamed {
            Some(guid) => format!("disk GUID {guid} (ROOT's is new too)"),
            None => "the disk already has its own GUID".to_string(),
        })
    })
}

/// ROOT (when it is the boot disk's partition named ROOT) grown to the disk's end with the
/// running kernel told. Returns what it did, for the log.
/// `root_disk` is ROOT's place on the boot disk, `None` when ROOT is elsewhere.
pub fn grow_root_partition(boot_disk: &BootDisk, root: &FoundDevice, root_disk: Option<&RootDisk>) -> anyhow::Result<String> {
    let Some(root_number) = root_disk.map(|root_disk| root_disk.root_number) else {
        return Ok(format!("ROOT {} is not on the boot disk, so nothing was grown", root.node.display()));
    };
    let is_root = boot_disk.table()?.partition(root_number).is_some_and(|p| p.name == ROOT_NAME);
    if !is_root {
        return Ok(format!("root= is not the partition named {ROOT_NAME}, so nothing was grown"));
    }
    step("grow ROOT", || {
        let sector_size = boot_disk.sector_size;
        let mib = |sectors: u64| (sectors * sector_size.bytes()) >> 20;
        let mut disk = boot_disk.open_for_writing()?;
        let grown = match grow_root(&mut disk, sector_size)? {
            Some(grown) => format!("{ROOT_NAME} grew from {} to {} MiB", mib(grown.old_sectors), mib(grown.new_sectors)),
            None => format!("{ROOT_NAME} already fills the disk"),
        };
        // The kernel read the table at boot; a grow written then (or by a boot a power cut
        // stopped after the write) is news to it.
        let entry = read_gpt(&mut disk, sector_size)?.partition(root_number).cloned().context("ROOT vanished from the table")?;
        if kernel_size_bytes(root)? != entry.size_bytes(sector_size) {
            resize_kernel_partition(&disk, sector_size, &entry)?;
        }
        Ok(grown)
    })
}

/// Whether the ESP holds the flag, read without mounting it: every boot asks, and a later
/// boot then needs no vfat module and hands the kernel's FAT code nothing from this
/// untrusted partition.
fn flag_on_esp(esp: &FoundDevice, sector_size: SectorSize) -> anyhow::Result<bool> {
    let mut device = File::open(&esp.node).with_context(|| format!("cannot open {}", esp.node.display()))?;
    fat_path_exists(&mut device, sector_size, FIRST_BOOT_FLAG).with_context(|| format!("in the ESP {}", esp.node.display()))
}

/// Clears the first-boot flag: the last step of a first boot, once all others succeeded.
/// A failure here is reported by the caller but does not stop the boot: the flag stays,
/// and the next boot runs first boot again, which converges.
pub fn finish(first_boot: &FirstBoot) -> anyhow::Result<String> {
    let Some(esp) = &first_boot.flag_on else {
        return Ok("no flag to clear: the command line asked for this first boot, or the disk has no vfat ESP".into());
    };
    let removed = with_esp(esp, |esp_root| {
        let flag = &esp_root.join(FIRST_BOOT_FLAG);
        if !flag.exists() {
            return Ok(false);
        }
        std::fs::remove_file(flag).with_context(|| format!("cannot remove {}", flag.display()))?;
        // The removal must be on disk before the real system starts writing.
        let dir = File::open(flag.parent().unwrap_or(flag)).with_context(|| format!("cannot open {}", flag.display()))?;
        rustix::fs::syncfs(&dir).context("cannot flush the ESP")?;
        Ok(true)
    })?;
    // The next boot asks keel's reader, not the kernel: a flag only the reader still sees
    // would make every boot a first boot.
    if flag_on_esp(esp, first_boot.sector_size).unwrap_or(false) {
        bail!(
            "keel's FAT reader still finds {FIRST_BOOT_FLAG} on {} after the kernel's vfat {}: repair the ESP with fsck.vfat, or boot \
             with flatcar.first_boot=0",
            esp.node.display(),
            if removed { "removed it" } else { "found none" }
        );
    }
    Ok(if removed {
        format!("first-boot flag {FIRST_BOOT_FLAG} removed from {}", esp.node.display())
    } else {
        "no first-boot flag left to clear".to_string()
    })
}
