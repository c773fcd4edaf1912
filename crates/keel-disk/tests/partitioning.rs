//! The partitioning planner through its interface: Ignition's matrix and messages, keel's
//! own rules (number 0 by label, attributes kept on resize, placement against the table keel
//! writes, reruns), and placement at both sector sizes; then generated cases: every plan is
//! found as made by the next run, and plans agree with what Ignition 2.14's command lines
//! make the real sgdisk do.

use keel_disk::{plan_table, read_gpt, Gpt, GptPartition, Guid, PartitionAction, PartitionRequest, SectorSize, TablePlan, TableRequest};
use keel_test_support::{process_dir, XorShift};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use PartitionAction::{Create, Delete, Keep, Recreate, Resize, StaysAbsent};

const LINUX: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
const RESIZE_TYPE: &str = "3884dd41-8582-4404-b9a8-e9b84f2df50e";
const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const SWAP_TYPE: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";
/// A 1 GiB disk of 512-byte sectors: usable 34..=2097118, 2048 sectors a MiB.
const DISK: u64 = 2 * 1024 * 1024;
const LAST: u64 = DISK - 34;
const MIB: u64 = 2048;

fn guid(text: &str) -> Guid {
    Guid::parse(text).unwrap()
}

fn partition_guid(number: u32) -> Guid {
    Guid::from_random_bytes([number as u8; 16])
}

/// Partition `number` of the disk, sectors `first..=last`.
fn entry(number: u32, first_lba: u64, last_lba: u64, name: &str) -> GptPartition {
    GptPartition { number, type_guid: guid(LINUX), guid: partition_guid(number), first_lba, last_lba, attributes: 0, name: name.into() }
}

/// The table `read_gpt` gives for a disk of `disk_sectors` whole sectors.
fn table_of(partitions: Vec<GptPartition>, sector_size: SectorSize, disk_sectors: u64) -> Gpt {
    let tables = 2 + 16384 / sector_size.bytes();
    Gpt {
        sector_size,
        disk_guid: guid("d15c0000-0000-4000-8000-000000000001"),
        first_usable: tables,
        last_usable: disk_sectors - tables,
        partitions,
        primary_intact: true,
        backup_intact: true,
        backup_lba: disk_sectors - 1,
        copies_agree: true,
        protective_mbr_current: true,
        protective_mbr: true,
    }
}

fn table(partitions: Vec<GptPartition>) -> Gpt {
    table_of(partitions, SectorSize::Bytes512, DISK)
}

/// A request for partition `number` with everything else left out.
fn request(number: u32) -> PartitionRequest {
    PartitionRequest {
        number,
        label: None,
        start_mib: None,
        size_mib: None,
        type_guid: None,
        guid: None,
        wipe_partition_entry: false,
        should_exist: true,
        resize: false,
    }
}

fn labelled(number: u32, label: &str) -> PartitionRequest {
    PartitionRequest { label: Some(label.into()), ..request(number) }
}

fn fresh(n: u8) -> Guid {
    Guid::from_random_bytes([0xa0 + n; 16])
}

/// GUIDs `fresh(1)`, `fresh(2)`, … in the order they are drawn.
fn counter() -> impl FnMut() -> Guid {
    let mut drawn = 0;
    move || {
        drawn += 1;
        fresh(drawn)
    }
}

fn plan_on(
    current: Option<&Gpt>,
    disk_sectors: u64,
    sector_size: SectorSize,
    wipe_table: bool,
    partitions: Vec<PartitionRequest>,
) -> Result<TablePlan, String> {
    plan_table(current, disk_sectors, sector_size, &TableRequest { wipe_table, partitions }, &mut counter()).map_err(|e| e.to_string())
}

fn plan(current: &Gpt, partitions: Vec<PartitionRequest>) -> Result<TablePlan, String> {
    plan_on(Some(current), DISK, SectorSize::Bytes512, false, partitions)
}

fn actions(plan: &TablePlan) -> Vec<(u32, PartitionAction)> {
    plan.outcomes.iter().map(|outcome| (outcome.number, outcome.action)).collect()
}

fn extents(plan: &TablePlan) -> Vec<(u32, u64, u64)> {
    plan.partitions.iter().map(|p| (p.number, p.first_lba, p.last_lba)).collect()
}

/// Partition 1 at 1..=101 MiB and 3 at 201..=301 MiB, with attribute bits on 3.
fn two_partitions() -> Gpt {
    let mut third = entry(3, 201 * MIB, 301 * MIB - 1, "data");
    third.attributes = 1 << 57 | 1 << 60;
    third.type_guid = guid(RESIZE_TYPE);
    table(vec![entry(1, MIB, 101 * MIB - 1, "boot"), third])
}

#[test]
fn a_partition_neither_there_nor_wanted_stays_absent() {
    let current = two_partitions();
    let plan = plan(&current, vec![PartitionRequest { should_exist: false, ..request(2) }]).unwrap();
    assert_eq!(actions(&plan), [(2, StaysAbsent)]);
    assert_eq!(plan.partitions, current.partitions);
    assert_eq!(plan.disk_guid, current.disk_guid);
}

#[test]
fn a_missing_partition_is_made_as_sgdisk_makes_it() {
    let current = table(vec![]);
    let plan = plan(&current, vec![request(1)]).unwrap();
    assert_eq!(actions(&plan), [(1, Create)]);
    // sgdisk's new entry: the largest block from its aligned start to the last usable
    // sector (not a MiB boundary), Linux filesystem, a random GUID, no name, no attributes.
    assert_eq!(plan.partitions, [GptPartition { guid: fresh(1), ..entry(1, MIB, LAST, "") }]);

    let given = PartitionRequest {
        label: Some("data".into()),
        type_guid: Some(guid(RESIZE_TYPE)),
        guid: Some(partition_guid(7)),
        start_mib: Some(10),
        size_mib: Some(5),
        ..request(7)
    };
    let plan = plan_on(Some(&current), DISK, SectorSize::Bytes512, false, vec![given]).unwrap();
    let made = GptPartition { type_guid: guid(RESIZE_TYPE), ..entry(7, 10 * MIB, 15 * MIB - 1, "data") };
    assert_eq!(plan.partitions, [made]);
}

#[test]
fn a_partition_not_wanted_is_deleted_only_with_wipe_partition_entry() {
    let current = two_partitions();
    let delete = PartitionRequest { should_exist: false, ..request(3) };
    assert_eq!(
        plan(&current, vec![delete.clone()]).unwrap_err(),
        "partition 3 exists but is specified as nonexistant and wipePartitionEntry is false"
    );
    let plan = plan(&current, vec![PartitionRequest { wipe_partition_entry: true, ..delete }]).unwrap();
    assert_eq!(actions(&plan), [(3, Delete)]);
    assert_eq!(plan.partitions, current.partitions[..1]);
}

#[test]
fn a_matching_partition_is_kept_and_the_table_is_exactly_the_disks() {
    let current = two_partitions();
    let all_given = PartitionRequest {
        label: Some("data".into()),
        start_mib: Some(201),
        size_mib: Some(100),
        type_guid: Some(guid(RESIZE_TYPE)),
        guid: Some(partition_guid(3)),
        ..request(3)
    };
    for requests in [vec![request(1)], vec![all_given.clone()], vec![labelled(1, "boot"), all_given]] {
        let plan = plan(&current, requests.clone()).unwrap();
        assert!(plan.outcomes.iter().all(|outcome| outcome.action == Keep), "{requests:?}");
        assert_eq!(plan.partitions, current.partitions, "nothing to write, attribute bits included");
        assert_eq!(plan.disk_guid, current.disk_guid);
    }
}

