use crate::mounts::move_mount;
use anyhow::{bail, Context};
use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
use nix::unistd::{chdir, chroot, execve};
use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
use std::convert::Infallible;
use std::ffi::CString;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub const DEFAULT_INIT: &str = "/sbin/init";
/// include/uapi/linux/magic.h; neither nix nor libc names it.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// Checks that `init` is an executable file inside `sysroot`, resolving symlinks as the
/// new root will see them, while a failure can still be reported and nothing is lost.
pub fn check_init(sysroot: &Path, init: &str) -> anyhow::Result<()> {
    let root = std::fs::File::open(sysroot).with_context(|| format!("cannot open {}", sysroot.display()))?;
    let file = openat2(&root, init, OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::IN_ROOT).map_err(|errno| {
        let what = if errno == rustix::io::Errno::NOENT { "does not exist".to_string() } else { format!("cannot be resolved ({errno})") };
        anyhow::anyhow!("init {init} {what} in the real root")
    })?;
    let stat = rustix::fs::fstat(&file).with_context(|| format!("cannot stat {init}"))?;
    let is_file = rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::RegularFile;
    if !is_file || stat.st_mode & 0o111 == 0 {
        bail!("init {init} in the real root is not an executable file");
    }
    Ok(())
}

/// Moves the pseudo-filesystems into `sysroot`, frees the initramfs, makes `sysroot` the
/// root and executes init there. Returns only on failure.
pub fn switch_root(sysroot: &Path, init: &str, args: &[OsString]) -> anyhow::Result<Infallible> {
    // Checked before anything changes: deleting "/" is only right when it is the initramfs.
    let root_fs = statfs("/").context("cannot statfs /")?.filesystem_type();
    if root_fs != RAMFS_MAGIC && root_fs != TMPFS_MAGIC {
        bail!("/ is not an initramfs (ramfs or tmpfs): refusing to delete its files");
    }
    for mount in ["/dev", "/proc", "/sys", "/run"] {
        move_mount(Path::new(mount), &sysroot.join(&mount[1..]))?;
    }
    let root_dev = std::fs::metadata("/").context("cannot stat /")?.dev();
    free_initramfs(Path::new("/"), root_dev, sysroot);
    chdir(sysroot).with_context(|| format!("cannot enter {}", sysroot.display()))?;
    move_mount(Path::new("."), Path::new("/"))?;
    chroot(".").context("cannot chroot into the real root")?;
    chdir("/").context("cannot enter the new /")?;
    let program = CString::new(init).context("init contains a NUL byte")?;
    let mut argv = vec![program.clone()];
    for arg in args {
        argv.push(CString::new(arg.as_bytes()).context("an init argument contains a NUL byte")?);
    }
    let Err(errno) = execve(&program, &argv, &crate::environment::for_init());
    Err(errno).with_context(|| format!("cannot execute {init}"))
}

/// Deletes the initramfs's files: their memory is only freed when they are unlinked.
/// Only files on the initramfs itself are touched, never anything mounted in it.
/// Failures are ignored: a file left behind costs memory, not correctness.
fn free_initramfs(dir: &Path, root_dev: u64, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = path.symlink_metadata() else { continue };
        if path == keep || meta.dev() != root_dev {
            continue;
        }
        if meta.is_dir() {
            free_initramfs(&path, root_dev, keep);
            let _ = std::fs::remove_dir(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_is_resolved_inside_the_new_root() {
        let root = std::env::temp_dir().join(format!("keel-check-init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // Absolute links point where the host has nothing, so a link followed on the
        // host's side instead of the new root's cannot pass.
        let only_in_new_root = format!("/keel-only-in-the-new-root-{}", std::process::id());
        assert!(!Path::new(&only_in_new_root).exists());
        let init = root.join(&only_in_new_root[1..]).join("init");
        std::fs::create_dir_all(init.parent().unwrap()).unwrap();
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        std::fs::write(&init, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(root.join("usr/lib/systemd/plain"), "not executable").unwrap();
        std::os::unix::fs::symlink(format!("{only_in_new_root}/init"), root.join("usr/sbin/init")).unwrap();
        std::os::unix::fs::symlink("usr/sbin", root.join("sbin")).unwrap();
        // And the other way round: an executable the host has, which the new root lacks.
        let host_only = std::env::current_exe().unwrap();
        assert!(host_only.is_absolute() && !root.join(host_only.strip_prefix("/").unwrap()).exists());
        std::os::unix::fs::symlink(&host_only, root.join("usr/lib/systemd/host-only")).unwrap();

        check_init(&root, "/sbin/init").unwrap();
        check_init(&root, "/usr/sbin/init").unwrap();
        assert!(check_init(&root, "/usr/lib/systemd/host-only").unwrap_err().to_string().contains("does not exist"));
        assert!(check_init(&root, "/usr/lib/systemd/plain").unwrap_err().to_string().contains("not an executable"));
        assert!(check_init(&root, "/nonexistent").unwrap_err().to_string().contains("does not exist"));
        assert!(check_init(&root, "/usr").is_err(), "a directory is not an init");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
