//! `keel verity format|verify|dump|table`, with veritysetup's option names and output.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use keel_disk::Guid;
use keel_verity::{
    decode_hex, encode_hex, format_hash_area, tree_start_block, verify, CorruptionMode, Geometry, HashAlgorithm, HashType, MappedFile, ReadAt,
    Superblock, TableLine, VerityParams, SUPERBLOCK_SIZE,
};
use std::fs::{File, OpenOptions};
use std::io::Read;

#[derive(Subcommand)]
pub enum VerityCommand {
    /// writes DATA's hash tree to HASH and prints the root hash, as veritysetup format does
    Format(FormatArgs),
    /// checks the data and the hash tree against the root hash
    ///
    /// Every data block and the whole hash tree; exit 2 when they do not match, as veritysetup verify.
    Verify(TreeArgs),
    /// prints the superblock of a hash area, as veritysetup dump does
    Dump(DumpArgs),
    /// prints the kernel's dm-verity table line for DATA, HASH and the root hash
    Table(TableArgs),
}

impl VerityCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            VerityCommand::Format(args) => format(&args),
            VerityCommand::Verify(args) => verify_command(&args),
            VerityCommand::Dump(args) => dump(&args),
            VerityCommand::Table(args) => table(&args),
        }
    }
}

/// The parameters a superblock holds, for when none does (and for format, which writes them).
#[derive(Args)]
#[command(next_help_heading = "Parameters (veritysetup's; verify and table read them from the superblock unless --no-superblock)")]
struct ParamArgs {
    /// the hash algorithm [default: sha256]
    #[arg(long = "hash", value_name = "sha256|sha512|sha1", value_parser = HashAlgorithm::from_name)]
    algorithm: Option<HashAlgorithm>,
    /// bytes in a data block, a power of two from 512 to 65536 [default: 4096]
    #[arg(long, value_name = "N")]
    data_block_size: Option<u32>,
    /// bytes in a hash block, a power of two from 512 to 65536 [default: 4096]
    #[arg(long, value_name = "N")]
    hash_block_size: Option<u32>,
    /// the salt in hex, - for none [default: format makes 32 random bytes]
    #[arg(long, value_name = "HEX|-")]
    salt: Option<String>,
    /// the hash type: 1 normal, 0 Chrome OS's [default: 1]
    #[arg(long = "format", value_name = "1|0", value_parser = hash_type)]
    hash_type: Option<HashType>,
    /// how many data blocks the tree covers [default: format: all of DATA (or what precedes --hash-offset)]
    #[arg(long, value_name = "N")]
    data_blocks: Option<u64>,
}

impl ParamArgs {
    /// The first option given, by name: verify and table refuse them when a superblock holds them.
    fn first_given(&self) -> Option<&'static str> {
        [
            ("hash", self.algorithm.is_some()),
            ("data-block-size", self.data_block_size.is_some()),
            ("hash-block-size", self.hash_block_size.is_some()),
            ("salt", self.salt.is_some()),
            ("format", self.hash_type.is_some()),
            ("data-blocks", self.data_blocks.is_some()),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    }
}

/// `--format`'s value (and `keel image build --verity-format`'s): 0 or 1.
pub fn hash_type(text: &str) -> anyhow::Result<HashType> {
    let number = text.parse().map_err(|_| anyhow::anyhow!("{text:?} is not 0 or 1"))?;
    Ok(HashType::from_number(number)?)
}

#[derive(Args)]
pub struct FormatArgs {
    /// the data: a file or a block device
    data: String,
    /// where the hash area goes: a file or a block device, or DATA itself with --hash-offset (the hash area appended)
    hash: String,
    /// where the hash area starts in HASH, in bytes; with HASH the same as DATA, also where the data ends
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    hash_offset: u64,
    /// the UUID the superblock records [default: a random one]
    #[arg(long, value_name = "UUID", value_parser = Guid::parse, conflicts_with = "no_superblock")]
    uuid: Option<Guid>,
    /// write no superblock: verify and table then need the parameters on their command lines
    #[arg(long)]
    no_superblock: bool,
    /// print the root hash and the parameters as one JSON object instead of veritysetup's lines
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    params: ParamArgs,
}

/// A hash area and what it must match: what verify and table work from.
#[derive(Args)]
pub struct TreeArgs {
    /// the data: a file or a block device
    data: String,
    /// the hash area's file or block device (DATA itself when the hash area is appended)
    hash: String,
    /// the root hash in hex, as format printed it
    root_hash: String,
    /// where the hash area starts in HASH, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    hash_offset: u64,
    /// the hash area has no superblock: give the parameters it was formatted with (--data-blocks at least)
    #[arg(long)]
    no_superblock: bool,
    #[command(flatten)]
    params: ParamArgs,
}

#[derive(Args)]
pub struct DumpArgs {
    /// the hash area's file or block device
    hash: String,
    /// where the hash area (its superblock) starts in HASH, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    hash_offset: u64,
}

#[derive(Args)]
pub struct TableArgs {
    /// a block that does not verify restarts the machine [default: its read fails with EIO]
    #[arg(long, conflicts_with = "panic_on_corruption")]
    restart_on_corruption: bool,
    /// a block that does not verify panics the kernel [default: its read fails with EIO]
    #[arg(long)]
    panic_on_corruption: bool,
    /// blocks the tree records as zeros read as zeros, unhashed
    #[arg(long)]
    ignore_zero_blocks: bool,
    /// each data block is verified the first time it is read, not on every read
    #[arg(long)]
    check_at_most_once: bool,
    // Last: the heading of its parameters would otherwise cover the options above.
    #[command(flatten)]
    tree: TreeArgs,
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("cannot read /dev/urandom")?;
    Ok(bytes)
}

