//! A read-only lookup in a FAT filesystem (FAT12, FAT16, FAT32), answering "does this path
//! exist?" as the kernel's vfat would on a read-only mount with its defaults (codepage 437,
//! iocharset ascii): the first-boot flag is read this way on every boot, so later boots
//! neither load the FAT modules nor hand the ESP, which anyone with the disk can write,
//! to the kernel's parser.
//!
//! The ESP is untrusted: every size is checked, every loop is bounded by the volume's
//! cluster count, memory is a sector or two whatever the volume claims, and anything the
//! kernel would refuse to mount, or find broken on the way, is an error rather than an
//! answer.

use crate::SectorSize;
use std::io::{Read, Seek, SeekFrom};

/// What went wrong looking a path up; the caller treats any of these as "cannot tell".
#[derive(Debug)]
pub enum FatError {
    /// The boot sector describes a volume the kernel would refuse to mount.
    Unmountable(String),
    /// A structure on the way is inconsistent (a cluster chain that loops, leaves the
    /// volume or ends in a bad or free cluster), where the kernel's lookup fails too.
    Damaged(String),
    /// The device could not be read.
    Read { what: String, offset: u64, source: std::io::Error },
}

impl std::fmt::Display for FatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FatError::Unmountable(reason) => write!(f, "not a FAT filesystem Linux would mount: {reason}"),
            FatError::Damaged(reason) => write!(f, "the FAT filesystem is damaged: {reason} (fsck.vfat can repair it)"),
            FatError::Read { what, offset, source } => write!(f, "cannot read {what} at byte {offset}: {source}"),
        }
    }
}

impl std::error::Error for FatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FatError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

const ENTRY_BYTES: u64 = 32;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
/// Read-only, hidden, system and volume together: a VFAT long-name slot.
const ATTR_LONG_NAME: u8 = 0x0f;
const DELETED: u8 = 0xe5;
/// Marks the first slot on disk (the name's last) of a long name.
const LAST_SLOT: u8 = 0x40;
/// The kernel's cap on slots: 20 × 13 units covers a 255-character name.
const MAX_SLOTS: u8 = 20;
const UNITS_PER_SLOT: usize = 13;
/// Clusters 0 and 1 name the media and the volume state; data clusters start at 2.
const FIRST_DATA_CLUSTER: u32 = 2;
/// The kernel limits a file or directory to 4 GiB - 1, and so a chain to this many bytes.
const MAX_CHAIN_BYTES: u64 = u32::MAX as u64;
/// No FAT directory is made longer than 65,536 entries. The kernel would read a longer one a
/// crafted volume holds, but following millions of clusters, each a FAT read, would stall the
/// boot: a longer one is "cannot tell", which the boot treats as no flag.
const MAX_DIRECTORY_BYTES: u64 = 65_536 * ENTRY_BYTES;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FatWidth {
    Fat12,
    Fat16,
    Fat32,
}

impl FatWidth {
    /// The kernel's MAX_FAT12/16/32: the most clusters a volume of this width may have.
    fn max_clusters(self) -> u64 {
        match self {
            FatWidth::Fat12 => 0xff4,
            FatWidth::Fat16 => 0xfff4,
            FatWidth::Fat32 => 0x0fff_fff6,
        }
    }

    fn bits(self) -> u64 {
        match self {
            FatWidth::Fat12 => 12,
            FatWidth::Fat16 => 16,
            FatWidth::Fat32 => 32,
        }
    }

    /// The bad-cluster marker; values above it end a chain.
    fn bad_cluster(self) -> u32 {
        match self {
            FatWidth::Fat12 => 0xff7,
            FatWidth::Fat16 => 0xfff7,
            FatWidth::Fat32 => 0x0fff_fff7,
        }
    }
}

/// Where a directory's entries are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Directory {
    /// FAT12/16's root: a fixed run of sectors before the data area.
    Fixed { first_sector: u64, sectors: u64 },
    /// A cluster chain from this cluster; 0 is an empty directory, as the kernel reads it.
    Chain(u32),
}

/// The geometry the boot sector describes, checked as the kernel checks it when mounting.
#[derive(Debug)]
struct Geometry {
    sector_bytes: u64,
    sectors_per_cluster: u64,
    fat_start_sector: u64,
    width: FatWidth,
    root: Directory,
    data_start_sector: u64,
    /// One past the highest valid cluster number.
    end_cluster: u32,
    /// The longest directory chain keel follows: the kernel's loop limit, and no longer
    /// than MAX_DIRECTORY_BYTES.
    max_directory_chain: u64,
}

