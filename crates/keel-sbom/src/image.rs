//! The SBOM of a disk image, measured from the image file itself: each partition as its
//! table names it, the digest of each filesystem the builder wrote (for /usr, the
//! filesystem the verity root hash covers, with that root hash), the ESP's files as the FAT
//! holds them, and the OEM tree's files.

use crate::dpkg::{DebPackage, DpkgDatabase};
use crate::initrd::{debian_origin, DescribedSbom};
use crate::kernel::{kernel_file_origin, UnpackedKernel};
use crate::spdx::{ExternalDocument, Node, Package, Purpose, Sbom, SbomFile};
use crate::{hex, sha256_hex, Digests, KEEL_VERSION};
use anyhow::{bail, Context};
use keel_disk::{probe_filesystem, read_gpt, Probe, SectorSize};
use keel_manifest::UsrImage;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What keel-disk's probe reads of a partition at most.
const PROBE_BYTES: u64 = 128 << 10;

/// One partition of the image, as the SBOM describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionContents {
    /// The GPT name (USR-A, EFI-SYSTEM, OEM, ...).
    pub name: String,
    /// What the partition holds (`ext4`, `vfat`), None when blank.
    pub filesystem: Option<String>,
    /// SHA-256 of the filesystem's bytes: the whole partition, but for /usr only the
    /// filesystem before its hash tree (what the root hash covers).
    pub sha256: Option<String>,
    /// For a /usr slot: the dm-verity root hash (hex) the initrd bakes in for it.
    pub verity_root_hash: Option<String>,
    /// Files, with their paths in the filesystem (no leading `/`), sorted.
    pub files: Vec<(String, Digests)>,
}

/// An image's partitions, in table order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageContents {
    pub partitions: Vec<PartitionContents>,
}

/// A /usr slot of the image and what its initrd trusts about it.
#[derive(Clone, Copy, Debug)]
pub struct UsrSlot<'a> {
    /// The partition's GPT name (`USR-A`, `USR-B`).
    pub partition: &'a str,
    pub usr: &'a UsrImage,
}

/// Measures `image` (partition table in `sector_size` sectors), whose /usr slots are
/// `slots`: the ESP's files are read back with mtools (into a directory of their own beside
/// the image, removed again), and `oem_tree` (what `--oem` packed) gives OEM's.
pub fn measure_image(image: &Path, sector_size: SectorSize, slots: &[UsrSlot], oem_tree: Option<&Path>) -> anyhow::Result<ImageContents> {
    let mut file = File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
    let gpt = read_gpt(&mut file, sector_size).with_context(|| format!("reading the partition table of {}", image.display()))?;
    let mut contents = ImageContents::default();
    for partition in &gpt.partitions {
        let start = partition.start_bytes(gpt.sector_size);
        let size = partition.size_bytes(gpt.sector_size);
        let mut head = Vec::new();
        file.seek(SeekFrom::Start(start))?;
        (&mut file).take(size.min(PROBE_BYTES)).read_to_end(&mut head).with_context(|| format!("cannot read {}", partition.name))?;
        let filesystem = match probe_filesystem(&mut std::io::Cursor::new(head)).with_context(|| format!("probing {}", partition.name))? {
            Probe::Filesystem(filesystem) => Some(filesystem.kind.mount_type().to_string()),
            Probe::Blank | Probe::Unknown => None,
        };
        let mut measured = PartitionContents { name: partition.name.clone(), filesystem, sha256: None, verity_root_hash: None, files: Vec::new() };
        if measured.filesystem.is_some() {
            let slot = slots.iter().find(|slot| slot.partition == partition.name);
            let length = slot.map_or(size, |slot| slot.usr.hash_offset);
            measured.sha256 = Some(sha256_of_range(&mut file, start, length).with_context(|| format!("hashing {}", partition.name))?);
            measured.verity_root_hash = slot.map(|slot| hex(&slot.usr.root_hash));
            if measured.filesystem.as_deref() == Some("vfat") {
                measured.files = fat_files(image, start)?;
            } else if let Some(tree) = oem_tree.filter(|_| partition.name == "OEM") {
                measured.files = tree_files(tree)?;
            }
        }
        contents.partitions.push(measured);
    }
    Ok(contents)
}

