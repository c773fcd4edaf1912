use crate::crc32::crc32;
use crate::Guid;
use anyhow::{bail, ensure, Context};
use std::io::{Read, Seek, SeekFrom, Write};

/// keel handles 512-byte logical sectors: virtio, image files and most disks.
pub const SECTOR_SIZE: u64 = 512;
const SIGNATURE: &[u8; 8] = b"EFI PART";
const HEADER_SIZE: usize = 92;
const ENTRY_SIZE: usize = 128;
const ENTRY_COUNT: usize = 128;
const ENTRY_ARRAY_SECTORS: u64 = (ENTRY_SIZE * ENTRY_COUNT) as u64 / SECTOR_SIZE;
/// No legitimate table needs more; a header asking for more is corrupt or hostile.
const MAX_ENTRY_ARRAY_BYTES: u64 = 1 << 20;
const NAME_UNITS: usize = 36;

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
    pub fn start_bytes(&self) -> u64 {
        self.first_lba * SECTOR_SIZE
    }

    pub fn size_bytes(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR_SIZE
    }
}

/// A partition table as read from a disk, with which of its two copies were intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpt {
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

/// A table made for a bigger disk than the one it is on: the image was written to a disk
/// too small for it. Nothing can fix that but a bigger disk, so waiting is pointless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmallerThanImage {
    pub table_sectors: u64,
    pub disk_sectors: u64,
}

impl std::fmt::Display for SmallerThanImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the table was made for a disk of at least {} sectors, but this one has {}: the disk is smaller than the image",
            self.table_sectors, self.disk_sectors
        )
    }
}

impl std::error::Error for SmallerThanImage {}

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

