//! What keel's builders ship, and how it was made: an SPDX 2.3 JSON SBOM (`<OUTPUT>.spdx.json`)
//! and an in-toto statement with a SLSA v1 provenance predicate (`<OUTPUT>.intoto.json`)
//! beside each output of `keel initrd build` and `keel image build`.
//!
//! The documents are functions of their inputs' bytes: no clock (the creation time is the
//! build's epoch), no host names, no absolute build directories, so the same inputs built in
//! two directories give the same bytes. Origins are measured where the builder runs: dpkg's
//! database for host programs and libraries (`dpkg`), the kernel package's control data for
//! modules (`kernel`), cargo-auditable's section in keel's binaries for their crates
//! (`auditable`).

pub mod auditable;
pub mod dpkg;
pub mod image;
pub mod initrd;
pub mod kernel;
pub mod provenance;
pub mod spdx;

pub use auditable::{linked_crates, Crate, LinkedCrates};
pub use dpkg::{DebPackage, Distro, DpkgDatabase};
pub use provenance::{Provenance, ResolvedDependency};
pub use spdx::{Node, Package, Purpose, Sbom, SbomFile};

use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// keel's version, as the documents name the tool that wrote them.
pub const KEEL_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The base of every URI keel mints (document namespaces, build types, builder ids). keel
/// has no domain of its own; `.invalid` is reserved never to resolve (RFC 2606), so none of
/// these can ever point at someone else's page.
pub const KEEL_URI: &str = "https://keel.invalid";

/// The SHA-256 and SHA-1 of some bytes, in lower-case hex. SPDX 2.3 requires SHA-1 for
/// every file; SHA-256 is what the rest of keel and the provenance use.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Digests {
    pub sha256: String,
    pub sha1: String,
}

impl Digests {
    pub fn of(bytes: &[u8]) -> Digests {
        Digests { sha256: hex(&Sha256::digest(bytes)), sha1: hex(&Sha1::digest(bytes)) }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Where a document about `output` goes: `initrd.img` → `initrd.img.spdx.json` with
/// `suffix` `spdx.json`.
pub fn beside(output: &Path, suffix: &str) -> PathBuf {
    let mut name = output.as_os_str().to_os_string();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// The SBOM's file name beside `output`.
pub fn sbom_path(output: &Path) -> PathBuf {
    beside(output, "spdx.json")
}

/// The provenance's file name beside `output`.
pub fn provenance_path(output: &Path) -> PathBuf {
    beside(output, "intoto.json")
}

/// `path` as a document may name it: relative to `base` (the directory the build ran in)
/// when it is below it, as given otherwise. A document never holds the absolute path of a
/// build directory, so two checkouts of one build agree.
pub fn portable_path(path: &Path, base: &Path) -> String {
    let relative = if path.is_absolute() { path.strip_prefix(base).unwrap_or(path) } else { path };
    relative.to_string_lossy().to_string()
}

/// The build's epoch: `SOURCE_DATE_EPOCH` when it is set to a number, else 0.
pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|value| value.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_below_the_build_directory_become_relative() {
        assert_eq!(portable_path(Path::new("/build/a/disk.json"), Path::new("/build/a")), "disk.json");
        assert_eq!(portable_path(Path::new("/var/cache/modules"), Path::new("/build/a")), "/var/cache/modules");
        assert_eq!(portable_path(Path::new("out/initrd.img"), Path::new("/build/a")), "out/initrd.img");
    }

    #[test]
    fn documents_go_beside_their_output() {
        assert_eq!(sbom_path(Path::new("out/initrd.img")), Path::new("out/initrd.img.spdx.json"));
        assert_eq!(provenance_path(Path::new("disk.img")), Path::new("disk.img.intoto.json"));
    }

    #[test]
    fn digests_are_the_reference_tools() {
        let digests = Digests::of(b"abc");
        assert_eq!(digests.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(digests.sha1, "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
