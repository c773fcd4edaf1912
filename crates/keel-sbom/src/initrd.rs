//! The SBOM and provenance of one initrd: every regular file packed, its digests, and the
//! package it comes from.

use crate::auditable::linked_crates;
use crate::dpkg::{DebPackage, DpkgDatabase};
use crate::kernel::{kernel_file_origin, UnpackedKernel};
use crate::provenance::{input_name, ResolvedDependency};
use crate::spdx::{Node, Package, Purpose, Sbom, SbomFile};
use crate::{portable_path, sha256_hex, Digests, KEEL_VERSION};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where one packed file's bytes came from, as the initrd builder knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A keel binary (keel-init as /init): its crates are read from its own bytes.
    KeelBinary(PathBuf),
    /// Written by the builder itself (the manifest, module lists, driver table).
    Generated,
    /// A kernel module, from this file of the module directory.
    KernelModule { modules_dir: PathBuf, file: PathBuf },
    /// A file of the build host's system: a program or library, at `path_in_root` as the
    /// host root's own dpkg database names it, read from `host_path`.
    Host { path_in_root: String, host_path: PathBuf },
    /// An Ignition base config the builder's user gave (`--ignition-base`).
    IgnitionBase(PathBuf),
}

impl Source {
    /// The input file these bytes were read from, if any.
    pub fn input(&self) -> Option<&Path> {
        match self {
            Source::KeelBinary(path) | Source::IgnitionBase(path) => Some(path),
            Source::KernelModule { file, .. } => Some(file),
            Source::Host { host_path, .. } => Some(host_path),
            Source::Generated => None,
        }
    }
}

/// One regular file of the initrd.
pub struct PackedFile<'a> {
    /// Its path in the initrd, without the leading `/`.
    pub path: &'a str,
    pub data: &'a [u8],
    pub source: &'a Source,
}

/// What an SBOM says, and what its writer should warn about.
pub struct DescribedSbom {
    pub sbom: Sbom,
    /// One line each: a keel binary without its crate list, a file no package owns.
    pub warnings: Vec<String>,
}

/// The SBOM of the initrd `file_name` (its bytes as written, compressed), made of `files`
/// (in the archive's order) whose host files are owned as `dpkg` says.
pub fn initrd_sbom(file_name: &str, bytes: &[u8], compression: &str, files: &[PackedFile], dpkg: &DpkgDatabase) -> anyhow::Result<DescribedSbom> {
    let mut artifact = Package::new(file_name, None, Purpose::Archive);
    artifact.sha256 = Some(sha256_hex(bytes));
    artifact.comment = Some(format!("a keel initrd: newc cpio, compression {compression}; built by keel {KEEL_VERSION}"));
    let mut sbom = Sbom::new(file_name, artifact);
    let mut warnings = Vec::new();
    let mut kernels: BTreeMap<PathBuf, Option<UnpackedKernel>> = BTreeMap::new();
    for file in files {
        let digests = Digests::of(file.data);
        let mut comment = None;
        let origin = match file.source {
            Source::KeelBinary(_) => Some(keel_binary(&mut sbom, file, &mut warnings)?),
            Source::Generated => {
                comment = Some(format!("written by keel {KEEL_VERSION} (initrd build)"));
                None
            }
            Source::IgnitionBase(_) => {
                comment = Some("an Ignition base config given to the build (--ignition-base)".to_string());
                None
            }
            Source::KernelModule { modules_dir, file: module } => {
                let kernel = match kernels.entry(modules_dir.clone()) {
                    std::collections::btree_map::Entry::Occupied(known) => known.into_mut(),
                    std::collections::btree_map::Entry::Vacant(new) => new.insert(UnpackedKernel::find(modules_dir)?),
                };
                let package = kernel_file_origin(kernel.as_ref(), module, file.data, dpkg);
                debian_origin(&mut sbom, package, dpkg, &format!("/{}", file.path), &mut comment, &mut warnings)
            }
            Source::Host { path_in_root, .. } => {
                let package = dpkg.owner(path_in_root).cloned().ok_or_else(|| dpkg.why_unowned(path_in_root));
                debian_origin(&mut sbom, package, dpkg, &format!("/{}", file.path), &mut comment, &mut warnings)
            }
        };
        sbom.file(SbomFile { path: file.path.to_string(), digests, comment }, origin);
    }
    Ok(DescribedSbom { sbom, warnings })
}

