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

use keel_test_support::scratch_dir;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const IGNITION: &str = "/usr/lib/dracut/modules.d/30ignition/ignition";
const IGNITION_VALIDATE: &str = "/usr/bin/ignition-validate";
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../keel-ignition/tests/corpus");
/// Ignition processes at a time: the machines that run this have two cores.
const WORKERS: usize = 2;

/// Configs on which keel's verdict may differ from ignition-validate's: name -> why, with the
/// Ignition source line or issue that proves it is Ignition 2.14's bug or a version difference.
const VALIDATE_DIFFERENCES: &[(&str, &str)] = &[];

/// Valid configs whose applied trees (or apply outcome) may differ: name -> why.
const APPLY_DIFFERENCES: &[(&str, &str)] = &[];

/// What shadow-utils leaves beside the account files; keel writes them in place, atomically.
const SHADOW_UTILS_ARTEFACTS: &[&str] = &["etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-", "etc/.pwd.lock"];

/// The base root's password-change day for its own accounts (2022-01-08), not today's.
const BASE_SHADOW_DAY: &str = "19000";

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

/// A fresh root as a Debian system starts: base-passwd's accounts (shadowed as pwconv does, with
/// a fixed date) and their home directories (Ignition looks at an existing user's home after
/// usermod, and fails when it is missing), the host's Debian defaults for login.defs, useradd and
/// /etc/skel, an /etc/motd the corpus appends to, overwrites and hard-links, and the SELinux
/// config Ignition's relabel step reads. One regular account, `former` (500, below UID_MIN so the
/// ids useradd picks stay Debian's), owns its home, for the corpus to modify and delete.
fn make_base_root(root: &Path) {
    for (dir, mode) in [("etc", 0o755), ("etc/skel", 0o755), ("etc/default", 0o755), ("etc/selinux", 0o755), ("home", 0o755), ("root", 0o700)] {
        fs::create_dir_all(root.join(dir)).unwrap();
        fs::set_permissions(root.join(dir), fs::Permissions::from_mode(mode)).unwrap();
    }
    let passwd = master_with_shadowed_password("passwd") + "former:x:500:500:Former user:/home/former:/bin/bash\n";
    let group = master_with_shadowed_password("group") + "former:x:500:\n";
    // Debian has none of /nonexistent, and /run is a tmpfs at boot.
    let homes = passwd.lines().filter_map(|line| line.split(':').nth(5)).filter(|home| *home != "/nonexistent" && !home.starts_with("/run/"));
    for home in homes {
        fs::create_dir_all(root.join(home.trim_start_matches('/'))).unwrap();
    }
    let shadow: String = names(&passwd).map(|name| format!("{name}:*:{BASE_SHADOW_DAY}:0:99999:7:::\n")).collect();
    let gshadow: String = names(&group).map(|name| format!("{name}:*::\n")).collect();
    let shadow_gid =
        group.lines().find_map(|line| line.strip_prefix("shadow:x:")).and_then(|rest| rest.split(':').next()).map(|gid| gid.parse().unwrap());
    let motd = "Debian base root for keel's differential test\n".to_string();
    let selinux = "SELINUX=disabled\nSELINUXTYPE=keel-differential\n".to_string();
    let copied = |host: &str| fs::read_to_string(host).unwrap_or_else(|e| panic!("cannot read {host}: {e}"));
    let mut files = vec![
        ("etc/passwd", passwd.clone(), 0o644, None),
        ("etc/group", group.clone(), 0o644, None),
        ("etc/shadow", shadow, 0o640, shadow_gid),
        ("etc/gshadow", gshadow, 0o640, shadow_gid),
        ("etc/login.defs", copied("/etc/login.defs"), 0o644, None),
        ("etc/motd", motd, 0o644, None),
        ("etc/selinux/config", selinux, 0o644, None),
    ];
    if Path::new("/etc/default/useradd").exists() {
        files.push(("etc/default/useradd", copied("/etc/default/useradd"), 0o644, None));
    }
    for (path, contents, mode, gid) in files {
        write_file(&root.join(path), contents.as_bytes(), mode, gid);
    }
    let former = root.join("home/former");
    write_file(&former.join(".profile"), b"# former's own\n", 0o644, None);
    chown(former.join(".profile"), Some(500), Some(500)).unwrap();
    chown(&former, Some(500), Some(500)).unwrap();
    for entry in fs::read_dir("/etc/skel").unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            write_file(&root.join("etc/skel").join(entry.file_name()), &fs::read(entry.path()).unwrap(), 0o644, None);
        }
    }
}

