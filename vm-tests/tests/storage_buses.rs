//! keel boots, and provisions on first boot, a disk on each bus real machines and clouds
//! present (NVMe, virtio-scsi, SATA behind AHCI), not only virtio-blk, and a machine
//! loads the drivers for the buses it has and no others.

use keel_vm_tests::{
    assert_reached_real_init, boot_machine, build_initrd, default_layout_fixture, disk_copy, generic_kernel, on_root, shared_fixture, Bus, Console,
    Disk, DriverChoice, FirstAndLaterBoot, Fixture, Machine,
};
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(180);
const GROWN_BY: u64 = 64 << 20;

/// The modules the real root saw loaded, from /proc/modules.
fn loaded_modules(console: &Console) -> Vec<&str> {
    let line =
        console.real_init().into_iter().find_map(|l| l.strip_prefix("modules ")).unwrap_or_else(|| panic!("no modules line:\n{}", console.text));
    line.split_whitespace().collect()
}

/// The small test image made 64 MiB bigger.
fn grown_shared_disk(fixture: &Fixture) -> u64 {
    std::fs::metadata(&fixture.image).unwrap().len() + GROWN_BY
}

#[test]
fn boots_the_default_layout_from_nvme_without_loading_virtio_or_scsi() {
    // NVMe is what most clouds boot from: the production layout, on a 4 GiB disk.
    let fixture = default_layout_fixture().unwrap();
    let kernel = &keel_vm_tests::artifacts().unwrap().kernel;
    // The later boot names both partitions by path, with NVMe's `p` before the number.
    let paths = |_: &Path| "mount.usr=/dev/nvme0n1p3 root=/dev/nvme0n1p9".to_string();
    let scenario = FirstAndLaterBoot {
        name: "bus-nvme",
        fixture,
        disk_bytes: 4 << 30,
        kernel,
        initrd: &fixture.initrd,
        bus: Bus::Nvme,
        partition_node: "/dev/nvme0n1p9",
        other_disks: vec![],
    };
    let (first, later) = scenario.run(paths);
    // Debian's cloud kernel builds NVMe in; the machine has no virtio or SCSI device.
    for console in [&first, &later] {
        let modules = loaded_modules(console);
        for unwanted in ["virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "scsi_mod"] {
            assert!(!modules.contains(&unwanted), "{unwanted} loaded on an NVMe-only machine: {modules:?}");
        }
    }
}

#[test]
fn boots_from_virtio_scsi_loading_only_its_drivers() {
    let fixture = shared_fixture().unwrap();
    let kernel = &keel_vm_tests::artifacts().unwrap().kernel;
    // The later boot names /usr by its partition's UUID and ROOT by its filesystem's.
    let uuids = |disk: &Path| {
        let uuid = on_root(disk, "blkid", &["-o", "value", "-s", "UUID"]).unwrap();
        format!("mount.usr=PARTUUID={} root=UUID={}", keel_disk::USR_A_GUID, uuid.trim())
    };
    let scenario = FirstAndLaterBoot {
        name: "bus-virtio-scsi",
        fixture,
        disk_bytes: grown_shared_disk(fixture),
        kernel,
        initrd: &fixture.initrd,
        bus: Bus::VirtioScsi,
        partition_node: "/dev/sda9",
        other_disks: vec![],
    };
    let (first, later) = scenario.run(uuids);
    for console in [&first, &later] {
        let modules = loaded_modules(console);
        for wanted in ["virtio_pci", "virtio_scsi", "sd_mod"] {
            assert!(modules.contains(&wanted), "{wanted} not loaded: {modules:?}");
        }
        assert!(!modules.contains(&"virtio_blk"), "virtio_blk loaded with no virtio-blk device: {modules:?}");
    }
}

#[test]
fn boots_from_sata_behind_ahci_with_an_nvme_disk_beside_it_on_debians_generic_kernel() {
    // The generic kernel has AHCI, and NVMe as a module: both controllers are there from
    // the start, so their drivers load in one batch, side by side, sharing dependencies.
    let fixture = shared_fixture().unwrap();
    let blank_nvme = fixture.dir.join("bus-ahci-blank-nvme.img");
    std::fs::File::create(&blank_nvme).unwrap().set_len(64 << 20).unwrap();
    let kernel = generic_kernel().unwrap();
    let initrd = fixture.dir.join("initrd-generic-kernel.img");
    build_initrd(&fixture.manifest, kernel, DriverChoice::Default, &["ext4"], &initrd).unwrap();
    let labels = |_: &Path| "mount.usr=PARTLABEL=USR-A root=LABEL=ROOT".to_string();
    let scenario = FirstAndLaterBoot {
        name: "bus-ahci",
        fixture,
        disk_bytes: grown_shared_disk(fixture),
        kernel,
        initrd: &initrd,
        bus: Bus::Ahci,
        partition_node: "/dev/sda9",
        other_disks: vec![Disk::on(Bus::Nvme, &blank_nvme)],
    };
    let (first, later) = scenario.run(labels);
    for console in [&first, &later] {
        let modules = loaded_modules(console);
        for wanted in ["ahci", "libahci", "libata", "sd_mod", "nvme", "nvme_core"] {
            assert!(modules.contains(&wanted), "{wanted} not loaded: {modules:?}");
        }
        assert!(!modules.contains(&"virtio_blk") && !modules.contains(&"virtio_scsi"), "{modules:?}");
    }
}

#[test]
fn a_disk_plugged_in_after_the_drivers_loaded_is_found_through_its_uevent() {
    let fixture = shared_fixture().unwrap();
    let disk = disk_copy(fixture, "bus-late-scsi-disk").unwrap();
    // The virtio-scsi controller is there from the start, its disk not: nothing asks for
    // sd_mod until the disk's uevent does, while keel waits for USR-A.
    let machine = Machine {
        kernel: &keel_vm_tests::artifacts().unwrap().kernel,
        disks: vec![],
        plugged_in_later: Some(("] modules: ", vec![Disk::on(Bus::VirtioScsi, &disk)])),
        firmware_config: None,
    };
    let console = boot_machine(&machine, &fixture.initrd, "", TIMEOUT, "unsafe", |_, _| false).unwrap();
    assert_reached_real_init(&console);
    let modules_stage = console.text.lines().find(|l| l.contains("] modules: ")).unwrap_or_default();
    assert!(modules_stage.contains("drivers for the devices present: virtio_pci virtio_scsi ("), "{}", console.text);
    assert!(console.has("usr: driver sd_mod loaded for scsi:t-0x00"), "{}", console.text);
}
