//! `keel`: one command line for image builders and operators. Each subcommand parses its
//! arguments and calls the crate that does the work.

mod args;

use anyhow::{bail, Context};
use args::Args;
use keel_disk::{Guid, LayoutSizes};
use keel_manifest::ImageManifest;
use keel_verity::{decode_hex, encode_hex, format_hash_area, Geometry, VerityParams};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::PathBuf;

const USAGE: &str = "usage:
  keel verity format DATA [HASH] [--hash-offset BYTES] [--data-blocks N] [--salt HEX|-] [--uuid UUID] [--json]
  keel image build --usr DIR --output IMAGE [--manifest FILE] [--os NAME] [--usr-mib N] [--root-mib N]
                   [--esp-mib N] [--oem-mib N] [--disk-guid GUID] [--epoch SECONDS]
  keel initrd build --manifest FILE --init KEEL_INIT --kernel-modules /lib/modules/VERSION --output FILE
                    [--compression zstd|xz|gzip|none]
  keel dm status NAME";

fn main() {
    let words: Vec<String> = std::env::args().skip(1).collect();
    if let Err(error) = run(&words) {
        eprintln!("keel: {error:#}");
        std::process::exit(1);
    }
}

fn run(words: &[String]) -> anyhow::Result<()> {
    let (command, rest) = match words {
        [group, action, rest @ ..] => (format!("{group} {action}"), rest),
        _ => bail!("{USAGE}"),
    };
    match command.as_str() {
        "verity format" => verity_format(rest),
        "image build" => image_build(rest),
        "initrd build" => initrd_build(rest),
        "dm status" => dm_status(rest),
        _ => bail!("unknown command {command:?}\n{USAGE}"),
    }
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("cannot read /dev/urandom")?;
    Ok(bytes)
}

fn verity_format(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &["hash-offset", "data-blocks", "salt", "uuid"], &["json"])?;
    let (data_path, hash_path) = match args.positional.as_slice() {
        [data] => (data.clone(), data.clone()),
        [data, hash] => (data.clone(), hash.clone()),
        _ => bail!("give DATA and optionally HASH\n{USAGE}"),
    };
    let hash_offset: u64 = args.number("hash-offset")?.unwrap_or(0);
    if data_path == hash_path && hash_offset == 0 {
        bail!("with the hash area in the data file, --hash-offset must say where it starts");
    }
    let data_blocks = match args.number("data-blocks")? {
        Some(blocks) => blocks,
        None if data_path == hash_path => hash_offset / 4096,
        None => std::fs::metadata(&data_path).with_context(|| format!("cannot stat {data_path}"))?.len() / 4096,
    };
    let salt = match args.get("salt") {
        Some("-") => Vec::new(),
        Some(hex) => decode_hex(hex, "--salt")?,
        None => random_bytes::<32>()?.to_vec(),
    };
    let uuid = match args.get("uuid") {
        Some(text) => Guid::parse(text)?,
        None => Guid::from_random_bytes(random_bytes()?),
    };
    let params = VerityParams::new(data_blocks, salt);
    let mut data = File::open(&data_path).with_context(|| format!("cannot open {data_path}"))?;
    let mut hash = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&hash_path)
        .with_context(|| format!("cannot open {hash_path}"))?;
    let formatted = format_hash_area(&mut data, &params, Some(uuid.0), &mut hash, hash_offset)?;
    let hash_blocks = Geometry::new(&params)?.tree_blocks();
    if args.flag("json") {
        println!(
            "{{\"root_hash\":\"{}\",\"salt\":\"{}\",\"uuid\":\"{uuid}\",\"data_blocks\":{data_blocks},\"hash_blocks\":{hash_blocks},\"hash_offset\":{hash_offset}}}",
            encode_hex(&formatted.root),
            encode_hex(&params.salt)
        );
    } else {
        println!("VERITY header information for {hash_path}");
        println!("UUID:            \t{uuid}");
        println!("Hash type:       \t{}", params.hash_type.number());
        println!("Data blocks:     \t{data_blocks}");
        println!("Data block size: \t{}", params.data_block_size);
        println!("Hash blocks:     \t{hash_blocks}");
        println!("Hash block size: \t{}", params.hash_block_size);
        println!("Hash algorithm:  \t{}", params.algorithm());
        println!("Salt:            \t{}", if params.salt.is_empty() { "-".into() } else { encode_hex(&params.salt) });
        println!("Root hash:      \t{}", encode_hex(&formatted.root));
    }
    Ok(())
}

fn mib(args: &Args, name: &str, default: u64) -> anyhow::Result<u64> {
    Ok(args.number::<u64>(name)?.map_or(default, |mib| mib << 20))
}

fn image_build(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(
        words,
        &["usr", "output", "manifest", "os", "usr-mib", "root-mib", "esp-mib", "oem-mib", "disk-guid", "epoch"],
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
        os: args.get("os").unwrap_or("keel").to_string(),
        sizes,
        output: output.clone(),
        disk_guid: Guid::parse(args.get("disk-guid").unwrap_or(keel_image::DEFAULT_DISK_GUID))?,
        epoch,
    };
    let manifest = keel_image::build(&spec)?;
    let manifest_path = args.get("manifest").map(PathBuf::from).unwrap_or_else(|| output.with_extension("json"));
    std::fs::write(&manifest_path, manifest.to_json()).with_context(|| format!("cannot write {}", manifest_path.display()))?;
    println!("image:     {}", output.display());
    println!("manifest:  {}", manifest_path.display());
    println!("root hash: {}", encode_hex(&manifest.usr.root_hash));
    println!("hash offset: {} bytes", manifest.usr.hash_offset);
    Ok(())
}

fn initrd_build(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &["manifest", "init", "kernel-modules", "output", "compression"], &[])?;
    let manifest_path = args.required("manifest")?;
    let manifest_text = std::fs::read_to_string(manifest_path).with_context(|| format!("cannot read {manifest_path}"))?;
    let spec = keel_initrd::InitrdSpec {
        init: PathBuf::from(args.required("init")?),
        manifest: ImageManifest::from_json(&manifest_text).with_context(|| format!("in {manifest_path}"))?,
        modules_dir: PathBuf::from(args.required("kernel-modules")?),
        modules: keel_initrd::default_modules(),
        programs: keel_initrd::default_programs(),
        host_root: PathBuf::from("/"),
    };
    let compression = keel_initrd::Compression::parse(args.get("compression").unwrap_or("xz"))?;
    let bytes = keel_initrd::build(&spec, compression)?;
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
