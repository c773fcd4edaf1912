//! `cargo xtask bench look`: one look at the block devices, as keel-init makes it, with 64
//! sparse 16 TiB loop devices attached: blank, MBR-partitioned, whole-disk ext4, and
//! carrying a keel (Flatcar-layout) table whose backup is at the image's end, some with a
//! damaged primary. The cost of a look must not grow with the disks' sizes. (Where loop
//! partition scanning is unavailable, as in some sandboxes, the partitions do not appear and
//! only the disks are looked at; each partition adds one superblock probe.)

use anyhow::{ensure, Context};
use keel_disk::{flatcar_layout, plan_layout, read_gpt, write_gpt, Guid, LayoutSizes, SectorSize};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DISKS: usize = 64;
/// The largest file ext4 holds: 16 TiB less one block.
const DISK_BYTES: u64 = (16 << 40) - 4096;
const LOOKS: usize = 7;
/// The loop devices' logical sector size (losetup's default), and so their tables'.
const SECTOR_SIZE: SectorSize = SectorSize::Bytes512;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Blank,
    Mbr,
    WholeDiskExt4,
    KeelImage,
    KeelImageTornPrimary,
}

impl Kind {
    fn of(index: usize) -> Kind {
        // Whole-disk ext4 costs 300 MB of metadata each, so there are fewer of them.
        match index % 8 {
            0 | 5 => Kind::Blank,
            1 | 6 => Kind::Mbr,
            2 => Kind::WholeDiskExt4,
            3 | 7 => Kind::KeelImage,
            _ => Kind::KeelImageTornPrimary,
        }
    }
}

fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output().with_context(|| format!("cannot run {:?}", command.get_program()))?;
    ensure!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

/// Makes the sparse file at `path` a disk of `kind`.
fn make_disk(path: &Path, kind: Kind) -> anyhow::Result<()> {
    File::create(path)?.set_len(DISK_BYTES)?;
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    match kind {
        Kind::Blank => {}
        Kind::Mbr => {
            // One Linux partition from sector 2048 to the 2 TiB an MBR can describe.
            let mut mbr = [0u8; 512];
            mbr[446..462].copy_from_slice(&[0, 0, 0, 0, 0x83, 0, 0, 0, 0, 8, 0, 0, 0xff, 0xff, 0xff, 0xff]);
            mbr[510] = 0x55;
            mbr[511] = 0xaa;
            file.write_all(&mbr)?;
        }
        Kind::WholeDiskExt4 => {
            run(Command::new("mkfs.ext4").args(["-q", "-F", "-O", "^has_journal", "-E", "nodiscard,lazy_itable_init=1", "-L", "DATA"]).arg(path))?;
        }
        Kind::KeelImage | Kind::KeelImageTornPrimary => {
            // The table as `keel image build` writes it for the default layout, on an image
            // that was then written to this bigger disk: the backup stays at the image's end.
            let layout = plan_layout(&flatcar_layout(&LayoutSizes::default())?, SECTOR_SIZE, |p| Guid::from_random_bytes([p.number as u8; 16]))?;
            let mut image = tempfile_for(path)?;
            image.set_len(layout.disk_bytes)?;
            write_gpt(&mut image, SECTOR_SIZE, Guid::parse(keel_disk::IMAGE_DISK_GUID)?, &layout.partitions)?;
            // The MBR and primary before the usable sectors, the backup after them.
            let table = read_gpt(&mut image, SECTOR_SIZE)?;
            let mut head = vec![0u8; (table.first_usable * SECTOR_SIZE.bytes()) as usize];
            let mut tail = vec![0u8; (layout.disk_bytes - (table.last_usable + 1) * SECTOR_SIZE.bytes()) as usize];
            use std::io::Read;
            image.seek(SeekFrom::Start(0))?;
            image.read_exact(&mut head)?;
            image.seek(SeekFrom::End(-(tail.len() as i64)))?;
            image.read_exact(&mut tail)?;
            if let Kind::KeelImageTornPrimary = kind {
                head[SECTOR_SIZE.bytes() as usize + 8] ^= 0xff;
            }
            file.write_all(&head)?;
            file.seek(SeekFrom::Start(layout.disk_bytes - tail.len() as u64))?;
            file.write_all(&tail)?;
        }
    }
    Ok(())
}

/// A scratch file beside `path` for the image's table, removed again once made.
fn tempfile_for(path: &Path) -> anyhow::Result<File> {
    let scratch = path.with_extension("table");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&scratch)?;
    std::fs::remove_file(&scratch)?;
    Ok(file)
}

/// Loop devices for the disks, with their partitions (`-P`), detached again on drop.
struct Loops(Vec<String>);

impl Drop for Loops {
    fn drop(&mut self) {
        for device in &self.0 {
            let _ = Command::new("losetup").args(["--detach", device]).status();
        }
    }
}

fn keel_binary(workspace: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).current_dir(workspace).args(["build", "--quiet", "--release", "-p", "keel"]))?;
    Ok(workspace.join("target/release/keel"))
}

/// The median wall time keel reports for one look at `spec`, and its last report.
fn looks(keel: &Path, spec: &str, image_bytes: u64) -> anyhow::Result<(Duration, String)> {
    let mut times = Vec::new();
    let mut report = String::new();
    for _ in 0..LOOKS {
        // A spec nothing matches still looks at every device: the worst case.
        let output = Command::new(keel).args(["disk", "find", spec, "--image-bytes", &image_bytes.to_string()]).output()?;
        report = String::from_utf8_lossy(&output.stdout).to_string();
        let ms: f64 = report
            .lines()
            .find_map(|line| line.strip_prefix("look: "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|ms| ms.parse().ok())
            .with_context(|| format!("keel disk find printed no timing: {report}{}", String::from_utf8_lossy(&output.stderr)))?;
        times.push(Duration::from_secs_f64(ms / 1000.0));
    }
    times.sort();
    Ok((times[LOOKS / 2], report))
}

pub fn look(workspace: &Path) -> anyhow::Result<()> {
    let keel = keel_binary(workspace)?;
    let dir = workspace.join("target/bench-look");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    eprintln!("bench look: making {DISKS} sparse disks of {} bytes ...", DISK_BYTES);
    let mut loops = Loops(Vec::new());
    for index in 0..DISKS {
        let path = dir.join(format!("disk{index:02}.img"));
        make_disk(&path, Kind::of(index))?;
        let device = run(Command::new("losetup").args(["--find", "--show", "--partscan"]).arg(&path))?;
        loops.0.push(device.trim().to_string());
    }
    let image_bytes = plan_layout(&flatcar_layout(&LayoutSizes::default())?, SECTOR_SIZE, |_| Guid::ZERO)?.disk_bytes;
    println!("bench look: {DISKS} loop devices of 16 TiB (blank, MBR, whole-disk ext4, keel table, keel table with a damaged primary)");
    for spec in [
        "PARTUUID=01234567-89ab-4cde-8f01-23456789abcd",
        "PARTLABEL=NO-SUCH-PARTITION",
        "LABEL=NO-SUCH-LABEL",
        "UUID=01234567-89ab-4cde-8f01-23456789abcd",
    ] {
        let (median, report) = looks(&keel, spec, image_bytes)?;
        let devices = report.lines().filter(|line| line.starts_with("seen: ")).count();
        println!("bench look: {spec:<48} one look: {:>8.2} ms (median of {LOOKS}), {devices} devices or disks seen", median.as_secs_f64() * 1000.0);
    }
    drop(loops);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
