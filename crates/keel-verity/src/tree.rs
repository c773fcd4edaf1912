use crate::geometry::tree_start_block;
use crate::{Geometry, HashType, Superblock, VerityError, VerityParams, DIGEST_SIZE, SUPERBLOCK_SIZE};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};

pub type Digest = [u8; DIGEST_SIZE];

/// Blocks read from the data area per `read` call: big enough to amortise syscalls,
/// small enough that memory stays bounded by the tree, not the image.
const READ_BATCH_BYTES: usize = 1 << 20;

struct Hasher<'a> {
    params: &'a VerityParams,
    salted: Sha256,
}

impl<'a> Hasher<'a> {
    fn new(params: &'a VerityParams) -> Hasher<'a> {
        let mut salted = Sha256::new();
        if params.hash_type == HashType::Normal {
            salted.update(&params.salt);
        }
        Hasher { params, salted }
    }

    fn hash(&self, block: &[u8]) -> Digest {
        let mut state = self.salted.clone();
        state.update(block);
        if self.params.hash_type == HashType::ChromeOs {
            state.update(&self.params.salt);
        }
        state.finalize().into()
    }

    /// Hashes `blocks` (a multiple of `block_size` bytes) into the digest slots of `level`,
    /// starting at slot `first_slot`.
    fn hash_into(&self, blocks: &[u8], block_size: usize, level: &mut [u8], first_slot: usize) {
        let slot = self.params.digest_slot();
        let per_block = self.params.hash_block_size as usize / slot;
        let hash_block_size = self.params.hash_block_size as usize;
        for (index, block) in blocks.chunks_exact(block_size).enumerate() {
            let n = first_slot + index;
            let at = (n / per_block) * hash_block_size + (n % per_block) * slot;
            level[at..at + DIGEST_SIZE].copy_from_slice(&self.hash(block));
        }
    }

    /// The level above `level` (the next one up the tree), built from scratch.
    fn level_above(&self, level: &[u8], blocks_above: u64) -> Vec<u8> {
        let hash_block_size = self.params.hash_block_size as usize;
        let mut above = vec![0u8; blocks_above as usize * hash_block_size];
        self.hash_into(level, hash_block_size, &mut above, 0);
        above
    }
}

/// Hashes the first `params.data_blocks` blocks of `data` and writes the tree into `out`
/// at byte `tree_offset` (where the first hash block goes). Returns the root hash.
pub fn format(
    data: &mut impl Read,
    params: &VerityParams,
    out: &mut (impl Write + Seek),
    tree_offset: u64,
) -> Result<Digest, VerityError> {
    let geometry = Geometry::new(params)?;
    let hasher = Hasher::new(params);
    let data_block_size = params.data_block_size as usize;
    let hash_block_size = params.hash_block_size as usize;
    let batch_blocks = (READ_BATCH_BYTES / data_block_size).max(1);
    let mut batch = vec![0u8; batch_blocks * data_block_size];

    let Some(bottom) = geometry.levels.first() else {
        // One data block: its own hash is the root, and there is no tree to write.
        let block = &mut batch[..data_block_size];
        data.read_exact(block).map_err(VerityError::io("reading the only data block"))?;
        return Ok(hasher.hash(block));
    };

    let mut level = vec![0u8; bottom.blocks as usize * hash_block_size];
    let mut done = 0u64;
    while done < params.data_blocks {
        let count = (params.data_blocks - done).min(batch_blocks as u64) as usize;
        let chunk = &mut batch[..count * data_block_size];
        data.read_exact(chunk)
            .map_err(VerityError::io(format!("reading data blocks {done}..{}", done + count as u64)))?;
        hasher.hash_into(chunk, data_block_size, &mut level, done as usize);
        done += count as u64;
    }

    let mut write_level = |level: &[u8], first_block: u64| {
        let at = tree_offset + first_block * hash_block_size as u64;
        out.seek(SeekFrom::Start(at))
            .and_then(|_| out.write_all(level))
            .map_err(VerityError::io(format!("writing hash blocks at byte {at}")))
    };
    write_level(&level, bottom.first_block)?;
    for above in &geometry.levels[1..] {
        level = hasher.level_above(&level, above.blocks);
        write_level(&level, above.first_block)?;
    }
    Ok(hasher.hash(&level))
}

/// What [`format_hash_area`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Formatted {
    pub root: Digest,
    /// The `hash_start` of the table line.
    pub tree_start_block: u64,
    /// The byte just past the last hash block: where the hash area ends.
    pub end: u64,
}

