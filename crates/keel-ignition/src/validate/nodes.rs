//! Files, directories and links: their paths, modes and owners, and the rules that look across
//! them (one path, one node; no node below a configured link; hard links; paths that units own).

use super::gopath;
use super::resource::{self, Role};
use crate::config::latest::{NodeGroup, NodeUser, Storage, Systemd};
use crate::config::SpecVersion;
use crate::report::{JsonPath, Report};
use std::collections::HashMap;

/// How many entries have each path: the cross-node rules look paths up here, so a config of
/// 100k nodes is checked in linear time, not by comparing every pair.
type PathCounts<'a> = HashMap<&'a str, usize>;

fn count_paths<'a>(paths: impl Iterator<Item = &'a str>) -> PathCounts<'a> {
    let mut counts = PathCounts::new();
    for path in paths {
        *counts.entry(path).or_default() += 1;
    }
    counts
}

/// Every rule about `storage.files`, `.directories` and `.links`.
pub(super) fn validate_nodes(storage: &Storage, at: &JsonPath, version: SpecVersion) -> Vec<Report> {
    let files = storage.files.as_deref().unwrap_or_default();
    let directories = storage.directories.as_deref().unwrap_or_default();
    let links = storage.links.as_deref().unwrap_or_default();
    let link_paths = count_paths(links.iter().map(|link| link.path.as_str()));
    let mut reports = Vec::new();

    for (index, directory) in directories.iter().enumerate() {
        let at = at.field("directories").index(index);
        reports.extend(gopath::absolute_and_clean(&directory.path, &at.field("path")));
        reports.extend(mode_is_valid(directory.mode, &at.field("mode")));
        reports.extend(mode_has_no_special_bits(directory.mode, &at.field("mode"), version));
        reports.extend(owner_rules(directory.user.as_ref(), directory.group.as_ref(), &at));
        reports.extend(not_below_a_link(&directory.path, &link_paths, &at, "directory"));
    }
    for (index, file) in files.iter().enumerate() {
        let at = at.field("files").index(index);
        reports.extend(gopath::absolute_and_clean(&file.path, &at.field("path")));
        reports.extend(mode_is_valid(file.mode, &at.field("mode")));
        reports.extend(mode_has_no_special_bits(file.mode, &at.field("mode"), version));
        let source = file.contents.as_ref().and_then(|contents| contents.source.as_deref());
        reports.extend(overwrite_has_source(file.overwrite, source, &at.field("overwrite")));
        reports.extend(owner_rules(file.user.as_ref(), file.group.as_ref(), &at));
        reports.extend(not_below_a_link(&file.path, &link_paths, &at, "file"));
        if let Some(contents) = &file.contents {
            reports.extend(resource::validate_resource(contents, &at.field("contents"), Role::FileContents, version));
        }
        for (fragment, append) in file.append.iter().flatten().enumerate() {
            reports.extend(resource::validate_resource(append, &at.field("append").index(fragment), Role::FileContents, version));
        }
    }
    let directory_paths = count_paths(directories.iter().map(|directory| directory.path.as_str()));
    for (index, link) in links.iter().enumerate() {
        let at = at.field("links").index(index);
        reports.extend(gopath::absolute_and_clean(&link.path, &at.field("path")));
        reports.extend(owner_rules(link.user.as_ref(), link.group.as_ref(), &at));
        reports.extend(not_below_a_link(&link.path, &link_paths, &at, "link"));
        let target = link.target.as_deref().unwrap_or("");
        if let Some(missing) = link_has_target(target, &at.field("target"), version) {
            reports.push(missing);
            continue;
        }
        if link.hard == Some(true) {
            reports.extend(hard_link_not_to_a_directory(&link.path, target, &directory_paths, &at));
            if version.at_least(4) {
                reports.extend(hard_link_has_no_owner(link.user.as_ref(), link.group.as_ref(), &at));
            }
        }
    }
    reports.extend(one_node_per_path(storage, at));
    reports
}

