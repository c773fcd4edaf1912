//! dm-verity hash trees in the on-disk format of cryptsetup's `veritysetup`.
//!
//! Pure: everything works on `Read`/`Write`/`Seek`, so the same code formats an image
//! file on a build host and checks a partition in the initrd. Anything read from disk
//! (the superblock, the tree) is untrusted input and is validated before use.

mod error;
mod geometry;
mod hex;
mod params;
mod superblock;
mod table;
mod tree;

pub use error::VerityError;
pub use geometry::{tree_start_block, Geometry, Level};
pub use hex::{decode_hex, encode_hex};
pub use params::{HashType, VerityParams, DIGEST_SIZE};
pub use superblock::{Superblock, SUPERBLOCK_SIZE};
pub use table::{CorruptionMode, TableLine};
pub use tree::{check_tree, format, format_hash_area, Digest, Formatted};