#[test]
fn guids_compare_as_values_whatever_their_case() {
    let current = two_partitions();
    let upper = |guid: Guid| Guid::parse(&guid.to_string().to_uppercase()).unwrap();
    let request = PartitionRequest { guid: Some(upper(partition_guid(3))), type_guid: Some(upper(guid(RESIZE_TYPE))), ..request(3) };
    assert_eq!(actions(&plan(&current, vec![request]).unwrap()), [(3, Keep)]);
}

#[test]
fn a_mismatch_is_reported_with_the_first_field_that_differs() {
    let current = two_partitions();
    let cases = [
        (PartitionRequest { start_mib: Some(200), ..request(3) }, "starting sector did not match (specified 409600, got 411648)"),
        (
            PartitionRequest { guid: Some(partition_guid(9)), ..request(3) },
            "GUID did not match (specified \"09090909-0909-4909-8909-090909090909\", got \"03030303-0303-4303-8303-030303030303\")",
        ),
        (
            PartitionRequest { type_guid: Some(guid(LINUX)), ..request(3) },
            "type GUID did not match (specified \"0fc63daf-8483-4772-8e79-3d69d8477de4\", got \"3884dd41-8582-4404-b9a8-e9b84f2df50e\")",
        ),
        (labelled(3, "Data"), "label did not match (specified \"Data\", got \"data\")"),
        (labelled(3, ""), "label did not match (specified \"\", got \"data\")"),
        (PartitionRequest { size_mib: Some(50), ..request(3) }, "size did not match (specified 102400, got 204800)"),
        // Start before size, whatever else differs.
        (
            PartitionRequest { start_mib: Some(200), size_mib: Some(1), ..labelled(3, "x") },
            "starting sector did not match (specified 409600, got 411648)",
        ),
    ];
    for (request, why) in cases {
        assert_eq!(plan(&current, vec![request]).unwrap_err(), format!("partition 3 didn't match: {why}"));
    }
}

#[test]
fn a_resize_keeps_number_guid_type_label_start_and_attribute_bits() {
    let current = two_partitions();
    let data = &current.partitions[1];
    for size_mib in [150, 20] {
        let plan = plan(&current, vec![PartitionRequest { size_mib: Some(size_mib), resize: true, ..labelled(3, "data") }]).unwrap();
        assert_eq!(actions(&plan), [(3, Resize)]);
        let resized = GptPartition { last_lba: data.first_lba + size_mib * MIB - 1, ..data.clone() };
        assert_eq!(plan.partitions, [current.partitions[0].clone(), resized], "{size_mib} MiB");
    }
    // Size 0: up to the end of the free space it starts.
    let plan = plan(&current, vec![PartitionRequest { size_mib: Some(0), resize: true, ..request(3) }]).unwrap();
    assert_eq!(extents(&plan), [(1, MIB, 101 * MIB - 1), (3, 201 * MIB, LAST)]);
}

#[test]
fn a_resize_needs_everything_but_the_size_to_match() {
    let current = two_partitions();
    let other_label = PartitionRequest { size_mib: Some(150), resize: true, ..labelled(3, "other") };
    assert_eq!(plan(&current, vec![other_label]).unwrap_err(), "partition 3 didn't match: label did not match (specified \"other\", got \"data\")");
    let other_start = PartitionRequest { size_mib: Some(150), start_mib: Some(202), resize: true, ..request(3) };
    assert!(plan(&current, vec![other_start]).unwrap_err().contains("starting sector did not match"));
}

#[test]
fn a_resize_into_a_neighbour_does_not_fit() {
    let current = two_partitions();
    let request = PartitionRequest { size_mib: Some(250), resize: true, ..request(1) };
    assert_eq!(
        plan(&current, vec![request]).unwrap_err(),
        "could not create partition 1 from sector 2048 to 514047: it would run into partition 3, which starts at sector 411648"
    );
}

#[test]
fn a_wiped_entry_is_made_anew_from_the_config_alone() {
    let current = two_partitions();
    let request = PartitionRequest { size_mib: Some(10), wipe_partition_entry: true, ..request(3) };
    let plan = plan(&current, vec![request]).unwrap();
    assert_eq!(actions(&plan), [(3, Recreate)]);
    // The start left out is sgdisk's default (not the old start): the largest free block,
    // 301 MiB on, once 3 is gone. Type, GUID, name and attributes are a new entry's.
    let made = GptPartition { guid: fresh(1), ..entry(3, 101 * MIB, 111 * MIB - 1, "") };
    assert_eq!(plan.partitions, [current.partitions[0].clone(), made]);
}

#[test]
fn a_wiped_entry_that_matches_is_kept() {
    let current = two_partitions();
    let request = PartitionRequest { start_mib: Some(201), size_mib: Some(100), wipe_partition_entry: true, ..labelled(3, "data") };
    let plan = plan(&current, vec![request]).unwrap();
    assert_eq!(actions(&plan), [(3, Keep)]);
    assert_eq!(plan.partitions, current.partitions);
}

#[test]
fn a_start_or_size_left_out_is_the_existing_ones_and_0_is_sgdisks() {
    let current = table(vec![entry(1, MIB, 101 * MIB - 1, "a"), entry(2, 101 * MIB, LAST, "b")]);
    // Left out: the partition's own. 0: sgdisk's, which for 2 is where it already is.
    for size_mib in [None, Some(0)] {
        let plan = plan(&current, vec![request(1), PartitionRequest { start_mib: Some(0), size_mib, ..request(2) }]).unwrap();
        assert_eq!(actions(&plan), [(1, Keep), (2, Keep)], "{size_mib:?}");
    }
    // 1's size 0 fills the free space from its start, but 2 is in the way of nothing once
    // both are deleted: sgdisk's fill runs to the disk's end, which 2 then cannot have.
    let error = plan(&current, vec![PartitionRequest { size_mib: Some(0), ..request(1) }, request(2)]).unwrap_err();
    assert_eq!(error, "could not create partition 2 from sector 206848 to 2097118: sector 206848 belongs to partition 1");
    // With an entry that may be wiped, left out is 0 too: sgdisk's choice, here where it is.
    let wiped = |number| PartitionRequest { wipe_partition_entry: true, ..request(number) };
    assert_eq!(actions(&plan(&current, vec![wiped(1)]).unwrap()), [(1, Keep)]);
}

#[test]
fn a_new_partition_without_start_goes_to_the_largest_free_block() {
    // Free: 1..=101 MiB (100) and 301 MiB..end (~723): the later one is larger.
    let current = table(vec![entry(2, 101 * MIB, 301 * MIB - 1, "")]);
    for start_mib in [None, Some(0)] {
        let plan = plan(&current, vec![PartitionRequest { start_mib, size_mib: Some(1), ..request(1) }]).unwrap();
        assert_eq!(extents(&plan)[0], (1, 301 * MIB, 302 * MIB - 1), "{start_mib:?}");
    }
}

#[test]
fn a_new_partition_without_size_fills_only_the_largest_block() {
    let current = table(vec![entry(2, 101 * MIB, 301 * MIB - 1, "")]);
    let filled = plan(&current, vec![PartitionRequest { start_mib: Some(400), ..request(1) }]).unwrap();
    assert_eq!(extents(&filled)[0], (1, 400 * MIB, LAST));
    // A start in the smaller block: sgdisk's default end is the largest block's, so it fails.
    assert_eq!(
        plan(&current, vec![PartitionRequest { start_mib: Some(1), size_mib: Some(0), ..request(1) }]).unwrap_err(),
        "could not create partition 1 from sector 2048 to 2097118: without a size it fills the free space from the largest free \
         block's start, sectors 616448..=2097118, which does not hold sector 2048"
    );
}