/// base-passwd's master file with the password field moved to the shadow file.
fn master_with_shadowed_password(which: &str) -> String {
    let master = fs::read_to_string(format!("/usr/share/base-passwd/{which}.master")).unwrap();
    master
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(':').collect();
            fields[1] = "x";
            fields.join(":") + "\n"
        })
        .collect()
}

fn names(accounts: &str) -> impl Iterator<Item = &str> {
    accounts.lines().filter_map(|line| line.split(':').next())
}

fn write_file(path: &Path, contents: &[u8], mode: u32, gid: Option<u32>) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    chown(path, Some(0), Some(gid.unwrap_or(0))).unwrap();
}

/// One config's run of Ignition (or keel) on a root.
struct Applied {
    succeeded: bool,
    /// Ignition stopped only at its systemd version check, which needs a booted system.
    stopped_at_systemd_version_check: bool,
    log: String,
    took: Duration,
}

/// The one failure of Ignition's files stage that comes from running it outside a booted system.
const SYSTEMD_VERSION_CHECK_FAILURE: &str = "failed to create units: dial unix /run/systemd/private";

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
        fs::create_dir_all(&stubs).unwrap();
        // Relabelling needs a policy this root has not got; the labels are not compared.
        write_file(&stubs.join("setfiles"), b"#!/bin/sh\ncat >/dev/null\n", 0o755, None);
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
        let system = dir.join("system-config");
        fs::create_dir_all(&system).unwrap();
        let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", self.stubs.display());
        let started = Instant::now();
        let mut log = String::new();
        let mut succeeded = true;
        for stage in ["fetch-offline", "files"] {
            let output = Command::new(IGNITION)
                .args(["-platform", "file", "-stage", stage, "-log-to-stdout"])
                .arg("-root")
                .arg(dir.join("root"))
                .arg("-config-cache")
                .arg(dir.join("config-cache.json"))
                .arg("-state-file")
                .arg(dir.join("state"))
                .arg("-neednet")
                .arg(dir.join("neednet"))
                .env("IGNITION_CONFIG_FILE", case.path())
                .env("IGNITION_SYSTEM_CONFIG_DIR", &system)
                .env("PATH", &path)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {IGNITION}: {e}"));
            log.push_str(&output_text(&output));
            if !output.status.success() {
                succeeded = false;
                break;
            }
        }
        let took = started.elapsed();
        // Kept beside the root, to be read after a failure.
        fs::write(dir.join("ignition.log"), &log).unwrap();
        let stopped_at_systemd_version_check = !succeeded && log.contains(SYSTEMD_VERSION_CHECK_FAILURE);
        (Applied { succeeded: succeeded || stopped_at_systemd_version_check, stopped_at_systemd_version_check, log, took }, dir.join("root"))
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

/// One path of a tree as compared: everything but times, sizes of directories and inode numbers.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    /// For non-directories: how many names the inode has, and the first one (in path order) when
    /// this is not it, so hard links compare by which paths share an inode.
    links: Option<(u64, Option<String>)>,
    contents: Option<Vec<u8>>,
}

type Snapshot = BTreeMap<String, Node>;

/// The tree under `root`, normalised as the module's header says.
fn snapshot(root: &Path, today: &BTreeSet<String>) -> Snapshot {
    let mut tree = Snapshot::new();
    let mut first_name: HashMap<(u64, u64), String> = HashMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let mut children: Vec<PathBuf> = fs::read_dir(root.join(&relative)).unwrap().map(|entry| relative.join(entry.unwrap().file_name())).collect();
        children.sort();
        for child in children {
            let name = child.to_string_lossy().to_string();
            if SHADOW_UTILS_ARTEFACTS.contains(&name.as_str()) {
                continue;
            }
            let full = root.join(&child);
            let meta = fs::symlink_metadata(&full).unwrap();
            let (kind, contents) = if meta.is_dir() {
                pending.push(child.clone());
                ("directory".to_string(), None)
            } else if meta.file_type().is_symlink() {
                (format!("symlink -> {}", fs::read_link(&full).unwrap().display()), None)
            } else if meta.is_file() {
                ("file".to_string(), Some(normalised_contents(&name, fs::read(&full).unwrap(), today)))
            } else {
                (format!("special {:o}", meta.mode() & 0o170000), None)
            };
            let links = (!meta.is_dir()).then(|| {
                let first = first_name.entry((meta.dev(), meta.ino())).or_insert_with(|| name.clone());
                (meta.nlink(), (*first != name).then(|| first.clone()))
            });
            tree.insert(name, Node { kind, mode: meta.mode() & 0o7777, uid: meta.uid(), gid: meta.gid(), links, contents });
        }
    }
    tree
}

