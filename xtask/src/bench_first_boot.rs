//! `cargo xtask bench first-boot [--rounds N]`: what an Ignition config costs a first boot of
//! the default layout (1 GiB USR-A on a 4 GiB virtio disk). Each round first-boots fresh
//! copies of the image: with no config, and with 1000 files in 20 directories and 10 users with
//! SSH keys (the `bench ignition` config) as the OEM partition's config.ign and through QEMU's
//! fw_cfg, alternating; the figures are medians of "Run /init" to the real init and of the
//! Ignition stages. fw_cfg is measured apart because the kernel's driver reads it in 4 KiB
//! pieces, each from the item's start again: its cost grows with the square of the config's size.

use anyhow::{bail, Context};
use keel_test_support::ignition::many_files_config;
use keel_vm_tests as vm;
use std::path::Path;
use std::time::Duration;

const DEFAULT_ROUNDS: usize = 3;
const DISK_BYTES: u64 = 4 << 30;
const STAGES: [&str; 3] = ["ignition-fetch", "ignition-disks", "ignition-files"];

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One variant's measurements: "Run /init" to the real init, and each Ignition stage, in ms.
#[derive(Default)]
struct Samples {
    initrd: Vec<f64>,
    stages: [Vec<f64>; 3],
}

fn first_boot(fixture: &vm::Fixture, firmware_config: Option<&Path>, round: usize) -> anyhow::Result<vm::Console> {
    let disk = vm::disk_copy(fixture, &format!("bench-first-boot-{round}"))?;
    vm::resize_disk(&disk, DISK_BYTES)?;
    let machine = vm::Machine {
        kernel: &vm::artifacts()?.kernel,
        disks: vec![vm::Disk::of_fixture(vm::Bus::Virtio, &disk, fixture)],
        plugged_in_later: None,
        firmware_config,
    };
    let console = vm::boot_machine(&machine, &fixture.initrd, "", Duration::from_secs(600), "unsafe", |_, _| false);
    let _ = std::fs::remove_file(&disk);
    let console = console?;
    if console.real_init().last() != Some(&"done") {
        bail!("round {round}: the first boot did not reach the real root:\n{}", console.text);
    }
    Ok(console)
}

pub fn first_boot_cost(args: &[String]) -> anyhow::Result<()> {
    let rounds = match args {
        [] => DEFAULT_ROUNDS,
        [flag, count] if flag == "--rounds" => count.parse().context("--rounds needs a number")?,
        _ => bail!("usage: cargo xtask bench first-boot [--rounds N]"),
    };
    eprintln!("xtask: building the default layout's images and their initrds ...");
    let plain = vm::build_fixture_sized("bench-first-boot", Default::default(), vm::FIXTURE_SECTOR_SIZE, Default::default(), |_| {})?;
    let config = plain.dir.join("bench-first-boot.ign");
    std::fs::write(&config, many_files_config(1000, 20, 10)).with_context(|| format!("cannot write {}", config.display()))?;
    let oem_tree = plain.dir.join("bench-first-boot-oem");
    std::fs::create_dir_all(&oem_tree)?;
    std::fs::copy(&config, oem_tree.join("config.ign"))?;
    let with_oem = vm::build_vendor_fixture("bench-first-boot-oem", Default::default(), &vm::Vendor { oem: Some(&oem_tree), ignition_base: None })?;
    let variants: [(&str, &vm::Fixture, Option<&Path>); 3] = [
        ("none", &plain, None),
        ("1000 files, 10 users (OEM config.ign)", &with_oem, None),
        ("1000 files, 10 users (fw_cfg)", &plain, Some(config.as_path())),
    ];
    let mut samples: Vec<Samples> = variants.iter().map(|_| Samples::default()).collect();
    for round in 1..=rounds {
        for ((_, fixture, firmware_config), samples) in variants.iter().zip(&mut samples) {
            let console = first_boot(fixture, *firmware_config, round)?;
            samples.initrd.push(console.initrd_seconds().with_context(|| format!("no initrd time in:\n{}", console.text))? * 1000.0);
            for (index, stage) in STAGES.iter().enumerate() {
                samples.stages[index].push(vm::stage_millis(&console, stage).with_context(|| format!("no {stage} in:\n{}", console.text))?);
            }
        }
        eprintln!("xtask: round {round} of {rounds} done");
    }
    let config_bytes = std::fs::metadata(&config)?.len();
    let initrd_size = std::fs::metadata(&plain.initrd)?.len();
    println!(
        "first boot, default layout (1 GiB USR-A, 4 GiB virtio disk), medians of {rounds} alternating rounds; config {config_bytes} bytes; initrd {initrd_size} bytes:"
    );
    println!("{:<40} {:>16} {:>16} {:>16} {:>16}", "config", "Run /init->real", STAGES[0], STAGES[1], STAGES[2]);
    for ((name, _, _), samples) in variants.iter().zip(&samples) {
        let stages = samples.stages.iter().map(|values| format!("{:>13.0} ms", median(values))).collect::<Vec<_>>().join(" ");
        println!("{name:<40} {:>13.0} ms {stages}", median(&samples.initrd));
    }
    let none = median(&samples[0].initrd);
    for ((name, _, _), samples) in variants.iter().zip(&samples).skip(1) {
        println!("added by {name}: {:.0} ms", median(&samples.initrd) - none);
    }
    Ok(())
}
