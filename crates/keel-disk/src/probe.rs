use crate::Guid;
use std::io::{Read, Seek, SeekFrom};

/// Enough to see every signature keel knows (btrfs's lies at 64 KiB) and to call a
/// partition blank only when a filesystem's first structures are all zero.
const PROBE_BYTES: usize = 128 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    /// ext2, ext3 and ext4 share a superblock; the kernel's ext4 driver mounts all three.
    Ext4,
    Xfs,
    Btrfs,
    Vfat,
    /// A Linux swap area: not mounted, but a format Ignition makes and must recognise.
    Swap,
}

impl FsKind {
    /// The name `mount(2)` takes.
    pub fn mount_type(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Vfat => "vfat",
            FsKind::Swap => "swap",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filesystem {
    pub kind: FsKind,
    pub label: String,
    pub uuid: String,
}

/// What the start of a partition holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Filesystem(Filesystem),
    /// All zero: nothing was ever written, safe to format.
    Blank,
    /// Data keel does not recognise: never to be formatted over.
    Unknown,
}

fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim_end().to_string()
}

fn uuid(bytes: &[u8]) -> String {
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&bytes[..16]);
    Guid(raw).to_string()
}

pub fn probe_filesystem(dev: &mut (impl Read + Seek)) -> std::io::Result<Probe> {
    let mut head = vec![0u8; PROBE_BYTES];
    dev.seek(SeekFrom::Start(0))?;
    let mut filled = 0;
    while filled < head.len() {
        match dev.read(&mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    head.truncate(filled);
    Ok(classify(&head))
}

/// `EXT4_FEATURE_INCOMPAT_RECOVER` in the superblock's `s_feature_incompat` (at 0x60): the
/// journal holds committed transactions not yet written in place.
const EXT4_INCOMPAT_RECOVER: u32 = 0x4;

/// Whether the ext4 superblock of `dev` says its journal must be replayed (it was not
/// unmounted cleanly); false for anything that is not ext4.
pub fn ext4_needs_recovery(dev: &mut (impl Read + Seek)) -> std::io::Result<bool> {
    let mut superblock = [0u8; 1024];
    dev.seek(SeekFrom::Start(1024))?;
    dev.read_exact(&mut superblock)?;
    if superblock[56..58] != [0x53, 0xef] {
        return Ok(false);
    }
    let incompat = u32::from_le_bytes([superblock[0x60], superblock[0x61], superblock[0x62], superblock[0x63]]);
    Ok(incompat & EXT4_INCOMPAT_RECOVER != 0)
}

fn classify(head: &[u8]) -> Probe {
    let at = |offset: usize, len: usize| head.get(offset..offset + len);
    let filesystem = |kind, label: &[u8], uuid: String| Probe::Filesystem(Filesystem { kind, label: text(label), uuid });
    if at(1024 + 56, 2) == Some(&[0x53, 0xef]) && head.len() >= 1024 + 136 {
        return filesystem(FsKind::Ext4, &head[1024 + 120..1024 + 136], uuid(&head[1024 + 104..]));
    }
    if at(0, 4) == Some(b"XFSB") && head.len() >= 120 {
        return filesystem(FsKind::Xfs, &head[108..120], uuid(&head[32..]));
    }
    if at(65536 + 64, 8) == Some(b"_BHRfS_M") && head.len() >= 65536 + 299 + 256 {
        return filesystem(FsKind::Btrfs, &head[65536 + 299..65536 + 299 + 256], uuid(&head[65536 + 32..]));
    }
    if at(510, 2) == Some(&[0x55, 0xaa]) {
        let fat = if at(82, 5) == Some(b"FAT32") {
            Some((67, 71))
        } else if at(54, 4) == Some(b"FAT1") {
            Some((39, 43))
        } else {
            None
        };
        if let Some((serial_at, label_at)) = fat {
            let serial = u32::from_le_bytes([head[serial_at], head[serial_at + 1], head[serial_at + 2], head[serial_at + 3]]);
            let uuid = format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff);
            // mkfs.fat writes "NO NAME" for no label, which blkid reports as none.
            let label = if &head[label_at..label_at + 11] == b"NO NAME    " { &[][..] } else { &head[label_at..label_at + 11] };
            return filesystem(FsKind::Vfat, label, uuid);
        }
    }
    // The swap header fills the first page, whose size the signature's place tells.
    for page in [4096, 8192, 16384, 65536] {
        if at(page - 10, 10).is_some_and(|magic| magic == b"SWAPSPACE2" || magic == b"SWAP-SPACE") {
            return filesystem(FsKind::Swap, &head[1024 + 28..1024 + 44], uuid(&head[1024 + 12..]));
        }
    }
    if head.iter().all(|&b| b == 0) {
        Probe::Blank
    } else {
        Probe::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn blank_unknown_and_synthetic_signatures() {
        assert_eq!(classify(&vec![0; PROBE_BYTES]), Probe::Blank);
        assert_eq!(classify(&[]), Probe::Blank);
        let mut junk = vec![0; PROBE_BYTES];
        junk[4000] = 1;
        assert_eq!(classify(&junk), Probe::Unknown);

        let mut xfs = vec![0; PROBE_BYTES];
        xfs[..4].copy_from_slice(b"XFSB");
        xfs[108..112].copy_from_slice(b"DATA");
        assert!(matches!(classify(&xfs), Probe::Filesystem(Filesystem { kind: FsKind::Xfs, ref label, .. }) if label == "DATA"));

        let mut btrfs = vec![0; PROBE_BYTES];
        btrfs[65536 + 64..65536 + 72].copy_from_slice(b"_BHRfS_M");
        assert!(matches!(classify(&btrfs), Probe::Filesystem(Filesystem { kind: FsKind::Btrfs, .. })));

        // mkswap's header, as `mkswap -L swap -U 0e6c1a6a-2b1e-4c55-8f6e-7a1d2c3b4a59` writes it.
        for page in [4096, 65536] {
            let mut swap = vec![0; PROBE_BYTES];
            swap[1024 + 12..1024 + 28].copy_from_slice(&Guid::parse("0e6c1a6a-2b1e-4c55-8f6e-7a1d2c3b4a59").unwrap().0);
            swap[1024 + 28..1024 + 32].copy_from_slice(b"swap");
            swap[page - 10..page].copy_from_slice(b"SWAPSPACE2");
            let expected = Filesystem { kind: FsKind::Swap, label: "swap".into(), uuid: "0e6c1a6a-2b1e-4c55-8f6e-7a1d2c3b4a59".into() };
            assert_eq!(classify(&swap), Probe::Filesystem(expected), "page {page}");
        }
    }

    #[test]
    fn short_heads_with_signatures_are_not_read_past_their_end() {
        let cases: [(usize, usize, &[u8]); 4] =
            [(1082, 1080, &[0x53, 0xef]), (1135, 1080, &[0x53, 0xef]), (119, 0, b"XFSB"), (65536 + 72, 65536 + 64, b"_BHRfS_M")];
        for (len, at, magic) in cases {
            let mut head = vec![0u8; len];
            head[at..at + magic.len()].copy_from_slice(magic);
            assert_eq!(classify(&head), Probe::Unknown, "{len} bytes with {magic:?}");
        }
    }

    #[test]
    fn reads_what_mkfs_ext4_wrote() {
        let path = std::env::temp_dir().join(format!("keel-probe-ext4-{}.img", std::process::id()));
        std::fs::write(&path, vec![0u8; 8 << 20]).unwrap();
        let status = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "ROOT", "-U", "0b9cdb6f-6f0e-4d6a-9d5e-5a1f1e1f2a3b"])
            .arg(&path)
            .status()
            .expect("mkfs.ext4 (e2fsprogs) must be installed");
        assert!(status.success());
        let probe = probe_filesystem(&mut std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(
            probe,
            Probe::Filesystem(Filesystem { kind: FsKind::Ext4, label: "ROOT".into(), uuid: "0b9cdb6f-6f0e-4d6a-9d5e-5a1f1e1f2a3b".into() })
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(probe_filesystem(&mut Cursor::new(vec![0u8; 100])).unwrap(), Probe::Blank);
    }

    #[test]
    fn sees_an_ext4_journal_that_needs_replaying() {
        let path = std::env::temp_dir().join(format!("keel-probe-recover-{}.img", std::process::id()));
        std::fs::write(&path, vec![0u8; 8 << 20]).unwrap();
        let run = |program: &str, args: &[&str]| {
            let status = std::process::Command::new(program).args(args).arg(&path).status().expect("e2fsprogs must be installed");
            assert!(status.success(), "{program} {args:?}");
        };
        run("mkfs.ext4", &["-q", "-F"]);
        assert!(!ext4_needs_recovery(&mut std::fs::File::open(&path).unwrap()).unwrap());
        // What a machine cut off while the filesystem was mounted leaves.
        run("debugfs", &["-w", "-R", "feature needs_recovery"]);
        assert!(ext4_needs_recovery(&mut std::fs::File::open(&path).unwrap()).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert!(!ext4_needs_recovery(&mut Cursor::new(vec![0u8; 4096])).unwrap());
    }
}
