//! `/etc/default/useradd` read the way shadow-utils' useradd reads it (get_defaults): lines
//! `NAME=value`, matched by prefix at the line's start, the value taken verbatim up to the end
//! of the line. Debian ships `SHELL=/bin/sh` there; without the file useradd's built-ins apply.

/// useradd's built-ins when the file does not say otherwise.
const BUILT_IN_HOME_BASE: &str = "/home";
const BUILT_IN_SHELL: &str = "/bin/bash";
/// Debian's useradd puts a user without a private group into `users` (GROUP=100).
const BUILT_IN_GROUP: &str = "100";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UseraddDefaults {
    pub home_base: String,
    pub shell: String,
    /// A group name or gid, resolved in the root's group file (an unknown one: the built-in).
    pub group: String,
    /// Days after a password expires until the account is locked; -1 is never.
    pub inactive: i64,
    /// The account expiry date, which keel does not implement: a non-empty one is refused
    /// rather than silently left out.
    pub expire: String,
}

impl UseraddDefaults {
    pub fn parse(text: Option<&str>) -> UseraddDefaults {
        let mut defaults = UseraddDefaults {
            home_base: BUILT_IN_HOME_BASE.to_owned(),
            shell: BUILT_IN_SHELL.to_owned(),
            group: BUILT_IN_GROUP.to_owned(),
            inactive: -1,
            expire: String::new(),
        };
        for line in text.unwrap_or_default().lines() {
            let Some((name, value)) = line.split_once('=') else { continue };
            match name {
                "HOME" => defaults.home_base = value.to_owned(),
                "SHELL" => defaults.shell = value.to_owned(),
                "GROUP" => defaults.group = value.to_owned(),
                // useradd complains about a number it cannot read and keeps the default.
                "INACTIVE" => defaults.inactive = value.parse().unwrap_or(defaults.inactive),
                "EXPIRE" => defaults.expire = value.to_owned(),
                _ => {}
            }
        }
        defaults
    }

    pub fn built_in_group() -> &'static str {
        BUILT_IN_GROUP
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_file_gives_useradds_built_ins() {
        let defaults = UseraddDefaults::parse(None);
        assert_eq!((defaults.home_base.as_str(), defaults.shell.as_str(), defaults.group.as_str()), ("/home", "/bin/bash", "100"));
        assert_eq!(defaults.inactive, -1);
    }

    #[test]
    fn debians_file_sets_the_shell_and_comments_are_not_settings() {
        let text = "# useradd defaults file\n#HOME=/srv\nSHELL=/bin/sh\n# GROUP=100\n";
        let defaults = UseraddDefaults::parse(Some(text));
        assert_eq!(defaults.shell, "/bin/sh");
        assert_eq!(defaults.home_base, "/home");
    }

    #[test]
    fn every_setting_keel_honours_is_read_and_bad_numbers_keep_the_default() {
        let defaults = UseraddDefaults::parse(Some("HOME=/var/home\nGROUP=users\nINACTIVE=30\nEXPIRE=\nSKEL=/etc/skel\n"));
        assert_eq!((defaults.home_base.as_str(), defaults.group.as_str(), defaults.inactive), ("/var/home", "users", 30));
        assert_eq!(UseraddDefaults::parse(Some("INACTIVE=soon\n")).inactive, -1);
        assert_eq!(UseraddDefaults::parse(Some("EXPIRE=2030-01-01\n")).expire, "2030-01-01");
    }
}