/// Duplicate: files, directories and links share one list of paths; Ignition reports each path
/// seen before, taking directories, then files, then links.
pub(super) fn one_node_per_path(storage: &Storage, at: &JsonPath) -> Vec<Report> {
    let directories = storage.directories.iter().flatten().map(|node| ("directories", node.path.as_str()));
    let files = storage.files.iter().flatten().map(|node| ("files", node.path.as_str()));
    let links = storage.links.iter().flatten().map(|node| ("links", node.path.as_str()));
    let nodes: Vec<(&str, &str)> = directories.chain(files).chain(links).collect();
    let mut index_in_list = Vec::with_capacity(nodes.len());
    let mut counts = std::collections::HashMap::new();
    for (list, _) in &nodes {
        let count = counts.entry(*list).or_insert(0usize);
        index_in_list.push(*count);
        *count += 1;
    }
    super::repeats(nodes.iter().map(|(_, path)| *path))
        .into_iter()
        .filter_map(|repeat| {
            let (list, path) = nodes.get(repeat)?;
            let index = index_in_list.get(repeat)?;
            Some(Report::error(
                at.field(list).index(*index),
                format!("duplicate path {path:?}: another file, directory or link in this config has it"),
            ))
        })
        .collect()
}

/// FileIllegalMode: a mode is permission and special bits, 0 to 0o7777.
pub(super) fn mode_is_valid(mode: Option<i64>, at: &JsonPath) -> Option<Report> {
    let mode = mode?;
    (!(0..=0o7777).contains(&mode)).then(|| Report::error(at.clone(), format!("mode {mode} is not a file mode: it must be from 0 to 4095 (0o7777)")))
}

/// ModeSpecialBits: setuid, setgid and sticky bits are a warning until spec 3.6 made them
/// work. Go reads the bits of the mode's low 32 bits, so a negative mode has them too.
pub(super) fn mode_has_no_special_bits(mode: Option<i64>, at: &JsonPath, version: SpecVersion) -> Option<Report> {
    let mode = mode?;
    (!version.at_least(6) && (mode as u32) & 0o7000 != 0).then(|| {
        Report::warning(at.clone(), format!("mode {mode:#o} has setuid, setgid or sticky bits, which spec {version} does not support (3.6.0 does)"))
    })
}

/// OverwriteAndNilSource: overwriting a file with nothing is refused (an empty source is
/// something: an empty file).
pub(super) fn overwrite_has_source(overwrite: Option<bool>, source: Option<&str>, at: &JsonPath) -> Option<Report> {
    (overwrite == Some(true) && source.is_none())
        .then(|| Report::error(at.clone(), "overwrite is true but contents has no source: give a source, or set overwrite to false"))
}

/// BothIDAndNameSet, for the owning user and group of a node.
fn owner_rules(user: Option<&NodeUser>, group: Option<&NodeGroup>, at: &JsonPath) -> Vec<Report> {
    let user = user.and_then(|user| id_or_name(user.id, user.name.as_deref(), &at.field("user")));
    let group = group.and_then(|group| id_or_name(group.id, group.name.as_deref(), &at.field("group")));
    user.into_iter().chain(group).collect()
}

/// BothIDAndNameSet: an owner is given by id or by name, not both (an empty name is no name).
pub(super) fn id_or_name(id: Option<i64>, name: Option<&str>, at: &JsonPath) -> Option<Report> {
    let name = name.filter(|name| !name.is_empty())?;
    id.map(|id| Report::error(at.clone(), format!("both id {id} and name {name:?} are set: give one")))
}

/// LinkTargetRequired (spec 3.3 on; before it an empty target was accepted).
pub(super) fn link_has_target(target: &str, at: &JsonPath, version: SpecVersion) -> Option<Report> {
    (version.at_least(3) && target.is_empty()).then(|| Report::error(at.clone(), "a link needs a target"))
}

