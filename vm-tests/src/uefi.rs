//! Booting as a machine in the field does: UEFI firmware (OVMF) with Secure Boot enforcing
//! and the project's own test keys enrolled, starting what the disks' ESPs hold. Not
//! QEMU's -kernel: for a plain bzImage edk2 falls back to a loader that checks no signature,
//! so only a boot from the ESP shows what Secure Boot refuses.

use crate::{qemu_command, run, run_qemu, work_dir, Console, Disk, Watch};
use anyhow::{ensure, Context};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// OVMF built with Secure Boot and SMM (Debian's ovmf): the firmware every UEFI boot runs.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// OVMF's empty variable store of the same 4 MiB flash layout, which the keys are enrolled into.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Where firmware looks for a boot image on a disk it has no boot entry for: the removable
/// media path of x86-64.
pub const REMOVABLE_MEDIA_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// What edk2 prints when Secure Boot refuses an image (`BdsDxe: failed to load Boot0002
/// "UEFI Misc Device" from ...: Access Denied`), before it waits for a key for ever.
pub const FIRMWARE_REFUSAL: &str = "Access Denied";
/// The owner GUID the enrolled certificates carry: any fixed value names them as keel's.
const KEY_OWNER: &str = "6b65656c-7465-4000-8000-737465737400";

/// A private key and its self-signed X.509 certificate, both PEM, as sbsign and
/// virt-fw-vars take them.
#[derive(Clone, Debug)]
pub struct KeyPair {
    pub key: PathBuf,
    pub certificate: PathBuf,
}

impl KeyPair {
    /// A new RSA 2048 key with a certificate for `common_name`, in `dir` as `<name>.key`
    /// and `<name>.crt`.
    fn generate(dir: &Path, name: &str, common_name: &str) -> anyhow::Result<KeyPair> {
        let pair = KeyPair { key: dir.join(format!("{name}.key")), certificate: dir.join(format!("{name}.crt")) };
        let mut openssl = Command::new("openssl");
        openssl.args(["req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650", "-subj"]);
        openssl.arg(format!("/CN={common_name}/")).arg("-keyout").arg(&pair.key).arg("-out").arg(&pair.certificate);
        run(&mut openssl).context("cannot make a test key (openssl: Debian package openssl)")?;
        Ok(pair)
    }
}

/// The Secure Boot keys of the tests, made at test time and never committed: the
/// platform key (PK), the key exchange key (KEK) and the db key that signs boot images, all
/// enrolled, and another key of the db's kind that is not.
#[derive(Debug)]
pub struct SecureBootKeys {
    pub platform: KeyPair,
    pub key_exchange: KeyPair,
    pub db: KeyPair,
    /// Signs an image the firmware must refuse: nothing enrolled vouches for it.
    pub other: KeyPair,
    /// OVMF's variable store with PK, KEK and db enrolled (no Microsoft keys) and Secure
    /// Boot on; a boot runs on a copy, as the firmware writes to it.
    variables: PathBuf,
}

/// The keys, made once per test process under its own directory.
pub fn secure_boot_keys() -> anyhow::Result<&'static SecureBootKeys> {
    static KEYS: OnceLock<Result<SecureBootKeys, String>> = OnceLock::new();
    KEYS.get_or_init(|| make_keys(&keel_test_support::process_dir(work_dir()).join("secure-boot")).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn make_keys(dir: &Path) -> anyhow::Result<SecureBootKeys> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let platform = KeyPair::generate(dir, "PK", "keel test platform key")?;
    let key_exchange = KeyPair::generate(dir, "KEK", "keel test key exchange key")?;
    let db = KeyPair::generate(dir, "db", "keel test db")?;
    let other = KeyPair::generate(dir, "other", "keel test key nobody enrolled")?;
    let variables = dir.join("OVMF_VARS_4M.enrolled.fd");
    let mut enroll = Command::new(keel_test_support::python_tool("virt-fw-vars"));
    enroll.arg("--input").arg(OVMF_VARS).arg("--output").arg(&variables);
    enroll.arg("--set-pk").arg(KEY_OWNER).arg(&platform.certificate);
    enroll.arg("--add-kek").arg(KEY_OWNER).arg(&key_exchange.certificate);
    enroll.arg("--add-db").arg(KEY_OWNER).arg(&db.certificate);
    enroll.args(["--no-microsoft", "--secure-boot"]);
    run(&mut enroll).context("cannot enrol the test keys into OVMF's variables (`cargo xtask setup` installs ovmf and virt-fw-vars)")?;
    Ok(SecureBootKeys { platform, key_exchange, db, other, variables })
}

/// A machine that starts through OVMF with `keys` enrolled and Secure Boot enforcing, from
/// the ESP of its disks (the firmware tries each in turn).
pub struct UefiMachine<'a> {
    pub disks: Vec<Disk>,
    pub keys: &'a SecureBootKeys,
    /// An ESP path (`\EFI\keel\usr-b.efi`) the firmware boots first through a boot entry,
    /// as an update's `efibootmgr --create` makes one; None: the firmware's own choice (the
    /// removable media path).
    pub boot_entry: Option<&'a str>,
}