/// The files the image's UKIs were built from, and each slot's UKI with its initrd's SBOM.
#[derive(Clone, Copy, Debug)]
pub struct UkiSources<'a> {
    /// The kernel every UKI carries (`--uki-kernel`).
    pub kernel: &'a Path,
    /// Its module directory: where an unpacked kernel package keeps its control data.
    pub modules_dir: &'a Path,
    /// The EFI stub the UKIs are built on (`--uki-stub`).
    pub stub: &'a Path,
    /// Each slot's UKI as written beside the image, and its initrd's SBOM.
    pub slots: &'a [(PathBuf, PathBuf)],
}

/// A file a UKI is made from, and the Debian package that shipped it (or why none is credited).
#[derive(Clone, Debug)]
pub struct UkiPart {
    /// The file's name, as the SBOM names it.
    pub name: String,
    pub digests: Digests,
    pub origin: Result<DebPackage, String>,
}

/// What the image's UKIs are made of.
#[derive(Clone, Debug)]
pub struct UkiParts {
    pub kernel: UkiPart,
    pub stub: UkiPart,
    /// Each slot's UKI (its SHA-256, as on the ESP) and the SBOM of the initrd it carries.
    pub slots: Vec<(String, ExternalDocument)>,
}

/// Measures what `sources` name: the kernel credited as its modules are (kernel.rs), the
/// stub by dpkg's database of the build host, each initrd SBOM by its namespace and digest.
pub fn measure_ukis(sources: &UkiSources, dpkg: &DpkgDatabase) -> anyhow::Result<UkiParts> {
    let read = |path: &Path| std::fs::read(path).with_context(|| format!("cannot read {} for the image's SBOM", path.display()));
    let name = |path: &Path| path.file_name().map_or_else(|| path.to_string_lossy(), |name| name.to_string_lossy()).into_owned();
    let kernel_bytes = read(sources.kernel)?;
    // Both from /: the kernel is matched to the package's md5sums by its path below the package's root.
    let absolute = |path: &Path| std::path::absolute(path).with_context(|| format!("cannot tell where {} is", path.display()));
    let unpacked = UnpackedKernel::find(&absolute(sources.modules_dir)?)?;
    let kernel_path = absolute(sources.kernel)?;
    let kernel = UkiPart {
        name: name(sources.kernel),
        digests: Digests::of(&kernel_bytes),
        origin: kernel_file_origin(unpacked.as_ref(), &kernel_path, &kernel_bytes, dpkg),
    };
    let stub_path = crate::absolute(sources.stub);
    let stub = UkiPart {
        name: name(sources.stub),
        digests: Digests::of(&read(sources.stub)?),
        origin: dpkg.owner(&stub_path).cloned().ok_or_else(|| dpkg.why_unowned(&stub_path)),
    };
    let mut slots = Vec::new();
    for (uki, initrd_sbom) in sources.slots {
        let document = read(initrd_sbom)?;
        let namespace = serde_json::from_slice::<serde_json::Value>(&document)
            .ok()
            .and_then(|json| json.get("documentNamespace")?.as_str().map(str::to_string))
            .with_context(|| format!("{} is not an SPDX document with a documentNamespace", initrd_sbom.display()))?;
        let external = ExternalDocument::new(&name(initrd_sbom), &namespace, &sha256_hex(&document));
        slots.push((sha256_of_file(uki)?, external));
    }
    Ok(UkiParts { kernel, stub, slots })
}

