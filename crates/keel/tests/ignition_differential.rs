//! keel's Ignition against Debian's Ignition 2.14, config by config, over the corpus in
//! `crates/keel-ignition/tests/corpus` (its `generate.py` says how the corpus is made; the
//! verdicts in its `manifest.json` are ignition-validate's own).
//!
//! - Verdicts: `keel ignition validate` must accept exactly what `ignition-validate` accepts.
//! - Trees: for every valid, tree-comparable config, Ignition's `files` stage and
//!   `keel ignition apply` run on two fresh copies of one base root, and the trees must match:
//!   paths, types, modes, owners, contents, link targets, hard links.
//!
//! Ignition 2.14 knows spec 3.4.0 only as `3.4.0-experimental`: the corpus carries that
//! version, and keel gets the same document declaring the final `3.4.0`.
//!
//! What the comparison normalises, and only that (each must differ between two runs of
//! Ignition itself, or is an artefact of shadow-utils that keel's native writer has no use for):
//! - `/etc/.ignition-result.json`: the value of `provisioningDate` (the wall clock).
//! - `/etc/shadow`: the last-change field (days since 1970) when it is today or yesterday
//!   (useradd writes the day it runs; a run may cross midnight). The base root's own dates are
//!   compared as they are.
//! - `/etc/passwd-`, `/etc/group-`, `/etc/shadow-`, `/etc/gshadow-` (shadow-utils' backups) and
//!   `/etc/.pwd.lock` (its lock file) are left out.
//! - `/etc/systemd/system-preset/20-ignition.preset`: compared as a sorted list of lines. Ignition
//!   2.14 writes one line per entry of a Go map (stages/files/units.go, createSystemdPresetFile's
//!   `for _, value := range presets`), so its order changes from run to run.
//! - A config with a template instance whose `enabled` is set makes Ignition ask the running
//!   systemd for its version over D-Bus (units.go:181, warnOnOldSystemdVersion ->
//!   internal/systemd/systemd.go:57, only to log a warning), after the preset file is complete.
//!   Outside a booted system there is no `/run/systemd/private`, so the files stage stops there,
//!   before writing `/etc/.ignition-result.json`. Such a run counts as applied, and that one file
//!   is left out of both trees.
//!
//! Running Ignition outside an initrd, as root: the `file` platform reads the config named by
//! `IGNITION_CONFIG_FILE`; only the fetch stages read it, and they cache it for the later stages
//! in `-config-cache`, so each config runs `fetch-offline` then `files`, with the cache, state and
//! neednet files in a directory of its own. `IGNITION_SYSTEM_CONFIG_DIR` points at an empty
//! directory so no base config from the host joins in. Ignition's build relabels for SELinux at
//! the end of the files stage: it reads `/etc/selinux/config` in the root (so the base root has
//! one) and runs `setfiles`, which a no-op stub first on `PATH` stands in for. `useradd` and
//! friends are the host's, run by Ignition with `--root`. Logs go to stdout (`-log-to-stdout`).

use keel_test_support::ignition::{make_base_root, make_stubs, run_files_stage, snapshot, today_and_yesterday, tree_differences, IGNITION};
use keel_test_support::scratch_dir;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const IGNITION_VALIDATE: &str = "/usr/bin/ignition-validate";
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../keel-ignition/tests/corpus");
/// Ignition processes at a time: the machines that run this have two cores.
const WORKERS: usize = 2;

/// Configs on which keel's verdict may differ from ignition-validate's: name -> why, with the
/// Ignition source line or issue that proves it is Ignition 2.14's bug or a version difference.
/// Every one is spec 3.4.0: Ignition 2.14 judges it as its 3.4.0-experimental, keel as the final
/// 3.4.0 of today's Ignition (/work/ref/ignition-main, config/v3_4).
const VALIDATE_DIFFERENCES: &[(&str, &str)] = &[
    (
        "unit-path-also-a-storage-file-v3_4",
        "final 3.4 refuses a storage file at a path a unit is written to (Ignition 2f63faa1, config/v3_4/types/config.go); 2.14's experimental spec accepts it",
    ),
    (
        "partition-should-not-exist-beside-unnumbered-v3_4",
        "final 3.4 allows deleting a partition beside one without a number again (Ignition 76f869a4); 2.14's experimental spec refuses it",
    ),
    (
        "luks-tang-advertisement-not-json-v3_4",
        "final 3.4 requires a Tang advertisement to be JSON (config/v3_4/types/tang.go); 2.14's experimental spec does not check it",
    ),
];

