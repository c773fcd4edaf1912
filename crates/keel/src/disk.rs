//! The disk the `disk` and `usr` commands work on: an image file or a block device, with
//! the sector size its partition table is in.

use crate::args::Args;
use anyhow::{bail, Context};
use keel_disk::{logical_sector_size, SectorSize, SectorSizeMismatch};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileTypeExt;

/// What an image file is read with when `--sector-size` does not say: the size of most
/// images, and of every image keel built before it could build others.
const IMAGE_FILE_SECTOR_SIZE: SectorSize = SectorSize::Bytes512;

pub struct Disk {
    pub file: File,
    pub sector_size: SectorSize,
    pub block_device: bool,
    path: String,
}

impl Disk {
    /// `path`, for writing when `writable`. A block device is read in its logical sectors,
    /// as the kernel reads it (a `--sector-size` that differs is refused); an image file has
    /// none of its own, so it is read in `--sector-size` sectors, by default 512.
    pub fn open(path: &str, args: &Args, writable: bool) -> anyhow::Result<Disk> {
        let file = if writable {
            OpenOptions::new().read(true).write(true).open(path).with_context(|| format!("cannot open {path} for writing"))?
        } else {
            File::open(path).with_context(|| format!("cannot open {path}"))?
        };
        let asked: Option<SectorSize> = args.get("sector-size").map(str::parse).transpose().context("--sector-size")?;
        let block_device = file.metadata().with_context(|| format!("cannot stat {path}"))?.file_type().is_block_device();
        let sector_size = if block_device {
            let logical = logical_sector_size(&file).with_context(|| path.to_string())?;
            if let Some(asked) = asked.filter(|asked| *asked != logical) {
                bail!("{path} has {logical}, not {asked}: a block device is read in its own logical sectors; leave out --sector-size");
            }
            logical
        } else {
            asked.unwrap_or(IMAGE_FILE_SECTOR_SIZE)
        };
        Ok(Disk { file, sector_size, block_device, path: path.to_string() })
    }

    /// `error`, from reading or rewriting this disk's table, in this command's terms: an
    /// image file whose table was made for the other sector size is read with
    /// `--sector-size`, not rebuilt.
    pub fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        match error.downcast_ref::<SectorSizeMismatch>() {
            Some(mismatch) if !self.block_device => anyhow::anyhow!(
                "{} is an image file with a GPT made for {}, and was read with {}: give --sector-size {}",
                self.path,
                mismatch.table,
                self.sector_size,
                mismatch.table.bytes()
            ),
            _ => error,
        }
    }
}
