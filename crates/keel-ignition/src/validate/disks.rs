//! Disks and their partitions.

use super::gopath;
use crate::config::latest::{Disk, Partition};
use crate::config::SpecVersion;
use crate::report::{JsonPath, Report};

/// Every rule about `storage.disks`.
pub(super) fn validate_disks(disks: &[Disk], at: &JsonPath, version: SpecVersion) -> Vec<Report> {
    let mut reports = Vec::new();
    for (index, disk) in disks.iter().enumerate() {
        reports.extend(validate_disk(disk, &at.index(index), version));
    }
    reports.extend(super::repeated_keys(
        disks,
        |disk| &disk.device,
        at,
        |device| format!("duplicate disk {device:?}: another disk in this config has this device"),
    ));
    reports
}

fn validate_disk(disk: &Disk, at: &JsonPath, version: SpecVersion) -> Vec<Report> {
    let partitions = disk.partitions.as_deref().unwrap_or_default();
    let mut reports = Vec::new();
    for (index, partition) in partitions.iter().enumerate() {
        reports.extend(validate_partition(partition, &at.field("partitions").index(index)));
    }
    reports.extend(one_partition_per_key(partitions, &at.field("partitions")));
    // Ignition stops at a missing device, but only for the rules on the disk as a whole.
    if disk.device.is_empty() {
        reports.push(Report::error(at.field("device"), "a disk needs a device"));
        return reports;
    }
    reports.extend(gopath::absolute_and_clean(&disk.device, &at.field("device")));
    reports.extend(partition_numbers_unique(partitions, &at.field("partitions")));
    reports.extend(partitions_do_not_overlap(partitions, &at.field("partitions")));
    if !version.at_least(4) {
        reports.extend(no_number_zero_beside_deletion(partitions, &at.field("partitions")));
    }
    reports.extend(partition_labels_unique(partitions, &at.field("partitions")));
    reports
}

/// Every rule about one partition.
fn validate_partition(partition: &Partition, at: &JsonPath) -> Vec<Report> {
    let mut reports = Vec::new();
    reports.extend(should_not_exist_alone(partition, at));
    reports.extend(label_or_number(partition, at));
    if let Some(label) = &partition.label {
        reports.extend(partition_label_is_valid(label, &at.field("label")));
    }
    reports.extend(guid_is_valid(partition.guid.as_deref(), &at.field("guid")));
    reports.extend(guid_is_valid(partition.type_guid.as_deref(), &at.field("typeGuid")));
    reports
}

/// Ignition's number 0 is "no number": the number field defaults to it.
fn number(partition: &Partition) -> i64 {
    partition.number.unwrap_or(0)
}

/// Duplicate: partitions are keyed by number, or by label when they have no number.
pub(super) fn one_partition_per_key(partitions: &[Partition], at: &JsonPath) -> Vec<Report> {
    let key = |partition: &Partition| match (number(partition), &partition.label) {
        (0, Some(label)) => format!("label {label:?}"),
        (0, None) => "neither number nor label".to_owned(),
        (number, _) => format!("number {number}"),
    };
    let keys: Vec<String> = partitions.iter().map(key).collect();
    super::repeats(keys.iter())
        .into_iter()
        .map(|index| {
            let key = keys.get(index).map_or("", String::as_str);
            Report::error(at.index(index), format!("duplicate partition: another partition on this disk has {key}"))
        })
        .collect()
}

/// ShouldNotExistWithOthers: a partition to delete takes no label, GUIDs, start or size.
pub(super) fn should_not_exist_alone(partition: &Partition, at: &JsonPath) -> Option<Report> {
    let given = |guid: &Option<String>| guid.as_deref().is_some_and(|guid| !guid.is_empty());
    let others = partition.label.is_some()
        || given(&partition.type_guid)
        || given(&partition.guid)
        || partition.start_mib.is_some()
        || partition.size_mib.is_some();
    (partition.should_exist == Some(false) && others).then(|| {
        Report::error(at.clone(), "shouldExist is false, which deletes the partition, but label, guid, typeGuid, startMiB or sizeMiB is set too")
    })
}

