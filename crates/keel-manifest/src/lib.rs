//! The image manifest: written by `keel image build`, baked into the initrd by
//! `keel initrd build`, and read by keel-init, which trusts nothing about /usr that this
//! file does not promise. It is the only thing that connects a disk image to its initrd.

use anyhow::{bail, Context};
/// The type of `ImageManifest::sector_size`, for users of the manifest.
pub use keel_disk::SectorSize;
use keel_verity::{decode_hex, encode_hex, Digest, HashAlgorithm, HashType, VerityParams};
use serde_json::{json, Value};

/// Where the initrd holds the manifest.
pub const INITRD_MANIFEST_PATH: &str = "/etc/keel/image.json";
/// Where the initrd lists its kernel modules, one path per line, dependencies first.
pub const INITRD_MODULES_PATH: &str = "/etc/keel/modules";
/// Where the initrd keeps its storage drivers (`keel_kmod::DriverTable`): loaded by
/// keel-init only when a device's modalias asks for them.
pub const INITRD_DRIVERS_PATH: &str = "/etc/keel/drivers";
/// Module lists like INITRD_MODULES_PATH that keel-init loads only when a boot needs them,
/// so a boot loads only those it uses: one per filesystem keel-init may mount besides the
/// kernel's own, named by its mount type (`xfs` for a ROOT of xfs, whose list's presence says
/// the initrd supports it; `vfat` for the ESP), and FW_CFG_MODULES.
pub const INITRD_ON_DEMAND_MODULES_DIR: &str = "/etc/keel/modules.d";
/// The list of QEMU's firmware-config driver: only first boot reads fw_cfg, for Ignition's
/// platform and config.
pub const FW_CFG_MODULES: &str = "qemu_fw_cfg";
/// Where the initrd holds its mkfs programs: see `initrd_mkfs_path`.
pub const INITRD_MKFS_DIR: &str = "/usr/sbin";
/// Where the initrd holds Ignition's base configs, in Ignition's layout: `base.d/*.ign`,
/// then `base.platform.d/<platform>/*.ign`, each group in file-name order.
pub const INITRD_IGNITION_DIR: &str = "/usr/lib/ignition";
/// The root filesystems keel can format and grow.
pub const ROOT_FILESYSTEMS: [&str; 3] = ["ext4", "xfs", "btrfs"];
/// The formats keel-init can make on first boot (Ignition's `storage.filesystems[].format`),
/// each when the initrd holds its program: the root filesystems and what else a config may ask for.
pub const MKFS_FORMATS: [&str; 5] = ["ext4", "xfs", "btrfs", "vfat", "swap"];

/// Where the initrd holds the program that makes a `format` filesystem (one of MKFS_FORMATS).
/// Named after the format whatever the build host calls the program (mkswap, mkfs.fat), so
/// keel-init finds it without knowing the host's names; its absence says the initrd cannot
/// make that format.
pub fn initrd_mkfs_path(format: &str) -> String {
    format!("{INITRD_MKFS_DIR}/mkfs.{format}")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageManifest {
    /// The OS name: /usr/share/<os>/etc is the lower layer of /etc.
    pub os: String,
    /// The disk image's size in bytes. Written to a bigger disk, the image keeps its backup
    /// GPT in its own last sector until first boot moves it: the one place besides the
    /// disk's end where keel-init looks for it.
    pub image_bytes: u64,
    /// The logical sector size the image's partition table was made for: it boots only
    /// from a disk that presents sectors of this size.
    pub sector_size: SectorSize,
    pub usr: UsrImage,
}

/// One USR partition's content: a filesystem with its verity hash area after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsrImage {
    pub filesystem: String,
    /// Byte offset of the verity superblock in the partition: the filesystem's size.
    pub hash_offset: u64,
    pub root_hash: Digest,
    pub verity: VerityParams,
}

impl ImageManifest {
    pub fn to_json(&self) -> String {
        let usr = &self.usr;
        let value = json!({
            "os": self.os,
            "image_bytes": self.image_bytes,
            "sector_size": self.sector_size.bytes(),
            "usr": {
                "filesystem": usr.filesystem,
                "hash_offset": usr.hash_offset,
                "root_hash": encode_hex(&usr.root_hash),
                "hash_algorithm": usr.verity.algorithm.name(),
                "hash_type": usr.verity.hash_type.number(),
                "data_block_size": usr.verity.data_block_size,
                "hash_block_size": usr.verity.hash_block_size,
                "data_blocks": usr.verity.data_blocks,
                "salt": encode_hex(&usr.verity.salt),
            }
        });
        // Pretty and newline-terminated: image builders read and diff these files.
        format!("{value:#}\n")
    }