#[test]
fn partitions_without_number_come_last_and_outcomes_stay_in_request_order() {
    let current = table(vec![]);
    let requests = vec![PartitionRequest { size_mib: Some(1), ..labelled(0, "late") }, PartitionRequest { size_mib: Some(1), ..request(2) }];
    let plan = plan(&current, requests).unwrap();
    // 2 is made first, at the first MiB; the label-only one after it, as number 1.
    assert_eq!(actions(&plan), [(1, Create), (2, Create)]);
    assert_eq!(plan.outcomes.iter().map(|o| o.request).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(extents(&plan), [(1, 2 * MIB, 3 * MIB - 1), (2, MIB, 2 * MIB - 1)]);
    assert_eq!(plan.partitions[0].guid, fresh(2), "GUIDs drawn in the order the partitions are made");
}

#[test]
fn a_partition_without_number_takes_the_lowest_free_one_and_is_found_by_label_after() {
    let current = table(vec![entry(1, MIB, 2 * MIB - 1, "a"), entry(3, 2 * MIB, 3 * MIB - 1, "c")]);
    let requests = vec![PartitionRequest { size_mib: Some(5), ..labelled(0, "new") }];
    let first = plan(&current, requests.clone()).unwrap();
    assert_eq!(actions(&first), [(2, Create)]);

    // The rerun (first boot again after a power cut) finds it instead of making another.
    let again = plan(&Gpt { partitions: first.partitions.clone(), ..current.clone() }, requests).unwrap();
    assert_eq!(actions(&again), [(2, Keep)]);
    assert_eq!(again.partitions, first.partitions);
}

#[test]
fn a_partition_without_number_is_matched_like_a_numbered_one() {
    let current = table(vec![entry(1, MIB, 2 * MIB - 1, "a"), entry(4, 2 * MIB, 3 * MIB - 1, "data")]);
    let request = PartitionRequest { size_mib: Some(10), ..labelled(0, "data") };
    assert_eq!(plan(&current, vec![request.clone()]).unwrap_err(), "partition 4 didn't match: size did not match (specified 20480, got 2048)");
    let plan = plan(&current, vec![PartitionRequest { resize: true, ..request }]).unwrap();
    assert_eq!(actions(&plan), [(4, Resize)]);
}

#[test]
fn a_label_two_partitions_have_is_ambiguous() {
    let current = table(vec![entry(1, MIB, 2 * MIB - 1, "data"), entry(4, 2 * MIB, 3 * MIB - 1, "data")]);
    assert_eq!(
        plan(&current, vec![labelled(0, "data")]).unwrap_err(),
        "the partition labelled \"data\" has no number, and the disk's partitions 1, 4 all have that label: which one is meant is ambiguous"
    );
    // One of them named by number is not a candidate.
    let relabel = PartitionRequest { size_mib: Some(1), wipe_partition_entry: true, ..labelled(1, "boot") };
    let plan = plan(&current, vec![relabel, labelled(0, "data")]).unwrap();
    assert_eq!(actions(&plan), [(1, Recreate), (4, Keep)]);
}

#[test]
fn a_partition_without_number_takes_no_number_the_config_names() {
    let current = table(vec![entry(1, MIB, 2 * MIB - 1, "a"), entry(2, 2 * MIB, 3 * MIB - 1, "old")]);
    let requests = vec![
        PartitionRequest { should_exist: false, wipe_partition_entry: true, ..request(2) },
        PartitionRequest { should_exist: false, ..request(3) },
        PartitionRequest { size_mib: Some(1), ..labelled(0, "new") },
    ];
    let first = plan(&current, requests.clone()).unwrap();
    // sgdisk would give it 2, which the deletion frees: the next run would delete it again.
    assert_eq!(actions(&first), [(2, Delete), (3, StaysAbsent), (4, Create)]);
    let again = plan(&Gpt { partitions: first.partitions.clone(), ..current.clone() }, requests).unwrap();
    assert_eq!(actions(&again), [(2, StaysAbsent), (3, StaysAbsent), (4, Keep)]);
}

#[test]
fn a_partition_without_number_or_label_is_refused_as_never_found_again() {
    let error = plan(&table(vec![]), vec![PartitionRequest { size_mib: Some(1), ..request(0) }]).unwrap_err();
    assert!(error.starts_with("first boot running this config again (after a power cut, say) would not find the table it makes"), "{error}");
    assert!(error.contains("partitions[0] would make partition 2 again"), "{error}");
}

#[test]
fn a_wiped_table_is_planned_from_nothing_with_a_new_disk_guid() {
    let current = two_partitions();
    for current in [Some(&current), None] {
        let plan = plan_on(current, DISK, SectorSize::Bytes512, true, vec![PartitionRequest { size_mib: Some(1), ..labelled(3, "data") }]).unwrap();
        assert_eq!(actions(&plan), [(3, Create)]);
        assert_eq!(plan.disk_guid, fresh(1), "the disk's GUID is drawn first");
        assert_eq!(plan.partitions, [GptPartition { guid: fresh(2), ..entry(3, MIB, 2 * MIB - 1, "data") }]);
    }
    // The old table's partitions are not there to refuse a deletion.
    let delete = PartitionRequest { should_exist: false, ..request(3) };
    assert_eq!(actions(&plan_on(Some(&two_partitions()), DISK, SectorSize::Bytes512, true, vec![delete]).unwrap()), [(3, StaysAbsent)]);
}

#[test]
fn a_mib_is_256_sectors_of_4096_bytes() {
    let sectors = 262_144; // 1 GiB: usable 6..=262138
    let current = table_of(vec![], SectorSize::Bytes4096, sectors);
    let plan = plan_on(Some(&current), sectors, SectorSize::Bytes4096, false, vec![PartitionRequest { size_mib: Some(3), ..request(1) }, request(2)])
        .unwrap();
    assert_eq!(extents(&plan), [(1, 256, 256 + 768 - 1), (2, 1024, 262_138)]);
    let error = plan_on(Some(&current), sectors, SectorSize::Bytes512, false, vec![request(1)]).unwrap_err();
    assert_eq!(error, "the disk's table was read in 4096-byte sectors, but the disk has 512-byte sectors");
}

#[test]
fn placement_is_against_the_table_keel_writes_not_the_disks_older_one() {
    // The disk grew from 1 to 2 GiB; its table still ends at the old end.
    let current = table(vec![entry(1, MIB, 101 * MIB - 1, "a")]);
    let plan = plan_on(Some(&current), 2 * DISK, SectorSize::Bytes512, false, vec![request(1), request(2)]).unwrap();
    assert_eq!(extents(&plan), [(1, MIB, 101 * MIB - 1), (2, 101 * MIB, 2 * DISK - 34)]);
}

#[test]
fn existing_starts_lower_the_alignment_as_in_gdisk() {
    // A start of 40 makes gdisk align on 8 sectors: the new partition goes right after 1's
    // end (1001), rounded up to 1008, not to the next MiB.
    let current = table(vec![entry(1, 40, 1000, "odd")]);
    let plan = plan(&current, vec![PartitionRequest { size_mib: Some(1), ..request(2) }]).unwrap();
    assert_eq!(extents(&plan)[1], (2, 1008, 1008 + MIB - 1));
}

#[test]
fn big_disks_align_on_at_least_8_sectors_and_an_unaligned_start_is_not_resized() {
    let sectors = 600_000_000;
    let current = table_of(vec![entry(1, 35, 1000, "odd")], SectorSize::Bytes512, sectors);
    let on_big = |requests| plan_on(Some(&current), sectors, SectorSize::Bytes512, false, requests);
    let plan = on_big(vec![PartitionRequest { size_mib: Some(1), ..request(2) }]).unwrap();
    assert_eq!(extents(&plan)[1], (2, 1008, 1008 + MIB - 1));
    // sgdisk would recreate 1 at 40, moving its data's start.
    assert_eq!(
        on_big(vec![PartitionRequest { size_mib: Some(1), resize: true, ..request(1) }]).unwrap_err(),
        "partition 1 cannot be resized in place: sgdisk would start it at sector 40 instead of 35 to align it"
    );
}

#[test]
fn partitions_that_do_not_fit_are_refused_by_number() {
    let current = two_partitions();
    let cases = [
        (
            PartitionRequest { start_mib: Some(50), size_mib: Some(1), ..request(2) },
            "could not create partition 2 from sector 102400 to 104447: sector 102400 belongs to partition 1",
        ),
        (
            PartitionRequest { start_mib: Some(150), size_mib: Some(100), ..request(2) },
            "could not create partition 2 from sector 307200 to 511999: it would run into partition 3, which starts at sector 411648",
        ),
        (
            PartitionRequest { start_mib: Some(1000), size_mib: Some(100), ..request(2) },
            "could not create partition 2 from sector 2048000 to 2252799: it would end past the last usable sector, 2097118",
        ),
        (
            PartitionRequest { start_mib: Some(5000), size_mib: Some(1), ..request(2) },
            "could not create partition 2 from sector 10240000 to 10242047: sector 10240000 is outside the usable sectors 34..=2097118",
        ),
        (
            PartitionRequest { size_mib: Some(1), ..request(129) },
            "could not create partition 129 from sector 616448 to 618495: the table keel writes has partition numbers 1 to 128",
        ),
        (PartitionRequest { size_mib: Some(u64::MAX), ..request(2) }, "partition 2: sizeMiB 18446744073709551615 is more sectors than any disk has"),
        (
            PartitionRequest { start_mib: Some(u64::MAX / 1024), ..request(2) },
            "partition 2: startMiB 18014398509481983 is more sectors than any disk has",
        ),
        (
            PartitionRequest { start_mib: Some(u64::MAX / 2048), ..request(2) },
            "could not create partition 2 from sector 18446744073709549568 to 2097118: sector 18446744073709549568 is outside the usable \
             sectors 34..=2097118",
        ),
        (
            PartitionRequest { start_mib: Some(150), size_mib: Some(u64::MAX / 2048), ..request(2) },
            "could not create partition 2 from sector 307200 to 0: it would end past the last sector a disk can have",
        ),
    ];
    for (request, message) in cases {
        assert_eq!(plan(&current, vec![request]).unwrap_err(), message);
    }
}

/// gdisk does not see a one-sector partition right before one of a lower number: its
/// pretend run places partition 3 over 2's sector (its commit then aborts, "partitions 3 and
/// 2 overlap"). keel places as the pretend run does, and refuses the table.
#[test]
fn gdisks_blind_spot_before_a_lower_numbered_partition_is_refused_as_an_overlap() {
    let current = table(vec![entry(1, 3 * MIB, 4 * MIB, "after"), entry(2, 3 * MIB - 1, 3 * MIB - 1, "one sector")]);
    let request = PartitionRequest { start_mib: Some(2), size_mib: Some(1), ..request(3) };
    assert_eq!(plan(&current, vec![request]).unwrap_err(), "partitions 2 and 3 would overlap");
}

#[test]
fn a_full_disk_refuses_new_partitions() {
    let full = table(vec![entry(1, 34, LAST, "all")]);
    assert_eq!(
        plan(&full, vec![PartitionRequest { size_mib: Some(1), ..request(2) }]).unwrap_err(),
        "could not create partition 2 from sector 0 to 2047: no sector of the disk is free"
    );
    let numbers: Vec<GptPartition> = (1..=128).map(|n| entry(n, u64::from(n) * MIB, u64::from(n) * MIB, "")).collect();
    assert_eq!(
        plan(&table(numbers), vec![labelled(0, "more")]).unwrap_err(),
        "the partition labelled \"more\" (number 0 in the config): no partition number is free among the 128 of the table keel writes"
    );
}

#[test]
fn labels_must_fit_a_gpt_entry() {
    let current = table(vec![]);
    for label in ["x".repeat(37), "nul\0inside".to_string()] {
        let error = plan(&current, vec![labelled(1, &label)]).unwrap_err();
        assert!(error.starts_with("partition 1: the label") && error.ends_with("which holds 36 UTF-16 units and no NUL"), "{error}");
    }
    assert!(plan(&current, vec![labelled(1, &"é".repeat(36))]).is_ok(), "36 units, 72 bytes of UTF-8");
}

#[test]
fn one_partition_meant_twice_is_refused() {
    let current = table(vec![entry(2, MIB, 2 * MIB - 1, "data")]);
    assert_eq!(plan(&current, vec![request(1), request(1)]).unwrap_err(), "partitions[0] and partitions[1] of this disk both mean partition 1");
}

#[test]
fn tables_keel_cannot_write_are_refused() {
    let current = table(vec![entry(200, MIB, 2 * MIB - 1, "far")]);
    assert_eq!(plan(&current, vec![]).unwrap_err(), "the disk's partition 200 is numbered past the 128 entries of the table keel writes");
    // The disk's table has smaller arrays: partition 1 reaches into keel's backup array.
    let current = table(vec![entry(1, MIB, DISK - 10, "long")]);
    let error = plan(&current, vec![request(2)]).unwrap_err();
    assert!(error.starts_with("partition 1 (\"long\") spans sectors 2048..=2097142, outside the usable sectors 34..=2097118"), "{error}");
    let current = table(vec![entry(1, MIB, 3 * MIB, "a"), entry(2, 2 * MIB, 4 * MIB, "b")]);
    assert_eq!(plan(&current, vec![]).unwrap_err(), "the disk's partitions 1 and 2 overlap");
    assert_eq!(
        plan_on(None, 68, SectorSize::Bytes512, false, vec![]).unwrap_err(),
        "a disk of 68 512-byte sectors is too small for a partition table"
    );
}

/// sgdisk leaves an unaligned start where no aligned one fits, which lowers the alignment
/// the next run places with: partition 1 goes to 6144 (the largest block starts at 4197),
/// then 3 fills 34..=2047, where 34 cannot move to 2048; the next run aligns on 2 sectors
/// and would place 1, whose start is 0 (sgdisk's to choose), at 4198.
#[test]
fn a_config_a_rerun_would_place_differently_is_refused() {
    let sectors = 131_072; // 64 MiB, usable 34..=131038
    let current = table_of(vec![entry(2, MIB, 4196, "")], SectorSize::Bytes512, sectors);
    let requests = vec![PartitionRequest { start_mib: Some(0), ..request(1) }, request(3)];
    let error = plan_on(Some(&current), sectors, SectorSize::Bytes512, false, requests).unwrap_err();
    assert_eq!(
        error,
        "first boot running this config again (after a power cut, say) would not find the table it makes: partition 1 didn't match: \
         starting sector did not match (specified 4198, got 6144); nothing was written"
    );
}

// Generated cases.

/// A disk with a table, and a config for it.
#[derive(Debug)]
struct Case {
    sector_size: SectorSize,
    disk_sectors: u64,
    existing: Vec<GptPartition>,
    request: TableRequest,
}

impl Case {
    fn table(&self) -> Gpt {
        table_of(self.existing.clone(), self.sector_size, self.disk_sectors)
    }

    fn plan(&self, current: &Gpt) -> Result<TablePlan, String> {
        plan_table(Some(current), self.disk_sectors, self.sector_size, &self.request, &mut counter()).map_err(|e| e.to_string())
    }

    fn sectors_per_mib(&self) -> u64 {
        (1 << 20) / self.sector_size.bytes()
    }
}

const NAMES: [&str; 5] = ["ROOT", "data", "swap", "", "x y"];
const TYPES: [&str; 4] = [LINUX, RESIZE_TYPE, ESP_TYPE, SWAP_TYPE];

fn pick<'a>(rng: &mut XorShift, from: &[&'a str]) -> &'a str {
    from[rng.below(from.len() as u64) as usize]
}

