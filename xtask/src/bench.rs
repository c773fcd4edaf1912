//! `cargo xtask bench verity`: keel against veritysetup on the same 1 GiB file in page
//! cache, alternating runs, with the machine's own SHA-256 rate as the ceiling.

use anyhow::{bail, ensure, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DATA_BYTES: u64 = 1 << 30;
const RUNS: usize = 5;
const SALT: &str = "6b65656c2062656e63686d61726b2073616c742c20333220627974657320206b";
const UUID: &str = "6b65656c-2062-4e63-8d61-726b2073616c";

/// Wall time and peak resident memory of one command, measured by GNU time: a child's
/// ru_maxrss keeps its parent's high-water mark across exec, so asking wait4 from here
/// would count this process's memory too; time's own footprint is about 1 MiB.
fn measure(program: &Path, args: &[String], scratch: &Path) -> anyhow::Result<(Duration, u64)> {
    let report = scratch.join("time.out");
    let started = Instant::now();
    let status = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&report)
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .context("cannot run /usr/bin/time (Debian package time)")?;
    let elapsed = started.elapsed();
    ensure!(status.success(), "{} failed", program.display());
    let kib: u64 = std::fs::read_to_string(&report)?.trim().lines().last().context("no time report")?.parse().context("odd time report")?;
    Ok((elapsed, kib * 1024))
}

/// openssl's SHA-256 rate on 4 KiB blocks, in bytes per second, for `processes` at once.
fn openssl_sha256(processes: usize) -> anyhow::Result<f64> {
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new("openssl")
                .args(["speed", "-elapsed", "-seconds", "3", "-evp", "sha256", "-bytes", "4096"])
                .stderr(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()
        .context("cannot run openssl")?;
    let mut total = 0.0;
    for child in children {
        let output = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let rate = text.lines().rev().find(|l| l.starts_with("sha256")).and_then(|l| l.split_whitespace().last()).context("no openssl result")?;
        total += rate.trim_end_matches('k').parse::<f64>().context("odd openssl output")? * 1000.0;
    }
    Ok(total)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn data_file(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("data-1GiB");
    if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) != DATA_BYTES {
        // Incompressible, deterministic content.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut chunk = vec![0u8; 1 << 20];
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for _ in 0..DATA_BYTES >> 20 {
            for byte in chunk.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = (state >> 24) as u8;
            }
            std::io::Write::write_all(&mut file, &chunk)?;
        }
    }
    // Into the page cache: the benchmark is about hashing, not the disk.
    std::io::copy(&mut std::fs::File::open(&path)?, &mut std::io::sink())?;
    Ok(path)
}

pub fn verity(workspace: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo).current_dir(workspace).args(["build", "--quiet", "--release", "-p", "keel"]).status()?;
    ensure!(status.success(), "building keel failed");
    let keel = workspace.join("target/release/keel");
    let dir = workspace.join("target/keel-bench");
    let data = data_file(&dir)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("bench: measuring SHA-256 with openssl (1 process, then {cores})...");
    let single = openssl_sha256(1)?;
    let all_cores = openssl_sha256(cores)?;

    let (ours, theirs) = (dir.join("keel.hash"), dir.join("veritysetup.hash"));
    let args = |hash: &Path| vec![data.display().to_string(), hash.display().to_string(), format!("--salt={SALT}"), format!("--uuid={UUID}")];
    let mut keel_times = Vec::new();
    let mut reference_times = Vec::new();
    let (mut keel_rss, mut reference_rss) = (0, 0);
    for run in 1..=RUNS {
        let _ = std::fs::remove_file(&theirs);
        let (time, rss) = measure(Path::new("/usr/sbin/veritysetup"), &[&["format".to_string()][..], &args(&theirs)].concat(), &dir)?;
        reference_times.push(time.as_secs_f64());
        reference_rss = reference_rss.max(rss);
        let _ = std::fs::remove_file(&ours);
        let (time, rss) = measure(&keel, &[&["verity".to_string(), "format".to_string()][..], &args(&ours)].concat(), &dir)?;
        keel_times.push(time.as_secs_f64());
        keel_rss = keel_rss.max(rss);
        if std::fs::read(&ours)? != std::fs::read(&theirs)? {
            bail!("run {run}: keel's hash area differs from veritysetup's");
        }
        eprintln!("bench: run {run}: veritysetup {:.3} s, keel {:.3} s", reference_times[run - 1], keel_times[run - 1]);
    }
    let (keel_s, reference_s) = (median(keel_times), median(reference_times));
    let gbps = |seconds: f64| DATA_BYTES as f64 / seconds / 1e9;
    println!("verity format of 1 GiB in page cache, median of {RUNS} alternating runs (hash areas identical)");
    println!("| | median | GB/s | peak RSS |");
    println!("|---|---|---|---|");
    println!("| veritysetup format | {reference_s:.3} s | {:.2} | {:.1} MiB |", gbps(reference_s), reference_rss as f64 / 1048576.0);
    println!("| keel verity format | {keel_s:.3} s | {:.2} | {:.1} MiB |", gbps(keel_s), keel_rss as f64 / 1048576.0);
    println!("keel / veritysetup throughput: {:.2}x", reference_s / keel_s);
    println!(
        "SHA-256 (openssl, 4 KiB blocks): {:.2} GB/s on one core; {cores} cores x that = {:.2} GB/s; measured with {cores} at once: {:.2} GB/s",
        single / 1e9,
        single * cores as f64 / 1e9,
        all_cores / 1e9
    );
    println!("keel vs the {cores}-core limit (one-core rate x cores): {:.0}%", 100.0 * gbps(keel_s) * 1e9 / (single * cores as f64));
    Ok(())
}
