//! Differential test: keel must write the same bytes as cryptsetup's `veritysetup format`.
//! `cargo xtask test` installs cryptsetup-bin; without it this test fails rather than skips.

use keel_verity::{check_tree, encode_hex, format_hash_area, HashType, Superblock, VerityParams};
use std::fs;
use std::io::{Cursor, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

const UUID: &str = "a4d7c6f2-1b38-4e55-9c1e-52f0d2a61b7e";

fn uuid_bytes() -> [u8; 16] {
    let hex: String = UUID.chars().filter(|c| *c != '-').collect();
    keel_verity::decode_hex(&hex, "uuid").unwrap().try_into().unwrap()
}

fn test_data(blocks: u64, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..blocks * 4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Runs veritysetup and returns the root hash it printed.
fn veritysetup_format(data: &Path, hash: &Path, params: &VerityParams, hash_offset: Option<u64>) -> String {
    let salt = if params.salt.is_empty() { "-".to_string() } else { encode_hex(&params.salt) };
    let mut command = Command::new("veritysetup");
    command.arg("format").arg(data).arg(hash).args([
        format!("--format={}", params.hash_type.number()),
        format!("--salt={salt}"),
        format!("--uuid={UUID}"),
        format!("--data-blocks={}", params.data_blocks),
    ]);
    if let Some(offset) = hash_offset {
        command.arg(format!("--hash-offset={offset}"));
    }
    let output = command
        .output()
        .expect("veritysetup must be installed (cryptsetup-bin); `cargo xtask test` installs it");
    assert!(output.status.success(), "veritysetup failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("Root hash:"))
        .expect("veritysetup printed no root hash")
        .trim()
        .to_string()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("veritysetup");
    fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn separate_hash_file_is_byte_identical() {
    // 1 block: no tree; 2 and 128: one level; 129: two; 16385: three levels.
    let cases = [(1u64, 32usize, HashType::Normal), (2, 0, HashType::Normal), (128, 1, HashType::Normal),
        (129, 32, HashType::ChromeOs), (1000, 256, HashType::Normal), (16385, 32, HashType::Normal)];
    for (blocks, salt_len, hash_type) in cases {
        let name = format!("{blocks}-{salt_len}-{}", hash_type.number());
        let data = test_data(blocks, blocks * 31 + salt_len as u64);
        let params = VerityParams { hash_type, salt: vec![0xa5; salt_len], ..VerityParams::new(blocks, Vec::new()) };
        let data_path = scratch(&format!("{name}.data"));
        let hash_path = scratch(&format!("{name}.hash"));
        fs::write(&data_path, &data).unwrap();
        fs::write(&hash_path, b"").unwrap();
        let reference_root = veritysetup_format(&data_path, &hash_path, &params, None);

        let mut ours = Cursor::new(Vec::new());
        let formatted = format_hash_area(&mut Cursor::new(&data), &params, Some(uuid_bytes()), &mut ours, 0).unwrap();
        assert_eq!(encode_hex(&formatted.root), reference_root, "root hash differs for {name}");
        let reference = fs::read(&hash_path).unwrap();
        assert!(ours.get_ref() == &reference, "hash area differs for {name} ({} vs {} bytes)", ours.get_ref().len(), reference.len());
        assert_eq!(formatted.end, reference.len() as u64);
        check_tree(&mut Cursor::new(&reference), formatted.tree_start_block * 4096, &params, &formatted.root).unwrap();
    }
}

#[test]
fn hash_area_appended_in_the_same_file_is_byte_identical() {
    let blocks = 3000;
    let hash_offset = (blocks + 5) * 4096;
    let params = VerityParams::new(blocks, vec![0x3c; 32]);
    let mut image = test_data(blocks + 5, 7);
    image.resize(hash_offset as usize, 0);
    let path = scratch("appended.img");
    fs::write(&path, &image).unwrap();
    let reference_root = veritysetup_format(&path, &path, &params, Some(hash_offset));

    let mut ours = Cursor::new(image.clone());
    let formatted = format_hash_area(&mut Cursor::new(&image), &params, Some(uuid_bytes()), &mut ours, hash_offset).unwrap();
    assert_eq!(encode_hex(&formatted.root), reference_root);
    let reference = fs::read(&path).unwrap();
    assert!(ours.get_ref() == &reference, "image differs");

    let mut file = fs::File::open(&path).unwrap();
    file.seek(SeekFrom::Start(hash_offset)).unwrap();
    let superblock = Superblock::parse(&reference[hash_offset as usize..]).unwrap();
    assert_eq!(superblock.params, params);
    assert_eq!(superblock.uuid, uuid_bytes());
}

#[test]
fn veritysetup_verify_accepts_keels_output() {
    let blocks = 777;
    let params = VerityParams::new(blocks, vec![0x11; 32]);
    let data = test_data(blocks, 99);
    let data_path = scratch("keel.data");
    let hash_path = scratch("keel.hash");
    fs::write(&data_path, &data).unwrap();
    let mut hash = Cursor::new(Vec::new());
    let formatted = format_hash_area(&mut Cursor::new(&data), &params, Some(uuid_bytes()), &mut hash, 0).unwrap();
    fs::write(&hash_path, hash.get_ref()).unwrap();
    let status = Command::new("veritysetup")
        .arg("verify")
        .arg(&data_path)
        .arg(&hash_path)
        .arg(encode_hex(&formatted.root))
        .status()
        .unwrap();
    assert!(status.success(), "veritysetup verify rejected keel's hash area");
}
