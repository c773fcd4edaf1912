//! Flatcar's production layout (1 GiB USR-A) on a disk bigger than the image: what users
//! boot, so what the boot's costs are measured at. A later boot does not slow down with the
//! disk's size or with other, bigger disks attached.

use keel_vm_tests::{artifacts, assert_reached_real_init, boot, default_layout_fixture, disk_copy, resize_disk, stage_millis, Console};
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);
const GIB: u64 = 1 << 30;

fn stage(console: &Console, name: &str) -> f64 {
    stage_millis(console, name).unwrap_or_else(|| panic!("no timing for stage {name}:\n{}", console.text))
}

/// A sparse file of `bytes` with nothing written: a blank disk as big as a real one.
fn blank_disk(path: &Path, bytes: u64) {
    std::fs::File::create(path).unwrap().set_len(bytes).unwrap();
}

#[test]
fn a_later_boot_of_the_default_layout_takes_the_same_time_with_an_8_tib_blank_disk_attached() {
    let fixture = default_layout_fixture().unwrap();
    let disk = disk_copy(fixture, "later-boot-4gib").unwrap();
    resize_disk(&disk, 4 * GIB).unwrap();
    let first = boot(&[&disk], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&first);
    assert!(first.has("first-boot: first boot"), "{}", first.text);

    let later = boot(&[&disk], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&later);
    assert!(later.has("first-boot: not a first boot"), "{}", later.text);

    eprintln!(
        "default layout, 4 GiB disk: first boot: usr {:.0} ms, first-boot {:.0} ms, /init to real init {:?} s; \
         later boot: usr {:.0} ms, first-boot {:.0} ms, /init to real init {:?} s",
        stage(&first, "usr"),
        stage(&first, "first-boot"),
        first.initrd_seconds(),
        stage(&later, "usr"),
        stage(&later, "first-boot"),
        later.initrd_seconds(),
    );

    let big = fixture.dir.join("blank-8tib.img");
    blank_disk(&big, 8 << 40);
    let with_big = boot(&[&disk, &big], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&with_big);
    eprintln!(
        "later boot with an 8 TiB blank disk attached too: usr {:.0} ms, first-boot {:.0} ms, /init to real init {:?} s",
        stage(&with_big, "usr"),
        stage(&with_big, "first-boot"),
        with_big.initrd_seconds(),
    );
    let _ = std::fs::remove_file(&big);
    let _ = std::fs::remove_file(&disk);
}

/// The modules the real root saw loaded, from /proc/modules.
fn loaded_modules(console: &Console) -> Vec<&str> {
    let line =
        console.real_init().into_iter().find_map(|l| l.strip_prefix("modules ")).unwrap_or_else(|| panic!("no modules line:\n{}", console.text));
    line.split_whitespace().collect()
}

/// What `keel boot analyze` printed in the real root, from the timeline keel-init left there.
fn analyzed(console: &Console) -> Vec<&str> {
    console.real_init().into_iter().filter_map(|line| line.strip_prefix("analyze ")).collect()
}

#[test]
fn a_later_boot_loads_no_first_boot_module_and_every_boot_explains_its_time() {
    let fixture = default_layout_fixture().unwrap();
    let disk = disk_copy(fixture, "later-boot-modules").unwrap();
    resize_disk(&disk, 4 * GIB).unwrap();
    let first = boot(&[&disk], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&first);
    let later = boot(&[&disk], &fixture.initrd, "", TIMEOUT).unwrap();
    assert_reached_real_init(&later);
    assert!(later.has("first-boot: not a first boot"), "{}", later.text);

    // First boot reads QEMU's fw_cfg (Ignition's platform) and writes the ESP (the flag);
    // a later boot reads the flag without the kernel's vfat, and needs neither.
    let on_first = loaded_modules(&first);
    for needed in ["qemu_fw_cfg", "vfat", "fat"] {
        assert!(on_first.contains(&needed), "first boot did not load {needed}: {on_first:?}");
    }
    let on_later = loaded_modules(&later);
    for unneeded in ["qemu_fw_cfg", "vfat", "fat", "nls_cp437", "nls_ascii"] {
        assert!(!on_later.contains(&unneeded), "a later boot loaded {unneeded}: {on_later:?}");
    }
    for every_boot in ["dm_mod", "dm_verity", "overlay", "virtio_blk"] {
        assert!(on_later.contains(&every_boot), "a later boot did not load {every_boot}: {on_later:?}");
    }

    // The real root's `keel boot analyze`: the kernel's time and keel-init's, then every stage
    // keel-init logged, once, longest first; and the same from the host on the same file.
    for console in [&first, &later] {
        let blame = analyzed(console);
        assert!(blame.first().is_some_and(|header| header.starts_with("kernel before /init ")), "{blame:#?}");
        let logged: Vec<&str> = console
            .text
            .lines()
            .filter_map(|line| line.strip_prefix("keel: [").and_then(|rest| rest.split_once("] ")).map(|(_, rest)| rest))
            .filter_map(|rest| rest.ends_with(" ms)").then(|| rest.split_once(": ").map(|(stage, _)| stage)).flatten())
            .collect();
        assert_eq!(blame.len(), 1 + logged.len(), "{blame:#?}\n{logged:?}");
        for stage in &logged {
            assert_eq!(blame.iter().filter(|line| line.split_whitespace().nth(1) == Some(*stage)).count(), 1, "{stage}: {blame:#?}");
        }
        let durations: Vec<f64> = blame[1..].iter().map(|line| seconds(line.split_whitespace().next().unwrap())).collect();
        assert!(durations.windows(2).all(|pair| pair[0] >= pair[1]), "not longest first: {blame:#?}");

        let timeline = console.real_init().into_iter().find_map(|line| line.strip_prefix("timeline ")).expect("no timeline line").to_string();
        let file = fixture.dir.join("later-boot-modules-timeline.json");
        std::fs::write(&file, timeline).unwrap();
        let chart = file.with_extension("svg");
        let host = std::process::Command::new(&artifacts().unwrap().binaries.keel)
            .args(["boot", "analyze"])
            .arg(&file)
            .arg("--svg")
            .arg(&chart)
            .output()
            .unwrap();
        assert!(host.status.success(), "{}", String::from_utf8_lossy(&host.stderr));
        let host_blame: Vec<String> = String::from_utf8_lossy(&host.stdout).lines().map(str::to_string).collect();
        assert_eq!(host_blame[..blame.len()], blame, "the host's blame differs from the real root's");
        let svg = std::fs::read_to_string(&chart).unwrap();
        assert_eq!(svg.matches("<rect class=\"bar ").count(), 1 + logged.len(), "one bar per stage and the kernel's");
    }
    let _ = std::fs::remove_file(&disk);
}

/// A blame duration as `keel boot analyze` prints it (`1.250s`, `480ms`, `3.0ms`), in seconds.
fn seconds(text: &str) -> f64 {
    match text.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().unwrap() / 1000.0,
        None => text.strip_suffix('s').unwrap().parse().unwrap(),
    }
}