/// The SBOM of the image `file_name` whose bytes hash to `image_sha256`, whose ESP holds
/// UKIs made of `ukis`, whose packages' purls name `dpkg`'s distribution; and a warning for
/// each UKI part no package is credited with.
pub fn image_sbom(file_name: &str, image_sha256: &str, contents: &ImageContents, ukis: Option<&UkiParts>, dpkg: &DpkgDatabase) -> DescribedSbom {
    let mut artifact = Package::new(file_name, None, Purpose::OperatingSystem);
    artifact.sha256 = Some(image_sha256.to_string());
    artifact.comment = Some(format!("a keel disk image (GPT, Flatcar's layout); built by keel {KEEL_VERSION}"));
    let mut sbom = Sbom::new(file_name, artifact);
    let mut warnings = Vec::new();
    // Each file of the ESP that is a slot's UKI, with that slot's number.
    let mut uki_files = Vec::new();
    for partition in contents.partitions.iter().filter(|partition| partition.filesystem.is_some()) {
        let mut package = Package::new(&partition.name, None, Purpose::File);
        package.sha256 = partition.sha256.clone();
        let mut comment = format!("partition {}: {}", partition.name, partition.filesystem.as_deref().unwrap_or("blank"));
        if let Some(root_hash) = &partition.verity_root_hash {
            comment.push_str(&format!("; the SHA-256 is the filesystem's bytes before its hash tree; dm-verity root hash {root_hash}"));
        }
        package.comment = Some(comment);
        let index = sbom.package(package);
        sbom.relate(Node::Artifact, "CONTAINS", Node::Package(index));
        for (path, digests) in &partition.files {
            let file = SbomFile { path: format!("{}/{path}", partition.name), digests: digests.clone(), comment: None };
            let file = sbom.file(file, Some(index));
            let slot = ukis.and_then(|ukis| ukis.slots.iter().position(|(sha256, _)| *sha256 == digests.sha256));
            uki_files.extend(slot.map(|slot| (file, slot)));
        }
    }
    if let Some(ukis) = ukis {
        describe_ukis(&mut sbom, ukis, &uki_files, dpkg, &mut warnings);
    }
    DescribedSbom { sbom, warnings }
}

/// The kernel and stub each UKI file (`uki_files`: file number, slot number) is made of,
/// and the SBOM of the initrd it carries. The kernel is in the UKI as it is (its `.linux`
/// section); the stub is the PE image the sections were added to, so the UKI is
/// GENERATED_FROM it rather than containing its bytes.
fn describe_ukis(sbom: &mut Sbom, ukis: &UkiParts, uki_files: &[(usize, usize)], dpkg: &DpkgDatabase, warnings: &mut Vec<String>) {
    let mut part = |part: &UkiPart, note: &str, warnings: &mut Vec<String>| {
        let mut why_unowned = None;
        let origin = debian_origin(sbom, part.origin.clone(), dpkg, &format!("{} in the UKIs", part.name), &mut why_unowned, warnings);
        let comment = Some(why_unowned.map_or_else(|| note.to_string(), |why| format!("{note}; {why}")));
        sbom.file_in(SbomFile { path: part.name.clone(), digests: part.digests.clone(), comment }, None, origin)
    };
    let kernel = part(&ukis.kernel, "the kernel each UKI on the ESP carries as its .linux section (--uki-kernel)", warnings);
    let stub = part(&ukis.stub, "the EFI stub each UKI on the ESP is built on (--uki-stub): the PE image its sections were added to", warnings);
    for &(file, slot) in uki_files {
        sbom.relate(Node::File(file), "CONTAINS", Node::File(kernel));
        sbom.relate(Node::File(file), "GENERATED_FROM", Node::File(stub));
        if let Some((_, initrd_sbom)) = ukis.slots.get(slot) {
            let document = sbom.external_document(initrd_sbom.clone());
            sbom.relate(Node::File(file), "CONTAINS", Node::ExternalArtifact(document));
        }
    }
}

