//! `keel disk grow-root|randomize-guids|find`, and the disk the `disk` and `usr` commands
//! work on: an image file or a block device, with the sector size its partition table is in.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use keel_disk::{logical_sector_size, Guid, SectorSize, SectorSizeMismatch};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileTypeExt;

/// What an image file is read with when `--sector-size` does not say: the size of most
/// images, and of every image keel built before it could build others.
const IMAGE_FILE_SECTOR_SIZE: SectorSize = SectorSize::Bytes512;

/// The disk a command works on, and the sector size to read an image file in.
#[derive(Args)]
pub struct DiskArgs {
    /// the disk: an image file or a block device
    pub disk: String,
    /// the size of the sectors the partition table counts: a block device is read in its own logical
    /// sectors, an image file in 512-byte sectors unless this says its table is of 4096-byte ones
    #[arg(long, value_name = "512|4096")]
    pub sector_size: Option<SectorSize>,
}

pub struct Disk {
    pub file: File,
    pub sector_size: SectorSize,
    pub block_device: bool,
    path: String,
}

impl Disk {
    /// `path`, for writing when `writable`. A block device is read in its logical sectors,
    /// as the kernel reads it (a `--sector-size` that differs is refused); an image file has
    /// none of its own, so it is read in `--sector-size` sectors, by default 512.
    pub fn open(args: &DiskArgs, writable: bool) -> anyhow::Result<Disk> {
        let path = args.disk.as_str();
        let file = if writable {
            OpenOptions::new().read(true).write(true).open(path).with_context(|| format!("cannot open {path} for writing"))?
        } else {
            File::open(path).with_context(|| format!("cannot open {path}"))?
        };
        let block_device = file.metadata().with_context(|| format!("cannot stat {path}"))?.file_type().is_block_device();
        let sector_size = if block_device {
            let logical = logical_sector_size(&file).with_context(|| path.to_string())?;
            if let Some(asked) = args.sector_size.filter(|asked| *asked != logical) {
                bail!("{path} has {logical}, not {asked}: a block device is read in its own logical sectors; leave out --sector-size");
            }
            logical
        } else {
            args.sector_size.unwrap_or(IMAGE_FILE_SECTOR_SIZE)
        };
        Ok(Disk { file, sector_size, block_device, path: path.to_string() })
    }

    /// `error`, from reading or rewriting this disk's table, in this command's terms: an
    /// image file whose table was made for the other sector size is read with
    /// `--sector-size`, not rebuilt.
    pub fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        match error.downcast_ref::<SectorSizeMismatch>() {
            Some(mismatch) if !self.block_device => anyhow::anyhow!(
                "{} is an image file with a GPT made for {}, and was read with {}: give --sector-size {}",
                self.path,
                mismatch.table,
                self.sector_size,
                mismatch.table.bytes()
            ),
            _ => error,
        }
    }
}

#[derive(Subcommand)]
pub enum DiskCommand {
    /// ROOT fills the disk, as first boot grows it
    ///
    /// ROOT (the last partition) fills the disk and the backup table moves to its end; on a block device the kernel is
    /// told, and a mounted ROOT filesystem grows.
    GrowRoot(DiskArgs),
    /// new disk and ROOT GUIDs while the disk GUID is the image's, as first boot gives them
    RandomizeGuids(RandomizeArgs),
    /// what keel-init's look at the block devices finds for SPEC
    ///
    /// What keel-init's look at the block devices finds for SPEC, what it saw, and how long it took.
    Find(FindArgs),
}

impl DiskCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            DiskCommand::GrowRoot(args) => grow_root(&args),
            DiskCommand::RandomizeGuids(args) => randomize_guids(&args),
            DiskCommand::Find(args) => find(&args),
        }
    }
}

#[derive(Args)]
pub struct RandomizeArgs {
    #[command(flatten)]
    disk: DiskArgs,
    /// the disk GUID images are built with: only a disk that still has it gets new GUIDs
    #[arg(long, value_name = "GUID", value_parser = Guid::parse, default_value = keel_disk::IMAGE_DISK_GUID)]
    image_default: Guid,
}

