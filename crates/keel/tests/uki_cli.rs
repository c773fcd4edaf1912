//! `keel image build --usr-b … --uki-kernel …`: each slot's signed UKI on the ESP, with its
//! own initrd and command line, beside the image too; USR-A's bytes do not change with it;
//! what would make a slot's UKI read another /usr, or options that do nothing, are refused
//! before anything is written. (The UKIs booting under Secure Boot: vm-tests/secure_boot.rs.)

mod support;

use keel_disk::{read_gpt, SectorSize};
use keel_test_support::{fake_kernel, fake_kernel_modules, run, scratch_dir};
use std::path::{Path, PathBuf};
use support::{failure_of, keel, stdout_of};

const SIZES: [&str; 6] = ["--usr-mib", "8", "--oem-mib", "2", "--root-mib", "4"];
/// Room for two UKIs and the removable path's copy.
const ESP_MIB: &str = "64";

struct Inputs {
    dir: PathBuf,
    modules: PathBuf,
}

/// What an option of `image build` is, unless `changed` names it with another value.
struct Changed<'a> {
    cmdline: &'a str,
    modules: Option<&'a str>,
    esp_mib: &'a str,
    /// Options added at the end.
    extra: &'a [&'a str],
}

const AS_BUILT: Changed = Changed { cmdline: "console=ttyS0", modules: None, esp_mib: ESP_MIB, extra: &[] };

