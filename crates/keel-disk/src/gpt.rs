use crate::crc32::crc32;
use crate::{Guid, SectorSize};
use anyhow::{bail, ensure, Context};
use std::io::{Read, Seek, SeekFrom, Write};

const SIGNATURE: &[u8; 8] = b"EFI PART";
const HEADER_SIZE: usize = 92;
const ENTRY_SIZE: usize = 128;
/// Entries of the tables keel writes, so partition numbers 1 to 128.
pub(crate) const ENTRY_COUNT: usize = 128;
/// The entry array keel writes: 16 KiB, so 32 sectors of 512 bytes or 4 of 4096.
const ENTRY_ARRAY_BYTES: u64 = (ENTRY_SIZE * ENTRY_COUNT) as u64;
/// The MBR is the first 512 bytes of sector 0 whatever the sector size; the rest of a
/// bigger sector is reserved (zero).
const MBR_BYTES: usize = 512;
/// No legitimate table needs more; a header asking for more is corrupt or hostile.
const MAX_ENTRY_ARRAY_BYTES: u64 = 1 << 20;
/// UTF-16 units of a partition name.
pub(crate) const NAME_UNITS: usize = 36;

/// One used entry of a partition table. `number` is its 1-based slot in the entry array,
/// which is what the kernel calls the partition (vda9 is number 9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptPartition {
    pub number: u32,
    pub type_guid: Guid,
    pub guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

impl GptPartition {
    /// Where the partition starts, on a disk of `sector_size` sectors (its table's:
    /// `Gpt::sector_size`).
    pub fn start_bytes(&self, sector_size: SectorSize) -> u64 {
        self.first_lba * sector_size.bytes()
    }

    pub fn size_bytes(&self, sector_size: SectorSize) -> u64 {
        (self.last_lba + 1 - self.first_lba) * sector_size.bytes()
    }
}

/// A partition table as read from a disk, with which of its two copies were intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpt {
    /// The sector size the table was read with: the unit of its LBAs.
    pub sector_size: SectorSize,
    pub disk_guid: Guid,
    pub first_usable: u64,
    pub last_usable: u64,
    pub partitions: Vec<GptPartition>,
    pub primary_intact: bool,
    pub backup_intact: bool,
    /// The sector the intact backup header was read from (meaningful when `backup_intact`).
    pub backup_lba: u64,
    /// Both copies intact, describing the same partitions and naming each other.
    pub copies_agree: bool,
    /// Sector 0 holds the protective MBR for this disk's size.
    pub protective_mbr_current: bool,
    /// Sector 0 is a protective MBR of some size (a 0xEE record and the boot signature):
    /// the disk was partitioned with GPT, not reused for something that wiped its start.
    pub protective_mbr: bool,
}

impl Gpt {
    pub fn partition(&self, number: u32) -> Option<&GptPartition> {
        self.partitions.iter().find(|p| p.number == number)
    }

    /// The partition named `name`; two of that name is an error, not a first-come choice.
    pub fn by_name(&self, name: &str) -> Result<Option<&GptPartition>, Ambiguous> {
        self.only_one(|p| p.name == name, || format!("name {name:?}"))
    }

    /// The partition with unique GUID `guid`; two with it is an error.
    pub fn by_guid(&self, guid: Guid) -> Result<Option<&GptPartition>, Ambiguous> {
        self.only_one(|p| p.guid == guid, || format!("GUID {guid}"))
    }

    fn only_one(&self, matches: impl Fn(&GptPartition) -> bool, what: impl Fn() -> String) -> Result<Option<&GptPartition>, Ambiguous> {
        let mut found = self.partitions.iter().filter(|p| matches(p));
        let first = found.next();
        let others: Vec<u32> = found.map(|p| p.number).collect();
        match (first, others.is_empty()) {
            (Some(first), false) => Err(Ambiguous { what: what(), numbers: std::iter::once(first.number).chain(others).collect() }),
            (first, _) => Ok(first),
        }
    }
}

/// Two or more partitions of one table answer to one name or GUID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ambiguous {
    pub what: String,
    pub numbers: Vec<u32>,
}

impl std::fmt::Display for Ambiguous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let numbers: Vec<String> = self.numbers.iter().map(u32::to_string).collect();
        write!(f, "partitions {} of one table all have the {}: which one is meant is ambiguous", numbers.join(", "), self.what)
    }
}

