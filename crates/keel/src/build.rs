//! `keel image build` and `keel initrd build`: the builders, which run on an image-build host.

use anyhow::Context;
use clap::{Args, Subcommand};
use keel_disk::{Guid, LayoutSizes, SectorSize};
use keel_image::{EspFile, Slot};
use keel_manifest::ImageManifest;
use keel_verity::{encode_hex, HashAlgorithm, HashType};
use std::ffi::OsString;
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
    /// `arguments`: the command line after `keel`, as given, for the provenance.
    pub fn run(self, arguments: &[OsString]) -> anyhow::Result<()> {
        match self {
            ImageCommand::Build(args) => image_build(&args, arguments),
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
    /// `arguments`: the command line after `keel`, as given, for the provenance.
    pub fn run(self, arguments: &[OsString]) -> anyhow::Result<()> {
        match self {
            InitrdCommand::Build(args) => initrd_build(&args, arguments),
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
    #[arg(long, value_name = "SECONDS", value_parser = keel_sbom::parse_epoch)]
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
/// same options for `initrd build` and for the UKIs `image build` makes. No clap defaults:
/// `image build` must tell an option given from one left out (they need --uki-kernel
/// there), so the defaults are applied in `initrd_spec`.
#[derive(Args)]
pub struct InitrdContent {
    /// how the cpio archive is compressed (the kernel unpacks it before /init runs: chosen by boot time, not size)
    /// [default: zstd]
    #[arg(long, value_name = "lz4|zstd|xz|gzip|none", value_parser = keel_initrd::Compression::parse)]
    compression: Option<keel_initrd::Compression>,
    /// the filesystems ROOT may have: each one's modules are packed (loaded only when ROOT has it), and its mkfs
    /// [default: ext4]
    #[arg(long, value_name = "ext4,xfs,btrfs")]
    root_filesystems: Option<String>,
    /// what a first-boot Ignition config may format [default: the root filesystems, whose mkfs is always packed]
    #[arg(long, value_name = "ext4,xfs,btrfs,vfat,swap")]
    mkfs: Option<String>,
    /// Ignition base configs, DIR/base.d/*.ign and DIR/base.platform.d/PLATFORM/*.ign (nothing else), validated and
    /// packed under /usr/lib/ignition; a config with an error stops the build
    #[arg(long, value_name = "DIR")]
    ignition_base: Option<PathBuf>,
    /// storage drivers, loaded only where their devices are: default (virtio-blk, virtio-scsi, NVMe, AHCI, SCSI disks),
    /// host (what drives this machine's disks), or a list of kernel modules [default: default]
    #[arg(long, value_name = "default|host|MODULE,...", value_parser = keel_initrd::DriverChoice::parse)]
    drivers: Option<keel_initrd::DriverChoice>,
}

impl InitrdContent {
    /// The first option given, by its flag.
    fn first_given(&self) -> Option<&'static str> {
        [
            (self.compression.is_some(), "--compression"),
            (self.root_filesystems.is_some(), "--root-filesystems"),
            (self.mkfs.is_some(), "--mkfs"),
            (self.ignition_base.is_some(), "--ignition-base"),
            (self.drivers.is_some(), "--drivers"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }

    /// The root filesystems (`--root-filesystems`) and the formats first boot may make
    /// (`--mkfs`, by default the root filesystems).
    fn formats(&self) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let default_root_filesystems = keel_initrd::DEFAULT_ROOT_FILESYSTEMS.join(",");
        let root_filesystems = self.root_filesystems.as_deref().unwrap_or(&default_root_filesystems);
        let root_filesystems = keel_initrd::parse_root_filesystems(root_filesystems).context("--root-filesystems")?;
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

fn image_build(args: &ImageArgs, arguments: &[OsString]) -> anyhow::Result<()> {
    let invocation = crate::sbom::Invocation::new("image", arguments, args.epoch)?;
    let sizes = LayoutSizes {
        esp: args.esp_mib << 20,
        usr: args.usr_mib << 20,
        oem: args.oem_mib << 20,
        root: args.root_mib << 20,
        ..LayoutSizes::default()
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
        epoch: invocation.epoch,
        verity: keel_image::VerityLayout {
            algorithm: args.verity_hash,
            hash_type: args.verity_format,
            data_block_size: args.verity_data_block_size,
            hash_block_size: args.verity_hash_block_size,
        },
    };
    // Everything that can be refused is checked before /usr is built.
    let slots: &[Slot] = if args.usr_b.is_some() { &[Slot::A, Slot::B] } else { &[Slot::A] };
    let uki = match &args.uki.kernel {
        Some(kernel) => Some(uki_plan(args, kernel, slots)?),
        None => match args.uki.content.first_given() {
            Some(flag) => anyhow::bail!("{flag} is for the UKIs' initrds: it needs --uki-kernel"),
            None => None,
        },
    };
    let prepared = keel_image::prepare(&spec)?;
    let mut written = vec![args.output.clone()];
    let result = write_image(args, prepared, uki.as_ref(), &invocation, &mut written);
    if result.is_err() {
        // Nothing half-made is left behind, nor a manifest beside an image it does not describe.
        for path in &written {
            let _ = std::fs::remove_file(path);
        }
    }
    crate::print_out(&result?)
}

/// The UKIs' inputs, checked once for every slot before anything is built.
struct UkiPlan<'a> {
    kernel: &'a Path,
    init: &'a Path,
    modules: &'a Path,
    signer: Option<crate::uki::Signer<'a>>,
}

fn uki_plan<'a>(args: &'a ImageArgs, kernel: &'a Path, slots: &[Slot]) -> anyhow::Result<UkiPlan<'a>> {
    let options = &args.uki;
    let (Some(init), Some(modules)) = (&options.init, &options.kernel_modules) else {
        anyhow::bail!("--uki-kernel needs --uki-init and --uki-kernel-modules");
    };
    options.content.formats()?;
    for &slot in slots {
        slot_cmdline(&options.cmdline, slot)?;
    }
    // The initrd's modules must be the kernel's own: signature and vermagic checks refuse others.
    let kernel_bytes = std::fs::read(kernel).with_context(|| format!("cannot read the kernel {}", kernel.display()))?;
    let release = keel_uki::kernel_release(&kernel_bytes).with_context(|| format!("{} is not an x86 bzImage", kernel.display()))?;
    let modules_release = modules.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    anyhow::ensure!(
        release == modules_release,
        "--uki-kernel is Linux {release} but --uki-kernel-modules is for {modules_release:?} ({})",
        modules.display()
    );
    Ok(UkiPlan { kernel, init, modules, signer: crate::uki::Signer::of(options.sign_key.as_deref(), options.sign_cert.as_deref()) })
}

/// `base` with `slot`'s /usr added, refused unless that is the /usr keel-init will read: a
/// `--`, an unbalanced quote or a /usr parameter of its own in `base` would turn the
/// added word into something else, and the slot's UKI would read another slot's /usr.
fn slot_cmdline(base: &str, slot: Slot) -> anyhow::Result<String> {
    let name = slot.partition_name();
    let cmdline = format!("{} mount.usr=PARTLABEL={name}", base.trim());
    let parsed = keel_cmdline::Cmdline::parse(&cmdline);
    let params = keel_cmdline::BootParams::from_cmdline(&parsed).with_context(|| format!("--uki-cmdline {base:?}"))?;
    let wanted = keel_cmdline::DeviceSpec::parse(&format!("PARTLABEL={name}"))?;
    let added_is_last = parsed.last_of(&["mount.usr", "usr"]) == Some(("mount.usr", Some(&format!("PARTLABEL={name}")[..])));
    anyhow::ensure!(
        added_is_last && params.usr_data == wanted && params.usr_hash_device.is_none() && params.usr_root_hash.is_none(),
        "--uki-cmdline {base:?} would not leave /usr to keel: each slot's UKI gets mount.usr=PARTLABEL={name} added, and \
         the line must not choose /usr or its root hash itself (usr=, mount.usr=, verity.usr=, systemd.verity_usr_*, \
         usrhash=), end in --, or leave a quote open"
    );
    Ok(cmdline)
}

/// Builds each slot's UKI, writes the image with them on its ESP, then the manifests, then
/// the image's SBOM and provenance; every file written is added to `written`. Returns what
/// to report.
fn write_image(
    args: &ImageArgs,
    prepared: keel_image::PreparedImage,
    uki: Option<&UkiPlan>,
    invocation: &crate::sbom::Invocation,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<String> {
    let manifest_path = args.manifest.clone().unwrap_or_else(|| args.output.with_extension("json"));
    let mut report = String::new();
    let mut esp_files = Vec::new();
    let mut manifests = Vec::new();
    // Each slot's UKI and its initrd's SBOM, which the image's SBOM refers to.
    let mut uki_slots = Vec::new();
    for slot in prepared.slots() {
        let manifest = prepared.manifest(slot).context("a built slot has no manifest")?;
        let path = match slot {
            Slot::A => manifest_path.clone(),
            Slot::B => args.output.with_extension("usr-b.json"),
        };
        let json = manifest.to_json();
        let name = slot.partition_name();
        report += &format!("{name} root hash: {}\n", encode_hex(&manifest.usr.root_hash));
        if let Some(plan) = uki {
            let tree = if slot == Slot::A { &args.usr } else { args.usr_b.as_ref().context("USR-B was built without a tree")? };
            let (uki, initrd) = slot_uki(args, plan, slot, (manifest, &path, json.as_bytes()), tree, invocation, written)?;
            report += &format!("{name} UKI:       {}\n", uki.display());
            if slot == Slot::A {
                esp_files.push(EspFile { path: ESP_REMOVABLE_PATH.to_string(), source: uki.clone() });
            }
            esp_files.push(EspFile { path: format!("{ESP_UKI_DIR}/{}.efi", name.to_lowercase()), source: uki.clone() });
            uki_slots.push((uki, keel_sbom::sbom_path(&initrd)));
        }
        manifests.push((path, json));
    }
    let manifest = prepared.manifest(Slot::A).context("USR-A was not built")?;
    let (sector_size, hash_offset) = (manifest.sector_size, manifest.usr.hash_offset);
    let slots: Vec<_> = prepared.slots().into_iter().filter_map(|slot| Some((slot.partition_name(), prepared.manifest(slot)?.clone()))).collect();
    prepared.write(&esp_files)?;
    for (path, json) in manifests {
        written.push(path.clone());
        std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
        report += &format!("manifest:  {}\n", path.display());
    }
    let uki_inputs = [&args.uki.kernel, &args.uki.init, &args.uki.os_release, &args.uki.sign_cert].into_iter().flatten();
    let documents = crate::sbom::ImageBuild {
        output: &args.output,
        sector_size,
        slots: &slots,
        trees: [Some(&args.usr), args.usr_b.as_ref(), args.oem.as_ref()].into_iter().flatten().collect(),
        oem_tree: args.oem.as_deref(),
        ukis: uki.map(|plan| keel_sbom::image::UkiSources {
            kernel: plan.kernel,
            modules_dir: plan.modules,
            stub: &args.uki.stub,
            slots: &uki_slots,
        }),
        inputs: uki_inputs.chain(uki.map(|_| &args.uki.stub)).collect(),
        outputs: written.iter().filter(|path| **path != args.output).cloned().collect(),
        invocation,
    };
    written.extend([keel_sbom::sbom_path(&args.output), keel_sbom::provenance_path(&args.output)]);
    report += &crate::sbom::write_image_documents(&documents)?;
    Ok(format!("image:     {}\n{report}sector size: {} bytes\nhash offset: {hash_offset} bytes\n", args.output.display(), sector_size.bytes()))
}

/// Where the UKIs of the slots go on the ESP.
const ESP_UKI_DIR: &str = "EFI/keel";
/// The path UEFI firmware boots from a disk with no boot entry of its own (UEFI 2.x, 3.5.1.1).
const ESP_REMOVABLE_PATH: &str = "EFI/BOOT/BOOTX64.EFI";

/// Builds `slot`'s initrd (trusting `manifest`) and its UKI, signed when a key is given,
/// beside the image: IMAGE.usr-a.initrd and IMAGE.usr-a.efi; returns the UKI's path and the initrd's.
/// `manifest` comes with the file it is written to and that file's bytes.
fn slot_uki(
    args: &ImageArgs,
    plan: &UkiPlan,
    slot: Slot,
    manifest: (&ImageManifest, &Path, &[u8]),
    tree: &Path,
    invocation: &crate::sbom::Invocation,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (manifest, manifest_path, manifest_json) = manifest;
    let options = &args.uki;
    let name = slot.partition_name().to_lowercase();
    let initrd_path = args.output.with_extension(format!("{name}.initrd"));
    written.extend([initrd_path.clone(), keel_sbom::sbom_path(&initrd_path), keel_sbom::provenance_path(&initrd_path)]);
    let manifest_file = (manifest_path, manifest_json);
    let initrd = InitrdInputs { init: plan.init, modules_dir: plan.modules, content: &options.content, invocation };
    write_initrd(manifest.clone(), manifest_file, &initrd, &initrd_path).with_context(|| format!("{name}'s initrd"))?;
    let os_release = match &options.os_release {
        Some(path) => std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => tree_os_release(tree)?.unwrap_or_else(|| format!("NAME={0}\nID={0}\n", args.os).into_bytes()),
    };
    let cmdline = slot_cmdline(&options.cmdline, slot)?;
    let output = args.output.with_extension(format!("{name}.efi"));
    written.push(output.clone());
    let inputs = crate::uki::UkiInputs { kernel: plan.kernel, initrd: &initrd_path, cmdline: &cmdline, os_release: &os_release };
    crate::uki::write_uki(&options.stub, &inputs, None, &output, plan.signer.as_ref()).with_context(|| format!("{name}'s UKI"))?;
    Ok((output, initrd_path))
}

/// The /usr tree's own os-release (`lib/os-release`), if it has one: a regular file only,
/// since a symlink there would name a file of the build host, not of the tree.
fn tree_os_release(tree: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    let path = tree.join("lib/os-release");
    match std::fs::symlink_metadata(&path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        Ok(meta) if !meta.is_file() => anyhow::bail!("{} is not a regular file: give --uki-os-release", path.display()),
        Ok(_) => Ok(Some(std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?)),
    }
}

fn initrd_build(args: &InitrdArgs, arguments: &[OsString]) -> anyhow::Result<()> {
    // A mistyped option is refused before any file is read, whatever else is wrong.
    args.content.formats()?;
    let invocation = crate::sbom::Invocation::new("initrd", arguments, None)?;
    let manifest_path = args.manifest.display();
    let manifest_text = std::fs::read_to_string(&args.manifest).with_context(|| format!("cannot read {manifest_path}"))?;
    let manifest = ImageManifest::from_json(&manifest_text).with_context(|| format!("in {manifest_path}"))?;
    let manifest_file = (args.manifest.as_path(), manifest_text.as_bytes());
    let initrd = InitrdInputs { init: &args.init, modules_dir: &args.kernel_modules, content: &args.content, invocation: &invocation };
    write_initrd(manifest, manifest_file, &initrd, &args.output)
}

/// What an initrd is built from besides its manifest, and the build that makes it.
struct InitrdInputs<'a> {
    init: &'a Path,
    modules_dir: &'a Path,
    content: &'a InitrdContent,
    invocation: &'a crate::sbom::Invocation,
}

/// Builds the initrd of `manifest` (from `manifest_file`: its path and bytes) with `content`
/// at `output`, with its SBOM and provenance, and says what it chose. A failed build leaves
/// none of the three at their names.
fn write_initrd(manifest: ImageManifest, manifest_file: (&Path, &[u8]), inputs: &InitrdInputs, output: &Path) -> anyhow::Result<()> {
    let report = build_initrd(manifest, manifest_file, inputs, output);
    match report {
        Ok(report) => crate::print_out(&report),
        Err(error) => {
            crate::sbom::remove_with_documents(output);
            Err(error)
        }
    }
}

fn build_initrd(manifest: ImageManifest, manifest_file: (&Path, &[u8]), inputs: &InitrdInputs, output: &Path) -> anyhow::Result<String> {
    let InitrdInputs { init, modules_dir, content, invocation } = *inputs;
    let (root_filesystems, mkfs_formats) = content.formats()?;
    let spec = keel_initrd::InitrdSpec {
        init: init.to_path_buf(),
        manifest,
        modules_dir: modules_dir.to_path_buf(),
        modules: keel_initrd::default_modules(),
        drivers: content.drivers.clone().unwrap_or(keel_initrd::DriverChoice::Default),
        root_filesystems,
        mkfs_formats,
        host_root: PathBuf::from("/"),
        ignition_base: content.ignition_base.clone(),
    };
    let compression = content.compression.unwrap_or(keel_initrd::Compression::DEFAULT);
    let packed = keel_initrd::archive(&spec)?;
    let bytes = keel_initrd::compress(packed.archive.to_newc(), compression)?;
    let mut report = format!("{}\n", packed.drivers.describe());
    for warning in &packed.ignition_warnings {
        report += &format!("{warning}\n");
    }
    let documents = crate::sbom::InitrdBuild {
        invocation,
        output,
        bytes: &bytes,
        packed: &packed,
        compression,
        manifest: manifest_file,
        modules_dir,
        host_root: &spec.host_root,
    };
    let documents = crate::sbom::initrd_documents(&documents)?;
    let (sbom_file, provenance_file) = (keel_sbom::sbom_path(output), keel_sbom::provenance_path(output));
    crate::sbom::write_together(&[(output, &bytes), (&sbom_file, documents.sbom.as_bytes()), (&provenance_file, documents.provenance.as_bytes())])?;
    report += &format!("initrd: {} ({} bytes)\n", output.display(), bytes.len());
    Ok(report + &documents.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_slots_uki_reads_its_own_usr_whatever_the_builder_adds() {
        for (slot, other) in [(Slot::A, "USR-B"), (Slot::B, "USR-A")] {
            let name = slot.partition_name();
            // A mount.usr= or usr= of the builder's is overridden: keel's comes last.
            for accepted in ["console=ttyS0 quiet rd.break=usr mount.usr=/dev/mapper/usr", &format!("usr=PARTLABEL={other}")] {
                let line = slot_cmdline(accepted, slot).unwrap();
                assert!(line.ends_with(&format!(" mount.usr=PARTLABEL={name}")), "{line}");
            }
            for refused in [
                "console=ttyS0 --".to_string(),
                "console=ttyS0 -- init-argument".to_string(),
                "x=\"".to_string(),
                "\"x".to_string(),
                format!("verity.usr=PARTLABEL={other}"),
                format!("systemd.verity_usr_data=PARTLABEL={other}"),
                "systemd.verity_usr_hash=/dev/vdb".to_string(),
                "usrhash=00".to_string(),
                "verity.usrhash=00".to_string(),
            ] {
                assert!(slot_cmdline(&refused, slot).is_err(), "{refused:?} for {name}");
            }
        }
    }
}
