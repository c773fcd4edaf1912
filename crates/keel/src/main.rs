//! `keel`: one command line for image builders and operators. Each subcommand parses its
//! arguments and calls the crate that does the work.

mod args;
mod boot;
mod disk;
mod ignition;
mod usr;
mod verity;

use anyhow::{bail, Context};
use args::Args;
use disk::Disk;
use keel_disk::{Guid, LayoutSizes, SectorSize};
use keel_manifest::ImageManifest;
use keel_verity::{encode_hex, HashAlgorithm, HashType, VerityError};
use std::path::PathBuf;

const USAGE: &str = "usage:
  keel verity format DATA HASH [--hash sha256|sha512|sha1] [--data-block-size N] [--hash-block-size N]
                     [--salt HEX|-] [--uuid UUID] [--format 1|0] [--no-superblock] [--hash-offset BYTES]
                     [--data-blocks N] [--json]
  keel verity verify DATA HASH ROOT_HASH [--hash-offset BYTES] [--no-superblock --data-blocks N ...]
  keel verity dump HASH [--hash-offset BYTES]
  keel verity table DATA HASH ROOT_HASH [--hash-offset BYTES] [--restart-on-corruption|--panic-on-corruption]
                    [--ignore-zero-blocks] [--check-at-most-once] [--no-superblock --data-blocks N ...]
  keel image build --usr DIR --output IMAGE [--manifest FILE] [--os NAME] [--usr-mib N] [--root-mib N]
                   [--esp-mib N] [--oem-mib N] [--disk-guid GUID] [--epoch SECONDS] [--sector-size 512|4096]
                   [--verity-hash sha256|sha512|sha1] [--verity-format 1|0] [--verity-data-block-size N]
                   [--verity-hash-block-size N]
                   [--oem DIR]                   the OEM partition as ext4 labelled OEM made from DIR (config.ign,
                                                 base/*.ign, ...: regular files, directories, symlinks; all owned by
                                                 root); without it OEM is blank
  keel initrd build --manifest FILE --init KEEL_INIT --kernel-modules /lib/modules/VERSION --output FILE
                    [--compression zstd|xz|gzip|none] [--root-filesystems ext4,xfs,btrfs]
                    [--mkfs ext4,xfs,btrfs,vfat,swap]   what a first-boot Ignition config may format (default: the
                                                 root filesystems, whose mkfs is always packed)
                    [--ignition-base DIR]        Ignition base configs, DIR/base.d/*.ign and
                                                 DIR/base.platform.d/PLATFORM/*.ign (nothing else), validated and
                                                 packed under /usr/lib/ignition; a config with an error stops the build
                    [--drivers default|host|MODULE,...]   storage drivers, loaded only where their devices are
                                                 (default: virtio-blk, virtio-scsi, NVMe, AHCI, SCSI disks;
                                                 host: what drives this machine's disks)
  keel ignition validate CONFIG                  Ignition spec 3.0-3.6: every error and warning, with its JSON path;
                                                 exit 1 when there is an error
  keel ignition render CONFIG [--base CONFIG]... the final config: the base configs in order, the config over them, and
                                                 every config it merges (data: URLs, checked against their hashes);
                                                 it prints everything the configs hold, secrets included
  keel ignition apply --root DIR CONFIG [--base CONFIG]... [--dry-run]
                                                 files, directories, links, users and groups, systemd units and presets
                                                 written into DIR as Ignition's files stage writes them; nothing is
                                                 written before every content is fetched and verified
  keel dm status NAME
  keel disk grow-root DISK                       ROOT (the last partition) fills the disk; the backup table moves to its end;
                                                 on a block device the kernel is told, and a mounted ROOT filesystem grows
  keel disk randomize-guids DISK [--image-default GUID]   new disk and ROOT GUIDs while the disk GUID is the image's
  keel disk find SPEC [--image-bytes N]          what keel-init's look at the block devices finds for SPEC (PARTLABEL=,
                                                 PARTUUID=, LABEL=, UUID=, /dev path), what it saw, and how long it took
  keel usr show DISK [--json]                    the /usr slots' gptprio bits: priority, tries, successful
  keel usr set DISK A|B [--priority 0-15] [--tries 0-15] [--successful 0|1]   as cgpt add -P/-T/-S
  keel usr prioritize DISK A|B [--max 1-15]      the slot above the other, as cgpt prioritize
  keel usr mark-successful DISK A|B              the booted slot is good: successful 1, tries 0, on top
  keel boot analyze [TIMELINE] [--svg FILE]     each keel-init stage's time, the longest first, under the kernel's time
                                                 before /init and keel-init's own, as systemd-analyze blame; TIMELINE
                                                 defaults to /run/keel/timeline.json; --svg draws the boot as a chart
  The disk and usr commands take --sector-size 512|4096 too: a block device is read in its logical sectors, an
  image file in 512-byte sectors unless --sector-size 4096 says its table is of 4096-byte ones.
exit status: 0 done, 1 bad arguments or failure, 2 verification failed (data or hash tree corrupt)";

/// veritysetup's (cryptsetup's) convention: 2 means the data did not verify.
const EXIT_CORRUPT: i32 = 2;
const EXIT_FAILURE: i32 = 1;

fn main() {
    let words: Vec<String> = std::env::args().skip(1).collect();
    if let Err(error) = run(&words) {
        eprintln!("keel: {error:#}");
        let corrupt = error.chain().any(|cause| matches!(cause.downcast_ref(), Some(VerityError::Corrupt(_))));
        std::process::exit(if corrupt { EXIT_CORRUPT } else { EXIT_FAILURE });
    }
}

fn run(words: &[String]) -> anyhow::Result<()> {
    let (command, rest) = match words {
        [group, action, rest @ ..] => (format!("{group} {action}"), rest),
        _ => bail!("{USAGE}"),
    };
    match command.as_str() {
        "verity format" => verity::format(rest),
        "verity verify" => verity::verify_command(rest),
        "verity dump" => verity::dump(rest),
        "verity table" => verity::table(rest),
        "image build" => image_build(rest),
        "initrd build" => initrd_build(rest),
        "ignition validate" => ignition::validate(rest),
        "ignition render" => ignition::render(rest),
        "ignition apply" => ignition::apply(rest),
        "dm status" => dm_status(rest),
        "disk grow-root" => disk_grow_root(rest),
        "disk randomize-guids" => disk_randomize_guids(rest),
        "disk find" => disk_find(rest),
        "usr show" => usr::show(rest),
        "usr set" => usr::set(rest),
        "usr prioritize" => usr::prioritize(rest),
        "usr mark-successful" => usr::mark_successful(rest),
        "boot analyze" => boot::analyze(rest),
        _ => bail!("unknown command {command:?}\n{USAGE}"),
    }
}

fn mib(args: &Args, name: &str, default: u64) -> anyhow::Result<u64> {
    Ok(args.number::<u64>(name)?.map_or(default, |mib| mib << 20))
}

fn image_build(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(
        words,
        &[
            "usr",
            "oem",
            "output",
            "manifest",
            "os",
            "usr-mib",
            "root-mib",
            "esp-mib",
            "oem-mib",
            "disk-guid",
            "epoch",
            "sector-size",
            "verity-hash",
            "verity-format",
            "verity-data-block-size",
            "verity-hash-block-size",
        ],
        &[],
    )?;
    let defaults = LayoutSizes::default();
    let sizes = LayoutSizes {
        esp: mib(&args, "esp-mib", defaults.esp)?,
        usr: mib(&args, "usr-mib", defaults.usr)?,
        oem: mib(&args, "oem-mib", defaults.oem)?,
        root: mib(&args, "root-mib", defaults.root)?,
        ..defaults
    };
    let epoch = match args.number("epoch")? {
        Some(epoch) => epoch,
        None => std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.parse().ok()).unwrap_or(0),
    };
    let output = PathBuf::from(args.required("output")?);
    let spec = keel_image::ImageSpec {
        usr_tree: PathBuf::from(args.required("usr")?),
        oem_tree: args.get("oem").map(PathBuf::from),
        os: args.get("os").unwrap_or("keel").to_string(),
        sizes,
        sector_size: args.get("sector-size").map_or(Ok(SectorSize::Bytes512), str::parse).context("--sector-size")?,
        output: output.clone(),
        disk_guid: Guid::parse(args.get("disk-guid").unwrap_or(keel_disk::IMAGE_DISK_GUID))?,
        epoch,
        verity: keel_image::VerityLayout {
            algorithm: HashAlgorithm::from_name(args.get("verity-hash").unwrap_or("sha256"))?,
            hash_type: HashType::from_number(args.number("verity-format")?.unwrap_or(1))?,
            data_block_size: args.number("verity-data-block-size")?.unwrap_or(4096),
            hash_block_size: args.number("verity-hash-block-size")?.unwrap_or(4096),
        },
    };
    let manifest = keel_image::build(&spec)?;
    let manifest_path = args.get("manifest").map(PathBuf::from).unwrap_or_else(|| output.with_extension("json"));
    std::fs::write(&manifest_path, manifest.to_json()).with_context(|| format!("cannot write {}", manifest_path.display()))?;
    println!("image:     {}", output.display());
    println!("manifest:  {}", manifest_path.display());
    println!("root hash: {}", encode_hex(&manifest.usr.root_hash));
    println!("sector size: {} bytes", manifest.sector_size.bytes());
    println!("hash offset: {} bytes", manifest.usr.hash_offset);
    Ok(())
}

fn initrd_build(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(
        words,
        &["manifest", "init", "kernel-modules", "output", "compression", "root-filesystems", "mkfs", "drivers", "ignition-base"],
        &[],
    )?;
    let manifest_path = args.required("manifest")?;
    let manifest_text = std::fs::read_to_string(manifest_path).with_context(|| format!("cannot read {manifest_path}"))?;
    let root_filesystems =
        keel_initrd::parse_root_filesystems(args.get("root-filesystems").unwrap_or(&keel_initrd::DEFAULT_ROOT_FILESYSTEMS.join(",")))
            .context("--root-filesystems")?;
    let mkfs_formats = match args.get("mkfs") {
        Some(list) => keel_initrd::parse_mkfs_formats(list).context("--mkfs")?,
        None => root_filesystems.clone(),
    };
    let spec = keel_initrd::InitrdSpec {
        init: PathBuf::from(args.required("init")?),
        manifest: ImageManifest::from_json(&manifest_text).with_context(|| format!("in {manifest_path}"))?,
        modules_dir: PathBuf::from(args.required("kernel-modules")?),
        modules: keel_initrd::default_modules(),
        drivers: keel_initrd::DriverChoice::parse(args.get("drivers").unwrap_or("default"))?,
        root_filesystems,
        mkfs_formats,
        host_root: PathBuf::from("/"),
        ignition_base: args.get("ignition-base").map(PathBuf::from),
    };
    let compression = keel_initrd::Compression::parse(args.get("compression").unwrap_or("xz"))?;
    let (bytes, drivers, ignition_warnings) = keel_initrd::build(&spec, compression)?;
    println!("{}", drivers.describe());
    for warning in ignition_warnings {
        println!("{warning}");
    }
    let output = args.required("output")?;
    std::fs::write(output, &bytes).with_context(|| format!("cannot write {output}"))?;
    println!("initrd: {output} ({} bytes)", bytes.len());
    Ok(())
}

fn dm_status(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &[], &[])?;
    let [name] = args.positional.as_slice() else { bail!("give the device name\n{USAGE}") };
    let (target, table) = keel_dm::table(name)?;
    println!("{name}: {target} {table}");
    if target == "verity" {
        println!("{name}: status {:?}", keel_dm::verity_status(name)?);
    }
    Ok(())
}

fn disk_find(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &["image-bytes"], &[])?;
    let [spec] = args.positional.as_slice() else { bail!("give a device spec\n{USAGE}") };
    let spec = keel_cmdline::DeviceSpec::parse(spec)?;
    let image_bytes = args.number("image-bytes")?;
    let (found, seen, took) = keel_boot::look_once(&spec, image_bytes);
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

fn disk_grow_root(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &["sector-size"], &[])?;
    let [path] = args.positional.as_slice() else { bail!("give the disk or image file\n{USAGE}") };
    let mut disk = Disk::open(path, &args, true)?;
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

fn disk_randomize_guids(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &["image-default", "sector-size"], &[])?;
    let [path] = args.positional.as_slice() else { bail!("give the disk or image file\n{USAGE}") };
    let image_default = Guid::parse(args.get("image-default").unwrap_or(keel_disk::IMAGE_DISK_GUID))?;
    let mut urandom = std::fs::File::open("/dev/urandom").context("cannot open /dev/urandom")?;
    // A failed read gives the zero GUID, which randomize_identity never uses.
    let mut fresh_guid = || {
        let mut bytes = [0u8; 16];
        std::io::Read::read_exact(&mut urandom, &mut bytes).map_or(Guid::ZERO, |()| Guid::from_random_bytes(bytes))
    };
    let mut disk = Disk::open(path, &args, true)?;
    let renamed =
        keel_disk::randomize_identity(&mut disk.file, disk.sector_size, image_default, &mut fresh_guid).map_err(|error| disk.explain(error))?;
    match renamed {
        Some(guid) => println!("{path}: disk GUID is now {guid}; ROOT has a new GUID too"),
        None => println!("{path}: the disk already has its own GUID"),
    }
    Ok(disk.file.sync_all()?)
}
