//! `cargo xtask bench boot [--rounds N] [--initrd NAME=PATH]...`: the default layout (1 GiB
//! USR-A on a 4 GiB virtio disk) booted by keel's default initrd (first boot and later boot),
//! by keel's initrd with only the virtio drivers, by any initrd given (one built by an older
//! keel for the same image, say: the image is reproducible, and its manifest is written to
//! `target/keel-vm/bench-boot.json` for that), and by the reference initrds of `anchors.rs`:
//! a bare busybox one, dracut + systemd, and dracut + systemd opening the verity /usr as
//! Flatcar does. The boots go round-robin, one VM at a time, so a machine that slows down
//! mid-run slows every candidate alike; the table gives min/median/max of each.
//!
//! Every later boot starts from its own copy of one disk that keel's first boot formatted,
//! with ROOT's journal replayed on the host: the state a clean shutdown leaves, the same for
//! every candidate (the real init powers off without unmounting, which would otherwise hand
//! each candidate a journal to replay that the one before it left). Every first boot starts
//! from a fresh copy of the image, made 4 GiB long, with no Ignition config.

use crate::anchors;
use anyhow::{bail, ensure, Context};
use keel_initrd::Compression;
use keel_vm_tests as vm;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DEFAULT_ROUNDS: usize = 5;
const DISK_BYTES: u64 = 4 << 30;
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// The real init's first console line: where the wall time ends. Its kmsg line, where the
/// initrd phase ends, is written just before it, but `quiet` keeps kmsg off the console.
const REAL_INIT_STARTED: &str = "REAL-INIT: started";

const KEEL_FIRST: &str = "keel first boot";
const KEEL_LATER: &str = "keel later boot";
const BUSYBOX: &str = "busybox";
const DRACUT_VERITY: &str = "dracut-verity";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Boot {
    First,
    Later,
}

struct Candidate {
    name: String,
    initrd: PathBuf,
    cmdline: String,
    boot: Boot,
    opens_verity: bool,
    initrd_seconds: Vec<f64>,
    wall_seconds: Vec<f64>,
}

impl Candidate {
    fn new(name: &str, initrd: PathBuf, cmdline: String, boot: Boot, opens_verity: bool) -> Candidate {
        Candidate { name: name.into(), initrd, cmdline, boot, opens_verity, initrd_seconds: vec![], wall_seconds: vec![] }
    }
}

/// The least, the middle and the greatest of some measurements.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    /// None for no values. The median of an even count is the mean of the middle two.
    fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (min, max) = (*sorted.first()?, *sorted.last()?);
        let upper = sorted.len() / 2;
        let middle = |index: usize| sorted.get(index).copied();
        let median = if sorted.len() % 2 == 1 { middle(upper)? } else { (middle(upper - 1)? + middle(upper)?) / 2.0 };
        Some(Spread { min, median, max })
    }

    fn to_json(self) -> serde_json::Value {
        serde_json::json!({ "min": self.min, "median": self.median, "max": self.max })
    }
}

/// One line of the table.
struct Row {
    name: String,
    boot: Boot,
    initrd_bytes: u64,
    initrd_phase: Spread,
    wall: Spread,
}

