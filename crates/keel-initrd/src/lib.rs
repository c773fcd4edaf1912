//! `keel initrd build`: a keel initrd as a reproducible, compressed newc cpio holding
//! keel-init as /init, the image manifest, the kernel modules keel-init loads (with their
//! dependencies), the storage drivers it loads when their devices show up, for each root
//! filesystem it supports the modules that mount it, loaded only when ROOT has that
//! filesystem, the program (with its libraries) that makes each format first boot may make
//! (the root filesystems and `--mkfs`), and the image's Ignition base configs, if it has any.
//!
//! The base configs are validated with keel-ignition, the engine keel-init runs, so that a
//! config keel-init would refuse stops the build instead of every first boot.

mod cpio;
mod elf;
mod ignition;

pub use cpio::{Archive, Node};
pub use elf::{library_closure, HostFile};
pub use keel_sbom::initrd::{PackedFile, Source};

use anyhow::{bail, Context};
use keel_kmod::{alias_pattern_supported, host_storage_modaliases, module_name, DriverTable, LoadEntry, ModuleIndex};
use keel_manifest::{
    initrd_mkfs_path, ImageManifest, FW_CFG_MODULES, INITRD_DRIVERS_PATH, INITRD_MANIFEST_PATH, INITRD_MODULES_PATH, INITRD_ON_DEMAND_MODULES_DIR,
    MKFS_FORMATS, ROOT_FILESYSTEMS,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const DEFAULT_MODULES: &str = include_str!("../../../initrd/modules");
const DEFAULT_DRIVERS: &str = include_str!("../../../initrd/drivers");
/// ext4 is the default root filesystem and built into Debian's kernel. XFS and btrfs add
/// about a megabyte of modules each, so an image builder asks for them.
pub const DEFAULT_ROOT_FILESYSTEMS: [&str; 1] = ["ext4"];
/// Module lists besides the root filesystems' that keel-init loads only when a boot uses them
/// (INITRD_ON_DEMAND_MODULES_DIR): the ESP's vfat, with the codepage and charset it mounts
/// with by default, which only first boot mounts; QEMU's firmware config, which only first
/// boot reads. Under emulation each module costs a later boot tens of milliseconds to load.
const ON_DEMAND: [(&str, &[&str]); 2] = [("vfat", &["vfat", "nls_cp437", "nls_ascii"]), (FW_CFG_MODULES, &["qemu_fw_cfg"])];

fn data_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#'))
}

/// The modules of `initrd/modules`.
pub fn default_modules() -> Vec<String> {
    data_lines(DEFAULT_MODULES).map(str::to_string).collect()
}

/// Which storage drivers an initrd carries (`--drivers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverChoice {
    /// `initrd/drivers`: virtio, NVMe, SATA and SCSI disks, whichever of them the kernel
    /// has as modules.
    Default,
    /// What drives the disks of the machine whose sysfs is at this path (`/sys`: the
    /// build machine), like dracut's hostonly.
    Host(PathBuf),
    /// These modules, each of which the kernel must have.
    Named(Vec<String>),
}

impl DriverChoice {
    /// `default`, `host`, or a comma-separated list of module names.
    pub fn parse(text: &str) -> anyhow::Result<DriverChoice> {
        Ok(match text {
            "default" => DriverChoice::Default,
            "host" => DriverChoice::Host(PathBuf::from("/sys")),
            list => {
                let names: Vec<String> = list.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect();
                if names.is_empty() {
                    bail!("--drivers takes default, host, or a list of kernel modules such as virtio_pci,virtio_blk");
                }
                DriverChoice::Named(names)
            }
        })
    }
}

/// The drivers a choice comes to for one kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChosenDrivers {
    /// Packed, with their dependencies, and loaded when a device asks for them.
    pub packed: Vec<String>,
    /// Built into the kernel: nothing to pack or load.
    pub built_in: Vec<String>,
    /// Of the default set, what this kernel does not have.
    pub not_in_kernel: Vec<String>,
    /// Packed drivers that name no device in `modules.alias` (a library such as
    /// `virtio_ring`, named by mistake): nothing will ever ask keel-init to load them.
    pub never_asked_for: Vec<String>,
}

impl ChosenDrivers {
    /// One line for the builder's output.
    pub fn describe(&self) -> String {
        let list = |names: &[String]| if names.is_empty() { "none".to_string() } else { names.join(" ") };
        let mut text = format!("drivers: {}; built into the kernel: {}", list(&self.packed), list(&self.built_in));
        if !self.not_in_kernel.is_empty() {
            text.push_str(&format!("; not in this kernel, left out: {}", self.not_in_kernel.join(" ")));
        }
        if !self.never_asked_for.is_empty() {
            text.push_str(&format!("; WARNING: no device asks for {}, so keel-init will never load them", self.never_asked_for.join(" ")));
        }
        text
    }
}

