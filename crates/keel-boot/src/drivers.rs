//! Which drivers this machine needs, asked the way udev would: every device the kernel
//! knows has a modalias; those present at start are read from sysfs, later ones arrive
//! in uevents.

use keel_kmod::device_modalias;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const SYS_BUS: &str = "/sys/bus";

/// The modaliases of the devices on `buses` (`None`: on every bus) right now. Under
/// emulation each device's modalias costs about a millisecond to read, so reading only the
/// buses the drivers serve matters.
pub fn present_modaliases(buses: Option<&BTreeSet<String>>) -> Vec<String> {
    let bus_dirs: Vec<PathBuf> = match buses {
        Some(buses) => buses.iter().map(|bus| Path::new(SYS_BUS).join(bus)).collect(),
        None => std::fs::read_dir(SYS_BUS).into_iter().flatten().flatten().map(|entry| entry.path()).collect(),
    };
    let mut modaliases = Vec::new();
    for bus in bus_dirs {
        for device in std::fs::read_dir(bus.join("devices")).into_iter().flatten().flatten() {
            if let Some(modalias) = device_modalias(&device.path()) {
                modaliases.push(modalias);
            }
        }
    }
    modaliases
}

/// The modalias of a device a uevent announces: `MODALIAS=` of an `add` event. The
/// message is `action@devpath` and then `KEY=value` fields, each ending in a NUL.
pub fn modalias_in_uevent(message: &[u8]) -> Option<&str> {
    let mut fields = message.split(|&byte| byte == 0).filter_map(|field| std::str::from_utf8(field).ok());
    if !fields.next()?.starts_with("add@") {
        return None;
    }
    fields.find_map(|field| field.strip_prefix("MODALIAS=")).filter(|modalias| !modalias.is_empty())
}

#[cfg(test)]
mod tests {
    use super::modalias_in_uevent;

    #[test]
    fn only_added_devices_modaliases() {
        let add = b"add@/devices/pci0000:00/0000:00:04.0/virtio2\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:04.0/virtio2\0\
                    SUBSYSTEM=virtio\0MODALIAS=virtio:d00000008v00001AF4\0SEQNUM=812\0";
        assert_eq!(modalias_in_uevent(add), Some("virtio:d00000008v00001AF4"));
        let bind = b"bind@/devices/pci0000:00/0000:00:04.0/virtio2\0ACTION=bind\0MODALIAS=virtio:d00000008v00001AF4\0";
        assert_eq!(modalias_in_uevent(bind), None);
        assert_eq!(modalias_in_uevent(b"add@/devices/virtual/block/loop0\0ACTION=add\0SUBSYSTEM=block\0"), None);
        assert_eq!(modalias_in_uevent(b"add@/x\0MODALIAS=\0"), None);
        assert_eq!(modalias_in_uevent(b""), None);
    }
}