fn render_table(rows: &[Row], rounds: usize) -> String {
    let mut out = format!(
        "default layout (1 GiB USR-A, 4 GiB virtio disk), {rounds} round-robin rounds; seconds as min / median / max\n\
         {:<26} {:<6} {:>12}  {:>26}  {:>26}\n",
        "initrd", "boot", "size (bytes)", "initrd phase (Run /init->)", "wall (QEMU start->)"
    );
    for row in rows {
        let spread = |s: Spread| format!("{:.2} / {:.2} / {:.2}", s.min, s.median, s.max);
        let boot = match row.boot {
            Boot::First => "first",
            Boot::Later => "later",
        };
        out.push_str(&format!("{:<26} {:<6} {:>12}  {:>26}  {:>26}\n", row.name, boot, row.initrd_bytes, spread(row.initrd_phase), spread(row.wall)));
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn met_by(self, value: f64) -> bool {
        match self {
            Goal::AtMost(limit) => value <= limit,
            Goal::AtLeast(limit) => value >= limit,
        }
    }

    fn describe(self) -> String {
        match self {
            Goal::AtMost(limit) => format!("<= {limit}x"),
            Goal::AtLeast(limit) => format!(">= {limit}x"),
        }
    }
}

/// One of issue 12's goals, as a ratio of two candidates' medians.
struct Ratio {
    what: &'static str,
    value: f64,
    goal: Goal,
    stretch: Option<Goal>,
}

/// Issue 12's ratios from the rows' medians.
fn ratios(rows: &[Row]) -> anyhow::Result<Vec<Ratio>> {
    let median = |name: &str, of: fn(&Row) -> Spread| -> anyhow::Result<f64> {
        Ok(of(rows.iter().find(|row| row.name == name).with_context(|| format!("no measurements of {name}"))?).median)
    };
    let phase = |row: &Row| row.initrd_phase;
    let wall = |row: &Row| row.wall;
    Ok(vec![
        Ratio {
            what: "keel later / busybox, initrd phase",
            value: median(KEEL_LATER, phase)? / median(BUSYBOX, phase)?,
            goal: Goal::AtMost(2.0),
            stretch: Some(Goal::AtMost(1.5)),
        },
        Ratio {
            what: "keel first / busybox, initrd phase",
            value: median(KEEL_FIRST, phase)? / median(BUSYBOX, phase)?,
            goal: Goal::AtMost(3.0),
            stretch: None,
        },
        Ratio {
            what: "keel later / busybox, wall time",
            value: median(KEEL_LATER, wall)? / median(BUSYBOX, wall)?,
            goal: Goal::AtMost(1.3),
            stretch: None,
        },
        Ratio {
            what: "dracut-verity / keel later, initrd phase",
            value: median(DRACUT_VERITY, phase)? / median(KEEL_LATER, phase)?,
            goal: Goal::AtLeast(5.0),
            stretch: None,
        },
    ])
}

fn verdict(goal: Goal, value: f64) -> &'static str {
    if goal.met_by(value) {
        "PASS"
    } else {
        "MISS"
    }
}

fn render_ratios(ratios: &[Ratio]) -> String {
    let mut out = String::from("ratios of medians:\n");
    for ratio in ratios {
        let stretch = ratio.stretch.map(|goal| format!("  (stretch {}: {})", goal.describe(), verdict(goal, ratio.value))).unwrap_or_default();
        out.push_str(&format!(
            "{:<42} {:>6.2}x  goal {:<7} {}{stretch}\n",
            ratio.what,
            ratio.value,
            ratio.goal.describe(),
            verdict(ratio.goal, ratio.value)
        ));
    }
    out
}

fn results_json(rows: &[Row], ratios: &[Ratio], rounds: usize) -> serde_json::Value {
    let rows: Vec<_> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "initrd": row.name,
                "boot": if row.boot == Boot::First { "first" } else { "later" },
                "initrd_bytes": row.initrd_bytes,
                "initrd_phase_seconds": row.initrd_phase.to_json(),
                "wall_seconds": row.wall.to_json(),
            })
        })
        .collect();
    let ratios: Vec<_> = ratios
        .iter()
        .map(|ratio| {
            serde_json::json!({
                "ratio": ratio.what,
                "value": ratio.value,
                "goal": ratio.goal.describe(),
                "met": ratio.goal.met_by(ratio.value),
                "stretch": ratio.stretch.map(Goal::describe),
                "stretch_met": ratio.stretch.map(|goal| goal.met_by(ratio.value)),
            })
        })
        .collect();
    serde_json::json!({ "layout": "default (1 GiB USR-A), 4 GiB virtio disk", "rounds": rounds, "candidates": rows, "ratios": ratios })
}

/// `keel initrd build` as a user runs it, defaults and all, with `extra` arguments.
fn keel_initrd(manifest: &Path, kernel: &vm::Kernel, output: &Path, extra: &[&str]) -> anyhow::Result<()> {
    let binaries = &vm::artifacts()?.binaries;
    let result = Command::new(&binaries.keel)
        .args(["initrd", "build", "--manifest"])
        .arg(manifest)
        .arg("--init")
        .arg(&binaries.keel_init)
        .arg("--kernel-modules")
        .arg(&kernel.modules_dir)
        .arg("--output")
        .arg(output)
        .args(extra)
        .output()
        .context("cannot run keel")?;
    ensure!(result.status.success(), "keel initrd build failed ({}): {}", result.status, String::from_utf8_lossy(&result.stderr));
    Ok(())
}

