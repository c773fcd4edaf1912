//! First boot's Ignition, as Flatcar's initrd runs it: find the configs, merge and check them
//! and verify every resource they name (`ignition-fetch`, before anything is written), then
//! apply them to the real root once ROOT and the /etc overlay are mounted (`ignition-files`).
//!
//! Where the configs come from (docs/ignition.md has the table):
//! - the user config, first found wins: the command line's `ignition.config.url=` (or
//!   Flatcar's and CoreOS's names for it: `data:` or `oem:///PATH`), then the OEM partition's
//!   `config.ign` (Flatcar's system config), then the platform's (on `qemu`: fw_cfg), as
//!   Ignition asks its cmdline, system and platform providers in that order;
//! - base configs, under it: the initrd's `base.d/*.ign` with the OEM partition's `base/*.ign`,
//!   then `base.platform.d/<platform>/*.ign` from the initrd and the OEM partition.
//!
//! The OEM partition is untrusted: it is mounted read-only, nosuid, nodev and noexec, read
//! through keel-ignition's confined root with a size limit on every file, and unmounted again
//! before anything is written.

use crate::devices::{BootDisk, FoundDevice};
use crate::log::Log;
use crate::mounts::mount_at;
use anyhow::{bail, Context};
use keel_cmdline::BootParams;
use keel_disk::{probe_filesystem, set_device_read_only, FsKind, Probe};
use keel_ignition::apply::{plan, verify_resources};
use keel_ignition::config::{Latest, MAX_CONFIG_BYTES};
use keel_ignition::resolve::{is_platform_id, resolve, Document, Resolved, MAX_TOTAL_BYTES};
use keel_ignition::root::Root;
use keel_manifest::{FW_CFG_MODULES, INITRD_IGNITION_DIR};
use nix::mount::{umount, MsFlags};
use std::cell::Cell;
use std::io::Read;
use std::path::Path;

const OEM_NAME: &str = "OEM";
const OEM_MOUNT: &str = "/run/keel/oem";
const FW_CFG: &str = "/sys/firmware/qemu_fw_cfg";
/// The fw_cfg keys QEMU users pass a config under (`-fw_cfg name=…,file=…`), Flatcar's first.
const FW_CFG_KEYS: [&str; 2] = ["opt/org.flatcar-linux/config", "opt/com.coreos/config"];
/// When a slow fw_cfg read first says how far it got, and how often after that.
const FW_CFG_FIRST_REPORT: std::time::Duration = std::time::Duration::from_secs(10);
const FW_CFG_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// How many base configs one directory may hold: each is merged, so the count is bounded
/// before any is read.
const MAX_CONFIGS_PER_DIRECTORY: usize = 64;
/// How many names of any kind a directory of configs may hold: it is listed before the configs
/// are counted, and a directory on an untrusted disk can hold more names than memory.
const MAX_NAMES_PER_DIRECTORY: usize = 1024;

/// What `ignition-fetch` settled: the one config first boot applies.
pub struct Fetched {
    pub resolved: Resolved,
}

/// The platform Ignition runs on: the command line's, else `qemu` when QEMU's firmware
/// config device is there, else `metal`, as Ignition's and Flatcar's defaults are.
fn platform(params: &BootParams) -> anyhow::Result<String> {
    platform_with_fw_cfg_at(params, Path::new(FW_CFG))
}

/// [`platform`], with QEMU's fw_cfg sysfs directory at `fw_cfg` (a seam for tests). The
/// module makes the bare directory on any machine; only a device it found adds `rev`.
fn platform_with_fw_cfg_at(params: &BootParams, fw_cfg: &Path) -> anyhow::Result<String> {
    match &params.platform {
        Some(platform) if is_platform_id(platform) => Ok(platform.clone()),
        Some(platform) => {
            bail!("the kernel command line names the platform {platform:?}, which is not a platform name (lower-case letters, digits, - and _)")
        }
        None if fw_cfg.join("rev").exists() => Ok("qemu".to_string()),
        None => Ok("metal".to_string()),
    }
}

/// The OEM partition's configs, read while it is mounted.
#[derive(Default)]
struct OemConfigs {
    /// `config.ign`, or the file `oem:///PATH` on the command line names.
    user: Option<Document>,
    base: Vec<Document>,
    platform: Vec<Document>,
}