/// Valid configs whose applied trees (or apply outcome) may differ: name -> why.
const APPLY_DIFFERENCES: &[(&str, &str)] = &[
    (
        "unit-path-also-a-storage-file-v3_4",
        "keel refuses it at validation under the final 3.4 rules (see VALIDATE_DIFFERENCES), so it writes nothing",
    ),
    (
        "directory-setgid-v3_4",
        "special mode bits count from spec 3.6 in today's Ignition (config/v3_6/translate drops them from older specs); 2.14 took them from its 3.4.0-experimental",
    ),
    // The setuid and setgid file cases of 3.4 agree anyway: Ignition's chown after its chmod clears those bits on files.
    ("file-mode-sticky-v3_4", "as directory-setgid-v3_4: special bits are dropped before spec 3.6"),
];

struct Case {
    name: String,
    version: String,
    valid: bool,
    tree_comparable: bool,
}

impl Case {
    fn path(&self) -> PathBuf {
        Path::new(CORPUS).join(format!("{}.ign", self.name))
    }

    /// The document keel gets: the corpus file, with 2.14's `3.4.0-experimental` made final.
    fn keel_document(&self) -> String {
        let text = fs::read_to_string(self.path()).unwrap_or_else(|e| panic!("cannot read {}: {e}", self.path().display()));
        if self.version != "3.4.0-experimental" {
            return text;
        }
        let declared = "\"version\": \"3.4.0-experimental\"";
        assert!(text.contains(declared), "{}: declares no {declared}", self.name);
        text.replacen(declared, "\"version\": \"3.4.0\"", 1)
    }
}

/// The manifest, one entry a line, as generate.py writes it (this crate has no JSON library).
fn manifest() -> Vec<Case> {
    let path = Path::new(CORPUS).join("manifest.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let cases: Vec<Case> = text
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| Case {
            name: string_field(line, "name"),
            version: string_field(line, "version"),
            valid: match string_field(line, "expected").as_str() {
                "valid" => true,
                "invalid" => false,
                other => panic!("manifest: expected is {other:?} in {line}"),
            },
            tree_comparable: bool_field(line, "tree_comparable"),
        })
        .collect();
    assert!(cases.len() >= 300, "manifest.json lists only {} configs: is it the generator's?", cases.len());
    cases
}

fn string_field(line: &str, key: &str) -> String {
    let marker = format!("\"{key}\": \"");
    let start = line.find(&marker).unwrap_or_else(|| panic!("manifest: no {key} in {line}")) + marker.len();
    let length = line[start..].find('"').unwrap_or_else(|| panic!("manifest: unterminated {key} in {line}"));
    line[start..start + length].to_string()
}

fn bool_field(line: &str, key: &str) -> bool {
    match (line.contains(&format!("\"{key}\": true")), line.contains(&format!("\"{key}\": false"))) {
        (true, false) => true,
        (false, true) => false,
        _ => panic!("manifest: {key} is not a boolean in {line}"),
    }
}

/// Why the Ignition side cannot run here, if it cannot.
fn ignition_unavailable() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective_uid = status.lines().find_map(|line| line.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1));
    if effective_uid != Some("0") {
        return Some("not root: Ignition's files stage chowns and runs useradd --root".to_string());
    }
    [IGNITION, IGNITION_VALIDATE, "/usr/sbin/useradd", "/usr/share/base-passwd/passwd.master"]
        .iter()
        .find(|path| !Path::new(path).exists())
        .map(|path| format!("{path} is missing (Debian packages ignition, passwd and base-passwd)"))
}

fn skip_without_ignition(test: &str) -> bool {
    let Some(reason) = ignition_unavailable() else { return false };
    eprintln!("SKIPPED {test}: {reason}");
    true
}

/// Whether this keel has the `ignition` command yet (the CLI comes after this test).
fn keel_has_ignition_command() -> bool {
    let output = keel(&["ignition", "validate", "/dev/null"]);
    !String::from_utf8_lossy(&output.stderr).contains("unknown command \"ignition")
}

