//! Users and groups written natively into a root's passwd, shadow, group and gshadow, with the
//! results shadow-utils' `useradd --root` / `usermod` / `userdel` / `groupadd` give when Ignition
//! runs them. Pure: it reads the files' text and returns their new text and what else the
//! users need (home directories, SSH keys); the apply module does the writing.
//!
//! Ignition's order is kept: every group first (create, or delete for `shouldExist: false`), then
//! each user in config order (create / modify / delete, then its password, then its SSH keys), so
//! a later entry sees what an earlier one did, exactly as the tools would have seen the files.
//! Each step is the tool's behaviour with the flags Ignition passes (internal/exec/util/passwd.go);
//! the shadow-utils rules (id allocation, default fields, member lists) are those of shadow 4.13
//! as Debian builds it, checked line for line by `tests/users_shadow_utils.rs`.
//!
//! Dates: shadow's "last change" field is today in days since the epoch, as shadow-utils writes
//! it, and like shadow-utils a valid `SOURCE_DATE_EPOCH` (not in the future) replaces the clock,
//! which makes builds of a root reproducible. [`plan_users_on`] takes the day explicitly.
//!
//! What shadow-utils does besides the four files is returned as data or left out (see the report
//! in the module's tests): homes to create, move, re-own and remove are planned here; lastlog,
//! faillog, mail spools, /etc/subuid and /etc/subgid are not touched.

mod login_defs;
mod table;

use crate::config::latest::{Group, Passwd, User};
use login_defs::LoginDefs;
use std::time::{SystemTime, UNIX_EPOCH};
use table::{members, parse_id, Kind, Table};

/// The root's account files as they are before the apply (absent files are empty strings / None).
#[derive(Clone, Debug, Default)]
pub struct EtcFiles {
    pub passwd: String,
    pub shadow: Option<String>,
    pub group: String,
    pub gshadow: Option<String>,
    /// `/etc/login.defs`: UID_MIN, GID_MIN, SYS_UID_MIN, HOME_MODE, UMASK, CREATE_HOME, USERGROUPS_ENAB...
    pub login_defs: Option<String>,
}

/// One account file's new contents, relative to /etc (`passwd`, `shadow`, `group`, `gshadow`).
/// An existing file keeps its mode and owner; a new one gets `mode_if_new`, owned by root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcFile {
    pub name: &'static str,
    pub contents: String,
    pub mode_if_new: u32,
}

/// A home directory to create (when it does not exist yet), filled from /etc/skel when `copy_skel`.
/// Missing parents are created 0755 root:root, as useradd does; an existing home is left alone
/// (useradd neither re-owns it nor copies the skeleton into it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub copy_skel: bool,
}

/// `~/.ssh/authorized_keys.d/ignition` for one user: directories 0700, file 0600, owned by the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizedKeys {
    pub home: String,
    pub uid: u32,
    pub gid: u32,
    pub contents: String,
}

/// `usermod --home TO --move-home`: rename `from` to `to`. usermod fails when `to` exists, and
/// does nothing when `from` does not exist or is not a directory (the latter is an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HomeMove {
    pub from: String,
    pub to: String,
}

/// usermod's ownership fix after a uid or primary gid change: in the tree at `path`, whatever
/// `old_uid` owns goes to `new_uid` and whatever `old_gid` owns goes to `new_gid` (`None`: that id
/// did not change). Without a move, usermod only does it when `path` is owned by the old or new uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HomeReown {
    pub path: String,
    pub old_uid: u32,
    pub new_uid: Option<u32>,
    pub old_gid: u32,
    pub new_gid: Option<u32>,
}