/// A source of configs: a directory in the initrd or on the OEM partition, read through a
/// confined root so that a symlink there cannot lead elsewhere.
struct ConfigDirectory<'a> {
    root: &'a Root,
    /// How documents from here are named in messages.
    origin: &'a str,
    /// What is left of [`MAX_TOTAL_BYTES`] for the files of every directory: the OEM partition
    /// may hold many configs, each just under the limit of one.
    left: &'a Cell<usize>,
}

impl ConfigDirectory<'_> {
    fn read(&self, path: &str) -> anyhow::Result<Option<Document>> {
        let limit = MAX_CONFIG_BYTES.min(self.left.get());
        let bytes = self.root.read_file_if_present(path, limit as u64).with_context(|| {
            format!("cannot read {path} from the {} (at most {MAX_CONFIG_BYTES} bytes a config, {MAX_TOTAL_BYTES} in all)", self.origin)
        })?;
        self.left.set(self.left.get().saturating_sub(bytes.as_ref().map_or(0, Vec::len)));
        Ok(bytes.map(|bytes| Document { name: format!("{} {path}", self.origin), bytes }))
    }

    /// Every `*.ign` in `dir`, in name order; none when there is no such directory.
    fn read_all(&self, dir: &str, log: &mut Log) -> anyhow::Result<Vec<Document>> {
        let names = match self.root.list_dir_at_most(dir, MAX_NAMES_PER_DIRECTORY) {
            Ok(names) => names,
            // A file where the directory belongs is a mistake to show, not a directory to skip.
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
            Err(error) => return Err(error).with_context(|| format!("cannot list {dir} on the {}", self.origin)),
        };
        let (configs, others): (Vec<String>, Vec<String>) = names.into_iter().partition(|name| name.ends_with(".ign"));
        if let Some(first) = others.first() {
            log.info(&format!("ignition-fetch: {} names in {dir} on the {} are not *.ign and were ignored ({first}, …)", others.len(), self.origin));
        }
        if configs.len() > MAX_CONFIGS_PER_DIRECTORY {
            bail!("{dir} on the {} holds {} configs, more than the {MAX_CONFIGS_PER_DIRECTORY} keel merges", self.origin, configs.len());
        }
        let mut documents = Vec::new();
        for name in configs {
            let path = format!("{dir}/{name}");
            documents.extend(self.read(&path)?);
        }
        Ok(documents)
    }
}

/// Runs `with` on the OEM partition of the boot disk mounted read-only, if it has a
/// filesystem; blank (an image built without `--oem`) or missing is no OEM configs.
fn with_oem<T: Default>(boot_disk: Option<&BootDisk>, with: impl FnOnce(&Root) -> anyhow::Result<T>) -> anyhow::Result<(T, String)> {
    let Some(boot_disk) = boot_disk else { return Ok((T::default(), "no boot disk, so no OEM partition".into())) };
    let gpt = boot_disk.table()?;
    let Some(entry) = gpt.by_name(OEM_NAME)? else { return Ok((T::default(), "the boot disk has no OEM partition".into())) };
    let Some(oem) = boot_disk.partition(entry.number)? else { bail!("the kernel has no device for the OEM partition ({})", entry.number) };
    let kind = match probe_filesystem(&mut open(&oem)?).with_context(|| format!("cannot read the OEM partition {}", oem.node.display()))? {
        Probe::Blank => return Ok((T::default(), "the OEM partition is blank".into())),
        Probe::Filesystem(filesystem) => filesystem.kind,
        Probe::Unknown => bail!(
            "the OEM partition {} holds data that is not a filesystem keel reads: its configs cannot be read, and first boot does not go on \
             without them",
            oem.node.display()
        ),
    };
    crate::root::load_filesystem_modules(kind)?;
    let mount = ReadOnlyMount::new(&oem.node, kind, Path::new(OEM_MOUNT))?;
    let result = Root::open(mount.mount_point).context("cannot open the OEM partition's root").and_then(|root| with(&root));
    let released = mount.release();
    let value = result?;
    released?;
    Ok((value, format!("OEM partition {} ({})", oem.node.display(), kind.mount_type())))
}

/// A filesystem mounted read-only, nosuid, nodev and noexec on a device the kernel holds
/// read-only meanwhile: a read-only mount alone still lets ext4 clean up orphan inodes, and a
/// journal or log would be replayed. Nothing reaches the device until it is released (by
/// [`ReadOnlyMount::release`], or when dropped on an error path).
struct ReadOnlyMount<'a> {
    device: std::fs::File,
    mount_point: &'a Path,
    mounted: bool,
}

