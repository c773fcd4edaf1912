//! `cargo xtask fuzz [TARGET] [--runs N] [--seconds S] [--write-seeds]`: builds the fuzz
//! targets of crates/keel-fuzz with libFuzzer's coverage instrumentation, on the stable
//! toolchain, and runs each one; `cargo xtask test` ends with a short run of each.
//!
//! New corpus entries go to a scratch corpus under target/fuzz, so runs never change the
//! checked-in seeds; a crash fails the task and names the input that caused it.

use anyhow::{bail, ensure, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The fuzz targets (crates/keel-fuzz's binaries), and the longest input each is given.
const TARGETS: &[(&str, usize)] = &[
    // Its parameters and a disk image of up to 64 KiB.
    ("gpt", 66 * 1024),
    ("verity_superblock", 1024),
    ("cmdline", 4096),
    // All that probe_filesystem reads (128 KiB), and some past it.
    ("probe", 132 * 1024),
    // The seeds' volumes (up to 256 KiB): a lookup reads only what the volume points at.
    ("fat", 256 * 1024),
    ("manifest", 4096),
];

/// What cargo-fuzz passes, less its sanitizer (nightly only): libFuzzer's coverage
/// counters and comparison tracing, `cfg(fuzzing)`, and a debug build's checks. All are
/// stable rustc options.
const RUSTFLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
                         -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
                         -Cdebug-assertions -Coverflow-checks";

const DEFAULT_RUNS: u64 = 10_000_000;
const SMOKE_SECONDS: u64 = 5;
/// Far more than any input needs; a unit that takes longer is hung, and that is a finding.
const TIMEOUT_SECONDS: u64 = 30;

/// When a run stops: after `runs` executions or `seconds`, whichever comes first.
#[derive(Clone, Copy, Debug, Default)]
struct Limits {
    runs: Option<u64>,
    seconds: Option<u64>,
}

/// `cargo xtask fuzz`'s arguments.
pub fn run(workspace: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut only: Option<&str> = None;
    let mut limits = Limits::default();
    let mut write_seeds = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut number = |flag: &str| -> anyhow::Result<u64> {
            let value = args.next().with_context(|| format!("{flag} needs a number"))?;
            value.parse().with_context(|| format!("{flag} {value}: not a whole number"))
        };
        match arg.as_str() {
            "--runs" => limits.runs = Some(number("--runs")?),
            "--seconds" => limits.seconds = Some(number("--seconds")?),
            "--write-seeds" => write_seeds = true,
            target if only.is_none() && TARGETS.iter().any(|(name, _)| *name == target) => only = Some(target),
            other => bail!(
                "unknown argument {other:?}: cargo xtask fuzz [TARGET] [--runs N] [--seconds S] [--write-seeds], TARGET one of {}",
                TARGETS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(" ")
            ),
        }
    }
    if limits.runs.is_none() && limits.seconds.is_none() {
        limits.runs = Some(DEFAULT_RUNS);
    }
    let targets: Vec<(&str, usize)> = TARGETS.iter().copied().filter(|(name, _)| only.is_none_or(|only| only == *name)).collect();
    let binaries = build(workspace)?;
    if write_seeds {
        return targets.iter().try_for_each(|(name, _)| write_target_seeds(workspace, &binaries, name));
    }
    run_all(workspace, &binaries, &targets, limits, &workspace.join("target/fuzz/corpus"))
}

/// The short run `cargo xtask test` ends with: a few seconds of each target, from its
/// checked-in seeds alone.
pub fn smoke(workspace: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let binaries = build(workspace)?;
    let scratch = workspace.join("target/fuzz/smoke-corpus");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).with_context(|| format!("cannot empty {}", scratch.display()))?;
    }
    let result = run_all(workspace, &binaries, TARGETS, Limits { runs: None, seconds: Some(SMOKE_SECONDS) }, &scratch);
    eprintln!("xtask: the fuzz smoke run took {:.0} s", started.elapsed().as_secs_f64());
    result
}

fn host_triple() -> anyhow::Result<String> {
    let output = Command::new("rustc").arg("-vV").output().context("cannot run rustc")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let host = text.lines().find_map(|line| line.strip_prefix("host: ")).context("rustc -vV names no host")?;
    Ok(host.to_string())
}

/// Builds every target into target/fuzz and returns the directory holding them.
fn build(workspace: &Path) -> anyhow::Result<PathBuf> {
    let host = host_triple()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    // An explicit --target keeps RUSTFLAGS off build scripts and proc macros: they run on
    // the host, where there is no libFuzzer to resolve the instrumentation's calls.
    command.current_dir(workspace).args(["build", "--release", "--manifest-path", "crates/keel-fuzz/Cargo.toml", "--target", &host]);
    command.args(["--target-dir", "target/fuzz"]).env("RUSTFLAGS", RUSTFLAGS);
    for (name, _) in TARGETS {
        command.args(["--bin", name]);
    }
    crate::status(&mut command).context("building the fuzz targets")?;
    Ok(workspace.join("target/fuzz").join(host).join("release"))
}

