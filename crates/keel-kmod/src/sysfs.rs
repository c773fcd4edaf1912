//! What sysfs says devices need: a device's modalias, and for an initrd made for the build
//! machine alone (like dracut's hostonly), the modaliases of every device between each of
//! its disks and its bus.

use anyhow::Context;
use std::collections::BTreeSet;
use std::path::Path;

/// The modalias of the device whose sysfs directory is `device`, as its uevent carries it
/// (`MODALIAS=` of its `uevent` file): what the kernel announces and `udevadm trigger`
/// replays. Not the `modalias` attribute: some buses have none (an MMC card's is only in
/// its uevent, `mmc:block`).
pub fn device_modalias(device: &Path) -> Option<String> {
    let uevent = std::fs::read_to_string(device.join("uevent")).ok()?;
    let modalias = uevent.lines().find_map(|line| line.strip_prefix("MODALIAS="))?.trim();
    (!modalias.is_empty()).then(|| modalias.to_string())
}

/// The modaliases of each disk's device and of every parent it hangs from, read from the
/// sysfs at `sysfs` (`/sys`). Block devices without a device behind them (loop, device
/// mapper, ram, zram) and partitions add nothing.
pub fn host_storage_modaliases(sysfs: &Path) -> anyhow::Result<BTreeSet<String>> {
    let class = sysfs.join("class/block");
    let devices_root = sysfs.join("devices").canonicalize().with_context(|| format!("cannot resolve {}/devices", sysfs.display()))?;
    let mut modaliases = BTreeSet::new();
    for entry in std::fs::read_dir(&class).with_context(|| format!("cannot list {}", class.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", class.display()))?;
        let Ok(mut device) = entry.path().join("device").canonicalize() else { continue };
        while device.starts_with(&devices_root) && device != devices_root {
            if let Some(modalias) = device_modalias(&device) {
                modaliases.insert(modalias);
            }
            if !device.pop() {
                break;
            }
        }
    }
    Ok(modaliases)
}

#[cfg(test)]
mod tests {
    use super::host_storage_modaliases;
    use std::os::unix::fs::symlink;

    #[test]
    fn walks_from_each_disk_to_its_bus() {
        let sys = keel_test_support::scratch_dir(std::env::temp_dir(), "keel-kmod-host");
        let pci = sys.join("devices/pci0000:00/0000:00:02.0");
        let virtio = pci.join("virtio1");
        std::fs::create_dir_all(virtio.join("block/vda/vda1")).unwrap();
        std::fs::write(pci.join("uevent"), "DRIVER=virtio-pci\nPCI_ID=1AF4:1042\nMODALIAS=pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00\n")
            .unwrap();
        std::fs::write(virtio.join("uevent"), "DRIVER=virtio_blk\nMODALIAS=virtio:d00000002v00001AF4\n").unwrap();
        // An MMC card has no modalias attribute, only the uevent's.
        let card = sys.join("devices/pci0000:00/0000:00:05.0/mmc_host/mmc0/mmc0:0001");
        std::fs::create_dir_all(card.join("block/mmcblk0")).unwrap();
        std::fs::write(card.join("uevent"), "DRIVER=mmcblk\nMMC_TYPE=MMC\nMODALIAS=mmc:block\n").unwrap();
        std::fs::write(sys.join("devices/pci0000:00/0000:00:05.0/uevent"), "PCI_CLASS=80501\nMODALIAS=pci:v00001B36d00000007sv*\n").unwrap();
        let loop0 = sys.join("devices/virtual/block/loop0");
        std::fs::create_dir_all(&loop0).unwrap();
        std::fs::create_dir_all(sys.join("class/block")).unwrap();
        symlink("../../devices/pci0000:00/0000:00:02.0/virtio1/block/vda", sys.join("class/block/vda")).unwrap();
        symlink("../../devices/pci0000:00/0000:00:02.0/virtio1/block/vda/vda1", sys.join("class/block/vda1")).unwrap();
        symlink("../../devices/virtual/block/loop0", sys.join("class/block/loop0")).unwrap();
        symlink("../../../virtio1", virtio.join("block/vda/device")).unwrap();
        symlink("../../devices/pci0000:00/0000:00:05.0/mmc_host/mmc0/mmc0:0001/block/mmcblk0", sys.join("class/block/mmcblk0")).unwrap();
        symlink("../..", card.join("block/mmcblk0/device")).unwrap();

        let found: Vec<String> = host_storage_modaliases(&sys).unwrap().into_iter().collect();
        assert_eq!(
            found,
            ["mmc:block", "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00", "pci:v00001B36d00000007sv*", "virtio:d00000002v00001AF4"]
        );
        std::fs::remove_dir_all(&sys).unwrap();
    }
}
