use crate::geometry::tree_start_block;
use crate::hasher::Hasher;
use crate::{Geometry, Level, ReadAt, Superblock, VerityError, VerityParams, SUPERBLOCK_SIZE};
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// A digest of the configured algorithm: 20, 32 or 64 bytes.
pub type Digest = Vec<u8>;

/// Input each worker reads per job: large enough to amortise the read call, small enough
/// that memory stays bounded by the tree plus a few MiB however large the data is.
const JOB_BYTES: usize = 1 << 20;
/// veritysetup writes its superblock through a block of the hash block size, at most
/// 4 KiB (read, patch, write): that decides how far it extends a short hash file.
const MAX_SUPERBLOCK_WRITE_BLOCK: u64 = 4096;

/// Where digest `n` of a level sits: blocks hold a power of two of digest slots each.
fn slot_offset(params: &VerityParams, n: usize) -> usize {
    let bits = params.digests_per_block_bits();
    (n >> bits) * params.hash_block_size as usize + (n & ((1 << bits) - 1)) * params.digest_slot()
}

/// Hashes the first `count` blocks of `block_size` bytes of `source` into
/// the digest slots of `level`, on every core. Workers take jobs of whole hash blocks, so
/// each writes a disjoint part of `level` and no locking is needed beyond handing out jobs.
fn hash_blocks(
    hasher: &Hasher,
    source: &(impl ReadAt + ?Sized),
    count: u64,
    block_size: usize,
    level: &mut [u8],
    what: &str,
) -> Result<(), VerityError> {
    let params = &hasher.params;
    let per_hash_block = 1usize << params.digests_per_block_bits();
    let job_blocks = (JOB_BYTES / block_size).max(1).div_ceil(per_hash_block) * per_hash_block;
    let job_region = job_blocks / per_hash_block * params.hash_block_size as usize;
    let digest_size = params.digest_size();
    let jobs_total = (count as usize).div_ceil(job_blocks);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs_total).max(1);

    let jobs = Mutex::new(level.chunks_mut(job_region).enumerate().take(jobs_total));
    let failure: Mutex<Option<VerityError>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let work = || {
        // Only sources that cannot lend their bytes need a buffer to read into.
        let mut buffer = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let Some((index, region)) = jobs.lock().ok().and_then(|mut jobs| jobs.next()) else { break };
            let first = index as u64 * job_blocks as u64;
            let blocks = (count - first).min(job_blocks as u64) as usize;
            let (offset, len) = (first * block_size as u64, blocks * block_size);
            let input = match source.slice_at(offset, len) {
                Some(in_memory) => in_memory,
                None => {
                    buffer.resize(len, 0);
                    if let Err(error) = source.read_exact_at(&mut buffer[..len], offset) {
                        stop.store(true, Ordering::Relaxed);
                        let context = format!("reading {what} {first}..{}", first + blocks as u64);
                        if let Ok(mut slot) = failure.lock() {
                            slot.get_or_insert(VerityError::Io { context, source: error });
                        }
                        break;
                    }
                    &buffer[..len]
                }
            };
            for (n, block) in input.chunks_exact(block_size).enumerate() {
                let at = slot_offset(params, n);
                hasher.hash_into(block, &mut region[at..at + digest_size]);
            }
            source.done_with(offset, len);
        }
    };
    if threads == 1 {
        work();
    } else {
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(work);
            }
        });
    }
    match failure.into_inner() {
        Ok(None) => Ok(()),
        Ok(Some(error)) => Err(error),
        Err(_) => Err(VerityError::InvalidParams("a hashing thread failed".into())),
    }
}

/// Hashes the first `params.data_blocks` blocks of `data` and writes the tree into `out`
/// at byte `tree_offset` (where the first hash block goes). Returns the root hash.
pub fn format(data: &(impl ReadAt + ?Sized), params: &VerityParams, out: &mut (impl Write + Seek), tree_offset: u64) -> Result<Digest, VerityError> {
    let geometry = Geometry::new(params)?;
    let hasher = Hasher::new(params);
    let hash_block_size = params.hash_block_size as usize;
    let Some(bottom) = geometry.levels.first() else {
        // One data block: its own hash is the root, and there is no tree to write.
        let mut block = vec![0u8; params.data_block_size as usize];
        data.read_exact_at(&mut block, 0).map_err(VerityError::io("reading the only data block"))?;
        return Ok(hasher.hash(&block));
    };
    let mut write_level = |level: &[u8], first_block: u64| {
        let at = tree_offset + first_block * hash_block_size as u64;
        out.seek(SeekFrom::Start(at)).and_then(|_| out.write_all(level)).map_err(VerityError::io(format!("writing hash blocks at byte {at}")))
    };
    let mut level = vec![0u8; bottom.blocks as usize * hash_block_size];
    let data_block_size = params.data_block_size as usize;
    hash_blocks(&hasher, data, params.data_blocks, data_block_size, &mut level, "data blocks")?;
    write_level(&level, bottom.first_block)?;
    for pair in geometry.levels.windows(2) {
        let mut above = vec![0u8; pair[1].blocks as usize * hash_block_size];
        hash_blocks(&hasher, level.as_slice(), pair[0].blocks, hash_block_size, &mut above, "hash blocks")?;
        write_level(&above, pair[1].first_block)?;
        level = above;
    }
    Ok(hasher.hash(&level))
}