impl std::error::Error for Ambiguous {}

/// `text` with every control character (terminal escapes, newlines, NUL) and invisible
/// format character (bidi overrides, zero-width spaces) written as a
/// `\u{..}` escape: names and labels come from disks, and whoever wrote the disk must not
/// be able to write to the console or forge log lines.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || is_invisible_format(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Unicode format characters that change how a line reads without being seen: bidi
/// overrides and isolates, zero-width characters, line and paragraph separators.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{ad}' | '\u{61c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// A rewrite that the table's shape rules out: no write can make it possible, so first
/// boot reports and skips it rather than failing every boot. Nothing was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedShape(pub String);

impl std::fmt::Display for UnsupportedShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; nothing was changed", self.0)
    }
}

impl std::error::Error for UnsupportedShape {}

/// Makes what was written so far durable before anything else is written: the order of
/// the table's writes is what power-cut safety rests on, and a disk's write cache keeps
/// no order of its own.
pub trait DurableWrite: Read + Write + Seek {
    fn make_durable(&mut self) -> std::io::Result<()>;
}

impl DurableWrite for std::fs::File {
    /// fdatasync: on a block device it also flushes the disk's volatile write cache.
    fn make_durable(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
}

/// Memory has no cache to flush: tests and fuzzing rewrite tables in a Vec.
impl DurableWrite for std::io::Cursor<Vec<u8>> {
    fn make_durable(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl DurableWrite for std::io::Cursor<&mut Vec<u8>> {
    fn make_durable(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The size in bytes of the image a table with `table_sectors` usable sectors (its last
/// usable sector plus one) was made for: the usable area, then the backup entry array and
/// header, as keel and every partitioning tool lay them out.
fn image_bytes_of_table(sector_size: SectorSize, table_sectors: u64) -> Option<u64> {
    table_sectors.checked_add(entry_array_sectors(sector_size) + 1)?.checked_mul(sector_size.bytes())
}

/// A table made for a bigger disk than the one it is on: the image was written to a disk
/// too small for it. Nothing can fix that but a bigger disk, so waiting is pointless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmallerThanImage {
    pub sector_size: SectorSize,
    /// The table reaches this many sectors into the disk (its last usable sector plus one).
    pub table_sectors: u64,
    pub disk_sectors: u64,
}

impl SmallerThanImage {
    /// Whether the table is that of an image of `image_bytes`.
    pub fn is_of_image(&self, image_bytes: u64) -> bool {
        image_bytes_of_table(self.sector_size, self.table_sectors) == Some(image_bytes)
    }
}

impl std::fmt::Display for SmallerThanImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the table was made for a disk of at least {} {}, but this one has {}: the disk is smaller than the image",
            self.table_sectors, self.sector_size, self.disk_sectors
        )
    }
}

impl std::error::Error for SmallerThanImage {}

/// A disk with no table for the sector size it is read with, but a valid primary header at
/// LBA 1 of the other size: an image built for disks of the other size. Its partitions are
/// not where a reader of this size (the kernel too) looks for them, so the disk cannot boot
/// as it is, however long one waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorSizeMismatch {
    /// The sector size the table was made for.
    pub table: SectorSize,
    /// The sector size the disk was read with: a block device's logical sector size.
    pub disk: SectorSize,
    /// The table reaches this many sectors of its own size into the disk.
    pub table_sectors: u64,
}

impl SectorSizeMismatch {
    /// Whether the table is that of an image of `image_bytes` (built for `table` sectors).
    pub fn is_of_image(&self, image_bytes: u64) -> bool {
        image_bytes_of_table(self.table, self.table_sectors) == Some(image_bytes)
    }
}

impl std::fmt::Display for SectorSizeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the disk has a GPT made for {}, but its logical sectors are {} bytes: the image was built for another sector size; \
             rebuild it with `keel image build --sector-size {}`",
            self.table,
            self.disk.bytes(),
            self.disk.bytes()
        )
    }
}

impl std::error::Error for SectorSizeMismatch {}

struct Header {
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    entry_count: u32,
    entry_size: u32,
    entries_crc: u32,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from(u32_at(bytes, at)) | u64::from(u32_at(bytes, at + 4)) << 32
}

