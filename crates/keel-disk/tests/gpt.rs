//! keel's GPT against gdisk's `sgdisk` and Chrome OS's `cgpt`, the field's references, at
//! both logical sector sizes (4096 through a loop device of that sector size, so these
//! tests need root), and against damage.

use keel_disk::{read_gpt, write_gpt, SectorSize, SectorSizeMismatch};
use std::fs::{self, File};
use std::path::Path;

mod support;
use keel_test_support::{damage_both_gpts, overwrite, process_dir, XorShift};
use support::{image, keel_view, reference_view, sgdisk, table, MIB};

#[test]
fn the_references_read_keels_table_as_keel_does() {
    for sector_size in SectorSize::ALL {
        let path = image("valid", sector_size);
        let ours = keel_view(&path, sector_size);
        assert_eq!(reference_view(&path, sector_size), ours, "{sector_size}");

        // The geometry the sector size dictates: 16 KiB entry arrays, 1 MiB alignment.
        let sector = sector_size.bytes();
        let array_sectors = 16384 / sector;
        let disk_sectors = fs::metadata(&path).unwrap().len() / sector;
        assert_eq!((ours.first_usable, ours.last_usable), (2 + array_sectors, disk_sectors - 2 - array_sectors), "{sector_size}");
        assert_eq!((ours.backup_header_lba, ours.backup_entries_lba), (disk_sectors - 1, disk_sectors - 1 - array_sectors));
        assert_eq!(ours.disk_guid, "00000000-0000-0000-0000-000000000001");
        let numbers: Vec<u32> = ours.entries.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 6, 7, 9]);
        assert!(ours.entries.iter().all(|p| (p.first_lba * sector).is_multiple_of(MIB) && ((p.last_lba + 1) * sector).is_multiple_of(MIB)));
        let usr_a = ours.entries.iter().find(|p| p.name == "USR-A").unwrap();
        assert_eq!(usr_a.guid, "7130c94a-213a-4e5a-8e26-6cce9662f132");
        assert_eq!(usr_a.attributes, 1 << 48 | 1 << 56);
    }
}

#[test]
fn the_protective_mbr_counts_logical_sectors() {
    for sector_size in SectorSize::ALL {
        let path = image("mbr", sector_size);
        let bytes = fs::read(&path).unwrap();
        let record = &bytes[446..462];
        assert_eq!(record[4], 0xee);
        assert_eq!(u32::from_le_bytes(record[8..12].try_into().unwrap()), 1, "starts at LBA 1");
        let sectors = bytes.len() as u64 / sector_size.bytes();
        assert_eq!(u64::from(u32::from_le_bytes(record[12..16].try_into().unwrap())), sectors - 1, "{sector_size}");
        assert_eq!(bytes[510..512], [0x55, 0xaa]);
        // The rest of a bigger sector 0 is reserved: zero.
        assert!(bytes[512..sector_size.bytes() as usize].iter().all(|&b| b == 0));
    }
}

#[test]
fn reads_tables_that_sgdisk_wrote() {
    for sector_size in SectorSize::ALL {
        let path = process_dir(env!("CARGO_TARGET_TMPDIR")).join(format!("gpt-by-sgdisk-{}.img", sector_size.bytes()));
        fs::write(&path, vec![0u8; (16 * MIB) as usize]).unwrap();
        let partitions = ["-n", "2:0:+4M", "-c", "2:second", "-t", "2:8300", "-n", "5:0:+1M", "-c", "5:fifth", "-A", "5:set:60"];
        sgdisk(&[&["-o", "-U", "R"][..], &partitions].concat(), &path, sector_size);
        let ours = keel_view(&path, sector_size);
        assert_eq!(ours, reference_view(&path, sector_size), "{sector_size}");
        let names: Vec<(u32, &str)> = ours.entries.iter().map(|p| (p.number, p.name.as_str())).collect();
        assert_eq!(names, [(2, "second"), (5, "fifth")]);
        assert_eq!(table(&path, sector_size).partition(2).unwrap().size_bytes(sector_size), 4 * MIB);
        assert_eq!(ours.entries[1].attributes, 1 << 60);
    }
}