/// A sparse copy of `from` at `to`, which is then `bytes` long.
fn disk_from(from: &Path, to: &Path, bytes: u64) -> anyhow::Result<()> {
    let status = Command::new("cp").arg("--sparse=always").arg(from).arg(to).status().context("cannot run cp")?;
    ensure!(status.success(), "cp {} {} failed ({status})", from.display(), to.display());
    vm::resize_disk(to, bytes)
}

/// The disk every later boot starts from: keel's first boot on a copy of the image, then
/// ROOT's journal replayed (and ROOT checked) on the host.
fn formatted_disk(fixture: &vm::Fixture, initrd: &Path) -> anyhow::Result<PathBuf> {
    let disk = fixture.dir.join("bench-boot-formatted.img");
    disk_from(&fixture.image, &disk, DISK_BYTES)?;
    let first = vm::boot(&[&disk], initrd, "", BOOT_TIMEOUT)?;
    if first.real_init().last() != Some(&"done") {
        bail!("the first boot that formats the later boots' disk did not reach the real root:\n{}", first.text);
    }
    vm::check_root_ext4(&disk).context("ROOT after keel's first boot")?;
    Ok(disk)
}

/// Where the console of each candidate's latest boot is kept, to look at what each initrd did.
fn consoles_dir() -> PathBuf {
    vm::work_dir().join("bench-boot-consoles")
}

fn console_log(name: &str) -> PathBuf {
    let file: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    consoles_dir().join(format!("{file}.log"))
}

/// One boot of `candidate` from its own disk: its initrd phase and wall time, in seconds.
fn boot_once(candidate: &Candidate, fixture: &vm::Fixture, formatted: &Path) -> anyhow::Result<(f64, f64)> {
    let disk = fixture.dir.join("bench-boot-disk.img");
    match candidate.boot {
        Boot::First => disk_from(&fixture.image, &disk, DISK_BYTES)?,
        Boot::Later => disk_from(formatted, &disk, DISK_BYTES)?,
    }
    let console = vm::boot(&[&disk], &candidate.initrd, &candidate.cmdline, BOOT_TIMEOUT);
    let _ = std::fs::remove_file(&disk);
    let console = console?;
    let log = console_log(&candidate.name);
    std::fs::write(&log, &console.text).with_context(|| format!("cannot write {}", log.display()))?;
    let measured = anchors::check_boot(&console, candidate.opens_verity).and_then(|()| {
        let initrd = console.initrd_seconds().context("no \"Run /init\" or real-init kernel timestamps")?;
        let wall = console.seen_at(REAL_INIT_STARTED).with_context(|| format!("no {REAL_INIT_STARTED:?} line"))?;
        Ok((initrd, wall.as_secs_f64()))
    });
    let timed_out = if console.timed_out { " (timed out)" } else { "" };
    measured.with_context(|| format!("{}{timed_out}; its console:\n{}", candidate.name, console.text))
}

struct Options {
    rounds: usize,
    extra: Vec<(String, PathBuf)>,
}

fn parse_options(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options { rounds: DEFAULT_ROUNDS, extra: Vec::new() };
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--rounds" => options.rounds = words.next().context("--rounds needs a number")?.parse().context("--rounds needs a number")?,
            "--initrd" => {
                let value = words.next().context("--initrd needs NAME=PATH")?;
                let (name, path) = value.split_once('=').context("--initrd needs NAME=PATH")?;
                options.extra.push((name.to_string(), PathBuf::from(path)));
            }
            other => bail!("unknown argument {other:?}: cargo xtask bench boot [--rounds N] [--initrd NAME=PATH]..."),
        }
    }
    ensure!(options.rounds > 0, "--rounds must be at least 1");
    Ok(options)
}