fn guid_at(bytes: &[u8], at: usize) -> Guid {
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&bytes[at..at + 16]);
    Guid::from_gpt_bytes(&raw)
}

/// The header in `sector` (one whole sector of `sector_size`), read from sector `expected_lba`.
fn parse_header(sector: &[u8], sector_size: SectorSize, expected_lba: u64, disk_sectors: u64) -> anyhow::Result<Header> {
    ensure!(&sector[..8] == SIGNATURE, "no \"EFI PART\" signature");
    let header_size = u32_at(sector, 12) as usize;
    ensure!((HEADER_SIZE..=sector.len()).contains(&header_size), "header size {header_size} is out of range");
    let mut zeroed = sector[..header_size].to_vec();
    zeroed[16..20].fill(0);
    ensure!(crc32(&zeroed) == u32_at(sector, 16), "header checksum does not match");
    let header = Header {
        my_lba: u64_at(sector, 24),
        alternate_lba: u64_at(sector, 32),
        first_usable: u64_at(sector, 40),
        last_usable: u64_at(sector, 48),
        disk_guid: guid_at(sector, 56),
        entries_lba: u64_at(sector, 72),
        entry_count: u32_at(sector, 80),
        entry_size: u32_at(sector, 84),
        entries_crc: u32_at(sector, 88),
    };
    ensure!(header.my_lba == expected_lba, "header says it is at sector {}, found at {expected_lba}", header.my_lba);
    let entry_size = header.entry_size as usize;
    ensure!(
        entry_size >= ENTRY_SIZE && (entry_size / ENTRY_SIZE).is_power_of_two() && entry_size.is_multiple_of(ENTRY_SIZE),
        "entry size {entry_size} is not 128 times a power of two"
    );
    let array_bytes = u64::from(header.entry_count) * entry_size as u64;
    ensure!(array_bytes <= MAX_ENTRY_ARRAY_BYTES, "entry array of {array_bytes} bytes is implausibly large");
    let array_end = header.entries_lba.saturating_add(array_bytes.div_ceil(sector_size.bytes()));
    ensure!(header.first_usable <= header.last_usable, "usable sectors {}..={} are backwards", header.first_usable, header.last_usable);
    if header.last_usable >= disk_sectors {
        return Err(SmallerThanImage { sector_size, table_sectors: header.last_usable.saturating_add(1), disk_sectors }.into());
    }
    ensure!(
        header.entries_lba >= 2 && array_end <= disk_sectors && (array_end <= header.first_usable || header.entries_lba > header.last_usable),
        "entry array at sector {} overlaps the usable area or leaves the disk",
        header.entries_lba
    );
    Ok(header)
}

fn read_at(dev: &mut (impl Read + Seek), offset: u64, buffer: &mut [u8]) -> std::io::Result<()> {
    dev.seek(SeekFrom::Start(offset))?;
    dev.read_exact(buffer)
}

fn read_copy(dev: &mut (impl Read + Seek), sector_size: SectorSize, lba: u64, disk_sectors: u64) -> anyhow::Result<(Header, Vec<GptPartition>)> {
    let mut sector = vec![0u8; sector_size.bytes() as usize];
    read_at(dev, lba * sector_size.bytes(), &mut sector).context("cannot read the header")?;
    let header = parse_header(&sector, sector_size, lba, disk_sectors)?;
    let mut array = vec![0u8; header.entry_count as usize * header.entry_size as usize];
    read_at(dev, header.entries_lba * sector_size.bytes(), &mut array).context("cannot read the entry array")?;
    ensure!(crc32(&array) == header.entries_crc, "entry array checksum does not match");
    let partitions = parse_entries(&array, &header)?;
    Ok((header, partitions))
}

fn parse_entries(array: &[u8], header: &Header) -> anyhow::Result<Vec<GptPartition>> {
    let mut partitions: Vec<GptPartition> = Vec::new();
    for (index, entry) in array.chunks_exact(header.entry_size as usize).enumerate() {
        let type_guid = guid_at(entry, 0);
        if type_guid == Guid::ZERO {
            continue;
        }
        let units: Vec<u16> =
            entry[56..56 + 2 * NAME_UNITS].chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]])).take_while(|&unit| unit != 0).collect();
        let partition = GptPartition {
            number: index as u32 + 1,
            type_guid,
            guid: guid_at(entry, 16),
            first_lba: u64_at(entry, 32),
            last_lba: u64_at(entry, 40),
            attributes: u64_at(entry, 48),
            name: String::from_utf16_lossy(&units),
        };
        check_range(&partition, header.first_usable, header.last_usable)?;
        partitions.push(partition);
    }
    check_no_overlap(&partitions)?;
    Ok(partitions)
}

