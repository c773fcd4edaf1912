//! `keel verity format|verify|dump|table`, with veritysetup's option names and output.

use crate::args::Args;
use anyhow::{bail, Context};
use keel_disk::Guid;
use keel_verity::{
    decode_hex, encode_hex, format_hash_area, tree_start_block, verify, CorruptionMode, Geometry, HashAlgorithm, HashType, MappedFile, ReadAt,
    Superblock, TableLine, VerityParams, SUPERBLOCK_SIZE,
};
use std::fs::{File, OpenOptions};
use std::io::Read;

/// Options that describe the parameters when no superblock does.
const PARAM_OPTIONS: [&str; 6] = ["hash", "data-block-size", "hash-block-size", "salt", "format", "data-blocks"];

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("cannot read /dev/urandom")?;
    Ok(bytes)
}

fn with(options: &[&'static str], more: &[&'static str]) -> Vec<&'static str> {
    options.iter().chain(more).copied().collect()
}

/// Parameters from the command line, veritysetup's defaults for the rest; `data_blocks`
/// is the default block count when `--data-blocks` is not given.
fn params_from_options(args: &Args, data_blocks: u64, random_salt: bool) -> anyhow::Result<VerityParams> {
    let salt = match args.get("salt") {
        Some("-") => Vec::new(),
        Some(hex) => decode_hex(hex, "--salt")?,
        None if random_salt => random_bytes::<32>()?.to_vec(),
        None => Vec::new(),
    };
    let params = VerityParams {
        algorithm: HashAlgorithm::from_name(args.get("hash").unwrap_or("sha256"))?,
        hash_type: HashType::from_number(args.number("format")?.unwrap_or(1))?,
        data_block_size: args.number("data-block-size")?.unwrap_or(4096),
        hash_block_size: args.number("hash-block-size")?.unwrap_or(4096),
        data_blocks: args.number("data-blocks")?.unwrap_or(data_blocks),
        salt,
    };
    params.validate()?;
    Ok(params)
}

fn open(path: &str) -> anyhow::Result<File> {
    File::open(path).with_context(|| format!("cannot open {path}"))
}

/// Data to hash: mapped where possible, so the page cache is hashed in place; plain reads
/// for what cannot be mapped.
fn open_for_hashing(path: &str) -> anyhow::Result<Box<dyn ReadAt>> {
    let file = open(path)?;
    let fallback = file.try_clone().with_context(|| format!("cannot reopen {path}"))?;
    Ok(match MappedFile::new(file) {
        Ok(mapped) => Box::new(mapped),
        Err(_) => Box::new(fallback),
    })
}

/// The lines veritysetup prints for a hash area, root hash excepted.
fn print_header(hash_path: &str, uuid: Option<Guid>, params: &VerityParams) -> anyhow::Result<()> {
    println!("VERITY header information for {hash_path}");
    println!("UUID:            \t{}", uuid.map(|u| u.to_string()).unwrap_or_default());
    println!("Hash type:       \t{}", params.hash_type.number());
    println!("Data blocks:     \t{}", params.data_blocks);
    println!("Data block size: \t{}", params.data_block_size);
    println!("Hash blocks:     \t{}", Geometry::new(params)?.tree_blocks());
    println!("Hash block size: \t{}", params.hash_block_size);
    println!("Hash algorithm:  \t{}", params.algorithm.name());
    println!("Salt:            \t{}", if params.salt.is_empty() { "-".into() } else { encode_hex(&params.salt) });
    Ok(())
}

/// veritysetup gives the hash area's size only when it fills a device from its start.
fn print_area_size(hash_offset: u64, area_bytes: u64) {
    if hash_offset == 0 {
        println!("Hash device size: \t{area_bytes} [bytes]");
    }
}

pub fn format(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &with(&PARAM_OPTIONS, &["hash-offset", "uuid"]), &["json", "no-superblock"])?;
    let (data_path, hash_path) = match args.positional.as_slice() {
        [data, hash] => (data.as_str(), hash.as_str()),
        _ => bail!("give DATA and HASH (the same path, with --hash-offset, to append the hash area)"),
    };
    let hash_offset: u64 = args.number("hash-offset")?.unwrap_or(0);
    if data_path == hash_path && hash_offset == 0 {
        bail!("with the hash area in the data file, --hash-offset must say where it starts");
    }
    // Options are checked before any file is touched; the block count may come from the file.
    let mut params = params_from_options(&args, 1, true)?;
    let data = open_for_hashing(data_path)?;
    let data_bytes = if data_path == hash_path { hash_offset } else { data.size().with_context(|| format!("cannot size {data_path}"))? };
    if args.get("data-blocks").is_none() {
        params.data_blocks = data_bytes / u64::from(params.data_block_size);
        params.validate().with_context(|| format!("{data_path} holds {data_bytes} bytes"))?;
    }
    if params.data_bytes() > data_bytes {
        bail!("{data_path} holds {data_bytes} bytes, fewer than {} data blocks of {}", params.data_blocks, params.data_block_size);
    }
    let uuid = match (args.flag("no-superblock"), args.get("uuid")) {
        (true, Some(_)) => bail!("--uuid has nowhere to go with --no-superblock"),
        (true, None) => None,
        (false, Some(text)) => Some(Guid::parse(text)?),
        (false, None) => Some(Guid::from_random_bytes(random_bytes()?)),
    };
    let mut hash =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(hash_path).with_context(|| format!("cannot open {hash_path}"))?;
    let formatted = format_hash_area(data.as_ref(), &params, uuid.map(|u| u.0), &mut hash, hash_offset)?;
    if args.flag("json") {
        println!(
            "{{\"root_hash\":\"{}\",\"salt\":\"{}\",\"uuid\":\"{}\",\"hash_algorithm\":\"{}\",\"hash_type\":{},\"data_blocks\":{},\
             \"data_block_size\":{},\"hash_block_size\":{},\"hash_offset\":{hash_offset},\"hash_start_block\":{},\"hash_area_end\":{}}}",
            encode_hex(&formatted.root),
            encode_hex(&params.salt),
            uuid.map(|u| u.to_string()).unwrap_or_default(),
            params.algorithm.name(),
            params.hash_type.number(),
            params.data_blocks,
            params.data_block_size,
            params.hash_block_size,
            formatted.tree_start_block,
            formatted.end
        );
    } else {
        print_header(hash_path, uuid, &params)?;
        println!("Root hash:      \t{}", encode_hex(&formatted.root));
        print_area_size(hash_offset, formatted.end - hash_offset);
    }
    Ok(())
}

