//! Differential test: for every combination of algorithm, block sizes, salt length, hash
//! format, superblock and tree depth, keel writes the same bytes as cryptsetup's
//! `veritysetup format`, veritysetup verifies keel's output and keel verifies veritysetup's.
//! `cargo xtask test` installs cryptsetup-bin; without it this test fails rather than skips.

use keel_test_support::{process_dir, XorShift};
use keel_verity::{encode_hex, format_hash_area, verify, HashAlgorithm, HashType, VerityParams};
use std::collections::HashMap;
use std::fs;
use std::io::Cursor;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

const UUID: &str = "a4d7c6f2-1b38-4e55-9c1e-52f0d2a61b7e";
/// Data sizes above this are left out of the matrix (3-level trees of 64 KiB blocks).
const MAX_DATA_BYTES: u64 = 64 << 20;
const BLOCK_SIZES: [(u32, u32); 9] =
    [(4096, 4096), (512, 512), (1024, 4096), (4096, 512), (512, 65536), (65536, 512), (8192, 16384), (65536, 65536), (2048, 1024)];

fn uuid_bytes() -> [u8; 16] {
    let hex: String = UUID.chars().filter(|c| *c != '-').collect();
    keel_verity::decode_hex(&hex, "uuid").unwrap().try_into().unwrap()
}

fn scratch() -> PathBuf {
    let dir = process_dir(env!("CARGO_TARGET_TMPDIR")).join("veritysetup");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Deterministic data, cached on disk per size so the matrix writes each file once.
fn data_file(blocks: u64, block_size: u32, cache: &Mutex<HashMap<u64, PathBuf>>) -> PathBuf {
    let bytes = blocks * u64::from(block_size);
    let mut cache = cache.lock().unwrap();
    cache
        .entry(bytes)
        .or_insert_with(|| {
            let path = scratch().join(format!("data-{bytes}"));
            fs::write(&path, XorShift::new(bytes).bytes(bytes as usize)).unwrap();
            path
        })
        .clone()
}

fn param_args(params: &VerityParams) -> Vec<String> {
    let salt = if params.salt.is_empty() { "-".to_string() } else { encode_hex(&params.salt) };
    vec![
        format!("--hash={}", params.algorithm.name()),
        format!("--data-block-size={}", params.data_block_size),
        format!("--hash-block-size={}", params.hash_block_size),
        format!("--format={}", params.hash_type.number()),
        format!("--salt={salt}"),
        format!("--data-blocks={}", params.data_blocks),
    ]
}

fn veritysetup(args: &[String]) -> Result<String, String> {
    let output =
        Command::new("veritysetup").args(args).output().expect("veritysetup must be installed (cryptsetup-bin); `cargo xtask test` installs it");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).to_string())
    } else {
        Err(format!("veritysetup {args:?}: {}", String::from_utf8_lossy(&output.stderr)))
    }
}

/// Data block counts that give 0, 1, 2 and 3+ tree levels for these parameters.
fn depths(params: &VerityParams) -> Vec<u64> {
    let per_block = 1u64 << (params.hash_block_size as usize / params.digest_slot()).ilog2();
    [1, 2, per_block + 1, per_block * per_block + 1]
        .into_iter()
        .filter(|blocks| blocks * u64::from(params.data_block_size) <= MAX_DATA_BYTES)
        .collect()
}

struct Case {
    params: VerityParams,
    superblock: bool,
}

