//! Making filesystems with the initrd's mkfs programs, as Ignition runs them: the config's
//! options first, then the force, UUID and label flags, then the device.

use crate::first_boot::early_random_guid;
use anyhow::{bail, Context};
use keel_disk::FsKind;
use keel_manifest::initrd_mkfs_path;
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How much of each end of a device `wipe_signatures` zeroes: every superblock or header
/// keel's probe, blkid and the kernel look for at the start (btrfs's at 64 KiB, swap's in
/// its first page, LUKS, LVM) and at the end (md's 0.90 and 1.0, a GPT's backup).
const WIPE_BYTES: u64 = 1 << 20;

/// What one mkfs run makes.
pub struct NewFilesystem<'a> {
    pub kind: FsKind,
    pub label: Option<&'a str>,
    /// As the config writes it; `None` gets a random one (see `uuid_arguments`).
    pub uuid: Option<&'a str>,
    /// The config's own mkfs options, passed first.
    pub options: &'a [String],
}

/// The initrd's program that makes `kind`.
pub fn mkfs_program(kind: FsKind) -> PathBuf {
    PathBuf::from(initrd_mkfs_path(kind.mount_type()))
}

/// Whether the config's options already set what `flags` would (`-U x`, `-Ux`, `--uuid=x`):
/// keel then adds nothing.
fn options_set(options: &[String], flags: &[&str]) -> bool {
    options.iter().any(|option| flags.iter().any(|flag| option.starts_with(flag)))
}

/// The UUID arguments of one run. A UUID the config leaves out is drawn here rather than by
/// mkfs: libuuid inside mkfs waits for the entropy pool early in boot, about a second each.
fn uuid_arguments(filesystem: &NewFilesystem) -> anyhow::Result<Vec<String>> {
    let options = filesystem.options;
    let random = || early_random_guid().map(|guid| guid.to_string());
    Ok(match filesystem.kind {
        FsKind::Ext4 => {
            let mut arguments = Vec::new();
            if filesystem.uuid.is_some() || !options_set(options, &["-U"]) {
                arguments.extend(["-U".to_string(), filesystem.uuid.map_or_else(random, |uuid| Ok(uuid.to_lowercase()))?]);
            }
            arguments
        }
        FsKind::Xfs if filesystem.uuid.is_some() || !options.iter().any(|option| option.contains("uuid=")) => {
            vec!["-m".to_string(), format!("uuid={}", filesystem.uuid.map_or_else(random, |uuid| Ok(uuid.to_string()))?)]
        }
        FsKind::Btrfs | FsKind::Swap if filesystem.uuid.is_some() || !options_set(options, &["-U", "--uuid"]) => {
            vec!["-U".to_string(), filesystem.uuid.map_or_else(random, |uuid| Ok(uuid.to_string()))?]
        }
        FsKind::Vfat if filesystem.uuid.is_some() || !options_set(options, &["-i", "--volume-id"]) => {
            let serial = match filesystem.uuid {
                Some(uuid) => uuid.replace('-', ""),
                None => random()?.replace('-', "")[..8].to_string(),
            };
            vec!["-i".to_string(), serial]
        }
        FsKind::Xfs | FsKind::Btrfs | FsKind::Swap | FsKind::Vfat => Vec::new(),
    })
}

/// ext4 options with keel's directory hash seed (the other UUID mke2fs would draw) in the
/// last `-E` (mke2fs keeps only the last one): added to the config's own, or as an `-E` of
/// its own when the config has none; a seed the config sets is kept.
fn with_hash_seed(options: &[String]) -> anyhow::Result<Vec<String>> {
    let mut options = options.to_vec();
    let seed = || early_random_guid().map(|guid| format!("hash_seed={guid}"));
    let Some(last) = options.iter().rposition(|option| option.starts_with("-E")) else {
        options.extend(["-E".to_string(), seed()?]);
        return Ok(options);
    };
    let value_at = if options[last] == "-E" { last + 1 } else { last };
    if let Some(value) = options.get_mut(value_at).filter(|value| !value.contains("hash_seed=")) {
        // mke2fs refuses an empty item: no comma after a trailing one, none before the first.
        let seed = seed()?;
        let kept = value.trim_end_matches(',').len();
        value.truncate(kept);
        if !value.is_empty() && value != "-E" {
            value.push(',');
        }
        value.push_str(&seed);
    }
    Ok(options)
}

