//! The trust chain under Secure Boot: OVMF enforcing, with the tests' own PK, KEK and db
//! enrolled, starts keel's signed UKIs from the ESP of a default-layout image (1 GiB USR-A
//! and USR-B, 4 GiB disk) that `keel image build` made as an image builder runs it, and
//! refuses a UKI whose initrd changed or whose signature is another key's. Firmware under
//! TCG takes seconds before the kernel, so these scenarios are few, and share one image.

use keel_test_support::{overwrite, process_dir};
use keel_vm_tests::uefi::{
    assert_refused_by_firmware, boot_uefi, build_signed_image, run_keel, secure_boot_keys, BootEntry, KeyPair, SignedImage, UefiMachine,
    REMOVABLE_MEDIA_PATH,
};
use keel_vm_tests::{artifacts, assert_reached_real_init, assert_refused, image_table, work_dir, Bus, Console, Disk, BASE_CMDLINE};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(180);
const DISK_BYTES: u64 = 4 << 30;
/// The image every scenario boots a copy of, and its directory.
fn signed_image() -> &'static (PathBuf, SignedImage) {
    static IMAGE: OnceLock<(PathBuf, SignedImage)> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = process_dir(work_dir()).join("secure-boot-image");
        let built = build_signed_image(&dir, secure_boot_keys().unwrap(), BASE_CMDLINE, DISK_BYTES).unwrap();
        eprintln!("{}secure-boot: slot A's signed UKI is {} bytes", built.report, std::fs::metadata(&built.usr_a_uki).unwrap().len());
        (dir, built)
    })
}

/// The root hash `keel image build` reported for `slot` ("USR-A", "USR-B").
fn root_hash(slot: &str) -> String {
    let report = &signed_image().1.report;
    report.lines().find_map(|line| line.strip_prefix(&format!("{slot} root hash: "))).unwrap().trim().to_string()
}

/// The real root's /usr is the verity device of `slot`'s root hash, and verified.
fn assert_usr_is(console: &Console, slot: &str) {
    let reports = console.real_init();
    assert!(reports.contains(&format!("usr-slot {slot}").as_str()) && reports.contains(&"dm usr: status Verified"), "{}", console.text);
    let table = reports.iter().find(|line| line.starts_with("dm usr: verity ")).unwrap();
    assert!(table.contains(&root_hash(slot)), "/usr is not {slot}'s: {table}");
}

