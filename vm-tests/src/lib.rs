//! The harness behind keel's end-to-end tests and `cargo xtask demo`: a Debian cloud
//! kernel, static keel binaries, a small real root, images and initrds built with keel's
//! own builders, and QEMU (TCG) runs whose serial console the tests read.

use anyhow::{bail, ensure, Context};
use keel_disk::{Guid, LayoutSizes, SectorSize};
use keel_image::ImageSpec;
pub use keel_image::VerityLayout;
pub use keel_initrd::DriverChoice;
use keel_initrd::{Compression, InitrdSpec};
use keel_manifest::ImageManifest;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

mod serial;
pub mod uefi;

const MIB: u64 = 1 << 20;
/// The logical sector size fixtures are built for, and their image files read with.
pub const FIXTURE_SECTOR_SIZE: SectorSize = SectorSize::Bytes512;
const KERNEL_META_PACKAGE: &str = "linux-image-cloud-amd64";
const GENERIC_KERNEL_META_PACKAGE: &str = "linux-image-amd64";
const MUSL: &str = "x86_64-unknown-linux-musl";
/// What every boot passes: the serial console, reboot at once on a kernel panic (QEMU's
/// -no-reboot then ends the run) and power off on an initrd failure.
pub const BASE_CMDLINE: &str = "console=ttyS0 quiet panic=-1 rd.emergency=poweroff";

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Scratch space for builds and disks, under the workspace's target directory.
pub fn work_dir() -> PathBuf {
    workspace().join("target/keel-vm")
}

fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output().with_context(|| format!("cannot run {:?}", command.get_program()))?;
    if !output.status.success() {
        bail!("{command:?} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

/// A kernel and its module tree, as Debian ships it.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    pub modules_dir: PathBuf,
}

/// The kernel every scenario boots: Debian's cloud kernel.
pub fn kernel() -> anyhow::Result<Kernel> {
    kernel_of(KERNEL_META_PACKAGE)
}

/// Debian's generic kernel, for the hardware the cloud kernel leaves out (it has no AHCI
/// driver: `# CONFIG_SATA_AHCI is not set`), downloaded on first use.
pub fn generic_kernel() -> anyhow::Result<&'static Kernel> {
    static KERNEL: OnceLock<Result<Kernel, String>> = OnceLock::new();
    KERNEL.get_or_init(|| kernel_of(GENERIC_KERNEL_META_PACKAGE).map_err(|e| format!("{e:#}"))).as_ref().map_err(|e| anyhow::anyhow!("{e}"))
}

/// Downloads and unpacks the kernel the Debian package `meta_package` points at, once;
/// later calls find it in the cache. depmod makes modules.dep (the package leaves that to
/// its install script). The package's control data is kept at `root/DEBIAN` (`control`,
/// `md5sums`), as `dpkg-deb -R` lays it out: dpkg never installs this kernel, so that is what
/// tells an initrd's SBOM the package and version its modules come from, and that they are
/// the package's own bytes.
fn kernel_of(meta_package: &str) -> anyhow::Result<Kernel> {
    let depends = run(Command::new("apt-cache").args(["depends", meta_package]))?;
    let package = depends
        .lines()
        .find_map(|line| line.trim().strip_prefix("Depends: linux-image-"))
        .map(|rest| format!("linux-image-{rest}"))
        .with_context(|| format!("apt-cache knows no kernel for {meta_package} (run apt-get update)"))?;
    let version = package.trim_start_matches("linux-image-").to_string();
    let dir = work_dir().join("kernel").join(&package);
    let kernel = Kernel { vmlinuz: dir.join(format!("root/boot/vmlinuz-{version}")), modules_dir: dir.join(format!("root/lib/modules/{version}")) };
    let control_data = [keel_sbom::kernel::CONTROL_PATH, keel_sbom::kernel::MD5SUMS_PATH];
    if dir.join("ready").exists() && control_data.iter().all(|path| dir.join("root").join(path).is_file()) {
        return Ok(kernel);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    run(Command::new("apt-get").arg("download").arg(&package).current_dir(&dir))?;
    let deb = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir.join("root")))?;
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(dir.join("root/DEBIAN")))?;
    run(Command::new("depmod").arg("-b").arg(dir.join("root")).arg(&version))?;
    std::fs::remove_file(&deb)?;
    std::fs::write(dir.join("ready"), &package)?;
    Ok(kernel)
}

/// The static (musl) builds of keel-init and keel.
#[derive(Clone, Debug)]
pub struct StaticBinaries {
    pub keel_init: PathBuf,
    pub keel: PathBuf,
}

/// Builds them in a target directory of their own, so this works while an outer cargo
/// (running these tests) holds the main one. `cargo auditable` (installed by `cargo xtask
/// setup`) embeds each binary's crates in it, where the initrd's SBOM reads them.
pub fn static_binaries() -> anyhow::Result<StaticBinaries> {
    let release = static_build(&["-p", "keel-init", "-p", "keel"])?;
    Ok(StaticBinaries { keel_init: release.join("keel-init"), keel: release.join("keel") })
}

