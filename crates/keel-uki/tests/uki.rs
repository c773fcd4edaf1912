//! keel's UKIs against the references: the systemd stub Debian ships, sbsign and sbverify,
//! objdump and pefile (a second PE reader) for the layout and checksum.

use keel_test_support::{python_tool, scratch_dir, XorShift};
use keel_uki::{build, inspect, kernel_release, sign, Parts, DEFAULT_STUB};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

const CMDLINE: &str = "console=ttyS0 mount.usr=PARTLABEL=USR-B";
const OS_RELEASE: &[u8] = b"ID=keel\nPRETTY_NAME=\"keel test\"\n";

fn stub() -> Vec<u8> {
    std::fs::read(DEFAULT_STUB).unwrap_or_else(|e| panic!("{DEFAULT_STUB}: {e} (`cargo xtask setup` installs systemd-boot-efi)"))
}

/// Bytes that pass for an x86 bzImage: the boot protocol's magic and a version string.
fn fake_kernel(len: usize, seed: u64) -> Vec<u8> {
    let mut kernel = XorShift::new(seed).bytes(len);
    kernel[0x202..0x206].copy_from_slice(b"HdrS");
    kernel[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
    let version = b"6.1.0-99-test-amd64 (builder@keel) #1 SMP\0";
    kernel[0x300..0x300 + version.len()].copy_from_slice(version);
    kernel
}

fn parts<'a>(stub: &'a [u8], kernel: &'a [u8], initrd: &'a [u8]) -> Parts<'a> {
    Parts { stub, kernel, initrd, cmdline: CMDLINE, os_release: OS_RELEASE, uname: None }
}

fn test_dir(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), name)
}

