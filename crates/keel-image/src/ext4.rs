//! The image's ext4 filesystems (/usr, and OEM when the builder gives one), made from a
//! directory without mounting it, reproducibly.

use anyhow::{bail, Context};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

const FAKE_TIME: &str = "E2FSPROGS_FAKE_TIME";
const BLOCK_BYTES: u64 = 4096;

/// What a tree may hold and whose its files become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contents {
    /// /usr: the tree as it is, owners and special files included (a distribution's /usr
    /// has files of other groups, such as setgid helpers).
    System,
    /// OEM: what a vendor ships, regular files, directories and symlinks, all owned by root
    /// whoever owns them on the build host. A device node or FIFO has no use there and
    /// would carry the host's numbers into every machine.
    Vendor,
}

/// One filesystem to make: `blocks` 4 KiB blocks from `tree`, named `label`, with `uuid`
/// (also its directory hash seed) and every time `epoch`.
pub struct Ext4<'a> {
    pub tree: &'a Path,
    pub blocks: u64,
    pub label: &'a str,
    pub uuid: &'a str,
    pub epoch: u64,
    pub contents: Contents,
}

/// The options that make `mkfs.ext4 -d` deterministic, given the same tree: fixed UUID,
/// hash seed and creation time. Both filesystems are mounted read-only by keel-init, so
/// they have no journal and no reserved blocks; a vendor who writes to OEM from the
/// running system can add a journal then (`tune2fs -j`).
pub fn make_ext4(fs: &Ext4, image: &Path) -> anyhow::Result<()> {
    // e2fsprogs reads a fake time of 0 as "not set" and stamps the real time instead.
    let epoch = fs.epoch.max(1);
    let mut inodes = vec![String::from("/"), String::from("/lost+found")];
    let file_bytes = collect_paths(fs.tree, "", fs.contents, &mut inodes, &mut HashSet::new())?;
    let fs_bytes = fs.blocks * BLOCK_BYTES;
    let sizes = format!("{} ({file_bytes} bytes of files) into the {} filesystem ({fs_bytes} bytes)", fs.tree.display(), fs.label);
    if file_bytes > fs_bytes {
        bail!("{sizes} does not go: make the tree smaller or its partition bigger");
    }
    let file = std::fs::File::create(image).with_context(|| format!("cannot create {}", image.display()))?;
    file.set_len(fs_bytes).with_context(|| format!("cannot size {}", image.display()))?;
    run(Command::new("mkfs.ext4")
        .env(FAKE_TIME, epoch.to_string())
        .args(["-q", "-F", "-b", "4096", "-L", fs.label, "-U", fs.uuid, "-m", "0", "-O", "^has_journal"])
        .arg("-E")
        .arg(format!("hash_seed={},root_owner=0:0,lazy_itable_init=0,nodiscard", fs.uuid))
        .arg("-d")
        .arg(fs.tree)
        .arg(image)
        .arg(fs.blocks.to_string()))
    .with_context(|| format!("cannot make {sizes}"))?;
    normalise_inodes(&inodes, image, epoch, fs.contents)
}

/// `mkfs.ext4 -d` copies each file's ctime and atime, which no one can set, so two copies
/// of one tree give different images. Every inode's times become `epoch`, through
/// debugfs so that inode checksums stay right; the fake time also fixes the superblock's
/// write time, which debugfs sets when it closes the filesystem. It copies the host's
/// owners too, which a vendor tree must not carry.
fn normalise_inodes(paths: &[String], image: &Path, epoch: u64, contents: Contents) -> anyhow::Result<()> {
    let mut commands = String::new();
    for path in paths {
        for field in ["atime", "ctime", "mtime", "crtime"] {
            let _ = writeln!(commands, "sif \"{path}\" {field} @{epoch}");
        }
        if contents == Contents::Vendor {
            let _ = writeln!(commands, "sif \"{path}\" uid 0\nsif \"{path}\" gid 0");
        }
    }
    let script = image.with_extension("debugfs");
    std::fs::write(&script, commands).with_context(|| format!("cannot write {}", script.display()))?;
    let result = run(Command::new("debugfs").env(FAKE_TIME, epoch.to_string()).arg("-w").arg("-f").arg(&script).arg(image));
    let _ = std::fs::remove_file(&script);
    result
}

/// Adds the path of everything under `dir` to `paths` and returns the bytes its regular
/// files take at least, in whole blocks: each hard-linked file once, and a sparse file
/// by what it allocates (mkfs keeps its holes), so the count never refuses a tree that fits.
fn collect_paths(dir: &Path, prefix: &str, contents: Contents, paths: &mut Vec<String>, linked: &mut HashSet<(u64, u64)>) -> anyhow::Result<u64> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    entries.sort_by_key(|entry| entry.file_name());
    let mut file_bytes = 0;
    for entry in entries {
        let name = entry.file_name().into_string().map_err(|name| anyhow::anyhow!("{name:?} in {} is not UTF-8", dir.display()))?;
        if name.contains(['"', '\\', '\n']) {
            bail!("{name:?} in {}: file names with quotes, backslashes or newlines are not supported", dir.display());
        }
        let path = format!("{prefix}/{name}");
        let host_path = entry.path();
        let metadata = entry.metadata().with_context(|| format!("cannot stat {}", host_path.display()))?;
        let file_type = metadata.file_type();
        if contents == Contents::Vendor && !(file_type.is_file() || file_type.is_dir() || file_type.is_symlink()) {
            let kind = if file_type.is_block_device() || file_type.is_char_device() { "a device" } else { "a FIFO or socket" };
            bail!("{} is {kind}: a vendor tree holds only regular files, directories and symlinks", host_path.display());
        }
        paths.push(path.clone());
        if file_type.is_dir() {
            file_bytes += collect_paths(&host_path, &path, contents, paths, linked)?;
        } else if file_type.is_file() && (metadata.nlink() == 1 || linked.insert((metadata.dev(), metadata.ino()))) {
            file_bytes += metadata.len().min(metadata.blocks() * 512).next_multiple_of(BLOCK_BYTES);
        }
    }
    Ok(file_bytes)
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let program = command.get_program().to_string_lossy().to_string();
    let output = command.output().with_context(|| format!("cannot run {program} (is e2fsprogs installed?)"))?;
    // debugfs reports a failed command on stderr and still exits 0.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let failed_line = stderr.lines().find(|line| !line.starts_with("debugfs ") && !line.trim().is_empty());
    if !output.status.success() || (program == "debugfs" && failed_line.is_some()) {
        bail!("{program} failed ({}): {}", output.status, stderr.trim());
    }
    Ok(())
}