/// What `choice` comes to with the kernel `index` describes.
pub fn choose_drivers(choice: &DriverChoice, index: &ModuleIndex) -> anyhow::Result<ChosenDrivers> {
    let (names, missing_is_fine): (Vec<String>, bool) = match choice {
        DriverChoice::Default => (data_lines(DEFAULT_DRIVERS).map(str::to_string).collect(), true),
        DriverChoice::Host(sysfs) => {
            let mut names = Vec::new();
            for modalias in host_storage_modaliases(sysfs)? {
                names.extend(index.modules_matching(&modalias));
            }
            (names, true)
        }
        DriverChoice::Named(names) => (names.clone(), false),
    };
    let mut chosen = ChosenDrivers::default();
    for name in names.iter().map(|name| module_name(name)) {
        let list = if !index.has(&name) {
            if !missing_is_fine {
                bail!("kernel module {name} (--drivers) is neither in {} nor built in", index.dir().display());
            }
            &mut chosen.not_in_kernel
        } else if index.is_builtin(&name) {
            &mut chosen.built_in
        } else {
            &mut chosen.packed
        };
        if !list.contains(&name) {
            list.push(name);
        }
    }
    chosen.never_asked_for = chosen.packed.iter().filter(|name| !index.aliases_of(name).any(|pattern| pattern.contains(':'))).cloned().collect();
    Ok(chosen)
}

/// Parses `ext4,xfs`: the root filesystems an initrd is to support.
pub fn parse_root_filesystems(list: &str) -> anyhow::Result<Vec<String>> {
    parse_names(list, &ROOT_FILESYSTEMS, "a root filesystem keel supports")
}

/// Parses `vfat,swap`: the formats a first-boot Ignition config may make (`--mkfs`).
pub fn parse_mkfs_formats(list: &str) -> anyhow::Result<Vec<String>> {
    parse_names(list, &MKFS_FORMATS, "a format keel can make")
}

/// A comma-separated list of at least one of `accepted`; `what` says what each name is.
fn parse_names(list: &str, accepted: &[&str], what: &str) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = list.split(',').map(str::trim).filter(|name| !name.is_empty()).map(str::to_string).collect();
    for name in &names {
        if !accepted.contains(&name.as_str()) {
            bail!("{name:?} is not {what}: use {}", accepted.join(", "));
        }
    }
    if names.is_empty() {
        bail!("name at least one of {}", accepted.join(", "));
    }
    Ok(names)
}

/// Where the build host keeps its mkfs programs, below `InitrdSpec::host_root`.
const HOST_MKFS_DIR: &str = "usr/sbin";

/// The build host's program that makes `format`, one of MKFS_FORMATS. The filesystems' own
/// names, except where the usual name is another: mkfs.vfat is only a link to mkfs.fat,
/// and swap areas are made by mkswap.
fn host_mkfs_program(format: &str) -> String {
    match format {
        "vfat" => "mkfs.fat".to_string(),
        "swap" => "mkswap".to_string(),
        filesystem => format!("mkfs.{filesystem}"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Lz4,
    Xz,
    Zstd,
}

impl Compression {
    /// What `keel initrd build` compresses with unless told otherwise. The kernel unpacks
    /// the initrd before /init runs, so the choice is by boot time first: for the default
    /// initrd under TCG (counted in instructions, `-icount`), xz's unpacking put /init 0.77 s
    /// later than no compression at all, zstd's 0.12 s, lz4's 0.03 s. zstd takes most of that
    /// gain for 8 % more bytes than xz; lz4 the rest for 50 % more (bytes a firmware reads
    /// from the ESP). `cargo xtask bench boot` boots every choice.
    pub const DEFAULT: Compression = Compression::Zstd;

    pub const ALL: [Compression; 5] = [Compression::Lz4, Compression::Zstd, Compression::Xz, Compression::Gzip, Compression::None];

    /// The name `--compression` takes.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    pub fn parse(name: &str) -> anyhow::Result<Compression> {
        Compression::ALL.into_iter().find(|compression| compression.name() == name).with_context(|| {
            let names: Vec<&str> = Compression::ALL.iter().map(|compression| compression.name()).collect();
            format!("unknown compression {name:?}: use {}", names.join(", "))
        })
    }

    /// The compressor and flags: single-threaded and without names or times, so the same
    /// archive always compresses to the same bytes. xz must use CRC32: the kernel's
    /// decoder knows no other check.
    pub fn command(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(("gzip", &["-9", "-n", "-c"])),
            // The kernel unpacks only lz4's legacy frame format.
            Compression::Lz4 => Some(("lz4", &["-l", "-9", "-q", "-c"])),
            Compression::Xz => Some(("xz", &["--check=crc32", "--lzma2=preset=9e,dict=4MiB", "-T1", "-c"])),
            Compression::Zstd => Some(("zstd", &["-19", "-T1", "-q", "-c"])),
        }
    }
}