impl<'a> ReadOnlyMount<'a> {
    fn new(node: &Path, kind: FsKind, mount_point: &'a Path) -> anyhow::Result<Self> {
        let device = std::fs::File::open(node).with_context(|| format!("cannot open {}", node.display()))?;
        set_device_read_only(&device, true).with_context(|| format!("cannot make {} read-only before mounting it", node.display()))?;
        // From here on, dropping it makes the device writable again.
        let mut mount = ReadOnlyMount { device, mount_point, mounted: false };
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let data = match kind {
            FsKind::Ext4 => Some("noload"),
            FsKind::Xfs => Some("norecovery"),
            FsKind::Btrfs => Some("nologreplay"),
            FsKind::Vfat | FsKind::Swap => None,
        };
        mount_at(&node.display().to_string(), mount_point, Some(kind.mount_type()), flags, data)?;
        mount.mounted = true;
        Ok(mount)
    }

    /// Unmounts, and lets the device be written again (by the booted system).
    fn release(mut self) -> anyhow::Result<()> {
        umount(self.mount_point).with_context(|| format!("cannot unmount {}", self.mount_point.display()))?;
        self.mounted = false;
        set_device_read_only(&self.device, false).context("cannot make the device writable again")
    }
}

impl Drop for ReadOnlyMount<'_> {
    fn drop(&mut self) {
        // An unmount that failed (or a release never reached) keeps the device read-only, so
        // nothing can write through a mount left behind.
        if self.mounted && umount(self.mount_point).is_err() {
            return;
        }
        let _ = set_device_read_only(&self.device, false);
    }
}

fn open(device: &FoundDevice) -> anyhow::Result<std::fs::File> {
    std::fs::File::open(&device.node).with_context(|| format!("cannot open {}", device.node.display()))
}

/// The config QEMU passes through fw_cfg under `key`, if it passes one.
fn read_fw_cfg(key: &str, log: &mut Log) -> anyhow::Result<Option<Document>> {
    let dir = Path::new(FW_CFG).join("by_name").join(key);
    let Ok(size) = std::fs::read_to_string(dir.join("size")) else { return Ok(None) };
    let size: usize = size.trim().parse().with_context(|| format!("fw_cfg {key} has an unreadable size {size:?}"))?;
    if size > MAX_CONFIG_BYTES {
        bail!("the config in fw_cfg {key} is {size} bytes, more than the {MAX_CONFIG_BYTES} keel reads in a config");
    }
    let mut raw = std::fs::File::open(dir.join("raw")).with_context(|| format!("cannot open fw_cfg {key}"))?;
    // The kernel serves each read of at most a page by reading the item from its start again,
    // so a big config takes time quadratic in its size: the console says so rather than look hung.
    let mut bytes = vec![0; size];
    let mut filled = 0;
    let started = std::time::Instant::now();
    let mut next_report = FW_CFG_FIRST_REPORT;
    while filled < size {
        let read = raw.read(&mut bytes[filled..]).with_context(|| format!("cannot read fw_cfg {key}"))?;
        if read == 0 {
            bail!("fw_cfg {key} ended after {filled} of the {size} bytes its size promised");
        }
        filled += read;
        if started.elapsed() >= next_report {
            log.info(&format!(
                "ignition-fetch: reading fw_cfg {key}: {} of {} KiB; fw_cfg reads take time quadratic in a config's size, so a big \
                 config is better on the OEM partition",
                filled >> 10,
                size >> 10
            ));
            next_report += FW_CFG_REPORT_EVERY;
        }
    }
    Ok(Some(Document { name: format!("QEMU fw_cfg {key}"), bytes }))
}

/// The user config the command line names: a `data:` URL, or `oem:///PATH` on the OEM partition.
/// `oem_user` is the file `oem:///PATH` named, read while the OEM partition was mounted.
fn command_line_config(key: &str, url: &str, oem_user: Option<Document>) -> anyhow::Result<Option<Document>> {
    let name = format!("the kernel command line's {key}");
    if let Some(path) = url.strip_prefix("oem://") {
        return match oem_user {
            Some(document) => Ok(Some(document)),
            None => bail!("{name} names {path} on the OEM partition, which has no such file"),
        };
    }
    let source = keel_ignition::config::latest::Resource { source: Some(url.to_string()), ..Default::default() };
    let bytes = keel_ignition::resource::fetch_at_most(&source, MAX_CONFIG_BYTES as u64).with_context(|| format!("cannot fetch {name}"))?;
    Ok(Some(Document { name, bytes }))
}

