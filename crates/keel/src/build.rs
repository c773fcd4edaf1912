//! `keel image build` and `keel initrd build`: the builders, which run on an image-build host.

use anyhow::Context;
use clap::{Args, Subcommand};
use keel_disk::{Guid, LayoutSizes, SectorSize};
use keel_image::{EspFile, Slot};
use keel_manifest::ImageManifest;
use keel_verity::{encode_hex, HashAlgorithm, HashType};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// a disk image of Flatcar's layout, and its manifest
    ///
    /// /usr as ext4 with its verity hash tree after it on USR-A, the ESP with the first-boot flag, OEM (blank or
    /// --oem), ROOT blank (first boot formats it); the manifest records what keel-init trusts about /usr.
    Build(Box<ImageArgs>),
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
    /// USR-B's /usr tree: a second /usr with its own hash tree and manifest (IMAGE with the extension usr-b.json)
    /// [default: USR-B blank, for an update to write]
    #[arg(long, value_name = "DIR")]
    usr_b: Option<PathBuf>,
    #[command(flatten)]
    uki: UkiOptions,
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
    #[command(flatten)]
    content: InitrdContent,
}

/// What goes into an initrd besides keel-init, the manifest and the kernel's modules: the
/// same options for `initrd build` and for the UKIs `image build` makes.
#[derive(Args)]
pub struct InitrdContent {
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

impl InitrdContent {
    /// The root filesystems (`--root-filesystems`) and the formats first boot may make
    /// (`--mkfs`, by default the root filesystems).
    fn formats(&self) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let root_filesystems = keel_initrd::parse_root_filesystems(&self.root_filesystems).context("--root-filesystems")?;
        let mkfs_formats = match &self.mkfs {
            Some(list) => keel_initrd::parse_mkfs_formats(list).context("--mkfs")?,
            None => root_filesystems.clone(),
        };
        Ok((root_filesystems, mkfs_formats))
    }
}