pub fn boot(args: &[String]) -> anyhow::Result<()> {
    let options = parse_options(args)?;
    crate::install(anchors::PACKAGES)?;
    eprintln!("xtask: building the default layout's image, keel's initrds and the anchors ...");
    let fixture = vm::build_fixture_sized("bench-boot", Default::default(), vm::FIXTURE_SECTOR_SIZE, Default::default(), |_| {})?;
    let manifest_path = vm::work_dir().join("bench-boot.json");
    std::fs::write(&manifest_path, fixture.manifest.to_json()).with_context(|| format!("cannot write {}", manifest_path.display()))?;
    eprintln!("xtask: the image's manifest is {}", manifest_path.display());
    let kernel = &vm::artifacts()?.kernel;
    let keel_default = fixture.dir.join("initrd-keel-default.img");
    keel_initrd(&manifest_path, kernel, &keel_default, &[])?;
    let keel_virtio = fixture.dir.join("initrd-keel-virtio-only.img");
    keel_initrd(&manifest_path, kernel, &keel_virtio, &["--drivers", "virtio_pci,virtio_blk"])?;

    let mut candidates = vec![
        Candidate::new(KEEL_FIRST, keel_default.clone(), String::new(), Boot::First, true),
        Candidate::new(KEEL_LATER, keel_default.clone(), String::new(), Boot::Later, true),
        Candidate::new("keel later, virtio only", keel_virtio, String::new(), Boot::Later, true),
    ];
    // Under emulation the kernel's unpacking can cost more than the bytes it saves, so the
    // default compression is chosen by these boots, not by size.
    for compression in Compression::ALL.into_iter().filter(|compression| *compression != Compression::DEFAULT) {
        let initrd = fixture.dir.join(format!("initrd-keel-{}.img", compression.name()));
        keel_initrd(&manifest_path, kernel, &initrd, &["--compression", compression.name()])?;
        candidates.push(Candidate::new(&format!("keel later, {}", compression.name()), initrd, String::new(), Boot::Later, true));
    }
    for (name, initrd) in options.extra {
        candidates.push(Candidate::new(&name, initrd, String::new(), Boot::Later, true));
    }
    for anchor in anchors::build(&vm::work_dir().join("anchors"), kernel, &fixture.manifest)? {
        candidates.push(Candidate::new(anchor.name, anchor.initrd, anchor.cmdline, Boot::Later, anchor.opens_verity));
    }
    // The ratios find their rows by name: an --initrd may not take a built-in one.
    for (index, candidate) in candidates.iter().enumerate() {
        ensure!(
            !candidates[..index].iter().any(|earlier| earlier.name == candidate.name),
            "two candidates are named {:?}: give --initrd another name",
            candidate.name
        );
    }
    std::fs::create_dir_all(consoles_dir())?;
    eprintln!("xtask: keel's first boot, to format the disk every later boot starts from ...");
    let formatted = formatted_disk(&fixture, &keel_default)?;

    for round in 1..=options.rounds {
        for candidate in &mut candidates {
            let (initrd, wall) = boot_once(candidate, &fixture, &formatted).with_context(|| format!("round {round}"))?;
            candidate.initrd_seconds.push(initrd);
            candidate.wall_seconds.push(wall);
        }
        eprintln!("xtask: round {round} of {} done", options.rounds);
    }
    let _ = std::fs::remove_file(&formatted);

    let mut rows = Vec::new();
    for candidate in &candidates {
        let initrd_bytes = std::fs::metadata(&candidate.initrd).with_context(|| format!("cannot stat {}", candidate.initrd.display()))?.len();
        let (Some(initrd_phase), Some(wall)) = (Spread::of(&candidate.initrd_seconds), Spread::of(&candidate.wall_seconds)) else {
            bail!("{}: no measurements", candidate.name);
        };
        rows.push(Row { name: candidate.name.clone(), boot: candidate.boot, initrd_bytes, initrd_phase, wall });
    }
    let ratios = ratios(&rows)?;
    print!("{}\n{}", render_table(&rows, options.rounds), render_ratios(&ratios));
    let results = vm::work_dir().join("bench-boot-results.json");
    let json = serde_json::to_string_pretty(&results_json(&rows, &ratios, options.rounds))?;
    std::fs::write(&results, json + "\n").with_context(|| format!("cannot write {}", results.display()))?;
    eprintln!("xtask: the table as JSON: {}; each candidate's last console: {}", results.display(), consoles_dir().display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, boot: Boot, phase_median: f64, wall_median: f64) -> Row {
        Row {
            name: name.into(),
            boot,
            initrd_bytes: 1_234_567,
            initrd_phase: Spread { min: phase_median - 0.1, median: phase_median, max: phase_median + 0.1 },
            wall: Spread { min: wall_median - 0.1, median: wall_median, max: wall_median + 0.1 },
        }
    }

    fn rows() -> Vec<Row> {
        vec![
            row(KEEL_FIRST, Boot::First, 2.4, 5.0),
            row(KEEL_LATER, Boot::Later, 1.2, 4.0),
            row(BUSYBOX, Boot::Later, 1.0, 3.2),
            row(DRACUT_VERITY, Boot::Later, 12.0, 15.0),
        ]
    }

    #[test]
    fn a_spread_is_the_least_the_middle_and_the_greatest() {
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0]), Some(Spread { min: 1.0, median: 2.0, max: 3.0 }));
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]), Some(Spread { min: 1.0, median: 2.5, max: 4.0 }));
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn goals_hold_at_their_limits_and_not_beyond() {
        assert!(Goal::AtMost(2.0).met_by(2.0) && !Goal::AtMost(2.0).met_by(2.01));
        assert!(Goal::AtLeast(5.0).met_by(5.0) && !Goal::AtLeast(5.0).met_by(4.99));
    }

    #[test]
    fn the_ratios_are_of_the_right_medians_each_way_round() {
        let ratios = ratios(&rows()).unwrap();
        let values: Vec<(&str, f64)> = ratios.iter().map(|ratio| (ratio.what, (ratio.value * 1000.0).round() / 1000.0)).collect();
        assert_eq!(
            values,
            [
                ("keel later / busybox, initrd phase", 1.2),
                ("keel first / busybox, initrd phase", 2.4),
                ("keel later / busybox, wall time", 1.25),
                ("dracut-verity / keel later, initrd phase", 10.0),
            ]
        );
    }

    #[test]
    fn a_missing_anchor_is_an_error_not_a_ratio() {
        let without_busybox: Vec<Row> = rows().into_iter().filter(|row| row.name != BUSYBOX).collect();
        assert!(ratios(&without_busybox).is_err());
    }

    #[test]
    fn the_ratio_lines_say_pass_miss_and_the_stretch() {
        let text = render_ratios(&ratios(&rows()).unwrap());
        let line = |what: &str| text.lines().find(|line| line.starts_with(what)).unwrap().to_string();
        assert!(line("keel later / busybox, initrd phase").ends_with("goal <= 2x   PASS  (stretch <= 1.5x: PASS)"), "{text}");
        let mut slow = rows();
        slow[1].initrd_phase.median = 1.8;
        let text = render_ratios(&ratios(&slow).unwrap());
        assert!(text.contains("1.80x  goal <= 2x   PASS  (stretch <= 1.5x: MISS)"), "{text}");
        assert!(text.contains("6.67x  goal >= 5x   PASS"), "{text}");
        slow[2].wall.median = 2.0;
        assert!(render_ratios(&ratios(&slow).unwrap()).contains("2.00x  goal <= 1.3x MISS"));
    }

    #[test]
    fn the_table_has_a_line_per_candidate_with_size_and_both_spreads() {
        let text = render_table(&rows(), 5);
        assert_eq!(text.lines().count(), 2 + rows().len());
        let later = text.lines().find(|line| line.starts_with(KEEL_LATER)).unwrap();
        assert!(later.contains(" later ") && later.contains("1234567"), "{later}");
        assert!(later.contains("1.10 / 1.20 / 1.30") && later.contains("3.90 / 4.00 / 4.10"), "{later}");
        assert!(text.starts_with("default layout (1 GiB USR-A, 4 GiB virtio disk), 5 round-robin rounds"));
    }

    #[test]
    fn the_json_names_each_goal_and_whether_it_was_met() {
        let rows = rows();
        let json = results_json(&rows, &ratios(&rows).unwrap(), 5);
        assert_eq!(json["candidates"][1]["initrd"], KEEL_LATER);
        assert_eq!(json["candidates"][1]["initrd_phase_seconds"]["median"], 1.2);
        assert_eq!(json["ratios"][0]["met"], true);
        assert_eq!(json["ratios"][0]["stretch_met"], true);
        assert_eq!(json["ratios"][1]["stretch"], serde_json::Value::Null);
    }

    #[test]
    fn options_default_to_five_rounds_and_refuse_nonsense() {
        assert_eq!(parse_options(&[]).unwrap().rounds, DEFAULT_ROUNDS);
        let words = |text: &str| text.split_whitespace().map(String::from).collect::<Vec<_>>();
        let options = parse_options(&words("--rounds 2 --initrd old=/tmp/old.img")).unwrap();
        assert_eq!((options.rounds, options.extra), (2, vec![("old".to_string(), PathBuf::from("/tmp/old.img"))]));
        assert!(parse_options(&words("--rounds 0")).is_err());
        assert!(parse_options(&words("--initrd old")).is_err());
        assert!(parse_options(&words("--fast")).is_err());
    }
}
