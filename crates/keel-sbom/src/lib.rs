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
pub use spdx::{ExternalDocument, Node, Package, Purpose, Sbom, SbomFile};

use anyhow::Context;
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

/// keel-ignition's, which every digest of keel's builders and Ignition's hash checks share.
pub use keel_ignition::apply::sha256_hex;
pub use keel_ignition::resource::encode_hex as hex;

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

/// `path` from the root of the file system, as dpkg's database names files.
pub(crate) fn absolute(path: &Path) -> String {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).to_string_lossy().to_string()
}

/// 9999-12-31T23:59:59Z: SPDX's creation time is an RFC 3339 time of four-digit years, and
/// validators refuse a document from year 10000.
pub const MAX_EPOCH: u64 = 253_402_300_799;

/// The variable reproducible builds take their time from.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// A build's epoch as given (`SOURCE_DATE_EPOCH`, `--epoch`): decimal seconds since 1970, no
/// sign, at most `MAX_EPOCH`. The one parser of both, so both refuse the same text.
pub fn parse_epoch(text: &str) -> anyhow::Result<u64> {
    anyhow::ensure!(
        !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()),
        "{text:?} is not a whole number of seconds since 1970-01-01T00:00:00Z"
    );
    let epoch: u64 = text.parse().map_err(|_| anyhow::anyhow!("{text} seconds is past 9999-12-31T23:59:59Z ({MAX_EPOCH})"))?;
    anyhow::ensure!(epoch <= MAX_EPOCH, "{text} seconds is past 9999-12-31T23:59:59Z ({MAX_EPOCH}): SPDX has no later time");
    Ok(epoch)
}

/// `SOURCE_DATE_EPOCH` as the build must use it: None when it is not set, an error naming the
/// variable when it is set to anything `parse_epoch` refuses (the reproducible-builds
/// specification: a malformed value fails the build rather than being ignored).
pub fn source_date_epoch() -> anyhow::Result<Option<u64>> {
    let Some(value) = std::env::var_os(SOURCE_DATE_EPOCH) else { return Ok(None) };
    let text = value.to_str().with_context(|| format!("{SOURCE_DATE_EPOCH} is not UTF-8"))?;
    parse_epoch(text).with_context(|| format!("{SOURCE_DATE_EPOCH}={text:?}: set it to seconds since 1970, or unset it")).map(Some)
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
    fn an_epoch_is_plain_decimal_seconds_up_to_year_9999() {
        assert_eq!(parse_epoch("0").unwrap(), 0);
        assert_eq!(parse_epoch("1700000000").unwrap(), 1_700_000_000);
        assert_eq!(parse_epoch("253402300799").unwrap(), MAX_EPOCH);
        assert_eq!(keel_ignition::apply::rfc3339_utc(MAX_EPOCH), "9999-12-31T23:59:59Z");
        for malformed in ["", "-5", "+5", "1e9", " 5", "5s", "0x10"] {
            let error = parse_epoch(malformed).unwrap_err().to_string();
            assert!(error.contains("is not a whole number of seconds"), "{malformed:?}: {error}");
        }
        for too_late in ["253402300800", "99999999999999999999999"] {
            let error = parse_epoch(too_late).unwrap_err().to_string();
            assert!(error.contains("past 9999-12-31T23:59:59Z"), "{too_late}: {error}");
        }
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
