//! The initrd archive: the same inputs give the same bytes, and GNU cpio (the reference
//! reader of the format) extracts exactly what keel put in.

use keel_initrd::{archive, build, choose_drivers, library_closure, parse_mkfs_formats, Compression, DriverChoice, InitrdSpec, Node, Source};
use keel_manifest::{ImageManifest, UsrImage};
use keel_test_support::{fake_kernel_modules, scratch_dir};
use keel_verity::VerityParams;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn spec(dir: &Path) -> InitrdSpec {
    fs::create_dir_all(dir).unwrap();
    let init = dir.join("keel-init");
    fs::write(&init, b"\x7fELF pretend init").unwrap();
    InitrdSpec {
        init,
        manifest: ImageManifest {
            os: "keel".into(),
            image_bytes: 1 << 30,
            sector_size: keel_manifest::SectorSize::Bytes512,
            usr: UsrImage { filesystem: "ext4".into(), hash_offset: 4096 * 100, root_hash: vec![3; 32], verity: VerityParams::new(100, vec![9; 32]) },
        },
        modules_dir: fake_kernel_modules(dir),
        modules: keel_initrd::default_modules(),
        drivers: keel_initrd::DriverChoice::Default,
        root_filesystems: vec!["ext4".into(), "xfs".into()],
        // As `keel initrd build` without --mkfs.
        mkfs_formats: vec!["ext4".into(), "xfs".into()],
        host_root: PathBuf::from("/"),
        ignition_base: None,
    }
}

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("initrd-{name}"))
}

/// `spec` with every format's program packed (`--mkfs ext4,xfs,btrfs,vfat,swap`).
fn every_mkfs_spec(dir: &Path) -> InitrdSpec {
    InitrdSpec { mkfs_formats: keel_manifest::MKFS_FORMATS.iter().map(|format| format.to_string()).collect(), ..spec(dir) }
}

#[test]
fn same_inputs_give_the_same_bytes_with_every_compression() {
    let (one, two) = (every_mkfs_spec(&scratch("one")), every_mkfs_spec(&scratch("two")));
    for compression in Compression::ALL {
        let first = build(&one, compression).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let second = build(&two, compression).unwrap();
        assert!(first == second, "{compression:?}: the initrds differ");
    }
}

#[test]
fn every_packed_file_says_where_its_bytes_came_from() {
    let dir = scratch("sources");
    let spec = ignition_spec(&dir);
    let packed = archive(&spec).unwrap();
    let files = packed.files().unwrap();
    let regular: Vec<&str> = packed.archive.paths().filter(|path| matches!(packed.archive.get(path), Some(Node::File { .. }))).collect();
    assert_eq!(files.iter().map(|file| file.path).collect::<Vec<_>>(), regular);
    let source = |path: &str| files.iter().find(|file| file.path == path).map(|file| file.source.clone());
    assert_eq!(source("init"), Some(Source::KeelBinary(spec.init.clone())));
    assert_eq!(source("etc/keel/image.json"), Some(Source::Generated));
    assert_eq!(source("etc/keel/drivers"), Some(Source::Generated));
    let module = spec.modules_dir.join("kernel/drivers/md/dm-verity.ko");
    assert_eq!(
        source("lib/modules/6.1.0-test/kernel/drivers/md/dm-verity.ko"),
        Some(Source::KernelModule { modules_dir: spec.modules_dir.clone(), file: module })
    );
    let mkfs = PathBuf::from("/usr/sbin/mkfs.ext4");
    assert_eq!(source("usr/sbin/mkfs.ext4"), Some(Source::Host { path_in_root: "/usr/sbin/mkfs.ext4".into(), host_path: mkfs }));
    let Some(Source::Host { path_in_root, .. }) = source("lib/x86_64-linux-gnu/libc.so.6") else { panic!("libc has no host source") };
    assert_eq!(path_in_root, "/lib/x86_64-linux-gnu/libc.so.6", "as ld.so finds it, for dpkg's database");
    let config = spec.ignition_base.clone().unwrap().join("base.platform.d/qemu/qemu.ign");
    assert_eq!(source("usr/lib/ignition/base.platform.d/qemu/qemu.ign"), Some(Source::IgnitionBase(config)));
    for file in &files {
        if let Some(input) = file.source.input() {
            assert_eq!(fs::read(input).unwrap(), file.data, "/{} is not its source's bytes", file.path);
        }
    }
}

