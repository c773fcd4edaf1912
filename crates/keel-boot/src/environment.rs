//! The environment of every program keel-init starts. The kernel hands PID 1 each
//! command-line word it does not know as an environment variable, `LD_PRELOAD=` among them,
//! and the command line is not trusted to choose code: nothing of it reaches a child.

use std::ffi::CString;
use std::process::Command;

const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// `program`, to be run with PATH and nothing else in its environment.
pub fn command(program: &str) -> Command {
    let mut command = Command::new(program);
    command.env_clear().env("PATH", PATH);
    command
}

/// The real init's environment: what the kernel itself gives an init (HOME, TERM) and PATH.
pub fn for_init() -> Vec<CString> {
    ["HOME=/".to_string(), "TERM=linux".to_string(), format!("PATH={PATH}")].into_iter().filter_map(|entry| CString::new(entry).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_get_path_and_nothing_from_the_command_line() {
        let output = command("/usr/bin/env").env("SEEN_BY_THE_TEST", "1").output();
        // The test's own addition shows env_clear() ran first and env() after it; a variable
        // of this process (as the kernel's LD_PRELOAD= would be) must not appear.
        let text = String::from_utf8_lossy(&output.unwrap().stdout).to_string();
        let mut names: Vec<&str> = text.lines().filter_map(|line| line.split_once('=').map(|(name, _)| name)).collect();
        names.sort();
        assert_eq!(names, ["PATH", "SEEN_BY_THE_TEST"], "{text}");
        assert!(text.contains(&format!("PATH={PATH}\n")), "{text}");
        assert!(for_init().iter().any(|entry| entry.to_bytes() == format!("PATH={PATH}").as_bytes()));
    }
}
