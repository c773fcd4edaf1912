//! keel's GPT against gdisk's `sgdisk`, the field's reference, and against damage.

use keel_disk::{read_gpt, SECTOR_SIZE};
use std::fs::{self, File};
use std::path::Path;

mod support;
use keel_test_support::{damage_both_gpts, overwrite, process_dir, XorShift};
use support::{image, sgdisk, MIB};

#[test]
fn sgdisk_finds_no_problems_and_sees_the_same_partitions() {
    let path = image("valid");
    let verify = sgdisk(&["-v"], &path);
    assert!(verify.contains("No problems found"), "{verify}");

    let ours = read_gpt(&mut File::open(&path).unwrap()).unwrap();
    assert!(ours.primary_intact && ours.backup_intact && ours.copies_agree);
    assert_eq!(ours.disk_guid.to_string(), "00000000-0000-0000-0000-000000000001");
    let numbers: Vec<u32> = ours.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 6, 7, 9]);
    for p in &ours.partitions {
        let info = sgdisk(&["-i", &p.number.to_string()], &path).to_ascii_lowercase();
        assert!(info.contains(&format!("partition guid code: {}", p.type_guid)), "{info}");
        assert!(info.contains(&format!("partition unique guid: {}", p.guid)), "{info}");
        assert!(info.contains(&format!("first sector: {} ", p.first_lba)), "{info}");
        assert!(info.contains(&format!("last sector: {} ", p.last_lba)), "{info}");
        assert!(info.contains(&format!("partition name: '{}'", p.name.to_ascii_lowercase())), "{info}");
    }
    let usr_a = ours.by_name("USR-A").unwrap().unwrap();
    assert_eq!(usr_a.guid.to_string(), "7130c94a-213a-4e5a-8e26-6cce9662f132");
    assert_eq!(usr_a.attributes, 1 << 48 | 1 << 56);
}

#[test]
fn reads_tables_that_sgdisk_wrote() {
    let path = process_dir(env!("CARGO_TARGET_TMPDIR")).join("gpt-by-sgdisk.img");
    fs::write(&path, vec![0u8; (16 * MIB) as usize]).unwrap();
    sgdisk(&["-o", "-U", "R", "-n", "2:2048:+4M", "-c", "2:second", "-t", "2:8300", "-n", "5:0:+1M", "-c", "5:fifth"], &path);
    let ours = read_gpt(&mut File::open(&path).unwrap()).unwrap();
    let names: Vec<(u32, &str)> = ours.partitions.iter().map(|p| (p.number, p.name.as_str())).collect();
    assert_eq!(names, [(2, "second"), (5, "fifth")]);
    assert_eq!(ours.partition(2).unwrap().size_bytes(), 4 * MIB);
}

#[test]
fn damaged_primary_falls_back_to_the_backup() {
    let path = image("primary-damaged");
    overwrite(&path, SECTOR_SIZE + 40, &[0xff; 8]);
    let gpt = read_gpt(&mut File::open(&path).unwrap()).unwrap();
    assert!(!gpt.primary_intact && gpt.backup_intact);
    assert_eq!(gpt.partitions.len(), 7);

    // Damage the primary entry array instead: its checksum no longer matches.
    let path = image("primary-entries-damaged");
    overwrite(&path, 2 * SECTOR_SIZE + 60, b"x");
    let gpt = read_gpt(&mut File::open(&path).unwrap()).unwrap();
    assert!(!gpt.primary_intact && gpt.backup_intact);
}

#[test]
fn both_copies_damaged_is_a_clear_error() {
    let path = image("both-damaged");
    damage_both_gpts(&path);
    let error = format!("{:#}", read_gpt(&mut File::open(&path).unwrap()).unwrap_err());
    assert!(error.contains("no valid GPT") && error.contains("signature"), "{error}");
}

/// Re-signs a header after editing it, as a hostile disk would.
fn edit_header(path: &Path, lba: u64, edit: impl Fn(&mut [u8])) {
    let mut sector = fs::read(path).unwrap()[(lba * SECTOR_SIZE) as usize..][..512].to_vec();
    edit(&mut sector);
    sector[16..20].fill(0);
    let crc = keel_disk::crc32(&sector[..92]);
    sector[16..20].copy_from_slice(&crc.to_le_bytes());
    overwrite(path, lba * SECTOR_SIZE, &sector);
}

