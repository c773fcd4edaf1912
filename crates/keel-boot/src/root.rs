use crate::devices::{kernel_size_bytes, FoundDevice};
use crate::first_boot::RootDisk;
use crate::mkfs::{make_filesystem, NewFilesystem};
use crate::mounts::{mount_at, real_directory};
use crate::on_demand;
use anyhow::{bail, Context};
use keel_cmdline::{BootParams, DeviceSpec};
use keel_disk::{ext4_needs_recovery, grow_mounted_filesystem, probe_filesystem, set_format_pending, FsKind, Probe, ROOT_FORMAT_PENDING};
use nix::mount::{umount, MsFlags};
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

const DEFAULT_ROOT_LABEL: &str = "ROOT";

/// What `mount_root` did, for the log.
pub struct RootOutcome {
    pub filesystem: FsKind,
    /// Why ROOT was formatted, if it was.
    pub formatted: Option<&'static str>,
    /// On first boot, the filesystem's size before and after it grew, in bytes, or why it
    /// could not grow (which does not stop the boot: ROOT works, just smaller).
    pub grown: Option<anyhow::Result<(u64, u64)>>,
    /// ext4's journal needed replaying, and a mount of its own did that first.
    pub journal_replayed_first: bool,
}

/// Whether keel's mark says a format of ROOT was cut short.
fn format_was_cut_short(root_disk: Option<&RootDisk>) -> anyhow::Result<bool> {
    let Some(root_disk) = root_disk else { return Ok(false) };
    let gpt = root_disk.boot_disk.table()?;
    Ok(gpt.partition(root_disk.root_number).is_some_and(|p| p.attributes & ROOT_FORMAT_PENDING != 0))
}

/// Formats ROOT when it is blank or when a format of it was cut short, and only then;
/// mounts it read-write at `sysroot`; on first boot grows a filesystem that was already
/// there to fill its (grown) partition.
pub fn mount_root(
    params: &BootParams,
    root: &FoundDevice,
    root_disk: Option<&RootDisk>,
    first_boot: bool,
    sysroot: &Path,
) -> anyhow::Result<RootOutcome> {
    let node = root.node.display().to_string();
    let probe = probe_filesystem(&mut File::open(&root.node).with_context(|| format!("cannot open {node}"))?)
        .with_context(|| format!("cannot read {node}"))?;
    let format = || -> anyhow::Result<FsKind> {
        let label = match &params.root {
            DeviceSpec::Label(label) => label.as_str(),
            _ => DEFAULT_ROOT_LABEL,
        };
        let root_disk = root_disk.with_context(|| {
            format!(
                "{node} needs a filesystem, but keel formats only a partition of the disk it booted from (the one holding the \
                 verified /usr), and this is not one: format it yourself, or point root= at the boot disk's ROOT"
            )
        })?;
        format_marked(root, root_disk, params.root_filesystem, label)?;
        Ok(params.root_filesystem)
    };
    let (kind, format_reason) = match probe {
        _ if format_was_cut_short(root_disk)? => (format()?, Some("an earlier format was cut short, so it was formatted again")),
        Probe::Filesystem(fs) if fs.kind == FsKind::Swap => bail!("{node} is a swap area, not a filesystem ROOT can be"),
        Probe::Filesystem(fs) => (fs.kind, None),
        Probe::Blank => (format()?, Some("it was blank")),
        Probe::Unknown => bail!("{node} holds data that is not a filesystem keel recognises; it is left untouched rather than formatted over"),
    };
    load_filesystem_modules(kind)?;
    let fstype = params.root_fstype.as_deref().unwrap_or(kind.mount_type());
    // The kernel's ext4 reads the filesystem's geometry (block and group counts, the group
    // descriptor blocks) from the superblock as it is in place, and only then replays the
    // journal, keeping that geometry even when the replay changes it: a power cut during an
    // online grow leaves the grow committed in the journal but not yet in place, and the
    // mount after it runs on the old geometry against the new superblock (grown again it
    // hits a kernel BUG; used, it marks the new group descriptor blocks free). A mount that
    // only replays (read-only, so nothing else is written on the stale geometry), ended at
    // once, writes the replayed superblock in place, and the mount after it reads the
    // geometry right.
    let needs_recovery = || -> anyhow::Result<bool> {
        ext4_needs_recovery(&mut File::open(&root.node).with_context(|| format!("cannot open {node}"))?)
            .with_context(|| format!("cannot read {node}'s superblock"))
    };
    let mut journal_replayed_first = false;
    if kind == FsKind::Ext4 && needs_recovery()? {
        // The kernel applies an "rw" among the options after MS_RDONLY: it is left out.
        let options = params.root_flags.as_deref().map(|flags| flags.split(',').filter(|option| *option != "rw").collect::<Vec<_>>().join(","));
        let options = options.filter(|options| !options.is_empty());
        mount_at(&node, sysroot, Some(fstype), MsFlags::MS_RDONLY, options.as_deref()).context("mounting ROOT to replay its journal")?;
        umount(sysroot).with_context(|| format!("cannot unmount {} after replaying its journal", sysroot.display()))?;
        // noload in rootflags suppresses the replay.
        journal_replayed_first = !needs_recovery()?;
    }
    mount_at(&node, sysroot, Some(fstype), MsFlags::empty(), params.root_flags.as_deref())?;
    let grown = (first_boot && root_disk.is_some() && format_reason.is_none()).then(|| {
        let growth = grow_mounted_filesystem(sysroot, kind, kernel_size_bytes(root)?)?;
        Ok((growth.bytes_before, growth.bytes_after))
    });
    Ok(RootOutcome { filesystem: kind, formatted: format_reason, grown, journal_replayed_first })
}