/// A table made for one sector size, read with the other, as on a disk the image was not
/// built for: not read as garbage or as no table, but refused with what to do.
#[test]
fn a_table_made_for_the_other_sector_size_is_refused_plainly() {
    for built_for in SectorSize::ALL {
        let read_with = built_for.other();
        let path = image("other-size", built_for);
        let error = read_gpt(&mut File::open(&path).unwrap(), read_with).unwrap_err();
        let mismatch = error.downcast_ref::<SectorSizeMismatch>().unwrap_or_else(|| panic!("{error:#}"));
        assert_eq!((mismatch.table, mismatch.disk), (built_for, read_with));
        assert!(mismatch.is_of_image(fs::metadata(&path).unwrap().len()));
        let expected = format!(
            "the disk has a GPT made for {}-byte sectors, but its logical sectors are {} bytes: the image was built for another sector size; \
             rebuild it with `keel image build --sector-size {}`",
            built_for.bytes(),
            read_with.bytes(),
            read_with.bytes()
        );
        assert_eq!(format!("{error:#}"), expected);
    }
    // Without a table of either size, the error is the plain one.
    let path = image("no-table", SectorSize::Bytes512);
    damage_both_gpts(&path, 512);
    for sector_size in SectorSize::ALL {
        let error = format!("{:#}", read_gpt(&mut File::open(&path).unwrap(), sector_size).unwrap_err());
        assert!(error.contains("no valid GPT") && !error.contains("made for"), "{error}");
    }
}

#[test]
fn damaged_primary_falls_back_to_the_backup() {
    for sector_size in SectorSize::ALL {
        let sector = sector_size.bytes();
        let path = image("primary-damaged", sector_size);
        overwrite(&path, sector + 40, &[0xff; 8]);
        let gpt = table(&path, sector_size);
        assert!(!gpt.primary_intact && gpt.backup_intact);
        assert_eq!(gpt.partitions.len(), 7);

        // Damage the primary entry array instead: its checksum no longer matches.
        let path = image("primary-entries-damaged", sector_size);
        overwrite(&path, 2 * sector + 60, b"x");
        let gpt = table(&path, sector_size);
        assert!(!gpt.primary_intact && gpt.backup_intact);
    }
}

#[test]
fn both_copies_damaged_is_a_clear_error() {
    for sector_size in SectorSize::ALL {
        let path = image("both-damaged", sector_size);
        damage_both_gpts(&path, sector_size.bytes());
        let error = format!("{:#}", read_gpt(&mut File::open(&path).unwrap(), sector_size).unwrap_err());
        assert!(error.contains("no valid GPT") && error.contains("signature"), "{error}");
    }
}

