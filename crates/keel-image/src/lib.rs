//! `keel image build`: a raw GPT disk image in Flatcar's layout whose USR-A holds a
//! read-only ext4 of a /usr tree followed by its dm-verity hash area, and the manifest
//! that ties the image to its initrd.
//!
//! The image is for disks of one logical sector size, 512 or 4096 bytes: its partition
//! table counts in those sectors and its ESP's FAT is made of them (Linux mounts a FAT only
//! on a device whose logical sectors are no bigger than the FAT's own). Everything else
//! lies at the same byte offsets at either size.
//!
//! The ESP is vfat holding Flatcar's first-boot flag, so keel-init knows a new machine.
//! ROOT ships blank (all zero, and sparse in the file): keel-init formats it on first
//! boot, so every machine gets its own filesystem UUID, the image carries no filesystem
//! that first boot would have to grow, and a blank ROOT exercises the same path as a
//! freshly wiped one.
//!
//! OEM is blank too unless the builder gives a vendor tree (`--oem DIR`: the Ignition
//! `config.ign`, `base/*.ign` and whatever else a platform needs); then it holds an ext4
//! labelled `OEM` made from that tree as /usr's is, its files owned by root.

mod esp;
mod ext4;

use anyhow::{ensure, Context};
use ext4::{Contents, Ext4};
use keel_disk::{flatcar_layout, plan_layout, write_gpt, Guid, LayoutSizes, SectorSize};
use keel_manifest::{ImageManifest, UsrImage};
use keel_verity::{format_hash_area, tree_start_block, Geometry, HashAlgorithm, HashType, MappedFile, VerityParams};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const BLOCK_SIZE: u64 = 4096;
/// Zero runs this long are skipped when writing, so the image file stays sparse.
const COPY_CHUNK: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// The directory that becomes /usr (USR-A).
    pub usr_tree: PathBuf,
    /// The directory that becomes USR-B's /usr; without it USR-B is blank, as Flatcar
    /// ships it until an update writes it.
    pub usr_b_tree: Option<PathBuf>,
    /// The directory that becomes the OEM partition's filesystem; without it OEM is blank.
    pub oem_tree: Option<PathBuf>,
    pub os: String,
    pub sizes: LayoutSizes,
    /// The logical sector size of the disks the image is for.
    pub sector_size: SectorSize,
    pub output: PathBuf,
    pub disk_guid: Guid,
    /// Every timestamp in /usr (SOURCE_DATE_EPOCH).
    pub epoch: u64,
    pub verity: VerityLayout,
}

impl ImageSpec {
    /// What every derived identifier and salt starts from.
    fn seed(&self) -> String {
        format!("{}:{}:{}", self.disk_guid, self.os, self.epoch)
    }
}

/// How /usr's hash tree is built. The kernel needs both block sizes at most a page (4096).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerityLayout {
    pub algorithm: HashAlgorithm,
    pub hash_type: HashType,
    pub data_block_size: u32,
    pub hash_block_size: u32,
}

impl Default for VerityLayout {
    /// veritysetup's defaults.
    fn default() -> Self {
        VerityLayout { algorithm: HashAlgorithm::Sha256, hash_type: HashType::Normal, data_block_size: 4096, hash_block_size: 4096 }
    }
}

impl VerityLayout {
    fn params(&self, filesystem_bytes: u64, salt: Vec<u8>) -> VerityParams {
        VerityParams {
            algorithm: self.algorithm,
            hash_type: self.hash_type,
            data_block_size: self.data_block_size,
            hash_block_size: self.hash_block_size,
            data_blocks: filesystem_bytes / u64::from(self.data_block_size),
            salt,
        }
    }
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

/// The largest /usr filesystem, in 4 KiB blocks, that fits in `partition_bytes` together
/// with the superblock and hash tree that cover it.
pub fn usr_filesystem_blocks(partition_bytes: u64, layout: &VerityLayout) -> anyhow::Result<u64> {
    ensure!(
        layout.data_block_size <= BLOCK_SIZE as u32 && layout.hash_block_size <= BLOCK_SIZE as u32,
        "the kernel's dm-verity takes block sizes of at most {BLOCK_SIZE}"
    );
    let fits = |blocks: u64| -> anyhow::Result<bool> {
        let bytes = blocks * BLOCK_SIZE;
        let params = layout.params(bytes, Vec::new());
        let tree_start = tree_start_block(bytes, layout.hash_block_size, true) * u64::from(layout.hash_block_size);
        Ok(tree_start + Geometry::new(&params)?.tree_bytes() <= partition_bytes)
    };
    ensure!(fits(1)?, "a USR partition of {partition_bytes} bytes cannot hold a filesystem and its hash tree");
    // Binary search for the last size that fits: more data never needs a smaller tree.
    let (mut low, mut high) = (1, partition_bytes / BLOCK_SIZE);
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        if fits(middle)? {
            low = middle
        } else {
            high = middle - 1
        }
    }
    Ok(low)
}

