//! A disk in memory whose copies share the bytes they started with: each copy holds only
//! what was written to it. keel-disk's power-cut model makes thousands of possible
//! media from one image, and the fuzz harness runs every first-boot rewrite on its own
//! copy of a disk of up to a MiB; copying and comparing whole disks is what both would
//! otherwise spend their time on.

use keel_disk::DurableWrite;
use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::rc::Rc;

/// The unit the overlay keeps writes in; any sector size keel uses is a multiple of it.
const SECTOR: usize = 512;
/// What a first write to a sector copies: 8 sectors. A table rewrite writes two runs of 33
/// and 34 sectors; a copy and a map entry per sector was most of what a fuzzed rewrite
/// cost, and bigger chunks copy more than is written.
const CHUNK: usize = 8 * SECTOR;
const SECTORS_PER_CHUNK: u64 = (CHUNK / SECTOR) as u64;

/// A disk image as the bytes it started with and the chunks written since: copying and
/// comparing it costs what was written, not the disk's size. Its size never changes: a
/// write past its end is refused, as a disk refuses it, and remembered
/// (`wrote_past_end`), since an image file would have grown instead.
#[derive(Clone)]
pub struct SparseDisk {
    /// The disk started as `base[..size]`.
    base: Rc<Vec<u8>>,
    size: usize,
    /// By chunk number: `CHUNK` bytes, but for the last chunk, which ends where the disk does.
    written: BTreeMap<u64, Vec<u8>>,
    position: u64,
    wrote_past_end: bool,
}

impl SparseDisk {
    pub fn new(base: Vec<u8>) -> SparseDisk {
        let size = base.len();
        SparseDisk::over(Rc::new(base), size)
    }

    /// A disk starting as the first `size` bytes of `base`, which the caller may share:
    /// once every disk over it is gone, `Rc::get_mut` gives its memory back for the next
    /// image. The fuzz harness reuses a MiB that way, for disks of every size, instead of
    /// allocating (and page-faulting) it, or zeroing it, per input.
    pub fn over(base: Rc<Vec<u8>>, size: usize) -> SparseDisk {
        assert!(size <= base.len(), "a disk of {size} bytes over {} bytes", base.len());
        SparseDisk { base, size, written: BTreeMap::new(), position: 0, wrote_past_end: false }
    }

