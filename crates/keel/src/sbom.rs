//! The SBOM (`<OUTPUT>.spdx.json`) and provenance (`<OUTPUT>.intoto.json`) the builders write
//! beside their outputs. keel-sbom makes the documents; this is where the command's
//! arguments, the build directory and the host's dpkg database come in.

use anyhow::Context;
use keel_disk::SectorSize;
use keel_manifest::ImageManifest;
use keel_sbom::image::{UkiSources, UsrSlot};
use keel_sbom::provenance::{input_name, tool};
use keel_sbom::{portable_path, provenance_path, sbom_path, sha256_hex, DpkgDatabase, Provenance, ResolvedDependency};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The module directory's index files `keel initrd build` reads to choose what to pack.
const MODULE_INDEX_FILES: [&str; 4] = ["modules.dep", "modules.softdep", "modules.builtin", "modules.alias"];
/// The host programs `keel image build` makes filesystems with: they decide the image's bytes.
const IMAGE_TOOLS: [&str; 4] = ["mkfs.ext4", "debugfs", "mkfs.vfat", "mcopy"];

/// The build a document is about: the command as given, the epoch every document of the
/// build uses, and where that epoch came from. An image build's slot initrds are made by the
/// image build, so their provenance names it, not an `initrd build` that never ran.
pub struct Invocation {
    /// `initrd` or `image`: the provenance's build type.
    pub kind: &'static str,
    /// The arguments after `keel`, as given.
    pub arguments: Vec<OsString>,
    pub epoch: u64,
    /// `SOURCE_DATE_EPOCH` when it set the epoch; an `--epoch` is among the arguments already.
    pub epoch_from_environment: Option<u64>,
}

impl Invocation {
    /// `given_epoch` (an `--epoch`) wins over `SOURCE_DATE_EPOCH`, which is then not read;
    /// neither means 0.
    pub fn new(kind: &'static str, arguments: &[OsString], given_epoch: Option<u64>) -> anyhow::Result<Invocation> {
        let from_environment = match given_epoch {
            Some(_) => None,
            None => keel_sbom::source_date_epoch()?,
        };
        let epoch = given_epoch.or(from_environment).unwrap_or(0);
        Ok(Invocation { kind, arguments: arguments.to_vec(), epoch, epoch_from_environment: from_environment })
    }

    fn provenance(&self, base: &Path, inputs: Vec<ResolvedDependency>, outputs: Vec<ResolvedDependency>) -> Provenance {
        let environment = self.epoch_from_environment.map(|epoch| (keel_sbom::SOURCE_DATE_EPOCH.to_string(), epoch.to_string()));
        Provenance {
            kind: self.kind,
            arguments: portable_arguments(&self.arguments, base),
            environment: environment.into_iter().collect(),
            inputs,
            outputs,
        }
    }
}

/// What the documents of one initrd build need to know besides the packed tree.
pub struct InitrdBuild<'a> {
    pub invocation: &'a Invocation,
    pub output: &'a Path,
    pub bytes: &'a [u8],
    pub packed: &'a keel_initrd::Packed,
    pub compression: keel_initrd::Compression,
    /// The manifest's file and its bytes (those written or read: the slot initrds of an image
    /// build are made before their manifests are written).
    pub manifest: (&'a Path, &'a [u8]),
    pub modules_dir: &'a Path,
    /// The root whose dpkg database owns the packed host files (`/`).
    pub host_root: &'a Path,
}

/// An initrd's SBOM and provenance, made before anything is written, and the lines that
/// say where they go, with any warning (a keel-init without its crate list, a file no
/// package owns).
pub struct InitrdDocuments {
    pub sbom: String,
    pub provenance: String,
    pub report: String,
}

pub fn initrd_documents(build: &InitrdBuild) -> anyhow::Result<InitrdDocuments> {
    let base = build_directory()?;
    let dpkg = DpkgDatabase::read(build.host_root).context("reading dpkg's database for the SBOM")?;
    let files = build.packed.files()?;
    let file_name = file_name(build.output);
    let described = keel_sbom::initrd::initrd_sbom(&file_name, build.bytes, build.compression.name(), &files, &dpkg)?;
    let sbom_text = described.sbom.to_spdx_json(build.invocation.epoch);
    let sbom_file = sbom_path(build.output);

    let extra: Vec<PathBuf> = MODULE_INDEX_FILES.iter().map(|name| build.modules_dir.join(name)).filter(|path| path.is_file()).collect();
    let mut inputs = keel_sbom::initrd::initrd_inputs(&files, &extra, &base, &dpkg)?;
    let (manifest_path, manifest_bytes) = build.manifest;
    inputs.push(ResolvedDependency { name: input_name(manifest_path, &base, &dpkg), sha256: sha256_hex(manifest_bytes) });
    if let Some((program, _)) = build.compression.command() {
        inputs.extend(tool(program, &dpkg)?);
    }
    let outputs = vec![output_digest(build.output, build.bytes, &base), output_digest(&sbom_file, sbom_text.as_bytes(), &base)];
    let provenance = build.invocation.provenance(&base, inputs, outputs);
    let mut report: String = described.warnings.iter().map(|warning| format!("{warning}\n")).collect();
    report += &documents_report(&sbom_file, &described.sbom, &provenance_path(build.output));
    Ok(InitrdDocuments { sbom: sbom_text, provenance: provenance.to_json(), report })
}

