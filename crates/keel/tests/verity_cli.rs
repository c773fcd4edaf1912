//! `keel verity` against `veritysetup`: same bytes, same dump, and verify's verdicts and
//! exit codes (0 verified, 2 corrupt, 1 bad arguments: cryptsetup's convention).

use keel_test_support::scratch_dir;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UUID: &str = "9e0ffb1c-4d0d-4bd1-a7b4-0a5b5c7e7d10";

fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel")).args(args).output().unwrap()
}

fn stdout_of(output: Output, what: &str) -> String {
    assert!(output.status.success(), "{what}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn veritysetup(args: &[&str]) -> Output {
    Command::new("veritysetup").args(args).output().expect("veritysetup (cryptsetup-bin) must be installed")
}

fn root_hash(output: &str) -> String {
    output.lines().find_map(|l| l.strip_prefix("Root hash:")).expect("a root hash line").trim().to_string()
}

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("verity-cli-{name}"))
}

fn data(blocks: u32) -> Vec<u8> {
    (0..blocks * 4096).map(|i| (i / 4096) as u8 ^ (i as u8)).collect()
}

fn flip(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x04;
    fs::write(path, bytes).unwrap();
}

#[test]
fn appended_hash_area_matches_veritysetup() {
    let dir = scratch("appended");
    let (ours, theirs) = (dir.join("ours.img"), dir.join("theirs.img"));
    for path in [&ours, &theirs] {
        fs::write(path, data(2000)).unwrap();
    }
    let (ours, theirs) = (ours.to_str().unwrap(), theirs.to_str().unwrap());
    let common =
        ["--hash-offset=8192000", "--salt=00ff00ff", "--uuid=9e0ffb1c-4d0d-4bd1-a7b4-0a5b5c7e7d10", "--hash=sha512", "--hash-block-size=1024"];
    let keel_out = stdout_of(keel(&[&["verity", "format", ours, ours][..], &common].concat()), "keel format");
    let reference = stdout_of(veritysetup(&[&["format", theirs, theirs][..], &common].concat()), "veritysetup format");
    assert_eq!(root_hash(&keel_out), root_hash(&reference));
    assert!(fs::read(ours).unwrap() == fs::read(theirs).unwrap(), "files differ");
    assert_eq!(keel_out.replace(ours, "X"), reference.replace(theirs, "X"), "format output differs from veritysetup's");
}

#[test]
fn dump_prints_what_veritysetup_dump_prints() {
    let dir = scratch("dump");
    let (data_path, hash_path) = (dir.join("data"), dir.join("hash"));
    fs::write(&data_path, data(300)).unwrap();
    let (d, h) = (data_path.to_str().unwrap(), hash_path.to_str().unwrap());
    stdout_of(veritysetup(&["format", d, h, "--hash=sha1", "--format=0", "--salt=abcdef", &format!("--uuid={UUID}")]), "format");
    assert_eq!(stdout_of(keel(&["verity", "dump", h]), "keel dump"), stdout_of(veritysetup(&["dump", h]), "veritysetup dump"));
}

#[test]
fn verify_agrees_with_veritysetup_and_uses_its_exit_codes() {
    let dir = scratch("verify");
    let (data_path, hash_path, keel_hash) = (dir.join("data"), dir.join("hash"), dir.join("keel-hash"));
    fs::write(&data_path, data(700)).unwrap();
    let (d, h, k) = (data_path.to_str().unwrap(), hash_path.to_str().unwrap(), keel_hash.to_str().unwrap());
    let root = root_hash(&stdout_of(veritysetup(&["format", d, h, "--salt=11"]), "veritysetup format"));
    stdout_of(keel(&["verity", "format", d, k, "--salt=11"]), "keel format");

    // Each accepts the other's hash area.
    assert_eq!(keel(&["verity", "verify", d, h, &root]).status.code(), Some(0));
    assert_eq!(veritysetup(&["verify", d, k, &root]).status.code(), Some(0));

    // A damaged data block: both say corrupt (2), keel names the block.
    flip(&data_path, 333 * 4096 + 10);
    let output = keel(&["verity", "verify", d, h, &root]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("data block 333 does not match"), "{output:?}");
    assert_eq!(veritysetup(&["verify", d, h, &root]).status.code(), Some(2));
    flip(&data_path, 333 * 4096 + 10);

    // A damaged hash block (level 0 starts after the superblock block and the top block).
    flip(&hash_path, 2 * 4096 + 100);
    let output = keel(&["verity", "verify", d, h, &root]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("hash block 1 (level 0)"), "{output:?}");
    assert_eq!(veritysetup(&["verify", d, h, &root]).status.code(), Some(2));

    // Bad arguments are not corruption.
    assert_eq!(keel(&["verity", "verify", d, h, "xyz"]).status.code(), Some(1));
    assert_eq!(keel(&["verity", "verify", d, "/nonexistent", &root]).status.code(), Some(1));
    assert_eq!(keel(&["verity", "verify", d, h, &root, "--hash=sha1"]).status.code(), Some(1));
}

#[test]
fn no_superblock_needs_the_parameters_on_the_command_line() {
    let dir = scratch("no-superblock");
    let (data_path, hash_path) = (dir.join("data"), dir.join("hash"));
    fs::write(&data_path, data(200)).unwrap();
    let (d, h) = (data_path.to_str().unwrap(), hash_path.to_str().unwrap());
    let params = ["--no-superblock", "--hash=sha512", "--hash-block-size=512", "--salt=-", "--data-blocks=200"];
    let json = stdout_of(keel(&[&["verity", "format", d, h, "--json"][..], &params].concat()), "format");
    let root = json.split("\"root_hash\":\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    assert_eq!(json.matches("\"hash_start_block\":0").count(), 1, "{json}");
    assert_eq!(keel(&[&["verity", "verify", d, h, &root][..], &params].concat()).status.code(), Some(0));
    assert_eq!(veritysetup(&[&["verify", d, h, &root][..], &params].concat()).status.code(), Some(0));
    let output = keel(&["verity", "verify", d, h, &root]);
    assert_eq!(output.status.code(), Some(1), "without the parameters there is no superblock to read them from");
}

#[test]
fn table_prints_the_kernel_line_with_its_options() {
    let dir = scratch("table");
    let (data_path, hash_path) = (dir.join("data"), dir.join("hash"));
    fs::write(&data_path, data(300)).unwrap();
    let (d, h) = (data_path.to_str().unwrap(), hash_path.to_str().unwrap());
    let root = root_hash(&stdout_of(keel(&["verity", "format", d, h, "--salt=ab"]), "format"));
    let line = stdout_of(keel(&["verity", "table", d, h, &root, "--panic-on-corruption", "--ignore-zero-blocks", "--check-at-most-once"]), "table");
    assert_eq!(
        line.trim(),
        format!("0 2400 verity 1 {d} {h} 4096 4096 300 1 sha256 {root} ab 3 panic_on_corruption ignore_zero_blocks check_at_most_once")
    );
    let plain = stdout_of(keel(&["verity", "table", d, h, &root]), "table");
    assert!(plain.trim().ends_with(&format!("{root} ab")), "{plain}");
    assert_eq!(keel(&["verity", "table", d, h, &root, "--panic-on-corruption", "--restart-on-corruption"]).status.code(), Some(1));
}

#[test]
fn bad_arguments_are_explained() {
    let output = keel(&["verity", "format", "x", "y", "--bogus"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unexpected argument '--bogus' found"));
    let output = keel(&["verity", "format", "/nonexistent", "/nonexistent"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("--hash-offset"));
    let output = keel(&["verity", "format", "a", "b", "--hash=md5"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("md5"));
}
