//! The gptprio bits and the /usr slot commands against Debian's `cgpt` (0~R106): each
//! case builds twin disks, changes one through keel and the other through cgpt, and
//! compares the two byte for byte: entry arrays first (the part that says which slot
//! boots), then everything else (MBR, both headers). They agree to the byte: cgpt keeps
//! the header fields keel wrote and only refreshes the checksums, so nothing has to be
//! left out of the comparison. Every case runs at both logical sector sizes: cgpt reads an
//! image file in 512-byte sectors and has no option for others, but takes a block device's
//! own, so at 4096 cgpt's twin is a loop device of 4096-byte sectors (the tests need root).
//!
//! Debian's cgpt prioritizes Chrome OS kernel partitions only; keel prioritizes the /usr
//! slots. The algorithm takes the partitions it orders as a predicate, so here it runs
//! over kernel-typed partitions; and the slot commands run on images whose slots are
//! kernel-typed, where cgpt's group and keel's are the same two partitions.

mod support;
use keel_disk::{
    mark_slot_successful, prioritize, prioritize_slot, read_gpt, read_usr_slots, rewrite_gptprio, set_slot_gptprio, write_gpt, GptPartition, Gptprio,
    GptprioChange, Guid, SectorSize, Slot, TableWrite, GPTPRIO_MASK,
};
use keel_test_support::{as_disk, damage_both_gpts, damage_primary_gpt, process_dir, LoopDevice, XorShift};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use support::{cgpt, image};

const KERNEL_TYPE: &str = "fe3a2a5d-4f32-41a7-b725-accc3285a309";
const USR_TYPE: &str = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6";
const DATA_TYPE: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
/// 1 MiB: room for both tables and 25 small partitions, and quick to compare.
const DISK_BYTES: u64 = 1 << 20;
const ENTRIES_BYTES: usize = 128 * 128;
/// The partitions here are described in LBAs of 512 bytes, and placed at the same bytes at
/// either sector size.
const DESCRIBED_IN: u64 = 512;

fn guid(text: &str) -> Guid {
    Guid::parse(text).unwrap()
}

/// Partition `number` at its own 8 KiB.
fn entry(number: u32, type_guid: &str, name: &str, attributes: u64) -> GptPartition {
    let slot_guid = name.parse::<Slot>().ok().filter(|_| name.starts_with("USR-")).map(Slot::partition_guid);
    GptPartition {
        number,
        type_guid: guid(type_guid),
        guid: slot_guid.unwrap_or_else(|| Guid::from_random_bytes([number as u8; 16])),
        first_lba: 64 + u64::from(number) * 16,
        last_lba: 64 + u64::from(number) * 16 + 15,
        attributes,
        name: name.to_string(),
    }
}

/// Flatcar's numbering and names, the slots typed `slot_type`; `attributes` gives each
/// partition's attributes by number.
fn flatcar_like(slot_type: &str, mut attributes: impl FnMut(u32) -> u64) -> Vec<GptPartition> {
    [(1, DATA_TYPE, "EFI-SYSTEM"), (2, DATA_TYPE, "BIOS-BOOT"), (3, slot_type, "USR-A"), (4, slot_type, "USR-B")]
        .into_iter()
        .chain([(6, DATA_TYPE, "OEM"), (7, DATA_TYPE, "OEM-CONFIG"), (9, DATA_TYPE, "ROOT")])
        .map(|(number, type_guid, name)| entry(number, type_guid, name, attributes(number)))
        .collect()
}

/// `partitions` (in LBAs of `DESCRIBED_IN` bytes) in LBAs of `sector_size`.
fn at_sector_size(partitions: &[GptPartition], sector_size: SectorSize) -> Vec<GptPartition> {
    let scale = |lba: u64| lba * DESCRIBED_IN / sector_size.bytes();
    partitions.iter().map(|p| GptPartition { first_lba: scale(p.first_lba), last_lba: scale(p.last_lba + 1) - 1, ..p.clone() }).collect()
}

/// Writes `partitions` as a table of `sector_size` on `disk`, a file or device of
/// `DISK_BYTES` that held zeros or only such a table: every sector a table has is written,
/// so nothing of an earlier one is left.
fn write_table(disk: &Path, sector_size: SectorSize, partitions: &[GptPartition]) {
    write_gpt(&mut open_rw(disk), sector_size, guid("00000000-0000-0000-0000-000000000001"), &at_sector_size(partitions, sector_size)).unwrap();
}