/// `userdel --remove`: remove the tree at `path` if it exists. userdel refuses (and Ignition then
/// fails) when it is not owned by `uid`, or when another user's home lies in it
/// (`holds_home_of`); a missing home is not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedHome {
    pub path: String,
    pub uid: u32,
    pub holds_home_of: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsersPlan {
    /// Only the files that change.
    pub etc_files: Vec<EtcFile>,
    pub homes: Vec<Home>,
    pub authorized_keys: Vec<AuthorizedKeys>,
    /// In config order, before `home_reowns` of the same user.
    pub home_moves: Vec<HomeMove>,
    pub home_reowns: Vec<HomeReown>,
    pub removed_homes: Vec<RemovedHome>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct UsersError {
    pub message: String,
}

impl std::fmt::Display for UsersError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for UsersError {}

fn error(message: impl Into<String>) -> UsersError {
    UsersError { message: message.into() }
}

// Field positions in the four files.
const NAME: usize = 0;
const PASSWORD: usize = 1;
const PW_UID: usize = 2;
const PW_GID: usize = 3;
const PW_GECOS: usize = 4;
const PW_HOME: usize = 5;
const PW_SHELL: usize = 6;
const SP_LAST_CHANGE: usize = 2;
const GR_GID: usize = 2;
const GR_MEMBERS: usize = 3;
const SG_ADMINS: usize = 2;
const SG_MEMBERS: usize = 3;

/// The placeholder that says "the password is in the shadow file".
const SHADOWED: &str = "x";
/// What Ignition passes for a user or group without a password: no password login.
const NO_PASSWORD: &str = "*";
/// useradd's built-ins, used because /etc/default/useradd is not read (see the module docs).
const DEFAULT_HOME_BASE: &str = "/home";
const DEFAULT_SHELL: &str = "/bin/bash";
/// Debian's useradd puts a user without a private group into `users` (GROUP=100).
const DEFAULT_GROUP_ID: u32 = 100;
const DEFAULT_UMASK: i64 = 0o022;
/// utmp's name field: useradd's limit for user names; Debian builds groups with the same limit.
const NAME_MAX_LENGTH: usize = 32;

pub fn plan_users(passwd: &Passwd, etc: &EtcFiles) -> Result<UsersPlan, UsersError> {
    plan_users_on(passwd, etc, today())
}

/// Days since the epoch as shadow-utils' gettime gives them.
fn today() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    let source_date_epoch = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|value| value.parse::<u64>().ok()).filter(|epoch| *epoch <= now);
    i64::try_from(source_date_epoch.unwrap_or(now) / 86_400).unwrap_or(i64::MAX)
}

/// [`plan_users`] with "today" given, in days since 1970-01-01.
pub fn plan_users_on(passwd: &Passwd, etc: &EtcFiles, today: i64) -> Result<UsersPlan, UsersError> {
    let mut accounts = Accounts::parse(etc, today);
    let mut plan = UsersPlan::default();
    for group in passwd.groups.iter().flatten() {
        accounts.ensure_group(group).map_err(|cause| error(format!("group {:?}: {}", group.name, cause.message)))?;
    }
    for user in passwd.users.iter().flatten() {
        accounts.ensure_user(user, &mut plan).map_err(|cause| error(format!("user {:?}: {}", user.name, cause.message)))?;
    }
    plan.etc_files = accounts.changed_files(etc);
    Ok(plan)
}

/// The uid of a user named in passwd text (for file owners given by name).
pub fn uid_by_name(passwd: &str, name: &str) -> Option<u32> {
    let table = Table::parse(Kind::Passwd, passwd);
    table.find(name).and_then(|entry| table.field(entry, PW_UID)).and_then(parse_id)
}

/// The gid of a group named in group text.
pub fn gid_by_name(group: &str, name: &str) -> Option<u32> {
    let table = Table::parse(Kind::Group, group);
    table.find(name).and_then(|entry| table.field(entry, GR_GID)).and_then(parse_id)
}

/// Ignition passes an unset and an empty string alike: as no flag.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|text| !text.is_empty())
}

/// The shadow-utils check on every text that lands in a field: no field separator, no newline.
fn check_field(what: &str, value: &str) -> Result<(), UsersError> {
    if value.contains([':', '\n']) {
        return Err(error(format!("the {what} may not contain ':' or a newline")));
    }
    Ok(())
}

/// Same as [`check_field`], but the message never repeats the value: it is a password hash.
fn check_password(value: &str) -> Result<(), UsersError> {
    check_field("password hash", value)
}

fn check_absolute(what: &str, value: &str) -> Result<(), UsersError> {
    check_field(what, value)?;
    if !value.starts_with('/') {
        return Err(error(format!("the {what} {value:?} is not an absolute path")));
    }
    Ok(())
}

fn check_shell(shell: &str) -> Result<(), UsersError> {
    check_field("shell", shell)?;
    if !shell.starts_with(['/', '*']) {
        return Err(error(format!("invalid shell {shell:?}: it must be an absolute path")));
    }
    Ok(())
}