fn le16(bytes: &[u8], at: usize) -> u16 {
    match bytes.get(at..at + 2) {
        Some(&[a, b]) => u16::from_le_bytes([a, b]),
        _ => 0,
    }
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    match bytes.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

fn byte(bytes: &[u8], at: usize) -> u8 {
    bytes.get(at).copied().unwrap_or(0)
}

impl Geometry {
    /// The checks of the kernel's fat_read_bpb and fat_fill_super, on the boot sector's
    /// first 512 bytes, for a device of `device_sector` logical sectors.
    fn parse(boot: &[u8; 512], device_sector: SectorSize) -> Result<Geometry, FatError> {
        let refuse = |reason: String| Err(FatError::Unmountable(reason));
        let sector_bytes = u64::from(le16(boot, 11));
        let sectors_per_cluster = u64::from(byte(boot, 13));
        let reserved = u64::from(le16(boot, 14));
        let fats = u64::from(byte(boot, 16));
        let root_entries = u64::from(le16(boot, 17));
        let media = byte(boot, 21);
        let fat16_length = u64::from(le16(boot, 22));
        let fat32_length = u64::from(le32(boot, 36));
        if reserved == 0 {
            return refuse("the boot sector reserves no sectors".into());
        }
        if fats == 0 {
            return refuse("the boot sector counts no FATs".into());
        }
        if media != 0xf0 && media < 0xf8 {
            return refuse(format!("media byte {media:#04x} is not one FAT defines (0xf0 or 0xf8-0xff)"));
        }
        if !sector_bytes.is_power_of_two() || !(512..=4096).contains(&sector_bytes) {
            return refuse(format!("a logical sector of {sector_bytes} bytes (Linux takes powers of two from 512 to 4096)"));
        }
        if !sectors_per_cluster.is_power_of_two() {
            return refuse(format!("{sectors_per_cluster} sectors per cluster is not a power of two"));
        }
        if fat16_length == 0 && fat32_length == 0 {
            return refuse("the boot sector gives the FAT no sectors".into());
        }
        if sector_bytes < device_sector.bytes() {
            return refuse(format!("its {sector_bytes}-byte logical sectors are smaller than the device's {device_sector}"));
        }
        let fat32 = fat16_length == 0;
        let fat_length = if fat32 { fat32_length } else { fat16_length };
        let entries_per_sector = sector_bytes / ENTRY_BYTES;
        if root_entries % entries_per_sector != 0 {
            return refuse(format!("{root_entries} root directory entries do not fill whole sectors of {entries_per_sector}"));
        }
        let root_sectors = root_entries / entries_per_sector;
        let root_start_sector = reserved + fats * fat_length;
        let data_start_sector = root_start_sector + root_sectors;
        let total_sectors = match le16(boot, 19) {
            0 => u64::from(le32(boot, 32)),
            small => u64::from(small),
        };
        // The kernel's unsigned subtraction would wrap here and its later checks may or may
        // not catch it; a volume whose data area starts past its end holds nothing to read.
        let Some(data_sectors) = total_sectors.checked_sub(data_start_sector) else {
            return refuse(format!("its data area starts at sector {data_start_sector}, past its {total_sectors} sectors"));
        };
        let counted_clusters = data_sectors / sectors_per_cluster;
        let width = match fat32 {
            true => FatWidth::Fat32,
            false if counted_clusters > FatWidth::Fat12.max_clusters() => FatWidth::Fat16,
            false => FatWidth::Fat12,
        };
        // The kernel keeps the clusters its FAT has entries for, in 32-bit arithmetic.
        let fat_entries = match width {
            FatWidth::Fat12 => fat_length * sector_bytes * 8 / 12,
            _ => sector_bytes * 8 / width.bits() * fat_length,
        } as u32;
        let clusters = counted_clusters.min(u64::from(fat_entries.wrapping_sub(FIRST_DATA_CLUSTER)));
        if clusters > width.max_clusters() {
            return refuse(format!("{clusters} clusters are too many for FAT{}", width.bits()));
        }
        let cluster_bytes = sector_bytes * sectors_per_cluster;
        let root = match width {
            FatWidth::Fat32 => Directory::Chain(le32(boot, 44)),
            _ => Directory::Fixed { first_sector: root_start_sector, sectors: root_sectors },
        };
        Ok(Geometry {
            sector_bytes,
            sectors_per_cluster,
            fat_start_sector: reserved,
            width,
            root,
            data_start_sector,
            end_cluster: u32::try_from(clusters).unwrap_or(u32::MAX).saturating_add(FIRST_DATA_CLUSTER),
            max_directory_chain: clusters.min(MAX_CHAIN_BYTES / cluster_bytes + 1).min(MAX_DIRECTORY_BYTES.div_ceil(cluster_bytes)),
        })
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        (self.data_start_sector + u64::from(cluster.saturating_sub(FIRST_DATA_CLUSTER)) * self.sectors_per_cluster) * self.sector_bytes
    }
}

/// The device, the volume's geometry, and the FAT sector read last: a chain's entries
/// mostly share one.
struct Volume<'d, D: Read + Seek> {
    device: &'d mut D,
    geometry: Geometry,
    fat_sector: Option<(u64, Vec<u8>)>,
}

