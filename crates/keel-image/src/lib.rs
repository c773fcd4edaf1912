//! `keel image build`: a raw GPT disk image in Flatcar's layout whose USR-A holds a
//! read-only ext4 of a /usr tree followed by its dm-verity hash area, and the manifest
//! that ties the image to its initrd.
//!
//! ROOT ships blank (all zero, and sparse in the file): keel-init formats it on first
//! boot, so every machine gets its own filesystem UUID, the image carries no filesystem
//! that first boot would have to grow, and a blank ROOT exercises the same path as a
//! freshly wiped one.

mod usrfs;

use anyhow::{ensure, Context};
use keel_disk::{flatcar_layout, plan_layout, write_gpt, Guid, LayoutSizes};
use keel_manifest::{ImageManifest, UsrImage};
use keel_verity::{format_hash_area, Geometry, VerityParams};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Flatcar's image disk GUID: first boot replaces it with a random one.
pub const DEFAULT_DISK_GUID: &str = "00000000-0000-0000-0000-000000000001";
const BLOCK_SIZE: u64 = 4096;
/// Zero runs this long are skipped when writing, so the image file stays sparse.
const COPY_CHUNK: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// The directory that becomes /usr.
    pub usr_tree: PathBuf,
    pub os: String,
    pub sizes: LayoutSizes,
    pub output: PathBuf,
    pub disk_guid: Guid,
    /// Every timestamp in /usr (SOURCE_DATE_EPOCH).
    pub epoch: u64,
}

/// A value derived from `seed` and a purpose, so that a build is reproducible and
/// different images still get different identifiers and salts.
fn derive(seed: &[u8], purpose: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(purpose.as_bytes());
    hash.update([0]);
    hash.update(seed);
    hash.finalize().into()
}

fn derive_guid(seed: &[u8], purpose: &str) -> Guid {
    let bytes = derive(seed, purpose);
    let mut first = [0u8; 16];
    first.copy_from_slice(&bytes[..16]);
    Guid::from_random_bytes(first)
}

/// The most data blocks that fit in `partition_bytes` together with a superblock and the
/// hash tree that covers them.
pub fn usr_data_blocks(partition_bytes: u64) -> anyhow::Result<u64> {
    let total = partition_bytes / BLOCK_SIZE;
    let tree_blocks = |data: u64| Geometry::new(&VerityParams::new(data, Vec::new())).map(|g| g.tree_blocks());
    // The tree is under 1/100 of the data, so start just below the answer and climb.
    let mut data = total.saturating_sub(total / 100 + 2).max(1);
    ensure!(data + 1 + tree_blocks(data)? <= total, "a USR partition of {partition_bytes} bytes cannot hold a filesystem and its hash tree");
    while data + 2 + tree_blocks(data + 1)? <= total {
        data += 1;
    }
    Ok(data)
}

/// Builds the image at `spec.output` and returns its manifest.
pub fn build(spec: &ImageSpec) -> anyhow::Result<ImageManifest> {
    ensure!(spec.usr_tree.is_dir(), "{} is not a directory", spec.usr_tree.display());
    let seed = format!("{}:{}:{}", spec.disk_guid, spec.os, spec.epoch);
    let layout = plan_layout(&flatcar_layout(&spec.sizes)?, |partition| {
        derive_guid(seed.as_bytes(), &format!("partition {}", partition.number))
    })?;
    let usr_partition = layout.by_name("USR-A").context("the layout has no USR-A")?.clone();

    let data_blocks = usr_data_blocks(usr_partition.size_bytes())?;
    let fs_path = spec.output.with_extension("usr.ext4");
    let fs_uuid = derive_guid(seed.as_bytes(), "usr filesystem");
    usrfs::make_ext4(&spec.usr_tree, &fs_path, data_blocks, "USR-A", &fs_uuid.to_string(), spec.epoch)?;
    let result = write_image(spec, &layout, &usr_partition, &fs_path, data_blocks);
    let _ = std::fs::remove_file(&fs_path);
    result
}

fn write_image(
    spec: &ImageSpec,
    layout: &keel_disk::PlannedLayout,
    usr_partition: &keel_disk::GptPartition,
    fs_path: &Path,
    data_blocks: u64,
) -> anyhow::Result<ImageManifest> {
    // The salt comes from the filesystem's bytes: reproducible, yet unique to this /usr.
    let mut fs_hash = Sha256::new();
    std::io::copy(&mut File::open(fs_path)?, &mut HashWriter(&mut fs_hash)).context("cannot read the /usr filesystem")?;
    let salt = derive(&fs_hash.finalize(), "verity salt").to_vec();
    let params = VerityParams::new(data_blocks, salt);
    let hash_offset = data_blocks * BLOCK_SIZE;
    let verity_uuid: [u8; 16] = derive_guid(&params.salt, "verity uuid").0;
    let mut hash_area = Cursor::new(Vec::new());
    let formatted = format_hash_area(&File::open(fs_path)?, &params, Some(verity_uuid), &mut hash_area, 0)?;
    ensure!(hash_offset + formatted.end <= usr_partition.size_bytes(), "the hash area does not fit in USR-A");

    let output = &spec.output;
    let file = File::create(output).with_context(|| format!("cannot create {}", output.display()))?;
    file.set_len(layout.disk_bytes).with_context(|| format!("cannot size {}", output.display()))?;
    let mut image = OpenOptions::new().read(true).write(true).open(output)?;
    write_gpt(&mut image, spec.disk_guid, &layout.partitions)?;
    let usr_start = usr_partition.start_bytes();
    copy_sparse(&mut File::open(fs_path)?, &mut image, usr_start).context("cannot write /usr into USR-A")?;
    image.seek(SeekFrom::Start(usr_start + hash_offset))?;
    image.write_all(hash_area.get_ref()).context("cannot write the hash area into USR-A")?;
    image.sync_all().with_context(|| format!("cannot flush {}", output.display()))?;

    Ok(ImageManifest {
        os: spec.os.clone(),
        usr: UsrImage { filesystem: "ext4".into(), hash_offset, root_hash: formatted.root, verity: params },
    })
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Copies `from` into `to` at `offset`, seeking over all-zero chunks (the target is new
/// and reads as zeros there), so a mostly empty filesystem stays sparse in the image.
fn copy_sparse(from: &mut impl Read, to: &mut (impl Write + Seek), offset: u64) -> std::io::Result<()> {
    let mut chunk = vec![0u8; COPY_CHUNK];
    let mut at = offset;
    loop {
        let mut filled = 0;
        while filled < chunk.len() {
            match from.read(&mut chunk[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            return Ok(());
        }
        if chunk[..filled].iter().any(|&b| b != 0) {
            to.seek(SeekFrom::Start(at))?;
            to.write_all(&chunk[..filled])?;
        }
        at += filled as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usr_data_fills_the_partition_like_flatcar() {
        // Flatcar puts the hash area at byte 1065345024 of its 1 GiB USR-A.
        assert_eq!(usr_data_blocks(1 << 30).unwrap() * BLOCK_SIZE, 1065345024);
        for mib in [4u64, 8, 64, 100] {
            let bytes = mib << 20;
            let data = usr_data_blocks(bytes).unwrap();
            let tree = Geometry::new(&VerityParams::new(data, vec![])).unwrap().tree_blocks();
            assert!(data + 1 + tree <= bytes / BLOCK_SIZE);
            let bigger = Geometry::new(&VerityParams::new(data + 1, vec![])).unwrap().tree_blocks();
            assert!(data + 2 + bigger > bytes / BLOCK_SIZE, "{mib} MiB: one more block would still fit");
        }
    }
}