/// The name rule of Debian's shadow-utils (its relaxed-usernames patch, which replaces upstream's
/// `[A-Za-z0-9_.][A-Za-z0-9_.-]*$?`): at most 32 bytes, not starting with `-`, `+` or `~`, and no
/// `:`, `,` or white space anywhere. Anything else goes, `.` and all-digit names included.
fn valid_name(name: &str) -> bool {
    let forbidden = |byte: &u8| matches!(byte, b':' | b',' | b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    !name.is_empty() && name.len() <= NAME_MAX_LENGTH && !name.starts_with(['-', '+', '~']) && !name.as_bytes().iter().any(forbidden)
}

/// A uid or gid from the config, as the tools accept it on their command line.
fn config_id(what: &str, value: i64) -> Result<u32, UsersError> {
    u32::try_from(value).ok().filter(|id| *id != u32::MAX).ok_or_else(|| error(format!("invalid {what} {value}")))
}

/// A number field of shadow: -1 means unset and is written as nothing.
fn day_field(value: i64) -> String {
    if value == -1 {
        String::new()
    } else {
        value.to_string()
    }
}

/// The id ranges shadow-utils allocates from (find_new_uid / find_new_gid).
#[derive(Clone, Copy)]
struct IdRange {
    min: u32,
    max: u32,
    /// A requested id (a user-private group's gid = the uid) may lie below `min` for system accounts.
    preferred_min: u32,
}

#[derive(Clone, Copy)]
enum IdKind {
    User,
    Group,
}

impl IdKind {
    fn keys(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            IdKind::User => ("UID_MIN", "UID_MAX", "SYS_UID_MIN", "SYS_UID_MAX"),
            IdKind::Group => ("GID_MIN", "GID_MAX", "SYS_GID_MIN", "SYS_GID_MAX"),
        }
    }
}

fn id_range(defs: &LoginDefs, kind: IdKind, system: bool) -> Result<IdRange, UsersError> {
    let (min_key, max_key, sys_min_key, sys_max_key) = kind.keys();
    let range = if system {
        let min = defs.id(sys_min_key, 101).max(1);
        let max = defs.id(sys_max_key, defs.id(min_key, 1000).wrapping_sub(1));
        IdRange { min, max, preferred_min: 1 }
    } else {
        let min = defs.id(min_key, 1000);
        IdRange { min, max: defs.id(max_key, 60000), preferred_min: min }
    };
    if range.max < range.min {
        return Err(error(format!(
            "invalid login.defs: {} > {}",
            if system { sys_min_key } else { min_key },
            if system { sys_max_key } else { max_key }
        )));
    }
    Ok(range)
}

/// The next free id the way shadow-utils picks it: normal accounts count up from one past the
/// highest id in use in the range, system accounts down from one below the lowest; when that
/// runs out, the whole range is searched again from its start.
fn allocate_id(used: &[u32], range: IdRange, system: bool) -> Option<u32> {
    let in_range: std::collections::BTreeSet<u32> = used.iter().copied().filter(|id| (range.min..=range.max).contains(id)).collect();
    let free_from = |start: u32, upward: bool| -> Option<u32> {
        let mut candidate = start;
        loop {
            if !in_range.contains(&candidate) {
                return Some(candidate);
            }
            candidate = if upward {
                candidate.checked_add(1).filter(|next| *next <= range.max)?
            } else {
                candidate.checked_sub(1).filter(|next| *next >= range.min)?
            };
        }
    };
    if system {
        let start = in_range.first().map_or(range.max, |lowest| lowest.wrapping_sub(1));
        let start = if start < range.min || start > range.max { range.max } else { start };
        free_from(start, false).or_else(|| if start != range.max { free_from(range.max, false) } else { None })
    } else {
        let start = in_range.last().map_or(range.min, |highest| highest.saturating_add(1));
        let start = if start > range.max { range.min } else { start };
        free_from(start, true).or_else(|| if start != range.min { free_from(range.min, true) } else { None })
    }
}

struct Accounts {
    passwd: Table,
    shadow: Option<Table>,
    group: Table,
    gshadow: Option<Table>,
    defs: LoginDefs,
    today: i64,
}