    pub fn from_json(text: &str) -> anyhow::Result<ImageManifest> {
        let value: Value = serde_json::from_str(text).context("the image manifest is not JSON")?;
        let usr = value.get("usr").context("the image manifest has no \"usr\" object")?;
        let params = VerityParams {
            algorithm: HashAlgorithm::from_name(string(usr, "hash_algorithm")?)?,
            hash_type: HashType::from_number(u32_field(usr, "hash_type")?)?,
            data_block_size: u32_field(usr, "data_block_size")?,
            hash_block_size: u32_field(usr, "hash_block_size")?,
            data_blocks: u64_field(usr, "data_blocks")?,
            salt: decode_hex(string(usr, "salt")?, "usr.salt")?,
        };
        params.validate()?;
        let root_hash = decode_hex(string(usr, "root_hash")?, "usr.root_hash")?;
        let os = string(&value, "os")?;
        if os.is_empty() || os.contains('/') || os.starts_with('.') {
            bail!("os {os:?} cannot name a directory under /usr/share");
        }
        if root_hash.len() != params.digest_size() {
            bail!("usr.root_hash has {} bytes, but a {} digest has {}", root_hash.len(), params.algorithm.name(), params.digest_size());
        }
        // Manifests from before keel built 4096-byte-sector images have no sector size.
        let sector_size = match value.get("sector_size") {
            None => SectorSize::Bytes512,
            Some(_) => SectorSize::new(u64_field(&value, "sector_size")?).context("sector_size")?,
        };
        let image_bytes = u64_field(&value, "image_bytes")?;
        if image_bytes == 0 || !image_bytes.is_multiple_of(sector_size.bytes()) {
            bail!("image_bytes {image_bytes} is not a whole number of {sector_size}");
        }
        Ok(ImageManifest {
            os: os.to_string(),
            image_bytes,
            sector_size,
            usr: UsrImage {
                filesystem: string(usr, "filesystem")?.to_string(),
                hash_offset: u64_field(usr, "hash_offset")?,
                root_hash,
                verity: params,
            },
        })
    }
}

fn string<'a>(object: &'a Value, key: &str) -> anyhow::Result<&'a str> {
    object.get(key).and_then(Value::as_str).with_context(|| format!("the image manifest has no string {key:?}"))
}

fn u64_field(object: &Value, key: &str) -> anyhow::Result<u64> {
    object.get(key).and_then(Value::as_u64).with_context(|| format!("the image manifest has no whole number {key:?}"))
}

fn u32_field(object: &Value, key: &str) -> anyhow::Result<u32> {
    u32::try_from(u64_field(object, key)?).with_context(|| format!("{key} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ImageManifest {
        ImageManifest {
            os: "keel".into(),
            image_bytes: 2 << 30,
            sector_size: SectorSize::Bytes4096,
            usr: UsrImage {
                filesystem: "ext4".into(),
                hash_offset: 1065345024,
                root_hash: vec![0xab; 32],
                verity: VerityParams::new(260094, vec![1, 2, 3]),
            },
        }
    }

    #[test]
    fn every_root_filesystem_can_be_made() {
        for filesystem in ROOT_FILESYSTEMS {
            assert!(MKFS_FORMATS.contains(&filesystem), "{filesystem}");
        }
        assert_eq!(initrd_mkfs_path("swap"), "/usr/sbin/mkfs.swap");
    }

    #[test]
    fn round_trips() {
        for sector_size in SectorSize::ALL {
            let manifest = ImageManifest { sector_size, ..sample() };
            assert_eq!(ImageManifest::from_json(&manifest.to_json()).unwrap(), manifest);
        }
    }

    #[test]
    fn a_manifest_without_a_sector_size_is_of_a_512_byte_sector_image() {
        let mut old: Value = serde_json::from_str(&sample().to_json()).unwrap();
        old.as_object_mut().unwrap().remove("sector_size");
        assert_eq!(ImageManifest::from_json(&old.to_string()).unwrap().sector_size, SectorSize::Bytes512);
    }

    #[test]
    fn rejects_broken_manifests_with_the_field_named() {
        let good: Value = serde_json::from_str(&sample().to_json()).unwrap();
        for (pointer, bad, word) in [
            ("/usr/root_hash", json!("abcd"), "root_hash"),
            ("/usr/salt", json!("xyz"), "salt"),
            ("/usr/hash_algorithm", json!("md5"), "md5"),
            ("/usr/hash_algorithm", json!("sha512"), "root_hash has 32 bytes, but a sha512 digest has 64"),
            ("/usr/data_block_size", json!(1000), "block size"),
            ("/usr/data_blocks", json!(-1), "data_blocks"),
            ("/os", json!("../etc"), "os"),
            ("/image_bytes", json!(1000), "image_bytes"),
            ("/image_bytes", json!("big"), "image_bytes"),
            ("/image_bytes", json!(4096 + 512), "not a whole number of 4096-byte sectors"),
            ("/sector_size", json!(2048), "512 and 4096"),
            ("/sector_size", json!("4096"), "sector_size"),
        ] {
            let mut broken = good.clone();
            *broken.pointer_mut(pointer).unwrap() = bad;
            let error = format!("{:#}", ImageManifest::from_json(&broken.to_string()).unwrap_err());
            assert!(error.contains(word), "{pointer}: {error}");
        }
        assert!(ImageManifest::from_json("not json").is_err());
    }
}
