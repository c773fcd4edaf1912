//! device-mapper for keel: the read-only dm-verity device /usr is mounted from.
//! Without udev nothing makes /dev/mapper/<name>, so this crate makes the node itself.

use anyhow::{bail, Context};
use devicemapper::{DevId, DmFlags, DmName, DmOptions, DmUuid, DM};
use keel_verity::TableLine;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use std::path::PathBuf;

const TARGET_VERITY: &str = "verity";

/// A device-mapper device that exists in the kernel, with the node keel made for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedDevice {
    pub name: String,
    pub node: PathBuf,
    pub major: u32,
    pub minor: u32,
}

/// The kernel's verdict on a verity device so far: `V` until a block failed its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerityStatus {
    Verified,
    Corrupted,
    Other(String),
}

fn control() -> anyhow::Result<DM> {
    DM::new().context("cannot open /dev/mapper/control (is dm-mod loaded?)")
}

fn dm_name(name: &str) -> anyhow::Result<&DmName> {
    DmName::new(name).with_context(|| format!("{name:?} is not a valid device-mapper name"))
}

/// Creates, loads and activates a read-only verity device called `name`, and makes
/// `/dev/mapper/<name>`. On any failure the half-made device is removed again.
pub fn create_verity(name: &str, table: &TableLine) -> anyhow::Result<MappedDevice> {
    let dm = control()?;
    let id = DevId::Name(dm_name(name)?);
    let uuid_text = format!("KEEL-VERITY-{name}");
    let uuid = DmUuid::new(&uuid_text).with_context(|| format!("{uuid_text:?} is not a valid device-mapper uuid"))?;
    let readonly = DmOptions::private().set_flags(DmFlags::DM_READONLY);
    dm.device_create(dm_name(name)?, Some(uuid), readonly).with_context(|| format!("cannot create device-mapper device {name:?}"))?;
    let activate = || -> anyhow::Result<MappedDevice> {
        let targets = [(0, table.data_sectors(), TARGET_VERITY.to_string(), table.target_params())];
        dm.table_load(&id, &targets, readonly)
            .with_context(|| format!("the kernel refused the verity table \"{table}\" (see the kernel log above)"))?;
        let info = dm.device_suspend(&id, DmOptions::private()).context("cannot activate the verity device")?;
        let device = info.device();
        let node = PathBuf::from("/dev/mapper").join(name);
        make_block_node(&node, device.major, device.minor)?;
        Ok(MappedDevice { name: name.to_string(), node, major: device.major, minor: device.minor })
    };
    activate().inspect_err(|_| {
        // Best effort: the error that matters is the one being returned.
        let _ = dm.device_remove(&id, DmOptions::private());
    })
}

fn make_block_node(node: &std::path::Path, major: u32, minor: u32) -> anyhow::Result<()> {
    if let Some(dir) = node.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let dev = makedev(u64::from(major), u64::from(minor));
    match mknod(node, SFlag::S_IFBLK, Mode::from_bits_truncate(0o600), dev) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) => {
            // Whatever is there must be this very device, or /usr could be mounted from it.
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let meta = std::fs::symlink_metadata(node).with_context(|| format!("cannot stat {}", node.display()))?;
            if !meta.file_type().is_block_device() || meta.rdev() != dev {
                bail!("{} exists but is not block device {major}:{minor}", node.display());
            }
            Ok(())
        }
        Err(error) => Err(error).with_context(|| format!("cannot create {}", node.display())),
    }
}

/// The single target of a device, as (type, parameters): the table, or its status.
fn single_target(name: &str, flags: DmFlags) -> anyhow::Result<(String, String)> {
    let dm = control()?;
    let (_, targets) = dm
        .table_status(&DevId::Name(dm_name(name)?), DmOptions::default().set_flags(flags))
        .with_context(|| format!("cannot read the table of device-mapper device {name:?}"))?;
    match targets.as_slice() {
        [(_, _, target, params)] => Ok((target.clone(), params.clone())),
        other => bail!("device-mapper device {name:?} has {} targets, expected one", other.len()),
    }
}

/// The kernel's status of the verity device `name`; an error if it is not verity at all.
pub fn verity_status(name: &str) -> anyhow::Result<VerityStatus> {
    let (target, status) = single_target(name, DmFlags::empty())?;
    if target != TARGET_VERITY {
        bail!("device-mapper device {name:?} is a {target:?} device, not verity");
    }
    Ok(match status.split_whitespace().next() {
        Some("V") => VerityStatus::Verified,
        Some("C") => VerityStatus::Corrupted,
        _ => VerityStatus::Other(status),
    })
}

/// The loaded table of `name`: target type and parameters, as `dmsetup table` prints them.
pub fn table(name: &str) -> anyhow::Result<(String, String)> {
    single_target(name, DmFlags::DM_STATUS_TABLE)
}