impl Accounts {
    fn parse(etc: &EtcFiles, today: i64) -> Accounts {
        Accounts {
            passwd: Table::parse(Kind::Passwd, &etc.passwd),
            shadow: etc.shadow.as_deref().map(|text| Table::parse(Kind::Shadow, text)),
            group: Table::parse(Kind::Group, &etc.group),
            gshadow: etc.gshadow.as_deref().map(|text| Table::parse(Kind::Gshadow, text)),
            defs: LoginDefs::parse(etc.login_defs.as_deref().unwrap_or_default()),
            today,
        }
    }

    fn changed_files(&self, etc: &EtcFiles) -> Vec<EtcFile> {
        let candidates = [
            ("passwd", Some(etc.passwd.as_str()), Some(&self.passwd), 0o644),
            ("shadow", etc.shadow.as_deref(), self.shadow.as_ref(), 0o640),
            ("group", Some(etc.group.as_str()), Some(&self.group), 0o644),
            ("gshadow", etc.gshadow.as_deref(), self.gshadow.as_ref(), 0o640),
        ];
        candidates
            .into_iter()
            .filter_map(|(name, before, table, mode_if_new)| {
                let contents = table?.render();
                (Some(contents.as_str()) != before).then_some(EtcFile { name, contents, mode_if_new })
            })
            .collect()
    }

    /// The last-change day useradd and usermod write: day 0 would force a password change, so
    /// they write "unset" instead.
    fn last_change(&self) -> String {
        day_field(if self.today == 0 { -1 } else { self.today })
    }

    fn group_ids(&self) -> Vec<u32> {
        self.group.ids(GR_GID).map(|(_, _, gid)| gid).collect()
    }

    fn user_ids(&self) -> Vec<u32> {
        self.passwd.ids(PW_UID).map(|(_, _, uid)| uid).collect()
    }

    /// A group given as a name or as a number, the way the tools' `-g` and `-G` take it.
    fn resolve_group(&self, name_or_gid: &str) -> Result<(String, u32), UsersError> {
        let found = match parse_id(name_or_gid) {
            Some(gid) if !name_or_gid.is_empty() => self.group.ids(GR_GID).find(|(_, _, id)| *id == gid),
            _ => self.group.find(name_or_gid).and_then(|entry| self.group.ids(GR_GID).find(|(index, _, _)| *index == entry)),
        };
        found.map(|(_, name, gid)| (name.to_string(), gid)).ok_or_else(|| error(format!("group {name_or_gid:?} does not exist")))
    }

    fn resolve_groups(&self, names: &[String]) -> Result<Vec<String>, UsersError> {
        names.iter().map(|name| self.resolve_group(name).map(|(found, _)| found)).collect()
    }

    // ---- groups

    fn ensure_group(&mut self, group: &Group) -> Result<(), UsersError> {
        let exists = self.group.find(&group.name).is_some();
        if group.should_exist == Some(false) {
            return if exists { self.delete_group(&group.name) } else { Ok(()) };
        }
        let gid = group.gid.map(|gid| config_id("gid", gid)).transpose()?;
        let password = non_empty(&group.password_hash);
        if let Some(password) = password {
            check_password(password)?;
        }
        if exists {
            self.modify_group(&group.name, gid, password)
        } else {
            self.add_group(&group.name, gid, password.unwrap_or(NO_PASSWORD), group.system == Some(true))
        }
    }

    /// groupadd --password P [--gid N] [--system] NAME
    fn add_group(&mut self, name: &str, gid: Option<u32>, password: &str, system: bool) -> Result<(), UsersError> {
        if !valid_name(name) {
            return Err(error("invalid group name"));
        }
        let gid = match gid {
            Some(gid) if self.group_ids().contains(&gid) => return Err(error(format!("GID {gid} already exists"))),
            Some(gid) => gid,
            None => {
                let range = id_range(&self.defs, IdKind::Group, system)?;
                allocate_id(&self.group_ids(), range, system).ok_or_else(|| error("no free GID left"))?
            }
        };
        let in_group = if self.gshadow.is_some() { SHADOWED } else { password };
        upsert(&mut self.group, vec![name.to_string(), in_group.to_string(), gid.to_string(), String::new()]);
        if let Some(gshadow) = &mut self.gshadow {
            upsert(gshadow, vec![name.to_string(), password.to_string(), String::new(), String::new()]);
        }
        Ok(())
    }