fn keys(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (key, cert) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.crt")));
    let status = Command::new("openssl")
        .args(["req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", &format!("/CN=keel test {name}/"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(status.status.success(), "openssl: {}", String::from_utf8_lossy(&status.stderr));
    (key, cert)
}

#[test]
fn every_part_is_a_section_of_its_own_at_a_page_after_the_stub() {
    let (stub, kernel, initrd) = (stub(), fake_kernel(3 << 20, 115), XorShift::new(103).bytes(1_000_001));
    let uki = build(&parts(&stub, &kernel, &initrd)).unwrap();
    let stub_sections = inspect(&stub).unwrap().sections;
    let sections = inspect(&uki).unwrap().sections;
    assert_eq!(sections[..stub_sections.len()], stub_sections[..], "the stub's sections are kept as they are");
    let added: Vec<_> = sections[stub_sections.len()..].iter().map(|s| s.name.as_str()).collect();
    assert_eq!(added, [".osrel", ".cmdline", ".uname", ".initrd", ".linux"]);
    let stub_end = stub_sections.iter().map(|s| s.virtual_address + s.virtual_size.max(s.file_size)).max().unwrap();
    let expected: [&[u8]; 5] = [OS_RELEASE, CMDLINE.as_bytes(), b"6.1.0-99-test-amd64", &initrd, &kernel];
    let mut previous_end = stub_end;
    for (section, content) in sections[stub_sections.len()..].iter().zip(expected) {
        assert_eq!(section.virtual_address % 4096, 0, "{} is not page-aligned", section.name);
        assert!(section.virtual_address >= previous_end, "{} overlaps what comes before it", section.name);
        assert_eq!(section.file_offset % 512, 0, "{} is not at the stub's file alignment", section.name);
        assert_eq!(&uki[section.content.clone()], content, "{}", section.name);
        assert_eq!(section.sha256, <[u8; 32]>::from(Sha256::digest(content)), "{}", section.name);
        previous_end = section.virtual_address + section.virtual_size;
    }
    let inspection = inspect(&uki).unwrap();
    assert!(inspection.checksum_matches && inspection.signature_table.is_none());
    let last = sections.last().unwrap();
    assert_eq!(uki.len() as u32, last.file_offset + last.file_size, "nothing after the last section: no bytes a signature would not cover");
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let (stub, kernel, initrd) = (stub(), fake_kernel(1 << 20, 117), XorShift::new(105).bytes(77_777));
    assert_eq!(build(&parts(&stub, &kernel, &initrd)).unwrap(), build(&parts(&stub, &kernel, &initrd)).unwrap());
    let other = XorShift::new(107).bytes(77_777);
    assert_ne!(build(&parts(&stub, &kernel, &initrd)).unwrap(), build(&parts(&stub, &kernel, &other)).unwrap());
}

/// objdump and pefile read the same sections, and pefile computes the same checksum.
#[test]
fn other_pe_readers_agree_with_the_layout_and_checksum() {
    let dir = test_dir("readers");
    let (stub, kernel, initrd) = (stub(), fake_kernel(2 << 20, 119), XorShift::new(109).bytes(300_003));
    let path = dir.join("uki.efi");
    let uki = build(&parts(&stub, &kernel, &initrd)).unwrap();
    std::fs::write(&path, &uki).unwrap();
    let script = "import sys, pefile\n\
                  pe = pefile.PE(sys.argv[1])\n\
                  print(pe.OPTIONAL_HEADER.CheckSum, pe.generate_checksum(), pe.OPTIONAL_HEADER.SizeOfImage)\n\
                  for s in pe.sections:\n    print(s.Name.rstrip(b'\\0').decode(), s.VirtualAddress, s.Misc_VirtualSize, s.PointerToRawData, s.SizeOfRawData)\n";
    let output = Command::new(python_tool("python3")).arg("-c").arg(script).arg(&path).output().unwrap();
    assert!(output.status.success(), "pefile: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let mut lines = text.lines();
    let header: Vec<u64> = lines.next().unwrap().split(' ').map(|n| n.parse().unwrap()).collect();
    let inspection = inspect(&uki).unwrap();
    assert_eq!(header[0], u64::from(inspection.checksum));
    assert_eq!(header[1], u64::from(inspection.checksum), "pefile computes another checksum");
    let last = inspection.sections.last().unwrap();
    assert_eq!(header[2], u64::from(last.virtual_address + last.virtual_size).div_ceil(512) * 512);
    let ours: Vec<String> = inspection
        .sections
        .iter()
        .map(|s| format!("{} {} {} {} {}", s.name, s.virtual_address, s.virtual_size, s.file_offset, s.file_size))
        .collect();
    assert_eq!(lines.collect::<Vec<_>>(), ours);
    let objdump = keel_test_support::run("objdump", &["-h", path.to_str().unwrap()]);
    for section in &inspection.sections {
        let line = format!("{} {:08x} {:016x}", section.name, section.virtual_size, section.virtual_address);
        let found = objdump.lines().any(|l| l.split_whitespace().skip(1).take(3).collect::<Vec<_>>().join(" ") == line);
        assert!(found, "objdump does not show {line}:\n{objdump}");
    }
}

/// sbsign signs every byte (it warns of bytes outside sections, and `sign` refuses a
/// warning); sbverify accepts the result with the signer's certificate only, and not
/// once a section's byte changed.
#[test]
fn sbverify_accepts_the_signed_uki_and_nothing_changed_or_signed_by_another() {
    let dir = test_dir("signing");
    let (key, cert) = keys(&dir, "db");
    let (other_key, other_cert) = keys(&dir, "other");
    let (stub, kernel, initrd) = (stub(), fake_kernel(1 << 20, 121), XorShift::new(111).bytes(100_000));
    let unsigned = dir.join("unsigned.efi");
    std::fs::write(&unsigned, build(&parts(&stub, &kernel, &initrd)).unwrap()).unwrap();
    let signed = dir.join("signed.efi");
    sign(&unsigned, &key, &cert, &signed).unwrap();
    let sbverify = |cert: &Path, file: &Path| Command::new("sbverify").arg("--cert").arg(cert).arg(file).output().unwrap();
    let accepted = sbverify(&cert, &signed);
    assert!(accepted.status.success(), "sbverify: {}", String::from_utf8_lossy(&accepted.stderr));
    assert!(!sbverify(&other_cert, &signed).status.success(), "sbverify accepted another key's certificate");
    let signed_bytes = std::fs::read(&signed).unwrap();
    let inspection = inspect(&signed_bytes).unwrap();
    assert!(inspection.signature_table.is_some() && inspection.checksum_matches);
    let initrd_section = inspection.sections.iter().find(|s| s.name == ".initrd").unwrap();
    let tampered = dir.join("tampered.efi");
    let mut bytes = signed_bytes.clone();
    bytes[initrd_section.content.start + 12_345] ^= 1;
    std::fs::write(&tampered, &bytes).unwrap();
    assert!(!sbverify(&cert, &tampered).status.success(), "sbverify accepted a changed initrd");
    let resigned = dir.join("other.efi");
    sign(&unsigned, &other_key, &other_cert, &resigned).unwrap();
    assert!(!sbverify(&cert, &resigned).status.success(), "sbverify accepted another key's signature");
}

#[test]
fn the_kernel_release_is_read_from_the_setup_header() {
    assert_eq!(kernel_release(&fake_kernel(4096, 123)).unwrap(), "6.1.0-99-test-amd64");
    let mut no_magic = fake_kernel(4096, 125);
    no_magic[0x202] = b'X';
    assert!(kernel_release(&no_magic).is_err());
    let mut beyond = fake_kernel(4096, 127);
    beyond[0x20e..0x210].copy_from_slice(&0xfff0u16.to_le_bytes());
    assert!(kernel_release(&beyond).is_err());
    assert!(kernel_release(&[0; 0x203]).is_err());
}

#[test]
fn what_would_leave_the_command_line_unsigned_or_break_the_stub_is_refused() {
    let (stub, kernel, initrd) = (stub(), fake_kernel(8192, 129), vec![7u8; 100]);
    let with = |cmdline: &str| build(&Parts { cmdline, ..parts(&stub, &kernel, &initrd) });
    let error = with("  ").unwrap_err().to_string();
    assert!(error.contains("empty"), "{error}");
    assert!(with("a\nb").is_err(), "a newline");
    assert!(with(&"x".repeat(2048)).is_err(), "longer than the kernel takes");
    assert!(with(&"x".repeat(2047)).is_ok());
    assert!(build(&Parts { os_release: b"\xff\xfe", ..parts(&stub, &kernel, &initrd) }).is_err());
    assert!(build(&Parts { kernel: &[0; 4096], ..parts(&stub, &kernel, &initrd) }).is_err(), "not a bzImage");
    // A UKI is not a stub: its sections are already there, and a signed one would keep a
    // signature that does not cover what is added.
    let uki = build(&parts(&stub, &kernel, &initrd)).unwrap();
    let error = format!("{:#}", build(&parts(&uki, &kernel, &initrd)).unwrap_err());
    assert!(error.contains("already has a .osrel section"), "{error}");
}

#[test]
fn a_signed_stub_is_refused() {
    let dir = test_dir("signed-stub");
    let (key, cert) = keys(&dir, "db");
    let signed = dir.join("stub.efi");
    // sbsign itself: `sign` refuses the stub, whose COFF symbol table no section covers.
    let status =
        Command::new("sbsign").arg("--key").arg(&key).arg("--cert").arg(&cert).arg("--output").arg(&signed).arg(DEFAULT_STUB).output().unwrap();
    assert!(status.status.success());
    let error = format!("{:#}", build(&parts(&std::fs::read(&signed).unwrap(), &fake_kernel(8192, 131), b"x")).unwrap_err());
    assert!(error.contains("the stub is signed"), "{error}");
}

/// `keel uki inspect` reads whatever file it is given: damaged headers and section
/// tables give errors, never a panic or a read outside the file.
#[test]
fn damaged_images_are_errors_not_panics() {
    let (stub, kernel, initrd) = (stub(), fake_kernel(64 << 10, 133), vec![1u8; 10_000]);
    let uki = build(&parts(&stub, &kernel, &initrd)).unwrap();
    let mut random = XorShift::new(113);
    let mut errors = 0;
    for round in 0..4_000 {
        let mut bytes = uki.clone();
        if round % 4 == 0 {
            bytes.truncate(random.below(uki.len() as u64) as usize);
        }
        // Most flips land in the headers and the section table, where parsing decides.
        for _ in 0..=random.below(4) {
            let at = random.below(0x400.min(bytes.len() as u64).max(1)) as usize;
            if let Some(byte) = bytes.get_mut(at) {
                *byte ^= 1 << random.below(8);
            }
        }
        match inspect(&bytes) {
            Ok(inspection) => {
                for section in inspection.sections {
                    assert!(section.content.end <= bytes.len());
                }
            }
            Err(_) => errors += 1,
        }
        if round % 8 == 0 {
            let _ = build(&parts(&bytes, &kernel, &initrd));
        }
    }
    assert!(errors > 200, "only {errors} of 4000 damaged images were refused: the damage is not reaching the parser");
    let error = format!("{:#}", inspect(&uki[..uki.len() - 1]).unwrap_err());
    assert!(error.contains(".linux"), "a cut image names the section it cuts: {error}");
}

/// The stub's FileAlignment field (the optional header's, at e_lfanew + 24 + 36).
fn file_alignment_offset(stub: &[u8]) -> usize {
    u32::from_le_bytes(stub[0x3c..0x40].try_into().unwrap()) as usize + 24 + 36
}

/// Alignments outside what PE/COFF allows are refused before any allocation they size
/// (a 2 GiB FileAlignment would have made keel fill gigabytes of padding).
#[test]
fn a_stub_with_alignments_pe_coff_does_not_allow_is_refused() {
    let (stub, kernel) = (stub(), fake_kernel(8192, 135));
    let at = file_alignment_offset(&stub);
    for (alignment, what) in [(1u32 << 31, "file alignment"), (256, "file alignment"), (0x300, "file alignment"), (0x2000, "section alignment")] {
        let mut bad = stub.clone();
        bad[at..at + 4].copy_from_slice(&alignment.to_le_bytes());
        let error = format!("{:#}", build(&parts(&bad, &kernel, b"x")).unwrap_err());
        assert!(error.contains(what), "{alignment:#x}: {error}");
    }
}

/// systemd's stub takes a section whose name starts with a part's (`.initrdX` is an
/// initrd to it), the last of several: inspect says so, and a stub with such a section
/// is refused.
#[test]
fn sections_the_stub_reads_as_the_same_part_are_flagged_and_refused() {
    let (stub, kernel, initrd) = (stub(), fake_kernel(8192, 137), vec![3u8; 5000]);
    let mut uki = build(&parts(&stub, &kernel, &initrd)).unwrap();
    assert!(inspect(&uki).unwrap().ambiguous_parts().is_empty());
    let table = u32::from_le_bytes(uki[0x3c..0x40].try_into().unwrap()) as usize + 24 + 240;
    let names: Vec<String> = inspect(&uki).unwrap().sections.iter().map(|s| s.name.clone()).collect();
    let uname = table + 40 * names.iter().position(|n| n == ".uname").unwrap();
    uki[uname..uname + 8].copy_from_slice(b".initrdX");
    let inspection = inspect(&uki).unwrap();
    assert_eq!(inspection.ambiguous_parts(), vec![(".initrd", vec![".initrdX", ".initrd"])]);
    let mut stub_with_part = stub.clone();
    let sdmagic = table + 40 * names.iter().position(|n| n == ".sdmagic").unwrap();
    stub_with_part[sdmagic..sdmagic + 8].copy_from_slice(b".linuxAB");
    let error = format!("{:#}", build(&parts(&stub_with_part, &kernel, &initrd)).unwrap_err());
    assert!(error.contains("already has a .linux section (.linuxAB)"), "{error}");
}
