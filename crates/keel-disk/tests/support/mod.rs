//! Disk images and reference tools shared by keel-disk's integration tests.
#![allow(dead_code)] // each test file uses its own subset

use keel_disk::{flatcar_layout, plan_layout, read_gpt, write_gpt, Gpt, Guid, LayoutSizes, SectorSize};
use keel_test_support::{as_disk, process_dir, run};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MIB: u64 = 1 << 20;

pub fn small_sizes() -> LayoutSizes {
    LayoutSizes { esp: 2 * MIB, bios_boot: MIB, usr: 8 * MIB, oem: 2 * MIB, oem_config: MIB, root: 4 * MIB }
}

/// A Flatcar-layout image file of `small_sizes()`, its table in sectors of `sector_size`.
pub fn image(name: &str, sector_size: SectorSize) -> PathBuf {
    let path = process_dir(env!("CARGO_TARGET_TMPDIR")).join(format!("gpt-{name}-{}.img", sector_size.bytes()));
    let layout = plan_layout(&flatcar_layout(&small_sizes()).unwrap(), sector_size, |spec| Guid::from_random_bytes([spec.number as u8; 16])).unwrap();
    let file = File::create(&path).unwrap();
    file.set_len(layout.disk_bytes).unwrap();
    let mut file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    write_gpt(&mut file, sector_size, Guid::parse("00000000-0000-0000-0000-000000000001").unwrap(), &layout.partitions).unwrap();
    path
}

/// The table of the image file at `path`, read by keel in sectors of `sector_size`.
pub fn table(path: &Path, sector_size: SectorSize) -> Gpt {
    read_gpt(&mut File::open(path).unwrap(), sector_size).unwrap()
}

/// gdisk's `sgdisk` on the image file `path` as a disk of `sector_size` logical sectors.
pub fn sgdisk(args: &[&str], path: &Path, sector_size: SectorSize) -> String {
    as_disk(path, sector_size.bytes(), |disk| run("sgdisk", &[args, &[disk.to_str().unwrap()]].concat()))
}

/// Debian's `cgpt` (vboot-utils), the reference for the gptprio bits, on `disk`: an image
/// file (which cgpt reads in 512-byte sectors) or a block device (in its logical sectors).
/// Returns its output whether it succeeded or not: some of its refusals are exit status 0.
pub fn cgpt(args: &[&str], disk: &Path) -> std::process::Output {
    Command::new("cgpt").args(args).arg(disk).output().expect("cgpt must be installed; `cargo xtask setup` installs it")
}

/// One partition entry as a reader shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryView {
    pub number: u32,
    pub type_guid: String,
    pub guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

/// A whole table as a reader shows it, in LBAs of its sector size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableView {
    pub sector_bytes: u64,
    pub disk_guid: String,
    pub first_usable: u64,
    pub last_usable: u64,
    /// Where the primary header says the backup header is, and where that header is.
    pub backup_header_lba: u64,
    pub primary_entries_lba: u64,
    pub backup_entries_lba: u64,
    pub entries: Vec<EntryView>,
}

/// keel's reading of the image file at `path` in sectors of `sector_size`, with the entry
/// arrays where every table keel reads as whole has them: right after the primary header,
/// and right before the backup header.
pub fn keel_view(path: &Path, sector_size: SectorSize) -> TableView {
    let gpt = table(path, sector_size);
    assert!(gpt.primary_intact && gpt.backup_intact && gpt.copies_agree, "{gpt:?}");
    TableView {
        sector_bytes: gpt.sector_size.bytes(),
        disk_guid: gpt.disk_guid.to_string(),
        first_usable: gpt.first_usable,
        last_usable: gpt.last_usable,
        backup_header_lba: gpt.backup_lba,
        primary_entries_lba: 2,
        backup_entries_lba: gpt.backup_lba - 128 * 128 / sector_size.bytes(),
        entries: gpt
            .partitions
            .iter()
            .map(|p| EntryView {
                number: p.number,
                type_guid: p.type_guid.to_string(),
                guid: p.guid.to_string(),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                attributes: p.attributes,
                name: p.name.clone(),
            })
            .collect(),
    }
}