    /// groupmod [--gid N] [--password P] NAME: what newer Ignition runs for a group that exists
    /// (Ignition 2.14 runs groupadd and fails; see the module tests for why keel does not).
    fn modify_group(&mut self, name: &str, gid: Option<u32>, password: Option<&str>) -> Result<(), UsersError> {
        let entry = self.group.find(name).ok_or_else(|| error("group vanished"))?;
        let old_gid = self.group.field(entry, GR_GID).and_then(parse_id).ok_or_else(|| error("unreadable group entry"))?;
        if let Some(gid) = gid.filter(|gid| *gid != old_gid) {
            if self.group_ids().contains(&gid) {
                return Err(error(format!("GID {gid} already exists")));
            }
            self.group.set_field(entry, GR_GID, &gid.to_string());
            // groupmod moves the users whose primary group this was along with it.
            for user in self.passwd.entry_indexes() {
                if self.passwd.field(user, PW_GID).and_then(parse_id) == Some(old_gid) {
                    self.passwd.set_field(user, PW_GID, &gid.to_string());
                }
            }
        }
        if let Some(password) = password {
            let shadowed = self.group.field(entry, PASSWORD) == Some(SHADOWED);
            if self.gshadow.is_none() || !shadowed {
                self.group.set_field(entry, PASSWORD, password);
            }
            let group_members = self.group.field(entry, GR_MEMBERS).unwrap_or_default().to_string();
            if let Some(gshadow) = &mut self.gshadow {
                match gshadow.find(name) {
                    Some(shadow_entry) => gshadow.set_field(shadow_entry, PASSWORD, password),
                    None if shadowed => gshadow.append(vec![name.to_string(), password.to_string(), String::new(), group_members]),
                    None => {}
                }
            }
        }
        Ok(())
    }

    /// groupdel NAME: refused while the group is some user's primary group.
    fn delete_group(&mut self, name: &str) -> Result<(), UsersError> {
        let entry = self.group.find(name).ok_or_else(|| error("group vanished"))?;
        if let Some(gid) = self.group.field(entry, GR_GID).and_then(parse_id)
            && let Some((_, user, _)) = self.passwd.ids(PW_GID).find(|(_, _, user_gid)| *user_gid == gid)
        {
            return Err(error(format!("cannot remove the primary group of user {user:?}")));
        }
        self.group.remove(entry);
        if let Some(gshadow) = &mut self.gshadow {
            gshadow.remove_named(name);
        }
        Ok(())
    }

    // ---- users

    fn ensure_user(&mut self, user: &User, plan: &mut UsersPlan) -> Result<(), UsersError> {
        let existing = self.passwd.find(&user.name);
        if user.should_exist == Some(false) {
            if let Some(entry) = existing {
                self.delete_user(&user.name, entry, plan)?;
            }
            return Ok(());
        }
        if let Some(password) = &user.password_hash {
            check_password(password)?;
        }
        match existing {
            Some(entry) => self.modify_user(user, entry, plan)?,
            None => self.add_user(user, plan)?,
        }
        // Ignition then sets the password again with usermod, which also stamps the change day.
        if let Some(password) = &user.password_hash {
            self.set_password(&user.name, if password.is_empty() { NO_PASSWORD } else { password });
        }
        self.plan_authorized_keys(user, plan)
    }