/// Boots `machine` until the guest powers off or reboots, the firmware refuses the boot
/// image (`Console::refused_by_firmware`), `cut(console so far, time since start)` says
/// so, or `timeout` passes. The command line is what the boot image carries: under Secure
/// Boot nothing else may give one.
pub fn boot_uefi(machine: &UefiMachine, timeout: Duration, cut: impl FnMut(&str, Duration) -> bool) -> anyhow::Result<Console> {
    static BOOTS: AtomicUsize = AtomicUsize::new(0);
    let variables = machine.keys.variables.with_file_name(format!("vars-{}.fd", BOOTS.fetch_add(1, Ordering::Relaxed)));
    match machine.boot_entry {
        None => drop(
            std::fs::copy(&machine.keys.variables, &variables)
                .with_context(|| format!("cannot copy the enrolled variables to {}", variables.display()))?,
        ),
        Some(path) => {
            let mut add_entry = Command::new(keel_test_support::python_tool("virt-fw-vars"));
            add_entry.arg("--input").arg(&machine.keys.variables).arg("--output").arg(&variables).arg("--append-boot-filepath").arg(path);
            run(&mut add_entry).context("cannot add the boot entry (`cargo xtask setup` installs virt-fw-vars)")?;
        }
    }
    ensure!(Path::new(OVMF_CODE).is_file(), "{OVMF_CODE} is missing: install ovmf (`cargo xtask setup`)");
    // Disk writes are only kept for the test to read after the run.
    let mut command = qemu_command(&machine.disks, &[], "unsafe");
    // SMM and a secure flash keep the variable store writable by the firmware alone, so
    // the OS cannot enrol a key of its own: the setup of a real Secure Boot machine (the
    // secboot build starts without them too, but then its keys are not protected).
    command.args(["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]);
    command.arg("-drive").arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"));
    command.arg("-drive").arg(format!("if=pflash,format=raw,unit=1,file={}", variables.display()));
    // Without a network card the firmware tries no network boot after the disks (iPXE
    // takes seconds to give up).
    command.args(["-nic", "none"]);
    let console = run_qemu(command, None, Watch { timeout, firmware_refusal: Some(FIRMWARE_REFUSAL) }, cut);
    let _ = std::fs::remove_file(&variables);
    console
}

/// Secure Boot stopped the boot: the firmware refused the boot image, and neither a
/// kernel nor keel-init ran.
pub fn assert_refused_by_firmware(console: &Console) {
    assert!(console.refused_by_firmware, "the firmware did not refuse the boot image (timed out: {}):\n{}", console.timed_out, console.text);
    for started in ["EFI stub:", "Linux version", "Run /init", "keel:"] {
        assert!(!console.has(started), "{started:?} after the firmware refused:\n{}", console.text);
    }
}

/// A file only USR-B's tree of `build_signed_image` has: the two slots' /usr differ, and so
/// do their root hashes.
pub const SLOT_B_MARKER: &str = "share/keel-test/slot-b";

/// An image with a signed UKI per /usr slot on its ESP, and what went into them, beside it.
pub struct SignedImage {
    pub image: PathBuf,
    pub usr_a_uki: PathBuf,
    pub usr_a_initrd: PathBuf,
    pub usr_b_initrd: PathBuf,
    /// What `keel image build` printed.
    pub report: String,
}

/// Runs the static `keel` with `args`; its stdout, or an error with what it said.
pub fn run_keel(args: &[&OsStr]) -> anyhow::Result<String> {
    let keel = &crate::artifacts()?.binaries.keel;
    let output = Command::new(keel).args(args).output().with_context(|| format!("cannot run {}", keel.display()))?;
    let said = || format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    ensure!(output.status.success(), "keel {args:?} failed: {}", said());
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The default layout (1 GiB USR-A and USR-B: the demo root, USR-B's with SLOT_B_MARKER)
/// on a disk of `disk_bytes`, with a UKI per slot signed by the db key, built in `dir` by
/// the static `keel image build` as an image builder runs it. The UKIs' command line is
/// `cmdline` (keel adds each slot's mount.usr=).
pub fn build_signed_image(dir: &Path, keys: &SecureBootKeys, cmdline: &str, disk_bytes: u64) -> anyhow::Result<SignedImage> {
    let artifacts = crate::artifacts()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let usr_a = crate::demo_usr_tree(&dir.join("a"), &artifacts.binaries.keel)?;
    let usr_b = crate::demo_usr_tree(&dir.join("b"), &artifacts.binaries.keel)?;
    std::fs::write(usr_b.join(SLOT_B_MARKER), "B\n")?;
    let image = dir.join("disk.img");
    let mut args: Vec<&OsStr> = ["image", "build", "--usr"].map(OsStr::new).to_vec();
    args.extend([usr_a.as_os_str(), OsStr::new("--usr-b"), usr_b.as_os_str(), OsStr::new("--output"), image.as_os_str()]);
    args.extend([
        OsStr::new("--uki-kernel"),
        artifacts.kernel.vmlinuz.as_os_str(),
        OsStr::new("--uki-init"),
        artifacts.binaries.keel_init.as_os_str(),
    ]);
    args.extend([OsStr::new("--uki-kernel-modules"), artifacts.kernel.modules_dir.as_os_str(), OsStr::new("--uki-cmdline"), OsStr::new(cmdline)]);
    args.extend([OsStr::new("--sign-key"), keys.db.key.as_os_str(), OsStr::new("--sign-cert"), keys.db.certificate.as_os_str()]);
    let report = run_keel(&args)?;
    crate::resize_disk(&image, disk_bytes)?;
    Ok(SignedImage {
        usr_a_uki: image.with_extension("usr-a.efi"),
        usr_a_initrd: image.with_extension("usr-a.initrd"),
        usr_b_initrd: image.with_extension("usr-b.initrd"),
        image,
        report,
    })
}
