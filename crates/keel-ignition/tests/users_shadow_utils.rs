//! keel's users plan against the real tools, twice: each case builds a small root and
//! - runs `groupadd/groupmod/groupdel/useradd/usermod/userdel --root` with the arguments Ignition
//!   passes (internal/exec/util/passwd.go), and
//! - runs Debian's Ignition 2.14 itself (`-platform file -stage files`),
//!
//! then compares passwd, shadow, group and gshadow line for line with keel's plan for the same
//! config and files, plus the homes (and, for Ignition, the SSH key files) the tools created. A
//! tool failure must be a keel error, except for the differences the users module documents.
//!
//! Needs root, Debian's `passwd` package and, for the second test, its `ignition`; without them
//! the tests are skipped with a message. Dates are pinned with SOURCE_DATE_EPOCH, which both
//! sides honour.

use keel_ignition::config::latest::Passwd;
use keel_ignition::users::{plan_users_on, EtcFiles, UsersPlan};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE_DATE_EPOCH: u64 = 1_700_000_000;
const DAY: i64 = (SOURCE_DATE_EPOCH / 86_400) as i64;
const SBIN: &str = "/usr/sbin";
const FILES: [&str; 4] = ["passwd", "shadow", "group", "gshadow"];

const DEBIAN_PASSWD: &str = "root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";
const DEBIAN_SHADOW: &str = "root:*:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
bin:*:19000:0:99999:7:::
sys:*:19000:0:99999:7:::
systemd-network:!*:19000::::::
nobody:*:19000:0:99999:7:::
";
const DEBIAN_GROUP: &str = "root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
wheel:x:10:root
sudo:x:27:
users:x:100:
systemd-network:x:998:
nogroup:x:65534:
";
const DEBIAN_GSHADOW: &str = "root:*::
daemon:*::
bin:*::
sys:*::
adm:*::
wheel:*::root
sudo:*::
users:*::
systemd-network:!*::
nogroup:*::
";

/// A Flatcar-like root: core at 500, lower ranges, private homes.
const SMALL_PASSWD: &str = "root:x:0:0:root:/root:/bin/bash
core:x:500:500:CoreOS Admin:/home/core:/bin/bash
dev:x:501:100::/home/dev:/bin/bash
guest:x:502:502::/home/guest:/bin/bash
guest2:x:503:502::/home/guest2:/bin/bash
";
const SMALL_SHADOW: &str = "root:*:::::::
core:*:15887:0:::::
dev:*:15887:0:::::
guest:*:15887:0:::::
guest2:*:15887:0:::::
";
const SMALL_GROUP: &str = "root:x:0:root
wheel:x:10:root,core,dev
docker:x:233:core,dev
sudo:x:150:
users:x:100:
core:x:500:
guest:x:502:
";
const SMALL_GSHADOW: &str = "root:*::root
wheel:*::root,core,dev
docker:*:dev:core,dev
sudo:*::
users:*::
core:*:core:
guest:!::
";
const SMALL_LOGIN_DEFS: &str = "# Flatcar-like
USERGROUPS_ENAB yes
UID_MIN 500
UID_MAX 60000
SYS_UID_MIN 100
SYS_UID_MAX 499
GID_MIN 500
GID_MAX 60000
SYS_GID_MIN 100
SYS_GID_MAX 499
HOME_MODE 0700
";

#[derive(Clone, Copy)]
enum Root {
    Debian,
    Small,
    /// Debian's files without shadow and gshadow.
    Unshadowed,
    /// Debian's files with lines no parser accepts and NIS compat lines.
    Hostile,
    /// No login.defs at all: built-in ranges, no user-private groups.
    NoLoginDefs,
    /// A private umask and no HOME_MODE: homes get 0700 from the umask.
    PrivateUmask,
    /// No account files at all: useradd creates passwd and group.
    Empty,
    /// Debian's files, the group files without their final newline.
    NoFinalNewline,
}

