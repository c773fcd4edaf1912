//! Secure Boot under OVMF with the tests' own keys enrolled: the firmware starts a boot
//! image signed with the enrolled db key and refuses one that is unsigned or signed by a
//! key nobody enrolled. Firmware under TCG takes seconds before it starts anything, so
//! these scenarios are few.

use keel_test_support::scratch_dir;
use keel_vm_tests::uefi::{assert_refused_by_firmware, boot_uefi, esp_disk, secure_boot_keys, sign, KeyPair, UefiMachine, REMOVABLE_MEDIA_PATH};
use keel_vm_tests::{work_dir, Bus, Console, Disk};
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);
/// systemd-boot, a small EFI program that shows on the serial console once it runs.
const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// What systemd-boot draws with no boot entries: its one menu entry. It draws the menu
/// without ending the line and counts down to a firmware reboot, so the run is cut here.
const SYSTEMD_BOOT_MENU: &str = "Reboot Into Firmware Interface";

/// Boots a disk whose ESP holds `boot_image` at the removable media path, signed by
/// `signer` (None: as it is), until systemd-boot's menu shows.
fn boot_systemd_boot(name: &str, signer: Option<&KeyPair>) -> Console {
    let keys = secure_boot_keys().unwrap();
    let dir = scratch_dir(work_dir(), name);
    let image = dir.join("BOOTX64.EFI");
    match signer {
        Some(pair) => sign(pair, Path::new(SYSTEMD_BOOT), &image).unwrap(),
        None => drop(std::fs::copy(SYSTEMD_BOOT, &image).unwrap()),
    }
    let disk = dir.join("esp.img");
    esp_disk(&disk, &[(REMOVABLE_MEDIA_PATH, &image)], 0).unwrap();
    let machine = UefiMachine { disks: vec![Disk::on(Bus::Virtio, &disk)], keys };
    let console = boot_uefi(&machine, TIMEOUT, |text, _| text.contains(SYSTEMD_BOOT_MENU)).unwrap();
    eprintln!(
        "{name}: firmware's first line at {:?}, program started at {:?}, refusal at {:?}, run {:?}",
        console.arrivals.first(),
        console.seen_at(SYSTEMD_BOOT_MENU),
        console.seen_at(keel_vm_tests::uefi::FIRMWARE_REFUSAL),
        console.elapsed
    );
    std::fs::remove_dir_all(&dir).unwrap();
    console
}

#[test]
fn the_firmware_starts_a_boot_image_signed_with_the_enrolled_db_key() {
    let keys = secure_boot_keys().unwrap();
    let console = boot_systemd_boot("secure-boot-signed", Some(&keys.db));
    assert!(console.cut && console.has(SYSTEMD_BOOT_MENU), "systemd-boot did not run:\n{}", console.text);
    assert!(!console.refused_by_firmware && !console.has("Access Denied"), "{}", console.text);
}

#[test]
fn the_firmware_refuses_an_unsigned_boot_image() {
    let console = boot_systemd_boot("secure-boot-unsigned", None);
    assert_refused_by_firmware(&console);
    assert!(!console.has(SYSTEMD_BOOT_MENU), "systemd-boot ran:\n{}", console.text);
}

#[test]
fn the_firmware_refuses_a_boot_image_signed_by_a_key_nobody_enrolled() {
    let keys = secure_boot_keys().unwrap();
    let console = boot_systemd_boot("secure-boot-other-key", Some(&keys.other));
    assert_refused_by_firmware(&console);
    assert!(!console.has(SYSTEMD_BOOT_MENU), "systemd-boot ran:\n{}", console.text);
}