/// A /usr slot of the image: USR-A, or USR-B (which an update writes; the image may ship
/// it filled for a second /usr of its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    /// The partition's name in the layout, and what `mount.usr=PARTLABEL=` names.
    pub fn partition_name(self) -> &'static str {
        match self {
            Slot::A => "USR-A",
            Slot::B => "USR-B",
        }
    }
}

/// A file put on the ESP: its path there (`EFI/BOOT/BOOTX64.EFI`) and where it is now.
#[derive(Clone, Debug)]
pub struct EspFile {
    pub path: String,
    pub source: PathBuf,
}

/// One /usr slot built: its filesystem in a file beside the output, the hash area that
/// follows it in the partition, and what an initrd for it must trust.
struct BuiltSlot {
    slot: Slot,
    partition: keel_disk::GptPartition,
    filesystem: PathBuf,
    hash_area: Vec<u8>,
    manifest: ImageManifest,
}

/// An image whose /usr slots are built and whose manifests are known, not yet written:
/// what goes on the ESP (the UKIs, each with an initrd made from its slot's manifest)
/// can depend on them.
pub struct PreparedImage {
    spec: ImageSpec,
    layout: keel_disk::PlannedLayout,
    slots: Vec<BuiltSlot>,
}

impl Drop for PreparedImage {
    fn drop(&mut self) {
        for slot in &self.slots {
            let _ = std::fs::remove_file(&slot.filesystem);
        }
    }
}

/// Builds `spec`'s /usr slots (USR-A, and USR-B when it has a tree).
pub fn prepare(spec: &ImageSpec) -> anyhow::Result<PreparedImage> {
    ensure!(spec.usr_tree.is_dir(), "{} is not a directory", spec.usr_tree.display());
    if let Some(usr_b_tree) = &spec.usr_b_tree {
        ensure!(usr_b_tree.is_dir(), "{} (USR-B's tree) is not a directory", usr_b_tree.display());
    }
    if let Some(oem_tree) = &spec.oem_tree {
        ensure!(oem_tree.is_dir(), "{} (the OEM tree) is not a directory", oem_tree.display());
    }
    let smallest_block = spec.verity.data_block_size.min(spec.verity.hash_block_size);
    // dm-verity refuses blocks smaller than its devices' logical sectors.
    ensure!(
        u64::from(smallest_block) >= spec.sector_size.bytes(),
        "a verity block size of {smallest_block} bytes is smaller than the image's {}: the kernel refuses it on such a disk",
        spec.sector_size
    );
    let seed = spec.seed();
    let layout = plan_layout(&flatcar_layout(&spec.sizes)?, spec.sector_size, |partition| {
        derive_guid(seed.as_bytes(), &format!("partition {}", partition.number))
    })?;
    let mut prepared = PreparedImage { spec: spec.clone(), layout, slots: Vec::new() };
    let trees = [(Slot::A, Some(&spec.usr_tree)), (Slot::B, spec.usr_b_tree.as_ref())];
    for (slot, tree) in trees {
        if let Some(tree) = tree {
            let built = build_slot(spec, &prepared.layout, slot, tree)?;
            prepared.slots.push(built);
        }
    }
    Ok(prepared)
}

/// Builds the image at `spec.output` with nothing more on the ESP than the first-boot
/// flag, and returns USR-A's manifest.
pub fn build(spec: &ImageSpec) -> anyhow::Result<ImageManifest> {
    let prepared = prepare(spec)?;
    let manifest = prepared.manifest(Slot::A).context("USR-A was not built")?.clone();
    prepared.write(&[])?;
    Ok(manifest)
}