/// `cargo auditable build --release --target x86_64-unknown-linux-musl` of `selection`
/// (`-p keel-init`, `--example NAME`) in `target/static`; returns its release directory.
/// Every static build goes through here, so none rebuilds what another built with other
/// settings (cargo-auditable's wrapper is part of every crate's fingerprint).
pub fn static_build(selection: &[&str]) -> anyhow::Result<PathBuf> {
    let target_dir = workspace().join("target/static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace())
        .args(["auditable", "build", "--quiet", "--release", "--target", MUSL])
        .args(selection)
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .context("cannot run cargo")?;
    ensure!(status.success(), "the static build of {} failed (is cargo-auditable installed? `cargo xtask setup`)", selection.join(" "));
    Ok(target_dir.join(MUSL).join("release"))
}

/// Everything a boot needs that does not change between scenarios.
pub struct Artifacts {
    pub kernel: Kernel,
    pub binaries: StaticBinaries,
}

/// Built once per process, whichever test asks first.
pub fn artifacts() -> anyhow::Result<&'static Artifacts> {
    static ARTIFACTS: OnceLock<Result<Artifacts, String>> = OnceLock::new();
    ARTIFACTS
        .get_or_init(|| {
            let build = || anyhow::Ok(Artifacts { kernel: kernel()?, binaries: static_binaries()? });
            build().map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The /usr of keel's demo root: static busybox with its applets, the reporting init,
/// keel itself, and the default /etc under share/keel/etc.
pub fn demo_usr_tree(dir: &Path, keel: &Path) -> anyhow::Result<PathBuf> {
    let usr = dir.join("usr");
    let _ = std::fs::remove_dir_all(&usr);
    for sub in ["bin", "sbin", "lib", "lib64", "share/keel/etc", "share/keel-test"] {
        std::fs::create_dir_all(usr.join(sub))?;
    }
    std::fs::copy("/bin/busybox", usr.join("bin/busybox")).context("cannot copy /bin/busybox (install busybox-static)")?;
    let applets = run(Command::new("/bin/busybox").arg("--list"))?;
    for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", usr.join("bin").join(applet))?;
    }
    std::fs::copy(keel, usr.join("bin/keel"))?;
    std::fs::copy(workspace().join("vm-tests/root/init"), usr.join("sbin/init"))?;
    let os_release = "NAME=keel\nID=keel\nPRETTY_NAME=\"keel demo root\"\n";
    std::fs::write(usr.join("lib/os-release"), os_release)?;
    let etc = usr.join("share/keel/etc");
    std::fs::write(etc.join("os-release"), os_release)?;
    std::fs::write(etc.join("hostname"), "keel\n")?;
    // Account files as Flatcar's baselayout has them, so Ignition's users get their own groups.
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(etc.join("group"), "root:x:0:\nusers:x:100:\n")?;
    std::fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n")?;
    std::fs::write(etc.join("gshadow"), "root:*::\nusers:*::\n")?;
    std::fs::write(etc.join("login.defs"), "UID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\nUSERGROUPS_ENAB yes\n")?;
    // A file for the corruption scenario: recognisable bytes, a block of its own.
    std::fs::write(usr.join("share/keel-test/corrupt-me"), corruption_target_bytes())?;
    Ok(usr)
}

pub const CORRUPTION_TARGET: &str = "/usr/share/keel-test/corrupt-me";

/// 64 KiB that appear nowhere else in the image.
pub fn corruption_target_bytes() -> Vec<u8> {
    b"keel corruption target: flip a byte here and dm-verity must refuse to read it. ".repeat(820)
}

/// A built image with its initrd.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub dir: PathBuf,
    pub image: PathBuf,
    pub initrd: PathBuf,
    pub manifest: ImageManifest,
}

/// Small sizes, so every scenario's disk is cheap to copy.
pub fn test_sizes() -> LayoutSizes {
    LayoutSizes { esp: MIB, bios_boot: MIB, usr: 32 * MIB, oem: MIB, oem_config: MIB, root: 64 * MIB }
}

/// Builds the demo root's image, its /usr hashed as `verity` says, and an initrd for it in
/// `<name>` of this process's own directory under `work_dir()`, so test processes running
/// at the same time never build into or copy from the same files. `edit_manifest` may change what the initrd trusts (the
/// wrong-root-hash scenario).
pub fn build_fixture(name: &str, verity: VerityLayout, edit_manifest: impl FnOnce(&mut ImageManifest)) -> anyhow::Result<Fixture> {
    build_fixture_sized(name, test_sizes(), FIXTURE_SECTOR_SIZE, verity, edit_manifest)
}

/// `build_fixture` with the partition sizes and the logical sector size given:
/// `LayoutSizes::default()` is Flatcar's production layout (1 GiB USR-A), the size costs
/// must be measured at; 4096-byte sectors make an image for 4Kn disks.
pub fn build_fixture_sized(
    name: &str,
    sizes: LayoutSizes,
    sector_size: SectorSize,
    verity: VerityLayout,
    edit_manifest: impl FnOnce(&mut ImageManifest),
) -> anyhow::Result<Fixture> {
    build_fixture_for(name, sizes, sector_size, verity, &Vendor::default(), edit_manifest)
}

/// What a vendor adds to the demo image: an OEM partition tree (`keel image build --oem`) and
/// Ignition base configs in the initrd (`keel initrd build --ignition-base`).
#[derive(Default)]
pub struct Vendor<'a> {
    pub oem: Option<&'a Path>,
    pub ignition_base: Option<&'a Path>,
}

/// The demo image of the small test sizes with `vendor`'s additions, and its initrd.
pub fn build_vendor_fixture(name: &str, sizes: LayoutSizes, vendor: &Vendor) -> anyhow::Result<Fixture> {
    build_fixture_for(name, sizes, FIXTURE_SECTOR_SIZE, VerityLayout::default(), vendor, |_| {})
}

fn build_fixture_for(
    name: &str,
    sizes: LayoutSizes,
    sector_size: SectorSize,
    verity: VerityLayout,
    vendor: &Vendor,
    edit_manifest: impl FnOnce(&mut ImageManifest),
) -> anyhow::Result<Fixture> {
    let artifacts = artifacts()?;
    let dir = keel_test_support::process_dir(work_dir()).join(name);
    std::fs::create_dir_all(&dir)?;
    let usr = demo_usr_tree(&dir, &artifacts.binaries.keel)?;
    let image = dir.join("disk.img");
    let spec = ImageSpec {
        usr_tree: usr,
        usr_b_tree: None,
        oem_tree: vendor.oem.map(Path::to_path_buf),
        os: "keel".into(),
        sizes,
        sector_size,
        output: image.clone(),
        disk_guid: Guid::parse(keel_disk::IMAGE_DISK_GUID)?,
        epoch: 0,
        verity,
    };
    let mut manifest = keel_image::build(&spec)?;
    edit_manifest(&mut manifest);
    let initrd = dir.join("initrd.img");
    // Every filesystem, so scenarios can ask for XFS and btrfs ROOTs.
    let drivers = DriverChoice::Default;
    build_initrd_with(&manifest, &artifacts.kernel, drivers, &keel_manifest::ROOT_FILESYSTEMS, vendor.ignition_base, &initrd)?;
    Ok(Fixture { dir, image, initrd, manifest })
}

