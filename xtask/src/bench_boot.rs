//! `cargo xtask bench boot [--rounds N] [--initrd NAME=PATH]...`: the later boot of the
//! default layout (1 GiB USR-A on a 4 GiB virtio disk) with initrds that differ only in
//! their storage drivers (`--drivers default`, and `virtio_pci,virtio_blk`: what
//! `--drivers host` gives for this guest, and what every initrd loaded before drivers were
//! chosen by modalias; not `host` itself, which describes the bench machine's disks, not
//! the guest's), plus any initrd
//! given (one built by an older keel for the same image, say: the image is reproducible,
//! and its manifest is written to `target/keel-vm/bench-boot.json` for that). The boots
//! alternate, so a machine that slows down mid-run slows every initrd alike; the figures
//! are medians.

use anyhow::{bail, Context};
use keel_vm_tests as vm;
use std::path::PathBuf;
use std::time::Duration;

const DEFAULT_ROUNDS: usize = 5;
const DISK_BYTES: u64 = 4 << 30;

struct Candidate {
    name: String,
    initrd: PathBuf,
    initrd_seconds: Vec<f64>,
    modules_millis: Vec<f64>,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn boot(args: &[String]) -> anyhow::Result<()> {
    let mut rounds = DEFAULT_ROUNDS;
    let mut extra = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--rounds" => rounds = words.next().context("--rounds needs a number")?.parse().context("--rounds needs a number")?,
            "--initrd" => {
                let value = words.next().context("--initrd needs NAME=PATH")?;
                let (name, path) = value.split_once('=').context("--initrd needs NAME=PATH")?;
                extra.push((name.to_string(), PathBuf::from(path)));
            }
            other => bail!("unknown argument {other:?}: cargo xtask bench boot [--rounds N] [--initrd NAME=PATH]..."),
        }
    }
    eprintln!("xtask: building the default layout's image and its initrds ...");
    let fixture = vm::build_fixture_sized("bench-boot", Default::default(), vm::FIXTURE_SECTOR_SIZE, Default::default(), |_| {})?;
    let manifest_path = vm::work_dir().join("bench-boot.json");
    std::fs::write(&manifest_path, fixture.manifest.to_json()).with_context(|| format!("cannot write {}", manifest_path.display()))?;
    eprintln!("xtask: the image's manifest is {}", manifest_path.display());
    let kernel = &vm::artifacts()?.kernel;
    let mut candidates = Vec::new();
    for (name, drivers) in [("default", "default"), ("virtio-only", "virtio_pci,virtio_blk")] {
        let initrd = fixture.dir.join(format!("initrd-{name}.img"));
        vm::build_initrd(&fixture.manifest, kernel, vm::DriverChoice::parse(drivers)?, &keel_initrd::DEFAULT_ROOT_FILESYSTEMS, &initrd)?;
        candidates.push(Candidate { name: name.into(), initrd, initrd_seconds: vec![], modules_millis: vec![] });
    }
    for (name, initrd) in extra {
        candidates.push(Candidate { name, initrd, initrd_seconds: vec![], modules_millis: vec![] });
    }

    vm::resize_disk(&fixture.image, DISK_BYTES)?;
    let first = vm::boot(&[&fixture.image], &fixture.initrd, "", Duration::from_secs(300))?;
    if first.real_init().last() != Some(&"done") {
        bail!("the first boot did not reach the real root:\n{}", first.text);
    }
    for round in 1..=rounds {
        for candidate in &mut candidates {
            let console = vm::boot(&[&fixture.image], &candidate.initrd, "", Duration::from_secs(300))?;
            let (Some(seconds), Some(modules)) = (console.initrd_seconds(), vm::stage_millis(&console, "modules")) else {
                bail!("{}: no timings in the console of round {round}:\n{}", candidate.name, console.text);
            };
            candidate.initrd_seconds.push(seconds);
            candidate.modules_millis.push(modules);
        }
        eprintln!("xtask: round {round} of {rounds} done");
    }
    println!("later boot, default layout (1 GiB USR-A, 4 GiB virtio disk), medians of {rounds} alternating rounds:");
    println!("{:<14} {:>12} {:>16} {:>12}", "initrd", "size (xz)", "Run /init->real", "modules");
    for candidate in &candidates {
        let size = std::fs::metadata(&candidate.initrd).with_context(|| format!("cannot stat {}", candidate.initrd.display()))?.len();
        println!(
            "{:<14} {:>12} {:>14.0} ms {:>9.1} ms",
            candidate.name,
            size,
            median(&candidate.initrd_seconds) * 1000.0,
            median(&candidate.modules_millis)
        );
    }
    Ok(())
}