fn random_guid(rng: &mut XorShift) -> Guid {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&rng.bytes(16));
    Guid::from_random_bytes(bytes)
}

/// A case on a disk of `disk_sectors`: up to five partitions of a few MiB, some of them on
/// odd sectors (which lowers gdisk's alignment), numbered out of disk order; and up to
/// four requests, mostly about those partitions, with starts, sizes, types, GUIDs and
/// labels that match, differ or are left out or 0. The config is one keel-ignition's
/// validation (and Ignition's) lets through: a partition not to exist has no settings, one
/// without number has a label, numbers and labels are unique, and given ranges are apart.
fn generate(rng: &mut XorShift, sector_size: SectorSize, disk_sectors: u64) -> Case {
    let per_mib = (1 << 20) / sector_size.bytes();
    let tables = 2 + 16384 / sector_size.bytes();
    let last_usable = disk_sectors - tables;
    let mut numbers: Vec<u32> = (1..=8).collect();
    for i in (1..numbers.len()).rev() {
        numbers.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut existing = Vec::new();
    let mut cursor = tables;
    for &number in &numbers[..rng.below(6) as usize] {
        let gap = match rng.below(4) {
            0 => 0,
            1 => rng.below(per_mib),
            _ => rng.below(4) * per_mib,
        };
        let mut first_lba = cursor + gap;
        if rng.below(3) != 0 {
            first_lba = first_lba.div_ceil(per_mib) * per_mib;
        }
        let size = match rng.below(3) {
            0 => (1 + rng.below(6)) * per_mib,
            1 => 1 + rng.below(6 * per_mib),
            _ => (1 + rng.below(3)) * per_mib + rng.below(2),
        };
        let last_lba = first_lba + size - 1;
        if last_lba > last_usable {
            break;
        }
        let attributes = if rng.below(4) == 0 { 1 << 57 } else { 0 };
        let (type_guid, guid, name) = (guid(pick(rng, &TYPES)), random_guid(rng), pick(rng, &NAMES).to_string());
        existing.push(GptPartition { number, type_guid, guid, first_lba, last_lba, attributes, name });
        cursor = last_lba + 1;
    }
    existing.sort_by_key(|p| p.number);

    let disk_mib = disk_sectors / per_mib;
    let mut partitions: Vec<PartitionRequest> = Vec::new();
    for index in 0..rng.below(5) {
        let target = if !existing.is_empty() && rng.below(5) < 3 { Some(existing[rng.below(existing.len() as u64) as usize].clone()) } else { None };
        let number = match &target {
            Some(target) => target.number,
            None if rng.below(3) == 0 => 0,
            None => 1 + rng.below(10) as u32,
        };
        if number != 0 && partitions.iter().any(|r| r.number == number) {
            continue;
        }
        let mut request = PartitionRequest { wipe_partition_entry: rng.below(2) == 0, resize: rng.below(4) == 0, ..request(number) };
        if number != 0 && rng.below(7) == 0 {
            partitions.push(PartitionRequest { should_exist: false, ..request });
            continue;
        }
        let target_mib =
            |extent: u64| target.as_ref().map(|_| extent).filter(|sectors| sectors.is_multiple_of(per_mib)).map(|sectors| sectors / per_mib);
        let target_size = target.as_ref().map_or(0, |t| t.last_lba - t.first_lba + 1);
        request.label = match rng.below(5) {
            0 | 1 => None,
            2 | 3 => target.as_ref().map(|t| t.name.clone()),
            _ => Some(pick(rng, &NAMES).to_string()),
        };
        if number == 0 && request.label.is_none() {
            // Half of them name an existing partition, which keel then takes for it.
            let existing_name = existing.get(rng.below(2 * existing.len() as u64 + 1) as usize).map(|p| p.name.clone());
            request.label = Some(existing_name.unwrap_or_else(|| format!("new {index}")));
        }
        if partitions.iter().any(|r| r.label.is_some() && r.label == request.label) {
            request.label = (number == 0).then(|| format!("new {index}"));
        }
        request.start_mib = match rng.below(6) {
            0 | 1 => None,
            2 => Some(0),
            3 => target_mib(target.as_ref().map_or(0, |t| t.first_lba)),
            4 => Some(1 + rng.below(disk_mib)),
            _ => None,
        };
        request.size_mib = match rng.below(8) {
            0 | 1 => None,
            2 => Some(0),
            3 => target_mib(target_size),
            4..=6 => Some(1 + rng.below(6)),
            _ => target_mib(target_size).map(|mib| mib + 1),
        };
        request.type_guid = match rng.below(5) {
            0 | 1 => target.as_ref().map(|t| t.type_guid),
            2 => Some(guid(pick(rng, &TYPES))),
            _ => None,
        };
        request.guid = match rng.below(5) {
            0 => target.as_ref().map(|t| t.guid),
            1 => Some(random_guid(rng)),
            _ => None,
        };
        let range = |r: &PartitionRequest| match (r.start_mib, r.size_mib) {
            (Some(start), Some(size)) if start != 0 && size != 0 => Some((start, start + size)),
            _ => None,
        };
        if let Some((start, end)) = range(&request)
            && partitions.iter().filter_map(range).any(|(other_start, other_end)| start < other_end && other_start < end)
        {
            request.start_mib = None;
        }
        partitions.push(request);
    }
    Case { sector_size, disk_sectors, existing, request: TableRequest { wipe_table: rng.below(12) == 0, partitions } }
}

/// A disk of 8 to 40 MiB and a few sectors more, or now and then one big enough for gdisk's
/// Advanced Format rule (at least 8-sector alignment).
fn random_disk(rng: &mut XorShift, sector_size: SectorSize) -> u64 {
    let per_mib = (1 << 20) / sector_size.bytes();
    if rng.below(10) == 0 {
        return 600_000_000 + rng.below(per_mib);
    }
    (8 + rng.below(33)) * per_mib + rng.below(per_mib)
}

/// The property a power cut relies on: first boot running again plans the same config
/// against the table the first run wrote, and must find everything as made. A wiped table
/// is laid out again the same, with new GUIDs where the config gives none.
#[test]
fn a_plan_applied_is_found_as_made_by_the_next_run() {
    let mut rng = XorShift::new(0x6b65_656c_0001);
    let (mut planned, mut changed) = (0, 0);
    let mut refused = Vec::new();
    for case_number in 0..4000 {
        let sector_size = SectorSize::ALL[case_number % 2];
        let disk_sectors = random_disk(&mut rng, sector_size);
        let case = generate(&mut rng, sector_size, disk_sectors);
        let current = case.table();
        let first = match case.plan(&current) {
            Ok(first) => first,
            Err(error) => {
                refused.push(refusal_kind(&error));
                continue;
            }
        };
        planned += 1;
        changed += usize::from(first.outcomes.iter().any(|o| !matches!(o.action, Keep | StaysAbsent)));
        let applied = Gpt { partitions: first.partitions.clone(), disk_guid: first.disk_guid, ..current };
        let again = case.plan(&applied).unwrap_or_else(|e| panic!("case {case_number}: the rerun fails: {e}\n{case:#?}\n{first:#?}"));
        if case.request.wipe_table {
            let layout = |plan: &TablePlan| -> Vec<(u32, u64, u64, Guid, String, u64)> {
                plan.partitions.iter().map(|p| (p.number, p.first_lba, p.last_lba, p.type_guid, p.name.clone(), p.attributes)).collect()
            };
            assert_eq!(layout(&again), layout(&first), "case {case_number}: {case:#?}");
        } else {
            assert!(again.outcomes.iter().all(|o| matches!(o.action, Keep | StaysAbsent)), "case {case_number}: {case:#?}\n{first:#?}\n{again:#?}");
            assert_eq!(again.partitions, first.partitions, "case {case_number}");
            assert_eq!(again.disk_guid, first.disk_guid);
        }
    }
    eprintln!("convergence: {planned} cases planned ({changed} changing the table); refused: {}", tally(&refused));
    assert!(planned > 1500 && changed > 800, "too few cases exercise the property: {planned} planned, {changed} changing");
}

/// A refusal's kind, for the tallies: its message up to the first number or quote.
fn refusal_kind(error: &str) -> String {
    let kind = error.split(['"', ':']).next().unwrap_or(error);
    kind.split(' ').filter(|word| word.parse::<u64>().is_err()).collect::<Vec<_>>().join(" ")
}

/// No value of any field makes the planner panic.
#[test]
fn extreme_values_are_refused_not_panicked_on() {
    let current = two_partitions();
    let numbers = [0, 1, 3, 128, 129, u32::MAX];
    let values = [None, Some(0), Some(1), Some(1 << 53), Some(u64::MAX / 2048), Some(u64::MAX / 2048 + 1), Some(u64::MAX)];
    for number in numbers {
        for start_mib in values {
            for size_mib in values {
                for (wipe_partition_entry, resize) in [(false, false), (true, false), (false, true)] {
                    let request = PartitionRequest { start_mib, size_mib, wipe_partition_entry, resize, ..labelled(number, "data") };
                    for disk_sectors in [0, 67, 69, DISK, u64::MAX] {
                        let _ = plan_on(Some(&current), disk_sectors, SectorSize::Bytes512, false, vec![request.clone()]);
                    }
                }
            }
        }
    }
}

// The differential against sgdisk.

/// sgdisk, made quick: after every write it sleeps a second and syncs every filesystem of
/// the machine (gdisk's DiskSync, diskio-unix.cc), which a test's image files need neither
/// of; a preloaded library makes both return at once. Nothing else of sgdisk changes.
struct Sgdisk {
    preload: PathBuf,
}

impl Sgdisk {
    /// `None` (the differential is skipped) without sgdisk, root (for loop devices) or a C
    /// compiler.
    fn new(dir: &Path) -> Option<Sgdisk> {
        if Command::new("sgdisk").arg("--version").output().is_err() {
            eprintln!("skipped: no sgdisk");
            return None;
        }
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: not root");
            return None;
        }
        let source = dir.join("no-disk-sync.c");
        std::fs::write(&source, "unsigned int sleep(unsigned int seconds) { (void)seconds; return 0; }\nvoid sync(void) {}\n").unwrap();
        let preload = dir.join("no-disk-sync.so");
        let built = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&preload).arg(&source).status();
        if !built.is_ok_and(|status| status.success()) {
            eprintln!("skipped: cannot build the library that spares sgdisk its sleep (no C compiler?)");
            return None;
        }
        Some(Sgdisk { preload })
    }

    fn run(&self, args: &[String], disk: &Path) -> Result<String, String> {
        let output = Command::new("sgdisk").args(args).arg(disk).env("LD_PRELOAD", &self.preload).output().map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        match output.status.success() {
            true => Ok(stdout),
            false => Err(format!("sgdisk {args:?} failed ({}): {stdout}{}", output.status, String::from_utf8_lossy(&output.stderr))),
        }
    }

    /// Gives `disk` a fresh table of exactly `partitions`, on odd sectors too.
    fn make_table(&self, disk: &Path, partitions: &[GptPartition]) {
        let mut args = vec!["--clear".to_string(), "--set-alignment=1".to_string()];
        for p in partitions {
            let n = p.number;
            args.push(format!("--new={n}:{}:+{}", p.first_lba, p.last_lba - p.first_lba + 1));
            args.push(format!("--typecode={n}:{}", p.type_guid));
            args.push(format!("--partition-guid={n}:{}", p.guid));
            args.push(format!("--change-name={n}:{}", p.name));
            if p.attributes & 1 << 57 != 0 {
                args.push(format!("--attributes={n}:set:57"));
            }
        }
        self.run(&args, disk).unwrap();
    }
}