fn etc_files(root: Root) -> EtcFiles {
    let debian_defs = fs::read_to_string("/etc/login.defs").ok();
    // Debian's says SHELL=/bin/sh: the Debian roots carry it, the small ones do not.
    let debian_useradd = fs::read_to_string("/etc/default/useradd").ok();
    match root {
        Root::Debian => EtcFiles {
            passwd: DEBIAN_PASSWD.into(),
            shadow: Some(DEBIAN_SHADOW.into()),
            group: DEBIAN_GROUP.into(),
            gshadow: Some(DEBIAN_GSHADOW.into()),
            login_defs: debian_defs,
            useradd_defaults: debian_useradd,
        },
        Root::Small => EtcFiles {
            passwd: SMALL_PASSWD.into(),
            shadow: Some(SMALL_SHADOW.into()),
            group: SMALL_GROUP.into(),
            gshadow: Some(SMALL_GSHADOW.into()),
            login_defs: Some(SMALL_LOGIN_DEFS.into()),
            useradd_defaults: None,
        },
        Root::Unshadowed => EtcFiles {
            passwd: DEBIAN_PASSWD.into(),
            shadow: None,
            group: DEBIAN_GROUP.into(),
            gshadow: None,
            login_defs: debian_defs,
            useradd_defaults: debian_useradd,
        },
        Root::Hostile => EtcFiles {
            passwd: format!("{DEBIAN_PASSWD}broken:x:1001\n# comment\nhuge:x:99999999999:0::/:/bin/sh\n\n+::::::\n"),
            shadow: Some(format!("{DEBIAN_SHADOW}broken\n+::::::::\n")),
            group: format!("{DEBIAN_GROUP}odd:x:notanumber:\n+:::\n"),
            gshadow: Some(format!("{DEBIAN_GSHADOW}+:::\n")),
            login_defs: debian_defs,
            useradd_defaults: debian_useradd,
        },
        Root::NoLoginDefs => EtcFiles { login_defs: None, ..etc_files(Root::Debian) },
        Root::NoFinalNewline => {
            let debian = etc_files(Root::Debian);
            EtcFiles { group: debian.group.trim_end().into(), gshadow: debian.gshadow.map(|text| text.trim_end().to_string()), ..debian }
        }
        Root::Empty => EtcFiles { login_defs: Some("USERGROUPS_ENAB yes\n".into()), ..EtcFiles::default() },
        Root::PrivateUmask => EtcFiles { login_defs: Some("UMASK 077\nUSERGROUPS_ENAB yes\nPASS_MAX_DAYS 90\n".into()), ..etc_files(Root::Debian) },
    }
}

fn write_root(dir: &Path, etc: &EtcFiles, existing_homes: &[&str]) {
    let etc_dir = dir.join("etc");
    fs::create_dir_all(&etc_dir).unwrap();
    let write = |name: &str, contents: &str, mode: u32| {
        fs::write(etc_dir.join(name), contents).unwrap();
        fs::set_permissions(etc_dir.join(name), fs::Permissions::from_mode(mode)).unwrap();
    };
    // An empty text stands for an absent file, as in EtcFiles.
    for (name, text) in [("passwd", &etc.passwd), ("group", &etc.group)] {
        if !text.is_empty() {
            write(name, text, 0o644);
        }
    }
    if let Some(shadow) = &etc.shadow {
        write("shadow", shadow, 0o640);
    }
    if let Some(gshadow) = &etc.gshadow {
        write("gshadow", gshadow, 0o640);
    }
    if let Some(defs) = &etc.login_defs {
        write("login.defs", defs, 0o644);
    }
    if let Some(defaults) = &etc.useradd_defaults {
        fs::create_dir_all(etc_dir.join("default")).unwrap();
        write("default/useradd", defaults, 0o644);
    }
    for home in existing_homes {
        let path = dir.join(home.trim_start_matches('/'));
        fs::create_dir_all(&path).unwrap();
        // The home belongs to the passwd user who has it, as on a real root.
        let owner = etc.passwd.lines().map(|line| line.split(':').collect::<Vec<_>>()).find(|fields| fields.get(5) == Some(home));
        if let Some(fields) = owner {
            std::os::unix::fs::chown(&path, fields[2].parse().ok(), fields[3].parse().ok()).unwrap();
        }
    }
}

