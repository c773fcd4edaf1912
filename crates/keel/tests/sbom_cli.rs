//! The SBOM (`OUTPUT.spdx.json`) and provenance (`OUTPUT.intoto.json`) that `keel initrd
//! build` and `keel image build` write: valid SPDX by the reference validator, every packed
//! file with its real digest and origin, the same bytes from two build directories, and a
//! provenance whose digests are the files'.

use keel_disk::{read_gpt, SectorSize};
use keel_manifest::ImageManifest;
use keel_sbom::{sha256_hex, Digests};
use keel_test_support::{fake_kernel, fake_kernel_modules, python_tool, run, scratch_dir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

/// fake_kernel_modules' version.
const KERNEL_VERSION: &str = "6.1.0-test";
const KERNEL_PACKAGE: &str = "linux-image-6.1.0-test";
const KERNEL_PACKAGE_VERSION: &str = "6.1.999-1";

/// A kernel unpacked from its package as the VM tests unpack Debian's (`dpkg-deb -x`, with
/// the control data at DEBIAN/control and DEBIAN/md5sums).
fn unpacked_kernel(dir: &Path) -> PathBuf {
    let root = dir.join("kernel-root");
    let modules = fake_kernel_modules(&root);
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    let control = format!("Package: {KERNEL_PACKAGE}\nSource: linux-signed-amd64\nVersion: {KERNEL_PACKAGE_VERSION}\nArchitecture: amd64\n");
    std::fs::write(root.join("DEBIAN/control"), control).unwrap();
    let md5sums = run("sh", &["-c", &format!("cd {} && find lib -name '*.ko' | sort | xargs md5sum", root.display())]);
    std::fs::write(root.join("DEBIAN/md5sums"), md5sums).unwrap();
    modules
}

/// The output of `keel ARGS`, which must succeed, run in `dir` with a fixed SOURCE_DATE_EPOCH.
fn keel_in(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_keel")).args(args).current_dir(dir).env("SOURCE_DATE_EPOCH", "1700000000").output().unwrap();
    assert!(output.status.success(), "keel {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// An image (with an OEM tree) and its initrd built in `dir` with paths relative to it, as a
/// build script would; a small host program stands in for keel-init (it has no
/// cargo-auditable data; keel's debug binary would take zstd -19 a minute). Returns keel's
/// output of the initrd build.
fn build_in(dir: &Path, modules: &Path) -> String {
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::fs::write(dir.join("usr/bin/hello"), "#!/bin/sh\necho hello\n").unwrap();
    std::fs::create_dir_all(dir.join("usr-b/bin")).unwrap();
    std::fs::write(dir.join("usr-b/bin/hello"), "#!/bin/sh\necho hello from the update\n").unwrap();
    std::fs::create_dir_all(dir.join("oem/base")).unwrap();
    std::fs::write(dir.join("oem/config.ign"), r#"{"ignition":{"version":"3.4.0"}}"#).unwrap();
    std::fs::write(dir.join("oem/base/base.ign"), r#"{"ignition":{"version":"3.4.0"}}"#).unwrap();
    std::fs::copy("/usr/bin/true", dir.join("keel-init")).unwrap();
    let sizes = ["--esp-mib", "2", "--usr-mib", "8", "--oem-mib", "2", "--root-mib", "4"];
    keel_in(dir, &[&["image", "build", "--usr", "usr", "--usr-b", "usr-b", "--oem", "oem", "--output", "disk.img"][..], &sizes].concat());
    let modules = modules.to_str().unwrap();
    keel_in(dir, &["initrd", "build", "--manifest", "disk.json", "--init", "keel-init", "--kernel-modules", modules, "--output", "initrd.img"])
}

/// A scratch directory `name` with an image and initrd built in its `build` directory: that
/// directory, the kernel's module directory they used, and keel's output of the initrd build.
fn built(name: &str) -> (PathBuf, PathBuf, String) {
    let dir = scratch_dir(env!("CARGO_TARGET_TMPDIR"), name);
    let modules = unpacked_kernel(&dir);
    let output = build_in(&dir.join("build"), &modules);
    (dir.join("build"), modules, output)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn validate(path: &Path) {
    let output = Command::new(python_tool("pyspdxtools")).arg("-i").arg(path).output().unwrap();
    assert!(
        output.status.success(),
        "pyspdxtools refuses {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Each regular file of the initrd, unpacked by GNU cpio, with its SHA-256.
fn unpacked_initrd(initrd: &Path, into: &Path) -> BTreeMap<String, String> {
    std::fs::create_dir_all(into).unwrap();
    let archive = Command::new("zstd").args(["-d", "-c"]).arg(initrd).output().unwrap();
    assert!(archive.status.success(), "{}", String::from_utf8_lossy(&archive.stderr));
    let mut child = Command::new("cpio")
        .args(["-i", "-d", "--quiet", "--no-absolute-filenames"])
        .current_dir(into)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &archive.stdout).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    keel_sbom::image::tree_files(into).unwrap().into_iter().map(|(path, digests)| (path, digests.sha256)).collect()
}

/// The SBOM's files by name (without `./`) with their SHA-256 and SHA-1.
fn sbom_files(sbom: &Value) -> BTreeMap<String, (String, String)> {
    sbom["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| {
            let checksum = |algorithm: &str| {
                file["checksums"].as_array().unwrap().iter().find(|c| c["algorithm"] == algorithm).unwrap()["checksumValue"]
                    .as_str()
                    .unwrap()
                    .to_string()
            };
            (file["fileName"].as_str().unwrap().trim_start_matches("./").to_string(), (checksum("SHA256"), checksum("SHA1")))
        })
        .collect()
}

/// The package (name, version) that CONTAINS the file named `name`, other than the artifact.
fn origin_of(sbom: &Value, name: &str) -> Option<(String, String)> {
    let file = sbom["files"].as_array().unwrap().iter().find(|file| file["fileName"] == format!("./{name}"))?;
    let relationship = sbom["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["relatedSpdxElement"] == file["SPDXID"] && r["relationshipType"] == "CONTAINS" && r["spdxElementId"] != "SPDXRef-Artifact")?;
    let package = sbom["packages"].as_array().unwrap().iter().find(|p| p["SPDXID"] == relationship["spdxElementId"]).unwrap();
    Some((package["name"].as_str().unwrap().to_string(), package["versionInfo"].as_str().unwrap_or("NOASSERTION").to_string()))
}

/// The build host's distribution as its purls name it (`debian-12`), from /etc/os-release.
fn host_distro() -> String {
    let fields = |name: &str| run("sh", &["-c", &format!(". /etc/os-release && printf %s \"${name}\"")]);
    format!("{}-{}", fields("ID"), fields("VERSION_ID"))
}

fn debian_version(package: &str) -> String {
    run("dpkg-query", &["-W", "-f", "${Version}", package])
}

#[test]
fn the_initrd_sbom_lists_every_packed_file_with_its_digest_and_origin() {
    let (build, _, output) = built("sbom-initrd");
    let (initrd, sbom_path, unpacked) = (build.join("initrd.img"), build.join("initrd.img.spdx.json"), build.join("../unpacked"));
    validate(&sbom_path);
    let sbom = json(&sbom_path);

    let packed = unpacked_initrd(&initrd, &unpacked);
    let listed = sbom_files(&sbom);
    assert_eq!(listed.keys().collect::<Vec<_>>(), packed.keys().collect::<Vec<_>>(), "the SBOM's files are not the initrd's");
    for (path, sha256) in &packed {
        let bytes = std::fs::read(unpacked.join(path)).unwrap();
        assert_eq!((&listed[path].0, &listed[path].1), (sha256, &Digests::of(&bytes).sha1), "{path}");
    }
    assert_eq!(sbom["packages"][0]["checksums"][0]["checksumValue"], sha256_hex(&std::fs::read(&initrd).unwrap()));

    assert_eq!(origin_of(&sbom, "usr/sbin/mkfs.ext4"), Some(("e2fsprogs".into(), debian_version("e2fsprogs"))));
    assert_eq!(origin_of(&sbom, "lib/x86_64-linux-gnu/libc.so.6"), Some(("libc6".into(), debian_version("libc6"))));
    let module = format!("lib/modules/{KERNEL_VERSION}/kernel/drivers/md/dm-verity.ko");
    assert_eq!(origin_of(&sbom, &module), Some((KERNEL_PACKAGE.into(), KERNEL_PACKAGE_VERSION.into())));
    assert_eq!(origin_of(&sbom, "etc/keel/image.json"), None, "keel writes it: only the initrd contains it");
    let kernel = sbom["packages"].as_array().unwrap().iter().find(|p| p["name"] == KERNEL_PACKAGE).unwrap();
    let purl = format!("pkg:deb/debian/{KERNEL_PACKAGE}@{KERNEL_PACKAGE_VERSION}?arch=amd64&distro={}", host_distro());
    assert_eq!(kernel["externalRefs"][0]["referenceLocator"], purl);
    assert_eq!(kernel["supplier"], "Organization: Debian");

    // keel's test binary was built without cargo-auditable: said, not guessed.
    assert!(output.contains("WARNING: /init was built without cargo-auditable"), "{output}");
    let (name, version) = origin_of(&sbom, "init").unwrap();
    assert_eq!((name.as_str(), version.as_str()), ("keel-init", "NOASSERTION"));
}

#[test]
fn both_documents_are_byte_identical_from_two_build_directories() {
    let dir = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "sbom-reproducible");
    let modules = unpacked_kernel(&dir);
    build_in(&dir.join("first"), &modules);
    build_in(&dir.join("second/nested"), &modules);
    for document in ["initrd.img.spdx.json", "initrd.img.intoto.json", "disk.img.spdx.json", "disk.img.intoto.json"] {
        let first = std::fs::read_to_string(dir.join("first").join(document)).unwrap();
        assert_eq!(first, std::fs::read_to_string(dir.join("second/nested").join(document)).unwrap(), "{document} differs");
        assert!(!first.contains(dir.join("first").to_str().unwrap()), "{document} names the build directory");
    }
    let sbom = json(&dir.join("first/initrd.img.spdx.json"));
    assert_eq!(sbom["creationInfo"]["created"], "2023-11-14T22:13:20Z", "from SOURCE_DATE_EPOCH");
}

/// Each `name` of the provenance is a file below `dir`, an absolute path, or a Debian
/// package's program (`pkg:deb/...#usr/bin/zstd`): its bytes.
fn named_bytes(dir: &Path, name: &str) -> Vec<u8> {
    let path = match name.split_once('#') {
        Some((purl, program)) if purl.starts_with("pkg:deb/debian/") => PathBuf::from("/").join(program),
        _ => dir.join(name),
    };
    std::fs::read(std::fs::canonicalize(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn digests_of(list: &Value) -> Vec<(String, String)> {
    list.as_array().unwrap().iter().map(|d| (d["name"].as_str().unwrap().to_string(), d["digest"]["sha256"].as_str().unwrap().to_string())).collect()
}

#[test]
fn the_provenance_names_each_output_and_input_with_its_digest() {
    let (build, modules, _) = built("sbom-provenance");

    let statement = json(&build.join("initrd.img.intoto.json"));
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    let subjects = digests_of(&statement["subject"]);
    assert_eq!(subjects.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), ["initrd.img", "initrd.img.spdx.json"]);
    let inputs = digests_of(&statement["predicate"]["buildDefinition"]["resolvedDependencies"]);
    for (name, sha256) in subjects.iter().chain(&inputs) {
        assert_eq!(&sha256_hex(&named_bytes(&build, name)), sha256, "{name}");
    }
    let input_names: Vec<&str> = inputs.iter().map(|(name, _)| name.as_str()).collect();
    let dm_verity = modules.join("kernel/drivers/md/dm-verity.ko");
    let zstd = inputs.iter().any(|(name, _)| name.starts_with("pkg:deb/debian/zstd@") && name.ends_with("bin/zstd"));
    for expected in ["keel-init", "disk.json", dm_verity.to_str().unwrap(), modules.join("modules.dep").to_str().unwrap()] {
        assert!(input_names.contains(&expected), "{expected} is not among the inputs {input_names:?}");
    }
    let libc = format!(
        "pkg:deb/debian/libc6@{}?arch=amd64&distro={}#lib/x86_64-linux-gnu/libc.so.6",
        debian_version("libc6").replace('+', "%2B"),
        host_distro()
    );
    assert!(input_names.contains(&libc.as_str()), "{libc} is not among the inputs {input_names:?}");
    assert!(zstd, "the compressor is not among the inputs {input_names:?}");
    let command = statement["predicate"]["buildDefinition"]["externalParameters"]["command"].as_array().unwrap();
    assert_eq!(command[..4], ["keel", "initrd", "build", "--manifest"]);

    let statement = json(&build.join("disk.img.intoto.json"));
    let subjects = digests_of(&statement["subject"]);
    assert_eq!(
        subjects.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(),
        ["disk.img", "disk.json", "disk.usr-b.json", "disk.img.spdx.json"]
    );
    for (name, sha256) in &subjects {
        assert_eq!(&sha256_hex(&named_bytes(&build, name)), sha256, "{name}");
    }
    let inputs: BTreeMap<String, String> = digests_of(&statement["predicate"]["buildDefinition"]["resolvedDependencies"]).into_iter().collect();
    assert_eq!(inputs["usr"], keel_sbom::image::tree_digest(&build.join("usr")).unwrap());
    assert_eq!(inputs["usr-b"], keel_sbom::image::tree_digest(&build.join("usr-b")).unwrap());
    assert_eq!(inputs["oem"], keel_sbom::image::tree_digest(&build.join("oem")).unwrap());
    assert!(inputs.keys().any(|name| name.starts_with("pkg:deb/debian/e2fsprogs@") && name.ends_with("#usr/sbin/mkfs.ext4")), "{inputs:?}");
}

#[test]
fn the_image_sbom_has_each_usr_slot_with_its_root_hash_and_the_esp_and_oem_files() {
    let (build, _, _) = built("sbom-image");
    validate(&build.join("disk.img.spdx.json"));
    let sbom = json(&build.join("disk.img.spdx.json"));
    let package = |name: &str| sbom["packages"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no {name}")).clone();
    // Each slot's filesystem up to its hash tree, with the root hash of its own manifest.
    for (slot, manifest) in [("USR-A", "disk.json"), ("USR-B", "disk.usr-b.json")] {
        let manifest = ImageManifest::from_json(&std::fs::read_to_string(build.join(manifest)).unwrap()).unwrap();
        let mut image = std::fs::File::open(build.join("disk.img")).unwrap();
        let partition = read_gpt(&mut image, SectorSize::Bytes512).unwrap().by_name(slot).unwrap().unwrap().clone();
        let mut filesystem = vec![0; manifest.usr.hash_offset as usize];
        image.seek(SeekFrom::Start(partition.start_bytes(SectorSize::Bytes512))).unwrap();
        image.read_exact(&mut filesystem).unwrap();
        let usr = package(slot);
        assert_eq!(usr["checksums"][0]["checksumValue"], sha256_hex(&filesystem), "{slot}");
        let root_hash = keel_verity::encode_hex(&manifest.usr.root_hash);
        assert!(usr["comment"].as_str().unwrap().contains(&format!("dm-verity root hash {root_hash}")), "{usr}");
    }

    let files = sbom_files(&sbom);
    assert_eq!(files["EFI-SYSTEM/flatcar/first_boot"].0, sha256_hex(b""));
    let config = std::fs::read(build.join("oem/config.ign")).unwrap();
    assert_eq!(files["OEM/config.ign"].0, sha256_hex(&config));
    assert!(files.contains_key("OEM/base/base.ign"), "{files:?}");
    assert_eq!(origin_of(&sbom, "OEM/config.ign").map(|(name, _)| name), Some("OEM".to_string()));
    assert_eq!(package("disk.img")["checksums"][0]["checksumValue"], sha256_hex(&std::fs::read(build.join("disk.img")).unwrap()));
}

/// The SPDX id of the file named `name` in `sbom`.
fn file_id(sbom: &Value, name: &str) -> String {
    let file = sbom["files"].as_array().unwrap().iter().find(|file| file["fileName"] == format!("./{name}"));
    file.unwrap_or_else(|| panic!("no file {name}"))["SPDXID"].as_str().unwrap().to_string()
}

/// An image with unsigned UKIs for both slots built in `dir/build`, their kernel unpacked
/// from its package beside it: the build directory and the kernel.
fn build_with_ukis(dir: &Path) -> (PathBuf, PathBuf) {
    let modules = unpacked_kernel(dir);
    // Where Debian's kernel package ships its image, listed in its md5sums as the modules are.
    let kernel = dir.join(format!("kernel-root/boot/vmlinuz-{KERNEL_VERSION}"));
    std::fs::create_dir_all(kernel.parent().unwrap()).unwrap();
    fake_kernel(&kernel, KERNEL_VERSION);
    let md5 = run("md5sum", &[kernel.to_str().unwrap()]);
    let md5 = md5.split_whitespace().next().unwrap();
    let md5sums = std::fs::read_to_string(dir.join("kernel-root/DEBIAN/md5sums")).unwrap();
    std::fs::write(dir.join("kernel-root/DEBIAN/md5sums"), format!("{md5sums}\n{md5}  boot/vmlinuz-{KERNEL_VERSION}\n")).unwrap();
    let build = dir.join("build");
    for tree in ["usr", "usr-b"] {
        std::fs::create_dir_all(build.join(tree).join("bin")).unwrap();
        std::fs::write(build.join(tree).join("bin/hello"), format!("#!/bin/sh\necho {tree}\n")).unwrap();
    }
    std::fs::copy("/usr/bin/true", build.join("keel-init")).unwrap();
    let (kernel_arg, modules_arg) = (kernel.to_str().unwrap(), modules.to_str().unwrap());
    let sizes = ["--esp-mib", "64", "--usr-mib", "8", "--oem-mib", "2", "--root-mib", "4"];
    let ukis = ["--uki-kernel", kernel_arg, "--uki-init", "keel-init", "--uki-kernel-modules", modules_arg];
    keel_in(&build, &[&["image", "build", "--usr", "usr", "--usr-b", "usr-b", "--output", "disk.img"][..], &sizes, &ukis].concat());
    (build, kernel)
}

#[test]
fn the_image_sbom_credits_each_ukis_kernel_and_stub_and_refers_to_its_initrds_sbom() {
    let (build, kernel) = build_with_ukis(&scratch_dir(env!("CARGO_TARGET_TMPDIR"), "sbom-image-ukis"));
    validate(&build.join("disk.img.spdx.json"));
    let sbom = json(&build.join("disk.img.spdx.json"));
    let files = sbom_files(&sbom);

    let kernel_name = format!("vmlinuz-{KERNEL_VERSION}");
    assert_eq!(files[&kernel_name].0, sha256_hex(&std::fs::read(&kernel).unwrap()));
    assert_eq!(origin_of(&sbom, &kernel_name), Some((KERNEL_PACKAGE.to_string(), KERNEL_PACKAGE_VERSION.to_string())));
    let stub = std::fs::read("/usr/lib/systemd/boot/efi/linuxx64.efi.stub").unwrap();
    assert_eq!(files["linuxx64.efi.stub"].0, sha256_hex(&stub));
    assert_eq!(origin_of(&sbom, "linuxx64.efi.stub"), Some(("systemd-boot-efi".to_string(), debian_version("systemd-boot-efi"))));

    let relationships: Vec<(String, String, String)> = sbom["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["spdxElementId"].as_str().unwrap().into(),
                r["relationshipType"].as_str().unwrap().into(),
                r["relatedSpdxElement"].as_str().unwrap().into(),
            )
        })
        .collect();
    let related = |from: &str, kind: &str, to: &str| relationships.contains(&(from.to_string(), kind.to_string(), to.to_string()));
    let references = sbom["externalDocumentRefs"].as_array().unwrap();
    assert_eq!(references.len(), 2, "{references:?}");
    for (slot, esp_paths) in [("usr-a", &["EFI/keel/usr-a.efi", "EFI/BOOT/BOOTX64.EFI"][..]), ("usr-b", &["EFI/keel/usr-b.efi"])] {
        let initrd_sbom = std::fs::read(build.join(format!("disk.{slot}.initrd.spdx.json"))).unwrap();
        let namespace = serde_json::from_slice::<Value>(&initrd_sbom).unwrap()["documentNamespace"].clone();
        let reference = references.iter().find(|r| r["spdxDocument"] == namespace).unwrap_or_else(|| panic!("no reference to {slot}'s initrd SBOM"));
        assert_eq!(reference["checksum"]["algorithm"], "SHA256");
        assert_eq!(reference["checksum"]["checksumValue"], sha256_hex(&initrd_sbom), "{slot}");
        let initrd_artifact = format!("{}:SPDXRef-Artifact", reference["externalDocumentId"].as_str().unwrap());
        for esp_path in esp_paths {
            let uki = file_id(&sbom, &format!("EFI-SYSTEM/{esp_path}"));
            assert!(related(&uki, "CONTAINS", &initrd_artifact), "{esp_path} does not contain {initrd_artifact}");
            assert!(related(&uki, "CONTAINS", &file_id(&sbom, &kernel_name)), "{esp_path} does not contain the kernel");
            assert!(related(&uki, "GENERATED_FROM", &file_id(&sbom, "linuxx64.efi.stub")), "{esp_path} is not made from the stub");
        }
    }
}

#[test]
fn an_unsigned_image_with_ukis_has_the_same_sbom_from_two_build_directories() {
    let sbom = |name: &str| {
        let (build, _) = build_with_ukis(&scratch_dir(env!("CARGO_TARGET_TMPDIR"), name));
        std::fs::read(build.join("disk.img.spdx.json")).unwrap()
    };
    let first = sbom("sbom-image-ukis-one");
    assert!(String::from_utf8_lossy(&first).contains("externalDocumentRefs"), "the UKIs are described");
    assert!(first == sbom("sbom-image-ukis-two"), "the image SBOM differs between build directories");
}

#[test]
fn a_failed_rebuild_leaves_no_initrd_beside_documents_of_another() {
    let (build, modules, _) = built("sbom-failed-rebuild");
    // Not an ELF file: reading its crates for the SBOM fails after the archive is made.
    std::fs::write(build.join("not-elf"), "#!/bin/sh\n").unwrap();
    let modules = modules.to_str().unwrap();
    let args = ["initrd", "build", "--manifest", "disk.json", "--init", "not-elf", "--kernel-modules", modules, "--output", "initrd.img"];
    let output = Command::new(env!("CARGO_BIN_EXE_keel")).args(args).current_dir(&build).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not an ELF file"), "{}", String::from_utf8_lossy(&output.stderr));
    for name in ["initrd.img", "initrd.img.spdx.json", "initrd.img.intoto.json"] {
        assert!(!build.join(name).exists(), "{name} is left from the build before");
    }
    let temporaries: Vec<_> =
        std::fs::read_dir(&build).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().ends_with(".tmp")).collect();
    assert!(temporaries.is_empty(), "{temporaries:?}");
}

#[test]
fn reading_the_esp_back_leaves_a_directory_it_did_not_make_alone() {
    let dir = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "sbom-esp-scratch");
    let modules = unpacked_kernel(&dir);
    // The name the ESP's files were once copied into, then removed with whatever it held.
    std::fs::create_dir_all(dir.join("build/disk.img.sbom-esp")).unwrap();
    std::fs::write(dir.join("build/disk.img.sbom-esp/keep"), "mine").unwrap();
    build_in(&dir.join("build"), &modules);
    assert_eq!(std::fs::read_to_string(dir.join("build/disk.img.sbom-esp/keep")).unwrap(), "mine");
    let left: Vec<_> =
        std::fs::read_dir(dir.join("build")).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().starts_with('.')).collect();
    assert!(left.is_empty(), "scratch directories left: {left:?}");
}