/// `image build`'s unified kernel images: one per /usr slot built, each with an initrd
/// that trusts its own slot's root hash, on the ESP.
#[derive(Args)]
#[command(next_help_heading = "Unified kernel images on the ESP (with --uki-kernel; initrd content as for `keel initrd build`)")]
pub struct UkiOptions {
    /// put a UKI per /usr slot on the ESP, on this kernel: EFI/keel/usr-a.efi (also EFI/BOOT/BOOTX64.EFI, the
    /// removable-media path firmware boots) and EFI/keel/usr-b.efi with --usr-b; each is also written beside IMAGE
    #[arg(long = "uki-kernel", value_name = "VMLINUZ", requires_all = ["uki_init", "uki_kernel_modules"])]
    kernel: Option<PathBuf>,
    /// the keel-init binary for the UKIs' initrds
    #[arg(long = "uki-init", id = "uki_init", value_name = "KEEL_INIT", requires = "kernel")]
    init: Option<PathBuf>,
    /// the kernel's module directory, for the UKIs' initrds
    #[arg(long = "uki-kernel-modules", id = "uki_kernel_modules", value_name = "/lib/modules/VERSION", requires = "kernel")]
    kernel_modules: Option<PathBuf>,
    /// the UKIs' kernel command line; keel adds mount.usr=PARTLABEL=USR-A or USR-B, so it must not choose /usr itself
    #[arg(long = "uki-cmdline", value_name = "TEXT", default_value = "console=tty0 console=ttyS0", requires = "kernel")]
    cmdline: String,
    /// the UKIs' os-release [default: the slot's /usr tree's lib/os-release, else one naming --os]
    #[arg(long = "uki-os-release", value_name = "FILE", requires = "kernel")]
    os_release: Option<PathBuf>,
    /// the EFI stub (unsigned)
    #[arg(long = "uki-stub", value_name = "FILE", default_value = keel_uki::DEFAULT_STUB, requires = "kernel")]
    stub: PathBuf,
    /// sign the UKIs with this private key (PEM) through sbsign
    #[arg(long = "sign-key", value_name = "KEY", requires_all = ["kernel", "sign_cert"])]
    sign_key: Option<PathBuf>,
    /// the certificate (PEM) of --sign-key, as enrolled in the firmware's db
    #[arg(long = "sign-cert", value_name = "CERT", requires = "sign_key")]
    sign_cert: Option<PathBuf>,
    #[command(flatten)]
    content: InitrdContent,
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
        usr_b_tree: args.usr_b.clone(),
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
    let prepared = keel_image::prepare(&spec)?;
    let manifest_path = args.manifest.clone().unwrap_or_else(|| args.output.with_extension("json"));
    let mut report = format!("image:     {}\n", args.output.display());
    let mut esp_files = Vec::new();
    let mut written = Vec::new();
    for slot in prepared.slots() {
        let manifest = prepared.manifest(slot).context("a built slot has no manifest")?;
        let path = match slot {
            Slot::A => manifest_path.clone(),
            Slot::B => args.output.with_extension("usr-b.json"),
        };
        std::fs::write(&path, manifest.to_json()).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path.clone());
        let name = slot.partition_name();
        report += &format!("{name} manifest:  {}\n{name} root hash: {}\n", path.display(), encode_hex(&manifest.usr.root_hash));
        if let Some(kernel) = &args.uki.kernel {
            let tree = if slot == Slot::A { &args.usr } else { args.usr_b.as_ref().context("USR-B was built without a tree")? };
            let uki = slot_uki(args, kernel, slot, manifest, &path, tree)?;
            written.push(uki.clone());
            report += &format!("{name} UKI:       {}\n", uki.display());
            let esp_name = format!("{ESP_UKI_DIR}/{}.efi", name.to_lowercase());
            if slot == Slot::A {
                esp_files.push(EspFile { path: ESP_REMOVABLE_PATH.to_string(), source: uki.clone() });
            }
            esp_files.push(EspFile { path: esp_name, source: uki });
        }
    }
    let sector_size = prepared.manifest(Slot::A).context("USR-A was not built")?.sector_size;
    let hash_offset = prepared.manifest(Slot::A).context("USR-A was not built")?.usr.hash_offset;
    let slots: Vec<_> = prepared.slots().into_iter().filter_map(|slot| Some((slot.partition_name(), prepared.manifest(slot)?.clone()))).collect();
    prepared.write(&esp_files)?;
    report += &format!("sector size: {} bytes\nhash offset: {hash_offset} bytes\n", sector_size.bytes());
    let uki_inputs = [&args.uki.kernel, &args.uki.init, &args.uki.os_release, &args.uki.sign_cert].into_iter().flatten();
    let stub = args.uki.kernel.as_ref().map(|_| &args.uki.stub);
    let documents = crate::sbom::ImageBuild {
        output: &args.output,
        sector_size,
        slots: &slots,
        trees: [Some(&args.usr), args.usr_b.as_ref(), args.oem.as_ref()].into_iter().flatten().collect(),
        oem_tree: args.oem.as_deref(),
        inputs: uki_inputs.chain(stub).collect(),
        outputs: written,
        epoch,
    };
    report += &crate::sbom::write_image_documents(&documents)?;
    crate::print_out(&report)
}

/// Where the UKIs of the slots go on the ESP.
const ESP_UKI_DIR: &str = "EFI/keel";
/// The path UEFI firmware boots from a disk with no boot entry of its own (UEFI 2.x, 3.5.1.1).
const ESP_REMOVABLE_PATH: &str = "EFI/BOOT/BOOTX64.EFI";