/// A keel initrd trusting `manifest`, with `kernel`'s modules, `drivers` and what formats
/// and mounts `root_filesystems`, at `output`.
pub fn build_initrd(
    manifest: &ImageManifest,
    kernel: &Kernel,
    drivers: DriverChoice,
    root_filesystems: &[&str],
    output: &Path,
) -> anyhow::Result<()> {
    build_initrd_with(manifest, kernel, drivers, root_filesystems, None, output)
}

fn build_initrd_with(
    manifest: &ImageManifest,
    kernel: &Kernel,
    drivers: DriverChoice,
    root_filesystems: &[&str],
    ignition_base: Option<&Path>,
    output: &Path,
) -> anyhow::Result<()> {
    let spec = InitrdSpec {
        init: artifacts()?.binaries.keel_init.clone(),
        manifest: manifest.clone(),
        modules_dir: kernel.modules_dir.clone(),
        modules: keel_initrd::default_modules(),
        drivers,
        root_filesystems: root_filesystems.iter().map(|fs| fs.to_string()).collect(),
        // Every format, so scenarios' Ignition configs may make any filesystem or swap area.
        mkfs_formats: keel_manifest::MKFS_FORMATS.iter().map(|format| format.to_string()).collect(),
        host_root: PathBuf::from("/"),
        ignition_base: ignition_base.map(Path::to_path_buf),
    };
    std::fs::write(output, keel_initrd::build(&spec, Compression::DEFAULT)?.0).with_context(|| format!("cannot write {}", output.display()))
}

/// The fixture most scenarios share, built once per process; each test boots its own
/// copy of the disk.
pub fn shared_fixture() -> anyhow::Result<&'static Fixture> {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| build_fixture("shared", VerityLayout::default(), |_| {}).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The small fixture built for 4Kn disks (4096-byte logical sectors), once per process.
pub fn fixture_4kn() -> anyhow::Result<&'static Fixture> {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            build_fixture_sized("4kn", test_sizes(), SectorSize::Bytes4096, VerityLayout::default(), |_| {}).map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The default layout's fixture (Flatcar's sizes), built once per process.
pub fn default_layout_fixture() -> anyhow::Result<&'static Fixture> {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            build_fixture_sized("default-layout", LayoutSizes::default(), FIXTURE_SECTOR_SIZE, VerityLayout::default(), |_| {})
                .map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A private copy of `fixture`'s disk for one scenario.
pub fn disk_copy(fixture: &Fixture, scenario: &str) -> anyhow::Result<PathBuf> {
    let path = fixture.dir.join(format!("{scenario}.img"));
    run(Command::new("cp").arg("--sparse=always").arg(&fixture.image).arg(&path))?;
    Ok(path)
}

/// What one QEMU run printed.
#[derive(Clone, Debug)]
pub struct Console {
    pub text: String,
    pub timed_out: bool,
    /// `boot_until`'s `cut` ended the run: a run that ended by itself was not cut.
    pub cut: bool,
    /// The UEFI firmware refused to start the boot image (Secure Boot: `Access Denied`) and
    /// the run was stopped there, as the firmware would wait for a key for ever.
    pub refused_by_firmware: bool,
    pub elapsed: Duration,
    /// When each line of `text` came out of QEMU, from QEMU's start: wall time as a user
    /// waits for it, which the kernel's own timestamps leave out (firmware, decompression).
    pub arrivals: Vec<Duration>,
}

impl Console {
    pub fn has(&self, needle: &str) -> bool {
        self.text.contains(needle)
    }

    /// The lines the real init printed, without their prefix.
    pub fn real_init(&self) -> Vec<&str> {
        self.text.lines().filter_map(|line| line.split_once("REAL-INIT: ").map(|(_, rest)| rest.trim_end())).collect()
    }

    /// Seconds from the kernel's "Run /init" to the real init's first kernel-log line,
    /// both from the kernel's own timestamps (read from dmesg in the real root).
    pub fn initrd_seconds(&self) -> Option<f64> {
        let stamp = |needle: &str| {
            self.real_init().iter().find(|l| l.contains(needle)).and_then(|line| {
                let open = line.find('[')?;
                let close = line[open..].find(']')? + open;
                line[open + 1..close].trim().parse::<f64>().ok()
            })
        };
        Some(stamp("keel-root: real init started")? - stamp("Run /init as init process")?)
    }

    /// How long after QEMU's start the first line containing `needle` came out.
    pub fn seen_at(&self, needle: &str) -> Option<Duration> {
        let index = self.text.lines().position(|line| line.contains(needle))?;
        self.arrivals.get(index).copied()
    }
}

/// The fw_cfg key Flatcar's QEMU images read their Ignition config from.
pub const FIRMWARE_CONFIG_KEY: &str = "opt/org.flatcar-linux/config";

/// A disk image whose file name ends so is attached read-only, as a write-protected stick.
pub const READ_ONLY_DISK: &str = ".readonly.img";

/// SHA-256 of a whole file, to show that a boot left a disk exactly as it was.
pub fn file_digest(path: &Path) -> anyhow::Result<String> {
    Ok(run(Command::new("sha256sum").arg(path))?.split_whitespace().next().unwrap_or_default().to_string())
}

/// One QEMU boot with these disks (none at all is allowed), each on virtio-blk. Ends
/// when the guest powers off or reboots (QEMU exits), or is killed after `timeout`.
pub fn boot(disks: &[&Path], initrd: &Path, extra_cmdline: &str, timeout: Duration) -> anyhow::Result<Console> {
    boot_until(disks, initrd, extra_cmdline, timeout, "unsafe", |_, _| false)
}

/// Like `boot`, with QEMU's disk `cache` mode, and SIGKILLed (a power cut) as soon as
/// `cut(console so far, time since start)` says so. With `writethrough` or `none`, every
/// write the guest saw completed is in the image file when QEMU dies.
pub fn boot_until(
    disks: &[&Path],
    initrd: &Path,
    extra_cmdline: &str,
    timeout: Duration,
    cache: &str,
    cut: impl FnMut(&str, Duration) -> bool,
) -> anyhow::Result<Console> {
    let machine = Machine {
        kernel: &artifacts()?.kernel,
        disks: disks.iter().map(|path| Disk::on(Bus::Virtio, path)).collect(),
        plugged_in_later: None,
        firmware_config: None,
    };
    boot_machine(&machine, initrd, extra_cmdline, timeout, cache, cut)
}

/// How a disk is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    /// virtio-blk: /dev/vdX.
    Virtio,
    /// NVMe: /dev/nvme0nX.
    Nvme,
    /// A SCSI disk on a virtio-scsi controller: /dev/sdX.
    VirtioScsi,
    /// A SATA disk on an AHCI controller: /dev/sdX.
    Ahci,
}