fn check_range(p: &GptPartition, first_usable: u64, last_usable: u64) -> anyhow::Result<()> {
    ensure!(
        p.first_lba <= p.last_lba && p.first_lba >= first_usable && p.last_lba <= last_usable,
        "partition {} ({:?}) spans sectors {}..={}, outside the usable {first_usable}..={last_usable}",
        p.number,
        p.name,
        p.first_lba,
        p.last_lba
    );
    Ok(())
}

/// No two partitions share a sector: sorted by start, each must end before the next
/// begins. O(n log n), since a hostile header may ask for thousands of entries.
fn check_no_overlap(partitions: &[GptPartition]) -> anyhow::Result<()> {
    let mut by_start: Vec<&GptPartition> = partitions.iter().collect();
    by_start.sort_by_key(|p| (p.first_lba, p.number));
    for pair in by_start.windows(2) {
        if pair[1].first_lba <= pair[0].last_lba {
            let (low, high) = (pair[0].number.min(pair[1].number), pair[0].number.max(pair[1].number));
            bail!("partitions {low} and {high} overlap");
        }
    }
    Ok(())
}

pub(crate) fn disk_sectors(dev: &mut impl Seek, sector_size: SectorSize) -> anyhow::Result<u64> {
    let bytes = dev.seek(SeekFrom::End(0)).context("cannot find the disk size")?;
    ensure!(bytes >= 3 * sector_size.bytes(), "the disk is only {bytes} bytes: too small for a partition table");
    Ok(bytes / sector_size.bytes())
}

/// Reads the partition table of a disk of `sector_size` logical sectors from the primary
/// copy, or from the backup when the primary is damaged. Both damaged is an error; so is a
/// disk with only a table made for the other sector size (`SectorSizeMismatch`).
pub fn read_gpt(dev: &mut (impl Read + Seek), sector_size: SectorSize) -> anyhow::Result<Gpt> {
    read_gpt_of_image(dev, sector_size, None)
}

/// The table at LBA 1 of the other sector size than `read_with`, if a valid header is
/// there: one more sector read, and only for a disk without an intact primary of its own.
fn table_of_other_size(dev: &mut (impl Read + Seek), read_with: SectorSize) -> Option<SectorSizeMismatch> {
    let other = read_with.other();
    let disk_bytes = dev.seek(SeekFrom::End(0)).ok()?;
    let mut sector = vec![0u8; other.bytes() as usize];
    read_at(dev, other.bytes(), &mut sector).ok()?;
    let header = parse_header(&sector, other, 1, disk_bytes / other.bytes()).ok()?;
    Some(SectorSizeMismatch { table: other, disk: read_with, table_sectors: header.last_usable.saturating_add(1) })
}