fn normalised_contents(name: &str, contents: Vec<u8>, today: &BTreeSet<String>) -> Vec<u8> {
    let Ok(text) = String::from_utf8(contents.clone()) else { return contents };
    match name {
        "etc/.ignition-result.json" => text
            .lines()
            .map(|line| match line.split_once("\"provisioningDate\": ") {
                Some((indent, _)) => format!("{indent}\"provisioningDate\": \"<provisioning date>\",\n"),
                None => format!("{line}\n"),
            })
            .collect::<String>()
            .into_bytes(),
        "etc/systemd/system-preset/20-ignition.preset" => {
            let mut lines: Vec<&str> = text.lines().collect();
            lines.sort_unstable();
            lines.iter().map(|line| format!("{line}\n")).collect::<String>().into_bytes()
        }
        "etc/shadow" => text
            .lines()
            .map(|line| {
                let mut fields: Vec<&str> = line.split(':').collect();
                if let Some(day) = fields.get_mut(2).filter(|day| today.contains(**day)) {
                    *day = "<today>";
                }
                fields.join(":") + "\n"
            })
            .collect::<String>()
            .into_bytes(),
        _ => contents,
    }
}

/// Today's and yesterday's day numbers, as shadow's last-change field writes them.
fn today_and_yesterday() -> BTreeSet<String> {
    let day = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400;
    [day, day - 1].iter().map(u64::to_string).collect()
}

/// Every way `theirs` differs from `ours`, one readable paragraph each.
fn tree_differences(ours_name: &str, ours: &Snapshot, theirs_name: &str, theirs: &Snapshot) -> Vec<String> {
    let mut differences = Vec::new();
    for path in ours.keys().chain(theirs.keys()).collect::<BTreeSet<_>>() {
        match (ours.get(path), theirs.get(path)) {
            (Some(node), None) => differences.push(format!("/{path}: only {ours_name} has it ({})", describe(node))),
            (None, Some(node)) => differences.push(format!("/{path}: only {theirs_name} has it ({})", describe(node))),
            (Some(a), Some(b)) if a != b => {
                let mut paragraph = format!("/{path}:");
                if (&a.kind, a.mode, a.uid, a.gid, &a.links) != (&b.kind, b.mode, b.uid, b.gid, &b.links) {
                    paragraph.push_str(&format!("\n    {ours_name}: {}\n    {theirs_name}: {}", describe(a), describe(b)));
                }
                if a.contents != b.contents {
                    paragraph.push_str(&contents_diff(ours_name, a.contents.as_deref(), theirs_name, b.contents.as_deref()));
                }
                differences.push(paragraph);
            }
            _ => {}
        }
    }
    differences
}

fn describe(node: &Node) -> String {
    let links = match &node.links {
        Some((count, Some(first))) => format!(", {count} links, same inode as /{first}"),
        Some((count, None)) if *count > 1 => format!(", {count} links"),
        _ => String::new(),
    };
    let size = node.contents.as_ref().map(|contents| format!(", {} bytes", contents.len())).unwrap_or_default();
    format!("{} {:04o} {}:{}{links}{size}", node.kind, node.mode, node.uid, node.gid)
}

