//! Software RAID arrays.

use super::gopath;
use crate::config::latest::Raid;
use crate::config::SpecVersion;
use crate::report::{JsonPath, Report};

/// Every rule about `storage.raid`.
pub(super) fn validate_raids(raids: &[Raid], at: &JsonPath, version: SpecVersion) -> Vec<Report> {
    let mut reports = Vec::new();
    for (index, raid) in raids.iter().enumerate() {
        let at = at.index(index);
        reports.extend(level_is_known(raid.level.as_deref(), raid.spares, &at.field("level"), version));
        let devices = raid.devices.as_deref().unwrap_or_default();
        reports.extend(has_devices(devices, &at.field("devices")));
        for (device_index, device) in devices.iter().enumerate() {
            reports.extend(gopath::absolute_and_clean(device, &at.field("devices").index(device_index)));
        }
        reports.extend(super::repeated_strings(devices, &at.field("devices"), "RAID device", true));
    }
    reports.extend(super::repeated_keys(
        raids,
        |raid| &raid.name,
        at,
        |name| format!("duplicate RAID array: another array in this config is named {name:?}"),
    ));
    reports
}

/// RaidDevicesRequired.
pub(super) fn has_devices(devices: &[String], at: &JsonPath) -> Option<Report> {
    devices.is_empty().then(|| Report::error(at.clone(), "a RAID array needs devices"))
}

/// RaidLevelRequired (spec 3.3 on; before it an empty level was simply unknown),
/// UnrecognizedRaidLevel, and SparesUnsupportedForLevel: striped and linear arrays have no
/// redundancy to rebuild onto spares.
pub(super) fn level_is_known(level: Option<&str>, spares: Option<i64>, at: &JsonPath, version: SpecVersion) -> Option<Report> {
    let level = level.unwrap_or("");
    if level.is_empty() && version.at_least(3) {
        return Some(Report::error(at.clone(), "a RAID array needs a level"));
    }
    match level {
        "linear" | "raid0" | "0" | "stripe" => spares
            .filter(|spares| *spares != 0)
            .map(|spares| Report::error(at.clone(), format!("{level} arrays take no spares, but spares is {spares}"))),
        "raid1" | "1" | "mirror" | "raid4" | "4" | "raid5" | "5" | "raid6" | "6" | "raid10" | "10" => None,
        _ => Some(Report::error(
            at.clone(),
            format!(
                "unknown RAID level {level:?}: use linear, raid0 (0, stripe), raid1 (1, mirror), raid4, raid5, raid6 or raid10 (or their numbers)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEWEST: SpecVersion = SpecVersion::NEWEST;

    fn at() -> JsonPath {
        JsonPath::root().field("raid")
    }

    #[test]
    fn known_levels_pass() {
        for level in ["linear", "raid0", "0", "stripe", "raid1", "1", "mirror", "raid4", "4", "raid5", "5", "raid6", "6", "raid10", "10"] {
            assert_eq!(level_is_known(Some(level), Some(0), &at(), NEWEST), None, "{level}");
        }
        assert_eq!(level_is_known(Some("raid5"), Some(2), &at(), NEWEST), None);
        assert_eq!(level_is_known(Some("raid5"), Some(-1), &at(), NEWEST), None);
    }

    #[test]
    fn unknown_or_missing_levels_are_errors() {
        for level in ["raid2", "RAID1", "mirror ", "11"] {
            assert!(level_is_known(Some(level), None, &at(), NEWEST).unwrap().message.contains("unknown"), "{level}");
        }
        assert!(level_is_known(None, None, &at(), NEWEST).unwrap().message.contains("needs a level"));
        assert!(level_is_known(Some(""), None, &at(), SpecVersion { minor: 2 }).unwrap().message.contains("unknown"));
    }

    #[test]
    fn striped_arrays_take_no_spares() {
        for level in ["linear", "raid0", "0", "stripe"] {
            assert!(level_is_known(Some(level), Some(1), &at(), NEWEST).is_some(), "{level}");
            assert_eq!(level_is_known(Some(level), None, &at(), NEWEST), None, "{level}");
        }
    }

    #[test]
    fn an_array_needs_devices() {
        assert!(has_devices(&[], &at()).is_some());
        assert_eq!(has_devices(&["/dev/a".to_owned()], &at()), None);
    }

    #[test]
    fn devices_are_required_clean_and_unique() {
        let raids = [
            Raid {
                devices: Some(vec!["/dev/a".to_owned(), "dev/b".to_owned(), "/dev/a".to_owned()]),
                level: Some("raid1".to_owned()),
                ..Raid::new("md".to_owned())
            },
            Raid { level: Some("raid1".to_owned()), ..Raid::new("md".to_owned()) },
        ];
        let paths: Vec<String> = validate_raids(&raids, &at(), NEWEST).iter().map(|report| report.path.to_string()).collect();
        assert_eq!(paths, ["$.raid[0].devices[1]", "$.raid[0].devices[2]", "$.raid[1].devices", "$.raid[1]"]);
    }
}