/// What [`format_hash_area`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Formatted {
    pub root: Digest,
    /// The `hash_start` of the table line.
    pub tree_start_block: u64,
    /// The byte just past the last hash block: where the hash area ends.
    pub end: u64,
}

/// Formats a hash area as `veritysetup format` does: the superblock at `hash_offset`
/// (when a uuid is given), the tree from the next hash block boundary.
pub fn format_hash_area<W: Write + Seek>(
    data: &(impl ReadAt + ?Sized),
    params: &VerityParams,
    uuid: Option<[u8; 16]>,
    out: &mut W,
    hash_offset: u64,
) -> Result<Formatted, VerityError> {
    let geometry = Geometry::new(params)?;
    let tree_start_block = tree_start_block(hash_offset, params.hash_block_size, uuid.is_some());
    let tree_offset = tree_start_block * u64::from(params.hash_block_size);
    let root = format(data, params, out, tree_offset)?;
    if let Some(uuid) = uuid {
        // As veritysetup does: after the tree, the 512-byte superblock goes into the block
        // that holds it, leaving that block's other bytes as they were, and a file that
        // ends sooner is extended with zeros to the end of that block.
        let superblock = Superblock { uuid, params: params.clone() }.to_bytes();
        let write_block = u64::from(params.hash_block_size).min(MAX_SUPERBLOCK_WRITE_BLOCK);
        let block_end = (hash_offset + SUPERBLOCK_SIZE as u64).next_multiple_of(write_block);
        let extend = |out: &mut W| -> std::io::Result<()> {
            let len = out.seek(SeekFrom::End(0))?;
            if len < block_end {
                out.write_all(&vec![0u8; (block_end - len) as usize])?;
            }
            out.seek(SeekFrom::Start(hash_offset))?;
            out.write_all(&superblock)
        };
        extend(out).map_err(VerityError::io(format!("writing the superblock at byte {hash_offset}")))?;
    }
    Ok(Formatted { root, tree_start_block, end: tree_offset + geometry.tree_bytes() })
}

/// Hashes `count` blocks of `source` and compares each digest with its slot in `trusted`;
/// `mismatch(n)` describes the first block that differs.
fn compare_with_level(
    hasher: &Hasher,
    source: &(impl ReadAt + ?Sized),
    count: u64,
    block_size: usize,
    trusted: &[u8],
    what: &str,
    mismatch: impl Fn(u64) -> String,
) -> Result<(), VerityError> {
    let params = &hasher.params;
    let mut computed = vec![0u8; trusted.len()];
    hash_blocks(hasher, source, count, block_size, &mut computed, what)?;
    let digest_size = params.digest_size();
    let first_bad = (0..count as usize).find(|&n| {
        let at = slot_offset(params, n);
        computed[at..at + digest_size] != trusted[at..at + digest_size]
    });
    if let Some(n) = first_bad {
        return Err(VerityError::Corrupt(mismatch(n as u64)));
    }
    // The covered digests match; everything else in the trusted blocks must be the zeros a
    // formatter leaves. A digest past the last block means the block count was changed
    // (a shrunk count would otherwise verify a prefix) or the level is damaged.
    if computed != trusted {
        return Err(VerityError::Corrupt(format!(
            "the hash blocks over these {what} hold more than {count} digests: the block count does not match the tree"
        )));
    }
    Ok(())
}