/// Whether this initrd can mount `kind`: it packs its modules, or the kernel has it built in.
pub(crate) fn can_mount(kind: FsKind) -> bool {
    on_demand::has_list(kind.mount_type()) || kernel_knows(kind)
}

/// The kernel modules `kind` needs, from the list the initrd builder wrote for it; a
/// filesystem without a list must be built into the kernel.
pub(crate) fn load_filesystem_modules(kind: FsKind) -> anyhow::Result<()> {
    if on_demand::load_list(kind.mount_type())? || kernel_knows(kind) {
        return Ok(());
    }
    bail!("this initrd cannot mount {0}: rebuild it with `keel initrd build --root-filesystems ext4,{0}`", kind.mount_type())
}

fn kernel_knows(kind: FsKind) -> bool {
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|text| text.lines().any(|line| line.split_whitespace().last() == Some(kind.mount_type())))
}

/// mkfs between setting and clearing ROOT_FORMAT_PENDING in the partition table, with
/// mkfs's writes flushed before the mark goes: a power cut anywhere in between leaves the
/// mark, and the next boot formats again instead of trusting a half-made filesystem.
fn format_marked(root: &FoundDevice, root_disk: &RootDisk, kind: FsKind, label: &str) -> anyhow::Result<()> {
    if matches!(kind, FsKind::Vfat | FsKind::Swap) {
        bail!("keel does not format ROOT as {}", kind.mount_type());
    }
    let mut disk = root_disk.boot_disk.open_for_writing()?;
    // Without the mark a format cut short could pass for a filesystem on the next boot:
    // no mark, no format.
    let sector_size = root_disk.boot_disk.sector_size;
    set_format_pending(&mut disk, sector_size, root_disk.root_number, true).context(
        "cannot mark ROOT before formatting it, so it is not formatted: format it yourself (mkfs.ext4 -L ROOT), or give the disk \
         a table keel can rewrite (128-entry arrays)",
    )?;
    make_filesystem(&root.node, &NewFilesystem { kind, label: Some(label), uuid: None, options: &[] }).map_err(|error| {
        error.context(format!("rebuild the initrd with `keel initrd build --root-filesystems ext4,{}` if it lacks mkfs", kind.mount_type()))
    })?;
    set_format_pending(&mut disk, sector_size, root_disk.root_number, false)
}

