use crate::{VerityError, VerityParams};

/// One level of the hash tree. Level 0 hashes the data blocks; level `i + 1` hashes
/// the blocks of level `i`; the last level is a single block whose hash is the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// First hash block of this level, counted from the start of the tree.
    pub first_block: u64,
    pub blocks: u64,
}

/// Where every level of a tree lives, laid out as the kernel and veritysetup expect:
/// the top level first, level 0 last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bottom-up: `levels[0]` hashes the data. Empty when there is one data block,
    /// whose own hash is then the root hash.
    pub levels: Vec<Level>,
    pub hash_block_size: u32,
}

impl Geometry {
    pub fn new(params: &VerityParams) -> Result<Geometry, VerityError> {
        params.validate()?;
        let per_block_bits = params.digests_per_block_bits();
        // The kernel's rule (dm-verity-target.c): add levels until one block covers all.
        let mut depth = 0u32;
        while per_block_bits * depth < 64 && (params.data_blocks - 1) >> (per_block_bits * depth) != 0 {
            depth += 1;
        }
        let mut levels = vec![Level { first_block: 0, blocks: 0 }; depth as usize];
        let mut position = 0u64;
        for (index, level) in levels.iter_mut().enumerate().rev() {
            let shift = per_block_bits * (index as u32 + 1);
            let blocks = if shift >= 64 { 1 } else { (params.data_blocks - 1) >> shift } + 1;
            *level = Level { first_block: position, blocks };
            position += blocks;
        }
        Ok(Geometry { levels, hash_block_size: params.hash_block_size })
    }

    pub fn tree_blocks(&self) -> u64 {
        self.levels.iter().map(|level| level.blocks).sum()
    }

    pub fn tree_bytes(&self) -> u64 {
        self.tree_blocks() * u64::from(self.hash_block_size)
    }
}

/// The hash block where the tree starts, when the hash area begins at byte `hash_offset`:
/// after the 512-byte superblock rounded up to a hash block, as veritysetup places it.
pub fn tree_start_block(hash_offset: u64, hash_block_size: u32, with_superblock: bool) -> u64 {
    let header = if with_superblock { crate::SUPERBLOCK_SIZE as u64 } else { 0 };
    (hash_offset + header).div_ceil(u64::from(hash_block_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level_sizes(data_blocks: u64) -> Vec<u64> {
        let geometry = Geometry::new(&VerityParams::new(data_blocks, vec![])).unwrap();
        geometry.levels.iter().map(|level| level.blocks).collect()
    }

    #[test]
    fn levels_match_the_kernel_rule() {
        assert_eq!(level_sizes(1), Vec::<u64>::new());
        assert_eq!(level_sizes(2), vec![1]);
        assert_eq!(level_sizes(128), vec![1]);
        assert_eq!(level_sizes(129), vec![2, 1]);
        assert_eq!(level_sizes(128 * 128 + 1), vec![129, 2, 1]);
    }

    #[test]
    fn flatcar_usr_a_fits_its_partition() {
        // Flatcar: 1 GiB USR-A, filesystem of 1065345024 bytes, then superblock and tree.
        let geometry = Geometry::new(&VerityParams::new(1065345024 / 4096, vec![])).unwrap();
        assert_eq!(1065345024 + 4096 + geometry.tree_bytes(), 1 << 30);
    }

    #[test]
    fn tree_starts_after_the_superblock() {
        assert_eq!(tree_start_block(0, 4096, true), 1);
        assert_eq!(tree_start_block(8192, 4096, true), 3);
        assert_eq!(tree_start_block(8192, 4096, false), 2);
        assert_eq!(tree_start_block(1024, 512, true), 3);
    }

    #[test]
    fn top_level_comes_first() {
        let geometry = Geometry::new(&VerityParams::new(129, vec![])).unwrap();
        assert_eq!(geometry.levels[1], Level { first_block: 0, blocks: 1 });
        assert_eq!(geometry.levels[0], Level { first_block: 1, blocks: 2 });
    }
}