    /// useradd --root R [--home-dir D] --create-home|--no-create-home [--no-user-group] [--system]
    /// [--no-log-init] --password P [--uid U] [--comment C] [--gid G] [--groups A,B] [--shell S] NAME
    fn add_user(&mut self, user: &User, plan: &mut UsersPlan) -> Result<(), UsersError> {
        let name = user.name.as_str();
        if !valid_name(name) {
            return Err(error("invalid user name"));
        }
        let system = user.system == Some(true);
        let home = match non_empty(&user.home_dir) {
            Some(home) => {
                check_absolute("home directory", home)?;
                home.to_string()
            }
            None => format!("{DEFAULT_HOME_BASE}/{name}"),
        };
        let gecos = non_empty(&user.gecos).unwrap_or_default();
        check_field("comment", gecos)?;
        let shell = non_empty(&user.shell).unwrap_or(DEFAULT_SHELL);
        check_shell(shell)?;
        let password = user.password_hash.as_deref().filter(|password| !password.is_empty()).unwrap_or(NO_PASSWORD);
        let primary_group = non_empty(&user.primary_group).map(|group| self.resolve_group(group)).transpose()?;
        let supplementary = self.resolve_groups(user.groups.as_deref().unwrap_or_default())?;
        let private_group = primary_group.is_none() && user.no_user_group != Some(true) && self.defs.flag("USERGROUPS_ENAB");
        if private_group && self.group.find(name).is_some() {
            return Err(error(format!("group {name:?} exists: name it as the primary group to use it")));
        }

        let uid = match user.uid {
            Some(uid) => {
                let uid = config_id("uid", uid)?;
                if self.user_ids().contains(&uid) {
                    return Err(error(format!("UID {uid} is not unique")));
                }
                uid
            }
            None => allocate_id(&self.user_ids(), id_range(&self.defs, IdKind::User, system)?, system).ok_or_else(|| error("no free UID left"))?,
        };
        let gid = if private_group {
            let range = id_range(&self.defs, IdKind::Group, system)?;
            let used = self.group_ids();
            let preferred = Some(uid).filter(|uid| (range.preferred_min..=range.max).contains(uid) && !used.contains(uid));
            let gid = preferred.or_else(|| allocate_id(&used, range, system)).ok_or_else(|| error("no free GID left"))?;
            let in_group = if self.gshadow.is_some() { SHADOWED } else { "!" };
            upsert(&mut self.group, vec![name.to_string(), in_group.to_string(), gid.to_string(), String::new()]);
            if let Some(gshadow) = &mut self.gshadow {
                upsert(gshadow, vec![name.to_string(), "!".to_string(), String::new(), String::new()]);
            }
            gid
        } else {
            primary_group.map_or(DEFAULT_GROUP_ID, |(_, gid)| gid)
        };

        let in_passwd = if self.shadow.is_some() { SHADOWED } else { password };
        self.passwd.append(vec![
            name.to_string(),
            in_passwd.to_string(),
            uid.to_string(),
            gid.to_string(),
            gecos.to_string(),
            home.clone(),
            shell.to_string(),
        ]);
        let last_change = self.last_change();
        // System accounts get no password ageing; the others take login.defs' (unset: -1).
        let age = |key: &str| if system { String::new() } else { day_field(self.defs.number(key, -1)) };
        let shadow_entry = vec![
            name.to_string(),
            password.to_string(),
            last_change,
            age("PASS_MIN_DAYS"),
            age("PASS_MAX_DAYS"),
            age("PASS_WARN_AGE"),
            String::new(),
            String::new(),
            String::new(),
        ];
        if let Some(shadow) = &mut self.shadow {
            upsert(shadow, shadow_entry);
        }
        self.add_to_groups(name, &supplementary);

        if user.no_create_home != Some(true) {
            let umask = self.defs.number("UMASK", DEFAULT_UMASK);
            let mode = self.defs.number("HOME_MODE", 0o777 & !umask);
            plan.homes.push(Home { path: home, uid, gid, mode: (mode & 0o7777) as u32, copy_skel: true });
        }
        Ok(())
    }

    /// useradd's `--groups`: the user joins each group's member list, in group and gshadow.
    fn add_to_groups(&mut self, name: &str, groups: &[String]) {
        let wanted = |group: &str| groups.iter().any(|wanted| wanted == group);
        edit_lists(&mut self.group, GR_MEMBERS, |group, list| wanted(group).then(|| with_member(list, name)));
        if let Some(gshadow) = &mut self.gshadow {
            let group_table = &self.group;
            edit_lists(gshadow, SG_MEMBERS, |group, list| (wanted(group) && group_table.find(group).is_some()).then(|| with_member(list, name)));
        }
    }