/// The Debian package as an SPDX package the artifact contains, or a note saying why no
/// package is credited with the file, which the warning calls `file`.
pub(crate) fn debian_origin(
    sbom: &mut Sbom,
    package: Result<DebPackage, String>,
    dpkg: &DpkgDatabase,
    file: &str,
    comment: &mut Option<String>,
    warnings: &mut Vec<String>,
) -> Option<usize> {
    let package = match package {
        Ok(package) => package,
        Err(why) => {
            *comment = Some(format!("NOASSERTION: {why}"));
            warnings.push(format!("{file}: {why}; its SBOM entry says NOASSERTION"));
            return None;
        }
    };
    let index = sbom.package(debian_package(&package, dpkg));
    sbom.relate(Node::Artifact, "CONTAINS", Node::Package(index));
    Some(index)
}

/// The package as the SPDX package of the build root's distribution.
fn debian_package(package: &DebPackage, dpkg: &DpkgDatabase) -> Package {
    let mut spdx = Package::new(&package.name, Some(&package.version), Purpose::Install);
    spdx.supplier = dpkg.distro.supplier();
    spdx.purl = dpkg.distro.purl(package);
    // SPDX's verification code is of the files a package CONTAINS: here only those packed,
    // so two initrds carrying different files of one package show different codes.
    let mut comment = "its packageVerificationCode covers only the files of this package packed here, not all the package ships".to_string();
    if spdx.purl.is_none() {
        comment += "; NOASSERTION for its purl and supplier: the build root has no os-release to say its distribution";
    }
    spdx.comment = Some(comment);
    spdx
}

/// The keel binary as a package the artifact contains, statically linking each crate its
/// `.dep-v0` section names.
fn keel_binary(sbom: &mut Sbom, file: &PackedFile, warnings: &mut Vec<String>) -> anyhow::Result<usize> {
    // Named as the builder's file is (keel-init), not as the initrd's (/init).
    let binary_name = match file.source.input().and_then(Path::file_name) {
        Some(name) => name.to_string_lossy().to_string(),
        None => file.path.to_string(),
    };
    let crates = linked_crates(file.data).with_context(|| format!("reading the crates linked into /{}", file.path))?;
    let Some(crates) = crates else {
        let mut package = Package::new(&binary_name, None, Purpose::Application);
        package.comment = Some("NOASSERTION for its crates: built without cargo-auditable, so the binary does not say what it links".to_string());
        warnings.push(format!(
            "WARNING: /{} was built without cargo-auditable: the SBOM cannot list its crates (build it with `cargo auditable build`)",
            file.path
        ));
        let index = sbom.package(package);
        sbom.relate(Node::Artifact, "CONTAINS", Node::Package(index));
        return Ok(index);
    };
    let mut package = Package::new(&crates.root.name, Some(&crates.root.version), Purpose::Application);
    package.comment = Some(format!("/{}, a static binary of keel's workspace; its crates from its cargo-auditable data", file.path));
    let binary = sbom.package(package);
    sbom.relate(Node::Artifact, "CONTAINS", Node::Package(binary));
    for krate in &crates.linked {
        let mut package = Package::new(&krate.name, Some(&krate.version), Purpose::Library);
        package.purl = krate.purl();
        if krate.source != "crates.io" {
            package.comment = Some(format!("source: {}", krate.source));
        }
        let index = sbom.package(package);
        sbom.relate(Node::Package(binary), "STATIC_LINK", Node::Package(index));
    }
    Ok(binary)
}

