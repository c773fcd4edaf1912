//! The reference initrds `cargo xtask bench boot` measures keel against, built from Debian
//! packages for the same kernel and the same image:
//! - `busybox`: the least any initrd can do for this root. It loads the virtio modules,
//!   mounts ROOT and USR-A (straight from the partition, as ext4, unverified: ext4 ignores
//!   the hash tree after its last block) and `switch_root`s. No udev, no checks.
//! - `dracut-systemd`: dracut 059 with Debian's systemd 252, generic (`--no-hostonly`), only
//!   the virtio drivers, /usr mounted from USR-A unverified (`mount.usr=`).
//! - `dracut-verity`: the same, with /usr opened as dm-verity the way Flatcar's bootengine
//!   opens it: a unit that `dev-mapper-usr.device` requires runs `veritysetup --hash-offset`
//!   on USR-A, then checks that the device's status is `V`. systemd 252's own `usrhash=`
//!   generator has no hash-offset option, so it cannot open this one-partition layout.

use anyhow::{bail, ensure, Context};
use keel_initrd::{Archive, Compression, Node};
use keel_kmod::ModuleIndex;
use keel_vm_tests as vm;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian packages only the anchors need, so they are installed by `bench boot` alone.
pub const PACKAGES: &[(&str, &str)] = &[
    ("dracut-core", "dracut 059, which builds the systemd anchors (brings udev for their initrds)"),
    ("dmsetup", "dracut's dm module: device-mapper's udev rules, and dmsetup for the verity check"),
];

/// The drivers every anchor carries: the PCI transport and the disk (ext4 is built in).
const VIRTIO_DRIVERS: [&str; 2] = ["virtio_pci", "virtio_blk"];

/// Where the busybox anchor lists its modules, dependencies first (full paths in the initrd).
const BUSYBOX_MODULE_LIST: &str = "/etc/modules";

/// The busybox applets the anchor's /init calls.
const BUSYBOX_APPLETS: [&str; 7] = ["sh", "mount", "insmod", "mkdir", "sleep", "switch_root", "poweroff"];

