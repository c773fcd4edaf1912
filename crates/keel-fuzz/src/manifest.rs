//! `keel_manifest::ImageManifest::from_json` on any text, taken as keel-init takes
//! /etc/keel/image.json (`read_to_string`: bytes that are not UTF-8 never get this far).
//! Held to: what parses has verity parameters that validate and a root hash of the
//! digest's size, and `to_json` then `from_json` gives it back, with the same JSON.

use crate::Seed;
use keel_manifest::{ImageManifest, SectorSize, UsrImage};
use keel_verity::{HashAlgorithm, HashType, VerityParams};

pub fn run(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else { return };
    let Ok(manifest) = ImageManifest::from_json(text) else { return };
    let usr = &manifest.usr;
    if let Err(error) = usr.verity.validate() {
        panic!("a manifest was accepted with verity parameters that do not validate ({error}): {manifest:?}");
    }
    assert_eq!(usr.root_hash.len(), usr.verity.digest_size(), "a root hash of the wrong size was accepted");
    let json = manifest.to_json();
    let reread = ImageManifest::from_json(&json).unwrap_or_else(|error| panic!("a manifest's own JSON does not read ({error:#}):\n{json}"));
    assert_eq!(reread, manifest, "a manifest read back from its own JSON differs");
    assert_eq!(reread.to_json(), json, "a manifest's JSON changed on the second round");
}

pub fn seeds() -> Vec<Seed> {
    // As `keel image build` writes it for Flatcar's 1 GiB USR-A.
    let flatcar = ImageManifest {
        os: "flatcar".into(),
        image_bytes: 4_743_757_824,
        sector_size: SectorSize::Bytes512,
        usr: UsrImage {
            filesystem: "ext4".into(),
            hash_offset: 1065345024,
            root_hash: (0..32).map(|i| i * 7 + 3).collect(),
            verity: VerityParams::new(260094, (0..32).map(|i| 255 - i).collect()),
        },
    };
    let chromeos = ImageManifest {
        os: "keel".into(),
        image_bytes: 134_217_728,
        sector_size: SectorSize::Bytes4096,
        usr: UsrImage {
            filesystem: "squashfs".into(),
            hash_offset: 4096,
            root_hash: vec![0xee; 64],
            verity: VerityParams {
                algorithm: HashAlgorithm::Sha512,
                hash_type: HashType::ChromeOs,
                data_block_size: 512,
                hash_block_size: 65536,
                data_blocks: 8,
                salt: Vec::new(),
            },
        },
    };
    vec![
        Seed { name: "flatcar.json", bytes: flatcar.to_json().into_bytes() },
        Seed { name: "sha512-chromeos.json", bytes: chromeos.to_json().into_bytes() },
    ]
}