/// `read_gpt`, also trying the one sector where an image of `image_bytes` keeps its backup
/// header when it was written to a bigger disk and nothing has moved the backup to the
/// disk's end yet: the image's last sector of `sector_size`. Only that sector: a search of
/// the disk for headers would find old ones (of a disk reused for something else, or
/// planted in a file) and cost a read per MiB of every disk.
pub fn read_gpt_of_image(dev: &mut (impl Read + Seek), sector_size: SectorSize, image_bytes: Option<u64>) -> anyhow::Result<Gpt> {
    let sectors = disk_sectors(dev, sector_size)?;
    let image_sectors = image_bytes.filter(|bytes| bytes.is_multiple_of(sector_size.bytes())).map(|bytes| bytes / sector_size.bytes());
    let primary = read_copy(dev, sector_size, 1, sectors);
    let backup_lba = match &primary {
        // A backup lies past the usable area: a primary naming itself (or any sector
        // before its partitions) as its backup would count as both copies.
        Ok((header, _)) if header.alternate_lba < sectors && header.alternate_lba > header.last_usable => header.alternate_lba,
        _ => sectors - 1,
    };
    let mut backup = read_copy(dev, sector_size, backup_lba, sectors);
    if let (Err(_), Err(_), Some(image_sectors)) = (&primary, &backup, image_sectors)
        && (2..sectors).contains(&image_sectors)
        && let Ok(found) = read_copy(dev, sector_size, image_sectors - 1, sectors)
    {
        backup = Ok(found);
    }
    // An intact primary wins, as in firmware: after a power cut between writing the backup
    // and the primary, both are intact and the primary is the table the disk booted with.
    let (header, partitions) = match (&primary, &backup) {
        (Ok((header, partitions)), _) => (header, partitions),
        // A backup of this size behind a valid primary of the other size is a stale one, of
        // an earlier install the other image was written over: not a table to boot, and
        // above all not one to repair the disk from.
        (Err(_), Ok(_)) if let Some(mismatch) = table_of_other_size(dev, sector_size) => return Err(mismatch.into()),
        (Err(_), Ok((header, partitions))) => (header, partitions),
        (Err(primary_error), Err(backup_error)) => {
            if let Some(mismatch) = table_of_other_size(dev, sector_size) {
                return Err(mismatch.into());
            }
            let context = format!("no valid GPT: primary: {primary_error:#}; backup at sector {backup_lba}: {backup_error:#}");
            return Err(match primary_error.downcast_ref::<SmallerThanImage>() {
                Some(smaller) => anyhow::Error::new(*smaller).context(context),
                None => anyhow::anyhow!(context),
            });
        }
    };
    let mut sector0 = vec![0u8; sector_size.bytes() as usize];
    let sector0_read = read_at(dev, 0, &mut sector0).is_ok();
    let protective_mbr_current = sector0_read && sector0[446..] == protective_mbr(sectors, &sector0)[446..];
    let protective = sector0_read && sector0[510..MBR_BYTES] == [0x55, 0xaa] && sector0[446..510].chunks_exact(16).any(|record| record[4] == 0xee);
    Ok(Gpt {
        sector_size,
        protective_mbr_current,
        protective_mbr: protective,
        disk_guid: header.disk_guid,
        first_usable: header.first_usable,
        last_usable: header.last_usable,
        partitions: partitions.clone(),
        primary_intact: primary.is_ok(),
        backup_intact: backup.is_ok(),
        backup_lba: backup.as_ref().map_or(0, |(header, _)| header.my_lba),
        copies_agree: match (&primary, &backup) {
            // Each names the other, as firmware and the kernel follow them: a primary whose
            // backup pointer leads nowhere is not a whole table, however intact the backup is.
            (Ok((a, a_parts)), Ok((b, b_parts))) => {
                a_parts == b_parts && a.disk_guid == b.disk_guid && a.alternate_lba == b.my_lba && b.alternate_lba == a.my_lba
            }
            _ => false,
        },
    })
}

/// Sectors of one 128-entry array: 32 of 512 bytes, 4 of 4096.
fn entry_array_sectors(sector_size: SectorSize) -> u64 {
    ENTRY_ARRAY_BYTES / sector_size.bytes()
}

/// The first and last sector partitions may use on a disk of `disk_sectors` sectors of
/// `sector_size`, with 128-entry arrays on both ends: 34 and the disk's last 33 sectors
/// go to the tables at 512 bytes, 6 and the last 5 at 4096.
pub fn usable_range(disk_sectors: u64, sector_size: SectorSize) -> (u64, u64) {
    let table_sectors = 2 + entry_array_sectors(sector_size);
    // Saturating: a disk too small for the tables has nothing usable, and callers refuse it.
    (table_sectors, disk_sectors.saturating_sub(table_sectors))
}