/// One disk of a machine.
#[derive(Clone, Debug)]
pub struct Disk {
    pub path: PathBuf,
    pub bus: Bus,
    /// The logical (and physical) sector size the guest sees: 512, or 4096 for a 4Kn disk.
    pub sector_size: SectorSize,
}

impl Disk {
    /// A disk of 512-byte sectors.
    pub fn on(bus: Bus, path: &Path) -> Disk {
        Disk { path: path.to_path_buf(), bus, sector_size: SectorSize::Bytes512 }
    }

    /// A disk holding a copy of `fixture`'s image, with the sector size it was built for.
    pub fn of_fixture(bus: Bus, path: &Path, fixture: &Fixture) -> Disk {
        Disk { sector_size: fixture.manifest.sector_size, ..Disk::on(bus, path) }
    }
}

/// What QEMU emulates: the kernel it boots and the disks, in the order given.
pub struct Machine<'a> {
    pub kernel: &'a Kernel,
    pub disks: Vec<Disk>,
    /// Disks plugged in while the guest runs, once its console shows the text: a disk
    /// that turns up late, as a slow USB stick or a hotplugged volume does.
    pub plugged_in_later: Option<(&'a str, Vec<Disk>)>,
    /// An Ignition config QEMU passes through fw_cfg, under Flatcar's key, as a user of a
    /// QEMU image does.
    pub firmware_config: Option<&'a Path>,
}

/// The `-device` value for disk number `index` of a machine, whose drive is `disk{index}`.
fn disk_device(disk: &Disk, index: usize) -> String {
    let sectors = format!("logical_block_size={0},physical_block_size={0}", disk.sector_size.bytes());
    let id = format!("disk{index}");
    match disk.bus {
        Bus::Virtio => format!("virtio-blk-pci,drive={id},id=dev{index},{sectors}"),
        Bus::Nvme => format!("nvme,drive={id},id=dev{index},serial=keel{index},{sectors}"),
        Bus::VirtioScsi => format!("scsi-hd,drive={id},id=dev{index},bus=scsi0.0,{sectors}"),
        // An AHCI controller has six ports, one disk each.
        Bus::Ahci => format!("ide-hd,drive={id},id=dev{index},bus=ahci0.{index},{sectors}"),
    }
}

/// QEMU's arguments for a machine's disks, `disks` there from the start and `later` plugged
/// in while it runs: a controller once per bus that needs one, each disk's drive, and the
/// devices of those there from the start.
fn disk_arguments(disks: &[Disk], later: &[Disk], cache: &str) -> Vec<String> {
    let all: Vec<&Disk> = disks.iter().chain(later).collect();
    let mut arguments = Vec::new();
    let mut add = |words: [&str; 2]| arguments.extend(words.map(str::to_string));
    for (bus, controller) in [(Bus::VirtioScsi, "virtio-scsi-pci,id=scsi0"), (Bus::Ahci, "ahci,id=ahci0")] {
        if all.iter().any(|disk| disk.bus == bus) {
            add(["-device", controller]);
        }
    }
    for (index, disk) in all.iter().enumerate() {
        let read_only = if disk.path.to_string_lossy().ends_with(READ_ONLY_DISK) { ",readonly=on" } else { "" };
        add(["-drive", &format!("file={},format=raw,if=none,id=disk{index},cache={cache}{read_only}", disk.path.display())]);
        if index < disks.len() {
            add(["-device", &disk_device(disk, index)]);
        }
    }
    arguments
}

/// Disks a machine gets while it runs, through QEMU's QMP socket, once its console shows
/// `after`; they are numbered after the `first_index` disks it started with.
struct LateDisks<'a> {
    after: &'a str,
    disks: &'a [Disk],
    first_index: usize,
    socket: PathBuf,
}