/// The names a lookup finds (Ignition asks glibc, whose parser skips lines with too few fields).
fn names(text: &str, fields: usize) -> Vec<String> {
    text.lines().filter(|line| line.split(':').count() == fields).filter_map(|line| line.split(':').next()).map(str::to_string).collect()
}

/// What Ignition 2.14 runs for the config (and, for a group that exists, what newer Ignition
/// runs: groupmod), executed in order; Err when a tool fails, as Ignition then fails.
fn run_like_ignition(root: &Path, passwd: &Passwd) -> Result<(), String> {
    let root_arg = root.to_str().unwrap().to_string();
    let run = |tool: &str, args: Vec<String>| -> Result<(), String> {
        let output = Command::new(Path::new(SBIN).join(tool))
            .args(&args)
            .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_string())
            .env("LC_ALL", "C")
            .output()
            .map_err(|error| format!("{tool}: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("{tool} {args:?}: {} {}", output.status, String::from_utf8_lossy(&output.stderr)))
        }
    };
    let read = |name: &str| fs::read_to_string(root.join("etc").join(name)).unwrap_or_default();
    let set = |value: &Option<String>| value.as_deref().filter(|text| !text.is_empty()).map(str::to_string);
    let base = || vec!["--root".to_string(), root_arg.clone()];

    for group in passwd.groups.iter().flatten() {
        let exists = names(&read("group"), 4).contains(&group.name);
        if group.should_exist == Some(false) {
            if exists {
                run("groupdel", [base(), vec![group.name.clone()]].concat())?;
            }
            continue;
        }
        let mut args = base();
        if let Some(gid) = group.gid {
            args.extend(["--gid".to_string(), (gid as u64).to_string()]);
        }
        if exists {
            if let Some(password) = set(&group.password_hash) {
                args.extend(["--password".to_string(), password]);
            }
            args.push(group.name.clone());
            run("groupmod", args)?;
        } else {
            args.extend(["--password".to_string(), set(&group.password_hash).unwrap_or_else(|| "*".into())]);
            if group.system == Some(true) {
                args.push("--system".into());
            }
            args.push(group.name.clone());
            run("groupadd", args)?;
        }
    }
    for user in passwd.users.iter().flatten() {
        let exists = names(&read("passwd"), 7).contains(&user.name);
        if user.should_exist == Some(false) {
            if exists {
                run("userdel", [vec!["--remove".to_string()], base(), vec![user.name.clone()]].concat())?;
            }
            continue;
        }
        let mut args = base();
        let tool = if exists {
            if let Some(home) = set(&user.home_dir) {
                args.extend(["--home".to_string(), home, "--move-home".to_string()]);
            }
            "usermod"
        } else {
            if let Some(home) = set(&user.home_dir) {
                args.extend(["--home-dir".to_string(), home]);
            }
            args.push(if user.no_create_home == Some(true) { "--no-create-home" } else { "--create-home" }.into());
            for (flag, value) in [("--no-user-group", user.no_user_group), ("--system", user.system), ("--no-log-init", user.no_log_init)] {
                if value == Some(true) {
                    args.push(flag.into());
                }
            }
            "useradd"
        };
        match &user.password_hash {
            Some(password) => args.extend(["--password".to_string(), if password.is_empty() { "*".to_string() } else { password.clone() }]),
            None if !exists => args.extend(["--password".to_string(), "*".to_string()]),
            None => {}
        }
        if let Some(uid) = user.uid {
            args.extend(["--uid".to_string(), (uid as u64).to_string()]);
        }
        if let Some(gecos) = set(&user.gecos) {
            args.extend(["--comment".to_string(), gecos]);
        }
        if let Some(group) = set(&user.primary_group) {
            args.extend(["--gid".to_string(), group]);
        }
        if let Some(groups) = user.groups.as_ref().filter(|groups| !groups.is_empty()) {
            args.extend(["--groups".to_string(), groups.join(",")]);
        }
        if let Some(shell) = set(&user.shell) {
            args.extend(["--shell".to_string(), shell]);
        }
        args.push(user.name.clone());
        run(tool, args)?;
        if let Some(password) = &user.password_hash {
            let password = if password.is_empty() { "*".to_string() } else { password.clone() };
            run("usermod", [base(), vec!["--password".to_string(), password, user.name.clone()]].concat())?;
        }
    }
    Ok(())
}