/// The inputs of an initrd build: every file packed that was read from somewhere (with the
/// digest of the bytes packed), and the extra files the build read (the manifest, the module
/// directory's index files), named as `input_name` names them.
pub fn initrd_inputs(files: &[PackedFile], extra: &[PathBuf], base: &Path, dpkg: &DpkgDatabase) -> anyhow::Result<Vec<ResolvedDependency>> {
    let mut inputs = Vec::new();
    for file in files {
        let name = match file.source {
            // dpkg's database is the build root's: ask it by the path in that root.
            Source::Host { path_in_root, host_path } => match dpkg.owner(path_in_root).and_then(|package| dpkg.distro.purl(package)) {
                Some(purl) => format!("{purl}#{}", path_in_root.trim_start_matches('/')),
                None => portable_path(host_path, base),
            },
            Source::Generated => continue,
            other => match other.input() {
                Some(input) => input_name(input, base, dpkg),
                None => continue,
            },
        };
        inputs.push(ResolvedDependency { name, sha256: sha256_hex(file.data) });
    }
    for path in extra {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {} for the provenance", path.display()))?;
        inputs.push(ResolvedDependency { name: input_name(path, base, dpkg), sha256: sha256_hex(&bytes) });
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_test_support::{python_tool, scratch_dir};
    use serde_json::Value;

    #[test]
    fn only_the_modules_the_kernel_package_shipped_are_credited_to_it() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "initrd-kernel-md5sums");
        let modules_dir = dir.join("lib/modules/6.1.0-test");
        std::fs::create_dir_all(dir.join("DEBIAN")).unwrap();
        let control = "Package: linux-image-6.1.0-test\nVersion: 6.1.999-1\nArchitecture: amd64\n";
        std::fs::write(dir.join(crate::kernel::CONTROL_PATH), control).unwrap();
        // `printf shipped | md5sum`
        let md5sums = "8407efe4e76e884909955a5e7293661e  lib/modules/6.1.0-test/kernel/shipped.ko\n";
        std::fs::write(dir.join(crate::kernel::MD5SUMS_PATH), md5sums).unwrap();
        let source = |name: &str| Source::KernelModule { modules_dir: modules_dir.clone(), file: modules_dir.join(name) };
        let (shipped, dkms) = (source("kernel/shipped.ko"), source("updates/dkms/added.ko"));
        let files = [
            PackedFile { path: "lib/modules/6.1.0-test/kernel/shipped.ko", data: b"shipped", source: &shipped },
            PackedFile { path: "lib/modules/6.1.0-test/updates/dkms/added.ko", data: b"added", source: &dkms },
        ];
        let described = initrd_sbom("initrd.img", b"initrd", "zstd", &files, &DpkgDatabase::default()).unwrap();
        let names: Vec<&str> = described.sbom.packages.iter().map(|package| package.name.as_str()).collect();
        assert_eq!(names, ["linux-image-6.1.0-test"]);
        assert!(described.sbom.relationships.contains(&(Node::Package(0), "CONTAINS", Node::File(0))));
        assert!(!described.sbom.relationships.contains(&(Node::Package(0), "CONTAINS", Node::File(1))));
        assert_eq!(described.warnings.len(), 1, "{:?}", described.warnings);
        assert!(described.warnings[0].starts_with("/lib/modules/6.1.0-test/updates/dkms/added.ko: linux-image-6.1.0-test did not ship it"));
        assert!(described.sbom.files[1].comment.as_deref().unwrap_or_default().starts_with("NOASSERTION: linux-image-6.1.0-test did not ship it"));
        let kernel_comment = described.sbom.packages[0].comment.as_deref().unwrap_or_default();
        assert!(kernel_comment.starts_with("its packageVerificationCode covers only the files of this package packed here"), "{kernel_comment}");
    }

    #[test]
    fn a_file_no_package_owns_is_noassertion_with_a_note_and_a_warning() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "initrd-unowned");
        let (host, module) = (Source::Host { path_in_root: "/usr/sbin/mkfs.ext4".into(), host_path: "/usr/sbin/mkfs.ext4".into() }, dir.join("m.ko"));
        let module = Source::KernelModule { modules_dir: dir.clone(), file: module };
        let files = [
            PackedFile { path: "usr/sbin/mkfs.ext4", data: b"mkfs", source: &host },
            PackedFile { path: "lib/modules/6.1.0-test/m.ko", data: b"module", source: &module },
        ];
        // An empty database: the build root has no dpkg.
        let described = initrd_sbom("initrd.img", b"initrd", "zstd", &files, &DpkgDatabase::default()).unwrap();
        assert_eq!(described.warnings.len(), 2, "{:?}", described.warnings);
        assert!(described.warnings[0].starts_with("/usr/sbin/mkfs.ext4: no Debian package owns it"), "{:?}", described.warnings);
        assert!(described.sbom.packages.is_empty(), "a guessed package: {:?}", described.sbom.packages);
        let text = described.sbom.to_spdx_json(0);
        let document: Value = serde_json::from_str(&text).unwrap();
        assert!(document["files"][0]["comment"].as_str().unwrap().starts_with("NOASSERTION: no Debian package owns it"));

        let path = dir.join("initrd.img.spdx.json");
        std::fs::write(&path, text).unwrap();
        let validated = std::process::Command::new(python_tool("pyspdxtools")).arg("-i").arg(&path).output().unwrap();
        assert!(validated.status.success(), "{}", String::from_utf8_lossy(&validated.stderr));
    }
}
