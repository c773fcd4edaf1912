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
//! What shadow-utils does besides the four files is returned as data or left out: homes to create,
//! move, re-own and remove are planned here; lastlog, faillog, mail spools, /etc/subuid and
//! /etc/subgid, the `passwd-`-style backups and nscd are not touched. /etc/default/useradd gives
//! HOME, SHELL, GROUP and INACTIVE as useradd reads them (useradd_defaults.rs); a non-empty
//! EXPIRE there is refused, not ignored.
//!
//! Deliberate differences from Ignition 2.14 (both checked against its binary):
//! - for a group that already exists 2.14 runs groupadd, which fails, so a config naming an
//!   existing group (or a second run) cannot apply. keel does what Ignition does since 2.25:
//!   groupmod with the gid and a non-empty hash. (New groups keep 2.14's `--password "*"`, which
//!   2.25 dropped: gshadow gets `*`, not `!`.)
//! - after the users step Ignition lstats the home of every configured user that exists and is
//!   not `noCreateHome`, for SELinux relabelling, and fails the stage when it is missing (an
//!   existing user whose home was never made). That is no rule of accounts: keel plans on.

mod login_defs;
mod table;
mod useradd_defaults;

use crate::config::latest::{Group, Passwd, User};
use login_defs::LoginDefs;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use table::{members, parse_id, Kind, Table};
use useradd_defaults::UseraddDefaults;

/// The root's account files as they are before the apply (absent files are empty strings / None).
/// Its Debug, like [`EtcFile`]'s and [`AuthorizedKeys`]', shows sizes: the texts hold password
/// hashes and keys.
#[derive(Clone, Default)]
pub struct EtcFiles {
    pub passwd: String,
    pub shadow: Option<String>,
    pub group: String,
    pub gshadow: Option<String>,
    /// `/etc/login.defs`: UID_MIN, GID_MIN, SYS_UID_MIN, HOME_MODE, UMASK, CREATE_HOME, USERGROUPS_ENAB...
    pub login_defs: Option<String>,
    /// `/etc/default/useradd`: the default shell, home base, group and INACTIVE.
    pub useradd_defaults: Option<String>,
}

/// One account file's new contents, relative to /etc (`passwd`, `shadow`, `group`, `gshadow`).
/// An existing file keeps its mode and owner; a new one gets `mode_if_new`, owned by root.
#[derive(Clone, PartialEq, Eq)]
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
/// Ignition creates them as the user, so it fails where the user could not (a missing home under
/// a root-owned directory).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorizedKeys {
    pub home: String,
    pub uid: u32,
    pub gid: u32,
    pub contents: String,
}

fn text_size(text: &str) -> String {
    format!("{} bytes", text.len())
}

impl fmt::Debug for EtcFiles {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("EtcFiles")
            .field("passwd", &text_size(&self.passwd))
            .field("shadow", &self.shadow.as_deref().map(text_size))
            .field("group", &text_size(&self.group))
            .field("gshadow", &self.gshadow.as_deref().map(text_size))
            .field("login_defs", &self.login_defs.as_deref().map(text_size))
            .field("useradd_defaults", &self.useradd_defaults.as_deref().map(text_size))
            .finish()
    }
}

impl fmt::Debug for EtcFile {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = format!("{:04o}", self.mode_if_new);
        formatter.debug_struct("EtcFile").field("name", &self.name).field("contents", &text_size(&self.contents)).field("mode_if_new", &mode).finish()
    }
}

impl fmt::Debug for AuthorizedKeys {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AuthorizedKeys")
            .field("home", &self.home)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("contents", &text_size(&self.contents))
            .finish()
    }
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
const DEFAULT_UMASK: i64 = 0o022;
/// utmp's name field: useradd's limit for user names; Debian builds groups with the same limit.
const NAME_MAX_LENGTH: usize = 32;

pub fn plan_users(passwd: &Passwd, etc: &EtcFiles) -> Result<UsersPlan, UsersError> {
    plan_users_on(passwd, etc, today())
}

/// Days since the epoch as shadow-utils' gettime gives them.
fn today() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    day_of(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref(), now)
}

