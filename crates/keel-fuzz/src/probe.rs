//! `keel_disk::probe_filesystem` on a device whose bytes are the input. Held to: only the
//! first 128 KiB count; the device is blank exactly when they are all zero (ROOT is
//! formatted only when blank, so a wrong Blank formats over data); where the device was
//! left positioned and how many bytes each read hands out change nothing; a filesystem's
//! label and UUID are clean text.

use crate::Seed;
use keel_disk::{probe_filesystem, FsKind, Probe};
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};

/// How much of a device keel-disk looks at (its private PROBE_BYTES).
const PROBE_BYTES: usize = 128 * 1024;

/// A device whose reads hand out at most `chunk` bytes at a time, as a short read may.
struct ShortReads<'a> {
    device: Cursor<&'a [u8]>,
    chunk: usize,
}

impl Read for ShortReads<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let len = buffer.len().min(self.chunk);
        self.device.read(&mut buffer[..len])
    }
}

impl Seek for ShortReads<'_> {
    fn seek(&mut self, position: SeekFrom) -> std::io::Result<u64> {
        self.device.seek(position)
    }
}

fn probe(device: &mut (impl Read + Seek)) -> Probe {
    probe_filesystem(device).expect("reading from memory cannot fail")
}

pub fn run(input: &[u8]) {
    let mut device = Cursor::new(input);
    device.set_position(input.len() as u64 / 2);
    let found = probe(&mut device);
    let head = &input[..input.len().min(PROBE_BYTES)];
    assert_eq!(
        found == Probe::Blank,
        head.iter().all(|&b| b == 0),
        "{found:?} for a head that is {}all zero",
        if found == Probe::Blank { "not " } else { "" }
    );
    assert_eq!(probe(&mut Cursor::new(head)), found, "bytes past the first {PROBE_BYTES} changed the answer");
    let chunk = 1 + input.len() % 4099;
    assert_eq!(probe(&mut ShortReads { device: Cursor::new(input), chunk }), found, "reads of {chunk} bytes changed the answer");
    if let Probe::Filesystem(filesystem) = &found {
        let label = &filesystem.label;
        assert!(!label.contains('\0') && label.trim_end() == label, "label {label:?} has a NUL or trailing space");
        let uuid = &filesystem.uuid;
        // vfat's is its volume serial in upper-case hex; the others' are GUIDs in lower case.
        let (groups, letters) = match filesystem.kind {
            FsKind::Vfat => (&[4, 4][..], 'A'..='F'),
            _ => (&[8, 4, 4, 4, 12][..], 'a'..='f'),
        };
        let shape: Vec<usize> = uuid.split('-').map(str::len).collect();
        let hex = |c: char| c.is_ascii_digit() || letters.contains(&c);
        assert!(shape == groups && uuid.chars().all(|c| c == '-' || hex(c)), "{:?} UUID {uuid:?}", filesystem.kind);
    }
}

/// The first `keep` bytes of a `size_mib` MiB image made by `mkfs`, with options that fix
/// its label and UUID.
fn made_by(mkfs: &[&str], size_mib: u64, keep: usize) -> Vec<u8> {
    let path = std::env::temp_dir().join(format!("keel-fuzz-probe-seed-{}.img", std::process::id()));
    std::fs::File::create(&path).and_then(|file| file.set_len(size_mib << 20)).expect("a sparse image in the temporary directory");
    run_mkfs(mkfs, &path);
    let mut head = std::fs::read(&path).expect("reading the image back");
    std::fs::remove_file(&path).expect("removing the image");
    head.truncate(keep);
    head
}

fn run_mkfs(mkfs: &[&str], image: &Path) {
    // A fixed time where the tool takes one, so that its superblock is the same every time.
    let mut command = Command::new(mkfs[0]);
    command.args(&mkfs[1..]).arg(image).env("E2FSPROGS_FAKE_TIME", "1").env("SOURCE_DATE_EPOCH", "1").stdout(Stdio::null());
    let status = command.status();
    assert!(status.is_ok_and(|s| s.success()), "{mkfs:?} failed: cargo xtask setup installs the mkfs tools");
}

pub fn seeds() -> Vec<Seed> {
    const UUID: &str = "0b9cdb6f-6f0e-4d6a-9d5e-5a1f1e1f2a3b";
    let hash_seed = format!("hash_seed={UUID}");
    let xfs_uuid = format!("uuid={UUID}");
    // Each keeps what the probe reads of that filesystem: ext4's superblock at 1 KiB, the
    // first sector of XFS and vfat, btrfs's superblock at 64 KiB.
    vec![
        Seed { name: "ext4", bytes: made_by(&["mkfs.ext4", "-q", "-F", "-L", "ROOT", "-U", UUID, "-E", &hash_seed], 8, 4096) },
        Seed { name: "xfs", bytes: made_by(&["mkfs.xfs", "-q", "-f", "-L", "ROOT", "-m", &xfs_uuid], 320, 512) },
        Seed { name: "btrfs", bytes: made_by(&["mkfs.btrfs", "-q", "-f", "-L", "ROOT", "-U", UUID], 128, 65536 + 4096) },
        Seed { name: "vfat", bytes: made_by(&["mkfs.vfat", "--invariant", "-i", "0b9cdb6f", "-n", "EFI-SYSTEM"], 64, 512) },
        Seed { name: "blank", bytes: vec![0; 4096] },
    ]
}