struct Case {
    name: &'static str,
    root: Root,
    existing_homes: &'static [&'static str],
    config: &'static str,
}

fn cases() -> Vec<Case> {
    let case = |name, root, config| Case { name, root, existing_homes: &[], config };
    vec![
        case("plain user", Root::Debian, r#"{"users":[{"name":"alice"}]}"#),
        case(
            "every field",
            Root::Debian,
            r#"{"users":[{"name":"bob","uid":2000,"gecos":"Bob B","homeDir":"/srv/bob","shell":"/bin/sh","passwordHash":"$6$salt$hash","groups":["sudo","adm"],"primaryGroup":"users","sshAuthorizedKeys":["ssh-ed25519 AAAA bob@x","ssh-rsa BBBB\n"]}]}"#,
        ),
        case("system user", Root::Debian, r#"{"users":[{"name":"svc","system":true}]}"#),
        case("system user without home", Root::Debian, r#"{"users":[{"name":"svc","system":true,"noCreateHome":true}]}"#),
        case("no user group", Root::Debian, r#"{"users":[{"name":"carol","noUserGroup":true,"noLogInit":true}]}"#),
        case("system user without user group", Root::Debian, r#"{"users":[{"name":"svc","system":true,"noUserGroup":true}]}"#),
        case("preferred gid taken", Root::Debian, r#"{"groups":[{"name":"g1000","gid":1000}],"users":[{"name":"dave"}]}"#),
        case("uid given, its gid free", Root::Debian, r#"{"users":[{"name":"erin","uid":4242}]}"#),
        case(
            "groups of every kind",
            Root::Debian,
            r#"{"groups":[{"name":"plain"},{"name":"fixed","gid":3000},{"name":"secret","passwordHash":"$6$g$h"},{"name":"sysg","system":true},{"name":"sysg2","system":true}]}"#,
        ),
        case("new group joined by a new user", Root::Debian, r#"{"groups":[{"name":"devs"}],"users":[{"name":"frank","groups":["devs","wheel"]}]}"#),
        case(
            "several users fill ids in order",
            Root::Debian,
            r#"{"users":[{"name":"u1"},{"name":"u2","uid":1500},{"name":"u3"},{"name":"s1","system":true},{"name":"s2","system":true}]}"#,
        ),
        case("numeric primary and supplementary groups", Root::Debian, r#"{"users":[{"name":"gina","primaryGroup":"27","groups":["4","10"]}]}"#),
        case("existing user: shell and gecos", Root::Debian, r#"{"users":[{"name":"bin","shell":"/bin/sh","gecos":"Binaries"}]}"#),
        case("existing user: nothing to change", Root::Debian, r#"{"users":[{"name":"daemon"}]}"#),
        case("existing user: same values", Root::Debian, r#"{"users":[{"name":"sys","uid":3,"shell":"/usr/sbin/nologin","gecos":"sys"}]}"#),
        case("existing user: groups replaced", Root::Small, r#"{"users":[{"name":"core","groups":["sudo","docker"]}]}"#),
        case("existing user: uid and primary group", Root::Small, r#"{"users":[{"name":"core","uid":1500,"primaryGroup":"users"}]}"#),
        Case {
            name: "existing user: password",
            root: Root::Small,
            existing_homes: &["/home/core"],
            config: r#"{"users":[{"name":"core","passwordHash":"$6$new$hash","sshAuthorizedKeys":["ssh-ed25519 AAAA"]}]}"#,
        },
        case("existing user: empty password", Root::Small, r#"{"users":[{"name":"core","passwordHash":""}]}"#),
        Case {
            name: "existing user: moved home",
            root: Root::Small,
            existing_homes: &["/home/core", "/var/home"],
            config: r#"{"users":[{"name":"core","homeDir":"/var/home/core"}]}"#,
        },
        case("flatcar-like user", Root::Small, r#"{"users":[{"name":"ops","groups":["wheel","docker"]},{"name":"daemon2","system":true}]}"#),
        Case {
            name: "deleted user with private group",
            root: Root::Small,
            existing_homes: &["/home/core"],
            config: r#"{"users":[{"name":"core","shouldExist":false}]}"#,
        },
        // Ignition's validation refuses a config naming a user twice: these delete existing ones.
        case("deleted user leaves groups and admin lists", Root::Small, r#"{"users":[{"name":"dev","shouldExist":false}]}"#),
        case("deleted user whose group is another's primary", Root::Small, r#"{"users":[{"name":"guest","shouldExist":false}]}"#),
        case(
            "deleting a missing user does nothing",
            Root::Debian,
            r#"{"users":[{"name":"ghost","shouldExist":false}],"groups":[{"name":"ghosts","shouldExist":false}]}"#,
        ),
        case("deleted group", Root::Debian, r#"{"groups":[{"name":"sudo","shouldExist":false}]}"#),
        case("deleting a primary group fails", Root::Debian, r#"{"groups":[{"name":"daemon","shouldExist":false}]}"#),
        case("existing group: new gid moves its users", Root::Small, r#"{"groups":[{"name":"core","gid":700,"passwordHash":"$6$grp"}]}"#),
        case("invalid user name fails", Root::Debian, r#"{"users":[{"name":"Bad Name"}]}"#),
        case(
            "debian accepts numeric and dotted names",
            Root::Debian,
            r#"{"users":[{"name":"12345"},{"name":".hidden","noCreateHome":true},{"name":"UPPER"}]}"#,
        ),
        case("leading dash fails", Root::Debian, r#"{"users":[{"name":"-x"}]}"#),
        case("comma fails", Root::Debian, r#"{"groups":[{"name":"a,b"}]}"#),
        case("33-byte group name fails", Root::Debian, r#"{"groups":[{"name":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}]}"#),
        case("dollar-terminated name", Root::Debian, r#"{"users":[{"name":"machine$","noCreateHome":true}]}"#),
        case("taken uid fails", Root::Debian, r#"{"users":[{"name":"kim","uid":2}]}"#),
        case("missing group fails", Root::Debian, r#"{"users":[{"name":"lee","groups":["nosuch"]}]}"#),
        case("private group name taken fails", Root::Debian, r#"{"users":[{"name":"adm2","primaryGroup":""},{"name":"sudo"}]}"#),
        case("taken gid fails", Root::Debian, r#"{"groups":[{"name":"dup","gid":27}]}"#),
        case("relative home fails", Root::Debian, r#"{"users":[{"name":"mo","homeDir":"home/mo"}]}"#),
        case(
            "no shadow files",
            Root::Unshadowed,
            r#"{"groups":[{"name":"pg","passwordHash":"$1$g"}],"users":[{"name":"nina","passwordHash":"$6$n"},{"name":"bin","passwordHash":"$6$b"}]}"#,
        ),
        case(
            "hostile lines are kept",
            Root::Hostile,
            r#"{"groups":[{"name":"newg"}],"users":[{"name":"oscar","groups":["newg"]},{"name":"bin","shell":"/bin/sh"}]}"#,
        ),
        case("no login.defs", Root::NoLoginDefs, r#"{"users":[{"name":"pat"},{"name":"sue","system":true}],"groups":[{"name":"grp"}]}"#),
        case("ids wrap at the top of the range", Root::Debian, r#"{"users":[{"name":"top","uid":60000},{"name":"next"}]}"#),
        case(
            "system ids wrap at the bottom of the range",
            Root::Debian,
            r#"{"users":[{"name":"low","uid":101,"system":true},{"name":"sys2","system":true}]}"#,
        ),
        case("system user below the range keeps its gid", Root::Debian, r#"{"users":[{"name":"tiny","uid":50,"system":true}]}"#),
        case("umask decides the home mode", Root::PrivateUmask, r#"{"users":[{"name":"quinn","groups":["sudo","sudo"]}]}"#),
        case("trailing slash in a new home is kept", Root::Debian, r#"{"users":[{"name":"rita","homeDir":"/srv/rita/"}]}"#),
        case("hostile: a user named like a damaged line", Root::Hostile, r#"{"users":[{"name":"broken"},{"name":"odd","noUserGroup":true}]}"#),
        case("existing group without changes", Root::Debian, r#"{"groups":[{"name":"sudo","gid":27},{"name":"adm"}]}"#),
        case("admin keeps the admin list when groups are replaced", Root::Small, r#"{"users":[{"name":"core","groups":["wheel"]}]}"#),
        case("reserved gid fails", Root::Debian, r#"{"groups":[{"name":"maxg","gid":4294967295}]}"#),
        case("negative uid fails", Root::Debian, r#"{"users":[{"name":"neg","uid":-5}]}"#),
        case("colon in a password fails", Root::Debian, r#"{"users":[{"name":"col","passwordHash":"a:b"}]}"#),
        case("colon in gecos fails", Root::Debian, r#"{"users":[{"name":"col","gecos":"a:b"}]}"#),
        case("relative shell fails", Root::Debian, r#"{"users":[{"name":"rel","shell":"bash"}]}"#),
        case("relative shell for an existing user fails", Root::Debian, r#"{"users":[{"name":"bin","shell":"bash"}]}"#),
        case("untouched files keep their missing final newline", Root::NoFinalNewline, r#"{"users":[{"name":"carol","noUserGroup":true}]}"#),
        case("rewritten files gain a final newline", Root::NoFinalNewline, r#"{"users":[{"name":"carol","groups":["sudo"]}]}"#),
        case("no account files at all", Root::Empty, r#"{"users":[{"name":"x1"},{"name":"x2","groups":["x1"],"passwordHash":"$6$x"}]}"#),
        case("missing primary group fails", Root::Debian, r#"{"users":[{"name":"tom","primaryGroup":"nosuch"}]}"#),
    ]
}

fn tools_usable() -> Result<(), String> {
    // The effective uid from /proc: no libc dependency for one test.
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status.lines().find(|line| line.starts_with("Uid:")).is_some_and(|line| line.split_whitespace().nth(2) == Some("0"));
    if !root {
        return Err("not root".into());
    }
    for tool in ["useradd", "usermod", "userdel", "groupadd", "groupmod", "groupdel"] {
        if !Path::new(SBIN).join(tool).exists() {
            return Err(format!("{SBIN}/{tool} is missing"));
        }
    }
    Ok(())
}

fn scratch(name: &str) -> PathBuf {
    let slug: String = name.chars().map(|character| if character.is_ascii_alphanumeric() { character } else { '-' }).collect();
    keel_test_support::scratch_dir(env!("CARGO_TARGET_TMPDIR"), &slug)
}

fn keel_file(plan: &UsersPlan, etc: &EtcFiles, name: &str) -> Option<String> {
    if let Some(file) = plan.etc_files.iter().find(|file| file.name == name) {
        return Some(file.contents.clone());
    }
    match name {
        "passwd" => Some(etc.passwd.clone()),
        "shadow" => etc.shadow.clone(),
        "group" => Some(etc.group.clone()),
        _ => etc.gshadow.clone(),
    }
}

/// Everything the tools (or Ignition) left in `dir` that keel's plan speaks of; one message a
/// difference.
fn differences(case: &Case, dir: &Path, etc: &EtcFiles, plan: &UsersPlan) -> Vec<String> {
    let mut found = Vec::new();
    for name in FILES {
        let absent_is_empty = matches!(name, "passwd" | "group");
        let tools_text = fs::read_to_string(dir.join("etc").join(name)).ok().or_else(|| absent_is_empty.then(String::new));
        let keel_text = keel_file(plan, etc, name);
        if tools_text != keel_text {
            found.push(format!(
                "{}: {name} differs\n--- tools\n{}--- keel\n{}",
                case.name,
                tools_text.unwrap_or_default(),
                keel_text.unwrap_or_default()
            ));
        }
    }
    let owner_and_mode = |path: &Path| fs::metadata(path).map(|meta| (meta.uid(), meta.gid(), meta.mode() & 0o7777));
    // A home of a user deleted later in the same config is gone by now.
    for home in plan.homes.iter().filter(|home| !plan.removed_homes.iter().any(|removed| removed.path == home.path)) {
        match owner_and_mode(&dir.join(home.path.trim_start_matches('/'))) {
            Ok(found_home) if found_home == (home.uid, home.gid, home.mode) => {}
            other => found.push(format!("{}: home {} is {other:?}, keel plans {home:?}", case.name, home.path)),
        }
    }
    for moved in &plan.home_moves {
        if !dir.join(moved.to.trim_start_matches('/')).is_dir() {
            found.push(format!("{}: usermod did not move the home to {}", case.name, moved.to));
        }
    }
    for removed in &plan.removed_homes {
        if dir.join(removed.path.trim_start_matches('/')).exists() {
            found.push(format!("{}: userdel left {}", case.name, removed.path));
        }
    }
    found
}

/// Runs every case through `runner` (which builds the root's state in the directory it is
/// given) and compares with keel; returns (compared, failed on both sides, differences).
fn compare_all(
    label: &str,
    runner: &dyn Fn(&Case, &Path, &Passwd) -> Result<(), String>,
    expected_to_differ: &dyn Fn(&Case, &EtcFiles, &Passwd) -> bool,
) -> (usize, usize, Vec<String>) {
    let mut failures = Vec::new();
    let (mut compared, mut both_failed) = (0, 0);
    for case in &cases() {
        let etc = etc_files(case.root);
        let passwd: Passwd = serde_json::from_str(case.config).unwrap_or_else(|error| panic!("{}: {error}", case.name));
        let dir = scratch(&format!("{label}-{}", case.name));
        write_root(&dir, &etc, case.existing_homes);
        let tools = runner(case, &dir, &passwd);
        let keel = plan_users_on(&passwd, &etc, DAY);
        match (&tools, &keel) {
            (Err(_), Ok(_)) if expected_to_differ(case, &etc, &passwd) => eprintln!("{}: differs as documented", case.name),
            (Err(tool_error), Ok(_)) => failures.push(format!("{}: the tools failed ({tool_error}) but keel planned", case.name)),
            (Ok(()), Err(keel_error)) => failures.push(format!("{}: keel failed ({}) but the tools succeeded", case.name, keel_error.message)),
            (Err(tool_error), Err(keel_error)) => {
                both_failed += 1;
                eprintln!("{}: both fail\n  tools: {}  keel: {}", case.name, tool_error.trim_end(), keel_error.message);
            }
            (Ok(()), Ok(plan)) => {
                compared += 1;
                failures.extend(differences(case, &dir, &etc, plan));
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }
    (compared, both_failed, failures)
}

#[test]
fn keel_writes_what_shadow_utils_writes() {
    if let Err(reason) = tools_usable() {
        eprintln!("SKIPPED keel_writes_what_shadow_utils_writes: {reason}");
        return;
    }
    let (compared, both_failed, failures) = compare_all("tools", &|_, dir, passwd| run_like_ignition(dir, passwd), &|_, _, _| false);
    eprintln!("{compared} cases compared file by file, {both_failed} failed in both");
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases().len(), failures.join("\n"));
}

const IGNITION: &str = "/usr/lib/dracut/modules.d/30ignition/ignition";

/// The real Ignition 2.14 files stage on the root: a config cache holding the case's passwd
/// section. Debian builds Ignition to relabel for SELinux after the users step: the root gets an
/// SELinux config and PATH a `setfiles` that does nothing.
///
/// Ignition fails when a user it modified has no home (its relabel bookkeeping lstats every
/// configured user's home), so the existing users get theirs first, as on a real root.
fn run_ignition(dir: &Path, config: &str) -> Result<(), String> {
    for fields in fs::read_to_string(dir.join("etc/passwd")).unwrap_or_default().lines().map(|line| line.split(':').collect::<Vec<_>>()) {
        if let [_, _, uid, gid, _, home, _] = fields[..] {
            let path = dir.join(home.trim_start_matches('/'));
            if !path.exists() {
                fs::create_dir_all(&path).map_err(|error| error.to_string())?;
                std::os::unix::fs::chown(&path, uid.parse().ok(), gid.parse().ok()).map_err(|error| error.to_string())?;
            }
        }
    }
    let work = dir.with_extension("ignition");
    fs::create_dir_all(&work).map_err(|error| error.to_string())?;
    let setfiles = work.join("setfiles");
    fs::write(&setfiles, "#!/bin/sh\ncat >/dev/null\n").map_err(|error| error.to_string())?;
    fs::set_permissions(&setfiles, fs::Permissions::from_mode(0o755)).map_err(|error| error.to_string())?;
    fs::create_dir_all(dir.join("etc/selinux")).map_err(|error| error.to_string())?;
    fs::write(dir.join("etc/selinux/config"), "SELINUX=disabled\nSELINUXTYPE=targeted\n").map_err(|error| error.to_string())?;
    let cache = work.join("config.json");
    fs::write(&cache, format!(r#"{{"ignition":{{"version":"3.3.0"}},"passwd":{config}}}"#)).map_err(|error| error.to_string())?;
    let output = Command::new(IGNITION)
        .args(["-platform", "file", "-stage", "files", "-log-to-stdout", "-root"])
        .arg(dir)
        .arg("-config-cache")
        .arg(&cache)
        .arg("-state-file")
        .arg(work.join("state"))
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_string())
        .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", work.display()))
        .output()
        .map_err(|error| format!("ignition: {error}"))?;
    let _ = fs::remove_dir_all(&work);
    let _ = fs::remove_dir_all(dir.join("etc/selinux"));
    if output.status.success() {
        Ok(())
    } else {
        let log = String::from_utf8_lossy(&output.stdout);
        Err(log.lines().filter(|line| line.starts_with("CRITICAL")).collect::<Vec<_>>().join("\n"))
    }
}

/// Ignition 2.14 runs groupadd for a group that exists, which fails; keel runs groupmod as
/// Ignition 2.25 does (see the users module's docs).
fn names_an_existing_group(etc: &EtcFiles, passwd: &Passwd) -> bool {
    passwd.groups.iter().flatten().any(|group| group.should_exist != Some(false) && names(&etc.group, 4).contains(&group.name))
}

#[test]
fn keel_matches_ignition_2_14() {
    if let Err(reason) = tools_usable().and_then(|()| if Path::new(IGNITION).exists() { Ok(()) } else { Err(format!("{IGNITION} is missing")) }) {
        eprintln!("SKIPPED keel_matches_ignition_2_14: {reason}");
        return;
    }
    let (compared, both_failed, mut failures) =
        compare_all("ignition", &|case, dir, _| run_ignition(dir, case.config), &|_, etc, passwd| names_an_existing_group(etc, passwd));
    // Ignition also wrote the SSH keys: compare them with the plan.
    for case in cases().into_iter().filter(|case| case.config.contains("sshAuthorizedKeys")) {
        let etc = etc_files(case.root);
        let dir = scratch(&format!("ignition-keys-{}", case.name));
        write_root(&dir, &etc, case.existing_homes);
        run_ignition(&dir, case.config).unwrap();
        let plan = plan_users_on(&serde_json::from_str(case.config).unwrap(), &etc, DAY).unwrap();
        assert!(!plan.authorized_keys.is_empty());
        for keys in &plan.authorized_keys {
            let ssh = dir.join(keys.home.trim_start_matches('/')).join(".ssh");
            let file = ssh.join("authorized_keys.d/ignition");
            let meta = |path: &Path| fs::metadata(path).map(|meta| (meta.uid(), meta.gid(), meta.mode() & 0o7777)).ok();
            if fs::read_to_string(&file).ok().as_deref() != Some(keys.contents.as_str()) {
                failures.push(format!(
                    "{}: {} holds {:?}, keel plans {:?}",
                    case.name,
                    file.display(),
                    fs::read_to_string(&file).ok(),
                    keys.contents
                ));
            }
            for (path, mode) in [(file.clone(), 0o600), (ssh.join("authorized_keys.d"), 0o700), (ssh.clone(), 0o700)] {
                if meta(&path) != Some((keys.uid, keys.gid, mode)) {
                    failures.push(format!("{}: {} is {:?}, expected {}:{} {mode:o}", case.name, path.display(), meta(&path), keys.uid, keys.gid));
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }
    eprintln!("{compared} cases compared file by file with Ignition 2.14, {both_failed} failed in both");
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
}