/// A loop device of 4096-byte sectors over a file, detached when dropped.
struct Loop4096(PathBuf);

impl Loop4096 {
    /// `None` where losetup cannot make one.
    fn attach(file: &Path) -> Option<Loop4096> {
        let output = Command::new("losetup").args(["--find", "--show", "--sector-size", "4096"]).arg(file).output().ok()?;
        let device = String::from_utf8_lossy(&output.stdout).trim().to_string();
        (output.status.success() && device.starts_with("/dev/loop")).then(|| Loop4096(PathBuf::from(device)))
    }
}

impl Drop for Loop4096 {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("--detach").arg(&self.0).output();
    }
}

fn read_table(disk: &Path, sector_size: SectorSize) -> Option<Gpt> {
    read_gpt(&mut File::open(disk).unwrap(), sector_size).ok()
}

/// What Ignition 2.14 did to the disk.
#[derive(Debug)]
struct IgnitionRun {
    /// Its matrix's decision per request index, with the partition's number (0 for a
    /// number-0 partition, which sgdisk numbers in the commit).
    actions: Vec<(usize, u32, PartitionAction)>,
    /// Where the pretend run put each numbered partition that should exist.
    pretend: Vec<(u32, u64, u64)>,
    /// Numbered partitions the commit made with a start or size of 0 for sgdisk to choose
    /// again, now with the kept partitions in place.
    chosen_again: Vec<u32>,
    table: Vec<GptPartition>,
}

