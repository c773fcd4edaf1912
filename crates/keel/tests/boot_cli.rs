//! `keel boot analyze` on timelines as keel-init writes them, and on files it must refuse.

mod support;

use keel_test_support::scratch_dir;
use keel_timeline::Recorder;
use std::path::PathBuf;
use std::time::Duration;
use support::{failure_of, keel, stdout_of};

/// A later boot of the default layout, shaped like one measured under QEMU TCG.
fn later_boot() -> String {
    let ms = Duration::from_millis;
    let mut recorder = Recorder::new(ms(1210));
    let stages = [
        ("mounts", 2, "proc sys dev run"),
        ("config", 1, "root=LABEL=ROOT usr=PARTLABEL=USR-A"),
        ("modules", 840, "12 modules, drivers virtio_pci virtio_blk"),
        ("usr", 520, "USR-A on /dev/vda3 (512-byte sectors), hash tree checked, dm-0 status V"),
        ("first-boot", 35, "not first boot"),
        ("root", 60, "/dev/vda9 ext4 on /sysroot"),
        ("etc", 4, "overlay on /sysroot/etc"),
        ("switch-root", 1, "executing /sbin/init in the real root"),
    ];
    let mut now = ms(1212);
    for (name, took, detail) in stages {
        recorder.record(name, now, ms(took), Ok(detail));
        now += ms(took + 1);
    }
    recorder.to_json(now)
}

fn written(name: &str, text: &str) -> (PathBuf, String) {
    let path = scratch_dir(env!("CARGO_TARGET_TMPDIR"), name).join("timeline.json");
    std::fs::write(&path, text).unwrap();
    let text_path = path.to_str().unwrap().to_string();
    (path, text_path)
}

#[test]
fn analyze_prints_blame_and_writes_the_chart() {
    let (path, timeline) = written("analyze-blame", &later_boot());
    let chart = path.with_file_name("boot.svg");
    let out = stdout_of(keel(&["boot", "analyze", &timeline, "--svg", chart.to_str().unwrap()]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "kernel before /init 1.210s + initrd 1.473s = 2.683s to the switch to the real root");
    assert_eq!(lines[1], "    840ms modules      12 modules, drivers virtio_pci virtio_blk");
    assert_eq!(lines[2].split_whitespace().take(2).collect::<Vec<_>>(), ["520ms", "usr"]);
    assert_eq!(lines.len(), 1 + 8 + 1, "{out}");
    assert_eq!(lines[9], format!("chart: {}", chart.display()));
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"") && svg.contains("<title>usr: 520ms"), "{svg}");
}

#[test]
fn analyze_refuses_a_file_that_is_not_a_timeline() {
    let (_, timeline) = written("analyze-hostile", &later_boot().replace("\"duration_ms\": 840.0", "\"duration_ms\": -840.0"));
    let error = failure_of(keel(&["boot", "analyze", &timeline]));
    assert!(error.contains("is not a keel-init timeline: stages[2]: `duration_ms` is -840"), "{error}");
    let missing = failure_of(keel(&["boot", "analyze", "/nonexistent/timeline.json"]));
    assert!(missing.contains("cannot open /nonexistent/timeline.json"), "{missing}");
    let two = failure_of(keel(&["boot", "analyze", &timeline, &timeline]));
    assert!(two.contains("unexpected argument"), "{two}");
}

#[test]
fn analyze_says_so_when_its_output_cannot_be_written() {
    let (_, timeline) = written("analyze-full", &later_boot());
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel")).args(["boot", "analyze", &timeline]).stdout(full).output().unwrap();
    assert!(failure_of(output).contains("cannot write to stdout"));
}