/// FileUsedSymlink, DirectoryUsedSymlink, LinkUsedSymlink: a node below a configured link would
/// be written through it. Ignition counts hard links too, and reports once per such link.
pub(super) fn not_below_a_link(path: &str, link_paths: &PathCounts<'_>, at: &JsonPath, what: &str) -> Vec<Report> {
    // Every prefix that ends just before a '/' is a place a link would be gone through.
    let prefixes = path.match_indices('/').filter_map(|(index, _)| path.get(..index));
    prefixes
        .flat_map(|link| std::iter::repeat_n(link, link_paths.get(link).copied().unwrap_or(0)))
        .map(|link| Report::error(at.clone(), format!("this {what}'s path {path:?} goes through the link {link:?} this config creates")))
        .collect()
}

/// HardLinkToDirectory: Linux cannot hard-link a directory. A relative target is taken relative
/// to the link's own path (not its directory), as Ignition computes it; one report per match.
pub(super) fn hard_link_not_to_a_directory(path: &str, target: &str, directory_paths: &PathCounts<'_>, at: &JsonPath) -> Vec<Report> {
    let cleaned = gopath::clean(target);
    let resolved = if cleaned.starts_with('/') { cleaned } else { gopath::join(path, target) };
    let matches = directory_paths.get(resolved.as_str()).copied().unwrap_or(0);
    let report = Report::error(at.clone(), format!("hard link target {resolved:?} is a directory this config creates"));
    vec![report; matches]
}

/// HardLinkSpecifiesOwner: a hard link shares its target's inode, so an owner given for the
/// link is ignored; each one given is a warning at its own path.
pub(super) fn hard_link_has_no_owner(user: Option<&NodeUser>, group: Option<&NodeGroup>, at: &JsonPath) -> Vec<Report> {
    let warning = |at: JsonPath| Report::warning(at, "a hard link has its target's owner: this setting is ignored");
    let mut reports = Vec::new();
    if let Some(user) = user {
        reports.extend(user.id.map(|_| warning(at.field("user").field("id"))));
        reports.extend(user.name.as_ref().map(|_| warning(at.field("user").field("name"))));
    }
    if let Some(group) = group {
        reports.extend(group.id.map(|_| warning(at.field("group").field("id"))));
        reports.extend(group.name.as_ref().map(|_| warning(at.field("group").field("name"))));
    }
    reports
}