/// Everything an initrd is made from.
#[derive(Clone, Debug)]
pub struct InitrdSpec {
    /// The static keel-init binary.
    pub init: PathBuf,
    pub manifest: ImageManifest,
    /// The kernel's module directory, `/lib/modules/<version>`, with modules.dep.
    pub modules_dir: PathBuf,
    pub modules: Vec<String>,
    pub drivers: DriverChoice,
    /// Filesystems ROOT may have (`ext4`, `xfs`, `btrfs`): their mkfs and modules are packed.
    pub root_filesystems: Vec<String>,
    /// The formats a first-boot Ignition config may make (MKFS_FORMATS): their programs are
    /// packed, as are the root filesystems' whether listed here or not (a blank ROOT is
    /// formatted with them). No modules: making a filesystem needs none.
    pub mkfs_formats: Vec<String>,
    /// Where the mkfs programs and their libraries come from (`/` for the build host).
    pub host_root: PathBuf,
    /// Ignition's base configs (`base.d/*.ign`, `base.platform.d/<platform>/*.ign`), packed
    /// under INITRD_IGNITION_DIR.
    pub ignition_base: Option<PathBuf>,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// An initrd's tree, which drivers went into it, and what Ignition warned of its base
/// configs (one line each, naming the file).
pub struct Packed {
    pub archive: Archive,
    /// Where each regular file's bytes came from, by its path in `archive` (no leading `/`):
    /// what the SBOM says of it.
    pub sources: BTreeMap<String, Source>,
    pub drivers: ChosenDrivers,
    pub ignition_warnings: Vec<String>,
}

impl Packed {
    /// Every regular file of the archive, in its order, with where it came from.
    pub fn files(&self) -> anyhow::Result<Vec<PackedFile<'_>>> {
        let mut files = Vec::new();
        for path in self.archive.paths() {
            if let Some(Node::File { data, .. }) = self.archive.get(path) {
                let source = self.sources.get(path).with_context(|| format!("/{path} was packed without its source"))?;
                files.push(PackedFile { path, data, source });
            }
        }
        Ok(files)
    }
}

/// The tree being packed and each file's source, recorded as it is packed.
#[derive(Default)]
pub(crate) struct Tree {
    archive: Archive,
    sources: BTreeMap<String, Source>,
}

impl Tree {
    pub(crate) fn file(&mut self, path: &str, data: Vec<u8>, mode: u32, source: Source) {
        self.archive.insert(path, Node::File { data, mode });
        self.sources.insert(path.trim_matches('/').to_string(), source);
    }

    fn contains(&self, path: &str) -> bool {
        self.archive.contains(path)
    }
}

/// The uncompressed tree.
pub fn archive(spec: &InitrdSpec) -> anyhow::Result<Packed> {
    let mut tree = Tree::default();
    tree.file("/init", read(&spec.init)?, 0o755, Source::KeelBinary(spec.init.clone()));
    // The kernel opens /dev/console for init's stdio before /init runs, so it must be here.
    tree.archive.insert("/dev/console", Node::CharDevice { major: 5, minor: 1, mode: 0o600 });
    tree.file(INITRD_MANIFEST_PATH, spec.manifest.to_json().into_bytes(), 0o644, Source::Generated);
    let ignition_warnings = match &spec.ignition_base {
        Some(dir) => ignition::insert_base_configs(&mut tree, dir)?,
        None => Vec::new(),
    };

    let version = spec.modules_dir.file_name().context("the module directory has no name")?.to_string_lossy();
    let index = ModuleIndex::read(&spec.modules_dir)?;
    let mut wanted = spec.modules.clone();
    wanted.extend(index.crypto_providers(spec.manifest.usr.verity.algorithm.name()));
    let base = index.closure(&wanted)?;
    insert_module_list(&mut tree, spec, &version, INITRD_MODULES_PATH, &base)?;

    // A driver's list names every file it needs, even those another driver or the base
    // list loads too: keel-init loads drivers in parallel, in any order.
    let chosen = choose_drivers(&spec.drivers, &index)?;
    let mut drivers = DriverTable::default();
    for driver in &chosen.packed {
        if let Some(pattern) = index.aliases_of(driver).find(|pattern| !alias_pattern_supported(pattern)) {
            bail!("{driver}'s alias {pattern:?} uses a POSIX character class, which keel-init does not match");
        }
        let files = insert_modules(&mut tree, spec, &version, &index.closure(std::slice::from_ref(driver))?)?;
        drivers.insert(driver, files, index.aliases_of(driver).map(str::to_string));
    }
    tree.file(INITRD_DRIVERS_PATH, drivers.to_text().into_bytes(), 0o644, Source::Generated);

    let root_filesystems = spec.root_filesystems.iter().map(|filesystem| (filesystem.as_str(), vec![filesystem.clone()]));
    let others = ON_DEMAND.iter().map(|(name, modules)| (*name, modules.iter().map(|module| module.to_string()).collect()));
    for (name, modules) in root_filesystems.chain(others) {
        let extra: Vec<LoadEntry> = index.closure(&modules)?.into_iter().filter(|m| !base.iter().any(|b| b.path == m.path)).collect();
        insert_module_list(&mut tree, spec, &version, &format!("{INITRD_ON_DEMAND_MODULES_DIR}/{name}"), &extra)?;
    }
    let formats: BTreeSet<&str> = spec.root_filesystems.iter().chain(&spec.mkfs_formats).map(String::as_str).collect();
    for format in formats {
        insert_mkfs(&mut tree, spec, format)?;
    }
    Ok(Packed { archive: tree.archive, sources: tree.sources, drivers: chosen, ignition_warnings })
}