/// A new image file at `path` holding `partitions` in a table of `sector_size`.
fn disk(path: &Path, sector_size: SectorSize, partitions: &[GptPartition]) {
    File::create(path).unwrap().set_len(DISK_BYTES).unwrap();
    write_table(path, sector_size, partitions);
}

/// Pairs of disks with the same table, one for keel (an image file) and one for cgpt (an
/// image file at 512, a loop device of 4096-byte sectors at 4096: attached once, and its
/// table rewritten through the device for each pair).
struct Twins {
    sector_size: SectorSize,
    name: String,
    dir: PathBuf,
    cgpt_device: Option<LoopDevice>,
}

impl Twins {
    fn new(name: &str, sector_size: SectorSize) -> Twins {
        let dir = process_dir(env!("CARGO_TARGET_TMPDIR")).join(format!("gptprio-{}", sector_size.bytes()));
        fs::create_dir_all(&dir).unwrap();
        let cgpt_file = dir.join(format!("{name}-cgpt.img"));
        File::create(&cgpt_file).unwrap().set_len(DISK_BYTES).unwrap();
        let cgpt_device = (sector_size != SectorSize::Bytes512).then(|| LoopDevice::attach(&cgpt_file, sector_size.bytes()));
        Twins { sector_size, name: name.to_string(), dir, cgpt_device }
    }

    /// Keel's disk and cgpt's, both holding `partitions`.
    fn make(&self, partitions: &[GptPartition]) -> (PathBuf, PathBuf) {
        let ours = self.dir.join(format!("{}-keel.img", self.name));
        disk(&ours, self.sector_size, partitions);
        let theirs = match &self.cgpt_device {
            Some(device) => {
                write_table(device.path(), self.sector_size, partitions);
                device.path().to_path_buf()
            }
            None => {
                let file = self.dir.join(format!("{}-cgpt.img", self.name));
                disk(&file, self.sector_size, partitions);
                file
            }
        };
        (ours, theirs)
    }
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(path).unwrap()
}

/// cgpt must succeed and say nothing on stderr (it reports some refusals with status 0).
fn cgpt_ok(args: &[&str], path: &Path) {
    let output = cgpt(args, path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.is_empty(), "cgpt {args:?}: {stderr}");
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y).or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// The entry arrays (primary, then backup), then the whole disks, byte for byte.
fn assert_same_bytes(ours: &Path, theirs: &Path, sector_size: SectorSize, case: &str) {
    let (a, b) = (fs::read(ours).unwrap(), fs::read(theirs).unwrap());
    let sector = sector_size.bytes() as usize;
    let primary = 2 * sector..2 * sector + ENTRIES_BYTES;
    let backup_end = a.len() - sector;
    for (copy, range) in [("primary", primary), ("backup", backup_end - ENTRIES_BYTES..backup_end)] {
        if let Some(at) = first_difference(&a[range.clone()], &b[range]) {
            panic!("{case} ({sector_size}): the {copy} entry arrays differ first in entry {} at byte {} of it", at / 128 + 1, at % 128);
        }
    }
    if let Some(at) = first_difference(&a, &b) {
        panic!("{case} ({sector_size}): the entry arrays agree but the disks differ first at byte {at}");
    }
}

/// sgdisk and cgpt both find the table on `path` (an image file of 512-byte sectors or a
/// block device) whole.
fn assert_valid(path: &Path) {
    let verify = keel_test_support::run("sgdisk", &["-v", path.to_str().unwrap()]);
    assert!(verify.contains("No problems found"), "{verify}");
    let show = cgpt(&["show"], path);
    assert!(show.status.success() && show.stderr.is_empty(), "cgpt show: {}", String::from_utf8_lossy(&show.stderr));
}

/// What cgpt reads back for one field of one partition (`-P`, `-T` or `-S`).
fn cgpt_field(path: &Path, number: u32, field: &str) -> u8 {
    let output = cgpt(&["show", "-i", &number.to_string(), field], path);
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap()
}

