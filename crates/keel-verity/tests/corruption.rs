//! Every single-bit flip is caught: in a sample of data blocks, in every hash block, and
//! in every superblock bit that carries meaning, for two parameter sets. The superblock's
//! UUID is the exception: nothing covers it with a hash (in veritysetup neither), so a
//! flip there changes only the name.

use keel_test_support::XorShift;
use keel_verity::{format_hash_area, tree_start_block, verify, HashAlgorithm, Superblock, VerityParams, SUPERBLOCK_SIZE};
use std::io::Cursor;

const UUID_BITS: std::ops::Range<usize> = 16 * 8..32 * 8;

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    XorShift::new(seed).bytes(len)
}

/// Data, hash area (superblock first) and root for small but multi-level trees.
fn formatted(params: &VerityParams) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let data = bytes(params.data_bytes() as usize, params.data_blocks);
    let mut area = Cursor::new(Vec::new());
    let formatted = format_hash_area(data.as_slice(), params, Some([0x42; 16]), &mut area, 0).unwrap();
    (data, area.into_inner(), formatted.root)
}

/// What `keel verity verify` does: parameters from the superblock, then data and tree.
fn verifies(data: &[u8], area: &[u8], root: &[u8]) -> bool {
    let Ok(superblock) = Superblock::parse(area) else { return false };
    let params = &superblock.params;
    let tree = tree_start_block(0, params.hash_block_size, true) * u64::from(params.hash_block_size);
    params.digest_size() == root.len() && verify(data, area, tree, params, root).is_ok()
}

fn parameter_sets() -> [VerityParams; 2] {
    [
        VerityParams { data_block_size: 512, hash_block_size: 512, ..VerityParams::new(40, vec![0x11; 32]) },
        VerityParams { algorithm: HashAlgorithm::Sha512, data_block_size: 512, hash_block_size: 1024, ..VerityParams::new(300, vec![7; 3]) },
    ]
}

#[test]
fn every_bit_of_sampled_data_blocks() {
    for params in parameter_sets() {
        let (mut data, area, root) = formatted(&params);
        assert!(verifies(&data, &area, &root));
        let block = params.data_block_size as usize;
        let last = params.data_blocks as usize - 1;
        for sampled in [0, 1, last / 2, last] {
            for bit in 0..block * 8 {
                let at = sampled * block + bit / 8;
                data[at] ^= 1 << (bit % 8);
                assert!(!verifies(&data, &area, &root), "data block {sampled} bit {bit} of {params:?}");
                data[at] ^= 1 << (bit % 8);
            }
        }
    }
}

#[test]
fn every_bit_of_every_hash_block() {
    for params in parameter_sets() {
        let (data, mut area, root) = formatted(&params);
        let tree_start = params.hash_block_size as usize;
        for bit in tree_start * 8..area.len() * 8 {
            area[bit / 8] ^= 1 << (bit % 8);
            assert!(!verifies(&data, &area, &root), "hash area bit {bit} of {params:?}");
            area[bit / 8] ^= 1 << (bit % 8);
        }
    }
}

#[test]
fn every_meaningful_bit_of_the_superblock() {
    for params in parameter_sets() {
        let (data, mut area, root) = formatted(&params);
        for bit in (0..SUPERBLOCK_SIZE * 8).filter(|bit| !UUID_BITS.contains(bit)) {
            area[bit / 8] ^= 1 << (bit % 8);
            assert!(!verifies(&data, &area, &root), "superblock bit {bit} of {params:?}");
            area[bit / 8] ^= 1 << (bit % 8);
        }
        // The UUID is only a name.
        area[20] ^= 1;
        assert!(verifies(&data, &area, &root));
    }
}

#[test]
fn random_superblocks_are_errors_or_valid_never_panics() {
    let valid = Superblock { uuid: [1; 16], params: VerityParams::new(1 << 20, vec![3; 32]) }.to_bytes();
    for round in 0..50_000u64 {
        // Half fully random, half a valid superblock with a few random bytes.
        let mut candidate = bytes(SUPERBLOCK_SIZE, round * 2654435761 + 1);
        if round % 2 == 0 {
            let mut patched = valid;
            for (i, b) in candidate.iter().take(1 + (round as usize % 12)).enumerate() {
                patched[(usize::from(*b) * 7 + i * 131) % SUPERBLOCK_SIZE] = candidate[SUPERBLOCK_SIZE - 1 - i];
            }
            candidate = patched.to_vec();
        }
        if let Ok(superblock) = Superblock::parse(&candidate) {
            assert!(superblock.params.validate().is_ok());
            assert_eq!(Superblock::parse(&superblock.to_bytes()).unwrap(), superblock);
        }
    }
}