/// NeedLabelOrNumber: without either, nothing says which partition is meant.
pub(super) fn label_or_number(partition: &Partition, at: &JsonPath) -> Option<Report> {
    (number(partition) == 0 && partition.label.is_none()).then(|| Report::error(at.clone(), "a partition needs a number (1 or more) or a label"))
}

/// LabelTooLong (36 bytes, as Ignition counts) and LabelContainsColon (sgdisk would cut the
/// label at the colon).
pub(super) fn partition_label_is_valid(label: &str, at: &JsonPath) -> Option<Report> {
    if label.len() > 36 {
        return Some(Report::error(at.clone(), format!("partition label {label:?} is {} bytes long; the limit is 36", label.len())));
    }
    label.contains(':').then(|| Report::error(at.clone(), format!("partition label {label:?} contains a colon, where it would be cut off")))
}

/// DoesntMatchGUIDRegex: 8-4-4-4-12 hex digits, or empty.
pub(super) fn guid_is_valid(guid: Option<&str>, at: &JsonPath) -> Option<Report> {
    let guid = guid?;
    let groups: Vec<&str> = guid.split('-').collect();
    let lengths_ok = groups.iter().map(|group| group.len()).eq([8, 4, 4, 4, 12]);
    let valid = guid.is_empty() || (lengths_ok && groups.iter().all(|group| group.bytes().all(|byte| byte.is_ascii_hexdigit())));
    (!valid).then(|| Report::error(at.clone(), format!("{guid:?} is not a GUID of the form 01234567-89AB-CDEF-EDCB-A98765432101")))
}

/// PartitionNumbersCollide, reported once per disk at the second use of a number. Ignition picks
/// the number to report in map order, which Go randomizes; keel reports the earliest repeat.
pub(super) fn partition_numbers_unique(partitions: &[Partition], at: &JsonPath) -> Option<Report> {
    let numbers = partitions.iter().map(number).filter(|number| *number != 0);
    let indexes: Vec<usize> = partitions.iter().enumerate().filter(|(_, partition)| number(partition) != 0).map(|(index, _)| index).collect();
    let repeat = super::repeats(numbers).into_iter().next()?;
    let index = *indexes.get(repeat)?;
    let shown = partitions.get(index).map_or(0, number);
    Some(Report::error(at.index(index), format!("partition number {shown} is used by another partition on this disk")))
}

/// PartitionsOverlap: among partitions with a start (not 0, which means "first free") and a
/// size, the first pair that shares a MiB, reported at the one found second. Sizes of 0 ("fill
/// the rest") count as one MiB; arithmetic wraps as Go's does.
pub(super) fn partitions_do_not_overlap(partitions: &[Partition], at: &JsonPath) -> Option<Report> {
    let placed: Vec<(usize, i64, i64)> = partitions
        .iter()
        .enumerate()
        .filter_map(|(index, partition)| match (partition.start_mib, partition.size_mib) {
            (Some(start), Some(size)) if start != 0 => {
                let end = if size == 0 { start } else { start.wrapping_add(size).wrapping_sub(1) };
                Some((index, start, end))
            }
            _ => None,
        })
        .collect();
    for (index, start, end) in &placed {
        for (other_index, other_start, other_end) in &placed {
            if index == other_index {
                continue;
            }
            let overlaps =
                (start >= other_start && start <= other_end) || (end >= other_start && end <= other_end) || (start < other_start && end > other_end);
            if overlaps {
                return Some(Report::error(at.index(*other_index), format!("this partition overlaps the one at partitions[{index}] of this disk")));
            }
        }
    }
    None
}

/// ZeroesWithShouldNotExist (spec 3.0–3.3 only; Ignition later allowed it): a partition to
/// delete beside one without a number.
pub(super) fn no_number_zero_beside_deletion(partitions: &[Partition], at: &JsonPath) -> Option<Report> {
    let deletes = partitions.iter().any(|partition| partition.should_exist == Some(false));
    let numberless = partitions.iter().any(|partition| number(partition) == 0);
    (deletes && numberless).then(|| {
        Report::error(at.clone(), "a partition has shouldExist false while another has no number (0); spec versions before 3.4.0 refuse this")
    })
}