fn build_slot(spec: &ImageSpec, layout: &keel_disk::PlannedLayout, slot: Slot, tree: &Path) -> anyhow::Result<BuiltSlot> {
    let name = slot.partition_name();
    let partition = layout.by_name(name).with_context(|| format!("the layout has no {name}"))?.clone();
    let fs_blocks = usr_filesystem_blocks(partition.size_bytes(layout.sector_size), &spec.verity)?;
    let filesystem = spec.output.with_extension(format!("{}.ext4", name.to_lowercase()));
    // USR-A keeps the purposes it always had, so its bytes do not change with USR-B.
    let purpose = |what: &str| if slot == Slot::A { format!("usr {what}") } else { format!("{} {what}", name.to_lowercase()) };
    let fs_uuid = derive_guid(spec.seed().as_bytes(), &purpose("filesystem"));
    let usr = Ext4 { tree, blocks: fs_blocks, label: name, uuid: &fs_uuid.to_string(), epoch: spec.epoch, contents: Contents::System };
    ext4::make_ext4(&usr, &filesystem)?;
    let hashed = hash_slot(spec, &filesystem, fs_blocks * BLOCK_SIZE, &partition, layout.sector_size);
    let (hash_area, usr_image) = match hashed {
        Ok(hashed) => hashed,
        Err(error) => {
            let _ = std::fs::remove_file(&filesystem);
            return Err(error.context(format!("cannot hash {name}")));
        }
    };
    let manifest = ImageManifest { os: spec.os.clone(), image_bytes: layout.disk_bytes, sector_size: layout.sector_size, usr: usr_image };
    Ok(BuiltSlot { slot, partition, filesystem, hash_area, manifest })
}

/// The hash area of the /usr filesystem at `fs_path` and what its manifest records.
fn hash_slot(
    spec: &ImageSpec,
    fs_path: &Path,
    fs_bytes: u64,
    partition: &keel_disk::GptPartition,
    sector_size: SectorSize,
) -> anyhow::Result<(Vec<u8>, UsrImage)> {
    // The salt comes from the filesystem's bytes: reproducible, yet unique to this /usr.
    let mut fs_hash = Sha256::new();
    std::io::copy(&mut File::open(fs_path)?, &mut HashWriter(&mut fs_hash)).context("cannot read the /usr filesystem")?;
    let salt = derive(&fs_hash.finalize(), "verity salt").to_vec();
    let params = spec.verity.params(fs_bytes, salt);
    let hash_offset = fs_bytes;
    let verity_uuid: [u8; 16] = derive_guid(&params.salt, "verity uuid").0;
    let mut hash_area = Cursor::new(Vec::new());
    let filesystem = MappedFile::new(File::open(fs_path)?).context("cannot map the /usr filesystem")?;
    let formatted = format_hash_area(&filesystem, &params, Some(verity_uuid), &mut hash_area, 0)?;
    ensure!(hash_offset + formatted.end <= partition.size_bytes(sector_size), "the hash area does not fit in {}", partition.name);
    Ok((hash_area.into_inner(), UsrImage { filesystem: "ext4".into(), hash_offset, root_hash: formatted.root, verity: params }))
}

impl PreparedImage {
    /// What an initrd for `slot` must trust; None when the slot ships blank.
    pub fn manifest(&self, slot: Slot) -> Option<&ImageManifest> {
        self.slots.iter().find(|built| built.slot == slot).map(|built| &built.manifest)
    }

    /// The slots built, USR-A first.
    pub fn slots(&self) -> Vec<Slot> {
        self.slots.iter().map(|built| built.slot).collect()
    }

