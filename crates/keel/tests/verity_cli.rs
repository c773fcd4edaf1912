//! `keel verity format` and `veritysetup format` on the same file give the same bytes.

use std::fs;
use std::path::Path;
use std::process::Command;

fn stdout_of(command: &mut Command) -> String {
    let output = command.output().expect("command runs");
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn root_hash(output: &str) -> String {
    output.lines().find_map(|l| l.strip_prefix("Root hash:")).expect("a root hash line").trim().to_string()
}

#[test]
fn appended_hash_area_matches_veritysetup() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("verity-cli");
    fs::create_dir_all(&dir).unwrap();
    let data: Vec<u8> = (0..2000 * 4096u32).map(|i| (i / 4096) as u8 ^ (i as u8)).collect();
    let (ours, theirs) = (dir.join("ours.img"), dir.join("theirs.img"));
    for path in [&ours, &theirs] {
        fs::write(path, &data).unwrap();
    }
    let common = ["--hash-offset=8192000", "--salt=00ff00ff", "--uuid=9e0ffb1c-4d0d-4bd1-a7b4-0a5b5c7e7d10"];
    let keel = stdout_of(Command::new(env!("CARGO_BIN_EXE_keel")).args(["verity", "format"]).arg(&ours).args(common));
    let reference = stdout_of(Command::new("veritysetup").arg("format").arg(&theirs).arg(&theirs).args(common));
    assert_eq!(root_hash(&keel), root_hash(&reference));
    assert!(fs::read(&ours).unwrap() == fs::read(&theirs).unwrap(), "files differ");
}

#[test]
fn bad_arguments_are_explained() {
    let output = Command::new(env!("CARGO_BIN_EXE_keel")).args(["verity", "format", "x", "--bogus"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown option --bogus"));
    let output = Command::new(env!("CARGO_BIN_EXE_keel")).args(["verity", "format", "/nonexistent"]).output().unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("--hash-offset"));
}