/// The superblock at `offset` of `hash`, parsed as the untrusted input it is.
fn read_superblock(hash: &File, hash_path: &str, offset: u64) -> anyhow::Result<Superblock> {
    let mut raw = [0u8; SUPERBLOCK_SIZE];
    hash.read_exact_at(&mut raw, offset).with_context(|| format!("cannot read a superblock at byte {offset} of {hash_path}"))?;
    Superblock::parse(&raw).with_context(|| format!("at byte {offset} of {hash_path}"))
}

/// What verify and table work from: the parameters (from the superblock, or from the
/// options with --no-superblock) and the first block of the tree.
fn stored_params(args: &Args, hash: &File, hash_path: &str) -> anyhow::Result<(VerityParams, u64)> {
    let hash_offset: u64 = args.number("hash-offset")?.unwrap_or(0);
    if args.flag("no-superblock") {
        let params = params_from_options(args, 0, false)?;
        if params.data_blocks == 0 {
            bail!("--no-superblock needs --data-blocks");
        }
        return Ok((params.clone(), tree_start_block(hash_offset, params.hash_block_size, false)));
    }
    if let Some(option) = PARAM_OPTIONS.iter().find(|o| args.get(o).is_some()) {
        bail!("--{option} comes from the superblock; give it only with --no-superblock");
    }
    let superblock = read_superblock(hash, hash_path, hash_offset)?;
    let start = tree_start_block(hash_offset, superblock.params.hash_block_size, true);
    Ok((superblock.params, start))
}

fn devices_and_root<'a>(args: &'a Args, usage: &str) -> anyhow::Result<(&'a str, &'a str, Vec<u8>)> {
    match args.positional.as_slice() {
        [data, hash, root] => Ok((data, hash, decode_hex(root, "the root hash")?)),
        _ => bail!("usage: {usage}"),
    }
}

pub fn verify_command(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &with(&PARAM_OPTIONS, &["hash-offset"]), &["no-superblock"])?;
    let (data_path, hash_path, root) = devices_and_root(&args, "keel verity verify DATA HASH ROOT_HASH")?;
    let hash = open(hash_path)?;
    let (params, tree_block) = stored_params(&args, &hash, hash_path)?;
    if root.len() != params.digest_size() {
        bail!("the root hash has {} bytes; a {} digest has {}", root.len(), params.algorithm.name(), params.digest_size());
    }
    verify(open_for_hashing(data_path)?.as_ref(), &hash, tree_block * u64::from(params.hash_block_size), &params, &root)?;
    println!("{data_path}: all {} data blocks and the hash tree match the root hash", params.data_blocks);
    Ok(())
}

pub fn dump(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &["hash-offset"], &[])?;
    let [hash_path] = args.positional.as_slice() else { bail!("usage: keel verity dump HASH [--hash-offset BYTES]") };
    let hash_offset: u64 = args.number("hash-offset")?.unwrap_or(0);
    let superblock = read_superblock(&open(hash_path)?, hash_path, hash_offset)?;
    let params = &superblock.params;
    let tree_block = tree_start_block(hash_offset, params.hash_block_size, true);
    let area = tree_block * u64::from(params.hash_block_size) + Geometry::new(params)?.tree_bytes() - hash_offset;
    print_header(hash_path, Some(Guid(superblock.uuid)), params)?;
    print_area_size(hash_offset, area);
    Ok(())
}

pub fn table(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(
        words,
        &with(&PARAM_OPTIONS, &["hash-offset"]),
        &["no-superblock", "restart-on-corruption", "panic-on-corruption", "ignore-zero-blocks", "check-at-most-once"],
    )?;
    let (data_path, hash_path, root) = devices_and_root(&args, "keel verity table DATA HASH ROOT_HASH [options]")?;
    let (params, hash_start_block) = stored_params(&args, &open(hash_path)?, hash_path)?;
    if root.len() != params.digest_size() {
        bail!("the root hash has {} bytes; a {} digest has {}", root.len(), params.algorithm.name(), params.digest_size());
    }
    let corruption = match (args.flag("restart-on-corruption"), args.flag("panic-on-corruption")) {
        (true, true) => bail!("choose one of --restart-on-corruption and --panic-on-corruption"),
        (true, false) => CorruptionMode::RestartOnCorruption,
        (false, true) => CorruptionMode::PanicOnCorruption,
        (false, false) => CorruptionMode::Eio,
    };
    let line = TableLine {
        data_device: data_path.to_string(),
        hash_device: hash_path.to_string(),
        hash_start_block,
        params,
        root,
        corruption,
        ignore_zero_blocks: args.flag("ignore-zero-blocks"),
        check_at_most_once: args.flag("check-at-most-once"),
    };
    println!("{line}");
    Ok(())
}
