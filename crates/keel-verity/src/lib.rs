//! dm-verity hash trees in the on-disk format of cryptsetup's `veritysetup`.
//!
//! Pure: everything works on `Read`/`Write`/`Seek`, so the same code formats an image
//! file on a build host and checks a partition in the initrd. Anything read from disk
//! (the superblock, the tree) is untrusted input and is validated before use.

mod error;
mod geometry;
mod hasher;
mod hex;
mod params;
mod read_at;
mod superblock;
mod table;
mod tree;

pub use error::VerityError;
pub use geometry::{tree_start_block, Geometry, Level};
pub use hex::{decode_hex, encode_hex};
pub use params::{HashAlgorithm, HashType, VerityParams, MAX_DIGEST_SIZE};
pub use read_at::{MappedFile, ReadAt};
pub use superblock::{Superblock, SUPERBLOCK_SIZE};
pub use table::{CorruptionMode, TableLine};
pub use tree::{check_tree, format, format_hash_area, verify, Digest, Formatted};