/// Plugs in the late disks through QMP.
fn plug_in_late_disks(late: &LateDisks) -> anyhow::Result<()> {
    use std::io::Write;
    let socket = &late.socket;
    let stream = std::os::unix::net::UnixStream::connect(socket).with_context(|| format!("cannot connect to QMP at {}", socket.display()))?;
    let mut replies = BufReader::new(stream.try_clone()?).lines();
    replies.next().context("no QMP greeting")??;
    let mut writer = stream;
    let mut command = |json: String| -> anyhow::Result<()> {
        writeln!(writer, "{json}")?;
        // Events may come before the reply; the reply has "return" or "error".
        loop {
            let line = replies.next().context("QMP closed")??;
            if line.contains("\"error\"") {
                bail!("QMP refused {json}: {line}");
            }
            if line.contains("\"return\"") {
                return Ok(());
            }
        }
    };
    command(r#"{"execute": "qmp_capabilities"}"#.to_string())?;
    for (offset, disk) in late.disks.iter().enumerate() {
        let device = disk_device(disk, late.first_index + offset);
        let mut words = device.split(',');
        let driver = words.next().unwrap_or_default();
        let properties: Vec<String> = words.filter_map(|word| word.split_once('=')).map(|(key, value)| format!(r#", "{key}": "{value}""#)).collect();
        command(format!(r#"{{"execute": "device_add", "arguments": {{"driver": "{driver}"{}}}}}"#, properties.concat()))?;
    }
    Ok(())
}

/// QEMU with what every boot has, whatever starts the guest: memory, one CPU, the serial
/// console on stdout, no reboot (a reboot ends the run), and the disks.
pub(crate) fn qemu_command(disks: &[Disk], later: &[Disk], cache: &str) -> Command {
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-m", "512", "-smp", "1", "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot"])
        .args(disk_arguments(disks, later, cache));
    command
}

/// `boot_until` on any machine.
pub fn boot_machine(
    machine: &Machine,
    initrd: &Path,
    extra_cmdline: &str,
    timeout: Duration,
    cache: &str,
    cut: impl FnMut(&str, Duration) -> bool,
) -> anyhow::Result<Console> {
    let later = machine.plugged_in_later.as_ref().map_or(&[][..], |(_, disks)| disks.as_slice());
    let mut command = qemu_command(&machine.disks, later, cache);
    command.arg("-kernel").arg(&machine.kernel.vmlinuz).arg("-initrd").arg(initrd).arg("-append").arg(format!("{BASE_CMDLINE} {extra_cmdline}"));
    if let Some(config) = machine.firmware_config {
        command.arg("-fw_cfg").arg(format!("name={FIRMWARE_CONFIG_KEY},file={}", config.display()));
    }
    let late = machine.plugged_in_later.as_ref().map(|(after, disks)| LateDisks {
        after,
        disks,
        first_index: machine.disks.len(),
        socket: std::env::temp_dir().join(format!("keel-qmp-{}-{:?}.sock", std::process::id(), std::thread::current().id())),
    });
    if let Some(late) = &late {
        let _ = std::fs::remove_file(&late.socket);
        command.arg("-qmp").arg(format!("unix:{},server=on,wait=off", late.socket.display()));
    }
    run_qemu(command, late, Watch { timeout, firmware_refusal: None }, cut)
}

/// What ends a run besides the guest itself and the caller's cut.
pub(crate) struct Watch<'a> {
    /// QEMU is killed after this long.
    pub timeout: Duration,
    /// Text with which the firmware says it will not start the boot image and then waits
    /// for a key for ever: QEMU is stopped as soon as the console shows it.
    pub firmware_refusal: Option<&'a str>,
}

/// Runs QEMU's `command` with its serial console on stdout until the guest ends the run
/// (powers off or reboots), `watch` stops it, or `cut(console so far, time since start)`
/// says so; the console is read as it comes, the line being written included.
pub(crate) fn run_qemu(
    mut command: Command,
    late: Option<LateDisks>,
    watch: Watch,
    mut cut: impl FnMut(&str, Duration) -> bool,
) -> anyhow::Result<Console> {
    use std::io::Read;
    let mut late_disks_pending = late.as_ref();
    let started = Instant::now();
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("cannot start qemu-system-x86_64")?;
    let mut stdout = child.stdout.take().context("no QEMU stdout")?;
    let (chunks_tx, chunks_rx) = mpsc::channel();
    // Stamped as they are read, not as the loop below gets to them, which polls.
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(read @ 1..) = stdout.read(&mut buffer) {
            if chunks_tx.send((started.elapsed(), buffer.get(..read).unwrap_or_default().to_vec())).is_err() {
                break;
            }
        }
    });
    let mut serial = serial::SerialText::default();
    let mut timed_out = false;
    let mut was_cut = false;
    let mut refused_by_firmware = false;
    loop {
        match chunks_rx.recv_timeout(Duration::from_millis(2)) {
            Ok((arrival, bytes)) => serial.push(arrival, &bytes),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(late) = late_disks_pending.filter(|late| serial.text().contains(late.after)) {
            late_disks_pending = None;
            if let Err(error) = plug_in_late_disks(late) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(error.context(format!("plugging in the late disks; the console so far:\n{}", serial.text())));
            }
        }
        if watch.firmware_refusal.is_some_and(|refusal| serial.text().contains(refusal)) {
            refused_by_firmware = true;
            let _ = child.kill();
            break;
        }
        if cut(serial.text(), started.elapsed()) {
            was_cut = true;
            let _ = child.kill();
            break;
        }
        if started.elapsed() > watch.timeout {
            timed_out = true;
            let _ = child.kill();
            break;
        }
    }
    let elapsed = started.elapsed();
    let _ = child.wait();
    let _ = reader.join();
    // Even after a cut: what is still in the pipe was printed before the power went, and
    // says how far the guest got.
    while let Ok((arrival, bytes)) = chunks_rx.try_recv() {
        serial.push(arrival, &bytes);
    }
    let (text, arrivals) = serial.finish();
    Ok(Console { text, timed_out, cut: was_cut, refused_by_firmware, elapsed, arrivals })
}

/// The boot reached the real root, whose init finished.
pub fn assert_reached_real_init(console: &Console) {
    assert!(!console.timed_out, "the VM did not finish:\n{}", console.text);
    assert!(console.real_init().contains(&"done"), "the real init did not finish:\n{}", console.text);
}

/// keel-init stopped the boot by itself in `stage`, with a report that gives `reason`, and
/// carried out its emergency action without starting the real root: a hang is not a refusal.
pub fn assert_refused(console: &Console, stage: &str, reason: &str) {
    assert!(!console.timed_out, "the VM did not stop by itself:\n{}", console.text);
    let Some((_, report)) = console.text.split_once("BOOT FAILED") else { panic!("no failure report:\n{}", console.text) };
    assert!(report.contains(&format!("stage: {stage} (")), "the boot did not stop in stage {stage}:\n{}", console.text);
    assert!(report.contains(reason), "the report does not say {reason:?}:\n{}", console.text);
    assert!(console.real_init().is_empty(), "the real init ran:\n{}", console.text);
    // Before the command line is read (config), the default action applies: reboot.
    let acted = report.contains("powering off (rd.emergency)") || report.contains("rebooting in 10 s");
    assert!(report.contains("The real root was not started.") && acted, "no emergency action:\n{}", console.text);
}

/// One disk on one bus, with the sector size its image was built for, booted twice.
pub struct FirstAndLaterBoot<'a> {
    pub name: &'a str,
    pub fixture: &'a Fixture,
    /// How long the copy of the fixture's disk is made, so that ROOT grows.
    pub disk_bytes: u64,
    pub kernel: &'a Kernel,
    pub initrd: &'a Path,
    pub bus: Bus,
    /// Where ROOT must be mounted from.
    pub partition_node: &'a str,
    /// Disks attached after the boot disk, on any bus.
    pub other_disks: Vec<Disk>,
}

impl FirstAndLaterBoot<'_> {
    /// A first boot, then a later boot with the command line `later_cmdline` makes from
    /// the disk: both reach the real root with ROOT on `partition_node`, which fills the
    /// disk; the first formats ROOT and removes the first-boot flag, the later one does not
    /// format again.
    pub fn run(&self, later_cmdline: impl FnOnce(&Path) -> String) -> (Console, Console) {
        const TIMEOUT: Duration = Duration::from_secs(180);
        let disk = disk_copy(self.fixture, self.name).unwrap();
        resize_disk(&disk, self.disk_bytes).unwrap();
        let machine = Machine {
            kernel: self.kernel,
            disks: [Disk::of_fixture(self.bus, &disk, self.fixture)].into_iter().chain(self.other_disks.iter().cloned()).collect(),
            plugged_in_later: None,
            firmware_config: None,
        };
        let root_mounted = |console: &Console| {
            let root = console.real_init().into_iter().find(|l| l.starts_with("mount / ")).unwrap_or_default().to_string();
            assert!(root.starts_with(&format!("mount / {} ext4 rw,", self.partition_node)), "{root}\n{}", console.text);
        };
        let first = boot_machine(&machine, self.initrd, "", TIMEOUT, "unsafe", |_, _| false).unwrap();
        assert_reached_real_init(&first);
        root_mounted(&first);
        assert!(first.has("formatted as ext4 because it was blank"), "{}", first.text);
        assert_root_fills(&disk, self.disk_bytes);
        assert!(!esp_has_flag(&disk).unwrap(), "the first-boot flag is still on the ESP");

        let later = boot_machine(&machine, self.initrd, &later_cmdline(&disk), TIMEOUT, "unsafe", |_, _| false).unwrap();
        assert_reached_real_init(&later);
        root_mounted(&later);
        assert!(!later.has("formatted as ext4"), "the later boot formatted ROOT again:\n{}", later.text);
        let _ = std::fs::remove_file(&disk);
        (first, later)
    }
}