fn parse_header(sector: &[u8; SECTOR_SIZE as usize], expected_lba: u64, disk_sectors: u64) -> anyhow::Result<Header> {
    ensure!(&sector[..8] == SIGNATURE, "no \"EFI PART\" signature");
    let header_size = u32_at(sector, 12) as usize;
    ensure!((HEADER_SIZE..=SECTOR_SIZE as usize).contains(&header_size), "header size {header_size} is out of range");
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
    let array_end = header.entries_lba.saturating_add(array_bytes.div_ceil(SECTOR_SIZE));
    ensure!(header.first_usable <= header.last_usable, "usable sectors {}..={} are backwards", header.first_usable, header.last_usable);
    if header.last_usable >= disk_sectors {
        return Err(SmallerThanImage { table_sectors: header.last_usable.saturating_add(1), disk_sectors }.into());
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

fn read_copy(dev: &mut (impl Read + Seek), lba: u64, disk_sectors: u64) -> anyhow::Result<(Header, Vec<GptPartition>)> {
    let mut sector = [0u8; SECTOR_SIZE as usize];
    read_at(dev, lba * SECTOR_SIZE, &mut sector).context("cannot read the header")?;
    let header = parse_header(&sector, lba, disk_sectors)?;
    let mut array = vec![0u8; header.entry_count as usize * header.entry_size as usize];
    read_at(dev, header.entries_lba * SECTOR_SIZE, &mut array).context("cannot read the entry array")?;
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

pub(crate) fn disk_sectors(dev: &mut impl Seek) -> anyhow::Result<u64> {
    let bytes = dev.seek(SeekFrom::End(0)).context("cannot find the disk size")?;
    ensure!(bytes >= 3 * SECTOR_SIZE, "the disk is only {bytes} bytes: too small for a partition table");
    Ok(bytes / SECTOR_SIZE)
}

/// Reads the partition table from the primary copy, or from the backup when the primary
/// is damaged. Both damaged, or the two disagreeing about the layout, is an error.
pub fn read_gpt(dev: &mut (impl Read + Seek)) -> anyhow::Result<Gpt> {
    read_gpt_of_image(dev, None)
}

/// `read_gpt`, also trying the one sector where an image of `image_sectors` sectors keeps
/// its backup header when it was written to a bigger disk and nothing has moved the backup
/// to the disk's end yet. Only that sector: a search of the disk for headers would find old
/// ones (of a disk reused for something else, or planted in a file) and cost a read per
/// MiB of every disk.
pub fn read_gpt_of_image(dev: &mut (impl Read + Seek), image_sectors: Option<u64>) -> anyhow::Result<Gpt> {
    let sectors = disk_sectors(dev)?;
    let primary = read_copy(dev, 1, sectors);
    let backup_lba = match &primary {
        // A backup lies past the usable area: a primary naming itself (or any sector
        // before its partitions) as its backup would count as both copies.
        Ok((header, _)) if header.alternate_lba < sectors && header.alternate_lba > header.last_usable => header.alternate_lba,
        _ => sectors - 1,
    };
    let mut backup = read_copy(dev, backup_lba, sectors);
    if let (Err(_), Err(_), Some(image_sectors)) = (&primary, &backup, image_sectors)
        && (2..sectors).contains(&image_sectors)
        && let Ok(found) = read_copy(dev, image_sectors - 1, sectors)
    {
        backup = Ok(found);
    }
    // An intact primary wins, as in firmware: after a power cut between writing the backup
    // and the primary, both are intact and the primary is the table the disk booted with.
    let (header, partitions) = match (&primary, &backup) {
        (Ok((header, partitions)), _) | (Err(_), Ok((header, partitions))) => (header, partitions),
        (Err(primary_error), Err(backup_error)) => {
            let context = format!("no valid GPT: primary: {primary_error:#}; backup at sector {backup_lba}: {backup_error:#}");
            return Err(match primary_error.downcast_ref::<SmallerThanImage>() {
                Some(smaller) => anyhow::Error::new(*smaller).context(context),
                None => anyhow::anyhow!(context),
            });
        }
    };
    let mut sector0 = [0u8; SECTOR_SIZE as usize];
    let sector0_read = read_at(dev, 0, &mut sector0).is_ok();
    let protective_mbr_current = sector0_read && sector0[446..] == protective_mbr(sectors, &sector0)[446..];
    let protective = sector0_read && sector0[510..] == [0x55, 0xaa] && sector0[446..510].chunks_exact(16).any(|record| record[4] == 0xee);
    Ok(Gpt {
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

/// The first and last sector partitions may use on a disk of `disk_sectors` sectors,
/// with 128-entry arrays on both ends.
pub fn usable_range(disk_sectors: u64) -> (u64, u64) {
    // Saturating: a disk too small for the tables has nothing usable, and callers refuse it.
    (2 + ENTRY_ARRAY_SECTORS, disk_sectors.saturating_sub(2 + ENTRY_ARRAY_SECTORS))
}

/// Writes a protective MBR and both copies of a partition table whose entries keep their
/// numbers. The MBR depends only on the disk's size and goes first; then the backup,
/// then the primary, each made durable before the next starts, so a cut leaves an intact
/// primary or, with a torn primary, a whole backup at the disk's end. The MBR's boot code
/// and disk signature are kept.
pub fn write_gpt(dev: &mut impl DurableWrite, disk_guid: Guid, partitions: &[GptPartition]) -> anyhow::Result<()> {
    let sectors = disk_sectors(dev)?;
    ensure!(sectors > 2 * (2 + ENTRY_ARRAY_SECTORS), "a disk of {sectors} sectors cannot hold a GPT");
    let (first_usable, last_usable) = usable_range(sectors);
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
        let mut sector = [0u8; SECTOR_SIZE as usize];
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
    let mut sector0 = [0u8; SECTOR_SIZE as usize];
    dev.seek(SeekFrom::Start(0))?;
    dev.read_exact(&mut sector0).context("cannot read sector 0")?;
    write_at(dev, 0, &protective_mbr(sectors, &sector0))?;
    durable(dev)?;
    write_at(dev, last - ENTRY_ARRAY_SECTORS, &array)?;
    write_at(dev, last, &header(last, 1, last - ENTRY_ARRAY_SECTORS))?;
    durable(dev)?;
    write_at(dev, 2, &array)?;
    write_at(dev, 1, &header(1, last, 2))?;
    durable(dev)
}

fn write_at(dev: &mut (impl Write + Seek), lba: u64, bytes: &[u8]) -> anyhow::Result<()> {
    dev.seek(SeekFrom::Start(lba * SECTOR_SIZE))?;
    dev.write_all(bytes).with_context(|| format!("cannot write sector {lba}"))
}

fn durable(dev: &mut impl DurableWrite) -> anyhow::Result<()> {
    dev.flush().context("cannot flush the partition table")?;
    dev.make_durable().context("cannot make the partition table's writes durable")
}

/// Sector 0 with `current`'s boot code and disk signature and one 0xEE record covering the disk.
fn protective_mbr(disk_sectors: u64, current: &[u8; SECTOR_SIZE as usize]) -> [u8; SECTOR_SIZE as usize] {
    let mut mbr = [0u8; SECTOR_SIZE as usize];
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
