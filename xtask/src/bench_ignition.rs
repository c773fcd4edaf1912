//! `cargo xtask bench ignition`: one config with 1000 files in 20 directories and 10 users,
//! applied by `keel ignition apply` and by Ignition 2.14's files stage to fresh copies of one
//! base root, alternating, on tmpfs and on the workspace's disk; the trees are compared after
//! every pair. Then the engine's size as keel-init would carry it.

use anyhow::{bail, ensure, Context};
use keel_test_support::ignition::{make_base_root, make_stubs, many_files_config, run_files_stage, snapshot, today_and_yesterday, tree_differences};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const FILES: usize = 1000;
const DIRECTORIES: usize = 20;
const USERS: usize = 10;
const ROUNDS: usize = 5;
const MUSL: &str = "x86_64-unknown-linux-musl";

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn fresh_root(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    let root = dir.join("root");
    std::fs::create_dir_all(&root)?;
    make_base_root(&root);
    // The base root's own writes are not the apply's to flush.
    Command::new("sync").status()?;
    Ok(root)
}

struct Times {
    keel: Vec<Duration>,
    ignition_files: Vec<Duration>,
    /// The files stage, then `sync -f` on its root: the durability keel's apply ends with (one
    /// syncfs), which Ignition leaves to the unmount after it.
    ignition_files_synced: Vec<Duration>,
    ignition_both: Vec<Duration>,
}

/// Alternating rounds in `dir`: Ignition's two stages (each process timed from start to exit),
/// then keel's one command; the two trees compared after each round.
fn measure(name: &str, dir: &Path, keel: &Path, config: &Path, stubs: &Path) -> anyhow::Result<Times> {
    let mut times = Times { keel: Vec::new(), ignition_files: Vec::new(), ignition_files_synced: Vec::new(), ignition_both: Vec::new() };
    let today = today_and_yesterday();
    for round in 1..=ROUNDS {
        let ignition_dir = dir.join("ignition");
        fresh_root(&ignition_dir)?;
        let run = run_files_stage(config, &ignition_dir, stubs);
        ensure!(run.succeeded, "Ignition failed:\n{}", run.log);
        let files_stage = *run.took.last().context("no stage ran")?;
        let started = Instant::now();
        ensure!(Command::new("sync").arg("-f").arg(ignition_dir.join("root")).status()?.success(), "sync -f failed");
        times.ignition_files_synced.push(files_stage + started.elapsed());
        times.ignition_files.push(files_stage);
        times.ignition_both.push(run.took.iter().sum());

        let keel_root = fresh_root(&dir.join("keel"))?;
        let started = Instant::now();
        let output = Command::new(keel).args(["ignition", "apply", "--root"]).arg(&keel_root).arg(config).output()?;
        times.keel.push(started.elapsed());
        ensure!(output.status.success(), "keel failed: {}", String::from_utf8_lossy(&output.stderr));

        let differences = tree_differences("keel", &snapshot(&keel_root, &today), "Ignition", &snapshot(&ignition_dir.join("root"), &today));
        if !differences.is_empty() {
            bail!("{name} round {round}: the trees differ:\n{}", differences.join("\n"));
        }
        eprintln!(
            "bench ignition: {name} round {round}: Ignition fetch-offline + files {:.3} s (files {:.3} s, then synced {:.3} s), keel {:.3} s; trees identical",
            times.ignition_both[round - 1].as_secs_f64(),
            times.ignition_files[round - 1].as_secs_f64(),
            times.ignition_files_synced[round - 1].as_secs_f64(),
            times.keel[round - 1].as_secs_f64()
        );
    }
    Ok(times)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The engine built static as keel-init is built, and a static program that does nothing with
/// the same profile: their sizes in bytes. keel-init is the VM tests' own build (with
/// cargo-auditable's section), so the two never rebuild each other's target directory.
fn engine_sizes(workspace: &Path) -> anyhow::Result<(u64, u64, u64)> {
    let keel_init = keel_vm_tests::static_binaries()?.keel_init;
    let release = keel_vm_tests::static_build(&["-p", "keel-ignition", "--example", "apply_root"])?;
    let target_dir = workspace.join("target/static");
    let empty_source = target_dir.join("empty.rs");
    std::fs::write(&empty_source, "fn main() {}\n")?;
    let empty = target_dir.join("empty");
    let status = Command::new("rustc")
        .args([
            "--edition",
            "2021",
            "--target",
            MUSL,
            "-C",
            "opt-level=s",
            "-C",
            "lto",
            "-C",
            "codegen-units=1",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .arg(&empty_source)
        .arg("-o")
        .arg(&empty)
        .status()?;
    ensure!(status.success(), "building the empty static program failed");
    let size = |path: &Path| std::fs::metadata(path).map(|meta| meta.len()).with_context(|| format!("no {}", path.display()));
    Ok((size(&keel_init)?, size(&release.join("examples/apply_root"))?, size(&empty)?))
}

pub fn ignition(workspace: &Path) -> anyhow::Result<()> {
    let status = cargo().current_dir(workspace).args(["build", "--quiet", "--release", "-p", "keel"]).status()?;
    ensure!(status.success(), "building keel failed");
    let keel = workspace.join("target/release/keel");
    let scratch = workspace.join("target/keel-bench/ignition");
    std::fs::create_dir_all(&scratch)?;
    let config = scratch.join("bench.ign");
    std::fs::write(&config, many_files_config(FILES, DIRECTORIES, USERS))?;
    let stubs = scratch.join("stubs");
    make_stubs(&stubs);
    let tmpfs = PathBuf::from("/dev/shm/keel-bench-ignition");
    let places = [("tmpfs", tmpfs.clone()), ("disk", scratch.join("roots"))];
    println!("{FILES} files in {DIRECTORIES} directories and {USERS} users (with SSH keys), spec 3.3.0; median of {ROUNDS} alternating rounds");
    println!("keel's apply ends with one syncfs; \"synced\" adds `sync -f` after Ignition's files stage, for the same durability");
    println!(
        "| where | Ignition 2.14 files stage | files stage, synced | fetch-offline + files | keel ignition apply | files / keel | synced / keel |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, dir) in places {
        let times = measure(name, &dir, &keel, &config, &stubs)?;
        let seconds = |durations: Vec<Duration>| median(durations).as_secs_f64();
        let (keel_s, files_s, synced_s, both_s) =
            (seconds(times.keel), seconds(times.ignition_files), seconds(times.ignition_files_synced), seconds(times.ignition_both));
        println!(
            "| {name} | {files_s:.3} s | {synced_s:.3} s | {both_s:.3} s | {keel_s:.3} s | {:.1}x | {:.1}x |",
            files_s / keel_s,
            synced_s / keel_s
        );
    }
    let _ = std::fs::remove_dir_all(&tmpfs);
    let (keel_init, engine, empty) = engine_sizes(workspace)?;
    println!("static sizes: keel-init {keel_init} bytes; the engine alone (examples/apply_root) {engine} bytes, an empty program {empty} bytes:");
    println!("linking the engine into keel-init adds at most {} bytes, to about {} bytes", engine - empty, keel_init + engine - empty);
    Ok(())
}