fn keel(args: &[&str]) -> String {
    run_keel(&args.iter().map(OsStr::new).collect::<Vec<_>>()).unwrap()
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A copy of the signed image for one scenario (sparse, so cheap at 4 GiB).
fn disk_for(scenario: &str) -> PathBuf {
    let (dir, built) = signed_image();
    let copy = dir.join(format!("{scenario}.img"));
    let status = Command::new("cp").arg("--sparse=always").arg(&built.image).arg(&copy).status().unwrap();
    assert!(status.success());
    copy
}

fn boot(disk: &Path, boot_entry: Option<BootEntry>) -> Console {
    let machine = UefiMachine { disks: vec![Disk::on(Bus::Virtio, disk)], keys: secure_boot_keys().unwrap(), boot_entry };
    boot_uefi(&machine, TIMEOUT, |_, _| false).unwrap()
}

/// Puts `uki` on the ESP of `disk` at the removable media path, over slot A's.
fn replace_boot_image(disk: &Path, uki: &Path) {
    let esp = image_table(disk).unwrap().by_name("EFI-SYSTEM").unwrap().unwrap().start_bytes(keel_disk::SectorSize::Bytes512);
    let drive = format!("{}@@{esp}", disk.display());
    let status = Command::new("mcopy").args(["-o", "-i", &drive]).arg(uki).arg(format!("::{REMOVABLE_MEDIA_PATH}")).status().unwrap();
    assert!(status.success());
}

/// slot A's UKI rebuilt by `keel uki build` with `initrd`, signed by `signer` or not.
fn reassembled_uki(name: &str, initrd: &Path, signer: Option<&KeyPair>) -> PathBuf {
    let artifacts = artifacts().unwrap();
    let dir = signed_image().0.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let (os_release, uki) = (dir.join("os-release"), dir.join("uki.efi"));
    std::fs::write(&os_release, "ID=keel\n").unwrap();
    let cmdline = format!("{BASE_CMDLINE} mount.usr=PARTLABEL=USR-A");
    let mut args = vec!["uki", "build", "--kernel", path(&artifacts.kernel.vmlinuz), "--initrd", path(initrd), "--cmdline", &cmdline];
    args.extend(["--os-release", path(&os_release), "--output", path(&uki)]);
    if let Some(signer) = signer {
        args.extend(["--sign-key", path(&signer.key), "--sign-cert", path(&signer.certificate)]);
    }
    keel(&args);
    uki
}

#[test]
fn the_signed_uki_boots_to_the_real_root_with_verified_usr_and_secure_boot_on() {
    let console = boot(&disk_for("signed"), None);
    assert_reached_real_init(&console);
    let reports = console.real_init();
    assert_usr_is(&console, "USR-A");
    assert!(reports.iter().any(|line| line.starts_with("usr-device ") && line.ends_with(" dm-name usr")), "{}", console.text);
    // The kernel's own word: Secure Boot on, and the lockdown it brings.
    for kernel_says in ["secureboot: Secure boot enabled", "Kernel is locked down from EFI Secure Boot"] {
        assert!(reports.iter().any(|line| line.starts_with("dmesg") && line.contains(kernel_says)), "no {kernel_says:?}:\n{}", console.text);
    }
    // The command line is the UKI's, as signed, with its slot.
    let cmdline = reports.iter().find_map(|line| line.strip_prefix("cmdline ")).unwrap();
    assert_eq!(cmdline, format!("{BASE_CMDLINE} mount.usr=PARTLABEL=USR-A"));
    let inspected = keel(&["uki", "inspect", path(&signed_image().1.usr_a_uki)]);
    assert!(inspected.contains(&format!(".cmdline: {cmdline}\n")), "{inspected}");
    eprintln!(
        "secure-boot: firmware starts the UKI at {:?}, keel-init at {:?}, real root at {:?} after QEMU started",
        console.seen_at("BdsDxe: starting"),
        console.seen_at("keel-init starting"),
        console.seen_at("REAL-INIT: started")
    );
}

/// Whoever writes the boot variables (or a boot loader) can hand the UKI a command line;
/// under Secure Boot the stub ignores it and the kernel gets the signed one, so neither
/// `init=` nor an unverified /usr gets in that way.
#[test]
fn a_command_line_from_the_boot_entry_is_ignored_under_secure_boot() {
    let injected = format!("{BASE_CMDLINE} init=/bin/false mount.usr=PARTLABEL=USR-B verity.usrhash=00 keel.injected");
    let entry = BootEntry { path: REMOVABLE_MEDIA_PATH, options: Some(&injected) };
    let console = boot(&disk_for("injected-cmdline"), Some(entry));
    assert!(console.has("starting Boot0000 "), "the boot entry was not used:\n{}", console.text);
    assert_reached_real_init(&console);
    let reports = console.real_init();
    let cmdline = reports.iter().find_map(|line| line.strip_prefix("cmdline ")).unwrap();
    assert_eq!(cmdline, format!("{BASE_CMDLINE} mount.usr=PARTLABEL=USR-A"));
    assert!(reports.contains(&"usr-slot USR-A") && reports.contains(&"dm usr: status Verified"), "{}", console.text);
}

/// Slot B's initrd (USR-B's root hash) put into slot A's UKI: re-assembled unsigned, or
/// changed in place under slot A's signature, the firmware starts neither.
#[test]
fn a_uki_whose_initrd_changed_is_refused_by_the_firmware() {
    let (dir, built) = signed_image();
    let unsigned = reassembled_uki("reassembled", &built.usr_b_initrd, None);
    let disk = disk_for("reassembled");
    replace_boot_image(&disk, &unsigned);
    assert_refused_by_firmware(&boot(&disk, None));

    let mut signed = std::fs::read(&built.usr_a_uki).unwrap();
    let inspection = keel_uki::inspect(&signed).unwrap();
    let initrd = inspection.sections.iter().find(|section| section.name == ".initrd").unwrap();
    signed[initrd.content.start + initrd.content.len() / 2] ^= 0x20;
    let changed = dir.join("changed-in-place.efi");
    std::fs::write(&changed, &signed).unwrap();
    let disk = disk_for("changed-in-place");
    replace_boot_image(&disk, &changed);
    assert_refused_by_firmware(&boot(&disk, None));
}

#[test]
fn a_uki_signed_by_another_key_is_refused_by_the_firmware() {
    let keys = secure_boot_keys().unwrap();
    let other = reassembled_uki("other-key", &signed_image().1.usr_a_initrd, Some(&keys.other));
    let disk = disk_for("other-key");
    replace_boot_image(&disk, &other);
    assert_refused_by_firmware(&boot(&disk, None));
}

/// The boot entry an update adds for slot B boots USR-B; with USR-A's data written over
/// USR-B, slot B's UKI refuses it.
#[test]
fn slot_bs_uki_boots_usr_b_and_refuses_usr_as_data() {
    let slot_b = Some(BootEntry { path: "EFI/keel/usr-b.efi", options: None });
    let console = boot(&disk_for("slot-b"), slot_b);
    assert_reached_real_init(&console);
    assert_usr_is(&console, "USR-B");
    assert_ne!(root_hash("USR-A"), root_hash("USR-B"));
    let reports = console.real_init();
    let cmdline = reports.iter().find_map(|line| line.strip_prefix("cmdline ")).unwrap();
    assert!(cmdline.ends_with("mount.usr=PARTLABEL=USR-B"), "{cmdline}");

    let disk = disk_for("slot-b-with-a-data");
    let table = image_table(&disk).unwrap();
    let (usr_a, usr_b) = (table.by_name("USR-A").unwrap().unwrap(), table.by_name("USR-B").unwrap().unwrap());
    let sector = keel_disk::SectorSize::Bytes512;
    let mut a_data = vec![0; usr_a.size_bytes(sector) as usize];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&disk).unwrap(), &mut a_data, usr_a.start_bytes(sector)).unwrap();
    overwrite(&disk, usr_b.start_bytes(sector), &a_data);
    let console = boot(&disk, slot_b);
    assert_refused(&console, "usr", "does not match the image manifest in the initrd");
}