/// Two /usr trees, a kernel and its modules, keel-init's stand-in and a signing key.
fn inputs(name: &str) -> Inputs {
    let dir = scratch_dir(env!("CARGO_TARGET_TMPDIR"), name);
    for (tree, text) in [("usr", "A"), ("usr-b", "B")] {
        std::fs::create_dir_all(dir.join(tree).join("lib")).unwrap();
        std::fs::write(dir.join(tree).join("lib/os-release"), format!("ID=keel\nVERSION_ID={text}\n")).unwrap();
    }
    let modules = fake_kernel_modules(&dir.join("kernel"));
    fake_kernel(&dir.join("vmlinuz"), "6.1.0-test");
    std::fs::copy("/usr/bin/true", dir.join("keel-init")).unwrap();
    let (key, cert) = (dir.join("db.key"), dir.join("db.crt"));
    run(
        "openssl",
        &[
            "req",
            "-new",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=keel test db/",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    Inputs { dir, modules }
}

/// `keel image build` of `inputs` with `changed`.
fn image_build(inputs: &Inputs, changed: &Changed) -> std::process::Output {
    let path = |name: &str| inputs.dir.join(name).to_str().unwrap().to_string();
    let modules = changed.modules.map_or_else(|| inputs.modules.to_str().unwrap().to_string(), str::to_string);
    let mut args: Vec<String> = ["image", "build", "--usr", &path("usr"), "--output", &path("disk.img")].map(String::from).to_vec();
    args.extend(SIZES.map(String::from));
    args.extend(["--esp-mib".into(), changed.esp_mib.into(), "--usr-b".into(), path("usr-b"), "--uki-kernel".into(), path("vmlinuz")]);
    args.extend(["--uki-init".into(), path("keel-init"), "--uki-kernel-modules".into(), modules, "--uki-cmdline".into(), changed.cmdline.into()]);
    args.extend(["--sign-key".into(), path("db.key"), "--sign-cert".into(), path("db.crt")]);
    args.extend(changed.extra.iter().map(|option| option.to_string()));
    keel(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A file of the image's ESP, read with mtools.
fn esp_file(image: &Path, path: &str) -> Vec<u8> {
    let esp = read_gpt(&mut std::fs::File::open(image).unwrap(), SectorSize::Bytes512).unwrap().by_name("EFI-SYSTEM").unwrap().unwrap().clone();
    let out = image.with_extension(path.replace('/', "_"));
    let drive = format!("{}@@{}", image.display(), esp.start_bytes(SectorSize::Bytes512));
    run("mcopy", &["-n", "-i", &drive, &format!("::{path}"), out.to_str().unwrap()]);
    std::fs::read(out).unwrap()
}

fn root_hash(manifest: &Path) -> String {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    json["usr"]["root_hash"].as_str().unwrap().to_string()
}

#[test]
fn each_slots_initrd_documents_name_the_image_build_and_its_epoch() {
    let inputs = inputs("uki-cli-slot-documents");
    stdout_of(image_build(&inputs, &Changed { extra: &["--epoch", "99"], ..AS_BUILT }));
    let json = |name: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(inputs.dir.join(name)).unwrap()).unwrap() };
    for document in ["disk.img.spdx.json", "disk.usr-a.initrd.spdx.json", "disk.usr-b.initrd.spdx.json"] {
        assert_eq!(json(document)["creationInfo"]["created"], "1970-01-01T00:01:39Z", "{document}: --epoch 99");
    }
    for document in ["disk.img.intoto.json", "disk.usr-a.initrd.intoto.json", "disk.usr-b.initrd.intoto.json"] {
        let definition = json(document)["predicate"]["buildDefinition"].clone();
        assert_eq!(definition["buildType"], "https://keel.invalid/build/image/v1", "{document}");
        let command = definition["externalParameters"]["command"].as_array().unwrap().clone();
        assert_eq!(command[..3], ["keel", "image", "build"], "{document}");
        assert_eq!(command[command.len() - 2..], ["--epoch", "99"], "{document}");
        // The epoch is an argument: no SOURCE_DATE_EPOCH was read, whatever the environment holds.
        assert_eq!(definition["externalParameters"]["environment"], serde_json::json!({}), "{document}");
    }
}

#[test]
fn a_malformed_or_too_late_epoch_is_refused_by_name() {
    let dir = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "uki-cli-epochs");
    std::fs::create_dir_all(dir.join("usr")).unwrap();
    let (usr, image) = (dir.join("usr"), dir.join("disk.img"));
    let build = [&["image", "build", "--usr", usr.to_str().unwrap(), "--output", image.to_str().unwrap()][..], &SIZES].concat();
    for malformed in ["-5", "1e9", "253402300800"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel")).args(&build).env("SOURCE_DATE_EPOCH", malformed).output().unwrap();
        let error = failure_of(output);
        assert!(error.contains(&format!("SOURCE_DATE_EPOCH=\"{malformed}\"")), "{error}");
        let error = failure_of(keel(&[&build[..], &[&format!("--epoch={malformed}")]].concat()));
        assert!(error.contains("--epoch"), "{error}");
    }
    assert!(!image.exists(), "nothing is built with an epoch the documents cannot hold");
}

#[test]
fn each_slots_signed_uki_is_on_the_esp_with_its_own_initrd_and_usr() {
    let inputs = inputs("uki-cli-slots");
    let dir = &inputs.dir;
    stdout_of(image_build(&inputs, &AS_BUILT));
    let image = dir.join("disk.img");
    for (slot, esp_path) in [("usr-a", "EFI/keel/usr-a.efi"), ("usr-b", "EFI/keel/usr-b.efi")] {
        let uki = dir.join(format!("disk.{slot}.efi"));
        let bytes = std::fs::read(&uki).unwrap();
        assert_eq!(esp_file(&image, esp_path), bytes, "{esp_path} is not {}", uki.display());
        run("sbverify", &["--cert", dir.join("db.crt").to_str().unwrap(), uki.to_str().unwrap()]);
        let inspected = stdout_of(keel(&["uki", "inspect", uki.to_str().unwrap()]));
        let partition = slot.to_uppercase();
        assert!(inspected.contains(&format!(".cmdline: console=ttyS0 mount.usr=PARTLABEL={partition}\n")), "{inspected}");
        assert!(inspected.contains(&format!(".osrel: VERSION_ID={}\n", &partition[4..])), "the slot's own os-release: {inspected}");
        let initrd_digest = keel_sbom::sha256_hex(&std::fs::read(dir.join(format!("disk.{slot}.initrd"))).unwrap());
        assert!(inspected.lines().any(|line| line.starts_with(".initrd ") && line.ends_with(&initrd_digest)), "{inspected}");
        assert!(inspected.contains("signature: "), "{inspected}");
    }
    assert_eq!(esp_file(&image, "EFI/BOOT/BOOTX64.EFI"), std::fs::read(dir.join("disk.usr-a.efi")).unwrap(), "the removable path is slot A's");
    assert_ne!(root_hash(&dir.join("disk.json")), root_hash(&dir.join("disk.usr-b.json")));

    // USR-A's bytes, and so its root hash, are those of an image with neither USR-B nor UKIs.
    let plain = dir.join("plain.img");
    let usr = dir.join("usr");
    let plain_args = ["image", "build", "--usr", usr.to_str().unwrap(), "--output", plain.to_str().unwrap(), "--esp-mib", ESP_MIB];
    stdout_of(keel(&[&plain_args[..], &SIZES].concat()));
    assert_eq!(root_hash(&dir.join("plain.json")), root_hash(&dir.join("disk.json")));
}

#[test]
fn what_would_misdirect_a_slot_or_do_nothing_is_refused_before_anything_is_written() {
    let inputs = inputs("uki-cli-refused");
    let dir = &inputs.dir;
    for (changed, expected) in [
        (Changed { cmdline: "console=ttyS0 --", ..AS_BUILT }, "would not leave /usr to keel"),
        (Changed { cmdline: "verity.usr=PARTLABEL=USR-A", ..AS_BUILT }, "would not leave /usr to keel"),
        (
            Changed { modules: Some("/lib/modules/not-this-kernel"), ..AS_BUILT },
            "--uki-kernel is Linux 6.1.0-test but --uki-kernel-modules is for \"not-this-kernel\"",
        ),
        (Changed { cmdline: "console=ttyS0 x=\"", ..AS_BUILT }, "would not leave /usr to keel"),
        // An ESP too small for the UKIs says which option to change.
        (Changed { esp_mib: "2", ..AS_BUILT }, "give a larger --esp-mib"),
    ] {
        let error = failure_of(image_build(&inputs, &changed));
        assert!(error.contains(expected), "{expected}: {error}");
        let left: Vec<_> =
            std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name()).filter(|n| n.to_string_lossy().starts_with("disk")).collect();
        assert!(left.is_empty(), "refused with {expected:?} but left {left:?}");
    }
    let usr = dir.join("usr");
    let image = dir.join("disk.img");
    let plain = ["image", "build", "--usr", usr.to_str().unwrap(), "--output", image.to_str().unwrap()];
    let error = failure_of(keel(&[&plain[..], &["--compression", "xz"]].concat()));
    assert!(error.contains("--compression is for the UKIs' initrds: it needs --uki-kernel"), "{error}");
    assert!(!image.exists());
}