/// Checks the stored tree top-down against `root` and returns its verified bottom level
/// with its place (`None` when there is one data block and so no tree). A level is trusted once it
/// matches the level above it, and then vouches for every block of the level below, so
/// the first block whose hash differs is the damaged one. Blocks are hashed whole, so
/// padding and unused digest slots are covered too.
fn verified_tree(
    hash_dev: &(impl ReadAt + ?Sized),
    tree_offset: u64,
    params: &VerityParams,
    root: &[u8],
) -> Result<Option<(Level, Vec<u8>)>, VerityError> {
    let geometry = Geometry::new(params)?;
    let Some(top) = geometry.levels.last() else { return Ok(None) };
    let hasher = Hasher::new(params);
    let hash_block_size = params.hash_block_size as usize;
    let device_size = hash_dev.size().map_err(VerityError::io("finding the hash device size"))?;
    let tree_end = tree_offset.checked_add(geometry.tree_bytes());
    if tree_end.is_none_or(|end| end > device_size) {
        // Checked before any allocation, so a lying superblock cannot ask for a huge buffer.
        return Err(VerityError::Corrupt(format!(
            "the tree needs {} bytes from byte {tree_offset}, but the device has only {device_size}",
            geometry.tree_bytes()
        )));
    }
    let read_level = |first_block: u64, blocks: u64| -> Result<Vec<u8>, VerityError> {
        let mut level = vec![0u8; blocks as usize * hash_block_size];
        let at = tree_offset + first_block * hash_block_size as u64;
        hash_dev.read_exact_at(&mut level, at).map_err(VerityError::io(format!("reading hash blocks at byte {at}")))?;
        Ok(level)
    };
    let mut trusted = read_level(top.first_block, top.blocks)?;
    if hasher.hash(&trusted) != root {
        return Err(VerityError::Corrupt(format!(
            "the top hash block (block {}) does not match the root hash: the root hash is wrong or the block is damaged",
            top.first_block
        )));
    }
    for (index, level) in geometry.levels.iter().enumerate().rev().skip(1) {
        let stored = read_level(level.first_block, level.blocks)?;
        compare_with_level(&hasher, stored.as_slice(), level.blocks, hash_block_size, &trusted, "hash blocks", |n| {
            format!("hash block {} (level {index}) does not match its digest in level {}", level.first_block + n, index + 1)
        })?;
        trusted = stored;
    }
    Ok(Some((geometry.levels[0], trusted)))
}

/// Checks that the stored hash tree at `tree_offset` hangs together and ends in `root`.
/// It reads no data blocks; the kernel checks those as they are read.
pub fn check_tree(hash_dev: &(impl ReadAt + ?Sized), tree_offset: u64, params: &VerityParams, root: &[u8]) -> Result<(), VerityError> {
    verified_tree(hash_dev, tree_offset, params, root).map(|_| ())
}

