//! `keel usr` on a table sgdisk wrote, read back with Debian's cgpt.

mod support;

use keel_test_support::{process_dir, run};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{failure_of, keel, stdout_of};

const USR_A: &str = "7130c94a-213a-4e5a-8e26-6cce9662f132";
const USR_B: &str = "e03dd35c-7c2d-4a47-b3fe-27f15780a57c";

/// Flatcar's slots 3 and 4 with their fixed GUIDs, USR-A at priority 1 and successful
/// (bits 48 and 56), plus an attribute bit gptprio does not own (bit 60) on each.
fn disk(name: &str) -> PathBuf {
    let path = process_dir(env!("CARGO_TARGET_TMPDIR")).join(format!("usr-cli-{name}.img"));
    fs::write(&path, vec![0u8; 8 << 20]).unwrap();
    let (a, b) = (format!("3:{USR_A}"), format!("4:{USR_B}"));
    let slot_a = ["-n", "3:2048:+2M", "-c", "3:USR-A", "-u", &a, "-A", "3:set:48", "-A", "3:set:56", "-A", "3:set:60"];
    let slot_b = ["-n", "4:0:+2M", "-c", "4:USR-B", "-u", &b, "-A", "4:set:60"];
    run("sgdisk", &[&["-o"][..], &slot_a, &slot_b, &[path.to_str().unwrap()]].concat());
    path
}

/// cgpt's reading of (priority, tries, successful) and the raw bits 48-63 of a partition.
fn cgpt_reads(path: &Path, number: &str) -> [String; 4] {
    ["-P", "-T", "-S", "-A"].map(|field| {
        let output = Command::new("cgpt").args(["show", "-i", number, field]).arg(path).output().expect("cgpt must be installed");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    })
}

#[test]
fn show_set_prioritize_and_mark_as_cgpt_reads_them() {
    let path = disk("cycle");
    let disk = path.to_str().unwrap();
    assert_eq!(
        stdout_of(keel(&["usr", "show", disk])),
        "USR-A  partition 3  priority 1  tries 0  successful 1\nUSR-B  partition 4  priority 0  tries 0  successful 0\n"
    );
    let json = stdout_of(keel(&["usr", "show", disk, "--json"]));
    assert!(
        json.contains(&format!("{{\"slot\":\"USR-B\",\"partition\":4,\"partuuid\":\"{USR_B}\",\"priority\":0,\"tries\":0,\"successful\":false}}")),
        "{json}"
    );

    // An update to B, as update_engine leaves it: on top, one try, not yet good.
    stdout_of(keel(&["usr", "prioritize", disk, "B"]));
    stdout_of(keel(&["usr", "set", disk, "usr-b", "--tries", "1", "--successful", "0"]));
    assert_eq!(cgpt_reads(&path, "4"), ["2", "1", "0", "0x1012"]);
    assert_eq!(cgpt_reads(&path, "3"), ["1", "0", "1", "0x1101"]);

    // B booted and lasted.
    let marked = stdout_of(keel(&["usr", "mark-successful", disk, "B"]));
    assert!(marked.contains("USR-B  partition 4  priority 2  tries 0  successful 1"), "{marked}");
    assert_eq!(cgpt_reads(&path, "4"), ["2", "0", "1", "0x1102"]);
    let before = fs::read(&path).unwrap();
    let again = stdout_of(keel(&["usr", "mark-successful", disk, "B"]));
    assert!(again.contains("nothing written"), "{again}");
    assert!(fs::read(&path).unwrap() == before);

    stdout_of(keel(&["usr", "prioritize", disk, "USR-A", "--max", "15"]));
    assert_eq!(cgpt_reads(&path, "3"), ["15", "0", "1", "0x110f"]);
    assert_eq!(cgpt_reads(&path, "4")[0], "14");
}

#[test]
fn mistakes_say_what_to_do_and_change_nothing() {
    let path = disk("mistakes");
    let disk = path.to_str().unwrap();
    let before = fs::read(&path).unwrap();
    let cases: [(&[&str], &str); 8] = [
        (&["usr", "set", disk, "C", "--priority", "1"], "give A, B, USR-A or USR-B"),
        (&["usr", "set", disk, "A", "--priority", "16"], "invalid value '16' for '--priority <0-15>': 16 is not in 0..=15"),
        (&["usr", "set", disk, "A", "--tries", "-1"], "invalid value '-1' for '--tries <0-15>': -1 is not in 0..=15"),
        (&["usr", "set", disk, "A", "--successful", "2"], "invalid value '2' for '--successful <0|1>': 2 is not in 0..=1"),
        (&["usr", "set", disk, "A"], "give at least one of --priority"),
        (&["usr", "prioritize", disk, "B", "--max", "0"], "invalid value '0' for '--max <1-15>': 0 is not in 1..=15"),
        (&["usr", "mark-successful", disk], "required arguments were not provided:\n  <SLOT>"),
        (&["usr", "show", "/nonexistent/disk.img"], "cannot open /nonexistent/disk.img"),
    ];
    for (args, expected) in cases {
        let error = failure_of(keel(args));
        assert!(error.contains(expected), "{args:?}: {error}");
    }
    assert!(fs::read(&path).unwrap() == before);

    // No valid table: both headers damaged.
    let mut bytes = before.clone();
    bytes[512..520].copy_from_slice(b"NOT PART");
    let last = bytes.len() - 512;
    bytes[last..last + 8].copy_from_slice(b"NOT PART");
    fs::write(&path, &bytes).unwrap();
    let error = failure_of(keel(&["usr", "mark-successful", disk, "A"]));
    assert!(error.contains("no valid GPT") && error.contains("nothing was written"), "{error}");
    assert!(fs::read(&path).unwrap() == bytes);
}
