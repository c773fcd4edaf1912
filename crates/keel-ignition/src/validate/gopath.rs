//! Slash-separated paths as Go's `path` package treats them, which is what Ignition's path rules
//! are written in terms of, and the path rule itself (NoPath, PathRelative, DirtyPath).

use crate::report::{JsonPath, Report};

/// The shortest lexically equivalent path: repeated slashes, `.` and resolvable `..` removed, no
/// trailing slash but for the root; `.` for a path that reduces to nothing.
pub(super) fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut kept: Vec<&str> = Vec::new();
    for element in path.split('/') {
        match element {
            "" | "." => {}
            ".." => {
                if kept.last().is_some_and(|last| *last != "..") {
                    kept.pop();
                } else if !rooted {
                    kept.push("..");
                }
            }
            name => kept.push(name),
        }
    }
    let joined = kept.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// `base` and `next` joined with a slash and cleaned; empty elements are skipped.
pub(super) fn join(base: &str, next: &str) -> String {
    match (base.is_empty(), next.is_empty()) {
        (true, true) => String::new(),
        (true, false) => clean(next),
        (false, true) => clean(base),
        (false, false) => clean(&format!("{base}/{next}")),
    }
}

/// The extension of the last element, from its last dot (`.service`), or "" when it has none.
pub(super) fn extension(path: &str) -> &str {
    let last_element = path.rsplit('/').next().unwrap_or(path);
    last_element.rfind('.').and_then(|dot| last_element.get(dot..)).unwrap_or("")
}

/// NoPath, PathRelative, DirtyPath: Ignition wants every path absolute and already clean, so that
/// two spellings of one path cannot slip past the duplicate and symlink checks.
pub(super) fn absolute_and_clean(path: &str, at: &JsonPath) -> Option<Report> {
    if path.is_empty() {
        return Some(Report::error(at.clone(), "no path given: it must be an absolute path"));
    }
    if !path.starts_with('/') {
        return Some(Report::error(at.clone(), format!("path {path:?} is relative: it must start with /")));
    }
    let cleaned = clean(path);
    (cleaned != path).then(|| Report::error(at.clone(), format!("path {path:?} is not in its simplest form: write {cleaned:?}")))
}

/// The same rule for optional paths, where absent and empty both mean "none".
pub(super) fn absolute_and_clean_if_given(path: Option<&str>, at: &JsonPath) -> Option<Report> {
    path.filter(|path| !path.is_empty()).and_then(|path| absolute_and_clean(path, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go_path_clean() {
        for (path, cleaned) in [
            ("", "."),
            ("/", "/"),
            ("//", "/"),
            ("/a/", "/a"),
            ("/a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/..", "/"),
            ("/../a", "/a"),
            ("a/..", "."),
            ("a/../..", ".."),
            ("../../a", "../../a"),
            ("./a", "a"),
            ("/a/b/..", "/a"),
            ("/a/...", "/a/..."),
        ] {
            assert_eq!(clean(path), cleaned, "{path:?}");
        }
    }

    #[test]
    fn join_cleans_and_skips_empty_elements() {
        assert_eq!(join("/etc/link", "../target"), "/etc/target");
        assert_eq!(join("/etc/link", ""), "/etc/link");
        assert_eq!(join("", "a/./b"), "a/b");
        assert_eq!(join("", ""), "");
    }

    #[test]
    fn extension_is_taken_from_the_last_element_only() {
        assert_eq!(extension("a.service"), ".service");
        assert_eq!(extension("a.b.conf"), ".conf");
        assert_eq!(extension("dir.d/name"), "");
        assert_eq!(extension("noext"), "");
        assert_eq!(extension(".service"), ".service");
        assert_eq!(extension("a."), ".");
    }

    #[test]
    fn absolute_clean_paths_pass() {
        let at = JsonPath::root().field("path");
        for path in ["/", "/etc/hostname", "/a/b.c/..d", "/a b"] {
            assert_eq!(absolute_and_clean(path, &at), None, "{path:?}");
        }
    }

    #[test]
    fn empty_relative_and_unclean_paths_are_errors() {
        let at = JsonPath::root().field("path");
        for (path, says) in [
            ("", "no path"),
            ("etc/hostname", "relative"),
            ("./etc", "relative"),
            ("/etc/", "\"/etc\""),
            ("//etc", "\"/etc\""),
            ("/etc/./x", "\"/etc/x\""),
            ("/etc/../x", "\"/x\""),
        ] {
            let report = absolute_and_clean(path, &at).unwrap_or_else(|| panic!("{path:?} passed"));
            assert_eq!(report.level, crate::report::Level::Error);
            assert!(report.message.contains(says), "{path:?}: {}", report.message);
        }
    }

    #[test]
    fn optional_paths_may_be_absent_or_empty() {
        let at = JsonPath::root().field("path");
        assert_eq!(absolute_and_clean_if_given(None, &at), None);
        assert_eq!(absolute_and_clean_if_given(Some(""), &at), None);
        assert!(absolute_and_clean_if_given(Some("x"), &at).is_some());
    }
}