    /// usermod --root R [--home D --move-home] [--password P] [--uid U] [--comment C] [--gid G]
    /// [--groups A,B] [--shell S] NAME. usermod drops every option whose value is already there.
    fn modify_user(&mut self, user: &User, entry: usize, plan: &mut UsersPlan) -> Result<(), UsersError> {
        let field = |index: usize| self.passwd.field(entry, index).unwrap_or_default().to_string();
        let (old_home, old_gecos, old_shell) = (field(PW_HOME), field(PW_GECOS), field(PW_SHELL));
        let old_uid = parse_id(&field(PW_UID)).ok_or_else(|| error("unreadable passwd entry"))?;
        let old_gid = parse_id(&field(PW_GID)).ok_or_else(|| error("unreadable passwd entry"))?;

        let new_home =
            non_empty(&user.home_dir).map(|home| check_absolute("home directory", home).map(|()| home)).transpose()?.filter(|home| *home != old_home);
        let new_uid = user.uid.map(|uid| config_id("uid", uid)).transpose()?.filter(|uid| *uid != old_uid);
        if let Some(uid) = new_uid
            && self.user_ids().contains(&uid)
        {
            return Err(error(format!("UID {uid} already exists")));
        }
        let new_gecos =
            non_empty(&user.gecos).map(|gecos| check_field("comment", gecos).map(|()| gecos)).transpose()?.filter(|gecos| *gecos != old_gecos);
        let new_gid =
            non_empty(&user.primary_group).map(|group| self.resolve_group(group)).transpose()?.map(|(_, gid)| gid).filter(|gid| *gid != old_gid);
        let supplementary = user.groups.as_deref().filter(|groups| !groups.is_empty()).map(|groups| self.resolve_groups(groups)).transpose()?;
        let new_shell = non_empty(&user.shell).map(|shell| check_shell(shell).map(|()| shell)).transpose()?.filter(|shell| *shell != old_shell);

        if let Some(uid) = new_uid {
            self.passwd.set_field(entry, PW_UID, &uid.to_string());
        }
        if let Some(gid) = new_gid {
            self.passwd.set_field(entry, PW_GID, &gid.to_string());
        }
        if let Some(gecos) = new_gecos {
            self.passwd.set_field(entry, PW_GECOS, gecos);
        }
        if let Some(home) = new_home {
            // usermod compares before it trims one trailing slash off the new home.
            let trimmed = if home.len() > 1 { home.strip_suffix('/').unwrap_or(home) } else { home };
            self.passwd.set_field(entry, PW_HOME, trimmed);
            plan.home_moves.push(HomeMove { from: old_home.clone(), to: trimmed.to_string() });
        }
        if let Some(shell) = new_shell {
            self.passwd.set_field(entry, PW_SHELL, shell);
        }
        if let Some(groups) = supplementary {
            self.replace_groups(&user.name, &groups);
        }
        if new_uid.is_some() || new_gid.is_some() {
            let path = self.passwd.field(entry, PW_HOME).unwrap_or_default().to_string();
            plan.home_reowns.push(HomeReown { path, old_uid, new_uid, old_gid, new_gid });
        }
        Ok(())
    }

    /// usermod's `--groups` without `--append`: the user's supplementary groups become exactly
    /// these, in group and gshadow (where an administrator keeps that role).
    fn replace_groups(&mut self, name: &str, groups: &[String]) {
        let replace = |group: &str, list: &str| {
            Some(if groups.iter().any(|wanted| wanted == group) { with_member(list, name) } else { without_member(list, name) })
        };
        edit_lists(&mut self.group, GR_MEMBERS, replace);
        if let Some(gshadow) = &mut self.gshadow {
            edit_lists(gshadow, SG_MEMBERS, replace);
        }
    }

    /// usermod --password P NAME: the hash goes to shadow (with today's change day) and stays out
    /// of passwd unless passwd held the password itself; a user shadowed in passwd but missing
    /// from shadow gets a shadow entry.
    fn set_password(&mut self, name: &str, password: &str) {
        let Some(entry) = self.passwd.find(name) else { return };
        let shadowed = self.passwd.field(entry, PASSWORD) == Some(SHADOWED);
        if self.shadow.is_none() || !shadowed {
            self.passwd.set_field(entry, PASSWORD, password);
        }
        let last_change = self.last_change();
        let age = |key: &str| day_field(self.defs.number(key, -1));
        let new_entry = vec![
            name.to_string(),
            password.to_string(),
            last_change.clone(),
            age("PASS_MIN_DAYS"),
            age("PASS_MAX_DAYS"),
            age("PASS_WARN_AGE"),
            String::new(),
            String::new(),
            String::new(),
        ];
        let Some(shadow) = &mut self.shadow else { return };
        match shadow.find(name) {
            Some(shadow_entry) => {
                shadow.set_field(shadow_entry, PASSWORD, password);
                shadow.set_field(shadow_entry, SP_LAST_CHANGE, &last_change);
            }
            None if shadowed => shadow.append(new_entry),
            None => {}
        }
    }