/// ROOT of `image` ends on the last whole MiB before the backup table at the end of its
/// `disk_bytes`, and sgdisk (reading a 4Kn image through a loop device of its sector size)
/// finds nothing wrong with the table.
pub fn assert_root_fills(image: &Path, disk_bytes: u64) {
    let (start, size) = root_extent(image).unwrap();
    assert_eq!(start + size, disk_bytes - MIB, "ROOT does not reach the disk's last MiB");
    let sector_size = image_table(image).unwrap().sector_size;
    let verdict = match sector_size {
        SectorSize::Bytes512 => run(Command::new("sgdisk").arg("-v").arg(image)),
        SectorSize::Bytes4096 => keel_test_support::as_disk(image, sector_size.bytes(), |disk| run(Command::new("sgdisk").arg("-v").arg(disk))),
    }
    .unwrap();
    assert!(verdict.contains("No problems found"), "{verdict}");
}

/// Makes `image` `bytes` long, as if written to a bigger disk (sparse).
pub fn resize_disk(image: &Path, bytes: u64) -> anyhow::Result<()> {
    Ok(std::fs::OpenOptions::new().write(true).open(image)?.set_len(bytes)?)
}

/// The partition table of the image file `image`, a fixture's: of 512-byte sectors, or,
/// when it does not read in those, of 4096 (a 4Kn fixture; one whose primary a power cut
/// tore reads in neither size's LBA 1, so keel's size mismatch cannot tell). A table that
/// reads in neither gives the 512-byte reading's error.
pub fn image_table(image: &Path) -> anyhow::Result<keel_disk::Gpt> {
    let read = |sector_size| keel_disk::read_gpt(&mut std::fs::File::open(image)?, sector_size);
    read(FIXTURE_SECTOR_SIZE).or_else(|error| read(FIXTURE_SECTOR_SIZE.other()).map_err(|_| error))
}

/// Where ROOT of `image` is: its first byte and its size in bytes.
pub fn root_extent(image: &Path) -> anyhow::Result<(u64, u64)> {
    let gpt = image_table(image)?;
    let root = gpt.by_name("ROOT")?.context("no ROOT")?;
    Ok((root.start_bytes(gpt.sector_size), root.size_bytes(gpt.sector_size)))
}

/// Puts a filesystem made by `mkfs` (program and arguments; the target file is appended)
/// into ROOT of `image`, as an image that ships a formatted ROOT would have it.
pub fn format_root(image: &Path, mkfs: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let (start, size) = root_extent(image)?;
    let fs_file = image.with_extension("root-fs");
    std::fs::File::create(&fs_file)?.set_len(size)?;
    run(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&fs_file).envs(env.iter().copied()))?;
    run(Command::new("dd")
        .arg(format!("if={}", fs_file.display()))
        .arg(format!("of={}", image.display()))
        .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
        .arg(format!("seek={}", start >> 20)))?;
    std::fs::remove_file(&fs_file)?;
    Ok(())
}

/// Runs `with` on ROOT of `image` attached as a loop device, which is detached after.
pub fn with_root_device<T>(image: &Path, with: impl FnOnce(&str) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let (start, size) = root_extent(image)?;
    let device =
        run(Command::new("losetup").args(["--find", "--show", "--offset", &start.to_string(), "--sizelimit", &size.to_string()]).arg(image))?;
    let device = device.trim();
    let result = with(device);
    run(Command::new("losetup").args(["--detach", device]))?;
    result
}

/// Runs `with` on ROOT of `image` mounted read-only on the host (a journal the guest left is
/// replayed first, as its next boot would), unmounted after.
pub fn with_root_mounted<T>(image: &Path, with: impl FnOnce(&Path) -> anyhow::Result<T>) -> anyhow::Result<T> {
    with_root_device(image, |device| {
        let mount_point = image.with_extension("root-mnt");
        std::fs::create_dir_all(&mount_point)?;
        run(Command::new("mount").args(["-o", "ro", device]).arg(&mount_point))?;
        let result = with(&mount_point);
        run(Command::new("umount").arg(&mount_point))?;
        std::fs::remove_dir(&mount_point)?;
        result
    })
}

/// Ignition's result file as a boot's outcome to compare: without what differs from boot to
/// boot (its boot ID and date) and without the record of earlier runs (`previousReport`: a
/// run a power cut stopped did happen, and Ignition nests its report).
pub const RESULT_FILE: &str = "etc/.ignition-result.json";

