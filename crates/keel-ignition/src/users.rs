//! Users and groups written natively into a root's passwd, shadow, group and gshadow, with the
//! results shadow-utils' `useradd --root` / `usermod` / `userdel` / `groupadd` give when Ignition
//! runs them. Pure: it reads the files' text and returns their new text and what else the
//! users need (home directories, SSH keys); the apply module does the writing.
//!
//! INTERFACE STUB: the users helper replaces the bodies; the types and signatures are the contract.

use crate::config::latest::Passwd;

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

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsersPlan {
    /// Only the files that change.
    pub etc_files: Vec<EtcFile>,
    pub homes: Vec<Home>,
    pub authorized_keys: Vec<AuthorizedKeys>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct UsersError {
    pub message: String,
}

pub fn plan_users(_passwd: &Passwd, _etc: &EtcFiles) -> Result<UsersPlan, UsersError> {
    Ok(UsersPlan::default())
}

/// The uid of a user named in passwd text (for file owners given by name).
pub fn uid_by_name(_passwd: &str, _name: &str) -> Option<u32> {
    None
}

/// The gid of a group named in group text.
pub fn gid_by_name(_group: &str, _name: &str) -> Option<u32> {
    None
}
