/// The logical sector size a disk is read and written with: the unit of every LBA in its
/// partition table. It belongs to the device (the kernel's logical block size), not to
/// what the device holds, so keel is always told it and never guesses it from content.
/// A table made for one size is not where a reader of the other size looks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SectorSize {
    /// Image files, virtio's default, and most disks (512e drives included).
    Bytes512,
    /// 4Kn drives, and disks that present 4096-byte logical blocks (some NVMe namespaces).
    Bytes4096,
}

impl SectorSize {
    pub const ALL: [SectorSize; 2] = [SectorSize::Bytes512, SectorSize::Bytes4096];

    /// The size for `bytes`; keel handles 512 and 4096, the sizes disks present.
    pub fn new(bytes: u64) -> anyhow::Result<SectorSize> {
        match bytes {
            512 => Ok(SectorSize::Bytes512),
            4096 => Ok(SectorSize::Bytes4096),
            _ => anyhow::bail!("a logical sector size of {bytes} bytes is not one keel handles: it handles 512 and 4096"),
        }
    }

    pub const fn bytes(self) -> u64 {
        match self {
            SectorSize::Bytes512 => 512,
            SectorSize::Bytes4096 => 4096,
        }
    }

    /// The other size keel handles: where a table made for the wrong size would be.
    pub fn other(self) -> SectorSize {
        match self {
            SectorSize::Bytes512 => SectorSize::Bytes4096,
            SectorSize::Bytes4096 => SectorSize::Bytes512,
        }
    }
}

impl std::fmt::Display for SectorSize {
    /// `512-byte sectors`, as messages use it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-byte sectors", self.bytes())
    }
}

impl std::str::FromStr for SectorSize {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<SectorSize> {
        let bytes = text.parse().map_err(|_| anyhow::anyhow!("sector size {text:?} is not a number: give 512 or 4096"))?;
        SectorSize::new(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sizes_disks_present() {
        for size in SectorSize::ALL {
            assert_eq!(SectorSize::new(size.bytes()).unwrap(), size);
            assert_eq!(size.bytes().to_string().parse::<SectorSize>().unwrap(), size);
            assert_eq!(size.other().other(), size);
        }
        for bytes in [0, 256, 520, 1024, 2048, 8192] {
            assert!(SectorSize::new(bytes).unwrap_err().to_string().contains("512 and 4096"), "{bytes}");
        }
        assert!("4k".parse::<SectorSize>().is_err());
        assert_eq!(SectorSize::Bytes4096.to_string(), "4096-byte sectors");
    }
}