/// ROOT's tree as `keel_test_support::ignition::snapshot` reads it (paths, types, modes,
/// owners, contents), with the result file reduced as [`RESULT_FILE`] says.
pub fn root_snapshot(image: &Path) -> anyhow::Result<keel_test_support::ignition::Snapshot> {
    with_root_mounted(image, |root| {
        let mut tree = keel_test_support::ignition::snapshot(root, &keel_test_support::ignition::today_and_yesterday());
        if let Some(node) = tree.get_mut(RESULT_FILE) {
            let mut result: serde_json::Value = serde_json::from_slice(node.contents.as_deref().unwrap_or_default())?;
            if let Some(fields) = result.as_object_mut() {
                for per_boot in ["provisioningBootID", "provisioningDate", "previousReport"] {
                    fields.remove(per_boot);
                }
            }
            node.contents = Some(result.to_string().into_bytes());
        }
        Ok(tree)
    })
}

/// `program args... <ROOT of image>`'s stdout; fails when the program does.
pub fn on_root(image: &Path, program: &str, args: &[&str]) -> anyhow::Result<String> {
    with_root_device(image, |device| run(Command::new(program).args(args).arg(device)))
}

/// `e2fsck -fn` on ROOT's ext4 after replaying its journal, as the next mount would: a
/// machine cut off (or powered off with `-f`) leaves committed metadata in the journal,
/// which a read-only check would otherwise read as damage.
pub fn check_root_ext4(image: &Path) -> anyhow::Result<()> {
    with_root_device(image, |device| {
        let replay = Command::new("e2fsck").args(["-E", "journal_only", "-y", device]).output()?;
        // 0: nothing to do; 1: the journal was replayed.
        ensure!(matches!(replay.status.code(), Some(0 | 1)), "journal replay failed: {}", String::from_utf8_lossy(&replay.stdout));
        let check = Command::new("e2fsck").args(["-fn", device]).output()?;
        ensure!(check.status.success(), "e2fsck -fn found damage ({}): {}", check.status, String::from_utf8_lossy(&check.stdout));
        Ok(())
    })
}

/// The read-only check of ROOT's `fs` (ext4, xfs or btrfs) by the filesystem's own tools.
pub fn check_root_filesystem(image: &Path, fs: &str) -> anyhow::Result<()> {
    match fs {
        "ext4" => check_root_ext4(image),
        // Mounting replays the log a machine cut off leaves, which xfs_repair -n would
        // otherwise report as damage.
        "xfs" => with_root_device(image, |device| {
            let mount_point = image.with_extension("mnt");
            std::fs::create_dir_all(&mount_point)?;
            run(Command::new("mount").args(["-t", "xfs", device]).arg(&mount_point))?;
            run(Command::new("umount").arg(&mount_point))?;
            std::fs::remove_dir(&mount_point)?;
            run(Command::new("xfs_repair").args(["-n", device])).map(drop)
        }),
        "btrfs" => on_root(image, "btrfs", &["check", "--readonly"]).map(drop),
        other => bail!("no check for {other}"),
    }
}

/// Flips one bit of the byte at `offset` of `path`.
pub fn flip_byte(path: &Path, offset: u64) -> anyhow::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut byte)?;
    byte[0] ^= 0x01;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&byte)?;
    Ok(file.sync_all()?)
}

/// Where the USR-A partition starts in `image`.
pub fn usr_a_start(image: &Path) -> anyhow::Result<u64> {
    let gpt = image_table(image)?;
    Ok(gpt.by_name("USR-A")?.context("no USR-A")?.start_bytes(gpt.sector_size))
}

/// Whether the ESP of `image` still holds the first-boot flag (read with mtools). An ESP
/// mtools cannot read is an error, not a removed flag: a cut that destroyed the FAT must
/// not pass for a first boot that finished.
pub fn esp_has_flag(image: &Path) -> anyhow::Result<bool> {
    let gpt = image_table(image)?;
    let esp = gpt.by_name("EFI-SYSTEM")?.context("no EFI-SYSTEM")?;
    // The whole tree from the root: only an unreadable filesystem makes that fail.
    let listing =
        Command::new("mdir").args(["-/", "-b", "-i", &format!("{}@@{}", image.display(), esp.start_bytes(gpt.sector_size)), "::"]).output()?;
    let stderr = String::from_utf8_lossy(&listing.stderr);
    ensure!(listing.status.success() && stderr.trim().is_empty(), "mtools cannot read the ESP of {} ({}): {stderr}", image.display(), listing.status);
    let flag = format!("::/{}", keel_disk::FIRST_BOOT_FLAG);
    Ok(String::from_utf8_lossy(&listing.stdout).lines().any(|line| line == flag))
}

/// `cmdline` as a boot loader that honours keel's kernel-argument record (`keel/kernel-args.conf`
/// on the ESP of `image`, read with mtools) passes it: the recorded `remove=` words taken out,
/// the `add=` words appended. The harness's stand-in for GRUB sourcing `keel/kernel-args.grub`.
pub fn cmdline_with_esp_kernel_args(image: &Path, cmdline: &str) -> anyhow::Result<String> {
    let gpt = image_table(image)?;
    let esp = gpt.by_name("EFI-SYSTEM")?.context("no EFI-SYSTEM")?;
    let drive = format!("{}@@{}", image.display(), esp.start_bytes(gpt.sector_size));
    let record = Command::new("mtype").args(["-i", &drive, "::/keel/kernel-args.conf"]).output()?;
    if !record.status.success() {
        return Ok(cmdline.to_string());
    }
    let record = String::from_utf8_lossy(&record.stdout).into_owned();
    let list = |verb: &str| -> Vec<String> { record.lines().filter_map(|line| line.strip_prefix(verb)).map(str::to_string).collect() };
    let (add, remove) = (list("add "), list("remove "));
    let mut words: Vec<String> = cmdline.split_whitespace().filter(|word| !remove.iter().any(|r| r == word)).map(str::to_string).collect();
    words.extend(add.into_iter().filter(|word| !cmdline.split_whitespace().any(|existing| existing == word)));
    Ok(words.join(" "))
}

/// The ext4 on ROOT of `image`: (block count, block size), from dumpe2fs.
pub fn ext4_blocks(image: &Path) -> anyhow::Result<(u64, u64)> {
    let header = on_root(image, "dumpe2fs", &["-h"])?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let value = header.lines().find_map(|l| l.strip_prefix(name)).with_context(|| format!("no {name} in {header}"))?;
        Ok(value.trim().parse()?)
    };
    Ok((field("Block count:")?, field("Block size:")?))
}

