//! `keel_verity::Superblock::parse` on untrusted bytes: the first 512 of an input, or
//! fewer. Held to: fewer than 512 bytes never parse; what parses has parameters that
//! validate, and encodes back to exactly the bytes it came from (parse insists on zeros
//! wherever veritysetup writes them, so nothing is dropped), which parse to it again.

use crate::Seed;
use keel_verity::{format_hash_area, HashAlgorithm, HashType, Superblock, VerityParams, SUPERBLOCK_SIZE};
use std::io::Cursor;

pub fn run(input: &[u8]) {
    let Ok(superblock) = Superblock::parse(input) else { return };
    assert!(input.len() >= SUPERBLOCK_SIZE, "a superblock parsed from {} bytes", input.len());
    if let Err(error) = superblock.params.validate() {
        panic!("a parsed superblock's parameters do not validate ({error}): {superblock:?}");
    }
    let bytes = superblock.to_bytes();
    if let Some(at) = (0..SUPERBLOCK_SIZE).find(|&at| bytes[at] != input[at]) {
        panic!("{superblock:?} encodes to other bytes than it came from, first at byte {at}");
    }
    assert_eq!(Superblock::parse(&bytes).ok().as_ref(), Some(&superblock), "the encoded superblock parses differently");
}

/// The superblock veritysetup (and keel) writes at the start of a hash area.
fn formatted(params: VerityParams, uuid: [u8; 16]) -> Vec<u8> {
    let data: Vec<u8> = (0..params.data_bytes()).map(|i| (i % 251) as u8).collect();
    let mut hash_area = Cursor::new(Vec::new());
    format_hash_area(&data, &params, Some(uuid), &mut hash_area, 0).expect("formatting a small hash area");
    hash_area.into_inner()[..SUPERBLOCK_SIZE].to_vec()
}

pub fn seeds() -> Vec<Seed> {
    let uuid = *b"keel-fuzz-seed-0";
    vec![
        Seed { name: "sha256-4096", bytes: formatted(VerityParams::new(8, vec![0xa5; 32]), uuid) },
        Seed {
            name: "sha1-chromeos-512-unsalted",
            bytes: formatted(
                VerityParams {
                    algorithm: HashAlgorithm::Sha1,
                    hash_type: HashType::ChromeOs,
                    data_block_size: 512,
                    hash_block_size: 512,
                    data_blocks: 40,
                    salt: Vec::new(),
                },
                uuid,
            ),
        },
        Seed {
            name: "sha512-65536-longest-salt",
            bytes: formatted(
                VerityParams {
                    algorithm: HashAlgorithm::Sha512,
                    hash_block_size: 65536,
                    salt: (0..=255).collect(),
                    ..VerityParams::new(3, Vec::new())
                },
                uuid,
            ),
        },
    ]
}
