//! Users and groups. Ignition checks only that names, a user's groups and a user's SSH keys are
//! not repeated; what the names may be is up to useradd.

use crate::config::latest::Passwd;
use crate::report::{JsonPath, Report};

/// Every rule about `passwd`.
pub(super) fn validate_passwd(passwd: &Passwd, at: &JsonPath) -> Vec<Report> {
    let users = passwd.users.as_deref().unwrap_or_default();
    let groups = passwd.groups.as_deref().unwrap_or_default();
    let mut reports = Vec::new();
    for (index, user) in users.iter().enumerate() {
        let at = at.field("users").index(index);
        reports.extend(super::repeated_strings(user.groups.as_deref().unwrap_or_default(), &at.field("groups"), "group", true));
        // Keys are not secret, but they are long and opaque; the path says which one it is.
        let keys = user.ssh_authorized_keys.as_deref().unwrap_or_default();
        reports.extend(super::repeated_strings(keys, &at.field("sshAuthorizedKeys"), "SSH key", false));
    }
    reports.extend(super::repeated_keys(
        users,
        |user| &user.name,
        &at.field("users"),
        |name| format!("duplicate user {name:?}: the same name appears earlier"),
    ));
    reports.extend(super::repeated_keys(
        groups,
        |group| &group.name,
        &at.field("groups"),
        |name| format!("duplicate group {name:?}: the same name appears earlier"),
    ));
    reports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::latest::{Group, User};

    #[test]
    fn names_groups_and_keys_are_not_repeated() {
        let core = User {
            groups: Some(vec!["wheel".to_owned(), "docker".to_owned(), "wheel".to_owned()]),
            ssh_authorized_keys: Some(vec!["ssh-ed25519 AAAA k".to_owned(), "ssh-ed25519 AAAA k".to_owned()]),
            ..User::new("core".to_owned())
        };
        let passwd = Passwd {
            users: Some(vec![core, User::new("core".to_owned()), User::new("other".to_owned())]),
            groups: Some(vec![Group::new("g".to_owned()), Group::new("g".to_owned()), Group::new("core".to_owned())]),
        };
        let reports = validate_passwd(&passwd, &JsonPath::root().field("passwd"));
        let paths: Vec<String> = reports.iter().map(|report| report.path.to_string()).collect();
        assert_eq!(paths, ["$.passwd.users[0].groups[2]", "$.passwd.users[0].sshAuthorizedKeys[1]", "$.passwd.users[1]", "$.passwd.groups[1]"]);
        assert!(reports.iter().all(|report| !report.message.contains("AAAA")));
        assert!(validate_passwd(&Passwd::default(), &JsonPath::root()).is_empty());
    }
}
