use crate::devices::FoundDevice;
use crate::mounts::mount_at;
use anyhow::{bail, Context};
use keel_cmdline::{BootParams, DeviceSpec};
use keel_disk::{probe_filesystem, FsKind, Guid, Probe};
use nix::mount::MsFlags;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// Where the initrd builder puts mkfs.ext4.
pub const MKFS_EXT4: &str = "/usr/sbin/mkfs.ext4";
const DEFAULT_ROOT_LABEL: &str = "ROOT";

/// What `prepare_root` did, for the log.
pub struct RootOutcome {
    pub filesystem: FsKind,
    pub formatted: bool,
}

/// Formats ROOT when it is blank, and only then, and mounts it read-write at `sysroot`.
pub fn mount_root(params: &BootParams, root: &FoundDevice, sysroot: &Path) -> anyhow::Result<RootOutcome> {
    let node = root.node.display().to_string();
    let probe = probe_filesystem(&mut File::open(&root.node).with_context(|| format!("cannot open {node}"))?)
        .with_context(|| format!("cannot read {node}"))?;
    let (kind, formatted) = match probe {
        Probe::Filesystem(fs) => (fs.kind, false),
        Probe::Blank => {
            let label = match &params.root {
                DeviceSpec::Label(label) => label.as_str(),
                _ => DEFAULT_ROOT_LABEL,
            };
            format_ext4(&node, label)?;
            (FsKind::Ext4, true)
        }
        Probe::Unknown => bail!(
            "{node} holds data that is not a filesystem keel recognises; it is left untouched rather than formatted over"
        ),
    };
    let fstype = params.root_fstype.as_deref().unwrap_or(kind.mount_type());
    mount_at(&node, sysroot, Some(fstype), MsFlags::empty(), params.root_flags.as_deref())?;
    Ok(RootOutcome { filesystem: kind, formatted })
}

/// A random GUID that does not wait for the kernel's entropy pool: early in boot
/// getrandom() would block, and libuuid (inside mkfs) instead retries for about a second
/// per UUID. Identifiers need to be unique, not secret, so GRND_INSECURE is the right call.
fn early_random_guid() -> anyhow::Result<Guid> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        filled += rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::INSECURE)
            .context("getrandom failed")?;
    }
    Ok(Guid::from_random_bytes(bytes))
}

fn format_ext4(node: &str, label: &str) -> anyhow::Result<()> {
    let uuid = early_random_guid()?.to_string();
    let hash_seed = early_random_guid()?.to_string();
    let output = Command::new(MKFS_EXT4)
        .args(["-q", "-F", "-L", label, "-U", &uuid, "-E", &format!("hash_seed={hash_seed}"), node])
        .output()
        .with_context(|| format!("cannot run {MKFS_EXT4}"))?;
    if !output.status.success() {
        bail!("{MKFS_EXT4} {node} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Directories every root needs and symlinks into /usr (Flatcar's merged-/usr baselayout).
/// Made only where missing: what the system put there itself is never replaced.
pub fn ensure_skeleton(sysroot: &Path) -> anyhow::Result<()> {
    const DIRS: [(&str, u32); 14] = [
        ("usr", 0o755), ("etc", 0o755), ("var", 0o755), ("run", 0o755), ("proc", 0o555), ("sys", 0o555),
        ("dev", 0o755), ("home", 0o755), ("root", 0o700), ("mnt", 0o755), ("opt", 0o755), ("srv", 0o755),
        ("media", 0o755), ("tmp", 0o1777),
    ];
    const LINKS: [(&str, &str); 4] = [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")];
    for (name, mode) in DIRS {
        let path = sysroot.join(name);
        if path.symlink_metadata().is_err() {
            std::fs::DirBuilder::new().mode(mode).create(&path).with_context(|| format!("cannot create {}", path.display()))?;
            // The umask may have narrowed the mode (tmp needs its sticky bit).
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set the mode of {}", path.display()))?;
        }
    }
    for (name, target) in LINKS {
        let path = sysroot.join(name);
        if path.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(target, &path).with_context(|| format!("cannot create {}", path.display()))?;
        }
    }
    Ok(())
}

/// /etc is the OS's defaults in /usr with the machine's own changes on top, kept on ROOT.
pub fn mount_etc_overlay(sysroot: &Path, os: &str) -> anyhow::Result<()> {
    let lower = sysroot.join("usr/share").join(os).join("etc");
    if !lower.is_dir() {
        bail!("{} does not exist: the /usr image has no default /etc for {os:?}", lower.display());
    }
    let upper = sysroot.join("etc");
    let work = sysroot.join(".etc-work");
    for dir in [&upper, &work] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let options = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
    mount_at("overlay", &upper, Some("overlay"), MsFlags::empty(), Some(&options))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn skeleton_is_made_once_and_never_replaces_anything() {
        let root = std::env::temp_dir().join(format!("keel-skeleton-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::fs::write(root.join("var/keep"), "mine").unwrap();
        std::os::unix::fs::symlink("elsewhere", root.join("lib")).unwrap();

        ensure_skeleton(&root).unwrap();
        ensure_skeleton(&root).unwrap();
        assert_eq!(std::fs::read_link(root.join("sbin")).unwrap(), Path::new("usr/sbin"));
        assert_eq!(std::fs::read_link(root.join("lib")).unwrap(), Path::new("elsewhere"), "an existing link was replaced");
        assert_eq!(std::fs::read_to_string(root.join("var/keep")).unwrap(), "mine");
        assert_eq!(std::fs::metadata(root.join("tmp")).unwrap().permissions().mode() & 0o7777, 0o1777);
        assert_eq!(std::fs::metadata(root.join("root")).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