/// Builds `slot`'s initrd (trusting `manifest`) and its UKI, signed when a key is given,
/// beside the image: IMAGE.usr-a.initrd and IMAGE.usr-a.efi.
fn slot_uki(args: &ImageArgs, kernel: &Path, slot: Slot, manifest: &ImageManifest, manifest_path: &Path, tree: &Path) -> anyhow::Result<PathBuf> {
    let options = &args.uki;
    let name = slot.partition_name().to_lowercase();
    let (init, modules) = match (&options.init, &options.kernel_modules) {
        (Some(init), Some(modules)) => (init, modules),
        _ => anyhow::bail!("--uki-kernel needs --uki-init and --uki-kernel-modules"),
    };
    if let Some((key, _)) = keel_cmdline::Cmdline::parse(&options.cmdline).last_of(&keel_cmdline::USR_DEVICE_PARAMETERS) {
        anyhow::bail!("--uki-cmdline has {key}=: keel chooses each UKI's /usr (mount.usr=PARTLABEL=USR-A or USR-B) itself");
    }
    let initrd_path = args.output.with_extension(format!("{name}.initrd"));
    write_initrd(manifest.clone(), manifest_path, init, modules, &options.content, &initrd_path).with_context(|| format!("{name}'s initrd"))?;
    let os_release = match &options.os_release {
        Some(path) => std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => std::fs::read(tree.join("lib/os-release")).unwrap_or_else(|_| format!("NAME={0}\nID={0}\n", args.os).into_bytes()),
    };
    let cmdline = format!("{} mount.usr=PARTLABEL={}", options.cmdline.trim(), slot.partition_name());
    let output = args.output.with_extension(format!("{name}.efi"));
    let signer = match (&options.sign_key, &options.sign_cert) {
        (Some(key), Some(certificate)) => Some(crate::uki::Signer { key, certificate }),
        _ => None,
    };
    let inputs = crate::uki::UkiInputs { kernel, initrd: &initrd_path, cmdline: &cmdline, os_release: &os_release };
    crate::uki::write_uki(&options.stub, &inputs, None, &output, signer.as_ref()).with_context(|| format!("{name}'s UKI"))?;
    Ok(output)
}

fn initrd_build(args: &InitrdArgs) -> anyhow::Result<()> {
    // A mistyped option is refused before any file is read, whatever else is wrong.
    args.content.formats()?;
    let manifest_path = args.manifest.display();
    let manifest_text = std::fs::read_to_string(&args.manifest).with_context(|| format!("cannot read {manifest_path}"))?;
    let manifest = ImageManifest::from_json(&manifest_text).with_context(|| format!("in {manifest_path}"))?;
    write_initrd(manifest, &args.manifest, &args.init, &args.kernel_modules, &args.content, &args.output)
}

/// Builds the initrd of `manifest` (the file at `manifest_path`) with `content` at `output`,
/// with its SBOM and provenance, and says what it chose.
fn write_initrd(
    manifest: ImageManifest,
    manifest_path: &Path,
    init: &Path,
    modules_dir: &Path,
    content: &InitrdContent,
    output: &Path,
) -> anyhow::Result<()> {
    let (root_filesystems, mkfs_formats) = content.formats()?;
    let spec = keel_initrd::InitrdSpec {
        init: init.to_path_buf(),
        manifest,
        modules_dir: modules_dir.to_path_buf(),
        modules: keel_initrd::default_modules(),
        drivers: content.drivers.clone(),
        root_filesystems,
        mkfs_formats,
        host_root: PathBuf::from("/"),
        ignition_base: content.ignition_base.clone(),
    };
    let packed = keel_initrd::archive(&spec)?;
    let bytes = keel_initrd::compress(packed.archive.to_newc(), content.compression)?;
    let mut report = format!("{}\n", packed.drivers.describe());
    for warning in &packed.ignition_warnings {
        report += &format!("{warning}\n");
    }
    std::fs::write(output, &bytes).with_context(|| format!("cannot write {}", output.display()))?;
    report += &format!("initrd: {} ({} bytes)\n", output.display(), bytes.len());
    let documents = crate::sbom::InitrdBuild {
        output,
        bytes: &bytes,
        packed: &packed,
        compression: content.compression,
        manifest: manifest_path,
        modules_dir,
        host_root: &spec.host_root,
    };
    report += &crate::sbom::write_initrd_documents(&documents)?;
    crate::print_out(&report)
}