/// `--new=N:START:+SIZE` and the settings Ignition 2.14 gives with it (sgdisk.go, buildOptions).
fn new_args(number: u32, start: Option<u64>, size: Option<u64>, label: Option<&str>, type_guid: Option<Guid>, guid: Option<Guid>) -> Vec<String> {
    let mut args = vec![format!("--new={number}:{}:+{}", start.unwrap_or(0), size.unwrap_or(0))];
    args.extend(label.map(|label| format!("--change-name={number}:{label}")));
    args.extend(type_guid.map(|type_guid| format!("--typecode={number}:{type_guid}")));
    args.extend(guid.map(|guid| format!("--partition-guid={number}:{guid}")));
    args
}

/// Ignition 2.14's partitionDisk (internal/exec/stages/disks/partitions.go) on `disk`, with
/// the real sgdisk and keel's reader in place of libblkid: zap, read, `--pretend`, the
/// matrix, one commit. Its quirks are kept: the defaults from an existing partition reach
/// only the pretend run (Go's range copies), and only an explicit 0 is resolved, and then
/// every explicit start or size of that partition.
fn ignition_2_14(sgdisk: &Sgdisk, disk: &Path, case: &Case) -> Result<IgnitionRun, String> {
    if case.request.wipe_table {
        sgdisk.run(&["--zap-all".to_string()], disk)?;
    }
    let current = read_table(disk, case.sector_size).map(|gpt| gpt.partitions).unwrap_or_default();
    let exists = |number: u32| current.iter().find(|p| p.number == number);
    let mut sorted: Vec<(usize, &PartitionRequest)> = case.request.partitions.iter().enumerate().collect();
    sorted.sort_by_key(|(_, r)| r.number == 0);
    let per_mib = case.sectors_per_mib();
    let sectors = |r: &PartitionRequest| (r.start_mib.map(|mib| mib * per_mib), r.size_mib.map(|mib| mib * per_mib));

    let (mut deletions, mut creations) = (Vec::new(), Vec::new());
    for (_, r) in &sorted {
        let (mut start, mut size) = sectors(r);
        if let Some(info) = exists(r.number) {
            deletions.push(format!("--delete={}", r.number));
            if !r.wipe_partition_entry {
                start = start.or(Some(info.first_lba));
                size = size.or(Some(info.last_lba - info.first_lba + 1));
            }
        }
        if r.should_exist {
            creations.extend(new_args(r.number, start, size, None, r.type_guid, r.guid));
        }
    }
    // Every numbered partition that should exist is shown, for the comparison of placements;
    // Ignition reads those it inspects.
    let shown: Vec<u32> = sorted.iter().filter(|(_, r)| r.number != 0 && r.should_exist).map(|(_, r)| r.number).collect();
    let inspected = |r: &PartitionRequest| r.number != 0 && (r.start_mib == Some(0) || r.size_mib == Some(0));
    let mut args = vec!["--pretend".to_string()];
    args.extend(deletions);
    args.extend(creations);
    args.extend(shown.iter().map(|number| format!("--info={number}")));
    let output = sgdisk.run(&args, disk).map_err(|e| format!("pretend: {e}"))?;
    let field = |line: &str, name: &str| line.strip_prefix(name).and_then(|rest| rest.split(' ').next()).and_then(|n| n.parse::<u64>().ok());
    let firsts = output.lines().filter_map(|line| field(line, "First sector: "));
    let lasts = output.lines().filter_map(|line| field(line, "Last sector: "));
    let pretend: Vec<(u32, u64, u64)> = shown.iter().zip(firsts.zip(lasts)).map(|(&number, (first, last))| (number, first, last)).collect();
    assert_eq!(pretend.len(), shown.len(), "{output}");

    let (mut deletions, mut creations, mut actions, mut chosen_again) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (index, r) in &sorted {
        let (mut start, mut size) = sectors(r);
        if inspected(r)
            && let Some(&(_, first, last)) = pretend.iter().find(|(number, _, _)| *number == r.number)
        {
            start = start.map(|_| first);
            size = size.map(|_| last - first + 1);
        }
        let common = |info: &GptPartition| {
            start.is_none_or(|start| start == info.first_lba)
                && r.guid.is_none_or(|guid| guid == info.guid)
                && r.type_guid.is_none_or(|type_guid| type_guid == info.type_guid)
                && r.label.as_ref().is_none_or(|label| *label == info.name)
        };
        let mut create = |start: Option<u64>, size: Option<u64>, label: Option<&str>, type_guid, guid| {
            if r.number != 0 && (start.unwrap_or(0) == 0 || size.unwrap_or(0) == 0) {
                chosen_again.push(r.number);
            }
            creations.extend(new_args(r.number, start, size, label, type_guid, guid));
        };
        let action = match (exists(r.number), r.should_exist) {
            (None, false) => StaysAbsent,
            (None, true) => {
                create(start, size, r.label.as_deref(), r.type_guid, r.guid);
                Create
            }
            (Some(_), false) if !r.wipe_partition_entry => return Err(format!("matrix: partition {} exists but should not", r.number)),
            (Some(_), false) => {
                deletions.push(format!("--delete={}", r.number));
                Delete
            }
            (Some(info), true) if common(info) && size.is_none_or(|size| size == info.last_lba - info.first_lba + 1) => Keep,
            (Some(info), true) if !r.wipe_partition_entry => {
                if !(r.resize && common(info)) {
                    return Err(format!("matrix: partition {} didn't match", r.number));
                }
                deletions.push(format!("--delete={}", r.number));
                create(Some(info.first_lba), size, Some(&info.name), Some(info.type_guid), Some(info.guid));
                Resize
            }
            (Some(_), true) => {
                deletions.push(format!("--delete={}", r.number));
                create(start, size, r.label.as_deref(), r.type_guid, r.guid);
                Recreate
            }
        };
        actions.push((*index, r.number, action));
    }
    if !deletions.is_empty() || !creations.is_empty() {
        sgdisk.run(&[deletions, creations].concat(), disk).map_err(|e| format!("commit: {e}"))?;
    }
    actions.sort_by_key(|(index, _, _)| *index);
    let table = read_table(disk, case.sector_size).map(|gpt| gpt.partitions).unwrap_or_default();
    Ok(IgnitionRun { actions, pretend, chosen_again, table })
}

