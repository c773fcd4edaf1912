//! /usr through dm-verity, fail-closed: every check here must pass before a `usr` device
//! exists, and nothing mounts /usr except from that device.

use crate::devices::FoundDevice;
use crate::mounts::mount_at;
use anyhow::{bail, ensure, Context};
use keel_cmdline::{BootParams, UsrCorruption};
use keel_dm::{create_verity, verity_status, MappedDevice, VerityStatus};
use keel_manifest::UsrImage;
use keel_verity::{check_tree, encode_hex, tree_start_block, CorruptionMode, Geometry, ReadAt, Superblock, TableLine, VerityError, SUPERBLOCK_SIZE};
use nix::mount::MsFlags;
use nix::sys::stat::makedev;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

pub const USR_DEVICE_NAME: &str = "usr";

/// The verity device /usr is mounted from, and what checking its hash tree cost: the one
/// step of a boot whose time grows with /usr's size, so the log shows it.
pub struct VerifiedUsr {
    pub device: MappedDevice,
    pub tree_bytes: u64,
    pub tree_checked_in: Duration,
}

/// Checks the USR partition against the manifest baked into the initrd, then creates the
/// verity device the kernel will check every /usr read against.
pub fn open_verified_usr(params: &BootParams, usr: &UsrImage, data: &FoundDevice, hash: &FoundDevice) -> anyhow::Result<VerifiedUsr> {
    let baked_root = encode_hex(&usr.root_hash);
    if let Some(requested) = &params.usr_root_hash {
        ensure!(
            *requested == baked_root,
            "the command line asks for /usr root hash {requested}, but this initrd was built for {baked_root}: \
             refusing, because the initrd's hash is the one that is trusted"
        );
    }
    // A separate hash device (systemd.verity_usr_hash=) holds the superblock at its start.
    let separate_hash = data.node != hash.node;
    let hash_offset = if separate_hash { 0 } else { usr.hash_offset };
    let hash_file = File::open(&hash.node).with_context(|| format!("cannot open {}", hash.node.display()))?;
    let data_size = File::open(&data.node).and_then(|f| f.size()).with_context(|| format!("cannot find the size of {}", data.node.display()))?;
    ensure!(
        data_size >= usr.verity.data_bytes() && (separate_hash || usr.hash_offset >= usr.verity.data_bytes()),
        "{} is {data_size} bytes, too small for the {} bytes of /usr data the manifest describes",
        data.node.display(),
        usr.verity.data_bytes()
    );
    let started = Instant::now();
    let tree_block = check_hash_area(&hash_file, &hash.node, 0, hash_offset, usr)?;
    let tree_checked_in = started.elapsed();
    let tree_bytes = Geometry::new(&usr.verity)?.tree_bytes();

    let table = TableLine {
        data_device: format!("{}:{}", data.major, data.minor),
        hash_device: format!("{}:{}", hash.major, hash.minor),
        hash_start_block: tree_block,
        params: usr.verity.clone(),
        root: usr.root_hash.clone(),
        corruption: match params.usr_corruption {
            UsrCorruption::Panic => CorruptionMode::PanicOnCorruption,
            UsrCorruption::Restart => CorruptionMode::RestartOnCorruption,
        },
        ignore_zero_blocks: false,
        check_at_most_once: false,
    };
    let device = create_verity(USR_DEVICE_NAME, &table)?;
    match verity_status(USR_DEVICE_NAME)? {
        VerityStatus::Verified => Ok(VerifiedUsr { device, tree_bytes, tree_checked_in }),
        other => bail!("the kernel reports the new verity device as {other:?}, not verified (V)"),
    }
}

/// Checks the hash area of a USR partition that starts `start` bytes into `device`, its
/// superblock `hash_offset` bytes into the partition: the superblock must equal the manifest
/// and the whole tree must match the baked root hash. Returns the tree's first hash block,
/// counted from the partition's start.
pub fn check_hash_area(device: &File, name: &Path, start: u64, hash_offset: u64, usr: &UsrImage) -> anyhow::Result<u64> {
    let baked_root = encode_hex(&usr.root_hash);
    let at = start.checked_add(hash_offset).context("the hash area lies past any device's end")?;
    let mut raw = [0u8; SUPERBLOCK_SIZE];
    device.read_exact_at(&mut raw, at).with_context(|| format!("cannot read the verity superblock at byte {at} of {}", name.display()))?;
    let superblock = Superblock::parse(&raw).with_context(|| format!("at byte {at} of {}", name.display()))?;
    if superblock.params != usr.verity {
        bail!(
            "the verity superblock on {} ({:?}) does not match the image manifest in the initrd ({:?})",
            name.display(),
            superblock.params,
            usr.verity
        );
    }
    let tree_block = tree_start_block(hash_offset, usr.verity.hash_block_size, true);
    let tree_offset = start + tree_block * u64::from(usr.verity.hash_block_size);
    check_tree(device, tree_offset, &usr.verity, &usr.root_hash).map_err(|error| {
        let corrupt = matches!(error, VerityError::Corrupt(_));
        let error = anyhow::Error::new(error);
        if corrupt {
            error.context(format!("the /usr hash tree on {} does not match the root hash in the initrd ({baked_root})", name.display()))
        } else {
            error.context(format!("cannot check the /usr hash tree on {}", name.display()))
        }
    })?;
    Ok(tree_block)
}

/// Mounts the verity device read-only at `target` with the filesystem the manifest names,
/// then checks that what is mounted there is that device: nothing else may become /usr.
pub fn mount_verified_usr(device: &MappedDevice, target: &Path, fstype: &str, flags: Option<&str>) -> anyhow::Result<()> {
    let node = device.node.display().to_string();
    mount_at(&node, target, Some(fstype), MsFlags::MS_RDONLY | MsFlags::MS_NODEV, flags)?;
    let mounted = std::fs::metadata(target).with_context(|| format!("cannot stat {}", target.display()))?.dev();
    let expected = makedev(u64::from(device.major), u64::from(device.minor));
    ensure!(mounted == expected, "{} is device {mounted:#x} after mounting, not the verity device {expected:#x}", target.display());
    Ok(())
}
