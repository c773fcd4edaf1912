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
    /// A boot entry the firmware boots first, as an update's `efibootmgr --create` makes
    /// one; None: the firmware's own choice (the removable media path).
    pub boot_entry: Option<BootEntry<'a>>,
}

/// A UEFI boot entry (`Boot0000`, alone in BootOrder) for a file on an ESP.
#[derive(Clone, Copy, Debug)]
pub struct BootEntry<'a> {
    /// The file's path on the ESP (`EFI/keel/usr-b.efi`), which edk2 looks for on every
    /// ESP it finds.
    pub path: &'a str,
    /// What the entry passes the image (its load options): for a kernel, the command line
    /// a boot loader or whoever writes the boot variables would give it.
    pub options: Option<&'a str>,
}

/// The GUID of the UEFI global variables (`Boot####`, `BootOrder`).
const EFI_GLOBAL_VARIABLE: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// Non-volatile, boot-service and runtime access, as efibootmgr writes boot entries.
const BOOT_VARIABLE_ATTRIBUTES: u32 = 7;

impl BootEntry<'_> {
    /// The entry as an EFI_LOAD_OPTION (UEFI 2.10, 3.1.3): active, described, a device
    /// path of one file-path node, and the options as UCS-2 with its terminator, which is
    /// how the kernel's and systemd's stubs read a command line from them.
    fn load_option(&self) -> anyhow::Result<Vec<u8>> {
        let ucs2 = |text: &str| -> Vec<u8> { text.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect() };
        let file = ucs2(&format!("\\{}", self.path.replace('/', "\\")));
        let too_long = || format!("the boot entry's path {} is too long for a device path", self.path);
        // Media device path (4), file path (4), the node's length with its 4-byte header;
        // then the end of the device path.
        let mut device_path = [4u8, 4].to_vec();
        device_path.extend(u16::try_from(file.len() + 4).with_context(too_long)?.to_le_bytes());
        device_path.extend(file);
        device_path.extend([0x7f, 0xff, 4, 0]);
        let mut option = 1u32.to_le_bytes().to_vec();
        option.extend(u16::try_from(device_path.len()).with_context(too_long)?.to_le_bytes());
        option.extend(ucs2(&format!("keel {}", self.path)));
        option.extend(device_path);
        option.extend(self.options.map(ucs2).unwrap_or_default());
        Ok(option)
    }

    /// The entry as virt-fw-vars' --set-json takes it: Boot0000 and a BootOrder of it alone.
    fn variables_json(&self) -> anyhow::Result<serde_json::Value> {
        let hex = |bytes: &[u8]| bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>();
        let variable = |name: &str, data: &[u8]| serde_json::json!({ "name": name, "guid": EFI_GLOBAL_VARIABLE, "attr": BOOT_VARIABLE_ATTRIBUTES, "data": hex(data) });
        Ok(serde_json::json!({ "version": 2, "variables": [variable("Boot0000", &self.load_option()?), variable("BootOrder", &[0, 0])] }))
    }
}

/// A copy of `enrolled` at `variables`, with `entry` added if there is one.
fn variables_with_entry(enrolled: &Path, variables: &Path, entry: Option<&BootEntry>) -> anyhow::Result<()> {
    let Some(entry) = entry else {
        std::fs::copy(enrolled, variables).with_context(|| format!("cannot copy the enrolled variables to {}", variables.display()))?;
        return Ok(());
    };
    // virt-fw-vars' --append-boot-filepath makes entries without options; --set-json
    // takes any variable.
    let json = variables.with_extension("json");
    std::fs::write(&json, entry.variables_json()?.to_string()).with_context(|| format!("cannot write {}", json.display()))?;
    let mut add = Command::new(keel_test_support::python_tool("virt-fw-vars"));
    add.arg("--input").arg(enrolled).arg("--output").arg(variables).arg("--set-json").arg(&json);
    run(&mut add).context("cannot add the boot entry (`cargo xtask setup` installs virt-fw-vars)")?;
    std::fs::remove_file(&json).with_context(|| format!("cannot remove {}", json.display()))
}