    /// The bytes the disk started with: what its changes are measured against.
    pub fn base(&self) -> &[u8] {
        &self.base[..self.size]
    }

    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.size as u64
    }

    /// What sector `number` holds now; the partial sector at the end of a disk whose size
    /// is no multiple of the sector size is shorter. Panics past the disk's end.
    pub fn sector(&self, number: u64) -> &[u8] {
        assert!(number < self.size().div_ceil(SECTOR as u64), "sector {number} is past the disk's end");
        let start = (number % SECTORS_PER_CHUNK) as usize * SECTOR;
        let chunk = self.chunk(number / SECTORS_PER_CHUNK);
        &chunk[start..(start + SECTOR).min(chunk.len())]
    }

    fn chunk(&self, number: u64) -> &[u8] {
        match self.written.get(&number) {
            Some(bytes) => bytes,
            None => Self::base_chunk(self.base(), number),
        }
    }

    fn base_chunk(base: &[u8], number: u64) -> &[u8] {
        let start = number as usize * CHUNK;
        &base[start..(start + CHUNK).min(base.len())]
    }

    /// The sectors that differ from the start, in order: a sector written with the bytes
    /// it already held is no change.
    pub fn changes(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.changed_chunks().flat_map(|(number, bytes)| {
            let sectors = bytes.chunks(SECTOR).zip(Self::base_chunk(self.base(), number).chunks(SECTOR));
            let first = number * SECTORS_PER_CHUNK;
            sectors.zip(first..).filter(|((now, was), _)| now != was).map(|((now, _), sector)| (sector, now))
        })
    }

    fn changed_chunks(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.written
            .iter()
            .filter(|&(&number, bytes)| bytes[..] != *Self::base_chunk(self.base(), number))
            .map(|(&number, bytes)| (number, &bytes[..]))
    }

    /// Whether the disk holds what it started with (`changes` is empty), found a chunk at
    /// a time.
    pub fn is_unchanged(&self) -> bool {
        self.changed_chunks().next().is_none()
    }

    /// Whether the disk holds the same bytes as `other`, a disk over the same start (a
    /// clone's clone, say); only the chunks either has written are compared.
    pub fn holds_the_same_as(&self, other: &SparseDisk) -> bool {
        assert!(Rc::ptr_eq(&self.base, &other.base) && self.size == other.size, "disks over different starts");
        let differ = |a: &SparseDisk, b: &SparseDisk| a.written.iter().any(|(&number, bytes)| bytes[..] != *b.chunk(number));
        !differ(self, other) && !differ(other, self)
    }

    /// Whether a write past the disk's end was refused: a test holding a rewrite to the
    /// disk's size asks, since the refusal may have looked like any other failure.
    pub fn wrote_past_end(&self) -> bool {
        self.wrote_past_end
    }

    /// Puts `bytes` at `offset` without moving the position: how the power-cut model lets
    /// a cached write reach the medium. Panics past the disk's end.
    pub fn apply(&mut self, offset: u64, bytes: &[u8]) {
        assert!(offset.checked_add(bytes.len() as u64).is_some_and(|end| end <= self.size()), "a write past the disk's end");
        let base = &self.base[..self.size];
        let mut done = 0;
        while done < bytes.len() {
            let at = offset + done as u64;
            let (number, within) = (at / CHUNK as u64, (at % CHUNK as u64) as usize);
            let chunk = self.written.entry(number).or_insert_with(|| Self::base_chunk(base, number).to_vec());
            let take = (chunk.len() - within).min(bytes.len() - done);
            chunk[within..within + take].copy_from_slice(&bytes[done..done + take]);
            done += take;
        }
    }
}

impl Read for SparseDisk {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let n = buffer.len().min(self.size().saturating_sub(self.position) as usize);
        let mut done = 0;
        while done < n {
            let at = self.position + done as u64;
            let chunk = &self.chunk(at / CHUNK as u64)[(at % CHUNK as u64) as usize..];
            let take = chunk.len().min(n - done);
            buffer[done..done + take].copy_from_slice(&chunk[..take]);
            done += take;
        }
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for SparseDisk {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.position = match to {
            SeekFrom::Start(at) => at,
            SeekFrom::End(delta) => self.size().checked_add_signed(delta).ok_or_else(|| io::Error::other("seek before start"))?,
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta).ok_or_else(|| io::Error::other("seek before start"))?,
        };
        Ok(self.position)
    }
}

