//! Filesystems: formats, labels, mount paths, and what they do to the disks they sit on.

use super::gopath;
use crate::config::latest::{Filesystem, Storage};
use crate::config::SpecVersion;
use crate::report::{JsonPath, Report};

/// Every rule about `storage.filesystems`.
pub(super) fn validate_filesystems(storage: &Storage, at: &JsonPath, version: SpecVersion) -> Vec<Report> {
    let filesystems = storage.filesystems.as_deref().unwrap_or_default();
    let mut reports = Vec::new();
    for (index, filesystem) in filesystems.iter().enumerate() {
        let at = at.index(index);
        reports.extend(gopath::absolute_and_clean_if_given(filesystem.path.as_deref(), &at.field("path")));
        reports.extend(gopath::absolute_and_clean(&filesystem.device, &at.field("device")));
        reports.extend(format_is_valid(filesystem, &at.field("format"), version));
        reports.extend(label_fits_format(filesystem.label.as_deref(), filesystem.format.as_deref(), &at.field("label")));
        if version.at_least(4) {
            reports.extend(disk_is_not_overwritten(filesystem, storage, &at.field("device")));
        }
    }
    reports.extend(super::repeated_keys(
        filesystems,
        |filesystem| &filesystem.device,
        at,
        |device| format!("duplicate filesystem: another filesystem in this config is on {device:?}"),
    ));
    reports
}

/// The formats Ignition creates; "none" (spec 3.3 on) wipes without creating one.
fn known_formats(version: SpecVersion) -> &'static [&'static str] {
    if version.at_least(3) {
        &["ext4", "btrfs", "xfs", "swap", "vfat", "none"]
    } else {
        &["ext4", "btrfs", "xfs", "swap", "vfat"]
    }
}

/// FormatNilWithOthers, FilesystemInvalidFormat: without a format, Ignition cannot honour a
/// mount path, label, UUID, wipe or options; a format must be one Ignition knows.
pub(super) fn format_is_valid(filesystem: &Filesystem, at: &JsonPath, version: SpecVersion) -> Option<Report> {
    let given = |text: &Option<String>| text.as_deref().is_some_and(|text| !text.is_empty());
    match filesystem.format.as_deref().filter(|format| !format.is_empty()) {
        None => {
            let others = given(&filesystem.path)
                || given(&filesystem.label)
                || given(&filesystem.uuid)
                || filesystem.wipe_filesystem == Some(true)
                || filesystem.mount_options.as_ref().is_some_and(|options| !options.is_empty())
                || filesystem.options.as_ref().is_some_and(|options| !options.is_empty());
            others.then(|| Report::error(at.clone(), "a format is required when path, label, uuid, wipeFilesystem, options or mountOptions is set"))
        }
        Some(format) => {
            let formats = known_formats(version);
            (!formats.contains(&format))
                .then(|| Report::error(at.clone(), format!("unknown filesystem format {format:?}: spec {version} knows {}", formats.join(", "))))
        }
    }
}

/// LabelNeedsFormat and the per-format limits (ext4 16, btrfs 256, xfs 12, swap 15, vfat 11
/// bytes); other formats have none here.
pub(super) fn label_fits_format(label: Option<&str>, format: Option<&str>, at: &JsonPath) -> Option<Report> {
    let label = label.filter(|label| !label.is_empty())?;
    let Some(format) = format.filter(|format| !format.is_empty()) else {
        return Some(Report::error(at.clone(), "a label needs a format"));
    };
    let limit = match format {
        "ext4" => 16,
        "btrfs" => 256,
        "xfs" => 12,
        "swap" => 15,
        "vfat" => 11,
        _ => return None,
    };
    (label.len() > limit)
        .then(|| Report::error(at.clone(), format!("label {label:?} is {} bytes long; {format} labels hold at most {limit}", label.len())))
}