#[derive(Args)]
pub struct FindArgs {
    /// the device: PARTLABEL=, PARTUUID=, LABEL=, UUID= or a /dev path
    #[arg(value_parser = keel_cmdline::DeviceSpec::parse)]
    spec: keel_cmdline::DeviceSpec,
    /// the image's size in bytes: a disk whose primary table is damaged is also read from the backup header an
    /// image of this size keeps in its last sector, as keel-init reads the boot disk before it has grown
    #[arg(long, value_name = "N")]
    image_bytes: Option<u64>,
}

fn find(args: &FindArgs) -> anyhow::Result<()> {
    let spec = &args.spec;
    let (found, seen, took) = keel_boot::look_once(spec, args.image_bytes);
    for line in &seen {
        println!("seen: {}", keel_disk::printable(line));
    }
    println!("look: {:.3} ms over {} lines", took.as_secs_f64() * 1000.0, seen.len());
    match found? {
        Some(device) => println!("{spec}: {} ({}:{})", device.node.display(), device.major, device.minor),
        None => bail!("{spec}: no device matches"),
    }
    Ok(())
}

fn grow_root(args: &DiskArgs) -> anyhow::Result<()> {
    let path = &args.disk;
    let mut disk = Disk::open(args, true)?;
    let sector_size = disk.sector_size;
    match keel_disk::grow_root(&mut disk.file, sector_size).map_err(|error| disk.explain(error))? {
        Some(grown) => println!("{path}: ROOT grew from {} to {} {sector_size}", grown.old_sectors, grown.new_sectors),
        None => println!("{path}: ROOT already fills the disk"),
    }
    disk.file.sync_all()?;
    if !disk.block_device {
        println!("{path}: an image file; its ROOT filesystem grows when keel-init first boots it (the image's ESP carries the first-boot flag)");
        return Ok(());
    }
    let gpt = keel_disk::read_gpt(&mut disk.file, sector_size)?;
    let root = gpt.by_name(keel_disk::ROOT_NAME)?.context("ROOT vanished from the table")?;
    let root_bytes = root.size_bytes(sector_size);
    keel_disk::resize_kernel_partition(&disk.file, sector_size, root)?;
    println!("{path}: the kernel now sees ROOT (partition {}) at {root_bytes} bytes", root.number);
    match keel_disk::mounted_partition(&disk.file, root.number)? {
        Some((mount_point, kind)) => {
            let growth = keel_disk::grow_mounted_filesystem(&mount_point, kind, root_bytes)?;
            println!("{}: {} grew from {} to {} MiB", mount_point.display(), kind.mount_type(), growth.bytes_before >> 20, growth.bytes_after >> 20);
        }
        None => println!("{path}: ROOT is not mounted, so its filesystem was not grown: mount it and run this again"),
    }
    Ok(())
}

fn randomize_guids(args: &RandomizeArgs) -> anyhow::Result<()> {
    let path = &args.disk.disk;
    let mut urandom = std::fs::File::open("/dev/urandom").context("cannot open /dev/urandom")?;
    // A failed read gives the zero GUID, which randomize_identity never uses.
    let mut fresh_guid = || {
        let mut bytes = [0u8; 16];
        std::io::Read::read_exact(&mut urandom, &mut bytes).map_or(Guid::ZERO, |()| Guid::from_random_bytes(bytes))
    };
    let mut disk = Disk::open(&args.disk, true)?;
    let renamed =
        keel_disk::randomize_identity(&mut disk.file, disk.sector_size, args.image_default, &mut fresh_guid).map_err(|error| disk.explain(error))?;
    match renamed {
        Some(guid) => println!("{path}: disk GUID is now {guid}; ROOT has a new GUID too"),
        None => println!("{path}: the disk already has its own GUID"),
    }
    Ok(disk.file.sync_all()?)
}