/// How one case came out.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    /// The same table, partition for partition, changed by the config.
    Agreed,
    /// The same table, which the config left as it was.
    AgreedNothingToDo,
    /// Both refused the config.
    BothRefused,
    /// keel refuses what a rerun would not find as made, or a resize that would move a start.
    KeelSafer,
    /// 2.14 compares no start or size left out for an entry it may wipe; keel compares
    /// sgdisk's choice, as Ignition does since commit 6a8d4e4d (after 2.26; Flatcar
    /// backports it).
    LeftOutComparedByLaterIgnition,
    /// 2.14's commit leaves a 0 to sgdisk again, which then chooses with the kept
    /// partitions already in place, unlike its pretend run; since 6a8d4e4d Ignition commits
    /// the pretend run's choice, as keel plans it.
    ChosenAgainIn214Commit,
    /// Not compared: 2.14's validation refuses the config, or keel's number-0 rule applies.
    NotComparable,
}

/// Runs `case` through keel's planner and through Ignition 2.14 with the real sgdisk, and
/// says how they compare; panics on a disagreement none of the known differences explains.
fn differential(sgdisk: &Sgdisk, disk: &Path, case: &Case) -> Verdict {
    sgdisk.make_table(disk, &case.existing);
    let current = read_table(disk, case.sector_size).unwrap();
    assert_eq!(current.partitions, case.existing, "sgdisk made the table asked for");
    let requests = &case.request.partitions;
    let deletes = requests.iter().any(|r| !r.should_exist);
    let numberless = requests.iter().any(|r| r.number == 0);
    let named: Vec<u32> = requests.iter().map(|r| r.number).filter(|&n| n != 0).collect();
    let found_by_label = !case.request.wipe_table
        && requests
            .iter()
            .any(|r| r.number == 0 && current.partitions.iter().any(|p| Some(&p.name) == r.label.as_ref() && !named.contains(&p.number)));
    if (deletes && numberless) || found_by_label {
        return Verdict::NotComparable;
    }

    // Where 2.14 differs from keel (and later Ignitions) by design.
    let left_out_for_wiped = !case.request.wipe_table
        && requests.iter().any(|r| {
            r.should_exist && r.wipe_partition_entry && (r.start_mib.is_none() || r.size_mib.is_none()) && current.partition(r.number).is_some()
        });

    let keel = case.plan(&current);
    let ignition = ignition_2_14(sgdisk, disk, case);
    let (keel, ignition) = match (keel, ignition) {
        (Err(keel), Err(ignition)) => {
            // Refused at the same step: sgdisk's pretend run, or the matrix after it.
            let keel_step = if keel.starts_with("could not create") || keel.contains("no partition number is free") { "pretend" } else { "matrix" };
            assert!(ignition.starts_with(keel_step), "keel refused with {keel:?}, Ignition 2.14 with {ignition:?}\n{}", show_case(case));
            return Verdict::BothRefused;
        }
        (Err(keel), Ok(_)) if keel.starts_with("first boot running this config again") && left_out_for_wiped => return Verdict::KeelSafer,
        (Err(keel), Ok(first_run)) if keel.starts_with("first boot running this config again") => {
            // Ignition's own second run on the disk its first run made (as keel's would
            // be) does not find it as made either.
            let second_run = ignition_2_14(sgdisk, disk, case);
            let found_as_made = second_run
                .as_ref()
                .is_ok_and(|run| run.actions.iter().all(|(_, _, action)| matches!(action, Keep | StaysAbsent)) && run.table == first_run.table);
            assert!(!found_as_made, "keel refused with {keel:?}, but Ignition 2.14's second run finds its first run's table\n{}", show_case(case));
            return Verdict::KeelSafer;
        }
        (Err(keel), Ok(run)) if keel.contains("cannot be resized in place") => {
            let moved = run.actions.iter().any(|&(_, number, action)| {
                action == Resize
                    && run.table.iter().zip(&current.partitions).any(|(after, before)| after.number == number && after.first_lba != before.first_lba)
            });
            assert!(moved, "keel refused with {keel:?}, but Ignition 2.14's resize kept the start\n{}", show_case(case));
            return Verdict::KeelSafer;
        }
        (Ok(keel), Ok(ignition)) => (keel, ignition),
        (keel, ignition) => {
            let keel = keel.map(|plan| show(&plan.partitions));
            let ignition = ignition.map(|run| format!("{:?}\n{}", run.actions, show(&run.table)));
            panic!("only one refused: keel {keel:?}\nIgnition 2.14 {ignition:?}\n{}", show_case(case))
        }
    };
    let explain = || {
        format!(
            "keel: {:?}\n{}Ignition 2.14: {:?}\npretend {:?}\n{}{}",
            keel.outcomes.iter().map(|o| (o.request, o.number, o.action)).collect::<Vec<_>>(),
            show(&keel.partitions),
            ignition.actions,
            ignition.pretend,
            show(&ignition.table),
            show_case(case)
        )
    };

    // The pretend run: keel's placement is sgdisk's, for every numbered partition. A kept
    // partition whose start and size were given (or left out, so its own) is compared as
    // given, by both: sgdisk's pretend run may have moved an odd start to align it.
    for &(number, first, last) in &ignition.pretend {
        let planned = keel.partitions.iter().find(|p| p.number == number).map(|p| (p.first_lba, p.last_lba));
        let kept_as_given = keel.outcomes.iter().zip(requests).any(|(o, r)| {
            let own = current.partition(r.number).is_some() && !r.wipe_partition_entry;
            let given = |mib: Option<u64>| mib.map_or(own, |mib| mib != 0);
            o.number == number && o.action == Keep && given(r.start_mib) && given(r.size_mib)
        });
        if !kept_as_given {
            assert_eq!(planned, Some((first, last)), "partition {number} is not where sgdisk's pretend run put it\n{}", explain());
        }
    }

    let keel_actions: Vec<(usize, u32, PartitionAction)> = keel.outcomes.iter().map(|o| (o.request, o.number, o.action)).collect();
    let same_actions = keel_actions.len() == ignition.actions.len()
        && keel_actions.iter().zip(&ignition.actions).all(|(k, i)| k.0 == i.0 && k.2 == i.2 && (i.1 == 0 || k.1 == i.1));
    if !same_actions {
        assert!(left_out_for_wiped, "the matrices disagree\n{}", explain());
        return Verdict::LeftOutComparedByLaterIgnition;
    }

    // The tables, field by field, but for GUIDs either side draws at random and attribute
    // bits that keel's resize keeps.
    let resized: Vec<u32> = keel.outcomes.iter().filter(|o| o.action == Resize).map(|o| o.number).collect();
    let made: Vec<u32> = keel.outcomes.iter().filter(|o| matches!(o.action, Create | Recreate)).map(|o| o.number).collect();
    let drawn =
        |p: &GptPartition| made.contains(&p.number) && requests.iter().zip(&keel.outcomes).all(|(r, o)| o.number != p.number || r.guid.is_none());
    let compared = |partitions: &[GptPartition]| -> Vec<GptPartition> {
        let blank = |p: &GptPartition| GptPartition {
            guid: if drawn(p) { Guid::ZERO } else { p.guid },
            attributes: if resized.contains(&p.number) { 0 } else { p.attributes },
            ..p.clone()
        };
        partitions.iter().map(blank).collect()
    };
    if compared(&keel.partitions) == compared(&ignition.table) {
        return match keel.outcomes.iter().all(|o| matches!(o.action, Keep | StaysAbsent)) {
            true => Verdict::AgreedNothingToDo,
            false => Verdict::Agreed,
        };
    }
    let moved_since_pretend = ignition.chosen_again.iter().any(|number| {
        let pretend = ignition.pretend.iter().find(|(n, _, _)| n == number).map(|&(_, first, last)| (first, last));
        let committed = ignition.table.iter().find(|p| p.number == *number).map(|p| (p.first_lba, p.last_lba));
        pretend != committed
    });
    assert!(moved_since_pretend || left_out_for_wiped, "the tables differ\n{}", explain());
    if moved_since_pretend {
        Verdict::ChosenAgainIn214Commit
    } else {
        Verdict::LeftOutComparedByLaterIgnition
    }
}