fn skip_without_keel_ignition(test: &str) -> bool {
    if keel_has_ignition_command() {
        return false;
    }
    eprintln!("SKIPPED {test}: this keel has no `ignition` command yet");
    true
}

fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel")).args(args).output().unwrap_or_else(|e| panic!("cannot run keel: {e}"))
}

fn output_text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `work(item)` for every item, `WORKERS` at a time, results in the items' order.
fn in_parallel<T: Sync, R: Send>(items: &[T], work: impl Fn(usize, &T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(index) else { break };
                let result = work(index, item);
                results.lock().unwrap().push((index, result));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

/// One config's run of Ignition (or keel) on a root.
struct Applied {
    succeeded: bool,
    /// Ignition stopped only at its systemd version check, which needs a booted system.
    stopped_at_systemd_version_check: bool,
    log: String,
    took: Duration,
}

/// The result file: left out of a comparison when Ignition could not get as far as writing it.
const RESULT_FILE: &str = "etc/.ignition-result.json";

/// Where the processes of one test keep their files: the stub directory Ignition's PATH starts
/// with, and one directory per config and side.
struct Workspace {
    dir: PathBuf,
    stubs: PathBuf,
}

impl Workspace {
    fn new(test: &str) -> Workspace {
        let dir = scratch_dir(env!("CARGO_TARGET_TMPDIR"), test);
        let stubs = dir.join("stubs");
        make_stubs(&stubs);
        Workspace { dir, stubs }
    }

    /// A fresh directory for `side` of `case`, holding a fresh base root at `root`.
    fn fresh(&self, case: &Case, side: &str) -> PathBuf {
        let dir = self.dir.join(&case.name).join(side);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("root")).unwrap();
        make_base_root(&dir.join("root"));
        dir
    }

    fn run_ignition(&self, case: &Case, side: &str) -> (Applied, PathBuf) {
        let dir = self.fresh(case, side);
        let run = run_files_stage(&case.path(), &dir, &self.stubs);
        let took = run.took.iter().sum();
        // Kept beside the root, to be read after a failure.
        fs::write(dir.join("ignition.log"), &run.log).unwrap();
        let applied =
            Applied { succeeded: run.succeeded, stopped_at_systemd_version_check: run.stopped_at_systemd_version_check, log: run.log, took };
        (applied, dir.join("root"))
    }

    fn run_keel(&self, case: &Case) -> (Applied, PathBuf) {
        let dir = self.fresh(case, "keel");
        let config = dir.join("config.ign");
        fs::write(&config, case.keel_document()).unwrap();
        let root = dir.join("root");
        let started = Instant::now();
        let output = keel(&["ignition", "apply", "--root", root.to_str().unwrap(), config.to_str().unwrap()]);
        let succeeded = output.status.success();
        (Applied { succeeded, stopped_at_systemd_version_check: false, log: output_text(&output), took: started.elapsed() }, root)
    }
}

/// Checks a table of documented differences against what was found: every undocumented
/// disagreement fails, and so does a documented one that no longer happens (a stale excuse).
fn judge(what: &str, table: &[(&str, &str)], checked: &[&Case], disagreements: &BTreeMap<String, String>) {
    let documented: BTreeMap<&str, &str> = table.iter().copied().collect();
    let names: BTreeSet<&str> = manifest_names();
    for name in documented.keys() {
        assert!(names.contains(name), "{what}: the documented difference {name} names no config of the corpus");
    }
    for (name, reason) in &documented {
        if checked.iter().any(|case| case.name == *name) && !disagreements.contains_key(*name) {
            eprintln!("{what}: {name} is documented as a difference ({reason}) but agrees now: remove it from the table");
        }
    }
    let stale = documented.keys().filter(|name| checked.iter().any(|case| case.name == **name) && !disagreements.contains_key(**name)).count();
    let undocumented: Vec<String> =
        disagreements.iter().filter(|(name, _)| !documented.contains_key(name.as_str())).map(|(name, text)| format!("--- {name}\n{text}")).collect();
    for (name, text) in disagreements.iter().filter(|(name, _)| documented.contains_key(name.as_str())) {
        eprintln!("{what}: documented difference {name}: {}\n{text}", documented[name.as_str()]);
    }
    assert!(undocumented.is_empty(), "{what}: {} undocumented disagreements:\n{}", undocumented.len(), undocumented.join("\n"));
    assert_eq!(stale, 0, "{what}: documented differences that no longer differ (see above)");
}

fn manifest_names() -> BTreeSet<&'static str> {
    static NAMES: std::sync::OnceLock<BTreeSet<String>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| manifest().into_iter().map(|case| case.name).collect()).iter().map(String::as_str).collect()
}