impl Write for SparseDisk {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if bytes.is_empty() {
            return Ok(0);
        }
        if self.position.checked_add(bytes.len() as u64).is_none_or(|end| end > self.size()) {
            self.wrote_past_end = true;
            return Err(io::Error::other("write past the disk's end"));
        }
        self.apply(self.position, bytes);
        self.position += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Memory has no cache to flush; the power-cut model keeps its own.
impl DurableWrite for SparseDisk {
    fn make_durable(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::XorShift;

    #[test]
    fn copies_share_the_start_and_keep_their_own_writes() {
        // Three sectors and a partial one.
        let base: Vec<u8> = (0..3 * SECTOR + 100).map(|i| i as u8).collect();
        let disk = SparseDisk::new(base.clone());
        let mut copy = disk.clone();
        copy.seek(SeekFrom::Start(SECTOR as u64 - 2)).unwrap();
        copy.write_all(&[0xaa; 4]).unwrap();
        let mut read = vec![0; base.len()];
        copy.seek(SeekFrom::Start(0)).unwrap();
        copy.read_exact(&mut read).unwrap();
        let mut expected = base.clone();
        expected[SECTOR - 2..SECTOR + 2].fill(0xaa);
        assert!(read == expected);
        assert_eq!(copy.changes().map(|(n, _)| n).collect::<Vec<_>>(), [0, 1]);
        assert!(disk.changes().next().is_none() && disk.is_unchanged() && !copy.is_unchanged());
        assert!(!copy.holds_the_same_as(&disk) && !disk.holds_the_same_as(&copy));

        // Writing what is there is no change; the partial sector takes writes up to the end.
        let mut same = disk.clone();
        same.apply(SECTOR as u64, &base[SECTOR..2 * SECTOR]);
        assert!(same.changes().next().is_none() && same.is_unchanged() && same.holds_the_same_as(&disk) && disk.holds_the_same_as(&same));
        same.seek(SeekFrom::End(-1)).unwrap();
        same.write_all(&[0]).unwrap();
        assert_eq!(same.changes().collect::<Vec<_>>(), [(3, &[&base[3 * SECTOR..base.len() - 1], &[0u8][..]].concat()[..])]);
        assert!(!same.wrote_past_end());
        assert!(same.write_all(&[0]).is_err() && same.wrote_past_end());
        assert_eq!(same.size(), base.len() as u64);
    }

    #[test]
    fn a_disk_over_part_of_its_memory_ends_where_told() {
        let mut disk = SparseDisk::over(Rc::new(vec![7; 3 * SECTOR]), SECTOR + 10);
        assert_eq!((disk.size(), disk.base().len(), disk.sector(1).len()), (SECTOR as u64 + 10, SECTOR + 10, 10));
        let mut all = Vec::new();
        disk.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), SECTOR + 10);
        disk.seek(SeekFrom::End(-1)).unwrap();
        assert!(disk.write_all(&[1, 2]).is_err() && disk.wrote_past_end());
    }

    /// Writes of any size and place, across chunks and into the partial sector, read back
    /// and show up in `changes` as they would on the bytes themselves.
    #[test]
    fn behaves_as_the_bytes_it_stands_for() {
        let mut random = XorShift::new(7);
        let size = 3 * CHUNK + 5 * SECTOR + 100;
        let base = random.bytes(size);
        let disk = SparseDisk::new(base.clone());
        for _ in 0..200 {
            let (mut copy, mut model) = (disk.clone(), base.clone());
            for _ in 0..1 + random.below(4) {
                let at = random.below(size as u64) as usize;
                let len = 1 + random.below((size - at).min(2 * CHUNK) as u64) as usize;
                // Now and then what is already there, which is no change.
                let bytes = if random.below(4) == 0 { model[at..at + len].to_vec() } else { random.bytes(len) };
                copy.seek(SeekFrom::Start(at as u64)).unwrap();
                copy.write_all(&bytes).unwrap();
                model[at..at + len].copy_from_slice(&bytes);
            }
            let mut read = vec![0; size];
            copy.seek(SeekFrom::Start(0)).unwrap();
            copy.read_exact(&mut read).unwrap();
            assert!(read == model);
            let changed: Vec<(u64, &[u8])> =
                model.chunks(SECTOR).zip(base.chunks(SECTOR)).zip(0..).filter(|((now, was), _)| now != was).map(|((now, _), n)| (n, now)).collect();
            assert!(copy.changes().eq(changed.iter().copied()));
            assert_eq!(copy.is_unchanged(), changed.is_empty());
            assert_eq!(copy.holds_the_same_as(&disk), changed.is_empty());
            let mut again = copy.clone();
            assert!(again.holds_the_same_as(&copy));
            let at = random.below(size as u64);
            again.apply(at, &[model[at as usize]]);
            assert!(again.holds_the_same_as(&copy));
            again.apply(at, &[!model[at as usize]]);
            assert!(!again.holds_the_same_as(&copy) && !copy.holds_the_same_as(&again));
            assert!(changed.iter().all(|&(n, bytes)| copy.sector(n) == bytes));
        }
    }
}