/// Puts `files` in place together: each is written under a temporary name in its own
/// directory, then all are renamed, so no reader finds an output beside documents of
/// another build. On an error none of the final names is left either, since one of them
/// may already hold this build's bytes beside a previous build's documents.
pub fn write_together(files: &[(&Path, &[u8])]) -> anyhow::Result<()> {
    let temporaries: Vec<PathBuf> = files.iter().map(|(path, _)| temporary_name(path)).collect();
    let result = write_then_rename(files, &temporaries);
    if result.is_err() {
        for path in temporaries.iter().map(PathBuf::as_path).chain(files.iter().map(|(path, _)| *path)) {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

fn write_then_rename(files: &[(&Path, &[u8])], temporaries: &[PathBuf]) -> anyhow::Result<()> {
    for ((path, bytes), temporary) in files.iter().zip(temporaries) {
        // create_new: a file already at the temporary name is someone else's.
        let mut file =
            std::fs::File::create_new(temporary).with_context(|| format!("cannot create {} for {}", temporary.display(), path.display()))?;
        std::io::Write::write_all(&mut file, bytes).with_context(|| format!("cannot write {}", temporary.display()))?;
    }
    for ((path, _), temporary) in files.iter().zip(temporaries) {
        std::fs::rename(temporary, path).with_context(|| format!("cannot rename {} to {}", temporary.display(), path.display()))?;
    }
    Ok(())
}

/// `DIR/.NAME.keel-PID.tmp`: in the final name's directory, so the rename cannot cross a
/// filesystem; hidden and per-process, so two builds never share one.
fn temporary_name(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or(path.as_os_str()));
    name.push(format!(".keel-{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Removes an output and its documents after a failed build, so no document of a previous
/// build is left to describe whatever is (or is no longer) at the output's name.
pub fn remove_with_documents(output: &Path) {
    for path in [output.to_path_buf(), sbom_path(output), provenance_path(output)] {
        let _ = std::fs::remove_file(path);
    }
}

fn documents_report(sbom_file: &Path, sbom: &keel_sbom::Sbom, provenance_file: &Path) -> String {
    let packages = sbom.packages.len() + 1;
    format!("sbom: {} ({packages} packages, {} files)\nprovenance: {}\n", sbom_file.display(), sbom.files.len(), provenance_file.display())
}

/// What the documents of one image build need to know.
pub struct ImageBuild<'a> {
    pub output: &'a Path,
    pub sector_size: SectorSize,
    /// Each /usr slot built (`USR-A`, `USR-B`) with the manifest its initrd trusts.
    pub slots: &'a [(&'static str, ImageManifest)],
    /// The trees the image was made from (/usr of each slot, OEM), named by their digest.
    pub trees: Vec<&'a PathBuf>,
    pub oem_tree: Option<&'a Path>,
    /// What the ESP's UKIs were built from, when the image has them.
    pub ukis: Option<UkiSources<'a>>,
    /// Further input files (the UKIs' kernel, keel-init, stub, certificate).
    pub inputs: Vec<&'a PathBuf>,
    /// What the build wrote besides the image (manifests; UKIs with their initrds and those initrds' documents).
    pub outputs: Vec<PathBuf>,
    pub invocation: &'a Invocation,
}

/// Writes the image's SBOM and provenance, measured from the image as written; returns the
/// lines that say where.
pub fn write_image_documents(build: &ImageBuild) -> anyhow::Result<String> {
    let base = build_directory()?;
    let slots: Vec<UsrSlot> = build.slots.iter().map(|(partition, manifest)| UsrSlot { partition, usr: &manifest.usr }).collect();
    // The whole image's digest and the partitions' are gigabytes of hashing each: one core each.
    let (contents, image_sha256) = std::thread::scope(|scope| {
        let image_sha256 = scope.spawn(|| keel_sbom::image::sha256_of_file(build.output));
        let contents = keel_sbom::image::measure_image(build.output, build.sector_size, &slots, build.oem_tree);
        let image_sha256 = image_sha256.join().map_err(|_| anyhow::anyhow!("hashing {} panicked", build.output.display()));
        anyhow::Ok((contents?, image_sha256??))
    })?;
    let dpkg = DpkgDatabase::read(Path::new("/")).context("reading dpkg's database for the SBOM and provenance")?;
    let ukis = build.ukis.as_ref().map(|sources| keel_sbom::image::measure_ukis(sources, &dpkg)).transpose()?;
    let described = keel_sbom::image::image_sbom(&file_name(build.output), &image_sha256, &contents, ukis.as_ref(), &dpkg);
    let sbom_text = described.sbom.to_spdx_json(build.invocation.epoch);
    let sbom_file = sbom_path(build.output);

    let mut inputs = Vec::new();
    for tree in &build.trees {
        inputs.push(ResolvedDependency { name: portable_path(tree, &base), sha256: keel_sbom::image::tree_digest(tree)? });
    }
    for file in &build.inputs {
        let bytes = std::fs::read(file).with_context(|| format!("cannot read {} for the provenance", file.display()))?;
        inputs.push(ResolvedDependency { name: input_name(file, &base, &dpkg), sha256: sha256_hex(&bytes) });
    }
    for program in IMAGE_TOOLS {
        inputs.extend(tool(program, &dpkg)?);
    }
    let mut outputs = vec![ResolvedDependency { name: portable_path(build.output, &base), sha256: image_sha256 }];
    for file in &build.outputs {
        outputs.push(file_digest(file, &base)?);
    }
    outputs.push(output_digest(&sbom_file, sbom_text.as_bytes(), &base));
    let provenance = build.invocation.provenance(&base, inputs, outputs);
    let provenance_file = provenance_path(build.output);
    write_together(&[(&sbom_file, sbom_text.as_bytes()), (&provenance_file, provenance.to_json().as_bytes())])?;
    let warnings: String = described.warnings.iter().map(|warning| format!("{warning}\n")).collect();
    Ok(warnings + &documents_report(&sbom_file, &described.sbom, &provenance_file))
}

fn file_digest(path: &Path, base: &Path) -> anyhow::Result<ResolvedDependency> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {} for the provenance", path.display()))?;
    Ok(output_digest(path, &bytes, base))
}

fn build_directory() -> anyhow::Result<PathBuf> {
    std::env::current_dir().context("cannot tell the current directory (paths in the provenance are relative to it)")
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|name| name.to_string_lossy().to_string()).unwrap_or_else(|| path.to_string_lossy().to_string())
}