fn cgpt_add_args(number: u32, change: &GptprioChange) -> Vec<String> {
    let mut args = vec!["add".to_string(), "-i".into(), number.to_string()];
    let fields = [("-P", change.priority), ("-T", change.tries), ("-S", change.successful.map(u8::from))];
    for (flag, value) in fields {
        if let Some(value) = value {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn set_matches_cgpt_add_for_every_value() {
    let mut cases = XorShift::new(0x9e37_79b9_7f4a_7c15);
    let mut changes: Vec<GptprioChange> = Vec::new();
    // Every combination of the three fields at once...
    for value in 0..512u16 {
        let (priority, tries, successful) = ((value % 16) as u8, (value / 16 % 16) as u8, value / 256 == 1);
        changes.push(GptprioChange { priority: Some(priority), tries: Some(tries), successful: Some(successful) });
    }
    // ...each field alone at every value...
    for value in 0..16u8 {
        changes.push(GptprioChange { priority: Some(value), ..Default::default() });
        changes.push(GptprioChange { tries: Some(value), ..Default::default() });
    }
    changes.extend([false, true].map(|s| GptprioChange { successful: Some(s), ..Default::default() }));
    // ...and two of the three.
    for _ in 0..64 {
        let (p, t, s) = (cases.below(16) as u8, cases.below(16) as u8, cases.below(2) == 1);
        changes.push(match cases.below(3) {
            0 => GptprioChange { priority: Some(p), tries: Some(t), successful: None },
            1 => GptprioChange { priority: Some(p), tries: None, successful: Some(s) },
            _ => GptprioChange { priority: None, tries: Some(t), successful: Some(s) },
        });
    }
    for sector_size in SectorSize::ALL {
        let twins = Twins::new("set", sector_size);
        for (index, change) in changes.iter().enumerate() {
            let slot = if index % 2 == 0 { Slot::A } else { Slot::B };
            // Every partition starts with arbitrary attributes, gptprio bits and all others.
            let partitions = flatcar_like(USR_TYPE, |_| cases.next_u64());
            let number = partitions.iter().find(|p| p.name == slot.partition_name()).unwrap().number;
            let (ours, theirs) = twins.make(&partitions);
            let _ = set_slot_gptprio(&mut open_rw(&ours), sector_size, slot, change).unwrap();
            cgpt_ok(&strs(&cgpt_add_args(number, change)), &theirs);
            let case = format!("case {index}: {slot} {change:?}");
            assert_same_bytes(&ours, &theirs, sector_size, &case);
            if index % 41 == 0 {
                // The same bytes: what the references make of cgpt's disk, they make of keel's.
                assert_valid(&theirs);
                let now = read_usr_slots(&mut File::open(&ours).unwrap(), sector_size).unwrap().get(slot).gptprio;
                let shown = [cgpt_field(&theirs, number, "-P"), cgpt_field(&theirs, number, "-T"), cgpt_field(&theirs, number, "-S")];
                assert_eq!(shown, [now.priority(), now.tries(), u8::from(now.successful())], "{case}");
            }
        }
    }
    eprintln!("{} gptprio settings compared with cgpt add at each sector size", changes.len());
}

/// A table of `count` kernel partitions among data partitions, numbered anywhere in
/// 1..=24, with arbitrary attributes; the kernels' starting priorities come from `pool`.
fn kernels_among_others(cases: &mut XorShift, count: usize, pool: &[u8]) -> Vec<GptPartition> {
    let mut numbers: Vec<u32> = (1..=24).collect();
    let mut partitions = Vec::new();
    for index in 0..count + cases.below(4) as usize {
        let number = numbers.remove(cases.below(numbers.len() as u64) as usize);
        let background = cases.next_u64();
        partitions.push(if index < count {
            let priority = pool[cases.below(pool.len() as u64) as usize];
            let fields = Gptprio::new(priority, cases.below(16) as u8, cases.below(2) == 1).unwrap();
            entry(number, KERNEL_TYPE, "kernel", fields.apply_to(background))
        } else {
            entry(number, DATA_TYPE, "data", background)
        });
    }
    partitions.sort_by_key(|p| p.number);
    partitions
}

fn is_kernel(p: &GptPartition) -> bool {
    p.type_guid == guid(KERNEL_TYPE)
}

/// keel's prioritize over the kernels, and `cgpt prioritize [-i chosen] [-P max]`.
fn compare_prioritize(twins: &Twins, partitions: &[GptPartition], chosen: Option<u32>, max: Option<u8>, case: &str) {
    let (ours, theirs) = twins.make(partitions);
    let _ = rewrite_gptprio(&mut open_rw(&ours), twins.sector_size, |entries| prioritize(entries, is_kernel, chosen, max)).unwrap();
    let mut args = vec!["prioritize".to_string()];
    if let Some(number) = chosen {
        args.extend(["-i".to_string(), number.to_string()]);
    }
    if let Some(max) = max {
        args.extend(["-P".to_string(), max.to_string()]);
    }
    cgpt_ok(&strs(&args), &theirs);
    assert_same_bytes(&ours, &theirs, twins.sector_size, case);
}

#[test]
fn prioritize_matches_cgpt() {
    let mut cases = XorShift::new(0x2545_f491_4f6c_dd1d);
    // Small pools make ties (cgpt's groups) common; the full range makes gaps.
    let pools: [&[u8]; 5] = [&[0, 1], &[0, 1, 2], &[1, 2, 3, 15], &[0, 0, 5, 5, 9], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]];
    let mut compared = 0;
    for sector_size in SectorSize::ALL {
        let twins = Twins::new("prioritize", sector_size);
        for round in 0..400 {
            let count = 2 + cases.below(6) as usize;
            let pool = pools[round % pools.len()];
            let partitions = kernels_among_others(&mut cases, count, pool);
            let kernels: Vec<u32> = partitions.iter().filter(|p| is_kernel(p)).map(|p| p.number).collect();
            let chosen = (round % 8 != 0).then(|| kernels[cases.below(kernels.len() as u64) as usize]);
            let max = match round % 4 {
                0 | 1 => None,
                2 => Some([1, 2, 15][cases.below(3) as usize]),
                _ => Some(1 + cases.below(15) as u8),
            };
            let case = format!("round {round}: priorities {:?}, chosen {chosen:?}, max {max:?}", priorities(&partitions));
            compare_prioritize(&twins, &partitions, chosen, max, &case);
            compared += 1;
        }
        // More ranks than 15 priorities hold: 17 kernels, every priority once and one more 0.
        for (chosen, max) in [(Some(17), None), (Some(1), None), (Some(16), None), (Some(8), Some(15)), (None, None), (Some(17), Some(3))] {
            let partitions: Vec<GptPartition> = (1..=17u32)
                .map(|n| entry(n, KERNEL_TYPE, "kernel", Gptprio::new(16u32.saturating_sub(n) as u8, 1, false).unwrap().apply_to(0)))
                .collect();
            compare_prioritize(&twins, &partitions, chosen, max, &format!("17 kernels, chosen {chosen:?}, max {max:?}"));
            compared += 1;
        }
    }
    eprintln!("{compared} prioritize cases compared with cgpt prioritize");
}

fn priorities(partitions: &[GptPartition]) -> Vec<(u32, u8)> {
    partitions.iter().filter(|p| is_kernel(p)).map(|p| (p.number, Gptprio::from_attributes(p.attributes).priority())).collect()
}

/// A slot command, and the cgpt commands that do the same.
#[derive(Clone, Copy, Debug)]
enum SlotCommand {
    MarkSuccessful,
    Prioritize(Option<u8>),
}

impl SlotCommand {
    fn keel(self, path: &Path, sector_size: SectorSize, slot: Slot) -> TableWrite {
        match self {
            SlotCommand::MarkSuccessful => mark_slot_successful(&mut open_rw(path), sector_size, slot),
            SlotCommand::Prioritize(max) => prioritize_slot(&mut open_rw(path), sector_size, slot, max),
        }
        .unwrap()
    }

    fn cgpt(self, path: &Path, number: u32) {
        let number = number.to_string();
        match self {
            SlotCommand::MarkSuccessful => {
                cgpt_ok(&["add", "-i", &number, "-S", "1", "-T", "0"], path);
                cgpt_ok(&["prioritize", "-i", &number], path);
            }
            SlotCommand::Prioritize(None) => cgpt_ok(&["prioritize", "-i", &number], path),
            SlotCommand::Prioritize(Some(max)) => cgpt_ok(&["prioritize", "-i", &number, "-P", &max.to_string()], path),
        }
    }
}

fn attributes(path: &Path, sector_size: SectorSize) -> Vec<u64> {
    read_gpt(&mut File::open(path).unwrap(), sector_size).unwrap().partitions.iter().map(|p| p.attributes).collect()
}

#[test]
fn slot_commands_match_cgpt_on_kernel_typed_slots() {
    let mut cases = XorShift::new(0x5851_f42d_4c95_7f2d);
    let rounds = 150;
    for sector_size in SectorSize::ALL {
        let twins = Twins::new("slot", sector_size);
        for round in 0..rounds {
            let slot = if round % 2 == 0 { Slot::A } else { Slot::B };
            let command = match round % 3 {
                0 => SlotCommand::MarkSuccessful,
                1 => SlotCommand::Prioritize(None),
                _ => SlotCommand::Prioritize(Some(1 + cases.below(15) as u8)),
            };
            let partitions = flatcar_like(KERNEL_TYPE, |number| {
                let background = cases.next_u64();
                let priority = [0, 1, 2, 15][cases.below(4) as usize];
                let fields = Gptprio::new(priority, cases.below(16) as u8, cases.below(2) == 1).unwrap();
                if matches!(number, 3 | 4) {
                    fields.apply_to(background)
                } else {
                    background
                }
            });
            let number = if slot == Slot::A { 3 } else { 4 };
            let case = format!("round {round}: {command:?} {slot}, from {:?}", priorities(&partitions));
            let (ours, theirs) = twins.make(&partitions);
            let _ = command.keel(&ours, sector_size, slot);
            command.cgpt(&theirs, number);
            assert_same_bytes(&ours, &theirs, sector_size, &case);
            // Slots of Flatcar's own type come out the same: keel goes by slot, not by type.
            let usr_typed: Vec<GptPartition> =
                partitions.iter().map(|p| GptPartition { type_guid: if is_kernel(p) { guid(USR_TYPE) } else { p.type_guid }, ..p.clone() }).collect();
            let usr_disk = twins.dir.join("slot-usr-keel.img");
            disk(&usr_disk, sector_size, &usr_typed);
            let _ = command.keel(&usr_disk, sector_size, slot);
            assert_eq!(attributes(&usr_disk, sector_size), attributes(&theirs, sector_size), "{case}, with USR-typed slots ({sector_size})");
        }
    }
    eprintln!("{rounds} slot commands compared with cgpt at each sector size");
}

/// The disk's bytes and, for a file, its modification time: a file that kept both was not
/// written.
fn untouched_since(path: &Path) -> impl Fn() -> bool {
    let (bytes, mtime) = (fs::read(path).unwrap(), fs::metadata(path).unwrap().modified().unwrap());
    let path = path.to_path_buf();
    move || fs::read(&path).unwrap() == bytes && fs::metadata(&path).unwrap().modified().unwrap() == mtime
}

#[test]
fn both_copies_corrupt_is_an_error_and_nothing_is_written() {
    for sector_size in SectorSize::ALL {
        let twins = Twins::new("hostile", sector_size);
        let (ours, theirs) = twins.make(&flatcar_like(USR_TYPE, |n| if n == 3 { 1 << 48 | 1 << 56 } else { 0 }));
        for path in [&ours, &theirs] {
            damage_both_gpts(path, sector_size.bytes());
        }
        let unchanged = untouched_since(&ours);
        let change = GptprioChange { priority: Some(2), ..Default::default() };
        let errors = [
            set_slot_gptprio(&mut open_rw(&ours), sector_size, Slot::B, &change).unwrap_err(),
            prioritize_slot(&mut open_rw(&ours), sector_size, Slot::B, None).unwrap_err(),
            mark_slot_successful(&mut open_rw(&ours), sector_size, Slot::B).unwrap_err(),
            read_usr_slots(&mut File::open(&ours).unwrap(), sector_size).unwrap_err(),
        ];
        for error in errors {
            let text = format!("{error:#}");
            assert!(text.contains("no valid GPT"), "{text}");
        }
        assert!(unchanged(), "a disk with no valid table was written");
        // cgpt refuses too.
        assert!(!cgpt(&["add", "-i", "4", "-P", "2"], &theirs).status.success());
    }
}

#[test]
fn a_table_made_for_the_other_sector_size_is_refused_and_not_written() {
    for built_for in SectorSize::ALL {
        let read_with = built_for.other();
        let twins = Twins::new("other-size", built_for);
        let (path, _) = twins.make(&flatcar_like(USR_TYPE, |n| if n == 3 { 1 << 48 | 1 << 56 } else { 0 }));
        let unchanged = untouched_since(&path);
        let errors = [
            set_slot_gptprio(&mut open_rw(&path), read_with, Slot::B, &GptprioChange { priority: Some(2), ..Default::default() }).unwrap_err(),
            prioritize_slot(&mut open_rw(&path), read_with, Slot::B, None).unwrap_err(),
            mark_slot_successful(&mut open_rw(&path), read_with, Slot::B).unwrap_err(),
            read_usr_slots(&mut File::open(&path).unwrap(), read_with).unwrap_err(),
        ];
        for error in errors {
            let text = format!("{error:#}");
            assert!(text.contains(&format!("a GPT made for {built_for}")), "{text}");
        }
        assert!(unchanged(), "a table of the other sector size was written");
    }
}

#[test]
fn a_table_already_right_is_not_written() {
    for sector_size in SectorSize::ALL {
        let twins = Twins::new("already-right", sector_size);
        let (path, theirs) = twins.make(&flatcar_like(USR_TYPE, |n| if n == 3 { 1 << 48 | 1 << 56 | 1 << 60 } else { 0 }));
        let unchanged = untouched_since(&path);
        let same = GptprioChange { priority: Some(1), tries: Some(0), successful: Some(true) };
        assert_eq!(set_slot_gptprio(&mut open_rw(&path), sector_size, Slot::A, &same).unwrap(), TableWrite::AlreadyRight);
        assert_eq!(prioritize_slot(&mut open_rw(&path), sector_size, Slot::A, None).unwrap(), TableWrite::AlreadyRight);
        assert_eq!(mark_slot_successful(&mut open_rw(&path), sector_size, Slot::A).unwrap(), TableWrite::AlreadyRight);
        assert!(unchanged(), "a table that was already right was written");

        // A real change is written, once.
        assert_eq!(prioritize_slot(&mut open_rw(&path), sector_size, Slot::B, None).unwrap(), TableWrite::Written);
        assert_eq!(prioritize_slot(&mut open_rw(&path), sector_size, Slot::B, None).unwrap(), TableWrite::AlreadyRight);
        let slots = read_usr_slots(&mut File::open(&path).unwrap(), sector_size).unwrap();
        assert_eq!((slots.a.gptprio.priority(), slots.b.gptprio.priority()), (1, 2));
        // The references judge keel's table on cgpt's disk.
        fs::write(&theirs, fs::read(&path).unwrap()).unwrap();
        assert_valid(&theirs);
    }
}

#[test]
fn a_damaged_primary_is_repaired_where_cgpt_asks_for_repair() {
    for sector_size in SectorSize::ALL {
        let partitions = flatcar_like(KERNEL_TYPE, |n| if n == 3 { 1 << 48 | 1 << 56 } else { 0 });
        let (reference, _) = Twins::new("repair-reference", sector_size).make(&partitions);
        let _ = mark_slot_successful(&mut open_rw(&reference), sector_size, Slot::B).unwrap();
        let twins = Twins::new("repair", sector_size);
        let (ours, theirs) = twins.make(&partitions);
        for path in [&ours, &theirs] {
            damage_primary_gpt(path, sector_size.bytes());
        }
        // cgpt add fails; cgpt prioritize says "please run 'cgpt repair'" and exits 0, unchanged.
        assert!(!cgpt(&["add", "-i", "4", "-S", "1", "-T", "0"], &theirs).status.success());
        let unchanged = untouched_since(&theirs);
        let refused = cgpt(&["prioritize", "-i", "4"], &theirs);
        assert!(refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("cgpt repair"));
        assert!(unchanged());

        assert_eq!(mark_slot_successful(&mut open_rw(&ours), sector_size, Slot::B).unwrap(), TableWrite::Written);
        assert!(fs::read(&ours).unwrap() == fs::read(&reference).unwrap(), "the repaired table is the one an intact disk gets");
        fs::write(&theirs, fs::read(&ours).unwrap()).unwrap();
        assert_valid(&theirs);
    }
}

#[test]
fn slots_of_a_flatcar_image() {
    for sector_size in SectorSize::ALL {
        let path = image("gptprio-slots", sector_size);
        let slots = read_usr_slots(&mut File::open(&path).unwrap(), sector_size).unwrap();
        assert_eq!((slots.a.number, slots.b.number), (3, 4));
        assert_eq!(slots.a.guid, Slot::A.partition_guid());
        assert_eq!(slots.a.gptprio, Gptprio::new(1, 0, true).unwrap(), "images boot USR-A");
        assert_eq!(slots.b.gptprio, Gptprio::default());
        assert_eq!(as_disk(&path, sector_size.bytes(), |disk| cgpt_field(disk, 3, "-P")), 1);

        // An update to B, as update_engine leaves it: B on top with one try, not yet good.
        let _ = prioritize_slot(&mut open_rw(&path), sector_size, Slot::B, None).unwrap();
        let try_once = GptprioChange { tries: Some(1), successful: Some(false), priority: None };
        let _ = set_slot_gptprio(&mut open_rw(&path), sector_size, Slot::B, &try_once).unwrap();
        let slots = read_usr_slots(&mut File::open(&path).unwrap(), sector_size).unwrap();
        assert_eq!((slots.a.gptprio, slots.b.gptprio), (Gptprio::new(1, 0, true).unwrap(), Gptprio::new(2, 1, false).unwrap()));
        // B booted and lasted.
        let _ = mark_slot_successful(&mut open_rw(&path), sector_size, Slot::B).unwrap();
        let slots = read_usr_slots(&mut File::open(&path).unwrap(), sector_size).unwrap();
        assert_eq!(slots.b.gptprio, Gptprio::new(2, 0, true).unwrap());
        as_disk(&path, sector_size.bytes(), assert_valid);
    }
}

#[test]
fn disks_without_exactly_one_of_each_slot_are_refused() {
    let sector_size = SectorSize::Bytes512;
    let no_b: Vec<GptPartition> = flatcar_like(USR_TYPE, |_| 0).into_iter().filter(|p| p.name != "USR-B").collect();
    let (path, _) = Twins::new("no-usr-b", sector_size).make(&no_b);
    let unchanged = untouched_since(&path);
    let error = read_usr_slots(&mut File::open(&path).unwrap(), sector_size).unwrap_err().to_string();
    assert!(error.contains("no USR-B partition"), "{error}");
    assert!(mark_slot_successful(&mut open_rw(&path), sector_size, Slot::A).is_err(), "prioritizing needs both slots");
    assert!(unchanged());

    let mut twice = flatcar_like(USR_TYPE, |_| 0);
    twice.push(entry(5, USR_TYPE, "USR-A", 0));
    let (path, _) = Twins::new("usr-a-twice", sector_size).make(&twice);
    let error = set_slot_gptprio(&mut open_rw(&path), sector_size, Slot::A, &GptprioChange { priority: Some(3), ..Default::default() }).unwrap_err();
    assert!(error.to_string().contains("both claim to be USR-A"), "{error}");
}

#[test]
fn edits_beyond_the_gptprio_bits_are_refused() {
    let sector_size = SectorSize::Bytes4096;
    let (path, _) = Twins::new("beyond", sector_size).make(&flatcar_like(USR_TYPE, |_| 0));
    let unchanged = untouched_since(&path);
    let error = rewrite_gptprio(&mut open_rw(&path), sector_size, |entries| {
        entries[0].attributes |= 1 | 1 << 48;
        Ok(())
    })
    .unwrap_err();
    assert!(error.to_string().contains("more than the gptprio bits"), "{error}");
    assert!(rewrite_gptprio(&mut open_rw(&path), sector_size, |entries| {
        entries[1].name = "renamed".into();
        Ok(())
    })
    .is_err());
    assert!(unchanged());
    assert_eq!(GPTPRIO_MASK.count_ones(), 9);
}