/// The value after the first `label` in `text`, up to `end`.
fn field<'a>(text: &'a str, label: &str, end: &str) -> &'a str {
    let rest = text.split_once(label).unwrap_or_else(|| panic!("no {label:?} in:\n{text}")).1;
    rest.trim_start().split(end).next().unwrap().trim()
}

fn number(text: &str, label: &str, end: &str) -> u64 {
    field(text, label, end).parse().unwrap_or_else(|_| panic!("{label:?} is not a number in:\n{text}"))
}

/// The same as the references read it, the image file at `path` a disk of `sector_size`
/// sectors: sgdisk (`-p`, `-i` for each partition) for the sector size, disk GUID, usable
/// sectors and entries, cgpt (`show -d`) for where both headers and entry arrays are.
/// Both must find the table whole (`sgdisk -v`; cgpt, which checks both headers and entry
/// arrays, warns of nothing).
pub fn reference_view(path: &Path, sector_size: SectorSize) -> TableView {
    as_disk(path, sector_size.bytes(), |disk| {
        let sgdisk = |args: &[&str]| run("sgdisk", &[args, &[disk.to_str().unwrap()]].concat());
        let verify = sgdisk(&["-v"]);
        assert!(verify.contains("No problems found"), "{verify}");
        let print = sgdisk(&["-p"]);
        let numbers: Vec<u32> = print
            .lines()
            .skip_while(|line| !line.starts_with("Number"))
            .skip(1)
            .filter_map(|line| line.split_whitespace().next().and_then(|n| n.parse().ok()))
            .collect();
        let entries = numbers
            .into_iter()
            .map(|n| {
                let info = sgdisk(&["-i", &n.to_string()]);
                EntryView {
                    number: n,
                    type_guid: field(&info, "Partition GUID code:", " ").to_ascii_lowercase(),
                    guid: field(&info, "Partition unique GUID:", "\n").to_ascii_lowercase(),
                    first_lba: number(&info, "First sector:", " "),
                    last_lba: number(&info, "Last sector:", " "),
                    attributes: u64::from_str_radix(field(&info, "Attribute flags:", "\n"), 16).unwrap(),
                    name: field(&info, "Partition name: '", "'\n").to_string(),
                }
            })
            .collect();
        let show = cgpt(&["show", "-d"], disk);
        let text = String::from_utf8_lossy(&show.stdout);
        assert!(show.status.success() && show.stderr.is_empty() && !text.contains("INVALID") && !text.contains("WARNING"), "cgpt show -d: {text}");
        let (primary, backup) = text.split_once("Sec GPT header").unwrap_or_else(|| panic!("cgpt shows no backup header:\n{text}"));
        let backup_table_line = primary.lines().find(|line| line.contains("Sec GPT table")).unwrap();
        // "Sector size (logical): 512 bytes" for a file, "(logical/physical): 4096/4096 bytes" for a device.
        let sector_bytes = field(field(&print, "Sector size (logical", "\n"), ":", " ").split('/').next().unwrap().parse().unwrap();
        assert_eq!(number(&text, "LBA Size (bytes):", "\n"), sector_bytes, "sgdisk and cgpt see different sector sizes");
        let view = TableView {
            sector_bytes,
            disk_guid: field(&print, "Disk identifier (GUID):", "\n").to_ascii_lowercase(),
            first_usable: number(&print, "First usable sector is", ","),
            last_usable: number(&print, "last usable sector is", "\n"),
            backup_header_lba: number(primary, "Alternate LBA:", "\n"),
            primary_entries_lba: number(primary, "Entries LBA:", "\n"),
            backup_entries_lba: number(backup, "Entries LBA:", "\n"),
            entries,
        };
        assert_eq!(number(backup, "My LBA:", "\n"), view.backup_header_lba, "the backup header is not where the primary says:\n{text}");
        assert_eq!(backup_table_line.split_whitespace().next().unwrap().parse::<u64>().unwrap(), view.backup_entries_lba);
        view
    })
}