fn ignition_validate(case: &Case) -> (bool, String) {
    let output = Command::new(IGNITION_VALIDATE).arg(case.path()).output().unwrap_or_else(|e| panic!("cannot run {IGNITION_VALIDATE}: {e}"));
    (output.status.success(), output_text(&output))
}

#[test]
fn manifest_verdicts_are_ignition_validates() {
    if skip_without_ignition("manifest_verdicts_are_ignition_validates") {
        return;
    }
    let cases = manifest();
    let verdicts = in_parallel(&cases, |_, case| ignition_validate(case));
    let wrong: Vec<String> = cases
        .iter()
        .zip(&verdicts)
        .filter(|(case, (valid, _))| case.valid != *valid)
        .map(|(case, (valid, output))| format!("{}: manifest says valid={}, ignition-validate says valid={valid}: {output}", case.name, case.valid))
        .collect();
    assert!(wrong.is_empty(), "regenerate the corpus (generate.py): {}", wrong.join("\n"));
}

#[test]
fn ignition_files_stage_gives_the_same_snapshot_twice() {
    if skip_without_ignition("ignition_files_stage_gives_the_same_snapshot_twice") {
        return;
    }
    let workspace = Workspace::new("ignition-twice");
    let cases: Vec<Case> = manifest().into_iter().filter(|case| case.tree_comparable).collect();
    let today = today_and_yesterday();
    let results = in_parallel(&cases, |_, case| {
        let (first, first_root) = workspace.run_ignition(case, "ignition-1");
        let (second, second_root) = workspace.run_ignition(case, "ignition-2");
        let differences = tree_differences("run 1", &snapshot(&first_root, &today), "run 2", &snapshot(&second_root, &today));
        (first, second, differences)
    });
    let mut unstable = Vec::new();
    let mut failed = Vec::new();
    let mut stopped = Vec::new();
    for (case, (first, second, differences)) in cases.iter().zip(&results) {
        if first.succeeded != second.succeeded {
            unstable.push(format!("{}: succeeded once, failed once:\n{}\n{}", case.name, first.log, second.log));
        } else if !differences.is_empty() {
            unstable.push(format!("{}:\n{}", case.name, differences.join("\n")));
        }
        if !first.succeeded {
            failed.push(case.name.as_str());
        }
        if first.stopped_at_systemd_version_check {
            stopped.push(case.name.as_str());
        }
    }
    let took: Vec<Duration> = results.iter().flat_map(|(first, second, _)| [first.took, second.took]).collect();
    let total: Duration = took.iter().sum();
    eprintln!(
        "Ignition's fetch-offline + files stages: {} runs, mean {:?}, max {:?}; {} of {} configs fail to apply (as meant): {failed:?}; \
         stopped at the systemd version check: {stopped:?}",
        took.len(),
        total / took.len().max(1) as u32,
        took.iter().max().copied().unwrap_or_default(),
        failed.len(),
        cases.len()
    );
    assert!(unstable.is_empty(), "the snapshot is not deterministic over two runs of Ignition:\n{}", unstable.join("\n"));
    // Most of the corpus must apply, or the comparison proves little.
    assert!(failed.len() * 10 < cases.len(), "{} of {} configs fail in Ignition's files stage: {failed:?}", failed.len(), cases.len());
}