impl<D: Read + Seek> Volume<'_, D> {
    fn read(device: &mut D, offset: u64, buffer: &mut [u8], what: &str) -> Result<(), FatError> {
        let failed = |source| FatError::Read { what: what.to_string(), offset, source };
        device.seek(SeekFrom::Start(offset)).map_err(failed)?;
        device.read_exact(buffer).map_err(failed)
    }

    fn fat_byte(&mut self, offset: u64) -> Result<u8, FatError> {
        let sector_bytes = self.geometry.sector_bytes;
        let sector = offset / sector_bytes;
        let cached = matches!(&self.fat_sector, Some((number, _)) if *number == sector);
        if !cached {
            let mut bytes = vec![0; sector_bytes as usize];
            Self::read(self.device, sector * sector_bytes, &mut bytes, "a sector of the FAT")?;
            self.fat_sector = Some((sector, bytes));
        }
        let within = (offset % sector_bytes) as usize;
        Ok(self.fat_sector.as_ref().map_or(0, |(_, bytes)| byte(bytes, within)))
    }

    /// The cluster after `cluster` in its chain, or `None` at the chain's end.
    fn next_cluster(&mut self, cluster: u32) -> Result<Option<u32>, FatError> {
        let geometry = &self.geometry;
        if !(FIRST_DATA_CLUSTER..geometry.end_cluster).contains(&cluster) {
            let end = geometry.end_cluster;
            return Err(FatError::Damaged(format!("a cluster chain reaches cluster {cluster}, outside the volume's clusters 2 to {}", end - 1)));
        }
        let fat = geometry.fat_start_sector * geometry.sector_bytes;
        let width = geometry.width;
        let index = u64::from(cluster);
        let next = match width {
            FatWidth::Fat12 => {
                let at = fat + index + index / 2;
                let pair = u16::from_le_bytes([self.fat_byte(at)?, self.fat_byte(at + 1)?]);
                u32::from(if cluster % 2 == 1 { pair >> 4 } else { pair & 0x0fff })
            }
            FatWidth::Fat16 => u32::from(u16::from_le_bytes([self.fat_byte(fat + 2 * index)?, self.fat_byte(fat + 2 * index + 1)?])),
            FatWidth::Fat32 => {
                let at = fat + 4 * index;
                u32::from_le_bytes([self.fat_byte(at)?, self.fat_byte(at + 1)?, self.fat_byte(at + 2)?, self.fat_byte(at + 3)?]) & 0x0fff_ffff
            }
        };
        match next {
            0 => Err(FatError::Damaged(format!("cluster {cluster} is free in the FAT but a chain goes through it"))),
            // The kernel ends a chain at a bad-cluster mark as at the end mark.
            end if end >= width.bad_cluster() => Ok(None),
            next => Ok(Some(next)),
        }
    }

    /// Follows the chain from `first` to its end, as the kernel does to size a directory
    /// before it looks inside: a chain that loops, leaves the volume or runs into a free
    /// cluster is an error even if the name sought comes before the break.
    fn check_chain(&mut self, first: u32) -> Result<(), FatError> {
        let mut cluster = first;
        let mut length = 1;
        if first == 0 {
            return Ok(());
        }
        while let Some(next) = self.next_cluster(cluster)? {
            length += 1;
            if length > self.geometry.max_directory_chain {
                return Err(FatError::Damaged(format!(
                    "the directory from cluster {first} is longer than a FAT directory is made (65,536 entries), or its chain loops"
                )));
            }
            cluster = next;
        }
        Ok(())
    }

    /// A subdirectory the kernel would open, as its vfat checks one before it looks inside
    /// (6.1's fat_validate_dir): a chain of its own (not cluster 0, not FAT32's root) and at
    /// least two subdirectory entries (`.` and `..`). The kernel fails the lookup of any
    /// other with EIO, so keel must not find a flag inside one either.
    fn check_subdirectory(&mut self, first: u32) -> Result<(), FatError> {
        if first == 0 || (self.geometry.width == FatWidth::Fat32 && self.geometry.root == Directory::Chain(first)) {
            return Err(FatError::Damaged(format!("a subdirectory starts at cluster {first}, which is not a directory of its own")));
        }
        self.check_chain(first)?;
        let mut subdirectories = 0;
        self.scan(Directory::Chain(first), |entry| {
            // As the kernel counts them: any entry in use, not a volume label or long-name slot.
            let in_use = !matches!(byte(entry, 0), 0 | DELETED) && byte(entry, 11) & ATTR_VOLUME == 0;
            if in_use && byte(entry, 11) & ATTR_DIRECTORY != 0 {
                subdirectories += 1;
            }
            subdirectories >= 2
        })?;
        if subdirectories < 2 {
            return Err(FatError::Damaged(format!("the subdirectory at cluster {first} has no . and .. entries")));
        }
        Ok(())
    }

    /// Calls `visit` with each 32-byte entry of `directory` in order, until it returns true.
    fn scan(&mut self, directory: Directory, mut visit: impl FnMut(&[u8]) -> bool) -> Result<(), FatError> {
        let sector_bytes = self.geometry.sector_bytes;
        let mut sector = vec![0; sector_bytes as usize];
        let mut visit_sector = |volume: &mut Self, offset: u64| -> Result<bool, FatError> {
            Self::read(volume.device, offset, &mut sector, "a directory")?;
            Ok(sector.chunks_exact(ENTRY_BYTES as usize).any(&mut visit))
        };
        match directory {
            Directory::Fixed { first_sector, sectors } => {
                for number in first_sector..first_sector + sectors {
                    if visit_sector(self, number * sector_bytes)? {
                        return Ok(());
                    }
                }
            }
            Directory::Chain(first) => {
                let mut cluster = (first != 0).then_some(first);
                let mut length = 0;
                while let Some(current) = cluster {
                    // check_chain has bounded this chain; counting again keeps the loop
                    // finite should the device change between the two walks.
                    length += 1;
                    if length > self.geometry.max_directory_chain {
                        return Err(FatError::Damaged(format!("the cluster chain from cluster {first} changed while it was read")));
                    }
                    // Reading the FAT first checks that `current` lies in the data area.
                    cluster = self.next_cluster(current)?;
                    let start = self.geometry.cluster_offset(current);
                    for index in 0..self.geometry.sectors_per_cluster {
                        if visit_sector(self, start + index * sector_bytes)? {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// An entry found by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    File,
    Directory(Directory),
}

/// The short name as vfat shows it: bytes past ASCII become '?' (codepage 437 to
/// iocharset ascii), the 0x05 lead byte stands for 0xe5, spaces pad both parts, and a NUL
/// ends either part. Empty when nothing is left, which vfat skips.
fn short_name(entry: &[u8]) -> Vec<u8> {
    let shown = |raw: u8| if raw < 0x80 { raw } else { b'?' };
    let mut name: Vec<u8> = Vec::with_capacity(12);
    let part = |bytes: &[u8]| -> Vec<u8> {
        let bytes = &bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())];
        let kept = bytes.iter().rposition(|&b| b != b' ').map_or(0, |last| last + 1);
        bytes[..kept].iter().map(|&b| shown(b)).collect()
    };
    let mut base = [0u8; 8];
    base.copy_from_slice(entry.get(..8).unwrap_or(&[0; 8]));
    if base[0] == 0x05 {
        base[0] = DELETED;
    }
    name.extend(part(&base));
    let extension = part(entry.get(8..11).unwrap_or(&[]));
    if !extension.is_empty() {
        name.push(b'.');
        name.extend(extension);
    }
    name
}

/// The checksum of an 11-byte short name that its long-name slots carry.
fn short_name_checksum(entry: &[u8]) -> u8 {
    entry.iter().take(11).fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// The state of a long name being read: the kernel's fat_parse_long, one entry at a time.
struct LongName {
    units: [u16; MAX_SLOTS as usize * UNITS_PER_SLOT + 1],
    checksum: u8,
    /// The slot the next entry must be (counting down), 0 when a short entry must follow.
    expected: u8,
}

/// What one directory entry means for the lookup.
enum Step {
    Nothing,
    /// A short entry, with the long name before it that belongs to it.
    Entry {
        long: Option<Vec<u8>>,
    },
}

impl LongName {
    fn new() -> LongName {
        LongName { units: [0; MAX_SLOTS as usize * UNITS_PER_SLOT + 1], checksum: 0, expected: 0 }
    }

    fn fill(&mut self, slot: u8, entry: &[u8]) {
        let offset = usize::from(slot) * UNITS_PER_SLOT;
        let places = (1..11).step_by(2).chain((14..26).step_by(2)).chain((28..32).step_by(2));
        for (unit, at) in places.enumerate() {
            if let Some(place) = self.units.get_mut(offset + unit) {
                *place = le16(entry, at);
            }
        }
        // The last slot ends the name; the kernel also honours the mark on a later slot.
        if let Some(place) = self.units.get_mut(offset + UNITS_PER_SLOT).filter(|_| byte(entry, 0) & LAST_SLOT != 0) {
            *place = 0;
        }
    }

    /// The first slot of a long name; false when it cannot start one.
    fn start(&mut self, entry: &[u8]) -> bool {
        let id = byte(entry, 0);
        let slots = id & !LAST_SLOT;
        if id & LAST_SLOT == 0 || slots == 0 || slots > MAX_SLOTS {
            return false;
        }
        self.checksum = byte(entry, 13);
        self.expected = slots - 1;
        self.fill(slots - 1, entry);
        true
    }

    fn text(&self) -> Vec<u8> {
        self.units.iter().take_while(|&&unit| unit != 0).map(|&unit| if unit < 0x80 { unit as u8 } else { b'?' }).collect()
    }
}

/// Reads a directory's entries in order, pairing long names with their short entries.
struct EntryReader {
    long: LongName,
    in_long_name: bool,
}

impl EntryReader {
    fn step(&mut self, entry: &[u8]) -> Step {
        let first = byte(entry, 0);
        let attributes = byte(entry, 11);
        let is_slot = attributes == ATTR_LONG_NAME;
        if self.in_long_name {
            self.in_long_name = false;
            if self.long.expected > 0 {
                if !is_slot {
                    return self.step(entry);
                }
                if first & !LAST_SLOT != self.long.expected || byte(entry, 13) != self.long.checksum {
                    self.in_long_name = self.long.start(entry);
                    return Step::Nothing;
                }
                self.long.expected -= 1;
                self.long.fill(self.long.expected, entry);
                self.in_long_name = true;
                return Step::Nothing;
            }
            if first == DELETED {
                return Step::Nothing;
            }
            if is_slot {
                self.in_long_name = self.long.start(entry);
                return Step::Nothing;
            }
            if first == 0 || attributes & ATTR_VOLUME != 0 {
                return Step::Nothing;
            }
            let long = (short_name_checksum(entry) == self.long.checksum).then(|| self.long.text());
            return Step::Entry { long };
        }
        if first == DELETED || (!is_slot && (first == 0 || attributes & ATTR_VOLUME != 0)) {
            return Step::Nothing;
        }
        if is_slot {
            self.in_long_name = self.long.start(entry);
            return Step::Nothing;
        }
        Step::Entry { long: None }
    }
}

/// vfat's comparison with iocharset ascii: ASCII letters without regard to case, every
/// other byte as it is.
fn same_name(sought: &[u8], name: &[u8]) -> bool {
    sought.eq_ignore_ascii_case(name)
}

impl<D: Read + Seek> Volume<'_, D> {
    /// The first entry of `directory` named `sought` by its short or its long name, as the
    /// kernel's vfat lookup finds it.
    fn find(&mut self, directory: Directory, sought: &[u8]) -> Result<Option<Found>, FatError> {
        let mut reader = EntryReader { long: LongName::new(), in_long_name: false };
        let mut found = None;
        let width = self.geometry.width;
        self.scan(directory, |entry| {
            let Step::Entry { long } = reader.step(entry) else { return false };
            let short = short_name(entry);
            if short.is_empty() {
                return false;
            }
            if !same_name(sought, &short) && !long.is_some_and(|long| same_name(sought, &long)) {
                return false;
            }
            found = Some(if byte(entry, 11) & ATTR_DIRECTORY != 0 {
                let high = if width == FatWidth::Fat32 { u32::from(le16(entry, 20)) << 16 } else { 0 };
                Found::Directory(Directory::Chain(high | u32::from(le16(entry, 26))))
            } else {
                Found::File
            });
            true
        })?;
        Ok(found)
    }
}

/// Whether `path` (`/`-separated, relative to the volume's root) names a file or directory
/// of the FAT filesystem on `device`, as `Path::exists` answers on the kernel's vfat mount
/// of it (read-only, codepage 437, iocharset ascii): names match by their long or short
/// name, ASCII without regard to case, trailing dots ignored; `.` and `..` work as in any
/// path; a path through a file, or ending in `/` after a file, does not exist.
/// `device_sector` is the device's logical sector size: the kernel does not mount a FAT of
/// smaller sectors.
pub fn fat_path_exists(device: &mut (impl Read + Seek), device_sector: SectorSize, path: &str) -> Result<bool, FatError> {
    let mut boot = [0u8; 512];
    Volume::read(device, 0, &mut boot, "the boot sector")?;
    let geometry = Geometry::parse(&boot, device_sector)?;
    let root = geometry.root;
    let mut volume = Volume { device, geometry, fat_sector: None };
    if volume.geometry.width == FatWidth::Fat32 {
        // The kernel reads the FSINFO sector (sector 1 when the boot sector says 0) to mount.
        let fsinfo = u64::from(le16(&boot, 48).max(1));
        let mut sector = vec![0; volume.geometry.sector_bytes as usize];
        Volume::read(volume.device, fsinfo * volume.geometry.sector_bytes, &mut sector, "the FSINFO sector")?;
    }
    if let Directory::Chain(first) = root {
        volume.check_chain(first)?;
    }
    let mut parents = Vec::new();
    let mut current = Found::Directory(root);
    for component in path.split('/').filter(|component| !component.is_empty()) {
        let Found::Directory(directory) = current else { return Ok(false) };
        match component {
            "." => {}
            ".." => current = Found::Directory(parents.pop().unwrap_or(root)),
            name => {
                let sought = name.trim_end_matches('.').as_bytes();
                if sought.is_empty() {
                    return Ok(false);
                }
                match volume.find(directory, sought)? {
                    None => return Ok(false),
                    Some(found) => {
                        if let Found::Directory(Directory::Chain(first)) = found {
                            volume.check_subdirectory(first)?;
                        }
                        parents.push(directory);
                        current = found;
                    }
                }
            }
        }
    }
    Ok(!(path.ends_with('/') && current == Found::File))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A FAT volume built byte by byte: one FAT, the root in two sectors (FAT12/16) or in
    /// cluster 2 (FAT32), and every other cluster free until a test chains it.
    struct Image {
        bytes: Vec<u8>,
        width: FatWidth,
        sector: usize,
        sectors_per_cluster: usize,
        fat_start: usize,
        root_start: usize,
        data_start: usize,
    }

    const EOC: u32 = 0x0fff_ffff;

    impl Image {
        fn new(width: FatWidth, sector: usize, clusters: usize) -> Image {
            let sectors_per_cluster = 1;
            let reserved = if width == FatWidth::Fat32 { 2 } else { 1 };
            let fat_bytes = (clusters + 2) * width.bits() as usize / 8 + 1;
            let fat_length = fat_bytes.div_ceil(sector);
            let root_sectors = if width == FatWidth::Fat32 { 0 } else { 2 };
            let root_start = reserved + fat_length;
            let data_start = root_start + root_sectors;
            let total = data_start + clusters * sectors_per_cluster;
            let mut boot = vec![0u8; 512];
            boot[..3].copy_from_slice(&[0xeb, 0x3c, 0x90]);
            boot[3..11].copy_from_slice(b"MSWIN4.1");
            boot[11..13].copy_from_slice(&(sector as u16).to_le_bytes());
            boot[13] = sectors_per_cluster as u8;
            boot[14..16].copy_from_slice(&(reserved as u16).to_le_bytes());
            boot[16] = 1;
            boot[17..19].copy_from_slice(&((root_sectors * sector / 32) as u16).to_le_bytes());
            boot[21] = 0xf8;
            boot[32..36].copy_from_slice(&(total as u32).to_le_bytes());
            if width == FatWidth::Fat32 {
                boot[36..40].copy_from_slice(&(fat_length as u32).to_le_bytes());
                boot[44..48].copy_from_slice(&2u32.to_le_bytes());
                boot[48..50].copy_from_slice(&1u16.to_le_bytes());
            } else {
                boot[22..24].copy_from_slice(&(fat_length as u16).to_le_bytes());
            }
            boot[510..512].copy_from_slice(&[0x55, 0xaa]);
            let mut bytes = vec![0u8; total * sector];
            bytes[..512].copy_from_slice(&boot);
            let mut image = Image {
                bytes,
                width,
                sector,
                sectors_per_cluster,
                fat_start: reserved * sector,
                root_start: root_start * sector,
                data_start: data_start * sector,
            };
            image.set_fat(0, 0xffff_fff8);
            image.set_fat(1, EOC);
            if width == FatWidth::Fat32 {
                image.set_fat(2, EOC);
            }
            image
        }

        fn set_fat(&mut self, cluster: u32, value: u32) {
            let c = cluster as usize;
            match self.width {
                FatWidth::Fat12 => {
                    let at = self.fat_start + c + c / 2;
                    let old = u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]);
                    let value = (value & 0xfff) as u16;
                    let new = if c % 2 == 1 { (old & 0x000f) | (value << 4) } else { (old & 0xf000) | value };
                    self.bytes[at..at + 2].copy_from_slice(&new.to_le_bytes());
                }
                FatWidth::Fat16 => self.bytes[self.fat_start + 2 * c..][..2].copy_from_slice(&((value & 0xffff) as u16).to_le_bytes()),
                FatWidth::Fat32 => self.bytes[self.fat_start + 4 * c..][..4].copy_from_slice(&(value & 0x0fff_ffff).to_le_bytes()),
            }
        }

        /// Chains `clusters` in order, the last one ending the chain.
        fn chain(&mut self, clusters: &[u32]) {
            for pair in clusters.windows(2) {
                self.set_fat(pair[0], pair[1]);
            }
            self.set_fat(*clusters.last().unwrap(), EOC);
        }

        fn cluster_at(&self, cluster: u32) -> usize {
            self.data_start + (cluster as usize - 2) * self.sector * self.sectors_per_cluster
        }

        /// The byte offset of the root's entry `index` (in its first cluster, on FAT32).
        fn root_entry(&self, index: usize) -> usize {
            match self.width {
                FatWidth::Fat32 => self.cluster_at(2) + 32 * index,
                _ => self.root_start + 32 * index,
            }
        }

        fn put(&mut self, at: usize, entries: &[[u8; 32]]) {
            for (index, entry) in entries.iter().enumerate() {
                self.bytes[at + 32 * index..][..32].copy_from_slice(entry);
            }
        }

        fn exists(&self, path: &str) -> Result<bool, FatError> {
            fat_path_exists(&mut Cursor::new(&self.bytes), SectorSize::Bytes512, path)
        }

        fn found(&self, path: &str) -> bool {
            self.exists(path).unwrap_or_else(|error| panic!("{path}: {error}"))
        }
    }

    fn short(name: &[u8; 11], attributes: u8, cluster: u32) -> [u8; 32] {
        let mut entry = [0u8; 32];
        entry[..11].copy_from_slice(name);
        entry[11] = attributes;
        entry[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
        entry[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
        entry
    }

    fn file(name: &[u8; 11]) -> [u8; 32] {
        short(name, 0x20, 0)
    }

    fn directory(name: &[u8; 11], cluster: u32) -> [u8; 32] {
        short(name, ATTR_DIRECTORY, cluster)
    }

    /// The slots of `long`, in the order they lie on disk, followed by `alias`.
    fn long_named(long: &str, alias: [u8; 32]) -> Vec<[u8; 32]> {
        let mut units: Vec<u16> = long.encode_utf16().collect();
        if !units.len().is_multiple_of(UNITS_PER_SLOT) {
            units.push(0);
        }
        while !units.len().is_multiple_of(UNITS_PER_SLOT) {
            units.push(0xffff);
        }
        let checksum = short_name_checksum(&alias);
        let slots = units.len() / UNITS_PER_SLOT;
        let mut entries: Vec<[u8; 32]> = (0..slots)
            .rev()
            .map(|slot| {
                let mut entry = [0u8; 32];
                entry[0] = (slot + 1) as u8 | if slot + 1 == slots { LAST_SLOT } else { 0 };
                entry[11] = ATTR_LONG_NAME;
                entry[13] = checksum;
                let places = (1..11).step_by(2).chain((14..26).step_by(2)).chain((28..32).step_by(2));
                for (unit, at) in units[slot * UNITS_PER_SLOT..][..UNITS_PER_SLOT].iter().zip(places) {
                    entry[at..at + 2].copy_from_slice(&unit.to_le_bytes());
                }
                entry
            })
            .collect();
        entries.push(alias);
        entries
    }

    /// An ESP as keel ships it: `flatcar/first_boot`, both long-named.
    fn esp(width: FatWidth, sector: usize) -> Image {
        let mut image = Image::new(width, sector, if width == FatWidth::Fat16 { 5000 } else { 100 });
        image.chain(&[3]);
        let root = image.root_entry(0);
        image.put(root, &long_named("flatcar", directory(b"FLATCAR    ", 3)));
        let flatcar = image.cluster_at(3);
        image.put(flatcar, &[directory(b".          ", 3), directory(b"..         ", 0)]);
        image.put(flatcar + 64, &long_named("first_boot", file(b"FIRST_~1   ")));
        image
    }

    /// keel's ESP at FAT12 and 512-byte sectors, with `entries` after `flatcar` in the root.
    fn esp_with_root(entries: &[[u8; 32]]) -> Image {
        let mut image = esp(FatWidth::Fat12, 512);
        let root = image.root_entry(2);
        image.put(root, entries);
        image
    }

    #[test]
    fn finds_the_flag_by_long_and_short_name_on_every_width_and_sector_size() {
        for width in [FatWidth::Fat12, FatWidth::Fat16, FatWidth::Fat32] {
            for sector in [512, 1024, 2048, 4096] {
                let image = esp(width, sector);
                for present in ["flatcar/first_boot", "FLATCAR/First_Boot", "flatcar/FIRST_~1", "flatcar", "/flatcar/", "", "flatcar/first_boot..."] {
                    assert!(image.found(present), "{width:?} {sector}: {present}");
                }
                for absent in
                    ["flatcar/first_boo", "flatcar/first_boot/", "flatcar/first_boot/.", "first_boot", "flatcar/first_boot/x", "flatcar/..."]
                {
                    assert!(!image.found(absent), "{width:?} {sector}: {absent}");
                }
                let on_4kn = fat_path_exists(&mut Cursor::new(&image.bytes), SectorSize::Bytes4096, "flatcar/first_boot");
                if sector == 4096 {
                    assert!(on_4kn.unwrap());
                } else {
                    assert!(matches!(on_4kn, Err(FatError::Unmountable(reason)) if reason.contains("smaller than the device's")));
                }
            }
        }
    }

    #[test]
    fn dot_and_dot_dot_walk_the_path_as_the_kernel_does() {
        let image = esp(FatWidth::Fat12, 512);
        assert!(image.found("flatcar/./first_boot"));
        assert!(image.found("flatcar/../flatcar/first_boot"));
        assert!(image.found("../../flatcar/first_boot"), "the root's parent is the root");
        assert!(!image.found("flatcar/first_boot/../first_boot"), "a file has no entries, .. included");
        assert!(!image.found("nothing/../flatcar"), "every name on the way must exist");
    }

    /// Writes `long` (aliased `alias`) into the root with its entries changed by `damage`,
    /// and checks that only the alias finds it.
    fn only_the_alias_is_found(long: &str, alias: &[u8; 11], damage: impl FnOnce(&mut Vec<[u8; 32]>)) {
        let mut entries = long_named(long, file(alias));
        damage(&mut entries);
        let image = esp_with_root(&entries);
        assert!(!image.found(long), "{long}");
        let (base, extension) = alias.split_at(8);
        let alias = format!("{}.{}", String::from_utf8_lossy(base).trim_end(), String::from_utf8_lossy(extension).trim_end());
        assert!(image.found(alias.trim_end_matches('.')), "{alias}");
    }

    #[test]
    fn a_long_name_whose_checksum_does_not_match_leaves_only_the_short_name() {
        only_the_alias_is_found("another-name", b"ANOTHE~1   ", |entries| {
            entries[0][13] ^= 0xff;
            entries[1][13] ^= 0xff;
        });
        // One slot of two mismatching: the run restarts there, and the slot is not a first one.
        only_the_alias_is_found("yet-another-one", b"YET-AN~1   ", |entries| entries[1][13] ^= 0xff);
    }

    #[test]
    fn orphaned_and_out_of_order_slots_are_ignored() {
        // A free entry between the slots and their short entry orphans them.
        only_the_alias_is_found("orphan-name", b"PLAIN   TXT", |entries| {
            let plain = entries.pop().unwrap();
            entries.push([0; 32]);
            entries.push(plain);
        });
        // The slots swapped: sequence numbers must count down.
        only_the_alias_is_found("swapped-slots-name", b"SWAPPE~1   ", |entries| entries.swap(0, 1));
    }

    #[test]
    fn a_long_name_of_thirteen_units_needs_no_terminator() {
        let image = esp_with_root(&long_named("thirteen-char", file(b"THIRTE~1   ")));
        assert!(image.found("thirteen-char"));
        assert!(!image.found("thirteen-cha"));
    }

    #[test]
    fn deleted_entries_are_not_found_but_0x05_stands_for_0xe5() {
        let mut entries = long_named("gone-file", file(b"GONE-F~1   "));
        for entry in &mut entries {
            entry[0] = DELETED;
        }
        entries.extend([file(b"\x05BC     TXT"), file(b"\xe5LSO    TXT")]);
        let image = esp_with_root(&entries);
        assert!(!image.found("gone-file"));
        assert!(!image.found("?ONE-F~1"));
        assert!(!image.found("?lso.txt"));
        // 0xe5 in codepage 437 is σ, which iocharset ascii shows as '?'.
        assert!(image.found("?bc.txt"));
        assert!(!image.found("\u{3c3}bc.txt"));
    }

    #[test]
    fn a_zero_first_byte_is_skipped_not_the_end_of_the_directory() {
        let image = esp_with_root(&[file(b"\0AFTER     "), file(b"AFTER      ")]);
        assert!(image.found("after"), "the kernel's lookup reads on past a free entry");
        assert!(!image.found("\0after"));
    }

    #[test]
    fn the_volume_label_is_not_a_file() {
        let image = esp_with_root(&[short(b"EFI-SYSTEM ", ATTR_VOLUME, 0)]);
        assert!(!image.found("EFI-SYSTEM"));
        assert!(image.found("flatcar"));
    }

    #[test]
    fn short_names_trim_padding_and_keep_inner_spaces() {
        let image = esp_with_root(&[file(b"A B     C D"), file(b"NOEXT      "), file(b"        TXT"), file(b"           ")]);
        assert!(image.found("a b.c d"));
        assert!(image.found("noext"));
        assert!(image.found("noext..."), "trailing dots of a name sought are dropped");
        assert!(image.found(".txt"));
        assert!(!image.found("txt"));
    }

    #[test]
    fn names_past_ascii_match_only_as_question_marks() {
        let image = esp_with_root(&long_named("caf\u{e9}", file(b"CAF~1      ")));
        assert!(image.found("caf?"));
        assert!(image.found("CAF?"));
        assert!(!image.found("caf\u{e9}"));
        assert!(!image.found("CAF\u{c9}"));
    }

    #[test]
    fn fat12_entries_of_odd_and_even_clusters_chain_a_directory() {
        let mut image = esp(FatWidth::Fat12, 512);
        // flatcar spans clusters 3, 4, 7, 6, 5: its flag sits in the last.
        image.chain(&[3, 4, 7, 6, 5]);
        let flatcar = image.cluster_at(3);
        let flag = image.bytes[flatcar + 64..flatcar + 128].to_vec();
        image.bytes[flatcar + 64..flatcar + 128].fill(0);
        let last = image.cluster_at(5);
        image.bytes[last + 32..last + 96].copy_from_slice(&flag);
        assert!(image.found("flatcar/first_boot"));
        assert_eq!(image.bytes[image.fat_start + 4..image.fat_start + 12], [0x40, 0x00, 0x07, 0xf0, 0xff, 0x05, 0x60, 0x00]);
    }

    #[test]
    fn a_long_name_may_straddle_clusters() {
        let mut image = esp(FatWidth::Fat16, 512);
        image.chain(&[3, 9]);
        let flatcar = image.cluster_at(3);
        image.bytes[flatcar + 64..flatcar + 128].fill(0);
        let entries = long_named("first_boot", file(b"FIRST_~1   "));
        image.put(flatcar + 512 - 32, &entries[..1]);
        image.put(image.cluster_at(9), &entries[1..]);
        assert!(image.found("flatcar/first_boot"));
    }

    #[test]
    fn the_fat32_root_may_span_clusters_and_high_words_count() {
        for sector in [512, 4096] {
            let mut image = esp(FatWidth::Fat32, sector);
            image.chain(&[2, 40, 17]);
            let (start, end) = (image.root_entry(0), image.root_entry(2));
            let flatcar = image.bytes[start..end].to_vec();
            image.bytes[start..end].fill(0);
            let last = image.cluster_at(17);
            image.bytes[last..last + 64].copy_from_slice(&flatcar);
            assert!(image.found("flatcar/first_boot"), "{sector}");
            // A directory's high cluster word is FAT32's alone.
            image.put(last + 64, &[directory(b"HIGH       ", 0x1_0003)]);
            assert!(matches!(image.exists("high"), Err(FatError::Damaged(reason)) if reason.contains("65539")));
        }
        let mut image = esp(FatWidth::Fat16, 512);
        let root = image.root_entry(2);
        image.put(root, &[directory(b"HIGH       ", 0x1_0003)]);
        assert!(image.found("high/first_boot"), "on FAT16 the high word is not a cluster's");
    }

    #[test]
    fn broken_chains_are_errors() {
        type Links = &'static [(u32, u32)];
        let cases: [(&str, Links, &str); 4] = [
            ("loop", &[(3, 4), (4, 3)], "loops"),
            ("past the last cluster", &[(3, 500)], "cluster 500, outside"),
            ("reserved cluster 1", &[(3, 1)], "cluster 1, outside"),
            ("free cluster", &[(3, 4), (4, 0)], "cluster 4 is free"),
        ];
        for (what, links, expected) in cases {
            let mut image = esp(FatWidth::Fat12, 512);
            for &(from, to) in links {
                image.set_fat(from, to);
            }
            let error = image.exists("flatcar").expect_err(what).to_string();
            assert!(error.contains(expected), "{what}: {error}");
            // The root does not lead through flatcar: other lookups still work.
            assert!(!image.found("other"), "{what}");
        }
        // FAT32's root is checked when the volume is opened, as mounting it does.
        let mut image = esp(FatWidth::Fat32, 512);
        image.set_fat(2, 5);
        image.set_fat(5, 2);
        assert!(image.exists("").unwrap_err().to_string().contains("loops"));
        // The kernel ends a chain at a bad-cluster mark, as at the end mark.
        let mut image = esp(FatWidth::Fat12, 512);
        image.set_fat(3, 0xff7);
        assert!(image.found("flatcar/first_boot"));
    }

    #[test]
    fn a_subdirectory_the_kernel_would_not_open_is_an_error_not_a_find() {
        // Starting at cluster 0 (the root's number in `..`, never a subdirectory's own).
        let image = esp_with_root(&[directory(b"EMPTY      ", 0)]);
        assert!(image.exists("empty").unwrap_err().to_string().contains("cluster 0"));
        // On FAT32, starting at the root's cluster: the root's entries seen again.
        let mut image = esp(FatWidth::Fat32, 512);
        let at = image.root_entry(4);
        image.put(at, &[directory(b"LOOPBACK   ", 2)]);
        assert!(image.exists("loopback/flatcar").unwrap_err().to_string().contains("cluster 2"));
        // Without its `.` and `..` entries (deleted here), as the kernel counts them.
        let mut image = esp(FatWidth::Fat12, 512);
        let flatcar = image.cluster_at(3);
        for entry in [flatcar, flatcar + 32] {
            image.bytes[entry] = DELETED;
        }
        assert!(image.exists("flatcar/first_boot").unwrap_err().to_string().contains("no . and .. entries"));
    }

    #[test]
    fn a_directory_longer_than_any_fat_directory_is_not_followed() {
        // 4,097 clusters of 512 bytes is past the 2 MiB a FAT directory can be: a chain that
        // long (or looping through many FAT sectors) would cost a read a cluster.
        let mut image = esp(FatWidth::Fat16, 512);
        let mut chain: Vec<u32> = vec![3];
        chain.extend(10..10 + 4_097);
        image.chain(&chain);
        assert!(image.exists("flatcar").unwrap_err().to_string().contains("longer than a FAT directory is made"));
    }

    #[test]
    fn boot_sectors_the_kernel_refuses_are_errors() {
        let cases: [(usize, &[u8], &str); 10] = [
            (14, &[0, 0], "reserves no sectors"),
            (16, &[0], "no FATs"),
            (21, &[0xf1], "media byte 0xf1"),
            (11, &[0, 1], "256 bytes"),
            (11, &[0, 0x20], "8192 bytes"),
            (11, &[0xe8, 0x03], "1000 bytes"),
            (13, &[3], "3 sectors per cluster"),
            (13, &[0], "0 sectors per cluster"),
            (22, &[0, 0], "gives the FAT no sectors"),
            (17, &[1, 0], "do not fill whole sectors"),
        ];
        for (at, bytes, expected) in cases {
            let mut image = esp(FatWidth::Fat12, 512);
            image.bytes[at..at + bytes.len()].copy_from_slice(bytes);
            let error = image.exists("flatcar").expect_err(expected).to_string();
            assert!(error.contains(expected) && error.contains("Linux would mount"), "{error}");
        }
        let mut image = esp(FatWidth::Fat12, 512);
        image.bytes[32..36].copy_from_slice(&3u32.to_le_bytes());
        assert!(image.exists("").unwrap_err().to_string().contains("past its 3 sectors"));
        // More clusters than a 16-bit FAT can number, with a FAT long enough to hold them.
        let mut image = esp(FatWidth::Fat16, 512);
        image.bytes[22..24].copy_from_slice(&300u16.to_le_bytes());
        image.bytes[32..36].copy_from_slice(&80_000u32.to_le_bytes());
        assert!(image.exists("").unwrap_err().to_string().contains("too many for FAT16"));
        // The FAT32 FSINFO sector must be readable; the device ends before it here.
        let image = esp(FatWidth::Fat32, 512);
        let mut head = image.bytes[..512].to_vec();
        head[48..50].copy_from_slice(&9u16.to_le_bytes());
        let error = fat_path_exists(&mut Cursor::new(head), SectorSize::Bytes512, "").unwrap_err().to_string();
        assert!(error.contains("cannot read the FSINFO sector at byte 4608"), "{error}");
    }

    #[test]
    fn a_short_fat_caps_the_clusters_as_the_kernel_does() {
        // The boot sector claims 3996 sectors of data, the FAT (one sector) has entries for 339 clusters:
        // FAT12, and cluster 400 lies outside it.
        let mut image = esp(FatWidth::Fat12, 512);
        image.bytes.resize(4000 * 512, 0);
        image.bytes[32..36].copy_from_slice(&4000u32.to_le_bytes());
        image.set_fat(3, 400);
        assert!(image.exists("flatcar").unwrap_err().to_string().contains("outside the volume's clusters 2 to 340"));
    }
}