#[test]
fn gnu_cpio_extracts_what_keel_packed() {
    let dir = scratch("extract");
    let spec = spec(&dir);
    let tree = archive(&spec).unwrap().archive;
    let out = dir.join("out");
    fs::create_dir_all(&out).unwrap();
    let mut cpio = Command::new("cpio")
        .args(["-idm", "--quiet", "--no-absolute-filenames"])
        .current_dir(&out)
        .stdin(Stdio::piped())
        .spawn()
        .expect("GNU cpio must be installed; `cargo xtask test` installs it");
    use std::io::Write;
    cpio.stdin.take().unwrap().write_all(&tree.to_newc()).unwrap();
    assert!(cpio.wait().unwrap().success());

    assert_eq!(fs::read(out.join("init")).unwrap(), b"\x7fELF pretend init");
    let modules = fs::read_to_string(out.join("etc/keel/modules")).unwrap();
    let order: Vec<&str> = modules.lines().map(|l| l.rsplit('/').next().unwrap()).collect();
    assert_eq!(order, ["dm-mod.ko", "dm-verity.ko", "overlay.ko", "sha256-ssse3.ko"], "every boot loads these");
    // Only first boot mounts the ESP and reads fw_cfg: their modules wait in lists of their own.
    let on_demand = |name: &str| {
        let entries = keel_kmod::LoadEntry::parse_list(&fs::read_to_string(out.join("etc/keel/modules.d").join(name)).unwrap());
        for entry in &entries {
            assert!(out.join(entry.path.trim_start_matches('/')).is_file(), "{} of list {name} not packed", entry.path);
        }
        entries.iter().map(|entry| entry.path.rsplit('/').next().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(on_demand("vfat"), ["fat.ko", "vfat.ko", "nls_cp437.ko", "nls_ascii.ko"]);
    assert_eq!(on_demand("qemu_fw_cfg"), ["qemu_fw_cfg.ko"]);
    // The default drivers this kernel has as modules, each with its aliases and its files,
    // dependencies first; nvme is built in and ahci missing, so neither is there.
    let drivers = keel_kmod::DriverTable::parse(&fs::read_to_string(out.join("etc/keel/drivers")).unwrap()).unwrap();
    assert_eq!(drivers.drivers().collect::<Vec<_>>(), ["sd_mod", "virtio_blk", "virtio_pci", "virtio_scsi"]);
    let stems = |files: &[keel_kmod::LoadEntry]| files.iter().map(|f| f.path.rsplit('/').next().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(stems(drivers.load_list("virtio_scsi")), ["scsi_mod.ko", "virtio.ko", "virtio_ring.ko", "virtio_scsi.ko"]);
    assert_eq!(stems(drivers.load_list("sd_mod")), ["scsi_mod.ko", "sd_mod.ko"]);
    assert_eq!(drivers.drivers_for("scsi:t-0x0e"), ["sd_mod"]);
    assert_eq!(drivers.drivers_for("pci:v00001AF4d00001004sv00001AF4sd00000008bc01sc00i00"), ["virtio_pci"]);
    for driver in drivers.drivers() {
        for file in drivers.load_list(driver) {
            assert!(out.join(file.path.trim_start_matches('/')).is_file(), "{} of driver {driver} not packed", file.path);
        }
    }
    let xfs = fs::read_to_string(out.join("etc/keel/modules.d/xfs")).unwrap();
    assert_eq!(xfs.lines().map(|l| l.rsplit('/').next().unwrap()).collect::<Vec<_>>(), ["libcrc32c.ko", "xfs.ko"]);
    assert_eq!(fs::read_to_string(out.join("etc/keel/modules.d/ext4")).unwrap(), "", "ext4 is built in");
    assert!(!out.join("etc/keel/modules.d/btrfs").exists(), "btrfs was not asked for");
    assert_eq!(fs::read(out.join("usr/sbin/mkfs.xfs")).unwrap(), fs::read("/usr/sbin/mkfs.xfs").unwrap());
    for line in modules.lines() {
        assert!(out.join(line.trim_start_matches('/')).is_file(), "{line} listed but not packed");
    }
    let manifest = ImageManifest::from_json(&fs::read_to_string(out.join("etc/keel/image.json")).unwrap()).unwrap();
    assert_eq!(manifest, spec.manifest);
    assert_eq!(fs::read(out.join("usr/sbin/mkfs.ext4")).unwrap(), fs::read("/usr/sbin/mkfs.ext4").unwrap());
    assert!(out.join("lib64/ld-linux-x86-64.so.2").is_file(), "the ELF interpreter is missing");
    // GNU cpio as an unprivileged extractor may not make device nodes; the listing shows it.
    let listing = Command::new("cpio").args(["-itv", "--quiet"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut listing = listing;
    listing.stdin.take().unwrap().write_all(&tree.to_newc()).unwrap();
    let text = String::from_utf8(listing.wait_with_output().unwrap().stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("crw-------") && l.contains("5,   1") && l.ends_with("dev/console")), "{text}");
}

#[test]
fn driver_choices() {
    let dir = scratch("drivers");
    let index = keel_kmod::ModuleIndex::read(&fake_kernel_modules(&dir)).unwrap();
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let default = choose_drivers(&DriverChoice::parse("default").unwrap(), &index).unwrap();
    assert_eq!(default.packed, names(&["virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod"]));
    assert_eq!((default.built_in, default.not_in_kernel), (names(&["nvme"]), names(&["ahci"])));

    let named = choose_drivers(&DriverChoice::parse("virtio-blk, nvme").unwrap(), &index).unwrap();
    assert_eq!((named.packed, named.built_in), (names(&["virtio_blk"]), names(&["nvme"])));
    let library = choose_drivers(&DriverChoice::parse("virtio_ring,virtio_blk").unwrap(), &index).unwrap();
    assert_eq!(library.never_asked_for, names(&["virtio_ring"]), "a module no device asks for is never loaded");
    assert!(library.describe().contains("WARNING: no device asks for virtio_ring"), "{}", library.describe());
    let error = choose_drivers(&DriverChoice::parse("virtio_blk,ahci").unwrap(), &index).unwrap_err();
    assert!(format!("{error:#}").contains("kernel module ahci (--drivers) is neither"), "{error:#}");
    assert!(DriverChoice::parse(",").is_err());

    // A machine whose one disk is virtio-scsi: its controller, its virtio device, its disk.
    let sys = dir.join("sys");
    let pci = sys.join("devices/pci0000:00/0000:00:04.0");
    let disk = pci.join("virtio2/host0/target0:0:0/0:0:0:0");
    fs::create_dir_all(disk.join("block/sda")).unwrap();
    fs::write(pci.join("uevent"), "MODALIAS=pci:v00001AF4d00001004sv00001AF4sd00000008bc01sc00i00\n").unwrap();
    fs::write(pci.join("virtio2/uevent"), "MODALIAS=virtio:d00000008v00001AF4\n").unwrap();
    fs::write(disk.join("uevent"), "DEVTYPE=scsi_device\nMODALIAS=scsi:t-0x00\n").unwrap();
    fs::create_dir_all(sys.join("class/block")).unwrap();
    std::os::unix::fs::symlink("../..", disk.join("block/sda/device")).unwrap();
    std::os::unix::fs::symlink("../../devices/pci0000:00/0000:00:04.0/virtio2/host0/target0:0:0/0:0:0:0/block/sda", sys.join("class/block/sda"))
        .unwrap();
    let host = choose_drivers(&DriverChoice::Host(sys), &index).unwrap();
    // In the order of the modaliases that asked for them.
    assert_eq!(host.packed, names(&["virtio_pci", "sd_mod", "virtio_scsi"]));
}

const EMPTY_CONFIG: &str = r#"{"ignition":{"version":"3.4.0"}}"#;

/// Ignition's layout: two general base configs and one for QEMU.
fn ignition_base(dir: &Path) -> PathBuf {
    let base = dir.join("ignition");
    fs::create_dir_all(base.join("base.d")).unwrap();
    fs::create_dir_all(base.join("base.platform.d/qemu")).unwrap();
    fs::write(base.join("base.d/10-users.ign"), r#"{"ignition":{"version":"3.0.0"},"passwd":{"users":[{"name":"core"}]}}"#).unwrap();
    // An unused key is a warning, not an error: the config goes in.
    fs::write(base.join("base.d/20-empty.ign"), r#"{"ignition":{"version":"3.4.0"},"surplus":1}"#).unwrap();
    fs::write(base.join("base.platform.d/qemu/qemu.ign"), EMPTY_CONFIG).unwrap();
    base
}

fn ignition_spec(dir: &Path) -> InitrdSpec {
    InitrdSpec { ignition_base: Some(ignition_base(dir)), ..spec(dir) }
}

fn build_error(spec: &InitrdSpec) -> String {
    match archive(spec) {
        Ok(_) => panic!("the build was not refused"),
        Err(error) => format!("{error:#}"),
    }
}

#[test]
fn ignition_base_configs_are_packed_where_keel_init_reads_them() {
    let dir = scratch("ignition-base");
    let spec = ignition_spec(&dir);
    let packed = archive(&spec).unwrap();
    let paths: Vec<&str> = packed.archive.paths().filter(|path| path.starts_with("usr/lib/ignition")).collect();
    assert_eq!(
        paths,
        [
            "usr/lib/ignition",
            "usr/lib/ignition/base.d",
            "usr/lib/ignition/base.d/10-users.ign",
            "usr/lib/ignition/base.d/20-empty.ign",
            "usr/lib/ignition/base.platform.d",
            "usr/lib/ignition/base.platform.d/qemu",
            "usr/lib/ignition/base.platform.d/qemu/qemu.ign",
        ]
    );
    let base = spec.ignition_base.as_ref().unwrap();
    for (initrd, host) in [("base.d/10-users.ign", "base.d/10-users.ign"), ("base.platform.d/qemu/qemu.ign", "base.platform.d/qemu/qemu.ign")] {
        let node = packed.archive.get(&format!("{}/{initrd}", keel_manifest::INITRD_IGNITION_DIR));
        assert_eq!(node, Some(&Node::File { data: fs::read(base.join(host)).unwrap(), mode: 0o644 }));
    }
    assert_eq!(packed.archive.get("/usr/lib/ignition/base.d"), Some(&Node::Dir { mode: 0o755 }));
    let warning = format!("{}: warning at $.surplus: unused key", base.join("base.d/20-empty.ign").display());
    assert_eq!(packed.ignition_warnings, [warning]);

    // Owners and times never reach the archive: a later copy gives the same bytes.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = ignition_spec(&scratch("ignition-base-again"));
    assert!(build(&spec, Compression::None).unwrap().0 == build(&again, Compression::None).unwrap().0, "the initrds differ");
}

#[test]
fn base_configs_valid_alone_that_clash_once_merged_are_refused() {
    let dir = scratch("ignition-clash");
    let spec = ignition_spec(&dir);
    let base = spec.ignition_base.as_ref().unwrap();
    // A file under a path the platform's config makes a symlink: each is valid, their merge is not.
    fs::write(base.join("base.d/30-file.ign"), r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/agent/conf"}]}}"#).unwrap();
    archive(&spec).unwrap();
    fs::write(
        base.join("base.platform.d/qemu/link.ign"),
        r#"{"ignition":{"version":"3.4.0"},"storage":{"links":[{"path":"/etc/agent","target":"/opt"}]}}"#,
    )
    .unwrap();
    let error = build_error(&spec);
    assert!(error.contains("base.d with base.platform.d/qemu merged"), "{error}");
    assert!(error.contains("goes through the link \"/etc/agent\""), "{error}");
}

#[test]
fn an_invalid_ignition_base_config_is_refused_with_its_path() {
    let dir = scratch("ignition-invalid");
    let spec = ignition_spec(&dir);
    let base = spec.ignition_base.as_ref().unwrap();
    let relative_path = base.join("base.d/30-relative.ign");
    fs::write(&relative_path, r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"etc/motd"}]},"surplus":1}"#).unwrap();
    let not_json = base.join("base.platform.d/qemu/broken.ign");
    fs::write(&not_json, "{").unwrap();
    let error = build_error(&spec);
    let relative = relative_path.display();
    assert!(error.contains(&format!("{relative}: error at $.storage.files[0].path:")), "{error}");
    assert!(error.contains(&format!("{relative}: warning at $.surplus: unused key")), "every report of the file: {error}");
    assert!(error.contains(&format!("{}: line 1 column 1", not_json.display())), "every refused file: {error}");
    assert!(!error.contains("10-users.ign"), "a valid config is not named: {error}");

    fs::remove_file(&relative_path).unwrap();
    fs::write(&not_json, vec![b' '; keel_ignition::config::MAX_CONFIG_BYTES + 1]).unwrap();
    let error = build_error(&spec);
    assert!(error.contains(&format!("{} is over 33554432 bytes", not_json.display())), "{error}");
}

#[test]
fn anything_else_in_the_ignition_base_is_refused() {
    let dir = scratch("ignition-stray");
    let spec = ignition_spec(&dir);
    let base = spec.ignition_base.clone().unwrap();
    let directory = true;
    for (name, is_directory) in [
        ("base", directory),
        ("config.ign", !directory),
        ("base.d/notes.txt", !directory),
        ("base.d/.ign", !directory),
        ("base.d/old", directory),
        ("base.platform.d/QEMU", directory),
    ] {
        let path = base.join(name);
        if is_directory {
            fs::create_dir(&path).unwrap();
        } else {
            fs::write(&path, EMPTY_CONFIG).unwrap();
        }
        let error = build_error(&spec);
        assert!(error.contains(&format!("{}: ", path.display())) && error.contains(" holds "), "{name}: {error}");
        if is_directory {
            fs::remove_dir(&path).unwrap();
        } else {
            fs::remove_file(&path).unwrap();
        }
    }
    archive(&spec).unwrap();
}

#[test]
fn mkfs_programs_are_packed_under_their_format_names_with_their_libraries() {
    let spec = InitrdSpec { root_filesystems: vec!["ext4".into()], mkfs_formats: vec!["vfat".into(), "swap".into()], ..spec(&scratch("mkfs")) };
    let tree = archive(&spec).unwrap().archive;
    let programs: Vec<&str> = tree.paths().filter(|path| path.starts_with("usr/sbin/")).collect();
    assert_eq!(programs, ["usr/sbin/mkfs.ext4", "usr/sbin/mkfs.swap", "usr/sbin/mkfs.vfat"], "the root filesystem's is packed too");
    for (format, host_program) in [("ext4", "/usr/sbin/mkfs.ext4"), ("vfat", "/usr/sbin/mkfs.fat"), ("swap", "/usr/sbin/mkswap")] {
        let packed = tree.get(&keel_manifest::initrd_mkfs_path(format));
        assert_eq!(packed, Some(&Node::File { data: fs::read(host_program).unwrap(), mode: 0o755 }), "{format}");
        for library in library_closure(Path::new("/"), Path::new(host_program)).unwrap() {
            assert!(tree.contains(&library.initrd_path), "{} of {host_program} not packed", library.initrd_path);
        }
    }
    // Filesystem modules only for what ROOT may be, and the ESP's vfat: vfat and swap are
    // made, never mounted, in the initrd, so --mkfs adds no list.
    let lists: Vec<&str> = tree.paths().filter(|path| path.starts_with("etc/keel/modules.d/")).collect();
    assert_eq!(lists, ["etc/keel/modules.d/ext4", "etc/keel/modules.d/qemu_fw_cfg", "etc/keel/modules.d/vfat"]);
}

#[test]
fn without_mkfs_the_root_filesystems_programs_alone_are_packed() {
    let dir = scratch("mkfs-default");
    let default = spec(&dir);
    let tree = archive(&default).unwrap().archive;
    let programs: Vec<&str> = tree.paths().filter(|path| path.starts_with("usr/sbin/")).collect();
    assert_eq!(programs, ["usr/sbin/mkfs.ext4", "usr/sbin/mkfs.xfs"]);
    let root_filesystems_only = InitrdSpec { mkfs_formats: Vec::new(), ..default.clone() };
    assert!(build(&default, Compression::None).unwrap().0 == build(&root_filesystems_only, Compression::None).unwrap().0, "the initrds differ");
}

#[test]
fn an_unknown_mkfs_format_is_refused_with_the_accepted_ones() {
    assert_eq!(parse_mkfs_formats(" vfat, swap,").unwrap(), ["vfat", "swap"]);
    for list in ["ext4,ntfs", "fat"] {
        let error = format!("{:#}", parse_mkfs_formats(list).unwrap_err());
        assert!(error.contains("is not a format keel can make: use ext4, xfs, btrfs, vfat, swap"), "{list}: {error}");
    }
    assert!(format!("{:#}", parse_mkfs_formats(",").unwrap_err()).contains("name at least one of ext4, xfs, btrfs, vfat, swap"));
}