/// Copies ROOT of `image`, the filesystem as it is now, to the file `to`.
pub fn copy_root(image: &Path, to: &Path) -> anyhow::Result<()> {
    let (start, size) = root_extent(image)?;
    run(Command::new("dd")
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", to.display()))
        .args(["bs=1M", "conv=sparse", "status=none"])
        .arg(format!("skip={}", start >> 20))
        .arg(format!("count={}", size >> 20)))?;
    Ok(())
}

/// What an ext4 grow decides, as dumpe2fs shows it. Not the reserved block count: the
/// kernel's online grow rounds the reserved percentage down (5 % of a small filesystem
/// becomes 4 %), offline resize2fs keeps it; nor free counts, which depend on what ran since.
const EXT4_GEOMETRY: [&str; 9] = [
    "Block count",
    "Block size",
    "First block",
    "Blocks per group",
    "Inode count",
    "Inodes per group",
    "Inode blocks per group",
    "Reserved GDT blocks",
    "Flex block group size",
];

/// Checks that the ext4 on ROOT of `image` has the geometry resize2fs gives `start` (a copy
/// of that filesystem before it grew, grown here in place) on a device of ROOT's size.
/// resize2fs picks the new block count the same way whether it then grows offline or asks
/// the kernel to grow online, so its offline run, which needs no CAP_SYS_RESOURCE, is the
/// reference for an online grow.
pub fn check_ext4_grown_like_resize2fs(image: &Path, start: &Path) -> anyhow::Result<()> {
    std::fs::OpenOptions::new().write(true).open(start)?.set_len(root_extent(image)?.1)?;
    run(Command::new("resize2fs").arg(start))?;
    let geometry = |header: String| -> Vec<String> {
        let fields = header.lines().filter(|line| line.split_once(':').is_some_and(|(name, _)| EXT4_GEOMETRY.contains(&name)));
        fields.map(|line| line.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
    };
    let grown = geometry(on_root(image, "dumpe2fs", &["-h"])?);
    let reference = geometry(run(Command::new("dumpe2fs").arg("-h").arg(start))?);
    ensure!(grown.len() == EXT4_GEOMETRY.len() && grown == reference, "the grown ext4: {grown:?}\nresize2fs: {reference:?}");
    Ok(())
}

/// A stage's own duration, in ms, from keel-init's log line `keel: [uptime] <stage>: ... (N ms)`.
pub fn stage_millis(console: &Console, stage: &str) -> Option<f64> {
    console
        .text
        .lines()
        .filter(|line| line.starts_with("keel: ["))
        // A stage may log lines of its own before the one that ends it, with its duration.
        .filter_map(|line| line.split_once(&format!("] {stage}: ")).map(|(_, rest)| rest))
        .find_map(|rest| rest.trim_end().strip_suffix(" ms)").and_then(|head| head.rsplit_once('(')).and_then(|(_, ms)| ms.parse().ok()))
}

/// One partition of a disk image and what blkid finds in it, for comparing disks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionContent {
    pub number: u32,
    pub name: String,
    pub type_guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    /// blkid's TYPE, LABEL and UUID ("" when it finds none).
    pub filesystem: (String, String, String),
}

/// Every partition of the disk image `image` (its table read in either sector size) with
/// what blkid finds in it.
pub fn partition_contents(image: &Path) -> anyhow::Result<Vec<PartitionContent>> {
    let gpt = image_table(image)?;
    gpt.partitions
        .iter()
        .map(|p| {
            let offset = p.start_bytes(gpt.sector_size).to_string();
            let size = p.size_bytes(gpt.sector_size).to_string();
            // blkid exits 2 when it finds nothing: that is an answer here, not a failure.
            let output = Command::new("blkid").args(["-p", "-o", "export", "-O", &offset, "-S", &size]).arg(image).output()?;
            let export = String::from_utf8_lossy(&output.stdout);
            let tag = |name: &str| export.lines().find_map(|line| line.strip_prefix(&format!("{name}="))).unwrap_or_default().to_string();
            Ok(PartitionContent {
                number: p.number,
                name: p.name.clone(),
                type_guid: p.type_guid.to_string(),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                filesystem: (tag("TYPE"), tag("LABEL"), tag("UUID")),
            })
        })
        .collect()
}

/// Checks, read-only, every filesystem blkid finds in a partition of the disk image `image`
/// with its own checker (`e2fsck -fn`, `xfs_repair -n`, `fsck.vfat -n`, `btrfs check`): a
/// label and UUID in place say nothing of a filesystem a cut mkfs left half made.
pub fn check_partition_filesystems(image: &Path) -> anyhow::Result<()> {
    let gpt = image_table(image)?;
    for content in partition_contents(image)? {
        let checker: &[&str] = match content.filesystem.0.as_str() {
            "ext4" => &["e2fsck", "-fn"],
            "xfs" => &["xfs_repair", "-n"],
            "vfat" => &["fsck.vfat", "-n"],
            "btrfs" => &["btrfs", "check", "--readonly"],
            _ => continue,
        };
        let partition = gpt.partition(content.number).context("a partition vanished")?;
        let (offset, size) = (partition.start_bytes(gpt.sector_size).to_string(), partition.size_bytes(gpt.sector_size).to_string());
        let device = run(Command::new("losetup").args(["--find", "--show", "--read-only", "--offset", &offset, "--sizelimit", &size]).arg(image))?;
        let device = device.trim();
        let checked = run(Command::new(checker[0]).args(&checker[1..]).arg(device));
        run(Command::new("losetup").args(["--detach", device]))?;
        checked.with_context(|| format!("partition {} ({}) of {}", content.number, content.filesystem.0, image.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_at_gives_when_the_first_line_with_the_text_arrived() {
        let console = Console {
            text: "Booting\nREAL-INIT: started\nREAL-INIT: started again\n".into(),
            timed_out: false,
            cut: false,
            refused_by_firmware: false,
            elapsed: Duration::from_secs(3),
            arrivals: vec![Duration::from_millis(100), Duration::from_millis(2500), Duration::from_millis(2600)],
        };
        assert_eq!(console.seen_at("REAL-INIT: started"), Some(Duration::from_millis(2500)));
        assert_eq!(console.seen_at("never printed"), None);
    }
}