/// PathConflictsSystemd (spec 3.4 on): a node at the path a unit or drop-in with contents is
/// written to would be overwritten by it.
pub(super) fn paths_conflict_with_units(storage: &Storage, systemd: &Systemd, at: &JsonPath, version: SpecVersion) -> Vec<Report> {
    if !version.at_least(4) {
        return Vec::new();
    }
    let has_contents = |contents: &Option<String>| contents.as_deref().is_some_and(|contents| !contents.is_empty());
    let mut unit_paths = std::collections::HashSet::new();
    for unit in systemd.units.iter().flatten() {
        if has_contents(&unit.contents) {
            unit_paths.insert(format!("/etc/systemd/system/{}", unit.name));
        }
        for dropin in unit.dropins.iter().flatten().filter(|dropin| has_contents(&dropin.contents)) {
            unit_paths.insert(format!("/etc/systemd/system/{}.d/{}", unit.name, dropin.name));
        }
    }
    let lists = [
        ("files", storage.files.iter().flatten().map(|node| node.path.as_str()).collect::<Vec<_>>()),
        ("directories", storage.directories.iter().flatten().map(|node| node.path.as_str()).collect()),
        ("links", storage.links.iter().flatten().map(|node| node.path.as_str()).collect()),
    ];
    let mut reports = Vec::new();
    for (list, paths) in lists {
        for (index, path) in paths.into_iter().enumerate().filter(|(_, path)| unit_paths.contains(*path)) {
            reports.push(Report::error(
                at.field(list).index(index).field("path"),
                format!("path {path:?} is where a systemd unit or drop-in in this config is written"),
            ));
        }
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::latest::{Directory, Dropin, File, Link, Resource, Unit};
    use crate::report::Level;

    const NEWEST: SpecVersion = SpecVersion::NEWEST;

    fn at() -> JsonPath {
        JsonPath::root().field("storage")
    }

    fn paths(reports: &[Report]) -> Vec<String> {
        reports.iter().map(|report| report.path.to_string()).collect()
    }

    fn link(path: &str, target: Option<&str>, hard: bool) -> Link {
        Link { target: target.map(str::to_owned), hard: Some(hard), ..Link::new(path.to_owned()) }
    }

    #[test]
    fn modes_must_be_within_0_and_0o7777() {
        let at = at().field("mode");
        for mode in [None, Some(0), Some(0o644), Some(0o7777)] {
            assert_eq!(mode_is_valid(mode, &at), None, "{mode:?}");
        }
        for mode in [-1, 0o10000, i64::MAX, i64::MIN] {
            assert_eq!(mode_is_valid(Some(mode), &at).map(|report| report.level), Some(Level::Error), "{mode}");
        }
    }

    #[test]
    fn special_bits_are_a_warning_before_3_6() {
        let at = at().field("mode");
        for minor in 0..=5 {
            let report = mode_has_no_special_bits(Some(0o4755), &at, SpecVersion { minor }).unwrap();
            assert_eq!(report.level, Level::Warning);
            assert!(report.message.contains("0o4755"), "{}", report.message);
        }
        assert_eq!(mode_has_no_special_bits(Some(0o4755), &at, NEWEST), None);
        assert_eq!(mode_has_no_special_bits(Some(0o755), &at, SpecVersion { minor: 3 }), None);
        assert!(mode_has_no_special_bits(Some(-1), &at, SpecVersion { minor: 3 }).is_some());
        assert_eq!(mode_has_no_special_bits(Some(0o10000), &at, SpecVersion { minor: 3 }), None);
    }

    #[test]
    fn overwrite_needs_a_source() {
        let at = at().field("overwrite");
        assert!(overwrite_has_source(Some(true), None, &at).is_some());
        assert_eq!(overwrite_has_source(Some(true), Some(""), &at), None);
        assert_eq!(overwrite_has_source(Some(false), None, &at), None);
        assert_eq!(overwrite_has_source(None, None, &at), None);
    }

    #[test]
    fn an_owner_is_an_id_or_a_name() {
        let at = at().field("user");
        assert!(id_or_name(Some(0), Some("root"), &at).is_some());
        assert_eq!(id_or_name(Some(0), Some(""), &at), None);
        assert_eq!(id_or_name(Some(0), None, &at), None);
        assert_eq!(id_or_name(None, Some("root"), &at), None);
    }

    #[test]
    fn link_targets_are_required_from_3_3() {
        assert!(link_has_target("", &at(), SpecVersion { minor: 3 }).is_some());
        assert_eq!(link_has_target("/t", &at(), SpecVersion { minor: 3 }), None);
        assert_eq!(link_has_target("", &at(), SpecVersion { minor: 2 }), None);
    }

    #[test]
    fn nodes_below_a_link_are_errors_once_per_link() {
        let links = count_paths(["/a", "/a/b", "/c"].into_iter());
        assert_eq!(not_below_a_link("/a/b/c", &links, &at(), "file").len(), 2);
        assert_eq!(not_below_a_link("/a", &links, &at(), "file").len(), 0);
        assert_eq!(not_below_a_link("/ab", &links, &at(), "file").len(), 0);
        assert_eq!(not_below_a_link("/c/d", &links, &at(), "file").len(), 1);
        let twice = count_paths(["/a", "/a"].into_iter());
        assert_eq!(not_below_a_link("/a/x", &twice, &at(), "file").len(), 2, "once per link entry, as Ignition reports");
    }

    #[test]
    fn hard_links_to_configured_directories_are_errors() {
        let directories = count_paths(["/dir", "/link/rel"].into_iter());
        assert_eq!(hard_link_not_to_a_directory("/link", "/dir", &directories, &at()).len(), 1);
        assert_eq!(hard_link_not_to_a_directory("/link", "/dir/", &directories, &at()).len(), 1);
        // Relative targets resolve against the link's path itself, as Ignition resolves them.
        assert_eq!(hard_link_not_to_a_directory("/link", "rel", &directories, &at()).len(), 1);
        assert_eq!(hard_link_not_to_a_directory("/link", "../dir", &directories, &at()).len(), 1);
        assert_eq!(hard_link_not_to_a_directory("/link", "/file", &directories, &at()).len(), 0);
    }

    #[test]
    fn owners_of_hard_links_are_warnings_each() {
        let user = NodeUser { id: Some(1), name: Some(String::new()) };
        let group = NodeGroup { id: None, name: Some("g".to_owned()) };
        let reports = hard_link_has_no_owner(Some(&user), Some(&group), &at());
        assert_eq!(paths(&reports), ["$.storage.user.id", "$.storage.user.name", "$.storage.group.name"]);
        assert!(reports.iter().all(|report| report.level == Level::Warning));
        assert!(hard_link_has_no_owner(None, Some(&NodeGroup::default()), &at()).is_empty());
    }

    #[test]
    fn files_directories_and_links_share_one_path_key() {
        let storage = Storage {
            directories: Some(vec![Directory::new("/a".to_owned())]),
            files: Some(vec![File::new("/a".to_owned()), File::new("/b".to_owned()), File::new("/b".to_owned())]),
            links: Some(vec![link("/b", Some("/x"), false)]),
            ..Default::default()
        };
        assert_eq!(paths(&one_node_per_path(&storage, &at())), ["$.storage.files[0]", "$.storage.files[2]", "$.storage.links[0]"]);
    }

    #[test]
    fn a_link_without_target_skips_the_hard_link_rules() {
        let storage = Storage { links: Some(vec![link("/l", None, true), link("/m", Some(""), false)]), ..Default::default() };
        let reports = validate_nodes(&storage, &at(), SpecVersion { minor: 3 });
        assert_eq!(paths(&reports), ["$.storage.links[0].target", "$.storage.links[1].target"]);
        assert!(validate_nodes(&storage, &at(), SpecVersion { minor: 2 }).is_empty());
    }

    #[test]
    fn hard_link_owner_warnings_start_with_3_4() {
        let mut hard = link("/l", Some("/t"), true);
        hard.user = Some(NodeUser { id: Some(0), name: None });
        let storage = Storage { links: Some(vec![hard]), ..Default::default() };
        assert_eq!(paths(&validate_nodes(&storage, &at(), SpecVersion { minor: 4 })), ["$.storage.links[0].user.id"]);
        assert!(validate_nodes(&storage, &at(), SpecVersion { minor: 3 }).is_empty());
    }

    #[test]
    fn file_resources_are_validated_with_their_paths() {
        let mut file = File::new("/f".to_owned());
        file.contents = Some(Resource { compression: Some("xz".to_owned()), ..Default::default() });
        file.append = Some(vec![Resource { source: Some("ftp://x".to_owned()), ..Default::default() }]);
        let storage = Storage { files: Some(vec![file]), ..Default::default() };
        assert_eq!(
            paths(&validate_nodes(&storage, &at(), NEWEST)),
            ["$.storage.files[0].contents.compression", "$.storage.files[0].append[0].source"]
        );
    }

    #[test]
    fn nodes_at_unit_paths_conflict_from_3_4() {
        let storage = Storage {
            files: Some(vec![File::new("/etc/systemd/system/a.service".to_owned()), File::new("/etc/other".to_owned())]),
            directories: Some(vec![Directory::new("/etc/systemd/system/a.service.d/x.conf".to_owned())]),
            links: Some(vec![link("/etc/systemd/system/empty.service", Some("/dev/null"), false)]),
            ..Default::default()
        };
        let unit = Unit {
            contents: Some("[Unit]".to_owned()),
            dropins: Some(vec![Dropin { contents: Some("[Unit]".to_owned()), name: "x.conf".to_owned() }]),
            ..Unit::new("a.service".to_owned())
        };
        let empty = Unit { contents: Some(String::new()), ..Unit::new("empty.service".to_owned()) };
        let systemd = Systemd { units: Some(vec![unit, empty]) };
        let reports = paths_conflict_with_units(&storage, &systemd, &at(), NEWEST);
        assert_eq!(paths(&reports), ["$.storage.files[0].path", "$.storage.directories[0].path"]);
        assert!(paths_conflict_with_units(&storage, &systemd, &at(), SpecVersion { minor: 3 }).is_empty());
    }
}