/// Formats a hash area as `veritysetup format` does: the superblock at `hash_offset`
/// (when a uuid is given), the tree from the next hash block boundary.
pub fn format_hash_area(
    data: &mut impl Read,
    params: &VerityParams,
    uuid: Option<[u8; 16]>,
    out: &mut (impl Write + Seek),
    hash_offset: u64,
) -> Result<Formatted, VerityError> {
    let geometry = Geometry::new(params)?;
    let tree_start_block = tree_start_block(hash_offset, params.hash_block_size, uuid.is_some());
    let tree_offset = tree_start_block * u64::from(params.hash_block_size);
    let root = format(data, params, out, tree_offset)?;
    if let Some(uuid) = uuid {
        // Zero from the superblock to the tree, as veritysetup does, so stale bytes in the
        // gap never survive a re-format.
        let mut header = vec![0u8; (tree_offset - hash_offset) as usize];
        let superblock = Superblock { uuid, params: params.clone() }.to_bytes();
        header[..SUPERBLOCK_SIZE].copy_from_slice(&superblock);
        out.seek(SeekFrom::Start(hash_offset))
            .and_then(|_| out.write_all(&header))
            .map_err(VerityError::io(format!("writing the superblock at byte {hash_offset}")))?;
    }
    Ok(Formatted { root, tree_start_block, end: tree_offset + geometry.tree_bytes() })
}

/// Checks that the stored hash tree at `tree_offset` hangs together and ends in `root`:
/// every byte of every hash block is covered. It reads no data blocks; the kernel checks
/// those as they are read. With a single data block there is no tree, and nothing to do.
pub fn check_tree(
    hash_dev: &mut (impl Read + Seek),
    tree_offset: u64,
    params: &VerityParams,
    root: &Digest,
) -> Result<(), VerityError> {
    let geometry = Geometry::new(params)?;
    let hasher = Hasher::new(params);
    let hash_block_size = u64::from(params.hash_block_size);
    let device_len = hash_dev.seek(SeekFrom::End(0)).map_err(VerityError::io("finding the hash device size"))?;
    let tree_end = tree_offset.checked_add(geometry.tree_bytes());
    if tree_end.is_none_or(|end| end > device_len) {
        // Checked before any allocation, so a lying superblock cannot ask for a huge buffer.
        return Err(VerityError::Corrupt(format!(
            "the tree needs {} bytes from byte {tree_offset}, but the device has only {device_len}",
            geometry.tree_bytes()
        )));
    }
    let mut read_level = |first_block: u64, blocks: u64| -> Result<Vec<u8>, VerityError> {
        let mut level = vec![0u8; (blocks * hash_block_size) as usize];
        let at = tree_offset + first_block * hash_block_size;
        hash_dev
            .seek(SeekFrom::Start(at))
            .and_then(|_| hash_dev.read_exact(&mut level))
            .map_err(VerityError::io(format!("reading hash blocks at byte {at}")))?;
        Ok(level)
    };

    // Top-down: a level is trusted once it matches the level above it (the top one, the
    // root hash), and then vouches for every block of the level below. The first block
    // whose hash differs from its trusted digest is the damaged one. Blocks are hashed
    // whole, so padding and unused digest slots are covered too.
    let Some(top) = geometry.levels.last() else { return Ok(()) };
    let mut above = read_level(top.first_block, top.blocks)?;
    if hasher.hash(&above) != *root {
        return Err(VerityError::Corrupt(format!(
            "the top hash block (block {}) does not match the root hash: the root hash is wrong or the block is damaged",
            top.first_block
        )));
    }
    for (index, level) in geometry.levels.iter().enumerate().rev().skip(1) {
        let stored = read_level(level.first_block, level.blocks)?;
        let trusted = hasher.level_above(&stored, geometry.levels[index + 1].blocks);
        if let Some(block) = first_different_digest(&trusted, &above, params.digest_slot()) {
            return Err(VerityError::Corrupt(format!(
                "hash block {} (level {index}) does not match its digest in level {}",
                level.first_block + block as u64,
                index + 1
            )));
        }
        above = stored;
    }
    Ok(())
}