/// Boots `machine` until the guest powers off or reboots, the firmware refuses the boot
/// image (`Console::refused_by_firmware`), `cut(console so far, time since start)` says
/// so, or `timeout` passes. No command line is given but a boot entry's options: under
/// Secure Boot the one a UKI carries is what counts.
pub fn boot_uefi(machine: &UefiMachine, timeout: Duration, cut: impl FnMut(&str, Duration) -> bool) -> anyhow::Result<Console> {
    static BOOTS: AtomicUsize = AtomicUsize::new(0);
    let enrolled = &machine.keys.variables;
    let variables = enrolled.with_file_name(format!("vars-{}.fd", BOOTS.fetch_add(1, Ordering::Relaxed)));
    variables_with_entry(enrolled, &variables, machine.boot_entry.as_ref())?;
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
    crate::run(Command::new(&crate::artifacts()?.binaries.keel).args(args))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enrolled_store_holds_the_test_keys_with_secure_boot_on_and_no_other_key() {
        let keys = secure_boot_keys().unwrap();
        let mut print = Command::new(keel_test_support::python_tool("virt-fw-vars"));
        let listing = run(print.arg("--input").arg(&keys.variables).args(["--print", "--verbose"])).unwrap();
        // Each variable's name line, then its certificates' subjects.
        let subjects_of = |variable: &str| -> Vec<&str> {
            let lines = listing.lines().skip_while(|line| !line.starts_with(&format!("name={variable} "))).skip(1);
            lines.take_while(|line| !line.starts_with("name=")).filter_map(|line| line.trim().strip_prefix("subject CN=")).collect()
        };
        assert_eq!(subjects_of("PK"), ["keel test platform key"], "{listing}");
        assert_eq!(subjects_of("KEK"), ["keel test key exchange key"], "{listing}");
        assert_eq!(subjects_of("db"), ["keel test db"], "{listing}");
        let secure_boot = listing.lines().skip_while(|line| !line.starts_with("name=SecureBootEnable ")).nth(1);
        assert_eq!(secure_boot.map(str::trim), Some("bool: ON"), "{listing}");
        assert!(!listing.contains("Microsoft") && !listing.contains("nobody enrolled"), "{listing}");
    }

    #[test]
    fn a_boot_entry_reads_back_as_the_file_and_options_it_was_made_for() {
        let keys = secure_boot_keys().unwrap();
        let dir = keel_test_support::scratch_dir(work_dir(), "boot-entry");
        // virt-fw-vars' own decoder reads the entry back.
        let listing_of = |entry: BootEntry| {
            let variables = dir.join("vars.fd");
            variables_with_entry(&keys.variables, &variables, Some(&entry)).unwrap();
            run(Command::new(keel_test_support::python_tool("virt-fw-vars")).arg("--input").arg(&variables).arg("--print")).unwrap()
        };
        let variable = |listing: &str, name: &str| -> String {
            let line = listing.lines().find(|line| line.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}:\n{listing}"));
            line.split_once(": ").map(|(_, value)| value.trim().to_string()).unwrap_or_default()
        };

        let plain = listing_of(BootEntry { path: "EFI/keel/usr-b.efi", options: None });
        assert_eq!(variable(&plain, "Boot0000"), r#"boot entry: title="keel EFI/keel/usr-b.efi" devpath=FilePath(\EFI\keel\usr-b.efi)"#);
        assert_eq!(variable(&plain, "BootOrder"), "boot order: 0000");

        let command_line = "console=ttyS0 init=/bin/sh";
        let with_options = listing_of(BootEntry { path: REMOVABLE_MEDIA_PATH, options: Some(command_line) });
        let ucs2: String = command_line.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).map(|byte| format!("{byte:02x}")).collect();
        let expected = format!(r#"boot entry: title="keel {REMOVABLE_MEDIA_PATH}" devpath=FilePath(\EFI\BOOT\BOOTX64.EFI) optdata={ucs2}"#);
        assert_eq!(variable(&with_options, "Boot0000"), expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
