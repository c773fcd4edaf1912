//! The /usr filesystem: ext4 made from a directory without mounting it, reproducibly.

use anyhow::{bail, Context};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

const FAKE_TIME: &str = "E2FSPROGS_FAKE_TIME";

/// The options that make `mkfs.ext4 -d` deterministic, given the same tree: fixed UUID,
/// hash seed and creation time. /usr is mounted read-only, so it needs no journal and no
/// reserved blocks.
pub fn make_ext4(tree: &Path, image: &Path, blocks: u64, label: &str, uuid: &str, epoch: u64) -> anyhow::Result<()> {
    // e2fsprogs reads a fake time of 0 as "not set" and stamps the real time instead.
    let epoch = epoch.max(1);
    let file = std::fs::File::create(image).with_context(|| format!("cannot create {}", image.display()))?;
    file.set_len(blocks * 4096).with_context(|| format!("cannot size {}", image.display()))?;
    run(Command::new("mkfs.ext4")
        .env(FAKE_TIME, epoch.to_string())
        .args(["-q", "-F", "-b", "4096", "-L", label, "-U", uuid, "-m", "0", "-O", "^has_journal"])
        .arg("-E")
        .arg(format!("hash_seed={uuid},root_owner=0:0,lazy_itable_init=0,nodiscard"))
        .arg("-d")
        .arg(tree)
        .arg(image)
        .arg(blocks.to_string()))?;
    normalise_times(tree, image, epoch)
}

/// `mkfs.ext4 -d` copies each file's ctime and atime, which no one can set, so two copies
/// of one tree give different images. Every inode's times become `epoch`, through
/// debugfs so that inode checksums stay right; the fake time also fixes the superblock's
/// write time, which debugfs sets when it closes the filesystem.
fn normalise_times(tree: &Path, image: &Path, epoch: u64) -> anyhow::Result<()> {
    let mut commands = String::new();
    let mut paths = vec![String::from("/"), String::from("/lost+found")];
    collect_paths(tree, "", &mut paths)?;
    for path in &paths {
        for field in ["atime", "ctime", "mtime", "crtime"] {
            let _ = writeln!(commands, "sif \"{path}\" {field} @{epoch}");
        }
    }
    let script = image.with_extension("debugfs");
    std::fs::write(&script, commands).with_context(|| format!("cannot write {}", script.display()))?;
    let result = run(Command::new("debugfs").env(FAKE_TIME, epoch.to_string()).arg("-w").arg("-f").arg(&script).arg(image));
    let _ = std::fs::remove_file(&script);
    result
}

fn collect_paths(dir: &Path, prefix: &str, paths: &mut Vec<String>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name().into_string().map_err(|name| anyhow::anyhow!("{name:?} in {} is not UTF-8", dir.display()))?;
        if name.contains(['"', '\\', '\n']) {
            bail!("{name:?} in {}: file names with quotes, backslashes or newlines are not supported", dir.display());
        }
        let path = format!("{prefix}/{name}");
        paths.push(path.clone());
        if entry.file_type().with_context(|| format!("cannot stat {path}"))?.is_dir() {
            collect_paths(&entry.path(), &path, paths)?;
        }
    }
    Ok(())
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