    /// Writes the image: the table, the ESP with the first-boot flag and `esp_files`, OEM,
    /// and each built slot's filesystem and hash area.
    pub fn write(self, esp_files: &[EspFile]) -> anyhow::Result<()> {
        let (spec, layout) = (&self.spec, &self.layout);
        let output = &spec.output;
        let file = File::create(output).with_context(|| format!("cannot create {}", output.display()))?;
        file.set_len(layout.disk_bytes).with_context(|| format!("cannot size {}", output.display()))?;
        let mut image = OpenOptions::new().read(true).write(true).open(output)?;
        write_gpt(&mut image, layout.sector_size, spec.disk_guid, &layout.partitions)?;
        write_esp(spec, layout, esp_files, &mut image)?;
        if let Some(oem_tree) = &spec.oem_tree {
            write_oem(spec, oem_tree, layout, &mut image)?;
        }
        for slot in &self.slots {
            let name = slot.slot.partition_name();
            let start = slot.partition.start_bytes(layout.sector_size);
            copy_sparse(&mut File::open(&slot.filesystem)?, &mut image, start).with_context(|| format!("cannot write /usr into {name}"))?;
            image.seek(SeekFrom::Start(start + slot.manifest.usr.hash_offset))?;
            image.write_all(&slot.hash_area).with_context(|| format!("cannot write the hash area into {name}"))?;
        }
        image.sync_all().with_context(|| format!("cannot flush {}", output.display()))
    }
}

fn write_esp(spec: &ImageSpec, layout: &keel_disk::PlannedLayout, files: &[EspFile], image: &mut File) -> anyhow::Result<()> {
    let esp = layout.by_name("EFI-SYSTEM").context("the layout has no EFI-SYSTEM")?;
    let esp_path = spec.output.with_extension("esp.vfat");
    let file = File::create(&esp_path).with_context(|| format!("cannot create {}", esp_path.display()))?;
    file.set_len(esp.size_bytes(layout.sector_size)).with_context(|| format!("cannot size {}", esp_path.display()))?;
    let id = derive(spec.seed().as_bytes(), "esp volume id");
    let result = esp::make_esp(&esp_path, u32::from_le_bytes([id[0], id[1], id[2], id[3]]), spec.epoch, layout.sector_size, files).and_then(|()| {
        copy_sparse(&mut File::open(&esp_path)?, image, esp.start_bytes(layout.sector_size)).context("cannot write the ESP into the image")
    });
    let _ = std::fs::remove_file(&esp_path);
    result
}

fn write_oem(spec: &ImageSpec, oem_tree: &Path, layout: &keel_disk::PlannedLayout, image: &mut File) -> anyhow::Result<()> {
    let oem = layout.by_name("OEM").context("the layout has no OEM")?;
    let fs_path = spec.output.with_extension("oem.ext4");
    let uuid = derive_guid(spec.seed().as_bytes(), "oem filesystem").to_string();
    let filesystem = Ext4 {
        tree: oem_tree,
        blocks: oem.size_bytes(layout.sector_size) / BLOCK_SIZE,
        label: "OEM",
        uuid: &uuid,
        epoch: spec.epoch,
        contents: Contents::Vendor,
    };
    let result = ext4::make_ext4(&filesystem, &fs_path).and_then(|()| {
        copy_sparse(&mut File::open(&fs_path)?, image, oem.start_bytes(layout.sector_size)).context("cannot write the OEM filesystem into the image")
    });
    let _ = std::fs::remove_file(&fs_path);
    result
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
    fn usr_fills_the_partition_like_flatcar() {
        // Flatcar puts the hash area at byte 1065345024 of its 1 GiB USR-A.
        assert_eq!(usr_filesystem_blocks(1 << 30, &VerityLayout::default()).unwrap() * BLOCK_SIZE, 1065345024);
        let sha512 = VerityLayout { algorithm: HashAlgorithm::Sha512, hash_block_size: 1024, data_block_size: 512, ..VerityLayout::default() };
        for layout in [VerityLayout::default(), sha512] {
            for mib in [4u64, 8, 64, 100] {
                let bytes = mib << 20;
                let blocks = usr_filesystem_blocks(bytes, &layout).unwrap();
                let end = |blocks: u64| {
                    let params = layout.params(blocks * BLOCK_SIZE, Vec::new());
                    tree_start_block(blocks * BLOCK_SIZE, layout.hash_block_size, true) * u64::from(layout.hash_block_size)
                        + Geometry::new(&params).unwrap().tree_bytes()
                };
                assert!(end(blocks) <= bytes && end(blocks + 1) > bytes, "{mib} MiB, {layout:?}");
            }
        }
        assert!(usr_filesystem_blocks(1 << 30, &VerityLayout { hash_block_size: 8192, ..VerityLayout::default() }).is_err());
    }
}
