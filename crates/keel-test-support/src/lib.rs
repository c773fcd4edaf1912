//! Helpers the tests of several keel crates share; a dev-dependency (and the VM and fuzz
//! harnesses'), never part of what keel ships.

pub mod ignition;
mod loop_device;
mod sparse_disk;

pub use loop_device::{as_disk, LoopDevice};
pub use sparse_disk::SparseDisk;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// This process's own directory under `base` (a test's `CARGO_TARGET_TMPDIR`, say), so
/// test processes running at the same time never share a file. The directories of
/// processes that have ended are deleted here, so a process's files stay, to be looked at
/// after a failure, until the next test process starts.
pub fn process_dir(base: impl AsRef<Path>) -> PathBuf {
    let base = base.as_ref();
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let ended = name.to_str().and_then(|n| n.strip_prefix("keel-")).and_then(|pid| pid.parse::<u32>().ok()).is_some_and(|pid| {
            // A process sharing the target directory from another PID namespace would
            // look ended; no one runs keel's tests that way.
            !Path::new("/proc").join(pid.to_string()).exists()
        });
        if ended {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = base.join(format!("keel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// An empty directory `name` of this process's own under `base`; one per test.
pub fn scratch_dir(base: impl AsRef<Path>, name: &str) -> PathBuf {
    let dir = process_dir(base).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Bytes at `path` that pass for a bzImage of `release` (the boot protocol's magic and version string).
pub fn fake_kernel(path: &Path, release: &str) {
    let mut kernel = vec![0x90u8; 1 << 20];
    kernel[0x202..0x206].copy_from_slice(b"HdrS");
    kernel[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
    let version = format!("{release} (test@keel) #1 SMP\0");
    kernel[0x300..0x300 + version.len()].copy_from_slice(version.as_bytes());
    std::fs::write(path, kernel).unwrap();
}

/// A kernel module directory at `dir/lib/modules/6.1.0-test`, shaped like Debian's cloud
/// kernel where an initrd needs it (virtio, SCSI, dm-verity, overlay, FAT, fw_cfg, xfs, a
/// crypto provider for sha256), each module a few bytes of text, with its modules.dep,
/// modules.alias and modules.builtin.
pub fn fake_kernel_modules(dir: &Path) -> PathBuf {
    let modules = dir.join("lib/modules/6.1.0-test");
    for path in [
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/virtio/virtio_pci.ko",
        "kernel/drivers/block/virtio_blk.ko",
        "kernel/drivers/scsi/virtio_scsi.ko",
        "kernel/drivers/scsi/scsi_mod.ko",
        "kernel/drivers/scsi/sd_mod.ko",
        "kernel/drivers/md/dm-mod.ko",
        "kernel/drivers/md/dm-verity.ko",
        "kernel/fs/overlayfs/overlay.ko",
        "kernel/drivers/firmware/qemu_fw_cfg.ko",
        "kernel/fs/fat/fat.ko",
        "kernel/fs/fat/vfat.ko",
        "kernel/fs/nls/nls_cp437.ko",
        "kernel/fs/nls/nls_ascii.ko",
        "kernel/lib/libcrc32c.ko",
        "kernel/fs/xfs/xfs.ko",
    ] {
        std::fs::create_dir_all(modules.join(path).parent().unwrap()).unwrap();
        std::fs::write(modules.join(path), format!("module {path}")).unwrap();
    }
    std::fs::write(modules.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\nkernel/drivers/nvme/host/nvme.ko\n").unwrap();
    std::fs::write(
        modules.join("modules.alias"),
        "alias crypto-sha256 sha256_ssse3\nalias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\nalias virtio:d00000002v* virtio_blk\n\
         alias virtio:d00000008v* virtio_scsi\nalias scsi:t-0x00* sd_mod\nalias scsi:t-0x0e* sd_mod\n",
    )
    .unwrap();
    std::fs::create_dir_all(modules.join("kernel/arch/x86/crypto")).unwrap();
    std::fs::write(modules.join("kernel/arch/x86/crypto/sha256-ssse3.ko"), "module sha256").unwrap();
    std::fs::write(
        modules.join("modules.dep"),
        "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
         kernel/drivers/virtio/virtio.ko:\nkernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko\n\
         kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
         kernel/drivers/scsi/virtio_scsi.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
         kernel/drivers/scsi/scsi_mod.ko:\nkernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko\n\
         kernel/drivers/md/dm-mod.ko:\nkernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-mod.ko\n\
         kernel/fs/overlayfs/overlay.ko:\nkernel/drivers/firmware/qemu_fw_cfg.ko:\n\
         kernel/fs/fat/fat.ko:\nkernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko\nkernel/fs/nls/nls_cp437.ko:\nkernel/fs/nls/nls_ascii.ko:\n\
         kernel/lib/libcrc32c.ko:\nkernel/fs/xfs/xfs.ko: kernel/lib/libcrc32c.ko\nkernel/arch/x86/crypto/sha256-ssse3.ko:\n",
    )
    .unwrap();
    modules
}

/// `program args...`'s stdout; panics with its output when it cannot run or fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program} (`cargo xtask setup` installs it): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{program} {args:?} failed ({}): {stdout}{}", output.status, String::from_utf8_lossy(&output.stderr));
    stdout
}

/// The virtual environment `cargo xtask setup` installs the pinned PyPI tools into
/// (xtask/python-requirements.txt): the workspace's `target/python`.
pub fn python_venv() -> PathBuf {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("/"));
    crates.parent().unwrap_or(Path::new("/")).join("target/python")
}

/// A command of the PyPI tools (`virt-fw-vars`, `pe-inspect`, `pyspdxtools`, ...);
/// panics naming the set-up step when it is not installed.
pub fn python_tool(name: &str) -> PathBuf {
    let tool = python_venv().join("bin").join(name);
    assert!(tool.is_file(), "{} is missing: `cargo xtask setup` installs the PyPI tools", tool.display());
    tool
}

/// Writes `bytes` at `offset` of the file at `path`.
pub fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    file.write_all_at(bytes, offset).unwrap();
}

/// Tears the primary GPT header of the disk image at `path`, whose table is in sectors of
/// `sector_bytes`, as a write cut short would: its checksum no longer matches, the backup
/// is intact.
pub fn damage_primary_gpt(path: &Path, sector_bytes: u64) {
    overwrite(path, sector_bytes + 8, b"garbage!");
}

/// Breaks both GPT headers of the disk (image) at `path`, whose table is in sectors of
/// `sector_bytes`: the primary, and the backup in the file's last sector (where it is
/// unless the image was copied to a bigger disk).
pub fn damage_both_gpts(path: &Path, sector_bytes: u64) {
    // Seeking finds a block device's size too, which its metadata does not give.
    let len = std::io::Seek::seek(&mut std::fs::File::open(path).unwrap(), std::io::SeekFrom::End(0)).unwrap();
    overwrite(path, sector_bytes, b"NOT PART");
    overwrite(path, len - sector_bytes, b"NOT PART");
}

/// xorshift64: reproducible cases without a dependency; the point is odd values, not
/// randomness.
pub struct XorShift(u64);

impl XorShift {
    /// Any seed: xorshift would stay at 0 for ever, so the lowest bit is set.
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Below `n` (not quite uniform, which these tests do not need).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `len` bytes, each the low byte of one step.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