/// Parameters from the command line, veritysetup's defaults for the rest; `data_blocks`
/// is the default block count when `--data-blocks` is not given.
fn params_from_options(args: &ParamArgs, data_blocks: u64, random_salt: bool) -> anyhow::Result<VerityParams> {
    let salt = match args.salt.as_deref() {
        Some("-") => Vec::new(),
        Some(hex) => decode_hex(hex, "--salt")?,
        None if random_salt => random_bytes::<32>()?.to_vec(),
        None => Vec::new(),
    };
    let params = VerityParams {
        algorithm: args.algorithm.unwrap_or(HashAlgorithm::Sha256),
        hash_type: args.hash_type.unwrap_or(HashType::Normal),
        data_block_size: args.data_block_size.unwrap_or(4096),
        hash_block_size: args.hash_block_size.unwrap_or(4096),
        data_blocks: args.data_blocks.unwrap_or(data_blocks),
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

fn format(args: &FormatArgs) -> anyhow::Result<()> {
    let (data_path, hash_path, hash_offset) = (args.data.as_str(), args.hash.as_str(), args.hash_offset);
    if data_path == hash_path && hash_offset == 0 {
        bail!("with the hash area in the data file, --hash-offset must say where it starts");
    }
    // Options are checked before any file is touched; the block count may come from the file.
    let mut params = params_from_options(&args.params, 1, true)?;
    let data = open_for_hashing(data_path)?;
    let data_bytes = if data_path == hash_path { hash_offset } else { data.size().with_context(|| format!("cannot size {data_path}"))? };
    if args.params.data_blocks.is_none() {
        params.data_blocks = data_bytes / u64::from(params.data_block_size);
        params.validate().with_context(|| format!("{data_path} holds {data_bytes} bytes"))?;
    }
    if params.data_bytes() > data_bytes {
        bail!("{data_path} holds {data_bytes} bytes, fewer than {} data blocks of {}", params.data_blocks, params.data_block_size);
    }
    let uuid = match (args.no_superblock, args.uuid) {
        (true, _) => None,
        (false, Some(uuid)) => Some(uuid),
        (false, None) => Some(Guid::from_random_bytes(random_bytes()?)),
    };
    let mut hash =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(hash_path).with_context(|| format!("cannot open {hash_path}"))?;
    let formatted = format_hash_area(data.as_ref(), &params, uuid.map(|u| u.0), &mut hash, hash_offset)?;
    if args.json {
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

/// What verify and table work from: the hash area, its parameters (from the superblock, or
/// from the options with --no-superblock), the first block of its tree, and the root hash.
struct StoredTree {
    hash: File,
    params: VerityParams,
    tree_block: u64,
    root: Vec<u8>,
}

fn stored_tree(args: &TreeArgs) -> anyhow::Result<StoredTree> {
    let root = decode_hex(&args.root_hash, "the root hash")?;
    let hash = open(&args.hash)?;
    let (params, tree_block) = if args.no_superblock {
        let params = params_from_options(&args.params, 0, false)?;
        if params.data_blocks == 0 {
            bail!("--no-superblock needs --data-blocks");
        }
        let tree_block = tree_start_block(args.hash_offset, params.hash_block_size, false);
        (params, tree_block)
    } else {
        if let Some(option) = args.params.first_given() {
            bail!("--{option} comes from the superblock; give it only with --no-superblock");
        }
        let superblock = read_superblock(&hash, &args.hash, args.hash_offset)?;
        let tree_block = tree_start_block(args.hash_offset, superblock.params.hash_block_size, true);
        (superblock.params, tree_block)
    };
    if root.len() != params.digest_size() {
        bail!("the root hash has {} bytes; a {} digest has {}", root.len(), params.algorithm.name(), params.digest_size());
    }
    Ok(StoredTree { hash, params, tree_block, root })
}

fn verify_command(args: &TreeArgs) -> anyhow::Result<()> {
    let StoredTree { hash, params, tree_block, root } = stored_tree(args)?;
    verify(open_for_hashing(&args.data)?.as_ref(), &hash, tree_block * u64::from(params.hash_block_size), &params, &root)?;
    println!("{}: all {} data blocks and the hash tree match the root hash", args.data, params.data_blocks);
    Ok(())
}

fn dump(args: &DumpArgs) -> anyhow::Result<()> {
    let superblock = read_superblock(&open(&args.hash)?, &args.hash, args.hash_offset)?;
    let params = &superblock.params;
    let tree_block = tree_start_block(args.hash_offset, params.hash_block_size, true);
    let area = tree_block * u64::from(params.hash_block_size) + Geometry::new(params)?.tree_bytes() - args.hash_offset;
    print_header(&args.hash, Some(Guid(superblock.uuid)), params)?;
    print_area_size(args.hash_offset, area);
    Ok(())
}

fn table(args: &TableArgs) -> anyhow::Result<()> {
    let tree = &args.tree;
    let StoredTree { params, tree_block: hash_start_block, root, .. } = stored_tree(tree)?;
    // clap refuses the two together.
    let corruption = if args.restart_on_corruption {
        CorruptionMode::RestartOnCorruption
    } else if args.panic_on_corruption {
        CorruptionMode::PanicOnCorruption
    } else {
        CorruptionMode::Eio
    };
    let line = TableLine {
        data_device: tree.data.clone(),
        hash_device: tree.hash.clone(),
        hash_start_block,
        params,
        root,
        corruption,
        ignore_zero_blocks: args.ignore_zero_blocks,
        check_at_most_once: args.check_at_most_once,
    };
    println!("{line}");
    Ok(())
}