/// The busybox anchor's /init. Partitions are found by their GPT name in sysfs, as nothing
/// here runs udev; virtio_blk adds its disk's partitions before its insmod returns, so the
/// wait normally never sleeps.
const BUSYBOX_INIT: &str = r#"#!/bin/sh
fail() { echo "ANCHOR FAILED: $*"; poweroff -f; }
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev || fail "cannot mount /proc, /sys, /dev"
while read -r module; do insmod "$module" || fail "insmod $module"; done < /etc/modules
partition() {
    for uevent in /sys/class/block/*/uevent; do
        devname= ; partname=
        while IFS== read -r key value; do
            case "$key" in DEVNAME) devname=$value ;; PARTNAME) partname=$value ;; esac
        done < "$uevent"
        if [ "$partname" = "$1" ]; then echo "/dev/$devname"; return 0; fi
    done
    return 1
}
tries=0
until root=$(partition ROOT) && usr=$(partition USR-A); do
    tries=$((tries + 1))
    [ "$tries" -le 1000 ] || fail "no partitions named ROOT and USR-A after 10 s"
    sleep 0.01
done
mkdir -p /sysroot
mount -t ext4 "$root" /sysroot || fail "cannot mount ROOT ($root)"
mount -t ext4 -o ro "$usr" /sysroot/usr || fail "cannot mount USR-A ($usr)"
for fs in dev proc sys; do mount --move "/$fs" "/sysroot/$fs" || fail "cannot move /$fs"; done
exec switch_root /sysroot /sbin/init
"#;

/// One reference initrd and the command line it boots the image with.
pub struct Anchor {
    pub name: &'static str,
    pub initrd: PathBuf,
    pub cmdline: String,
    /// Whether /usr must be the verity device `usr` in the real root.
    pub opens_verity: bool,
}

/// Builds the three anchors into `dir` for `kernel` and the image `manifest` describes.
/// dracut records its arguments in the initrd, so a `dir` that is the same from run to run
/// gives the same bytes from run to run.
pub fn build(dir: &Path, kernel: &vm::Kernel, manifest: &keel_manifest::ImageManifest) -> anyhow::Result<Vec<Anchor>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let busybox = dir.join("anchor-busybox.img");
    std::fs::write(&busybox, busybox_initrd(kernel)?).with_context(|| format!("cannot write {}", busybox.display()))?;
    let plain = dir.join("anchor-dracut-systemd.img");
    dracut(kernel, &DracutExtras::default(), &plain, dir)?;
    let verity = dir.join("anchor-dracut-verity.img");
    let units = dir.join("anchor-dracut-verity-units");
    write_verity_units(&units, manifest)?;
    dracut(kernel, &DracutExtras::verity(&units), &verity, dir)?;
    // ROOT read-write from the start, as keel and the busybox anchor mount it (systemd's
    // default is read-only, remounted later), and as Flatcar's boot loader asks for it.
    let dracut_cmdline = |usr: &str| format!("root=PARTLABEL=ROOT rootflags=rw mount.usr={usr} mount.usrflags=ro init=/sbin/init");
    Ok(vec![
        Anchor { name: "busybox", initrd: busybox, cmdline: String::new(), opens_verity: false },
        Anchor { name: "dracut-systemd", initrd: plain, cmdline: dracut_cmdline("PARTLABEL=USR-A"), opens_verity: false },
        Anchor { name: "dracut-verity", initrd: verity, cmdline: dracut_cmdline("/dev/mapper/usr"), opens_verity: true },
    ])
}

/// The busybox anchor's tree: Debian's static busybox, its applets, the virtio modules and
/// their load list, and /init.
fn busybox_archive(kernel: &vm::Kernel) -> anyhow::Result<Archive> {
    let mut archive = Archive::default();
    let busybox = std::fs::read("/bin/busybox").context("cannot read /bin/busybox (install busybox-static)")?;
    archive.insert("/bin/busybox", Node::File { data: busybox, mode: 0o755 });
    for applet in BUSYBOX_APPLETS {
        archive.insert(&format!("/bin/{applet}"), Node::Symlink { target: "busybox".into() });
    }
    archive.insert("/init", Node::File { data: BUSYBOX_INIT.as_bytes().to_vec(), mode: 0o755 });
    archive.insert("/dev/console", Node::CharDevice { major: 5, minor: 1, mode: 0o600 });
    for dir in ["proc", "sys", "sysroot"] {
        archive.insert(dir, Node::Dir { mode: 0o755 });
    }
    let version = kernel.modules_dir.file_name().context("the kernel's module directory has no name")?.to_string_lossy().into_owned();
    let index = ModuleIndex::read(&kernel.modules_dir)?;
    let mut list = String::new();
    for module in index.closure(&VIRTIO_DRIVERS.map(String::from))? {
        let path = format!("/lib/modules/{version}/{}", module.path);
        let host_path = kernel.modules_dir.join(&module.path);
        let data = std::fs::read(&host_path).with_context(|| format!("cannot read {}", host_path.display()))?;
        archive.insert(&path, Node::File { data, mode: 0o644 });
        list.push_str(&path);
        list.push('\n');
    }
    archive.insert(BUSYBOX_MODULE_LIST, Node::File { data: list.into_bytes(), mode: 0o644 });
    Ok(archive)
}

/// The busybox anchor, compressed as `keel initrd build` compresses by default.
fn busybox_initrd(kernel: &vm::Kernel) -> anyhow::Result<Vec<u8>> {
    keel_initrd::compress(busybox_archive(kernel)?.to_newc(), Compression::DEFAULT)
}

/// What the verity anchor adds to the plain dracut one.
#[derive(Default)]
struct DracutExtras {
    dracut_modules: &'static [&'static str],
    kernel_modules: &'static [&'static str],
    programs: &'static [&'static str],
    /// A tree copied into the initrd's root.
    tree: Option<PathBuf>,
}

impl DracutExtras {
    fn verity(units: &Path) -> DracutExtras {
        DracutExtras { dracut_modules: &["dm"], kernel_modules: &["dm_verity"], programs: &["veritysetup"], tree: Some(units.to_path_buf()) }
    }
}

/// dracut's modules for a systemd initrd that mounts a block-device root and a separate /usr.
const DRACUT_MODULES: [&str; 4] = ["systemd-initrd", "dracut-systemd", "rootfs-block", "usrmount"];

/// dracut's arguments: the kernel's own module tree, nothing from this host's configuration
/// or hardware, and the same bytes for the same inputs. zstd, of dracut's compressors the
/// quickest to unpack, so the anchor is not slowed by a choice made here.
fn dracut_arguments(kernel: &vm::Kernel, extras: &DracutExtras, empty_confdir: &Path, output: &Path) -> anyhow::Result<Vec<String>> {
    let version = kernel.modules_dir.file_name().context("the kernel's module directory has no name")?.to_string_lossy().into_owned();
    let modules: Vec<&str> = DRACUT_MODULES.iter().chain(extras.dracut_modules).copied().collect();
    let mut arguments: Vec<String> =
        ["--force", "--quiet", "--no-hostonly", "--no-hostonly-cmdline", "--reproducible", "--no-early-microcode", "--zstd", "--conf", "/dev/null"]
            .map(String::from)
            .into();
    arguments.extend(["--confdir".into(), empty_confdir.display().to_string()]);
    arguments.extend(["--kver".into(), version, "--kmoddir".into(), kernel.modules_dir.display().to_string()]);
    arguments.extend(["--modules".into(), modules.join(" "), "--drivers".into(), VIRTIO_DRIVERS.join(" ")]);
    if !extras.kernel_modules.is_empty() {
        arguments.extend(["--add-drivers".into(), extras.kernel_modules.join(" ")]);
    }
    if !extras.programs.is_empty() {
        arguments.extend(["--install".into(), extras.programs.join(" ")]);
    }
    if let Some(tree) = &extras.tree {
        arguments.extend(["--include".into(), tree.display().to_string(), "/".into()]);
    }
    arguments.push(output.display().to_string());
    Ok(arguments)
}

fn dracut(kernel: &vm::Kernel, extras: &DracutExtras, output: &Path, scratch: &Path) -> anyhow::Result<()> {
    let empty_confdir = scratch.join("anchor-dracut-conf.d");
    std::fs::create_dir_all(&empty_confdir)?;
    let arguments = dracut_arguments(kernel, extras, &empty_confdir, output)?;
    let result = Command::new("dracut").args(&arguments).env("SOURCE_DATE_EPOCH", "0").output().context("cannot run dracut (install dracut-core)")?;
    ensure!(result.status.success(), "dracut {} failed ({}):\n{}", arguments.join(" "), result.status, String::from_utf8_lossy(&result.stderr));
    Ok(())
}

/// The unit that opens /usr, named as Flatcar's. `write_verity_units` links it into
/// `dev-mapper-usr.device.requires/`, so waiting for that device (as `mount.usr=/dev/mapper/usr`
/// does) starts it; an ordering before the device would be ignored (systemd cannot delay a
/// device unit).
fn verity_unit(manifest: &keel_manifest::ImageManifest, usr_device_unit: &str) -> String {
    let usr = "/dev/disk/by-partlabel/USR-A";
    let hash_offset = manifest.usr.hash_offset;
    let root_hash = keel_verity::encode_hex(&manifest.usr.root_hash);
    format!(
        "[Unit]\n\
         Description=dm-verity /usr, opened as Flatcar's bootengine opens it\n\
         DefaultDependencies=no\n\
         Requires={usr_device_unit}\n\
         After={usr_device_unit}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart=/usr/sbin/veritysetup --panic-on-corruption --hash-offset={hash_offset} open {usr} usr {usr} {root_hash}\n\
         ExecStart=/bin/sh -c 'set -- $$(dmsetup status usr) && [ \"$$4\" = V ]'\n"
    )
}

const VERITY_UNIT_NAME: &str = "verity-setup.service";

fn write_verity_units(tree: &Path, manifest: &keel_manifest::ImageManifest) -> anyhow::Result<()> {
    let units = tree.join("etc/systemd/system");
    let requires = units.join("dev-mapper-usr.device.requires");
    let _ = std::fs::remove_dir_all(tree);
    std::fs::create_dir_all(&requires).with_context(|| format!("cannot create {}", requires.display()))?;
    let escape = Command::new("systemd-escape").args(["--path", "--suffix=device", "/dev/disk/by-partlabel/USR-A"]).output()?;
    ensure!(escape.status.success(), "systemd-escape failed: {}", String::from_utf8_lossy(&escape.stderr));
    let usr_device_unit = String::from_utf8(escape.stdout).context("systemd-escape printed no text")?;
    std::fs::write(units.join(VERITY_UNIT_NAME), verity_unit(manifest, usr_device_unit.trim()))?;
    std::os::unix::fs::symlink(format!("../{VERITY_UNIT_NAME}"), requires.join(VERITY_UNIT_NAME))?;
    Ok(())
}

/// Whether a boot of `anchor` ended as it must: the real init finished, and for the verity
/// anchor, /usr was the verity device, verified. An anchor that mounted /usr unverified
/// would make the comparison a lie.
pub fn check_boot(console: &vm::Console, opens_verity: bool) -> anyhow::Result<()> {
    let lines = console.real_init();
    if lines.last() != Some(&"done") {
        bail!("the boot did not reach the real root's end");
    }
    let on_verity = lines.iter().any(|l| l.starts_with("usr-device ") && l.ends_with(" dm-name usr"))
        && lines.iter().any(|l| l.starts_with("dm usr: verity "))
        && lines.contains(&"dm usr: status Verified");
    if opens_verity && !on_verity {
        bail!("the real root's /usr is not the dm-verity device usr");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> vm::Kernel {
        vm::Kernel { vmlinuz: "/k/vmlinuz".into(), modules_dir: "/k/lib/modules/6.1.0-57-cloud-amd64".into() }
    }

    #[test]
    fn dracut_builds_for_the_benchs_kernel_without_the_hosts_configuration() {
        let arguments = dracut_arguments(&kernel(), &DracutExtras::default(), Path::new("/empty"), Path::new("/out.img")).unwrap();
        let after = |flag: &str| arguments.iter().position(|a| a == flag).and_then(|i| arguments.get(i + 1)).cloned();
        assert_eq!(after("--kver").as_deref(), Some("6.1.0-57-cloud-amd64"));
        assert_eq!(after("--kmoddir").as_deref(), Some("/k/lib/modules/6.1.0-57-cloud-amd64"));
        assert_eq!(after("--conf").as_deref(), Some("/dev/null"));
        assert_eq!(after("--confdir").as_deref(), Some("/empty"));
        assert_eq!(after("--drivers").as_deref(), Some("virtio_pci virtio_blk"));
        assert!(arguments.iter().any(|a| a == "--no-hostonly") && arguments.iter().any(|a| a == "--reproducible"));
        assert!(!arguments.iter().any(|a| a == "--include" || a == "--add-drivers"), "{arguments:?}");
        assert_eq!(arguments.last().map(String::as_str), Some("/out.img"));
    }

    #[test]
    fn the_verity_anchor_adds_dm_verity_veritysetup_and_its_units() {
        let extras = DracutExtras::verity(Path::new("/units"));
        let arguments = dracut_arguments(&kernel(), &extras, Path::new("/empty"), Path::new("/out.img")).unwrap();
        let after = |flag: &str| arguments.iter().position(|a| a == flag).and_then(|i| arguments.get(i + 1)).cloned();
        assert_eq!(after("--modules").as_deref(), Some("systemd-initrd dracut-systemd rootfs-block usrmount dm"));
        assert_eq!(after("--add-drivers").as_deref(), Some("dm_verity"));
        assert_eq!(after("--install").as_deref(), Some("veritysetup"));
        let include = arguments.iter().position(|a| a == "--include").unwrap();
        assert_eq!(arguments[include + 1..include + 3], ["/units".to_string(), "/".to_string()]);
    }

    #[test]
    fn the_verity_unit_opens_usr_at_the_manifests_offset_with_its_root_hash() {
        let fixture_json = r#"{"os":"keel","image_bytes":1048576,"sector_size":512,"usr":{"filesystem":"ext4","hash_offset":1065345024,
            "root_hash":"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff","hash_algorithm":"sha256","hash_type":1,
            "data_block_size":4096,"hash_block_size":4096,"data_blocks":260094,"salt":"aa"}}"#;
        let manifest = keel_manifest::ImageManifest::from_json(fixture_json).unwrap();
        let unit = verity_unit(&manifest, r"dev-disk-by\x2dpartlabel-USR\x2dA.device");
        assert!(unit.contains(
            "ExecStart=/usr/sbin/veritysetup --panic-on-corruption --hash-offset=1065345024 open /dev/disk/by-partlabel/USR-A usr \
             /dev/disk/by-partlabel/USR-A 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
        ));
        assert!(unit.contains("Requires=dev-disk-by\\x2dpartlabel-USR\\x2dA.device\n"));
        // systemd cannot order before a device unit; the link below is what pulls it in.
        assert!(!unit.contains("Before=dev-mapper-usr.device"));
        // systemd expands a single $ itself: the shell must get its own.
        assert!(unit.contains("$$(dmsetup status usr)") && unit.contains("\"$$4\" = V"));
    }

    /// A module tree shaped like the cloud kernel's for virtio: virtio_pci and virtio_blk
    /// share virtio and virtio_ring, which modules.dep names after the module that needs them.
    fn fake_kernel() -> vm::Kernel {
        let modules_dir = keel_test_support::scratch_dir(std::env::temp_dir(), "anchors-kernel").join("6.1.0-test");
        let dep = "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
                   kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
                   kernel/drivers/virtio/virtio.ko:\nkernel/drivers/virtio/virtio_ring.ko:\n";
        std::fs::create_dir_all(modules_dir.join("kernel/drivers/virtio")).unwrap();
        std::fs::create_dir_all(modules_dir.join("kernel/drivers/block")).unwrap();
        std::fs::write(modules_dir.join("modules.dep"), dep).unwrap();
        std::fs::write(modules_dir.join("modules.alias"), "").unwrap();
        for line in dep.lines() {
            let module = line.split(':').next().unwrap();
            std::fs::write(modules_dir.join(module), module).unwrap();
        }
        vm::Kernel { vmlinuz: "/k/vmlinuz".into(), modules_dir }
    }

    #[test]
    fn the_busybox_anchor_loads_the_virtio_modules_dependencies_first() {
        let archive = busybox_archive(&fake_kernel()).unwrap();
        let Some(Node::File { data, .. }) = archive.get(BUSYBOX_MODULE_LIST) else { panic!("no module list") };
        let list = String::from_utf8(data.clone()).unwrap();
        let names: Vec<&str> = list.lines().map(|path| path.rsplit('/').next().unwrap()).collect();
        assert_eq!(names, ["virtio.ko", "virtio_ring.ko", "virtio_pci.ko", "virtio_blk.ko"]);
        for path in list.lines() {
            assert!(path.starts_with("/lib/modules/6.1.0-test/kernel/"), "{path}");
            assert!(matches!(archive.get(path), Some(Node::File { data, .. }) if !data.is_empty()), "{path} is listed but not packed");
        }
        assert!(archive.contains("/bin/switch_root") && archive.contains("/init") && archive.contains("/dev/console"));
    }

    fn console(real_init: &[&str]) -> vm::Console {
        let text: String = real_init.iter().map(|line| format!("REAL-INIT: {line}\n")).collect();
        vm::Console { text, timed_out: false, cut: false, refused_by_firmware: false, elapsed: Default::default(), arrivals: vec![] }
    }

    #[test]
    fn a_verity_anchor_whose_usr_is_the_bare_partition_is_refused() {
        let bare = console(&["usr-device 254:3 dm-name none", "dm usr: error", "done"]);
        assert!(check_boot(&bare, true).is_err());
        assert!(check_boot(&bare, false).is_ok());
        let verified = console(&["usr-device 253:0 dm-name usr", "dm usr: verity 0 2080768 verity 1 ...", "dm usr: status Verified", "done"]);
        assert!(check_boot(&verified, true).is_ok());
        assert!(check_boot(&console(&["started"]), false).is_err(), "a boot that did not finish passed");
    }
}
