//! `cargo xtask setup|demo|test|vm-test|bench verity|look|boot|ignition|first-boot|fuzz`. Everything a fresh Debian
//! machine needs is installed from here, so the README's two commands are the whole set-up.

mod anchors;
mod bench;
mod bench_boot;
mod bench_first_boot;
mod bench_ignition;
mod bench_look;
mod fuzz;

use anyhow::{bail, ensure, Context};
use keel_vm_tests as vm;
use std::ffi::OsStr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Debian packages the builds and tests use, and why.
const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "boots the VM tests and the demo"),
    ("cryptsetup-bin", "veritysetup: the reference for keel's verity format"),
    ("gdisk", "sgdisk: the reference for keel's GPT"),
    ("e2fsprogs", "mkfs.ext4 and debugfs for /usr and ROOT, e2fsck in tests"),
    ("busybox-static", "the demo root's userland"),
    ("cpio", "GNU cpio: the reference reader of the initrd format"),
    ("xz-utils", "initrd compression"),
    ("zstd", "initrd compression"),
    ("lz4", "initrd compression: the kernel unpacks lz4 fastest"),
    ("kmod", "depmod for the kernel's modules.dep"),
    ("libdevmapper-dev", "dm-ioctl.h for the devicemapper crate's bindings"),
    ("clang", "bindgen finds its headers through clang"),
    ("libclang-dev", "bindgen"),
    ("pkg-config", "the devicemapper crate's build"),
    ("time", "GNU time: peak memory in cargo xtask bench"),
    ("cgpt", "the reference for keel's A/B gptprio attribute bits"),
    ("dosfstools", "mkfs.vfat for the image's ESP, which carries the first-boot flag, and mkfs.fat for the initrd (--mkfs vfat)"),
    ("mtools", "writes the first-boot flag into the ESP image without mounting it"),
    ("xfsprogs", "mkfs.xfs for keel.root.fs=xfs, and the reference for growing XFS"),
    ("btrfs-progs", "mkfs.btrfs for keel.root.fs=btrfs, and the reference for growing btrfs"),
    ("passwd", "useradd and friends: the reference for keel-ignition's users and groups"),
    ("base-passwd", "Debian's master passwd and group: the base root of the Ignition differential test"),
    ("ignition", "Ignition 2.14 (ignition-validate and the files stage): the reference for keel-ignition"),
    ("g++", "libFuzzer, which the fuzz targets link: libfuzzer-sys builds it from its C++ source"),
    ("ovmf", "UEFI firmware with Secure Boot (OVMF_CODE_4M.secboot.fd): the trust-chain VM tests boot signed UKIs through it"),
    ("systemd-boot-efi", "linuxx64.efi.stub, the EFI stub every keel UKI is built on"),
    ("sbsigntool", "sbsign signs UKIs for Secure Boot; sbverify checks them"),
    ("python3-venv", "the virtual environment the pinned PyPI tools (python-requirements.txt) are installed into"),
];
const MUSL: &str = "x86_64-unknown-linux-musl";

fn main() {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "setup" => setup(),
        "demo" => setup().and_then(|()| demo()),
        "test" => setup().and_then(|()| lint()).and_then(|()| cargo_test(&["--workspace"])).and_then(|()| fuzz::smoke(&vm::workspace())),
        "vm-test" => setup().and_then(|()| cargo_test(&["-p", "keel-vm-tests"])),
        "bench" => match std::env::args().nth(2).as_deref() {
            Some("verity") => setup().and_then(|()| bench::verity(&vm::workspace())),
            Some("look") => setup().and_then(|()| bench_look::look(&vm::workspace())),
            Some("boot") => setup().and_then(|()| bench_boot::boot(&std::env::args().skip(3).collect::<Vec<_>>())),
            Some("ignition") => setup().and_then(|()| bench_ignition::ignition(&vm::workspace())),
            Some("first-boot") => setup().and_then(|()| bench_first_boot::first_boot_cost(&std::env::args().skip(3).collect::<Vec<_>>())),
            _ => Err(anyhow::anyhow!("usage: cargo xtask bench verity|look|boot|ignition|first-boot")),
        },
        "fuzz" => setup().and_then(|()| fuzz::run(&vm::workspace(), &std::env::args().skip(2).collect::<Vec<_>>())),
        _ => Err(anyhow::anyhow!("usage: cargo xtask setup|demo|test|vm-test|bench verity|look|boot|ignition|first-boot|fuzz")),
    };
    if let Err(error) = result {
        eprintln!("xtask {task}: {error:#}");
        std::process::exit(1);
    }
}

fn status(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("cannot run {:?}", command.get_program()))?;
    ensure!(status.success(), "{command:?} failed ({status})");
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