#[test]
fn hostile_headers_are_errors_not_panics() {
    let len = fs::metadata(image("hostile-probe")).unwrap().len();
    let last = len / SECTOR_SIZE - 1;
    type Edit = fn(&mut [u8]);
    let cases: [(&str, Edit); 5] = [
        ("entry size 200", |s| s[84..88].copy_from_slice(&200u32.to_le_bytes())),
        ("entry size 256", |s| s[84..88].copy_from_slice(&256u32.to_le_bytes())),
        ("huge entry count", |s| s[80..84].copy_from_slice(&u32::MAX.to_le_bytes())),
        ("entries past the end", |s| s[72..80].copy_from_slice(&u64::MAX.to_le_bytes())),
        ("usable past the end", |s| s[48..56].copy_from_slice(&u64::MAX.to_le_bytes())),
    ];
    for (name, edit) in cases {
        let path = image(&name.replace(' ', "-"));
        edit_header(&path, 1, edit);
        edit_header(&path, last, edit);
        let result = read_gpt(&mut File::open(&path).unwrap());
        assert!(result.is_err(), "{name} accepted");
    }
}

#[test]
fn random_bytes_are_errors_not_panics() {
    let mut random = XorShift::new(0x2545f4914f6cdd1d);
    for round in 0..300 {
        let mut disk = random.bytes(64 * 1024);
        if round % 2 == 0 {
            disk[512..520].copy_from_slice(b"EFI PART");
        }
        assert!(read_gpt(&mut std::io::Cursor::new(disk)).is_err());
    }
}

/// A name is whatever the disk's writer chose, control characters included: keel reads it
/// as it is, and `printable` is what makes it safe to show.
#[test]
fn control_characters_in_names_are_escaped_for_display() {
    let path = image("control-names");
    let mut gpt = keel_disk::read_gpt(&mut std::fs::File::open(&path).unwrap()).unwrap();
    let hostile = "ROOT\u{1b}[2J\nkeel: forged\u{7f}\u{9b}";
    gpt.partitions.iter_mut().filter(|p| p.name == "ROOT").for_each(|p| p.name = hostile.to_string());
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    keel_disk::write_gpt(&mut file, gpt.disk_guid, &gpt.partitions).unwrap();
    let read = keel_disk::read_gpt(&mut std::fs::File::open(&path).unwrap()).unwrap();
    let name = &read.partition(9).unwrap().name;
    assert_eq!(name, hostile);
    let shown = keel_disk::printable(name);
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    assert_eq!(shown, "ROOT\\u{1b}[2J\\u{a}keel: forged\\u{7f}\\u{9b}");
}

/// Two partitions of one table with one name or one GUID: a lookup is an error naming both.
#[test]
fn lookups_refuse_two_partitions_with_one_name_or_guid() {
    let path = image("ambiguous-names");
    let mut gpt = keel_disk::read_gpt(&mut std::fs::File::open(&path).unwrap()).unwrap();
    let root_guid = gpt.partition(9).unwrap().guid;
    for p in gpt.partitions.iter_mut().filter(|p| p.number == 6) {
        p.name = "ROOT".into();
        p.guid = root_guid;
    }
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    keel_disk::write_gpt(&mut file, gpt.disk_guid, &gpt.partitions).unwrap();
    let read = keel_disk::read_gpt(&mut std::fs::File::open(&path).unwrap()).unwrap();
    let by_name = read.by_name("ROOT").unwrap_err();
    assert_eq!(by_name.numbers, [6, 9]);
    assert!(by_name.to_string().contains("ambiguous"), "{by_name}");
    assert_eq!(read.by_guid(root_guid).unwrap_err().numbers, [6, 9]);
    assert_eq!(read.by_name("USR-A").unwrap().map(|p| p.number), Some(3));
}

/// A primary that names itself (or any sector before the partitions' end) as its backup
/// must not count as both copies: the real backup is looked for at the disk's end, and a
/// table without one is rewritten.
#[test]
fn a_primary_cannot_be_its_own_backup() {
    let path = image("self-backup");
    let len = fs::metadata(&path).unwrap().len();
    edit_header(&path, 1, |sector| sector[32..40].copy_from_slice(&1u64.to_le_bytes()));
    overwrite(&path, len - SECTOR_SIZE, &[0u8; 512]);
    let gpt = read_gpt(&mut File::open(&path).unwrap()).unwrap();
    assert!(gpt.primary_intact && !gpt.backup_intact && !gpt.copies_agree, "{gpt:?}");
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    assert!(keel_disk::repair_table(&mut file, None).unwrap(), "a table without a real backup was left as it was");
    let repaired = read_gpt(&mut File::open(&path).unwrap()).unwrap();
    assert!(repaired.backup_intact && repaired.copies_agree && repaired.backup_lba == len / SECTOR_SIZE - 1);
}
