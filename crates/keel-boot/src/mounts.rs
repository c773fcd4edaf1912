use anyhow::{bail, Context};
use nix::mount::{mount, MsFlags};
use std::path::Path;

/// Makes the directory `target` if missing and insists that it, and every directory on
/// the way to it, is a directory itself, not a symlink: ROOT is writable by whoever can
/// write the disk, and a link there could carry a mount (or the overlay's work directory)
/// anywhere.
pub fn real_directory(target: &Path) -> anyhow::Result<()> {
    let mut path = std::path::PathBuf::new();
    for component in target.components() {
        path.push(component);
        match std::fs::DirBuilder::new().create(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error).with_context(|| format!("cannot create {}", path.display())),
        }
        let meta = path.symlink_metadata().with_context(|| format!("cannot stat {}", path.display()))?;
        if !meta.is_dir() {
            let what = if meta.file_type().is_symlink() { "a symlink" } else { "not a directory" };
            bail!("{} is {what}: refusing to mount or work under it", path.display());
        }
    }
    Ok(())
}

/// Mounts `source` on `target` (made if missing), naming both in the error.
pub fn mount_at(source: &str, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> anyhow::Result<()> {
    real_directory(target)?;
    mount(Some(source), target, fstype, flags, data)
        .with_context(|| format!("cannot mount {source} on {} (type {}, options {:?})", target.display(), fstype.unwrap_or("-"), data.unwrap_or("")))
}

/// The kernel's pseudo-filesystems, as every init needs them.
pub fn mount_pseudo_filesystems() -> anyhow::Result<()> {
    let secure = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount_at("proc", Path::new("/proc"), Some("proc"), secure, None)?;
    mount_at("sysfs", Path::new("/sys"), Some("sysfs"), secure, None)?;
    mount_at("devtmpfs", Path::new("/dev"), Some("devtmpfs"), MsFlags::MS_NOSUID, Some("mode=0755"))?;
    mount_at("tmpfs", Path::new("/run"), Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755"))?;
    Ok(())
}

/// Moves a mount, keeping everything under it.
pub fn move_mount(from: &Path, to: &Path) -> anyhow::Result<()> {
    real_directory(to)?;
    mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .with_context(|| format!("cannot move the mount {} to {}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ROOT is untrusted: `/.etc-work` (or `/etc`, `/usr`, or a directory above them) planted
    /// as a symlink must not lead a mount or the overlay's work directory elsewhere.
    #[test]
    fn mount_points_and_work_directories_are_never_followed_through_a_symlink() {
        let root = std::env::temp_dir().join(format!("keel-real-directory-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let elsewhere = root.join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let sysroot = root.join("sysroot");
        std::fs::create_dir_all(&sysroot).unwrap();
        std::os::unix::fs::symlink(&elsewhere, sysroot.join(".etc-work")).unwrap();
        std::os::unix::fs::symlink("elsewhere-relative", sysroot.join("var")).unwrap();

        let error = real_directory(&sysroot.join(".etc-work")).unwrap_err().to_string();
        assert!(error.contains("is a symlink"), "{error}");
        let error = real_directory(&sysroot.join("var/lib/mount")).unwrap_err().to_string();
        assert!(error.contains("var is a symlink"), "{error}");
        std::fs::write(sysroot.join("etc"), "a file").unwrap();
        assert!(real_directory(&sysroot.join("etc")).unwrap_err().to_string().contains("not a directory"));
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "something was created through the link");

        real_directory(&sysroot.join("usr/share")).unwrap();
        real_directory(&sysroot.join("usr/share")).unwrap();
        assert!(sysroot.join("usr/share").symlink_metadata().unwrap().is_dir());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