/// Re-signs a header after editing it, as a hostile disk would.
fn edit_header(path: &Path, sector_size: SectorSize, lba: u64, edit: impl Fn(&mut [u8])) {
    let sector = sector_size.bytes();
    let mut header = fs::read(path).unwrap()[(lba * sector) as usize..][..sector as usize].to_vec();
    edit(&mut header);
    header[16..20].fill(0);
    let crc = keel_disk::crc32(&header[..92]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    overwrite(path, lba * sector, &header);
}

#[test]
fn hostile_headers_are_errors_not_panics() {
    type Edit = fn(&mut [u8]);
    let cases: [(&str, Edit); 6] = [
        ("entry size 200", |s| s[84..88].copy_from_slice(&200u32.to_le_bytes())),
        ("entry size 256", |s| s[84..88].copy_from_slice(&256u32.to_le_bytes())),
        ("huge entry count", |s| s[80..84].copy_from_slice(&u32::MAX.to_le_bytes())),
        ("entries past the end", |s| s[72..80].copy_from_slice(&u64::MAX.to_le_bytes())),
        ("usable past the end", |s| s[48..56].copy_from_slice(&u64::MAX.to_le_bytes())),
        ("header larger than a sector", |s| s[12..16].copy_from_slice(&8192u32.to_le_bytes())),
    ];
    for sector_size in SectorSize::ALL {
        let len = fs::metadata(image("hostile-probe", sector_size)).unwrap().len();
        let last = len / sector_size.bytes() - 1;
        for (name, edit) in cases {
            let path = image(&name.replace(' ', "-"), sector_size);
            edit_header(&path, sector_size, 1, edit);
            edit_header(&path, sector_size, last, edit);
            for read_with in SectorSize::ALL {
                assert!(read_gpt(&mut File::open(&path).unwrap(), read_with).is_err(), "{name} accepted ({sector_size}, read with {read_with})");
            }
        }
    }
}

#[test]
fn random_bytes_are_errors_not_panics() {
    let mut random = XorShift::new(0x2545f4914f6cdd1d);
    for round in 0..600 {
        let mut disk = random.bytes(64 * 1024);
        // A signature at LBA 1 of either size, so header parsing gets its share.
        let at = [512, 4096][round % 2];
        if round % 4 < 2 {
            disk[at..at + 8].copy_from_slice(b"EFI PART");
        }
        for sector_size in SectorSize::ALL {
            assert!(read_gpt(&mut std::io::Cursor::new(&disk), sector_size).is_err());
        }
    }
}

/// A name is whatever the disk's writer chose, control characters included: keel reads it
/// as it is, and `printable` is what makes it safe to show.
#[test]
fn control_characters_in_names_are_escaped_for_display() {
    let sector_size = SectorSize::Bytes4096;
    let path = image("control-names", sector_size);
    let mut gpt = table(&path, sector_size);
    let hostile = "ROOT\u{1b}[2J\nkeel: forged\u{7f}\u{9b}";
    gpt.partitions.iter_mut().filter(|p| p.name == "ROOT").for_each(|p| p.name = hostile.to_string());
    let mut file = fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    write_gpt(&mut file, sector_size, gpt.disk_guid, &gpt.partitions).unwrap();
    let read = table(&path, sector_size);
    let name = &read.partition(9).unwrap().name;
    assert_eq!(name, hostile);
    let shown = keel_disk::printable(name);
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    assert_eq!(shown, "ROOT\\u{1b}[2J\\u{a}keel: forged\\u{7f}\\u{9b}");
}

/// Two partitions of one table with one name or one GUID: a lookup is an error naming both.
#[test]
fn lookups_refuse_two_partitions_with_one_name_or_guid() {
    let sector_size = SectorSize::Bytes512;
    let path = image("ambiguous-names", sector_size);
    let mut gpt = table(&path, sector_size);
    let root_guid = gpt.partition(9).unwrap().guid;
    for p in gpt.partitions.iter_mut().filter(|p| p.number == 6) {
        p.name = "ROOT".into();
        p.guid = root_guid;
    }
    let mut file = fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    write_gpt(&mut file, sector_size, gpt.disk_guid, &gpt.partitions).unwrap();
    let read = table(&path, sector_size);
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
    for sector_size in SectorSize::ALL {
        let sector = sector_size.bytes();
        let path = image("self-backup", sector_size);
        let len = fs::metadata(&path).unwrap().len();
        edit_header(&path, sector_size, 1, |header| header[32..40].copy_from_slice(&1u64.to_le_bytes()));
        overwrite(&path, len - sector, &vec![0u8; sector as usize]);
        let gpt = table(&path, sector_size);
        assert!(gpt.primary_intact && !gpt.backup_intact && !gpt.copies_agree, "{gpt:?}");
        let mut file = fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        assert!(keel_disk::repair_table(&mut file, sector_size, None).unwrap(), "a table without a real backup was left as it was");
        let repaired = table(&path, sector_size);
        assert!(repaired.backup_intact && repaired.copies_agree && repaired.backup_lba == len / sector - 1);
        assert_eq!(reference_view(&path, sector_size), keel_view(&path, sector_size));
    }
}