#[test]
fn keel_validate_agrees_with_ignition_validate() {
    let test = "keel_validate_agrees_with_ignition_validate";
    if skip_without_keel_ignition(test) {
        return;
    }
    let workspace = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "keel-validate");
    let cases = manifest();
    let verdicts = in_parallel(&cases, |_, case| {
        let config = workspace.join(format!("{}.ign", case.name));
        fs::write(&config, case.keel_document()).unwrap();
        keel(&["ignition", "validate", config.to_str().unwrap()])
    });
    let mut disagreements = BTreeMap::new();
    for (case, output) in cases.iter().zip(&verdicts) {
        let keel_valid = match output.status.code() {
            Some(0) => true,
            Some(1) => false,
            status => {
                disagreements.insert(case.name.clone(), format!("keel ended with {status:?}: {}", output_text(output)));
                continue;
            }
        };
        if keel_valid != case.valid {
            let verdict = |valid: bool| if valid { "accepts" } else { "rejects" };
            disagreements.insert(
                case.name.clone(),
                format!("Ignition {} it, keel {} it:\n{}", verdict(case.valid), verdict(keel_valid), output_text(output).trim_end()),
            );
        }
    }
    let valid = cases.iter().filter(|case| case.valid).count();
    eprintln!(
        "{test}: {} configs ({valid} valid, {} invalid by ignition-validate): {} verdicts agree, {} differ ({} documented)",
        cases.len(),
        cases.len() - valid,
        cases.len() - disagreements.len(),
        disagreements.len(),
        disagreements.keys().filter(|name| VALIDATE_DIFFERENCES.iter().any(|(documented, _)| documented == name)).count()
    );
    let checked: Vec<&Case> = cases.iter().collect();
    judge(test, VALIDATE_DIFFERENCES, &checked, &disagreements);
}

#[test]
fn keel_apply_gives_the_tree_ignition_gives() {
    let test = "keel_apply_gives_the_tree_ignition_gives";
    if skip_without_ignition(test) || skip_without_keel_ignition(test) {
        return;
    }
    let workspace = Workspace::new("keel-apply");
    let cases: Vec<Case> = manifest().into_iter().filter(|case| case.tree_comparable).collect();
    let today = today_and_yesterday();
    let results = in_parallel(&cases, |_, case| {
        let (ignition, ignition_root) = workspace.run_ignition(case, "ignition");
        let (keel, keel_root) = workspace.run_keel(case);
        let differences = if ignition.succeeded && keel.succeeded {
            let mut keel_tree = snapshot(&keel_root, &today);
            if ignition.stopped_at_systemd_version_check {
                keel_tree.remove(RESULT_FILE);
            }
            tree_differences("Ignition", &snapshot(&ignition_root, &today), "keel", &keel_tree)
        } else {
            Vec::new()
        };
        (ignition, keel, differences)
    });
    let mut disagreements = BTreeMap::new();
    for (case, (ignition, keel, differences)) in cases.iter().zip(&results) {
        let outcome = |applied: &Applied| if applied.succeeded { "applies it" } else { "fails" };
        if ignition.succeeded != keel.succeeded {
            disagreements.insert(
                case.name.clone(),
                format!(
                    "Ignition {}, keel {}\nIgnition:\n{}\nkeel:\n{}",
                    outcome(ignition),
                    outcome(keel),
                    ignition.log.trim_end(),
                    keel.log.trim_end()
                ),
            );
        } else if !differences.is_empty() {
            disagreements.insert(case.name.clone(), differences.join("\n"));
        }
    }
    let both_applied = results.iter().filter(|(ignition, keel, _)| ignition.succeeded && keel.succeeded).count();
    let both_failed = results.iter().filter(|(ignition, keel, _)| !ignition.succeeded && !keel.succeeded).count();
    eprintln!(
        "{test}: {} tree-comparable configs: {both_applied} applied by both, {} of them to identical trees; {both_failed} refused by both; \
         {} disagreements ({} documented)",
        cases.len(),
        both_applied - results.iter().filter(|(ignition, keel, differences)| ignition.succeeded && keel.succeeded && !differences.is_empty()).count(),
        disagreements.len(),
        disagreements.keys().filter(|name| APPLY_DIFFERENCES.iter().any(|(documented, _)| documented == name)).count()
    );
    let checked: Vec<&Case> = cases.iter().collect();
    judge(test, APPLY_DIFFERENCES, &checked, &disagreements);
}

#[cfg(test)]
mod corpus_tests {
    use super::*;

    #[test]
    fn the_3_4_experimental_version_becomes_final_for_keel_only() {
        let cases = manifest();
        let experimental = cases.iter().find(|case| case.version == "3.4.0-experimental").unwrap();
        let document = experimental.keel_document();
        assert!(document.contains("\"version\": \"3.4.0\"") && !document.contains("3.4.0-experimental\""), "{document}");
        let earlier = cases.iter().find(|case| case.version == "3.3.0").unwrap();
        assert_eq!(earlier.keel_document(), fs::read_to_string(earlier.path()).unwrap());
    }
}