fn seed_dir(workspace: &Path, target: &str) -> PathBuf {
    workspace.join("crates/keel-fuzz/corpus").join(target)
}

/// Replaces a target's checked-in seeds with what the target's own generator makes.
fn write_target_seeds(workspace: &Path, binaries: &Path, target: &str) -> anyhow::Result<()> {
    let dir = seed_dir(workspace, target);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    crate::status(Command::new(binaries.join(target)).env("KEEL_FUZZ_WRITE_SEEDS", &dir))?;
    eprintln!("xtask: wrote the seeds of {target} to {}", dir.display());
    Ok(())
}

/// What one libFuzzer run reported.
struct Report {
    executions: u64,
    execs_per_second: u64,
    seconds: f64,
    /// libFuzzer's own count of the corpus it ended with, and their total size (`1614Kb`).
    corpus_inputs: u64,
    corpus_size: String,
    crash: Option<String>,
}

fn run_all(workspace: &Path, binaries: &Path, targets: &[(&str, usize)], limits: Limits, scratch: &Path) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for (name, max_len) in targets {
        match run_target(workspace, binaries, name, *max_len, limits, &scratch.join(name)) {
            Ok(report) => {
                let line = format!(
                    "fuzz {name}: {} executions, {} exec/s, {:.0} s, corpus {} inputs ({})",
                    report.executions, report.execs_per_second, report.seconds, report.corpus_inputs, report.corpus_size
                );
                match report.crash {
                    None => println!("{line}, no crash"),
                    Some(crash) => {
                        println!("{line}, CRASH: {crash}");
                        failed.push(*name);
                    }
                }
            }
            Err(error) => {
                println!("fuzz {name}: FAILED: {error:#}");
                failed.push(*name);
            }
        }
    }
    println!("fuzz: {} passed, {} failed", targets.len() - failed.len(), failed.len());
    ensure!(failed.is_empty(), "fuzz targets failed: {}", failed.join(", "));
    Ok(())
}

fn run_target(workspace: &Path, binaries: &Path, target: &str, max_len: usize, limits: Limits, scratch: &Path) -> anyhow::Result<Report> {
    let fuzz_dir = workspace.join("target/fuzz");
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let logs = fuzz_dir.join("logs");
    for dir in [scratch, &artifacts, &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut command = Command::new(binaries.join(target));
    // libFuzzer adds what it finds to the first directory and only reads the others.
    command.arg(scratch).arg(seed_dir(workspace, target));
    // Inputs that once broke an invariant: replayed by every run, and kept apart from the
    // generated seeds so that --write-seeds cannot drop them.
    let regressions = workspace.join("crates/keel-fuzz/regressions").join(target);
    if regressions.is_dir() {
        command.arg(regressions);
    }
    command.arg(format!("-max_len={max_len}")).arg(format!("-timeout={TIMEOUT_SECONDS}")).arg("-print_final_stats=1");
    // libFuzzer glues the prefix and the file name together: the slash makes it a directory.
    command.arg(format!("-artifact_prefix={}/", artifacts.display()));
    if let Some(runs) = limits.runs {
        command.arg(format!("-runs={runs}"));
    }
    if let Some(seconds) = limits.seconds {
        command.arg(format!("-max_total_time={seconds}"));
    }
    // libfuzzer-sys turns RUST_BACKTRACE on for panics, and with it anyhow captures a
    // backtrace for every error keel returns: most of a target's time, on hostile input.
    command.env("RUST_LIB_BACKTRACE", "0");
    command.stdout(log.try_clone()?).stderr(log);
    eprintln!("xtask: fuzzing {target} (log: {})", log_path.display());
    let started = Instant::now();
    let status = command.status().with_context(|| format!("cannot run {}", binaries.join(target).display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log_path).with_context(|| format!("cannot read {}", log_path.display()))?;
    let stat = |name: &str| text.lines().find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok());
    let crash = text.lines().find_map(|line| line.split_once("Test unit written to ").map(|(_, path)| path.trim().to_string()));
    if !status.success() && crash.is_none() {
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        bail!("{status} with no crash input; the end of {}:\n{}", log_path.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    // The last status line: `#1000 DONE cov: 1035 ft: 2164 corp: 97/1614Kb ...`.
    let corpus = text.lines().rev().find_map(|line| line.split_once(" corp: ")?.1.split_whitespace().next()?.split_once('/'));
    if let Some(crash) = &crash {
        let panic: Vec<&str> = text.lines().skip_while(|line| !line.contains("panicked at")).take(3).collect();
        eprintln!("xtask: {target} crashed on {crash}:\n{}", panic.join("\n"));
    }
    Ok(Report {
        executions: stat("stat::number_of_executed_units:").unwrap_or(0),
        execs_per_second: stat("stat::average_exec_per_sec:").unwrap_or(0),
        seconds,
        corpus_inputs: corpus.and_then(|(inputs, _)| inputs.parse().ok()).unwrap_or(0),
        corpus_size: corpus.map_or("?", |(_, size)| size).to_string(),
        crash,
    })
}