fn sha256_of_range(file: &mut File, start: u64, length: u64) -> anyhow::Result<String> {
    file.seek(SeekFrom::Start(start))?;
    let (sha256, read) = sha256_of_reader(file.take(length))?;
    if read != length {
        bail!("the image ends {} bytes early", length - read);
    }
    Ok(sha256)
}

/// SHA-256 of a whole file, read in pieces (an image is gigabytes).
pub fn sha256_of_file(path: &Path) -> anyhow::Result<String> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let (sha256, _) = sha256_of_reader(file).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(sha256)
}

/// SHA-256 of everything `reader` gives, and how many bytes that was.
fn sha256_of_reader(mut reader: impl Read) -> std::io::Result<(String, u64)> {
    let mut hash = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    let mut total = 0;
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => return Ok((hex(&hash.finalize()), total)),
            Ok(read) => {
                hash.update(buffer.get(..read).unwrap_or_default());
                total += read as u64;
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
}

/// The files of the FAT at `offset` of `image`, copied out with mtools (which read FAT as
/// the firmware does) into a fresh directory and hashed there.
fn fat_files(image: &Path, offset: u64) -> anyhow::Result<Vec<(String, Digests)>> {
    let scratch = ScratchDir::beside(image)?;
    let mut source = image.as_os_str().to_os_string();
    source.push(format!("@@{offset}"));
    let output = Command::new("mcopy").arg("-s").arg("-n").arg("-i").arg(&source).arg("::/").arg(&scratch.0).output();
    match output {
        Ok(output) if output.status.success() => tree_files(&scratch.0),
        Ok(output) => Err(anyhow::anyhow!("mcopy could not read the ESP of {}: {}", image.display(), String::from_utf8_lossy(&output.stderr).trim())),
        Err(error) => Err(anyhow::anyhow!("cannot run mcopy (mtools reads the ESP for the SBOM): {error}")),
    }
}

/// A directory this process made, removed with everything in it when dropped. It is made
/// beside the image (the ESP's files, UKIs included, may not fit in a small /tmp) under a
/// name no one else has: `create_dir` fails on an existing one, so a directory keel did not
/// make is never used, nor removed.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn beside(image: &Path) -> anyhow::Result<ScratchDir> {
        let name = image.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        for attempt in 0..100 {
            let path = image.with_file_name(format!(".{name}.esp-{}-{attempt}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(ScratchDir(path)),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error).with_context(|| format!("cannot make {} to read the ESP into", path.display())),
            }
        }
        bail!("cannot make a directory beside {} to read the ESP into: 100 names taken", image.display())
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The regular files below `root`, each with its path relative to it, sorted; a symlink is
/// recorded as its target's text, as a filesystem stores it.
pub fn tree_files(root: &Path) -> anyhow::Result<Vec<(String, Digests)>> {
    let mut files = Vec::new();
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let path = entry.with_context(|| format!("cannot read {}", dir.display()))?.path();
            let kind = std::fs::symlink_metadata(&path).with_context(|| format!("cannot stat {}", path.display()))?.file_type();
            let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().to_string();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).with_context(|| format!("cannot read the link {}", path.display()))?;
                files.push((relative, Digests::of(target.as_os_str().as_encoded_bytes())));
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                files.push((relative, Digests::of(&bytes)));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// One digest for a whole tree, the provenance's name for an input directory: SHA-256 over
/// one line per entry, the root and every directory included, sorted by path, each with what
/// `mkfs.ext4 -d` copies into the filesystem: type, permission bits (setuid and sticky
/// too), owner, group, extended attributes (names and values, sorted: file capabilities,
/// SELinux labels), and the contents' SHA-256, a link's target or a device's number. A
/// chmod, chown, setfattr or a new empty directory changes the image, so it changes this.
pub fn tree_digest(root: &Path) -> anyhow::Result<String> {
    let mut lines = Vec::new();
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).with_context(|| format!("cannot stat {}", path.display()))?;
        let kind = meta.file_type();
        let contents = if kind.is_dir() {
            for entry in std::fs::read_dir(&path).with_context(|| format!("cannot read {}", path.display()))? {
                pending.push(entry.with_context(|| format!("cannot read {}", path.display()))?.path());
            }
            "directory".to_string()
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path).with_context(|| format!("cannot read the link {}", path.display()))?;
            format!("symlink {}", hex(target.as_os_str().as_encoded_bytes()))
        } else if kind.is_file() {
            format!("file {}", sha256_of_file(&path)?)
        } else {
            use std::os::unix::fs::FileTypeExt;
            let special = if kind.is_block_device() {
                "block"
            } else if kind.is_char_device() {
                "char"
            } else if kind.is_fifo() {
                "fifo"
            } else {
                "socket"
            };
            format!("{special} {}", meta.rdev())
        };
        let relative = path.strip_prefix(root).unwrap_or(&path);
        let xattrs: String = xattrs(&path)?.iter().map(|(name, value)| format!(" {}={}", hex(name), hex(value))).collect();
        let line = format!(
            "{} {contents} mode={:o} uid={} gid={}{xattrs}\n",
            hex(relative.as_os_str().as_encoded_bytes()),
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        );
        lines.push(line);
    }
    lines.sort();
    Ok(sha256_hex(lines.concat().as_bytes()))
}