/// Writes a protective MBR and both copies of a partition table whose entries keep their
/// numbers. The MBR depends only on the disk's size and goes first; then the backup,
/// then the primary, each made durable before the next starts, so a cut leaves an intact
/// primary or, with a torn primary, a whole backup at the disk's end. The MBR's boot code
/// and disk signature are kept. Every LBA counts sectors of `sector_size`, and every write
/// is of whole sectors.
pub fn write_gpt(dev: &mut impl DurableWrite, sector_size: SectorSize, disk_guid: Guid, partitions: &[GptPartition]) -> anyhow::Result<()> {
    let sectors = disk_sectors(dev, sector_size)?;
    let array_sectors = entry_array_sectors(sector_size);
    ensure!(sectors > 2 * (2 + array_sectors), "a disk of {sectors} {sector_size} cannot hold a GPT");
    let (first_usable, last_usable) = usable_range(sectors, sector_size);
    let mut array = vec![0u8; ENTRY_SIZE * ENTRY_COUNT];
    for (index, p) in partitions.iter().enumerate() {
        if !(1..=ENTRY_COUNT as u32).contains(&p.number) {
            return Err(UnsupportedShape(format!("partition {} is numbered past the 128 entries keel writes", p.number)).into());
        }
        ensure!(partitions[..index].iter().all(|o| o.number != p.number), "partition number {} is used twice", p.number);
        // The table keel writes has 128-entry arrays at both ends; a partition the disk's
        // own (smaller) arrays left room for may not fit inside them.
        check_range(p, first_usable, last_usable).map_err(|error| UnsupportedShape(format!("{error:#}")))?;
        let units: Vec<u16> = p.name.encode_utf16().collect();
        ensure!(units.len() <= NAME_UNITS, "partition name {:?} is longer than {NAME_UNITS} UTF-16 units", p.name);
        let entry = &mut array[(p.number as usize - 1) * ENTRY_SIZE..][..ENTRY_SIZE];
        entry[0..16].copy_from_slice(&p.type_guid.to_gpt_bytes());
        entry[16..32].copy_from_slice(&p.guid.to_gpt_bytes());
        entry[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        entry[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        entry[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        for (i, unit) in units.iter().enumerate() {
            entry[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }
    check_no_overlap(partitions)?;
    let array_crc = crc32(&array);
    let header = |my_lba: u64, alternate_lba: u64, entries_lba: u64| {
        let mut sector = vec![0u8; sector_size.bytes() as usize];
        sector[..8].copy_from_slice(SIGNATURE);
        sector[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        sector[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        sector[24..32].copy_from_slice(&my_lba.to_le_bytes());
        sector[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        sector[40..48].copy_from_slice(&first_usable.to_le_bytes());
        sector[48..56].copy_from_slice(&last_usable.to_le_bytes());
        sector[56..72].copy_from_slice(&disk_guid.to_gpt_bytes());
        sector[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        sector[80..84].copy_from_slice(&(ENTRY_COUNT as u32).to_le_bytes());
        sector[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        sector[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32(&sector[..HEADER_SIZE]);
        sector[16..20].copy_from_slice(&crc.to_le_bytes());
        sector
    };
    let last = sectors - 1;
    let mut sector0 = vec![0u8; sector_size.bytes() as usize];
    dev.seek(SeekFrom::Start(0))?;
    dev.read_exact(&mut sector0).context("cannot read sector 0")?;
    write_at(dev, sector_size, 0, &protective_mbr(sectors, &sector0))?;
    durable(dev)?;
    write_at(dev, sector_size, last - array_sectors, &array)?;
    write_at(dev, sector_size, last, &header(last, 1, last - array_sectors))?;
    durable(dev)?;
    write_at(dev, sector_size, 2, &array)?;
    write_at(dev, sector_size, 1, &header(1, last, 2))?;
    durable(dev)
}

fn write_at(dev: &mut (impl Write + Seek), sector_size: SectorSize, lba: u64, bytes: &[u8]) -> anyhow::Result<()> {
    dev.seek(SeekFrom::Start(lba * sector_size.bytes()))?;
    dev.write_all(bytes).with_context(|| format!("cannot write sector {lba} ({sector_size})"))
}

fn durable(dev: &mut impl DurableWrite) -> anyhow::Result<()> {
    dev.flush().context("cannot flush the partition table")?;
    dev.make_durable().context("cannot make the partition table's writes durable")
}

/// Sector 0 (as long as `current`, one logical sector) with `current`'s boot code and disk
/// signature and one 0xEE record covering the disk's `disk_sectors` logical sectors.
fn protective_mbr(disk_sectors: u64, current: &[u8]) -> Vec<u8> {
    let mut mbr = vec![0u8; current.len()];
    mbr[..446].copy_from_slice(&current[..446]);
    let record = &mut mbr[446..462];
    // Status 0, CHS start 0/0/2, type 0xEE, CHS end saturated, LBA 1, size capped at 32 bits.
    record[..8].copy_from_slice(&[0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff]);
    record[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(disk_sectors - 1).unwrap_or(u32::MAX);
    record[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    mbr
}