/// Runs the initrd's mkfs for `filesystem` on `device`.
pub fn make_filesystem(device: &Path, filesystem: &NewFilesystem) -> anyhow::Result<()> {
    let program = mkfs_program(filesystem.kind);
    if !program.exists() {
        bail!("this initrd has no {}: rebuild it with `keel initrd build --mkfs ...,{}`", program.display(), filesystem.kind.mount_type());
    }
    let mut command = crate::environment::command(&program.display().to_string());
    let options = match filesystem.kind {
        FsKind::Ext4 => with_hash_seed(filesystem.options)?,
        _ => filesystem.options.to_vec(),
    };
    command.args(options);
    // mkfs.fat has no force flag: it always writes.
    let force = match filesystem.kind {
        FsKind::Ext4 => Some("-F"),
        FsKind::Xfs => Some("-f"),
        FsKind::Btrfs => Some("--force"),
        FsKind::Swap => Some("-f"),
        FsKind::Vfat => None,
    };
    command.args(force);
    command.args(uuid_arguments(filesystem)?);
    if let Some(label) = filesystem.label {
        command.args([if filesystem.kind == FsKind::Vfat { "-n" } else { "-L" }, label]);
    }
    let output = command.arg(device).output().with_context(|| format!("cannot run {}", program.display()))?;
    if !output.status.success() {
        bail!("{} {} failed ({}): {}", program.display(), device.display(), output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    flush_device(device)
}

/// Zeroes the first and last MiB of `device`, where every signature keel or blkid would
/// take for a filesystem, a partition table or a volume lives; then flushes it.
pub fn wipe_signatures(device: &Path) -> anyhow::Result<()> {
    let mut file = OpenOptions::new().write(true).open(device).with_context(|| format!("cannot open {} to wipe it", device.display()))?;
    let size = file.seek(SeekFrom::End(0)).with_context(|| format!("cannot find the size of {}", device.display()))?;
    let zeros = vec![0u8; WIPE_BYTES.min(size) as usize];
    for offset in [0, size - zeros.len() as u64] {
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(&zeros).with_context(|| format!("cannot wipe {} at byte {offset}", device.display()))?;
    }
    file.sync_all().with_context(|| format!("cannot flush {}", device.display()))
}

/// Makes what was written to `device` durable: mkfs writes through the page cache, and a
/// mark cleared after it must not reach the disk before the filesystem does.
pub fn flush_device(device: &Path) -> anyhow::Result<()> {
    OpenOptions::new().write(true).open(device).and_then(|file| file.sync_all()).with_context(|| format!("cannot flush {}", device.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(kind: FsKind, uuid: Option<&str>, options: &[&str]) -> Vec<String> {
        let options: Vec<String> = options.iter().map(|option| option.to_string()).collect();
        uuid_arguments(&NewFilesystem { kind, label: None, uuid, options: &options }).unwrap()
    }

    #[test]
    fn the_configs_uuid_is_passed_in_each_formats_own_way() {
        let uuid = "6F9AD4E4-3B2C-4E1A-9B8D-2E2C5A1B7C3D";
        assert_eq!(arguments(FsKind::Ext4, Some(uuid), &[])[..2], ["-U", &uuid.to_lowercase()]);
        assert_eq!(arguments(FsKind::Xfs, Some(uuid), &[]), ["-m", &format!("uuid={uuid}")]);
        assert_eq!(arguments(FsKind::Btrfs, Some(uuid), &[]), ["-U", uuid]);
        assert_eq!(arguments(FsKind::Swap, Some(uuid), &[]), ["-U", uuid]);
        assert_eq!(arguments(FsKind::Vfat, Some("ABCD-1234"), &[]), ["-i", "ABCD1234"]);
    }

    #[test]
    fn a_uuid_the_options_set_is_not_overridden_and_none_given_is_drawn() {
        assert_eq!(arguments(FsKind::Btrfs, None, &["--uuid=x"]), Vec::<String>::new());
        assert_eq!(arguments(FsKind::Swap, None, &["-Ux"]), Vec::<String>::new());
        let ext4 = arguments(FsKind::Ext4, None, &["-E", "stride=8"]);
        assert!(ext4.len() == 2 && ext4[0] == "-U", "keel's -E would replace the config's: {ext4:?}");
        let seeded = |options: &[&str]| with_hash_seed(&options.iter().map(|o| o.to_string()).collect::<Vec<_>>()).unwrap();
        assert!(seeded(&["-E", "stride=8", "-m", "0"])[1].starts_with("stride=8,hash_seed="));
        assert!(seeded(&["-Elazy_itable_init=0"])[0].starts_with("-Elazy_itable_init=0,hash_seed="));
        assert_eq!(seeded(&["-E", "hash_seed=mine"]), ["-E", "hash_seed=mine"]);
        let unseeded = seeded(&["-m", "0"]);
        assert_eq!((&unseeded[..3], unseeded[3].starts_with("hash_seed=")), (&["-m".to_string(), "0".to_string(), "-E".to_string()][..], true));
        assert!(seeded(&["-E", "stride=8,"])[1].starts_with("stride=8,hash_seed="));
        assert!(seeded(&["-E", ""])[1].starts_with("hash_seed="));
        assert!(seeded(&["-E"])[0] == "-E", "a dangling -E is left to mke2fs to refuse");
        assert_eq!(arguments(FsKind::Xfs, None, &["-m", "uuid=x"]), Vec::<String>::new());
        assert_eq!(arguments(FsKind::Vfat, None, &["-i", "12345678"]), Vec::<String>::new());
        let drawn = arguments(FsKind::Vfat, None, &[]);
        assert_eq!(drawn[0], "-i");
        assert!(drawn[1].len() == 8 && drawn[1].chars().all(|c| c.is_ascii_hexdigit()), "{drawn:?}");
        let ext4 = arguments(FsKind::Ext4, None, &[]);
        assert_eq!(ext4[0], "-U");
        let seed = seeded(&[]);
        assert_eq!(seed[0], "-E");
        assert!(seed[1].starts_with("hash_seed="));
    }
}