/// The extended attributes of `path` itself (not a link's target), sorted by name.
fn xattrs(path: &Path) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let context = || format!("cannot read the extended attributes of {}", path.display());
    let mut names = vec![0; rustix::fs::llistxattr_query(path).with_context(context)?];
    let length = rustix::fs::llistxattr(path, &mut names[..]).with_context(context)?;
    names.truncate(length);
    let mut attributes = Vec::new();
    for name in names.split(|byte| *byte == 0).filter(|name| !name.is_empty()) {
        let name = std::ffi::OsStr::from_bytes(name);
        let mut value = vec![0; rustix::fs::lgetxattr_query(path, name).with_context(context)?];
        let length = rustix::fs::lgetxattr(path, name, &mut value[..]).with_context(context)?;
        value.truncate(length);
        attributes.push((name.as_bytes().to_vec(), value));
    }
    attributes.sort();
    Ok(attributes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_test_support::scratch_dir;

    /// An image whose only partition is an ESP holding `files`, in this order.
    fn esp_only(files: &[(&str, &[u8])]) -> ImageContents {
        let files = files.iter().map(|(path, bytes)| (path.to_string(), Digests::of(bytes))).collect();
        let esp = PartitionContents { name: "EFI-SYSTEM".into(), filesystem: Some("vfat".into()), sha256: None, verity_root_hash: None, files };
        ImageContents { partitions: vec![esp] }
    }

    fn deb(name: &str, version: &str) -> DebPackage {
        DebPackage { name: name.into(), version: version.into(), architecture: "amd64".into() }
    }

    /// One slot's UKI (the bytes `uki a`) made of a kernel whose origin is `kernel_origin`.
    fn parts(kernel_origin: Result<DebPackage, String>) -> UkiParts {
        UkiParts {
            kernel: UkiPart { name: "vmlinuz".into(), digests: Digests::of(b"kernel"), origin: kernel_origin },
            stub: UkiPart { name: "linuxx64.efi.stub".into(), digests: Digests::of(b"stub"), origin: Ok(deb("systemd-boot-efi", "252-1")) },
            slots: vec![(sha256_hex(b"uki a"), ExternalDocument::new("disk.usr-a.initrd.spdx.json", "https://keel.invalid/a", &"aa".repeat(32)))],
        }
    }

    /// The document's relationships as `FROM KIND TO` lines.
    fn relationships(sbom: &Sbom) -> Vec<String> {
        let document: serde_json::Value = serde_json::from_str(&sbom.to_spdx_json(0)).unwrap();
        let line = |r: &serde_json::Value| format!("{} {} {}", r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"]).replace('"', "");
        document["relationships"].as_array().unwrap().iter().map(line).collect()
    }

    #[test]
    fn only_an_esp_file_that_is_a_slots_uki_refers_to_that_slots_initrd_sbom_kernel_and_stub() {
        let contents = esp_only(&[("EFI/keel/usr-a.efi", b"uki a"), ("EFI/tool.efi", b"another program")]);
        let kernel = deb("linux-image-6.1.0-test", "6.1.999-1");
        let described = image_sbom("disk.img", &"00".repeat(32), &contents, Some(&parts(Ok(kernel))), &DpkgDatabase::default());
        let relationships = relationships(&described.sbom);
        for expected in [
            "SPDXRef-File-1 CONTAINS DocumentRef-disk.usr-a.initrd:SPDXRef-Artifact",
            "SPDXRef-File-1 CONTAINS SPDXRef-File-3",
            "SPDXRef-File-1 GENERATED_FROM SPDXRef-File-4",
            "SPDXRef-Package-2-linux-image-6.1.0-test CONTAINS SPDXRef-File-3",
            "SPDXRef-Package-3-systemd-boot-efi CONTAINS SPDXRef-File-4",
        ] {
            assert!(relationships.iter().any(|line| line == expected), "no {expected}: {relationships:#?}");
        }
        assert!(!relationships.iter().any(|line| line.starts_with("SPDXRef-File-2 ")), "{relationships:#?}");
        // Neither is on the image as it is: the kernel is inside the UKIs, the stub was rewritten into them.
        assert!(!relationships
            .iter()
            .any(|line| line == "SPDXRef-Artifact CONTAINS SPDXRef-File-3" || line == "SPDXRef-Artifact CONTAINS SPDXRef-File-4"));
        assert!(described.warnings.is_empty(), "{:?}", described.warnings);
    }

    #[test]
    fn a_kernel_no_package_is_credited_with_says_noassertion_and_why_and_warns() {
        let contents = esp_only(&[("EFI/keel/usr-a.efi", b"uki a")]);
        let why = "no Debian package owns it".to_string();
        let described = image_sbom("disk.img", &"00".repeat(32), &contents, Some(&parts(Err(why))), &DpkgDatabase::default());
        let kernel = described.sbom.files.iter().position(|file| file.path == "vmlinuz").unwrap();
        let comment = described.sbom.files[kernel].comment.clone().unwrap();
        assert!(comment.ends_with("(--uki-kernel); NOASSERTION: no Debian package owns it"), "{comment}");
        assert_eq!(described.warnings, ["vmlinuz in the UKIs: no Debian package owns it; its SBOM entry says NOASSERTION"]);
        let credited = described.sbom.relationships.iter().any(|(from, _, to)| matches!(from, Node::Package(_)) && *to == Node::File(kernel));
        assert!(!credited, "no package contains the kernel");
    }

    #[test]
    fn an_initrd_sbom_without_a_namespace_is_refused_by_name() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "uki-initrd-sbom");
        for name in ["vmlinuz", "stub", "uki"] {
            std::fs::write(dir.join(name), name).unwrap();
        }
        std::fs::write(dir.join("initrd.spdx.json"), r#"{"spdxVersion": "SPDX-2.3"}"#).unwrap();
        let slots = [(dir.join("uki"), dir.join("initrd.spdx.json"))];
        let sources =
            UkiSources { kernel: &dir.join("vmlinuz"), modules_dir: &dir.join("lib/modules/6.1.0-test"), stub: &dir.join("stub"), slots: &slots };
        let error = measure_ukis(&sources, &DpkgDatabase::default()).unwrap_err().to_string();
        assert!(error.contains("initrd.spdx.json is not an SPDX document with a documentNamespace"), "{error}");
    }

    #[test]
    fn a_kernel_and_stub_nothing_owns_are_measured_with_the_reason() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "uki-unowned");
        for name in ["vmlinuz", "stub", "uki"] {
            std::fs::write(dir.join(name), name).unwrap();
        }
        std::fs::write(dir.join("initrd.spdx.json"), r#"{"documentNamespace": "https://keel.invalid/i"}"#).unwrap();
        let slots = [(dir.join("uki"), dir.join("initrd.spdx.json"))];
        let sources =
            UkiSources { kernel: &dir.join("vmlinuz"), modules_dir: &dir.join("lib/modules/6.1.0-test"), stub: &dir.join("stub"), slots: &slots };
        let parts = measure_ukis(&sources, &DpkgDatabase::default()).unwrap();
        assert_eq!((parts.kernel.digests.clone(), parts.stub.digests.clone()), (Digests::of(b"vmlinuz"), Digests::of(b"stub")));
        assert!(parts.kernel.origin.unwrap_err().starts_with("no Debian package owns it"));
        assert!(parts.stub.origin.unwrap_err().starts_with("no Debian package owns it"));
        let (uki_sha256, initrd_sbom) = &parts.slots[0];
        assert_eq!(*uki_sha256, sha256_hex(b"uki"));
        let document = std::fs::read(dir.join("initrd.spdx.json")).unwrap();
        assert_eq!(*initrd_sbom, ExternalDocument::new("initrd.spdx.json", "https://keel.invalid/i", &sha256_hex(&document)));
    }

    #[test]
    fn a_tree_digest_changes_with_a_mode_an_owner_an_xattr_or_an_empty_directory() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "sbom-tree-metadata");
        let tree = dir.join("t");
        std::fs::create_dir_all(tree.join("bin")).unwrap();
        std::fs::write(tree.join("bin/ping"), "ping").unwrap();
        let mut seen = vec![tree_digest(&tree).unwrap()];
        let mut changed = |what: &str| {
            let digest = tree_digest(&tree).unwrap();
            assert!(!seen.contains(&digest), "{what} left the digest as it was");
            seen.push(digest);
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tree.join("bin/ping"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        changed("setuid");
        std::fs::set_permissions(tree.join("bin"), std::fs::Permissions::from_mode(0o700)).unwrap();
        changed("a directory's mode");
        // The tests run as root, as mkfs and loop devices need.
        std::os::unix::fs::lchown(tree.join("bin/ping"), Some(1), Some(1)).unwrap();
        changed("chown");
        rustix::fs::lsetxattr(tree.join("bin/ping"), "user.keel", b"cap", rustix::fs::XattrFlags::empty()).unwrap();
        changed("setfattr");
        rustix::fs::lsetxattr(tree.join("bin/ping"), "user.keel", b"cap2", rustix::fs::XattrFlags::empty()).unwrap();
        changed("an xattr's value");
        std::fs::create_dir(tree.join("empty")).unwrap();
        changed("an empty directory");
        std::os::unix::fs::symlink("ping", tree.join("bin/link")).unwrap();
        changed("a symlink");
        assert_eq!(tree_digest(&tree).unwrap(), *seen.last().unwrap(), "the same tree, the same digest");
    }

    #[test]
    fn a_tree_digest_changes_with_a_name_or_a_byte() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "sbom-tree-digest");
        std::fs::create_dir_all(dir.join("t/sub")).unwrap();
        std::fs::write(dir.join("t/sub/a"), "a").unwrap();
        let before = tree_digest(&dir.join("t")).unwrap();
        assert_eq!(tree_files(&dir.join("t")).unwrap(), [("sub/a".to_string(), Digests::of(b"a"))]);
        std::fs::rename(dir.join("t/sub/a"), dir.join("t/sub/b")).unwrap();
        let renamed = tree_digest(&dir.join("t")).unwrap();
        std::fs::write(dir.join("t/sub/b"), "b").unwrap();
        let changed = tree_digest(&dir.join("t")).unwrap();
        assert_ne!(before, renamed);
        assert_ne!(renamed, changed);
    }
}