/// `ignition-fetch`: every config found and merged, checked as Ignition checks it, and every
/// resource fetched and verified; an error here stops first boot before its first write.
/// Returns the config and a line for the log.
pub fn fetch(params: &BootParams, boot_disk: Option<&BootDisk>, log: &mut Log) -> anyhow::Result<(Fetched, String)> {
    // fw_cfg is read here only, to find the platform and the config QEMU passes.
    if params.platform.as_deref().is_none_or(|platform| platform == "qemu") {
        crate::on_demand::load_list(FW_CFG_MODULES)?;
    }
    let platform = platform(params)?;
    let initrd_root = Root::open(Path::new(INITRD_IGNITION_DIR)).ok();
    let left = Cell::new(MAX_TOTAL_BYTES);
    let initrd = initrd_root.as_ref().map(|root| ConfigDirectory { root, origin: "initrd", left: &left });
    let oem_user_path = match &params.ignition_config_url {
        Some((key, url)) => match url.strip_prefix("oem://") {
            Some(path) if !path.starts_with('/') => bail!("{key}={url}: an OEM path is written oem:///PATH"),
            path => path.map(str::to_string),
        },
        None => Some("/config.ign".to_string()),
    };
    let platform_dir = format!("/base.platform.d/{platform}");
    let (oem, oem_detail) = with_oem(boot_disk, |root| {
        let directory = ConfigDirectory { root, origin: "OEM partition", left: &left };
        Ok(OemConfigs {
            user: oem_user_path.as_deref().map(|path| directory.read(path)).transpose()?.flatten(),
            base: directory.read_all("/base", log)?,
            platform: directory.read_all(&platform_dir, log)?,
        })
    })?;

    let mut base = Vec::new();
    let mut platform_base = Vec::new();
    if let Some(initrd) = &initrd {
        base.extend(initrd.read_all("/base.d", log)?);
        platform_base.extend(initrd.read_all(&platform_dir, log)?);
    }
    // Moved, not copied: together they may hold 64 MiB.
    base.extend(oem.base);
    platform_base.extend(oem.platform);

    let user = match &params.ignition_config_url {
        Some((key, url)) => command_line_config(key, url, oem.user)?,
        None => match oem.user {
            Some(document) => Some(document),
            // The platform's own source, as Ignition's provider for it: only QEMU has one here.
            None if platform == "qemu" => FW_CFG_KEYS.iter().map(|key| read_fw_cfg(key, log)).find_map(Result::transpose).transpose()?,
            None => None,
        },
    };

    let resolved = resolve(&[&base, &platform_base], user.as_ref(), &|parsed| keel_ignition::validate::validate(&parsed.config, parsed.version))?;
    // resolve() fails on any error, so what it returns with are warnings.
    for report in &resolved.reports {
        log.info(&format!("ignition-fetch: {report}"));
    }
    refuse_what_keel_cannot_do_yet(&resolved.config)?;
    refuse_writes_to_usr(&resolved.config)?;
    let verified = verify_resources(&resolved.config)?;

    let user_detail = match &user {
        Some(document) => format!("user config from {} ({} bytes)", document.name, document.bytes.len()),
        None => "no user config".to_string(),
    };
    let detail = format!(
        "{user_detail}; {} base configs; platform {platform}; {oem_detail}; {} resources verified ({} bytes)",
        base.len() + platform_base.len(),
        verified.count,
        verified.bytes
    );
    Ok((Fetched { resolved }, detail))
}