/// SOURCE_DATE_EPOCH wins when it is a plain decimal number of seconds not after `now`;
/// otherwise (shadow-utils complains and) the clock counts.
fn day_of(source_date_epoch: Option<&str>, now: u64) -> i64 {
    let epoch = source_date_epoch.and_then(|value| value.parse::<u64>().ok()).filter(|epoch| *epoch <= now);
    i64::try_from(epoch.unwrap_or(now) / 86_400).unwrap_or(i64::MAX)
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
    defaults: UseraddDefaults,
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
            defaults: UseraddDefaults::parse(etc.useradd_defaults.as_deref()),
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
                // Like commonio, a file nobody changed is not rewritten, not even to add the
                // final newline a rewrite would give it.
                let table = table.filter(|table| table.modified())?;
                let contents = table.render();
                (Some(contents.as_str()) != before).then_some(EtcFile { name, contents, mode_if_new })
            })
            .collect()
    }

    /// The last-change day useradd and usermod write: day 0 would force a password change, so
    /// they write "unset" instead.
    fn last_change(&self) -> String {
        day_field(if self.today == 0 { -1 } else { self.today })
    }

    /// A shadow entry changed today, with login.defs' password ageing (unset: -1) when `ageing`;
    /// no inactivity period, no expiry.
    fn new_shadow_entry(&self, name: &str, password: &str, ageing: bool) -> Vec<String> {
        let age = |key: &str| if ageing { day_field(self.defs.number(key, -1)) } else { String::new() };
        let (min, max, warn) = (age("PASS_MIN_DAYS"), age("PASS_MAX_DAYS"), age("PASS_WARN_AGE"));
        let inactive = if ageing { day_field(self.defaults.inactive) } else { String::new() };
        vec![name.to_string(), password.to_string(), self.last_change(), min, max, warn, inactive, String::new(), String::new()]
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

    /// /etc/default/useradd's GROUP; useradd warns about one that does not exist and uses its
    /// built-in instead.
    fn default_group_id(&self) -> u32 {
        let built_in = UseraddDefaults::built_in_group().parse().unwrap_or_default();
        self.resolve_group(&self.defaults.group).map_or(built_in, |(_, gid)| gid)
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
    /// (2.14 runs groupadd and fails; see the module docs).
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
        if existing.is_none() && !self.defaults.expire.is_empty() {
            return Err(error("/etc/default/useradd sets EXPIRE, which keel does not implement: remove it from the image".to_owned()));
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
            None => format!("{}/{name}", self.defaults.home_base),
        };
        let gecos = non_empty(&user.gecos).unwrap_or_default();
        check_field("comment", gecos)?;
        let shell = non_empty(&user.shell).unwrap_or(&self.defaults.shell).to_owned();
        let shell = shell.as_str();
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
            match primary_group {
                Some((_, gid)) => gid,
                None => self.default_group_id(),
            }
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
        // System accounts get no password ageing.
        let shadow_entry = self.new_shadow_entry(name, password, !system);
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
        let new_entry = self.new_shadow_entry(name, password, true);
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

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 19675;
    const DEFS: &str =
        "USERGROUPS_ENAB yes\nUID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\nPASS_MIN_DAYS 0\nPASS_MAX_DAYS 99999\nPASS_WARN_AGE 7\n";

    fn etc() -> EtcFiles {
        EtcFiles {
            passwd: "root:x:0:0:root:/root:/bin/bash\ncore:x:500:500:Core:/home/core:/bin/bash\n".into(),
            shadow: Some("root:*:19000:0:99999:7:::\ncore:*:19000:0:99999:7:::\n".into()),
            group: "root:x:0:\nwheel:x:10:root,core\nusers:x:100:\ncore:x:500:\n".into(),
            gshadow: Some("root:*::\nwheel:*:core:root,core\nusers:*::\ncore:!::\n".into()),
            login_defs: Some(DEFS.into()),
            useradd_defaults: None,
        }
    }

    fn config(json: &str) -> Passwd {
        serde_json::from_str(json).unwrap()
    }

    fn planned(json: &str, etc: &EtcFiles) -> Result<UsersPlan, UsersError> {
        plan_users_on(&config(json), etc, DAY)
    }

    fn file<'plan>(plan: &'plan UsersPlan, name: &str) -> Option<&'plan str> {
        plan.etc_files.iter().find(|file| file.name == name).map(|file| file.contents.as_str())
    }

    fn last_line<'plan>(plan: &'plan UsersPlan, name: &str) -> &'plan str {
        file(plan, name).and_then(|text| text.lines().last()).unwrap()
    }

    #[test]
    fn a_new_user_gets_the_lines_useradd_writes() {
        let plan = planned(r#"{"users":[{"name":"alice"}]}"#, &etc()).unwrap();
        assert_eq!(last_line(&plan, "passwd"), "alice:x:1000:1000::/home/alice:/bin/bash");
        assert_eq!(last_line(&plan, "shadow"), "alice:*:19675:0:99999:7:::");
        assert_eq!(last_line(&plan, "group"), "alice:x:1000:");
        assert_eq!(last_line(&plan, "gshadow"), "alice:!::");
        assert_eq!(plan.homes, vec![Home { path: "/home/alice".into(), uid: 1000, gid: 1000, mode: 0o755, copy_skel: true }]);
    }

    #[test]
    fn every_field_lands_where_useradd_puts_it() {
        let json = r#"{"users":[{"name":"bob","uid":2000,"gecos":"Bob","homeDir":"/srv/bob","shell":"/bin/sh","passwordHash":"$6$s$h","primaryGroup":"users","groups":["wheel"]}]}"#;
        let plan = planned(json, &etc()).unwrap();
        assert_eq!(last_line(&plan, "passwd"), "bob:x:2000:100:Bob:/srv/bob:/bin/sh");
        assert_eq!(last_line(&plan, "shadow"), "bob:$6$s$h:19675:0:99999:7:::");
        assert!(file(&plan, "group").unwrap().contains("wheel:x:10:root,core,bob\n"));
        assert!(file(&plan, "gshadow").unwrap().contains("wheel:*:core:root,core,bob\n"));
        assert!(!file(&plan, "group").unwrap().contains("bob:x:"), "a primary group means no private group");
    }

    #[test]
    fn system_users_have_no_password_ageing_but_still_a_home() {
        // core (500) is the lowest id in the system range, so system ids count down from 499.
        let plan = planned(r#"{"users":[{"name":"svc","system":true}]}"#, &etc()).unwrap();
        assert_eq!(last_line(&plan, "passwd"), "svc:x:499:499::/home/svc:/bin/bash");
        assert_eq!(last_line(&plan, "shadow"), "svc:*:19675::::::");
        assert_eq!(plan.homes.len(), 1);
    }

    #[test]
    fn no_create_home_plans_no_home() {
        let plan = planned(r#"{"users":[{"name":"svc","system":true,"noCreateHome":true}]}"#, &etc()).unwrap();
        assert!(plan.homes.is_empty());
        assert_eq!(last_line(&plan, "passwd"), "svc:x:499:499::/home/svc:/bin/bash");
    }

    #[test]
    fn no_user_group_puts_the_user_in_group_100() {
        let plan = planned(r#"{"users":[{"name":"carol","noUserGroup":true}]}"#, &etc()).unwrap();
        assert_eq!(last_line(&plan, "passwd"), "carol:x:1000:100::/home/carol:/bin/bash");
        assert_eq!(file(&plan, "group"), None);
    }

    #[test]
    fn without_usergroups_enab_there_is_no_private_group() {
        let etc = EtcFiles { login_defs: None, ..etc() };
        let plan = planned(r#"{"users":[{"name":"carol"}]}"#, &etc).unwrap();
        assert_eq!(last_line(&plan, "passwd"), "carol:x:1000:100::/home/carol:/bin/bash");
        assert_eq!(last_line(&plan, "shadow"), "carol:*:19675::::::", "no login.defs: no ageing");
        assert_eq!(file(&plan, "group"), None);
    }

    #[test]
    fn the_private_group_takes_the_uid_when_free_and_the_next_gid_when_not() {
        let plan = planned(r#"{"groups":[{"name":"g","gid":1000}],"users":[{"name":"dave"}]}"#, &etc()).unwrap();
        assert_eq!(last_line(&plan, "passwd"), "dave:x:1000:1001::/home/dave:/bin/bash");
        let plan = planned(r#"{"users":[{"name":"erin","uid":4242}]}"#, &etc()).unwrap();
        assert_eq!(last_line(&plan, "group"), "erin:x:4242:");
    }

    #[test]
    fn without_shadow_files_the_hashes_stay_in_passwd_and_group() {
        let etc = EtcFiles { shadow: None, gshadow: None, ..etc() };
        let plan = planned(r#"{"groups":[{"name":"pg","passwordHash":"$1$g"}],"users":[{"name":"nina","passwordHash":"$6$n"}]}"#, &etc).unwrap();
        assert_eq!(last_line(&plan, "passwd"), "nina:$6$n:1000:1001::/home/nina:/bin/bash");
        let group = file(&plan, "group").unwrap();
        assert!(group.contains("pg:$1$g:1000:\n"));
        assert!(group.ends_with("nina:!:1001:\n"));
        assert!(plan.etc_files.iter().all(|file| file.name != "shadow" && file.name != "gshadow"));
    }

    #[test]
    fn new_groups_get_star_unless_a_hash_is_given() {
        let plan = planned(
            r#"{"groups":[{"name":"a"},{"name":"b","passwordHash":"$6$b"},{"name":"c","passwordHash":""},{"name":"s","system":true}]}"#,
            &etc(),
        )
        .unwrap();
        assert!(file(&plan, "group").unwrap().ends_with("a:x:1000:\nb:x:1001:\nc:x:1002:\ns:x:499:\n"));
        assert!(file(&plan, "gshadow").unwrap().ends_with("a:*::\nb:$6$b::\nc:*::\ns:*::\n"));
    }

    #[test]
    fn a_file_without_a_final_newline_is_rewritten_only_when_changed() {
        let etc = EtcFiles { group: "root:x:0:\nusers:x:100:".into(), ..etc() };
        let plan = planned(r#"{"users":[{"name":"carol","noUserGroup":true}]}"#, &etc).unwrap();
        assert_eq!(file(&plan, "group"), None);
        let plan = planned(r#"{"users":[{"name":"carol","noUserGroup":true,"groups":["users"]}]}"#, &etc).unwrap();
        assert_eq!(file(&plan, "group"), Some("root:x:0:\nusers:x:100:carol\n"));
    }

    #[test]
    fn an_existing_user_without_changes_changes_no_file() {
        let plan = planned(r#"{"users":[{"name":"core","uid":500,"shell":"/bin/bash","gecos":"Core","homeDir":"/home/core"}]}"#, &etc()).unwrap();
        assert_eq!(plan, UsersPlan::default());
    }

    #[test]
    fn an_existing_users_password_goes_to_shadow_with_todays_date() {
        let plan = planned(r#"{"users":[{"name":"core","passwordHash":"$6$new"}]}"#, &etc()).unwrap();
        assert_eq!(file(&plan, "shadow"), Some("root:*:19000:0:99999:7:::\ncore:$6$new:19675:0:99999:7:::\n"));
        assert_eq!(file(&plan, "passwd"), None);
        let plan = planned(r#"{"users":[{"name":"core","passwordHash":""}]}"#, &etc()).unwrap();
        assert_eq!(last_line(&plan, "shadow"), "core:*:19675:0:99999:7:::");
    }

    #[test]
    fn a_shadowed_user_missing_from_shadow_gets_an_entry() {
        let etc = EtcFiles { shadow: Some("root:*:19000:0:99999:7:::\n".into()), ..etc() };
        let plan = planned(r#"{"users":[{"name":"core","passwordHash":"$6$new"}]}"#, &etc).unwrap();
        assert_eq!(last_line(&plan, "shadow"), "core:$6$new:19675:0:99999:7:::");
    }

    #[test]
    fn usermod_groups_replace_memberships_but_not_admin_roles() {
        let plan = planned(r#"{"users":[{"name":"core","groups":["users"]}]}"#, &etc()).unwrap();
        assert_eq!(file(&plan, "group"), Some("root:x:0:\nwheel:x:10:root\nusers:x:100:core\ncore:x:500:\n"));
        assert_eq!(file(&plan, "gshadow"), Some("root:*::\nwheel:*:core:root\nusers:*::core\ncore:!::\n"));
    }

    #[test]
    fn usermod_uid_and_home_changes_plan_a_move_and_a_reown() {
        let plan = planned(r#"{"users":[{"name":"core","uid":1500,"homeDir":"/var/home/core/","sshAuthorizedKeys":["k"]}]}"#, &etc()).unwrap();
        assert_eq!(file(&plan, "passwd").unwrap().lines().last(), Some("core:x:1500:500:Core:/var/home/core:/bin/bash"));
        assert_eq!(plan.home_moves, vec![HomeMove { from: "/home/core".into(), to: "/var/home/core".into() }]);
        assert_eq!(
            plan.home_reowns,
            vec![HomeReown { path: "/var/home/core".into(), old_uid: 500, new_uid: Some(1500), old_gid: 500, new_gid: None }]
        );
        assert_eq!(plan.authorized_keys[0].uid, 1500, "keys belong to the user as modified");
        assert_eq!(plan.authorized_keys[0].home, "/var/home/core");
    }

    #[test]
    fn usermod_refuses_a_uid_another_user_has() {
        let error = planned(r#"{"users":[{"name":"core","uid":0}]}"#, &etc()).unwrap_err();
        assert_eq!(error.message, "user \"core\": UID 0 already exists");
    }

    #[test]
    fn userdel_removes_entries_memberships_and_the_private_group() {
        let plan = planned(r#"{"users":[{"name":"core","shouldExist":false}]}"#, &etc()).unwrap();
        assert_eq!(file(&plan, "passwd"), Some("root:x:0:0:root:/root:/bin/bash\n"));
        assert_eq!(file(&plan, "shadow"), Some("root:*:19000:0:99999:7:::\n"));
        assert_eq!(file(&plan, "group"), Some("root:x:0:\nwheel:x:10:root\nusers:x:100:\n"));
        assert_eq!(file(&plan, "gshadow"), Some("root:*::\nwheel:*::root\nusers:*::\n"));
        assert_eq!(plan.removed_homes, vec![RemovedHome { path: "/home/core".into(), uid: 500, holds_home_of: None }]);
    }

    #[test]
    fn userdel_keeps_a_private_group_that_is_still_used() {
        let mut etc = etc();
        etc.passwd.push_str("other:x:501:500::/home/core/other:/bin/sh\n");
        let plan = planned(r#"{"users":[{"name":"core","shouldExist":false}]}"#, &etc).unwrap();
        assert!(file(&plan, "group").unwrap().contains("core:x:500:"));
        assert_eq!(plan.removed_homes[0].holds_home_of.as_deref(), Some("other"));
        let mut etc = super::tests::etc();
        etc.group = etc.group.replace("core:x:500:", "core:x:500:root");
        let plan = planned(r#"{"users":[{"name":"core","shouldExist":false}]}"#, &etc).unwrap();
        assert!(file(&plan, "group").unwrap().contains("core:x:500:root"));
    }

    #[test]
    fn deleting_what_does_not_exist_changes_nothing() {
        assert_eq!(
            planned(r#"{"users":[{"name":"ghost","shouldExist":false}],"groups":[{"name":"ghost","shouldExist":false}]}"#, &etc()).unwrap(),
            UsersPlan::default()
        );
    }

    #[test]
    fn groupdel_refuses_a_primary_group_and_removes_others() {
        assert!(planned(r#"{"groups":[{"name":"core","shouldExist":false}]}"#, &etc())
            .unwrap_err()
            .message
            .contains("primary group of user \"core\""));
        let plan = planned(r#"{"groups":[{"name":"wheel","shouldExist":false}]}"#, &etc()).unwrap();
        assert_eq!(file(&plan, "group"), Some("root:x:0:\nusers:x:100:\ncore:x:500:\n"));
        assert_eq!(file(&plan, "gshadow"), Some("root:*::\nusers:*::\ncore:!::\n"));
    }

    #[test]
    fn an_existing_group_is_modified_and_its_users_follow_a_new_gid() {
        let plan = planned(r#"{"groups":[{"name":"core","gid":700,"passwordHash":"$6$g"}]}"#, &etc()).unwrap();
        assert!(file(&plan, "group").unwrap().contains("core:x:700:\n"));
        assert!(file(&plan, "gshadow").unwrap().contains("core:$6$g::\n"));
        assert!(file(&plan, "passwd").unwrap().contains("core:x:500:700:"));
        assert!(planned(r#"{"groups":[{"name":"core","gid":10}]}"#, &etc()).unwrap_err().message.contains("GID 10 already exists"));
    }

    #[test]
    fn names_follow_debians_relaxed_rule() {
        for good in ["alice", "12345", "UPPER", ".", "a$b", "ä", "a-", "_x", &"a".repeat(32)] {
            assert!(valid_name(good), "{good:?}");
        }
        for bad in ["", "-x", "+x", "~x", "a:b", "a,b", "a b", "a\tb", "a\nb", &"a".repeat(33)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn config_ids_must_fit_and_not_be_the_reserved_value() {
        assert_eq!(config_id("uid", 0), Ok(0));
        assert_eq!(config_id("uid", 4_294_967_294), Ok(4_294_967_294));
        for bad in [-1, 4_294_967_295, 1 << 40] {
            assert!(config_id("uid", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn normal_ids_count_up_from_the_highest_and_wrap_to_fill_gaps() {
        let range = IdRange { min: 1000, max: 1005, preferred_min: 1000 };
        assert_eq!(allocate_id(&[], range, false), Some(1000));
        assert_eq!(allocate_id(&[0, 1000, 1003, 70000], range, false), Some(1004));
        assert_eq!(allocate_id(&[1000, 1005], range, false), Some(1001));
        assert_eq!(allocate_id(&[1000, 1001, 1002, 1003, 1004, 1005], range, false), None);
    }

    #[test]
    fn system_ids_count_down_from_the_lowest_and_wrap_to_fill_gaps() {
        let range = IdRange { min: 101, max: 105, preferred_min: 1 };
        assert_eq!(allocate_id(&[], range, true), Some(105));
        assert_eq!(allocate_id(&[0, 103, 105], range, true), Some(102));
        assert_eq!(allocate_id(&[101, 105], range, true), Some(104));
        assert_eq!(allocate_id(&[101, 102, 103, 104, 105], range, true), None);
    }

    #[test]
    fn allocation_over_a_huge_range_does_not_walk_it() {
        let range = IdRange { min: 1, max: u32::MAX - 1, preferred_min: 1 };
        assert_eq!(allocate_id(&[u32::MAX - 1], range, false), Some(1));
        assert_eq!(allocate_id(&[1], range, true), Some(u32::MAX - 1));
    }

    #[test]
    fn id_ranges_come_from_login_defs_with_shadow_utils_defaults() {
        let defaults = LoginDefs::default();
        let normal = id_range(&defaults, IdKind::User, false).unwrap();
        assert_eq!((normal.min, normal.max), (1000, 60000));
        let system = id_range(&defaults, IdKind::Group, true).unwrap();
        assert_eq!((system.min, system.max, system.preferred_min), (101, 999, 1));
        let zero = id_range(&LoginDefs::parse("SYS_UID_MIN 0\nUID_MIN 500\n"), IdKind::User, true).unwrap();
        assert_eq!((zero.min, zero.max), (1, 499));
        assert!(id_range(&LoginDefs::parse("UID_MIN 5000\nUID_MAX 10\n"), IdKind::User, false).is_err());
    }

    #[test]
    fn home_mode_comes_from_home_mode_then_umask() {
        let with = |defs: &str| planned(r#"{"users":[{"name":"h"}]}"#, &EtcFiles { login_defs: Some(defs.into()), ..etc() }).unwrap().homes[0].mode;
        assert_eq!(with("UMASK 077\n"), 0o700);
        assert_eq!(with("UMASK 077\nHOME_MODE 0750\n"), 0o750);
        assert_eq!(with(""), 0o755);
    }

    #[test]
    fn ssh_keys_are_joined_by_newlines_and_end_with_one() {
        let keys = |json: &str| planned(json, &etc()).unwrap().authorized_keys;
        let planned = keys(r#"{"users":[{"name":"core","sshAuthorizedKeys":["ssh-ed25519 A a@b","ssh-rsa B"]}]}"#);
        assert_eq!(
            planned,
            vec![AuthorizedKeys { home: "/home/core".into(), uid: 500, gid: 500, contents: "ssh-ed25519 A a@b\nssh-rsa B\n".into() }]
        );
        assert_eq!(keys(r#"{"users":[{"name":"core","sshAuthorizedKeys":["ssh-rsa B\n"]}]}"#)[0].contents, "ssh-rsa B\n");
        assert!(keys(r#"{"users":[{"name":"core","sshAuthorizedKeys":[]}]}"#).is_empty());
        assert!(keys(r#"{"users":[{"name":"core"}]}"#).is_empty());
    }

    #[test]
    fn useradd_defaults_give_the_shell_home_base_group_and_inactive_days() {
        let debian_like = EtcFiles { useradd_defaults: Some("SHELL=/bin/sh\nHOME=/var/home\nGROUP=wheel\nINACTIVE=30\n".into()), ..etc() };
        let plan = planned(r#"{"users":[{"name":"dora","noUserGroup":true}]}"#, &debian_like).unwrap();
        assert_eq!(last_line(&plan, "passwd"), "dora:x:1000:10::/var/home/dora:/bin/sh");
        assert_eq!(last_line(&plan, "shadow"), "dora:*:19675:0:99999:7:30::");
        let unknown_group = EtcFiles { useradd_defaults: Some("GROUP=nosuch\n".into()), ..etc() };
        let plan = planned(r#"{"users":[{"name":"dora","noUserGroup":true}]}"#, &unknown_group).unwrap();
        assert_eq!(last_line(&plan, "passwd"), "dora:x:1000:100::/home/dora:/bin/bash");
        let expiring = EtcFiles { useradd_defaults: Some("EXPIRE=2030-01-01\n".into()), ..etc() };
        assert!(planned(r#"{"users":[{"name":"dora"}]}"#, &expiring).is_err());
        assert!(planned(r#"{"users":[{"name":"core","shell":"/bin/zsh"}]}"#, &expiring).is_ok(), "EXPIRE only matters to new users");
    }

    #[test]
    fn debug_output_shows_sizes_not_hashes_or_keys() {
        let plan = planned(r#"{"users":[{"name":"eve","passwordHash":"$6$secret","sshAuthorizedKeys":["ssh-ed25519 KEYDATA"]}]}"#, &etc()).unwrap();
        let shown = format!("{plan:?} {:?}", etc());
        assert!(!shown.contains("secret") && !shown.contains("KEYDATA") && !shown.contains("19000"), "{shown}");
    }

    #[test]
    fn errors_never_carry_the_password_hash() {
        let error = planned(r#"{"users":[{"name":"x","passwordHash":"$6$SECRET:x"}]}"#, &etc()).unwrap_err();
        assert!(!error.message.contains("SECRET"), "{}", error.message);
        let error = planned(r#"{"groups":[{"name":"g","passwordHash":"SECRET\n"}]}"#, &etc()).unwrap_err();
        assert!(!error.message.contains("SECRET"), "{}", error.message);
    }

    #[test]
    fn the_change_day_is_unset_on_day_zero() {
        let plan = plan_users_on(&config(r#"{"users":[{"name":"z"}]}"#), &etc(), 0).unwrap();
        assert_eq!(last_line(&plan, "shadow"), "z:*::0:99999:7:::");
    }

    #[test]
    fn source_date_epoch_replaces_the_clock_unless_it_is_invalid_or_future() {
        let now = 1_800_000_000;
        assert_eq!(day_of(Some("1700000000"), now), 19675);
        assert_eq!(day_of(None, now), 20833);
        assert_eq!(day_of(Some("1900000000"), now), 20833);
        assert_eq!(day_of(Some("soon"), now), 20833);
    }

    #[test]
    fn numeric_group_arguments_are_gids() {
        let plan = planned(r#"{"users":[{"name":"g","primaryGroup":"10","groups":["100"]}]}"#, &etc()).unwrap();
        assert_eq!(last_line(&plan, "passwd"), "g:x:1000:10::/home/g:/bin/bash");
        assert!(file(&plan, "group").unwrap().contains("users:x:100:g\n"));
        assert!(planned(r#"{"users":[{"name":"g","primaryGroup":"4711"}]}"#, &etc()).is_err());
    }

    /// Total parsing: account files made of random bytes from a hostile alphabet never make the
    /// planner panic, whatever the config does with them.
    #[test]
    fn hostile_account_files_never_panic() {
        let alphabet: Vec<char> = ":x0123456789+-,\n abcore\u{e4}$".chars().collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random_text = |length: usize| -> String {
            (0..length)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect()
        };
        let configs = [
            r#"{"groups":[{"name":"core","gid":5},{"name":"a"}],"users":[{"name":"core","groups":["a","0"],"uid":7,"homeDir":"/h","passwordHash":"p"}]}"#,
            r#"{"users":[{"name":"core","shouldExist":false},{"name":"b","system":true,"sshAuthorizedKeys":["k"]}],"groups":[{"name":"c","shouldExist":false}]}"#,
        ];
        for _ in 0..300 {
            let etc = EtcFiles {
                passwd: random_text(200),
                shadow: Some(random_text(120)),
                group: random_text(160),
                gshadow: Some(random_text(100)),
                login_defs: Some(format!("UID_MIN {}\nSYS_UID_MAX 0x{}\nHOME_MODE {}\n", random_text(4), random_text(3), random_text(3))),
                useradd_defaults: Some(format!("GROUP={}\nINACTIVE={}\nSHELL={}\n", random_text(6), random_text(3), random_text(8))),
            };
            for json in configs {
                let _ = planned(json, &etc);
            }
        }
    }
}
