//! Disks with 4096-byte logical sectors (4Kn): an image built for them boots and first
//! boots from one, a torn primary table is repaired in their sector size, and an image
//! built for one sector size on a disk of the other is refused with a message that says
//! so, the disk left exactly as it was.

use keel_disk::{LayoutSizes, SectorSize};
use keel_test_support::damage_primary_gpt;
use keel_vm_tests::{
    artifacts, assert_reached_real_init, assert_refused, assert_root_fills, boot_machine, build_fixture_sized, disk_copy, file_digest, fixture_4kn,
    resize_disk, shared_fixture, Bus, Disk, FirstAndLaterBoot, Fixture, Machine, VerityLayout,
};
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(180);
const GROWN_BY: u64 = 64 << 20;

fn image_bytes(fixture: &Fixture) -> u64 {
    std::fs::metadata(&fixture.image).unwrap().len()
}

fn boot_4kn(fixture: &Fixture, disk: &Path, cmdline: &str) -> keel_vm_tests::Console {
    let machine = Machine {
        kernel: &artifacts().unwrap().kernel,
        disks: vec![Disk::of_fixture(Bus::Virtio, disk, fixture)],
        plugged_in_later: None,
        firmware_config: None,
    };
    boot_machine(&machine, &fixture.initrd, cmdline, TIMEOUT, "unsafe", |_, _| false).unwrap()
}

#[test]
fn the_default_layout_built_for_4kn_boots_and_first_boots_from_a_4_gib_4kn_disk() {
    // At real size: Flatcar's 1 GiB USR-A, verified in 4096-byte sectors.
    let fixture = build_fixture_sized("default-layout-4kn", LayoutSizes::default(), SectorSize::Bytes4096, VerityLayout::default(), |_| {}).unwrap();
    assert_eq!(fixture.manifest.sector_size, SectorSize::Bytes4096);
    let scenario = FirstAndLaterBoot {
        name: "4kn-first-boot",
        fixture: &fixture,
        disk_bytes: 4 << 30,
        kernel: &artifacts().unwrap().kernel,
        initrd: &fixture.initrd,
        bus: Bus::Virtio,
        partition_node: "/dev/vda9",
        other_disks: vec![],
    };
    let (first, _) = scenario.run(|_| String::new());
    assert!(first.has("boot disk /dev/vda (4096-byte sectors)"), "{}", first.text);
    assert!(first.has("ROOT grew from"), "{}", first.text);
}

#[test]
fn a_torn_primary_table_on_a_4kn_disk_is_repaired_from_the_backup() {
    let fixture = fixture_4kn().unwrap();
    let disk = disk_copy(fixture, "4kn-torn-primary").unwrap();
    let disk_bytes = image_bytes(fixture) + GROWN_BY;
    resize_disk(&disk, disk_bytes).unwrap();
    damage_primary_gpt(&disk, 4096);
    let console = boot_4kn(fixture, &disk, "mount.usr=/dev/vda3");
    assert_reached_real_init(&console);
    assert!(
        console.has("its primary GPT was damaged; its /dev/vda3 verified, so the table was rewritten from the intact backup"),
        "{}",
        console.text
    );
    assert_root_fills(&disk, disk_bytes);
}

#[test]
fn an_image_for_one_sector_size_on_a_disk_of_the_other_is_refused_and_left_alone() {
    for (fixture, disk_sectors) in [(shared_fixture().unwrap(), SectorSize::Bytes4096), (fixture_4kn().unwrap(), SectorSize::Bytes512)] {
        let image_sectors = fixture.manifest.sector_size;
        let disk = disk_copy(fixture, &format!("{image_sectors}-image-on-{disk_sectors}-disk").replace(' ', "-")).unwrap();
        let before = file_digest(&disk).unwrap();
        let machine = Machine {
            kernel: &artifacts().unwrap().kernel,
            disks: vec![Disk { sector_size: disk_sectors, ..Disk::on(Bus::Virtio, &disk) }],
            plugged_in_later: None,
            firmware_config: None,
        };
        let console = boot_machine(&machine, &fixture.initrd, "", TIMEOUT, "unsafe", |_, _| false).unwrap();
        let says = format!("has a GPT made for {image_sectors}, but its logical sectors are {} bytes", disk_sectors.bytes());
        assert_refused(&console, "usr", &says);
        assert!(console.has(&format!("keel image build --sector-size {}", disk_sectors.bytes())), "{}", console.text);
        assert_eq!(file_digest(&disk).unwrap(), before, "the disk changed");
    }
}