fn output_digest(path: &Path, bytes: &[u8], base: &Path) -> ResolvedDependency {
    ResolvedDependency { name: portable_path(path, base), sha256: sha256_hex(bytes) }
}

/// The command's arguments after `keel`, each path below the build directory made relative
/// (`--output=/build/x` too), so the provenance names no build directory.
fn portable_arguments(arguments: &[OsString], base: &Path) -> Vec<String> {
    arguments
        .iter()
        .map(|argument| {
            let text = argument.to_string_lossy().to_string();
            match text.split_once('=') {
                Some((option, value)) if option.starts_with("--") => format!("{option}={}", portable_path(Path::new(value), base)),
                _ => portable_path(Path::new(&text), base),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_test_support::scratch_dir;

    #[test]
    fn a_failed_rename_leaves_none_of_the_files_nor_a_temporary() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-cli-tests"), "write-together");
        let (output, sbom, provenance) = (dir.join("initrd.img"), dir.join("initrd.img.spdx.json"), dir.join("initrd.img.intoto.json"));
        std::fs::write(&sbom, "a previous build's SBOM").unwrap();
        // A directory at the last name: the first two are renamed into place before it fails.
        std::fs::create_dir(&provenance).unwrap();
        std::fs::write(provenance.join("keep"), "").unwrap();
        let result = write_together(&[(&output, b"initrd"), (&sbom, b"sbom"), (&provenance, b"provenance")]);
        assert!(result.is_err());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(left, ["initrd.img.intoto.json"], "only the directory that was there before");
    }

    #[test]
    fn the_files_are_in_place_and_no_temporary_is_left() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-cli-tests"), "write-together-ok");
        let (output, sbom) = (dir.join("initrd.img"), dir.join("initrd.img.spdx.json"));
        std::fs::write(&output, "a previous initrd").unwrap();
        write_together(&[(&output, b"initrd"), (&sbom, b"sbom")]).unwrap();
        assert_eq!(std::fs::read(&output).unwrap(), b"initrd");
        assert_eq!(std::fs::read(&sbom).unwrap(), b"sbom");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    }
}