/// DuplicateLabels: the first label used twice on one disk.
pub(super) fn partition_labels_unique(partitions: &[Partition], at: &JsonPath) -> Option<Report> {
    let labelled: Vec<(usize, &str)> =
        partitions.iter().enumerate().filter_map(|(index, partition)| Some((index, partition.label.as_deref()?))).collect();
    let repeat = super::repeats(labelled.iter().map(|(_, label)| *label)).into_iter().next()?;
    let (index, label) = labelled.get(repeat)?;
    Some(Report::error(at.index(*index), format!("partition label {label:?} is used twice on this disk")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEWEST: SpecVersion = SpecVersion::NEWEST;

    fn at() -> JsonPath {
        JsonPath::root().field("partitions")
    }

    fn numbered(number: i64) -> Partition {
        Partition { number: Some(number), ..Default::default() }
    }

    fn labelled(label: &str) -> Partition {
        Partition { label: Some(label.to_owned()), ..Default::default() }
    }

    fn placed(number: i64, start: i64, size: i64) -> Partition {
        Partition { start_mib: Some(start), size_mib: Some(size), ..numbered(number) }
    }

    fn paths(reports: &[Report]) -> Vec<String> {
        reports.iter().map(|report| report.path.to_string()).collect()
    }

    #[test]
    fn a_deleted_partition_takes_no_other_settings() {
        let delete = Partition { should_exist: Some(false), ..numbered(1) };
        assert_eq!(should_not_exist_alone(&delete, &at()), None);
        assert_eq!(should_not_exist_alone(&Partition { guid: Some(String::new()), ..delete.clone() }, &at()), None);
        for with_other in [
            Partition { label: Some(String::new()), ..delete.clone() },
            Partition { type_guid: Some("x".to_owned()), ..delete.clone() },
            Partition { start_mib: Some(0), ..delete.clone() },
            Partition { size_mib: Some(0), ..delete.clone() },
        ] {
            assert!(should_not_exist_alone(&with_other, &at()).is_some(), "{with_other:?}");
        }
        assert_eq!(should_not_exist_alone(&Partition { size_mib: Some(1), ..numbered(1) }, &at()), None);
    }

    #[test]
    fn a_partition_needs_a_number_or_a_label() {
        assert!(label_or_number(&Partition::default(), &at()).is_some());
        assert!(label_or_number(&numbered(0), &at()).is_some());
        assert_eq!(label_or_number(&numbered(-3), &at()), None);
        assert_eq!(label_or_number(&labelled(""), &at()), None);
    }

    #[test]
    fn partition_labels_are_short_and_colon_free() {
        assert_eq!(partition_label_is_valid(&"a".repeat(36), &at()), None);
        assert!(partition_label_is_valid(&"a".repeat(37), &at()).unwrap().message.contains("37 bytes"));
        // Ignition counts bytes, not characters.
        assert!(partition_label_is_valid(&"é".repeat(19), &at()).is_some());
        assert!(partition_label_is_valid("a:b", &at()).unwrap().message.contains("colon"));
    }

    #[test]
    fn guids_match_the_pattern_or_are_empty() {
        for guid in [None, Some(""), Some("0FC63DAF-8483-4772-8E79-3D69D8477DE4"), Some("0fc63daf-8483-4772-8e79-3d69d8477de4")] {
            assert_eq!(guid_is_valid(guid, &at()), None, "{guid:?}");
        }
        for guid in [
            "0FC63DAF84834772-8E79-3D69D8477DE4",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE",
            "GFC63DAF-8483-4772-8E79-3D69D8477DE4",
            " 0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            "x",
        ] {
            assert!(guid_is_valid(Some(guid), &at()).is_some(), "{guid}");
        }
    }

    #[test]
    fn partitions_are_keyed_by_number_or_label() {
        let partitions = [
            numbered(1),
            numbered(1),
            labelled("a"),
            Partition { label: Some("a".to_owned()), ..numbered(2) },
            labelled("a"),
            Partition::default(),
            Partition::default(),
        ];
        assert_eq!(paths(&one_partition_per_key(&partitions, &at())), ["$.partitions[1]", "$.partitions[4]", "$.partitions[6]"]);
    }

    #[test]
    fn a_number_used_twice_is_reported_once() {
        let partitions = [numbered(1), numbered(2), numbered(2), numbered(1), numbered(0), numbered(0)];
        assert_eq!(partition_numbers_unique(&partitions, &at()).map(|report| report.path.to_string()), Some("$.partitions[2]".to_owned()));
        assert_eq!(partition_numbers_unique(&[numbered(1), numbered(2), numbered(0), numbered(0)], &at()), None);
    }

    #[test]
    fn overlapping_partitions_are_found() {
        let overlap_at = |partitions: &[Partition]| partitions_do_not_overlap(partitions, &at()).map(|report| report.path.to_string());
        assert_eq!(overlap_at(&[placed(1, 1, 10), placed(2, 11, 10)]), None);
        assert_eq!(overlap_at(&[placed(1, 1, 10), placed(2, 10, 10)]), Some("$.partitions[1]".to_owned()));
        assert_eq!(overlap_at(&[placed(1, 5, 2), placed(2, 1, 10)]), Some("$.partitions[1]".to_owned()));
        // Size 0 means "the rest of the disk" and counts as its start only; start 0 is skipped.
        assert_eq!(overlap_at(&[placed(1, 5, 0), placed(2, 6, 0)]), None);
        assert_eq!(overlap_at(&[placed(1, 5, 0), placed(2, 5, 0)]), Some("$.partitions[1]".to_owned()));
        assert_eq!(overlap_at(&[placed(1, 0, 10), placed(2, 0, 10)]), None);
        // Huge values wrap instead of panicking.
        assert!(overlap_at(&[placed(1, i64::MAX, i64::MAX), placed(2, 1, i64::MAX)]).is_some());
    }

    #[test]
    fn deleting_beside_a_numberless_partition_is_refused_before_3_4() {
        let partitions = [labelled("x"), Partition { should_exist: Some(false), ..numbered(2) }];
        assert!(no_number_zero_beside_deletion(&partitions, &at()).is_some());
        assert_eq!(no_number_zero_beside_deletion(&[numbered(1), Partition { should_exist: Some(false), ..numbered(2) }], &at()), None);
        let disk = Disk { partitions: Some(partitions.to_vec()), ..Disk::new("/dev/sda".to_owned()) };
        assert_eq!(validate_disk(&disk, &at(), SpecVersion { minor: 3 }).len(), 1);
        assert!(validate_disk(&disk, &at(), NEWEST).is_empty());
    }

    #[test]
    fn a_label_used_twice_is_reported_once() {
        let partitions = [labelled("a"), numbered(1), Partition { label: Some("a".to_owned()), ..numbered(2) }, labelled("a")];
        assert_eq!(partition_labels_unique(&partitions, &at()).map(|report| report.path.to_string()), Some("$.partitions[2]".to_owned()));
        assert_eq!(partition_labels_unique(&[labelled("a"), labelled("b")], &at()), None);
    }

    #[test]
    fn a_disk_without_device_skips_only_the_disk_rules() {
        let disk = Disk { partitions: Some(vec![numbered(1), numbered(1), Partition::default()]), ..Disk::new(String::new()) };
        let reports = validate_disk(&disk, &JsonPath::root(), NEWEST);
        assert_eq!(paths(&reports), ["$.partitions[2]", "$.partitions[1]", "$.device"]);
    }

    #[test]
    fn disks_are_keyed_by_device() {
        let disks = [Disk::new("/dev/sda".to_owned()), Disk::new("/dev/sda".to_owned()), Disk::new("/dev/vda/".to_owned())];
        let reports = validate_disks(&disks, &JsonPath::root().field("disks"), NEWEST);
        assert_eq!(paths(&reports), ["$.disks[2].device", "$.disks[1]"]);
    }
}