/// One line a partition, for messages.
fn show(partitions: &[GptPartition]) -> String {
    partitions
        .iter()
        .map(|p| {
            format!(
                "  {} {}..={} type {} guid {} {:?} attributes {:#x}\n",
                p.number, p.first_lba, p.last_lba, p.type_guid, p.guid, p.name, p.attributes
            )
        })
        .collect()
}

fn show_case(case: &Case) -> String {
    let requests: String = case.request.partitions.iter().map(|r| format!("  {r:?}\n")).collect();
    format!(
        "case: {} sectors of {}, wipe_table {}\n{}requests:\n{requests}",
        case.disk_sectors,
        case.sector_size.bytes(),
        case.request.wipe_table,
        show(&case.existing)
    )
}

fn tally<T: Ord + std::fmt::Debug>(verdicts: &[T]) -> String {
    let mut counts: Vec<(&T, usize)> = Vec::new();
    for verdict in verdicts {
        match counts.iter_mut().find(|(v, _)| *v == verdict) {
            Some((_, count)) => *count += 1,
            None => counts.push((verdict, 1)),
        }
    }
    counts.sort();
    counts.iter().map(|(verdict, count)| format!("{verdict:?} {count}")).collect::<Vec<_>>().join(", ")
}

/// keel's plans against what Ignition 2.14's exact sgdisk command lines make sgdisk do, on
/// image files of 512-byte sectors (one of them past gdisk's Advanced Format size) and loop
/// devices of 4096-byte sectors: the same partitions where, by keel's documented choices,
/// they should be the same, and every difference one of those choices.
#[test]
fn plans_agree_with_sgdisk_run_as_ignition_runs_it() {
    let dir = process_dir(env!("CARGO_TARGET_TMPDIR")).join("partitioning-differential");
    std::fs::create_dir_all(&dir).unwrap();
    let Some(sgdisk) = Sgdisk::new(&dir) else { return };
    let mut rng = XorShift::new(0x6b65_656c_0002);
    let mut verdicts = Vec::new();

    let image = dir.join("disk.img");
    for case_number in 0..540 {
        let disk_sectors = if case_number % 12 == 11 { 600_000_000 + rng.below(2048) } else { random_disk(&mut rng, SectorSize::Bytes512) };
        let case = generate(&mut rng, SectorSize::Bytes512, disk_sectors);
        let file = File::create(&image).unwrap();
        file.set_len(case.disk_sectors * 512).unwrap();
        verdicts.push(differential(&sgdisk, &image, &case));
    }
    eprintln!("differential, 512-byte sectors: {}", tally(&verdicts));

    let mut verdicts_4096 = Vec::new();
    // The last one is past gdisk's Advanced Format size: a sparse file of 2.4 TB.
    for (index, (disk_sectors, cases)) in [(20 * 256 + 3, 60), (24 * 256 + 77, 60), (40 * 256 + 255, 60), (600_000_013, 30)].into_iter().enumerate() {
        let file = dir.join(format!("disk-4096-{index}.img"));
        File::create(&file).unwrap().set_len(disk_sectors * 4096).unwrap();
        let Some(device) = Loop4096::attach(&file) else {
            eprintln!("skipped: no loop device of 4096-byte sectors");
            break;
        };
        for _ in 0..cases {
            let case = generate(&mut rng, SectorSize::Bytes4096, disk_sectors);
            verdicts_4096.push(differential(&sgdisk, &device.0, &case));
        }
    }
    eprintln!("differential, 4096-byte sectors: {}", tally(&verdicts_4096));
    verdicts.extend(verdicts_4096);
    let agreed = verdicts.iter().filter(|v| **v == Verdict::Agreed).count();
    assert!(agreed > verdicts.len() / 5, "too few cases change the table: {}", tally(&verdicts));
}