/// Packs the host's program that makes `format` where keel-init looks for it, with its ELF
/// interpreter and libraries; a library another program brought already is packed once.
fn insert_mkfs(tree: &mut Tree, spec: &InitrdSpec, format: &str) -> anyhow::Result<()> {
    let path_in_root = format!("/{HOST_MKFS_DIR}/{}", host_mkfs_program(format));
    let host_program = spec.host_root.join(path_in_root.trim_start_matches('/'));
    tree.file(&initrd_mkfs_path(format), read(&host_program)?, 0o755, Source::Host { path_in_root, host_path: host_program.clone() });
    for library in library_closure(&spec.host_root, &host_program)? {
        if !tree.contains(&library.initrd_path) {
            let source = Source::Host { path_in_root: library.initrd_path.clone(), host_path: library.host_path.clone() };
            tree.file(&library.initrd_path, read(&library.host_path)?, 0o755, source);
        }
    }
    Ok(())
}

/// Packs `modules` (paths relative to the module directory) and returns them as entries
/// of a load list, with their paths in the initrd, in the same order.
fn insert_modules(tree: &mut Tree, spec: &InitrdSpec, version: &str, modules: &[LoadEntry]) -> anyhow::Result<Vec<LoadEntry>> {
    let mut entries = Vec::new();
    for module in modules {
        let initrd_path = format!("/lib/modules/{version}/{}", module.path);
        if !tree.contains(&initrd_path) {
            let file = spec.modules_dir.join(&module.path);
            let source = Source::KernelModule { modules_dir: spec.modules_dir.clone(), file: file.clone() };
            tree.file(&initrd_path, read(&file)?, 0o644, source);
        }
        entries.push(LoadEntry { path: initrd_path, optional: module.optional });
    }
    Ok(entries)
}

/// Packs `modules` (dependencies first) and writes their load list at `list_path`.
fn insert_module_list(tree: &mut Tree, spec: &InitrdSpec, version: &str, list_path: &str, modules: &[LoadEntry]) -> anyhow::Result<()> {
    let load_list = LoadEntry::list_text(&insert_modules(tree, spec, version, modules)?);
    tree.file(list_path, load_list.into_bytes(), 0o644, Source::Generated);
    Ok(())
}

/// The initrd's bytes, its drivers, and the warnings about its Ignition base configs.
pub fn build(spec: &InitrdSpec, compression: Compression) -> anyhow::Result<(Vec<u8>, ChosenDrivers, Vec<String>)> {
    let packed = archive(spec)?;
    Ok((compress(packed.archive.to_newc(), compression)?, packed.drivers, packed.ignition_warnings))
}

/// `data` compressed as `compression` says, reproducibly (see `Compression::command`).
pub fn compress(data: Vec<u8>, compression: Compression) -> anyhow::Result<Vec<u8>> {
    let Some((program, args)) = compression.command() else { return Ok(data) };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let output = child.wait_with_output().with_context(|| format!("{program} failed"))?;
    writer.join().map_err(|_| anyhow::anyhow!("writing to {program} panicked"))?.with_context(|| format!("cannot feed {program}"))?;
    if !output.status.success() {
        bail!("{program} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(output.stdout)
}