/// Checks every data block and the whole tree against `root`, naming the first damaged
/// hash block or, if the tree is sound, the first damaged data block.
pub fn verify(
    data: &(impl ReadAt + ?Sized),
    hash_dev: &(impl ReadAt + ?Sized),
    tree_offset: u64,
    params: &VerityParams,
    root: &[u8],
) -> Result<(), VerityError> {
    let bottom = verified_tree(hash_dev, tree_offset, params, root)?;
    let data_size = data.size().map_err(VerityError::io("finding the data device size"))?;
    if data_size < params.data_bytes() {
        return Err(VerityError::Corrupt(format!("the data device has {data_size} bytes, fewer than the {} the tree covers", params.data_bytes())));
    }
    let hasher = Hasher::new(params);
    let data_block_size = params.data_block_size as usize;
    match bottom {
        None => {
            let mut block = vec![0u8; data_block_size];
            data.read_exact_at(&mut block, 0).map_err(VerityError::io("reading the only data block"))?;
            if hasher.hash(&block) != root {
                return Err(VerityError::Corrupt("data block 0 does not match the root hash".into()));
            }
            Ok(())
        }
        Some((bottom, level)) => {
            let per_hash_block = 1u64 << params.digests_per_block_bits();
            compare_with_level(&hasher, data, params.data_blocks, data_block_size, &level, "data blocks", |n| {
                format!("data block {n} does not match its digest in hash block {} (level 0)", bottom.first_block + n / per_hash_block)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HashAlgorithm, HashType};
    use std::io::Cursor;

    fn data(blocks: usize, block_size: usize) -> Vec<u8> {
        (0..blocks * block_size).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    fn formatted(params: &VerityParams) -> (Vec<u8>, Vec<u8>, Digest) {
        let bytes = data(params.data_blocks as usize, params.data_block_size as usize);
        let mut out = Cursor::new(Vec::new());
        let root = format(bytes.as_slice(), params, &mut out, 0).unwrap();
        (bytes, out.into_inner(), root)
    }

    /// The tree computed the plainest way, one block at a time, bottom-up, as a reference
    /// for the parallel code: (the tree bytes in on-disk order, the root hash).
    fn naive_tree(bytes: &[u8], params: &VerityParams) -> (Vec<u8>, Digest) {
        let hasher = Hasher::new(params);
        let (hbs, slot) = (params.hash_block_size as usize, params.digest_slot());
        let per_block = 1usize << params.digests_per_block_bits();
        let mut levels: Vec<Vec<u8>> = Vec::new();
        let mut blocks: Vec<&[u8]> = bytes.chunks(params.data_block_size as usize).collect();
        let mut owned;
        while blocks.len() > 1 {
            let mut level = vec![0u8; blocks.len().div_ceil(per_block) * hbs];
            for (n, block) in blocks.iter().enumerate() {
                let at = (n / per_block) * hbs + (n % per_block) * slot;
                level[at..at + params.digest_size()].copy_from_slice(&hasher.hash(block));
            }
            owned = level.clone();
            levels.push(level);
            blocks = owned.chunks(hbs).collect();
        }
        let root = hasher.hash(blocks[0]);
        (levels.into_iter().rev().flatten().collect(), root)
    }

    #[test]
    fn parallel_format_matches_the_naive_tree_for_every_shape() {
        for algorithm in [HashAlgorithm::Sha1, HashAlgorithm::Sha256, HashAlgorithm::Sha512] {
            for hash_type in [HashType::Normal, HashType::ChromeOs] {
                for (data_block_size, hash_block_size) in [(4096, 4096), (512, 512), (1024, 4096), (4096, 1024), (512, 8192)] {
                    for blocks in [1u64, 2, 9, 65, 300, 2100] {
                        let params =
                            VerityParams { algorithm, hash_type, data_block_size, hash_block_size, data_blocks: blocks, salt: vec![0xc3; 5] };
                        let (bytes, tree, root) = formatted(&params);
                        let (expected_tree, expected_root) = naive_tree(&bytes, &params);
                        assert_eq!(root, expected_root, "{params:?}");
                        assert!(tree == expected_tree, "tree differs for {params:?}");
                        verify(bytes.as_slice(), tree.as_slice(), 0, &params, &root).unwrap();
                    }
                }
            }
        }
    }

    #[test]
    fn check_catches_every_flip_and_names_the_damaged_block() {
        let params = VerityParams::new(300, vec![0x5a; 32]);
        let (_, tree, root) = formatted(&params);
        check_tree(tree.as_slice(), 0, &params, &root).unwrap();
        for at in (0..tree.len()).step_by(331) {
            let mut broken = tree.clone();
            broken[at] ^= 0x10;
            let error = check_tree(broken.as_slice(), 0, &params, &root).unwrap_err();
            let block = at / 4096;
            let expected = if block == 0 { "top hash block (block 0)".to_string() } else { format!("hash block {block} (level 0)") };
            assert!(matches!(&error, VerityError::Corrupt(m) if m.contains(&expected)), "flip at {at}: {error}");
        }
    }

    #[test]
    fn verify_names_the_first_damaged_data_block() {
        let params = VerityParams::new(1000, vec![1; 32]);
        let (mut bytes, tree, root) = formatted(&params);
        bytes[777 * 4096 + 5] ^= 0x80;
        bytes[900 * 4096] ^= 0x01;
        let error = verify(bytes.as_slice(), tree.as_slice(), 0, &params, &root).unwrap_err().to_string();
        assert!(error.contains("data block 777 does not match its digest in hash block 7 (level 0)"), "{error}");
        let short = &bytes[..999 * 4096];
        assert!(matches!(verify(short, tree.as_slice(), 0, &params, &root), Err(VerityError::Corrupt(_))));
    }

    #[test]
    fn single_block_root_is_its_salted_hash() {
        let params = VerityParams::new(1, vec![0x5a; 32]);
        let (bytes, tree, root) = formatted(&params);
        assert!(tree.is_empty());
        let mut expected = <sha2::Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut expected, &params.salt);
        sha2::Digest::update(&mut expected, &bytes);
        assert_eq!(root, sha2::Digest::finalize(expected).to_vec());
        let mut broken = bytes.clone();
        broken[100] ^= 1;
        assert!(verify(broken.as_slice(), tree.as_slice(), 0, &params, &root).is_err());
    }

    #[test]
    fn check_refuses_wrong_root_and_short_device() {
        let params = VerityParams::new(300, vec![0x5a; 32]);
        let (_, tree, mut root) = formatted(&params);
        assert!(check_tree(&tree[..tree.len() - 1], 0, &params, &root).is_err());
        root[0] ^= 1;
        assert!(check_tree(tree.as_slice(), 0, &params, &root).is_err());
    }

    #[test]
    fn short_data_is_an_error_not_a_panic() {
        let params = VerityParams::new(10, vec![]);
        let bytes = data(3, 4096);
        let result = format(bytes.as_slice(), &params, &mut Cursor::new(Vec::new()), 0);
        assert!(matches!(result, Err(VerityError::Io { .. })));
    }
}
