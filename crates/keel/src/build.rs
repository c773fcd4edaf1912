//! `keel image build` and `keel initrd build`: the builders, which run on an image-build host.

use anyhow::Context;
use clap::{Args, Subcommand};
use keel_disk::{Guid, LayoutSizes, SectorSize};
use keel_manifest::ImageManifest;
use keel_verity::{encode_hex, HashAlgorithm, HashType};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// a disk image of Flatcar's layout, and its manifest
    ///
    /// /usr as ext4 with its verity hash tree after it on USR-A, the ESP with the first-boot flag, OEM (blank or
    /// --oem), ROOT blank (first boot formats it); the manifest records what keel-init trusts about /usr.
    Build(ImageArgs),
}

impl ImageCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            ImageCommand::Build(args) => image_build(&args),
        }
    }
}

#[derive(Subcommand)]
pub enum InitrdCommand {
    /// an initrd for an image
    ///
    /// keel-init as /init, the image's manifest, the kernel modules and mkfs programs its boots need, and any
    /// Ignition base configs.
    Build(InitrdArgs),
}

impl InitrdCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            InitrdCommand::Build(args) => initrd_build(&args),
        }
    }
}

#[derive(Args)]
pub struct ImageArgs {
    /// the /usr tree
    #[arg(long, value_name = "DIR")]
    usr: PathBuf,
    /// the image file to write
    #[arg(long, value_name = "IMAGE")]
    output: PathBuf,
    /// where the manifest goes [default: IMAGE with the extension .json]
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// the OS name the manifest records
    #[arg(long, value_name = "NAME", default_value = "keel")]
    os: String,
    /// USR-A's (and USR-B's) size in MiB
    #[arg(long, value_name = "N", default_value_t = LayoutSizes::default().usr >> 20)]
    usr_mib: u64,
    /// ROOT's size in MiB, before first boot grows it to fill the disk
    #[arg(long, value_name = "N", default_value_t = LayoutSizes::default().root >> 20)]
    root_mib: u64,
    /// the ESP's size in MiB
    #[arg(long, value_name = "N", default_value_t = LayoutSizes::default().esp >> 20)]
    esp_mib: u64,
    /// OEM's size in MiB
    #[arg(long, value_name = "N", default_value_t = LayoutSizes::default().oem >> 20)]
    oem_mib: u64,
    /// the disk GUID (first boot gives the disk a new one when it still has this)
    #[arg(long, value_name = "GUID", value_parser = Guid::parse, default_value = keel_disk::IMAGE_DISK_GUID)]
    disk_guid: Guid,
    /// the time every file gets, in seconds since 1970 [default: $SOURCE_DATE_EPOCH, else 0]
    #[arg(long, value_name = "SECONDS")]
    epoch: Option<u64>,
    /// the disk's logical sector size: the partition tables and the ESP are made for it
    #[arg(long, value_name = "512|4096", default_value = "512")]
    sector_size: SectorSize,
    /// /usr's verity hash algorithm
    #[arg(long, value_name = "sha256|sha512|sha1", value_parser = HashAlgorithm::from_name, default_value = "sha256")]
    verity_hash: HashAlgorithm,
    /// /usr's verity hash type: 1 normal, 0 Chrome OS's
    #[arg(long, value_name = "1|0", value_parser = crate::verity::hash_type, default_value = "1")]
    verity_format: HashType,
    /// bytes in a /usr verity data block
    #[arg(long, value_name = "N", default_value_t = 4096)]
    verity_data_block_size: u32,
    /// bytes in a /usr verity hash block
    #[arg(long, value_name = "N", default_value_t = 4096)]
    verity_hash_block_size: u32,
    /// the OEM partition as ext4 labelled OEM made from DIR (config.ign, base/*.ign, ...: regular files, directories,
    /// symlinks; all owned by root) [default: OEM blank]
    #[arg(long, value_name = "DIR")]
    oem: Option<PathBuf>,
}