/// Installs those of `packages` that are missing, from Debian.
fn install(packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().map(|(name, _)| *name).filter(|name| !installed(name)).collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing {}", missing.join(" "));
        status(Command::new("apt-get").args(["update", "-q"]))?;
        status(
            Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("installing Debian packages needs root")?;
    }
    Ok(())
}

fn setup() -> anyhow::Result<()> {
    install(PACKAGES)?;
    let targets = Command::new("rustup").args(["target", "list", "--installed"]).output().context("cannot run rustup")?;
    if !String::from_utf8_lossy(&targets.stdout).lines().any(|t| t == MUSL) {
        status(Command::new("rustup").args(["target", "add", MUSL]))?;
    }
    install_python_tools()?;
    install_cargo_auditable()?;
    // The kernel metadata apt-cache answers from is only there after an update.
    if Command::new("apt-cache").args(["show", "linux-image-cloud-amd64"]).output().map_or(true, |o| !o.status.success()) {
        status(Command::new("apt-get").args(["update", "-q"]))?;
    }
    Ok(())
}

/// cargo-auditable, pinned: the static builds of keel-init and keel embed their crates with
/// it (`.dep-v0`), which an initrd's SBOM reads from the binary it packs.
const CARGO_AUDITABLE: &str = "cargo-auditable@0.7.7";

fn install_cargo_auditable() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // `cargo auditable --version` prints cargo's version: the install list is what says.
    let wanted = format!("{}:", CARGO_AUDITABLE.replace('@', " v"));
    let installed = Command::new(&cargo)
        .args(["install", "--list"])
        .output()
        .is_ok_and(|output| output.status.success() && String::from_utf8_lossy(&output.stdout).lines().any(|line| line == wanted));
    if !installed {
        status(Command::new(&cargo).args(["install", "--locked", CARGO_AUDITABLE]))?;
    }
    Ok(())
}

/// Installs the PyPI tools of python-requirements.txt, at their pinned versions, into the
/// virtual environment `keel_test_support::python_tool` finds them in. Debian's Python
/// makes it, so the tools do not depend on whichever `python3` is first on PATH.
fn install_python_tools() -> anyhow::Result<()> {
    let requirements = vm::workspace().join("xtask/python-requirements.txt");
    let venv = keel_test_support::python_venv();
    let stamp = venv.join("requirements.txt");
    let wanted = std::fs::read(&requirements).with_context(|| format!("cannot read {}", requirements.display()))?;
    if std::fs::read(&stamp).is_ok_and(|installed| installed == wanted) {
        return Ok(());
    }
    eprintln!("xtask: installing the PyPI tools of {} into {}", requirements.display(), venv.display());
    status(Command::new("/usr/bin/python3").arg("-m").arg("venv").arg("--clear").arg(&venv))?;
    status(Command::new(venv.join("bin/pip")).args(["install", "-q", "--disable-pip-version-check", "-r"]).arg(&requirements))?;
    std::fs::write(&stamp, wanted).with_context(|| format!("cannot write {}", stamp.display()))
}

/// The code stays formatted by rustfmt.toml and clean under clippy: checked first, as
/// part of every test run, so neither can drift.
fn lint() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    status(Command::new(&cargo).current_dir(vm::workspace()).args(["fmt", "--all", "--check"])).context("run `cargo fmt`")?;
    status(Command::new(&cargo).current_dir(vm::workspace()).args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
        .context("fix what clippy says")
}

fn cargo_test(selection: &[&str]) -> anyhow::Result<()> {
    let started = Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let result = status(Command::new(cargo).current_dir(vm::workspace()).arg("test").args(selection));
    eprintln!("xtask: tests took {:.0} s", started.elapsed().as_secs_f64());
    result
}