    /// userdel --remove NAME: the entries go, the user leaves every member and admin list, and
    /// (with USERGROUPS_ENAB) its private group goes too when nobody else uses it.
    fn delete_user(&mut self, name: &str, entry: usize, plan: &mut UsersPlan) -> Result<(), UsersError> {
        let uid = self.passwd.field(entry, PW_UID).and_then(parse_id).ok_or_else(|| error("unreadable passwd entry"))?;
        let gid = self.passwd.field(entry, PW_GID).and_then(parse_id).ok_or_else(|| error("unreadable passwd entry"))?;
        let home = self.passwd.field(entry, PW_HOME).unwrap_or_default().to_string();
        self.passwd.remove(entry);
        if let Some(shadow) = &mut self.shadow {
            shadow.remove_named(name);
        }
        let leave = |_: &str, list: &str| Some(without_member(list, name));
        edit_lists(&mut self.group, GR_MEMBERS, leave);
        if self.defs.flag("USERGROUPS_ENAB") {
            self.remove_private_group(name, gid);
        }
        if let Some(gshadow) = &mut self.gshadow {
            edit_lists(gshadow, SG_MEMBERS, leave);
            edit_lists(gshadow, SG_ADMINS, leave);
        }
        let holds_home_of = self.passwd.entry_indexes().into_iter().find_map(|other| {
            let other_home = self.passwd.field(other, PW_HOME)?;
            let rest = other_home.strip_prefix(home.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then(|| self.passwd.field(other, NAME).unwrap_or_default().to_string())
        });
        plan.removed_homes.push(RemovedHome { path: home, uid, holds_home_of });
        Ok(())
    }

    fn remove_private_group(&mut self, name: &str, gid: u32) {
        let Some(group_entry) = self.group.find(name) else { return };
        if self.group.field(group_entry, GR_GID).and_then(parse_id) != Some(gid) {
            return;
        }
        if !members(self.group.field(group_entry, GR_MEMBERS).unwrap_or_default()).is_empty() {
            return;
        }
        if self.passwd.ids(PW_GID).any(|(_, user, user_gid)| user != name && user_gid == gid) {
            return;
        }
        self.group.remove(group_entry);
        if let Some(gshadow) = &mut self.gshadow {
            gshadow.remove_named(name);
        }
    }

    /// Ignition joins the keys with newlines and makes sure the file ends with one; the home and
    /// owner are the user's as they are after the steps above.
    fn plan_authorized_keys(&self, user: &User, plan: &mut UsersPlan) -> Result<(), UsersError> {
        let keys = user.ssh_authorized_keys.as_deref().unwrap_or_default();
        if keys.is_empty() {
            return Ok(());
        }
        let entry = self.passwd.find(&user.name).ok_or_else(|| error("user vanished"))?;
        let uid = self.passwd.field(entry, PW_UID).and_then(parse_id).ok_or_else(|| error("unreadable passwd entry"))?;
        let gid = self.passwd.field(entry, PW_GID).and_then(parse_id).ok_or_else(|| error("unreadable passwd entry"))?;
        let home = self.passwd.field(entry, PW_HOME).unwrap_or_default().to_string();
        let mut contents = keys.join("\n");
        if !contents.ends_with('\n') {
            contents.push('\n');
        }
        plan.authorized_keys.push(AuthorizedKeys { home, uid, gid, contents });
        Ok(())
    }
}

/// commonio's update: an entry of that name is replaced in place, otherwise it is added.
fn upsert(table: &mut Table, fields: Vec<String>) {
    let Some(name) = fields.first().cloned() else { return };
    match table.find(&name) {
        Some(entry) => {
            for (index, value) in fields.iter().enumerate() {
                table.set_field(entry, index, value);
            }
        }
        None => table.append(fields),
    }
}

/// Rewrites one member-list field in every entry: `edit` gets the entry's name and its list and
/// returns the new list, or `None` to leave it. An unchanged list leaves the line untouched.
fn edit_lists(table: &mut Table, field: usize, mut edit: impl FnMut(&str, &str) -> Option<String>) {
    for entry in table.entry_indexes() {
        let (Some(group), Some(list)) = (table.field(entry, NAME), table.field(entry, field)) else { continue };
        if let Some(updated) = edit(group, list) {
            table.set_field(entry, field, &updated);
        }
    }
}

fn with_member(list: &str, name: &str) -> String {
    let mut names = members(list);
    if !names.iter().any(|member| member == name) {
        names.push(name.to_string());
    }
    names.join(",")
}

fn without_member(list: &str, name: &str) -> String {
    members(list).into_iter().filter(|member| member != name).collect::<Vec<_>>().join(",")
}