#[derive(Args)]
pub struct InitrdArgs {
    /// the image's manifest, as image build wrote it
    #[arg(long, value_name = "FILE")]
    manifest: PathBuf,
    /// the keel-init binary: the initrd's /init
    #[arg(long, value_name = "KEEL_INIT")]
    init: PathBuf,
    /// the kernel's module directory
    #[arg(long, value_name = "/lib/modules/VERSION")]
    kernel_modules: PathBuf,
    /// the initrd file to write
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// how the cpio archive is compressed (the kernel unpacks it before /init runs: chosen by boot time, not size)
    #[arg(long, value_name = "lz4|zstd|xz|gzip|none", value_parser = keel_initrd::Compression::parse, default_value = keel_initrd::Compression::DEFAULT.name())]
    compression: keel_initrd::Compression,
    /// the filesystems ROOT may have: each one's modules are packed (loaded only when ROOT has it), and its mkfs
    #[arg(long, value_name = "ext4,xfs,btrfs", default_value_t = keel_initrd::DEFAULT_ROOT_FILESYSTEMS.join(","))]
    root_filesystems: String,
    /// what a first-boot Ignition config may format [default: the root filesystems, whose mkfs is always packed]
    #[arg(long, value_name = "ext4,xfs,btrfs,vfat,swap")]
    mkfs: Option<String>,
    /// Ignition base configs, DIR/base.d/*.ign and DIR/base.platform.d/PLATFORM/*.ign (nothing else), validated and
    /// packed under /usr/lib/ignition; a config with an error stops the build
    #[arg(long, value_name = "DIR")]
    ignition_base: Option<PathBuf>,
    /// storage drivers, loaded only where their devices are: default (virtio-blk, virtio-scsi, NVMe, AHCI, SCSI disks),
    /// host (what drives this machine's disks), or a list of kernel modules
    #[arg(long, value_name = "default|host|MODULE,...", value_parser = keel_initrd::DriverChoice::parse, default_value = "default")]
    drivers: keel_initrd::DriverChoice,
}

fn image_build(args: &ImageArgs) -> anyhow::Result<()> {
    let sizes = LayoutSizes {
        esp: args.esp_mib << 20,
        usr: args.usr_mib << 20,
        oem: args.oem_mib << 20,
        root: args.root_mib << 20,
        ..LayoutSizes::default()
    };
    let epoch = match args.epoch {
        Some(epoch) => epoch,
        None => std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.parse().ok()).unwrap_or(0),
    };
    let spec = keel_image::ImageSpec {
        usr_tree: args.usr.clone(),
        oem_tree: args.oem.clone(),
        os: args.os.clone(),
        sizes,
        sector_size: args.sector_size,
        output: args.output.clone(),
        disk_guid: args.disk_guid,
        epoch,
        verity: keel_image::VerityLayout {
            algorithm: args.verity_hash,
            hash_type: args.verity_format,
            data_block_size: args.verity_data_block_size,
            hash_block_size: args.verity_hash_block_size,
        },
    };
    let manifest = keel_image::build(&spec)?;
    let manifest_path = args.manifest.clone().unwrap_or_else(|| args.output.with_extension("json"));
    std::fs::write(&manifest_path, manifest.to_json()).with_context(|| format!("cannot write {}", manifest_path.display()))?;
    println!("image:     {}", args.output.display());
    println!("manifest:  {}", manifest_path.display());
    println!("root hash: {}", encode_hex(&manifest.usr.root_hash));
    println!("sector size: {} bytes", manifest.sector_size.bytes());
    println!("hash offset: {} bytes", manifest.usr.hash_offset);
    let documents = crate::sbom::ImageBuild {
        output: &args.output,
        manifest_path: &manifest_path,
        manifest: &manifest,
        usr_tree: &args.usr,
        oem_tree: args.oem.as_deref(),
        epoch,
    };
    crate::sbom::write_image_documents(&documents)
}

fn initrd_build(args: &InitrdArgs) -> anyhow::Result<()> {
    let manifest_path = args.manifest.display();
    let manifest_text = std::fs::read_to_string(&args.manifest).with_context(|| format!("cannot read {manifest_path}"))?;
    let root_filesystems = keel_initrd::parse_root_filesystems(&args.root_filesystems).context("--root-filesystems")?;
    let mkfs_formats = match &args.mkfs {
        Some(list) => keel_initrd::parse_mkfs_formats(list).context("--mkfs")?,
        None => root_filesystems.clone(),
    };
    let spec = keel_initrd::InitrdSpec {
        init: args.init.clone(),
        manifest: ImageManifest::from_json(&manifest_text).with_context(|| format!("in {manifest_path}"))?,
        modules_dir: args.kernel_modules.clone(),
        modules: keel_initrd::default_modules(),
        drivers: args.drivers.clone(),
        root_filesystems,
        mkfs_formats,
        host_root: PathBuf::from("/"),
        ignition_base: args.ignition_base.clone(),
    };
    let packed = keel_initrd::archive(&spec)?;
    let bytes = keel_initrd::compress(packed.archive.to_newc(), args.compression)?;
    println!("{}", packed.drivers.describe());
    for warning in &packed.ignition_warnings {
        println!("{warning}");
    }
    let output = args.output.display();
    std::fs::write(&args.output, &bytes).with_context(|| format!("cannot write {output}"))?;
    println!("initrd: {output} ({} bytes)", bytes.len());
    crate::sbom::write_initrd_documents(&crate::sbom::InitrdBuild {
        output: &args.output,
        bytes: &bytes,
        packed: &packed,
        compression: args.compression,
        manifest: &args.manifest,
        modules_dir: &args.kernel_modules,
        host_root: &spec.host_root,
    })
}