/// Sections keel does not carry out yet: refused here, before any write, rather than skipped,
/// so a machine never boots as if they had been applied.
fn refuse_what_keel_cannot_do_yet(config: &Latest) -> anyhow::Result<()> {
    let storage = config.storage.as_ref();
    let named = |present: bool, path: &str| present.then(|| path.to_string());
    let unsupported: Vec<String> = [
        named(storage.and_then(|s| s.raid.as_ref()).is_some_and(|list| !list.is_empty()), "$.storage.raid"),
        named(storage.and_then(|s| s.luks.as_ref()).is_some_and(|list| !list.is_empty()), "$.storage.luks"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !unsupported.is_empty() {
        bail!("{}: not supported by keel yet; nothing was written", unsupported.join(", "));
    }
    Ok(())
}

/// Paths the config would write under /usr, the verified read-only /usr of the real root: refused
/// before any write, rather than failing halfway through `ignition-files` on every first boot.
fn refuse_writes_to_usr(config: &Latest) -> anyhow::Result<()> {
    let under_usr = |path: &str| {
        let normal = path.trim_end_matches('/');
        normal == "/usr" || normal.starts_with("/usr/")
    };
    let mut refused = Vec::new();
    if let Some(storage) = &config.storage {
        let sections: [(&str, Vec<&str>); 3] = [
            ("files", storage.files.iter().flatten().map(|node| node.path.as_str()).collect()),
            ("directories", storage.directories.iter().flatten().map(|node| node.path.as_str()).collect()),
            ("links", storage.links.iter().flatten().map(|node| node.path.as_str()).collect()),
        ];
        for (section, paths) in sections {
            for (index, path) in paths.into_iter().enumerate() {
                if under_usr(path) {
                    refused.push(format!("$.storage.{section}[{index}].path"));
                }
            }
        }
    }
    let users = config.passwd.as_ref().and_then(|passwd| passwd.users.as_ref());
    for (index, user) in users.into_iter().flatten().enumerate() {
        if user.home_dir.as_deref().is_some_and(under_usr) {
            refused.push(format!("$.passwd.users[{index}].homeDir"));
        }
    }
    if !refused.is_empty() {
        bail!("{}: /usr is the verified, read-only /usr of the image, which no config can write; nothing was written", refused.join(", "));
    }
    Ok(())
}

/// `ignition-files`: the config applied to the real root, with /etc's writes in its overlay.
/// Everything is planned (and checked) before the first write.
pub fn apply_files(fetched: &Fetched, sysroot: &Path) -> anyhow::Result<String> {
    let root = Root::open(sysroot).with_context(|| format!("cannot open {}", sysroot.display()))?;
    let plan = plan(&fetched.resolved.config, &root, fetched.resolved.user_config_provided)?;
    plan.execute(&root)?;
    Ok(format!("{} operations applied; the result is in /etc/.ignition-result.json", plan.steps().len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_cmdline::Cmdline;

    fn config(json: &str) -> Latest {
        keel_ignition::parse(json.as_bytes()).unwrap().config
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("keel-boot-ignition-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_command_lines_platform_wins_and_metal_is_the_default_off_qemu() {
        let params = |line: &str| BootParams::from_cmdline(&Cmdline::parse(line)).unwrap();
        assert_eq!(platform(&params("flatcar.oem.id=ec2")).unwrap(), "aws");
        for bad in ["../etc", "QEMU", "a/b"] {
            let error = platform(&params(&format!("ignition.platform.id={bad}"))).unwrap_err().to_string();
            assert!(error.contains("is not a platform name"), "{bad}: {error}");
        }
    }

    /// Defect: the qemu_fw_cfg module creates /sys/firmware/qemu_fw_cfg as soon as it loads,
    /// whether or not there is a fw_cfg device (fw_cfg_sysfs_init does kobject_create_and_add
    /// before platform_driver_register); only a probed device adds `rev`, `by_key` and
    /// `by_name`. keel-init loads qemu_fw_cfg on every first boot whose command line names no
    /// platform, so on bare metal or any cloud without a platform id on the command line the
    /// platform came out as `qemu`: the OEM's and initrd's base.platform.d/qemu configs (the
    /// vendor example's qemu-guest-agent) were applied there.
    #[test]
    fn the_fw_cfg_module_loaded_without_a_fw_cfg_device_does_not_make_the_platform_qemu() {
        let dir = scratch("fw-cfg");
        let params = BootParams::from_cmdline(&Cmdline::parse("")).unwrap();
        // What the module leaves on a machine without the device: the bare directory.
        let module_only = dir.join("module-only");
        std::fs::create_dir_all(&module_only).unwrap();
        // What a probed device adds (QEMU, `-fw_cfg` or not).
        let probed = dir.join("probed");
        for subdirectory in ["by_key", "by_name"] {
            std::fs::create_dir_all(probed.join(subdirectory)).unwrap();
        }
        std::fs::write(probed.join("rev"), "3\n").unwrap();
        let found = [
            platform_with_fw_cfg_at(&params, &dir.join("absent")).unwrap(),
            platform_with_fw_cfg_at(&params, &module_only).unwrap(),
            platform_with_fw_cfg_at(&params, &probed).unwrap(),
        ];
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found, ["metal", "metal", "qemu"], "no module, module without a device, QEMU's device");
    }

    fn run(program: &str, args: &[&str]) -> String {
        let output = std::process::Command::new(program).args(args).output().unwrap();
        assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Defect: ext4 cleans up orphan inodes even on a read-only mount (ext4_orphan_cleanup
    /// clears SB_RDONLY for it, `noload` or not, and says "orphan cleanup on readonly fs");
    /// only a read-only block device stops it ("write access unavailable, skipping orphan
    /// cleanup"). So an OEM partition whose superblock lists an orphan inode (a crafted one,
    /// or one a vendor's agent left by a power cut while it wrote to OEM) is written by
    /// ignition-fetch, before any config is checked, and under `noload` against a journal
    /// that was not replayed. The fix: BLKROSET on the partition before the mount (and off
    /// again after the unmount). Needs root and a loop device, as keel-disk's kernel tests.
    #[test]
    fn mounting_the_oem_partition_writes_nothing_even_when_it_lists_orphan_inodes() {
        let dir = scratch("oem-orphan");
        let image = dir.join("oem.img");
        std::fs::File::create(&image).unwrap().set_len(16 << 20).unwrap();
        let image_name = image.to_str().unwrap();
        run("mkfs.ext4", &["-q", "-F", "-O", "^has_journal", "-L", "OEM", image_name]);
        let contents = dir.join("contents");
        std::fs::write(&contents, "an orphan\n").unwrap();
        run("debugfs", &["-w", "-R", &format!("write {} orphan", contents.display()), image_name]);
        let script = dir.join("orphan.debugfs");
        // Inode 12 is the first after lost+found: the file just written.
        std::fs::write(&script, "sif orphan links_count 0\nunlink orphan\nssv last_orphan 12\n").unwrap();
        run("debugfs", &["-w", "-f", script.to_str().unwrap(), image_name]);
        let before = std::fs::read(&image).unwrap();

        let device = run("losetup", &["--find", "--show", image_name]).trim().to_string();
        let mount_point = dir.join("mnt");
        let mounted = ReadOnlyMount::new(Path::new(&device), FsKind::Ext4, &mount_point).map(ReadOnlyMount::release);
        run("losetup", &["--detach", &device]);
        mounted.unwrap().unwrap();
        let after = std::fs::read(&image).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(before == after, "mounting the OEM partition read-only wrote to it (the kernel deleted the orphan inode)");
    }

    #[test]
    fn writes_under_the_verified_usr_are_refused_by_their_json_paths() {
        let error = refuse_writes_to_usr(&config(
            r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/ok"},{"path":"/usr/bin/evil"}],
                "directories":[{"path":"/usr"}],"links":[{"path":"/usrlocal","target":"/usr"}]},
                "passwd":{"users":[{"name":"a","homeDir":"/usr/home/a"}]}}"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("$.storage.files[1].path, $.storage.directories[0].path, $.passwd.users[0].homeDir: /usr is"), "{error}");
        assert!(refuse_writes_to_usr(&config(r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/usrx"}]}}"#)).is_ok());
    }

    #[test]
    fn sections_keel_cannot_carry_out_yet_are_refused_by_their_json_paths() {
        let error = refuse_what_keel_cannot_do_yet(&config(
            r#"{"ignition":{"version":"3.4.0"},"storage":{"raid":[{"name":"md0","level":"raid1","devices":["/dev/vdb","/dev/vdc"]}],
                "luks":[{"name":"data","device":"/dev/vdd"}]},"kernelArguments":{"shouldExist":["quiet"]}}"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("$.storage.raid, $.storage.luks: not supported"), "{error}");
        for fine in [
            r#"{"ignition":{"version":"3.4.0"}}"#,
            r#"{"ignition":{"version":"3.4.0"},"storage":{"disks":[{"device":"/dev/vdb","wipeTable":true}],
                "filesystems":[{"device":"/dev/vdb1","format":"ext4"}]}}"#,
            r#"{"ignition":{"version":"3.4.0"},"storage":{"disks":[],"files":[{"path":"/f"}]},"kernelArguments":{"shouldExist":[]}}"#,
        ] {
            assert!(refuse_what_keel_cannot_do_yet(&config(fine)).is_ok(), "{fine}");
        }
    }

    #[test]
    fn a_config_directory_reads_only_ign_files_in_name_order_within_its_limits() {
        let dir = scratch("directory");
        std::fs::create_dir_all(dir.join("base")).unwrap();
        for (name, text) in [("20-b.ign", "b"), ("10-a.ign", "a"), ("README", "not a config")] {
            std::fs::write(dir.join("base").join(name), text).unwrap();
        }
        let root = Root::open(&dir).unwrap();
        let left = Cell::new(MAX_TOTAL_BYTES);
        let directory = ConfigDirectory { root: &root, origin: "OEM partition", left: &left };
        let mut log = Log::new();
        let documents = directory.read_all("/base", &mut log).unwrap();
        let names: Vec<&str> = documents.iter().map(|document| document.name.as_str()).collect();
        assert_eq!(names, ["OEM partition /base/10-a.ign", "OEM partition /base/20-b.ign"]);
        assert_eq!(left.get(), MAX_TOTAL_BYTES - 2);
        assert!(directory.read_all("/missing", &mut log).unwrap().is_empty());

        // What every directory may still read, together, is a limit too: a partition of many
        // configs just under the limit of one does not fill the memory.
        left.set(1);
        let error = directory.read_all("/base", &mut log).unwrap_err();
        assert!(format!("{error:#}").contains("/base/20-b.ign holds more than 0 bytes"), "{error:#}");

        for count in 0..=MAX_CONFIGS_PER_DIRECTORY {
            std::fs::write(dir.join("base").join(format!("{count:03}.ign")), "x").unwrap();
        }
        let error = ConfigDirectory { root: &root, origin: "OEM partition", left: &Cell::new(MAX_TOTAL_BYTES) }.read_all("/base", &mut log);
        assert!(error.unwrap_err().to_string().contains("more than the 64 keel merges"));

        // A file where a directory of configs belongs is shown, not skipped as "no configs".
        std::fs::write(dir.join("base.platform.d"), "a file").unwrap();
        let error = directory.read_all("/base.platform.d", &mut log).unwrap_err();
        assert!(format!("{error:#}").contains("cannot list /base.platform.d"), "{error:#}");
        // Names of any kind are bounded while they are read.
        std::fs::create_dir_all(dir.join("junk")).unwrap();
        for count in 0..=MAX_NAMES_PER_DIRECTORY {
            std::fs::write(dir.join("junk").join(count.to_string()), "").unwrap();
        }
        let error = directory.read_all("/junk", &mut log).unwrap_err();
        assert!(format!("{error:#}").contains("holds more than 1024 names"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A config must be a regular file of the partition: a symlink, wherever it points, is an
    /// error that stops first boot, not a config read from elsewhere (nor silently none).
    #[test]
    fn a_symlink_on_the_oem_partition_is_refused_not_followed() {
        let dir = scratch("symlink");
        let outside = dir.join("outside.ign");
        std::fs::write(&outside, "secret of the initrd").unwrap();
        let oem = dir.join("oem");
        std::fs::create_dir_all(&oem).unwrap();
        std::os::unix::fs::symlink(&outside, oem.join("config.ign")).unwrap();
        let root = Root::open(&oem).unwrap();
        let left = Cell::new(MAX_TOTAL_BYTES);
        let error = ConfigDirectory { root: &root, origin: "OEM partition", left: &left }.read("/config.ign").unwrap_err();
        assert!(format!("{error:#}").contains("is a symlink"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_command_line_config_is_a_data_url_or_an_oem_file_and_never_the_network() {
        let oem = || Some(Document { name: "OEM partition /x.ign".into(), bytes: b"{}".to_vec() });
        let document = command_line_config("ignition.config.url", "data:,%7B%7D", oem()).unwrap().unwrap();
        assert_eq!((document.name.as_str(), document.bytes.as_slice()), ("the kernel command line's ignition.config.url", &b"{}"[..]));
        assert_eq!(command_line_config("ignition.config.url", "oem:///x.ign", oem()).unwrap().unwrap().name, "OEM partition /x.ign");
        let missing = command_line_config("ignition.config.url", "oem:///x.ign", None).unwrap_err().to_string();
        assert!(missing.contains("has no such file"), "{missing}");
        let network = command_line_config("ignition.config.url", "https://example.com/c.ign", oem()).unwrap_err();
        assert!(format!("{network:#}").contains("need the network"), "{network:#}");
    }
}