/// The index of the first digest slot where two levels differ: the block it hashes.
fn first_different_digest(computed: &[u8], trusted: &[u8], slot: usize) -> Option<usize> {
    computed.chunks(slot).zip(trusted.chunks(slot)).position(|(a, b)| a != b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn data(blocks: usize) -> Vec<u8> {
        (0..blocks * 4096).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    fn formatted(blocks: usize) -> (Vec<u8>, VerityParams, Digest) {
        let params = VerityParams::new(blocks as u64, vec![0x5a; 32]);
        let mut out = Cursor::new(Vec::new());
        let root = format(&mut Cursor::new(data(blocks)), &params, &mut out, 0).unwrap();
        (out.into_inner(), params, root)
    }

    #[test]
    fn single_block_root_is_its_salted_hash() {
        let (tree, params, root) = formatted(1);
        assert!(tree.is_empty());
        let mut expected = Sha256::new();
        expected.update(&params.salt);
        expected.update(data(1));
        assert_eq!(root, <Digest>::from(expected.finalize()));
    }

    #[test]
    fn check_accepts_its_own_tree_and_catches_every_flip() {
        for blocks in [2, 128, 129, 300] {
            let (tree, params, root) = formatted(blocks);
            check_tree(&mut Cursor::new(&tree), 0, &params, &root).unwrap();
            for at in (0..tree.len()).step_by(331) {
                let mut broken = tree.clone();
                broken[at] ^= 0x10;
                let result = check_tree(&mut Cursor::new(&broken), 0, &params, &root);
                assert!(matches!(result, Err(VerityError::Corrupt(_))), "flip at {at} of {blocks} blocks missed");
            }
        }
    }

    #[test]
    fn check_names_the_damaged_block() {
        // 300 blocks: the top level is block 0, level 0 is blocks 1..=3.
        let (tree, params, root) = formatted(300);
        let mut broken = tree.clone();
        broken[2 * 4096 + 77] ^= 1;
        let error = check_tree(&mut Cursor::new(&broken), 0, &params, &root).unwrap_err().to_string();
        assert!(error.contains("hash block 2 (level 0) does not match its digest in level 1"), "{error}");
        broken = tree.clone();
        broken[5] ^= 1;
        let error = check_tree(&mut Cursor::new(&broken), 0, &params, &root).unwrap_err().to_string();
        assert!(error.contains("top hash block (block 0) does not match the root hash"), "{error}");
    }

    #[test]
    fn check_refuses_wrong_root_and_short_device() {
        let (tree, params, mut root) = formatted(300);
        assert!(check_tree(&mut Cursor::new(&tree[..tree.len() - 1]), 0, &params, &root).is_err());
        root[0] ^= 1;
        assert!(check_tree(&mut Cursor::new(&tree), 0, &params, &root).is_err());
    }

    #[test]
    fn short_data_is_an_error_not_a_panic() {
        let params = VerityParams::new(10, vec![]);
        let result = format(&mut Cursor::new(data(3)), &params, &mut Cursor::new(Vec::new()), 0);
        assert!(matches!(result, Err(VerityError::Io { .. })));
    }
}
