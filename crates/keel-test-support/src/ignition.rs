//! Ignition 2.14 as a reference, for the differential test of keel-ignition and for
//! `cargo xtask bench ignition`: a base root as a Debian system starts, Ignition's files stage run
//! on a copy of it outside an initrd, and snapshots of trees compared with only the fields that
//! differ between two runs of Ignition itself normalised. How Ignition runs here, and what is
//! normalised and why, is said in crates/keel/tests/ignition_differential.rs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const IGNITION: &str = "/usr/lib/dracut/modules.d/30ignition/ignition";

/// What shadow-utils leaves beside the account files; keel writes them in place, atomically.
pub const SHADOW_UTILS_ARTEFACTS: &[&str] = &["etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-", "etc/.pwd.lock"];

/// The base root's password-change day for its own accounts (2022-01-08), not today's.
pub const BASE_SHADOW_DAY: &str = "19000";

/// A fresh root as a Debian system starts: base-passwd's accounts (shadowed as pwconv does, with
/// a fixed date) and their home directories (Ignition looks at an existing user's home after
/// usermod, and fails when it is missing), the host's Debian defaults for login.defs, useradd and
/// /etc/skel, an /etc/motd the corpus appends to, overwrites and hard-links, and the SELinux
/// config Ignition's relabel step reads. One regular account, `former` (500, below UID_MIN so the
/// ids useradd picks stay Debian's), owns its home, for the corpus to modify and delete.
pub fn make_base_root(root: &Path) {
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
pub fn master_with_shadowed_password(which: &str) -> String {
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

pub fn names(accounts: &str) -> impl Iterator<Item = &str> {
    accounts.lines().filter_map(|line| line.split(':').next())
}

pub fn write_file(path: &Path, contents: &[u8], mode: u32, gid: Option<u32>) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    chown(path, Some(0), Some(gid.unwrap_or(0))).unwrap();
}

/// The one failure of Ignition's files stage that comes from running it outside a booted system.
pub const SYSTEMD_VERSION_CHECK_FAILURE: &str = "failed to create units: dial unix /run/systemd/private";

/// A config of spec 3.3.0 (which Ignition 2.14 reads too) with `files` files of a few hundred
/// bytes in `directories` directories under /opt/bench, owned by the config's own `users` users
/// (`bench0`…), by name, each user with an SSH key: what `cargo xtask bench ignition` and the
/// first-boot benchmark apply. The users' groups are the ones useradd makes them
/// (`USERGROUPS_ENAB yes`).
pub fn many_files_config(files: usize, directories: usize, users: usize) -> String {
    let user_entries: Vec<serde_json::Value> = (0..users)
        .map(|user| {
            serde_json::json!({
                "name": format!("bench{user}"),
                "sshAuthorizedKeys": [format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchKey{user:04} bench{user}@keel")],
            })
        })
        .collect();
    let file_entries: Vec<serde_json::Value> = (0..files)
        .map(|file| {
            let directory = file % directories;
            let line = format!("file {file} in directory {directory}: keel ignition benchmark contents, ");
            let contents: String = line.repeat(4).replace(' ', "%20").replace(':', "%3A").replace(',', "%2C") + "%0A";
            serde_json::json!({
                "path": format!("/opt/bench/dir{directory:02}/file{file:04}.conf"),
                "mode": 0o640,
                "user": { "name": format!("bench{}", file % users) },
                "group": { "name": format!("bench{}", file % users) },
                "contents": { "source": format!("data:,{contents}") },
            })
        })
        .collect();
    serde_json::json!({
        "ignition": { "version": "3.3.0" },
        "passwd": { "users": user_entries },
        "storage": { "files": file_entries },
    })
    .to_string()
}

/// One path of a tree as compared: everything but times, sizes of directories and inode numbers.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// For non-directories: how many names the inode has, and the first one (in path order) when
    /// this is not it, so hard links compare by which paths share an inode.
    pub links: Option<(u64, Option<String>)>,
    pub contents: Option<Vec<u8>>,
}

pub type Snapshot = BTreeMap<String, Node>;

/// The tree under `root`, normalised as the module's header says.
pub fn snapshot(root: &Path, today: &BTreeSet<String>) -> Snapshot {
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

pub fn normalised_contents(name: &str, contents: Vec<u8>, today: &BTreeSet<String>) -> Vec<u8> {
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
pub fn today_and_yesterday() -> BTreeSet<String> {
    let day = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400;
    [day, day - 1].iter().map(u64::to_string).collect()
}

/// Every way `theirs` differs from `ours`, one readable paragraph each.
pub fn tree_differences(ours_name: &str, ours: &Snapshot, theirs_name: &str, theirs: &Snapshot) -> Vec<String> {
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

pub fn describe(node: &Node) -> String {
    let links = match &node.links {
        Some((count, Some(first))) => format!(", {count} links, same inode as /{first}"),
        Some((count, None)) if *count > 1 => format!(", {count} links"),
        _ => String::new(),
    };
    let size = node.contents.as_ref().map(|contents| format!(", {} bytes", contents.len())).unwrap_or_default();
    format!("{} {:04o} {}:{}{links}{size}", node.kind, node.mode, node.uid, node.gid)
}

/// The lines only one side has (in order, `-` ours, `+` theirs), or the sizes when not text.
pub fn contents_diff(ours_name: &str, ours: Option<&[u8]>, theirs_name: &str, theirs: Option<&[u8]>) -> String {
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

/// One run of Ignition's files stage: `fetch-offline` to read and cache `config` (the `file`
/// platform), then `files` on `dir/root`, with the cache, state and neednet files in `dir`;
/// `stubs` comes first on PATH (its `setfiles` stands in for SELinux relabelling).
pub struct FilesStage {
    pub succeeded: bool,
    /// Ignition stopped only at its systemd version check, which needs a booted system.
    pub stopped_at_systemd_version_check: bool,
    pub log: String,
    /// Each stage's process from start to exit: fetch-offline, then files.
    pub took: Vec<Duration>,
}

/// A directory of stubs for Ignition's PATH: relabelling needs a policy a test root has not got.
pub fn make_stubs(stubs: &Path) {
    fs::create_dir_all(stubs).unwrap();
    write_file(&stubs.join("setfiles"), b"#!/bin/sh\ncat >/dev/null\n", 0o755, None);
}

pub fn run_files_stage(config: &Path, dir: &Path, stubs: &Path) -> FilesStage {
    let system = dir.join("system-config");
    fs::create_dir_all(&system).unwrap();
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", stubs.display());
    let mut log = String::new();
    let mut succeeded = true;
    let mut took = Vec::new();
    for stage in ["fetch-offline", "files"] {
        let started = Instant::now();
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
            .env("IGNITION_CONFIG_FILE", config)
            .env("IGNITION_SYSTEM_CONFIG_DIR", &system)
            .env("PATH", &path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {IGNITION}: {e}"));
        took.push(started.elapsed());
        log.push_str(&String::from_utf8_lossy(&output.stdout));
        log.push_str(&String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            succeeded = false;
            break;
        }
    }
    let stopped_at_systemd_version_check = !succeeded && log.contains(SYSTEMD_VERSION_CHECK_FAILURE);
    FilesStage { succeeded: succeeded || stopped_at_systemd_version_check, stopped_at_systemd_version_check, log, took }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_dir;

    fn two_trees(name: &str, change: impl Fn(&Path)) -> Vec<String> {
        let dir = scratch_dir(std::env::temp_dir(), &format!("snapshot-{name}"));
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
            if name == "owner" && !rustix_is_root() {
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

    fn rustix_is_root() -> bool {
        std::process::Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.starts_with(b"0\n"))
    }
}