fn demo() -> anyhow::Result<()> {
    eprintln!("xtask: building the Debian cloud kernel cache, static keel binaries, image and initrd ...");
    let fixture = vm::build_fixture("demo", Default::default(), |_| {})?;
    let artifacts = vm::artifacts()?;
    // As if written to a 2 GiB disk: first boot grows ROOT to fill it.
    vm::resize_disk(&fixture.image, 2 << 30)?;
    let console = vm::boot(&[&fixture.image], &fixture.initrd, "", Duration::from_secs(120))?;
    println!("---- the initrd (keel-init) ----");
    for line in console.text.lines().filter(|l| l.starts_with("keel:")) {
        println!("{line}");
    }
    println!("---- the real root reports ----");
    for line in console.real_init() {
        if !line.starts_with("timeline ") && !line.starts_with("analyze ") {
            println!("{line}");
        }
    }
    println!("---- keel boot analyze ----");
    let guest_blame: Vec<&str> = console.real_init().into_iter().filter_map(|line| line.strip_prefix("analyze ")).collect();
    let timeline = console.real_init().into_iter().find_map(|line| line.strip_prefix("timeline ")).context("the real root printed no timeline")?;
    // In target/keel-vm itself, not the fixture's per-process directory, which the next
    // test run deletes: the chart is for opening after the demo.
    let (timeline_path, chart_path) = (vm::work_dir().join("demo-timeline.json"), vm::work_dir().join("demo-boot.svg"));
    std::fs::write(&timeline_path, timeline).with_context(|| format!("cannot write {}", timeline_path.display()))?;
    let analyzed = Command::new(&artifacts.binaries.keel)
        .args(["boot", "analyze"])
        .arg(&timeline_path)
        .arg("--svg")
        .arg(&chart_path)
        .output()
        .context("cannot run keel boot analyze")?;
    let host_output = String::from_utf8_lossy(&analyzed.stdout);
    ensure!(analyzed.status.success(), "keel boot analyze failed: {}", String::from_utf8_lossy(&analyzed.stderr));
    // Its last line names the chart, to open in a browser.
    print!("{host_output}");
    // The real root ran the same command on the file keel-init left in /run.
    let host_blame: Vec<&str> = host_output.lines().filter(|line| !line.starts_with("chart: ")).collect();
    ensure!(guest_blame == host_blame, "keel boot analyze in the real root printed {guest_blame:#?}");
    let size = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!("---- figures ----");
    println!("{:<22}{} bytes", format!("initrd ({}):", keel_initrd::Compression::DEFAULT.name()), size(&fixture.initrd));
    println!("keel-init (static):   {} bytes", size(&artifacts.binaries.keel_init));
    match console.initrd_seconds() {
        Some(seconds) => println!("Run /init -> real init: {:.3} s (kernel timestamps)", seconds),
        None => println!("Run /init -> real init: not found in the console"),
    }
    println!("whole QEMU run:       {:.1} s", console.elapsed.as_secs_f64());

    let lines = console.real_init();
    let verified = lines.iter().any(|l| l.starts_with("mount /usr /dev/mapper/usr ext4 ro"))
        && lines.iter().any(|l| l.ends_with("dm-name usr"))
        && lines.iter().any(|l| l.starts_with("dm usr: verity "))
        && lines.iter().any(|l| l == &"dm usr: status Verified");
    if !verified {
        println!("---- full console ----\n{}", console.text);
        bail!("the real root did not confirm that /usr is the verified dm-verity device");
    }
    println!("demo: the real root runs on /usr from dm-verity device usr, status V");
    secure_boot_demo()
}

/// The same root booted the way a machine with Secure Boot does: `keel image build` puts a
/// signed UKI per /usr slot on the ESP of the default layout, and OVMF, with the demo's own
/// keys enrolled (made now, never kept in the repository), starts slot A's from the ESP.
fn secure_boot_demo() -> anyhow::Result<()> {
    println!("---- Secure Boot: keel image build with a signed UKI per slot, booted by OVMF from the ESP ----");
    let keys = vm::uefi::secure_boot_keys()?;
    // In target/keel-vm itself, to look at after the demo.
    let dir = vm::work_dir().join("demo-secure-boot");
    let signed = vm::uefi::build_signed_image(&dir, keys, vm::BASE_CMDLINE, 4 << 30)?;
    print!("{}", signed.report);
    print!("{}", vm::uefi::run_keel(&[OsStr::new("uki"), OsStr::new("inspect"), signed.usr_a_uki.as_os_str()])?);
    let machine = vm::uefi::UefiMachine { disks: vec![vm::Disk::on(vm::Bus::Virtio, &signed.image)], keys, boot_entry: None };
    let console = vm::uefi::boot_uefi(&machine, Duration::from_secs(180), |_, _| false)?;
    for line in
        console.real_init().iter().filter(|line| line.starts_with("dmesg") || line.starts_with("usr-slot") || line.starts_with("dm usr: status"))
    {
        println!("{line}");
    }
    let secure = console.real_init().iter().any(|line| line.ends_with("secureboot: Secure boot enabled"));
    if !secure || !console.real_init().contains(&"dm usr: status Verified") {
        println!("---- full console ----\n{}", console.text);
        bail!("the signed UKI did not reach the real root with Secure Boot on and /usr verified");
    }
    let seconds = |needle: &str| console.seen_at(needle).map_or("not seen".to_string(), |at| format!("{:.1} s", at.as_secs_f64()));
    println!("QEMU start -> firmware starts the UKI: {}", seconds("BdsDxe: starting"));
    println!("QEMU start -> real root:               {}", seconds("REAL-INIT: started"));
    println!("demo: Secure Boot on, the signed UKI booted, /usr verified against the root hash in its signed initrd");
    Ok(())
}