/// The lines only one side has (in order, `-` ours, `+` theirs), or the sizes when not text.
fn contents_diff(ours_name: &str, ours: Option<&[u8]>, theirs_name: &str, theirs: Option<&[u8]>) -> String {
    let (Some(Ok(a)), Some(Ok(b))) = (ours.map(std::str::from_utf8), theirs.map(std::str::from_utf8)) else {
        return format!("\n    contents differ ({ours_name} {:?} bytes, {theirs_name} {:?} bytes)", ours.map(<[u8]>::len), theirs.map(<[u8]>::len));
    };
    let (a_lines, b_lines): (BTreeSet<&str>, BTreeSet<&str>) = (a.lines().collect(), b.lines().collect());
    let mut diff = format!("\n    contents differ (- {ours_name}, + {theirs_name}):");
    for line in a.lines().filter(|line| !b_lines.contains(line)) {
        diff.push_str(&format!("\n    - {line:?}"));
    }
    for line in b.lines().filter(|line| !a_lines.contains(line)) {
        diff.push_str(&format!("\n    + {line:?}"));
    }
    if a.lines().count() == b.lines().count() && a_lines == b_lines {
        diff.push_str("\n    (same lines, other order or line endings)");
    }
    diff
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
    let checked: Vec<&Case> = cases.iter().collect();
    judge(test, APPLY_DIFFERENCES, &checked, &disagreements);
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;

    fn two_trees(name: &str, change: impl Fn(&Path)) -> Vec<String> {
        let dir = scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("snapshot-{name}"));
        let today = today_and_yesterday();
        let day = today.iter().next_back().unwrap().clone();
        let build = |root: &Path| {
            fs::create_dir_all(root.join("etc/sub")).unwrap();
            fs::write(root.join("etc/file"), "one\ntwo\n").unwrap();
            fs::write(root.join("etc/shadow"), format!("root:*:{BASE_SHADOW_DAY}:0:99999:7:::\nalice:*:{day}:0:99999:7:::\n")).unwrap();
            fs::write(
                root.join("etc/.ignition-result.json"),
                "{\n  \"provisioningDate\": \"2026-01-01T00:00:00Z\",\n  \"userConfigProvided\": true\n}\n",
            )
            .unwrap();
            std::os::unix::fs::symlink("/target", root.join("etc/link")).unwrap();
            fs::hard_link(root.join("etc/file"), root.join("etc/sub/hard")).unwrap();
        };
        let (a, b) = (dir.join("a"), dir.join("b"));
        build(&a);
        build(&b);
        change(&b);
        tree_differences("a", &snapshot(&a, &today), "b", &snapshot(&b, &today))
    }

    #[test]
    fn identical_trees_have_no_differences() {
        assert_eq!(two_trees("same", |_| {}), Vec::<String>::new());
    }

    #[test]
    fn every_compared_property_shows_as_a_difference() {
        type Change<'a> = (&'a str, &'a dyn Fn(&Path));
        let changes: [Change; 9] = [
            ("mode", &|b| fs::set_permissions(b.join("etc/file"), fs::Permissions::from_mode(0o4600)).unwrap()),
            ("owner", &|b| chown(b.join("etc/sub"), Some(1), None).unwrap()),
            ("contents", &|b| fs::write(b.join("etc/sub/hard"), "one\nthree\n").unwrap()),
            ("link-target", &|b| {
                fs::remove_file(b.join("etc/link")).unwrap();
                std::os::unix::fs::symlink("/other", b.join("etc/link")).unwrap();
            }),
            ("type", &|b| {
                fs::remove_file(b.join("etc/link")).unwrap();
                fs::write(b.join("etc/link"), "").unwrap();
            }),
            ("extra-path", &|b| fs::create_dir(b.join("etc/new")).unwrap()),
            ("hard-link-broken", &|b| {
                fs::remove_file(b.join("etc/sub/hard")).unwrap();
                fs::write(b.join("etc/sub/hard"), "one\ntwo\n").unwrap();
            }),
            ("shadow-other-day", &|b| fs::write(b.join("etc/shadow"), "root:*:19001:0:99999:7:::\n").unwrap()),
            ("result-other-field", &|b| {
                fs::write(b.join("etc/.ignition-result.json"), "{\n  \"provisioningDate\": \"x\",\n  \"userConfigProvided\": false\n}\n").unwrap()
            }),
        ];
        for (name, change) in changes {
            if name == "owner" && ignition_unavailable().is_some_and(|reason| reason.starts_with("not root")) {
                continue;
            }
            assert!(!two_trees(name, change).is_empty(), "{name} goes unseen");
        }
    }

    #[test]
    fn only_the_normalised_fields_and_artefacts_are_ignored() {
        let differences = two_trees("normalised", |b| {
            let shadow = fs::read_to_string(b.join("etc/shadow")).unwrap();
            let yesterday = today_and_yesterday().into_iter().next().unwrap();
            let alice_day = shadow.lines().nth(1).unwrap().split(':').nth(2).unwrap().to_string();
            fs::write(b.join("etc/shadow"), shadow.replace(&format!("alice:*:{alice_day}"), &format!("alice:*:{yesterday}"))).unwrap();
            fs::write(
                b.join("etc/.ignition-result.json"),
                "{\n  \"provisioningDate\": \"2027-02-02T02:02:02Z\",\n  \"userConfigProvided\": true\n}\n",
            )
            .unwrap();
            fs::write(b.join("etc/passwd-"), "backup").unwrap();
            fs::write(b.join("etc/.pwd.lock"), "").unwrap();
        });
        assert_eq!(differences, Vec::<String>::new());
    }

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