/// PartitionsOverwritten, FilesystemImplicitWipe (spec 3.4 on, warnings): a filesystem on a
/// whole disk this config partitions destroys the partitions; one on a disk whose table is wiped
/// is wiped with it.
pub(super) fn disk_is_not_overwritten(filesystem: &Filesystem, storage: &Storage, at: &JsonPath) -> Option<Report> {
    // The last disk of a device counts, as in Ignition's map of disks by device.
    let disk = storage.disks.iter().flatten().rev().find(|disk| disk.device == filesystem.device)?;
    if disk.partitions.as_ref().is_some_and(|partitions| !partitions.is_empty()) {
        return Some(Report::warning(at.clone(), "this filesystem is on a whole disk whose partitions this config sets: it overwrites them"));
    }
    (filesystem.wipe_filesystem != Some(true) && disk.wipe_table == Some(true)).then(|| {
        Report::warning(at.clone(), "this disk's table is wiped (wipeTable), so the filesystem is wiped too, although wipeFilesystem is not true")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::latest::{Disk, Partition};
    use crate::report::Level;

    const NEWEST: SpecVersion = SpecVersion::NEWEST;

    fn at() -> JsonPath {
        JsonPath::root().field("fs")
    }

    fn filesystem(format: Option<&str>) -> Filesystem {
        Filesystem { format: format.map(str::to_owned), ..Filesystem::new("/dev/sda1".to_owned()) }
    }

    #[test]
    fn known_formats_pass_and_none_arrives_in_3_3() {
        for format in [None, Some(""), Some("ext4"), Some("btrfs"), Some("xfs"), Some("swap"), Some("vfat"), Some("none")] {
            assert_eq!(format_is_valid(&filesystem(format), &at(), NEWEST), None, "{format:?}");
        }
        assert!(format_is_valid(&filesystem(Some("none")), &at(), SpecVersion { minor: 2 }).is_some());
        assert!(format_is_valid(&filesystem(Some("ext3")), &at(), NEWEST).unwrap().message.contains("\"ext3\""));
        assert!(format_is_valid(&filesystem(Some("EXT4")), &at(), NEWEST).is_some());
    }

    #[test]
    fn settings_without_a_format_are_errors() {
        let bare = filesystem(None);
        for with_setting in [
            Filesystem { path: Some("/var".to_owned()), ..bare.clone() },
            Filesystem { label: Some("l".to_owned()), ..bare.clone() },
            Filesystem { uuid: Some("u".to_owned()), ..bare.clone() },
            Filesystem { wipe_filesystem: Some(true), ..bare.clone() },
            Filesystem { options: Some(vec![String::new()]), ..bare.clone() },
            Filesystem { mount_options: Some(vec!["ro".to_owned()]), ..bare.clone() },
        ] {
            assert!(format_is_valid(&with_setting, &at(), NEWEST).is_some(), "{with_setting:?}");
        }
        for harmless in [
            Filesystem { path: Some(String::new()), ..bare.clone() },
            Filesystem { wipe_filesystem: Some(false), ..bare.clone() },
            Filesystem { options: Some(vec![]), ..bare.clone() },
        ] {
            assert_eq!(format_is_valid(&harmless, &at(), NEWEST), None, "{harmless:?}");
        }
    }

    #[test]
    fn labels_fit_their_format() {
        for (format, limit) in [("ext4", 16), ("btrfs", 256), ("xfs", 12), ("swap", 15), ("vfat", 11)] {
            assert_eq!(label_fits_format(Some(&"a".repeat(limit)), Some(format), &at()), None, "{format}");
            assert!(label_fits_format(Some(&"a".repeat(limit + 1)), Some(format), &at()).is_some(), "{format}");
        }
        assert_eq!(label_fits_format(Some(&"a".repeat(300)), Some("none"), &at()), None);
        assert!(label_fits_format(Some("l"), None, &at()).unwrap().message.contains("needs a format"));
        assert!(label_fits_format(Some("l"), Some(""), &at()).is_some());
        assert_eq!(label_fits_format(Some(""), None, &at()), None);
    }

    #[test]
    fn a_filesystem_over_a_configured_disk_is_a_warning_from_3_4() {
        let partitioned = Disk { partitions: Some(vec![Partition::default()]), ..Disk::new("/dev/sdb".to_owned()) };
        let wiped = Disk { wipe_table: Some(true), ..Disk::new("/dev/sdc".to_owned()) };
        let storage = Storage { disks: Some(vec![partitioned, wiped]), ..Default::default() };
        let on = |device: &str, wipe: Option<bool>| Filesystem { wipe_filesystem: wipe, ..Filesystem::new(device.to_owned()) };
        assert_eq!(disk_is_not_overwritten(&on("/dev/sdb", Some(true)), &storage, &at()).map(|report| report.level), Some(Level::Warning));
        assert!(disk_is_not_overwritten(&on("/dev/sdc", None), &storage, &at()).unwrap().message.contains("wipeTable"));
        assert_eq!(disk_is_not_overwritten(&on("/dev/sdc", Some(true)), &storage, &at()), None);
        assert_eq!(disk_is_not_overwritten(&on("/dev/sda", None), &storage, &at()), None);
        let storage = Storage { filesystems: Some(vec![on("/dev/sdc", None)]), ..storage };
        assert_eq!(validate_filesystems(&storage, &at(), NEWEST).len(), 1);
        assert!(validate_filesystems(&storage, &at(), SpecVersion { minor: 3 }).is_empty());
    }

    #[test]
    fn filesystems_are_keyed_by_device_and_paths_must_be_clean() {
        let storage = Storage {
            filesystems: Some(vec![
                Filesystem { path: Some("var".to_owned()), ..filesystem(Some("ext4")) },
                filesystem(Some("ext4")),
                Filesystem::new("dev/sdb".to_owned()),
            ]),
            ..Default::default()
        };
        let paths: Vec<String> = validate_filesystems(&storage, &at(), NEWEST).iter().map(|report| report.path.to_string()).collect();
        assert_eq!(paths, ["$.fs[0].path", "$.fs[2].device", "$.fs[1]"]);
    }
}