fn run_case(case: &Case, index: usize, cache: &Mutex<HashMap<u64, PathBuf>>) -> Result<(), String> {
    let params = &case.params;
    let data_path = data_file(params.data_blocks, params.data_block_size, cache);
    let data = fs::read(&data_path).map_err(|e| e.to_string())?;
    let hash_path = scratch().join(format!("case-{index}.hash"));
    fs::write(&hash_path, b"").map_err(|e| e.to_string())?;
    let (data_arg, hash_arg) = (data_path.display().to_string(), hash_path.display().to_string());

    let mut args = vec!["format".to_string(), data_arg.clone(), hash_arg.clone()];
    args.extend(param_args(params));
    args.push(if case.superblock { format!("--uuid={UUID}") } else { "--no-superblock".into() });
    let printed = veritysetup(&args)?;
    let reference_root = printed.lines().find_map(|l| l.strip_prefix("Root hash:")).ok_or("no root hash printed")?.trim().to_string();
    let reference = fs::read(&hash_path).map_err(|e| e.to_string())?;

    let mut ours = Cursor::new(Vec::new());
    let uuid = case.superblock.then(uuid_bytes);
    let formatted = format_hash_area(data.as_slice(), params, uuid, &mut ours, 0).map_err(|e| e.to_string())?;
    if encode_hex(&formatted.root) != reference_root {
        return Err(format!("root hash differs: keel {} veritysetup {reference_root}", encode_hex(&formatted.root)));
    }
    if ours.get_ref() != &reference {
        return Err(format!("hash area differs ({} vs {} bytes)", ours.get_ref().len(), reference.len()));
    }
    // keel verifies what veritysetup wrote...
    let tree_offset = formatted.tree_start_block * u64::from(params.hash_block_size);
    verify(data.as_slice(), reference.as_slice(), tree_offset, params, &formatted.root).map_err(|e| format!("keel verify: {e}"))?;
    // ...and veritysetup verifies what keel wrote.
    let keel_hash = scratch().join(format!("case-{index}.keel"));
    fs::write(&keel_hash, ours.get_ref()).map_err(|e| e.to_string())?;
    let mut args = vec!["verify".to_string(), data_arg, keel_hash.display().to_string(), reference_root];
    if !case.superblock {
        args.push("--no-superblock".into());
        args.extend(param_args(params));
    }
    veritysetup(&args)?;
    let _ = fs::remove_file(&hash_path);
    let _ = fs::remove_file(&keel_hash);
    Ok(())
}

#[test]
fn every_combination_matches_veritysetup_byte_for_byte() {
    let mut cases = Vec::new();
    for algorithm in [HashAlgorithm::Sha256, HashAlgorithm::Sha512, HashAlgorithm::Sha1] {
        for (data_block_size, hash_block_size) in BLOCK_SIZES {
            for salt_len in [0usize, 1, 32, 256] {
                for hash_type in [HashType::Normal, HashType::ChromeOs] {
                    for superblock in [true, false] {
                        let base =
                            VerityParams { algorithm, hash_type, data_block_size, hash_block_size, data_blocks: 1, salt: vec![0xa5; salt_len] };
                        for data_blocks in depths(&base) {
                            cases.push(Case { params: VerityParams { data_blocks, ..base.clone() }, superblock });
                        }
                    }
                }
            }
        }
    }
    let cache = Mutex::new(HashMap::new());
    let next = Mutex::new(0usize);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..std::thread::available_parallelism().map_or(1, |n| n.get()) {
            scope.spawn(|| loop {
                let index = {
                    let mut next = next.lock().unwrap();
                    *next += 1;
                    *next - 1
                };
                let Some(case) = cases.get(index) else { break };
                if let Err(error) = run_case(case, index, &cache) {
                    let p = &case.params;
                    failures.lock().unwrap().push(format!(
                        "{} format {} blocks {}x{} hash blocks {} salt {} superblock {}: {error}",
                        p.algorithm.name(),
                        p.hash_type.number(),
                        p.data_blocks,
                        p.data_block_size,
                        p.hash_block_size,
                        p.salt.len(),
                        case.superblock
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    eprintln!("{} combinations matched veritysetup", cases.len());
}

#[test]
fn hash_area_appended_in_the_same_file_is_byte_identical() {
    let blocks = 3000;
    let hash_offset = (blocks + 5) * 4096;
    for params in [
        VerityParams::new(blocks, vec![0x3c; 32]),
        VerityParams { algorithm: HashAlgorithm::Sha512, hash_block_size: 1024, ..VerityParams::new(blocks, vec![7; 3]) },
    ] {
        let mut image: Vec<u8> = (0..hash_offset).map(|i| (i % 251) as u8).collect();
        image.resize(hash_offset as usize, 0);
        let path = scratch().join(format!("appended-{}.img", params.algorithm.name()));
        fs::write(&path, &image).unwrap();
        let mut args = vec![
            "format".to_string(),
            path.display().to_string(),
            path.display().to_string(),
            format!("--hash-offset={hash_offset}"),
            format!("--uuid={UUID}"),
        ];
        args.extend(param_args(&params));
        let printed = veritysetup(&args).unwrap();
        let reference_root = printed.lines().find_map(|l| l.strip_prefix("Root hash:")).unwrap().trim().to_string();

        let mut ours = Cursor::new(image.clone());
        let formatted = format_hash_area(image.as_slice(), &params, Some(uuid_bytes()), &mut ours, hash_offset).unwrap();
        assert_eq!(encode_hex(&formatted.root), reference_root);
        assert!(ours.get_ref() == &fs::read(&path).unwrap(), "image differs for {}", params.algorithm.name());
    }
}