/// Directories every root needs and symlinks into /usr (Flatcar's merged-/usr baselayout).
/// Made only where missing: what the system put there itself is never replaced.
pub fn ensure_skeleton(sysroot: &Path) -> anyhow::Result<()> {
    const DIRS: [(&str, u32); 14] = [
        ("usr", 0o755),
        ("etc", 0o755),
        ("var", 0o755),
        ("run", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("home", 0o755),
        ("root", 0o700),
        ("mnt", 0o755),
        ("opt", 0o755),
        ("srv", 0o755),
        ("media", 0o755),
        ("tmp", 0o1777),
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
        real_directory(dir)?;
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

    fn run(program: &str, args: &[&str]) -> String {
        let output = std::process::Command::new(program).args(args).output().unwrap();
        assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }

    /// A scratch directory with `sysroot/` and an empty image file of `mib` MiB, or `None` where
    /// the test cannot attach loop devices (it needs root, as keel-disk's kernel tests do).
    fn loop_scratch(name: &str, mib: u64) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root and loop devices");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("keel-root-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sysroot")).unwrap();
        let image = dir.join("root.img");
        File::create(&image).unwrap().set_len(mib << 20).unwrap();
        Some((dir, image))
    }

    /// `mount_root` on `image` attached as a loop device, with `cmdline_extra` after `root=`;
    /// unmounted and detached after.
    fn mount_root_from_image(dir: &Path, image: &Path, cmdline_extra: &str, first_boot: bool) -> RootOutcome {
        use std::os::unix::fs::MetadataExt;
        let device = run("losetup", &["-f", "--show", image.to_str().unwrap()]).trim().to_string();
        let rdev = std::fs::metadata(&device).unwrap().rdev();
        let root = FoundDevice { node: device.clone().into(), major: libc::major(rdev).into(), minor: libc::minor(rdev).into() };
        let params = BootParams::from_cmdline(&keel_cmdline::Cmdline::parse(&format!("root={device} {cmdline_extra}"))).unwrap();
        let sysroot = dir.join("sysroot");
        let outcome = mount_root(&params, &root, None, first_boot, &sysroot);
        let _ = umount(&sysroot);
        run("losetup", &["-d", &device]);
        outcome.unwrap()
    }

    /// An ext4 image marked `needs_recovery`, mounted by `mount_root` with `rootflags`: the
    /// outcome's claim, the superblock's mount count before and after (a read-write mount adds
    /// one, a read-only one none) and whether the flag is still set.
    fn mount_dirty_ext4(name: &str, rootflags: &str) -> Option<(bool, u64, u64, bool)> {
        let (dir, image) = loop_scratch(name, 64)?;
        let image_path = image.to_str().unwrap();
        run("mkfs.ext4", &["-q", "-F", image_path]);
        run("debugfs", &["-w", "-R", "feature needs_recovery", image_path]);
        let mount_count = || -> u64 {
            let header = run("dumpe2fs", &["-h", image_path]);
            header.lines().find_map(|l| l.strip_prefix("Mount count:")).unwrap().trim().parse().unwrap()
        };
        let before = mount_count();
        let outcome = mount_root_from_image(&dir, &image, &format!("rootflags={rootflags}"), false);
        let after = mount_count();
        let still_dirty = keel_disk::ext4_needs_recovery(&mut File::open(&image).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        Some((outcome.journal_replayed_first, before, after, still_dirty))
    }

    /// The mount that replays the journal runs on the geometry read before the replay, so it
    /// must be read-only; `rootflags=rw` (which the kernel applies after MS_RDONLY) made it a
    /// read-write mount: the superblock counted two read-write mounts instead of one.
    #[test]
    fn the_replay_mount_is_read_only_whatever_rootflags_say() {
        let Some((replayed, before, after, still_dirty)) = mount_dirty_ext4("rw", "rw") else { return };
        assert!(replayed);
        assert!(!still_dirty);
        assert_eq!(after, before + 1, "the replay mount was read-write, as well as the real mount");
    }

    /// With `noload` in rootflags the replay mount replays nothing; the log must not say it did.
    #[test]
    fn a_replay_suppressed_by_rootflags_is_not_reported_as_done() {
        let Some((replayed, _, _, still_dirty)) = mount_dirty_ext4("noload", "ro,noload") else { return };
        assert!(still_dirty, "noload replayed the journal");
        assert!(!replayed, "the outcome says the journal was replayed, but needs_recovery is still set");
    }

    /// "Only the boot disk is written": with ROOT elsewhere (root= naming another disk, so no
    /// `RootDisk`), the boot disk's first boot must not grow that filesystem (nor freeze it),
    /// as it does not grow its partition either.
    #[test]
    fn first_boot_does_not_grow_a_root_on_another_disk() {
        let Some((dir, image)) = loop_scratch("foreign-grow", 320) else { return };
        run("mkfs.xfs", &["-q", "-f", image.to_str().unwrap()]);
        std::fs::OpenOptions::new().write(true).open(&image).unwrap().set_len(400 << 20).unwrap();
        let before = std::fs::read(&image).unwrap()[..512].to_vec();
        let outcome = mount_root_from_image(&dir, &image, "", true);
        let after = std::fs::read(&image).unwrap()[..512].to_vec();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            outcome.grown.is_none(),
            "keel grew a filesystem on a disk it does not own: {:?}",
            outcome.grown.map(|g| g.map_err(|e| e.to_string()))
        );
        // The mount itself writes the superblock; its data block count (sb_dblocks) must stay.
        assert_eq!(before[8..16], after[8..16], "the foreign ROOT's size in its superblock changed");
    }
}
