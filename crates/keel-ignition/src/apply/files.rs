//! `storage.files`, `storage.directories` and `storage.links`, in Ignition's order: every
//! path's parents resolved first (symlinks in the root followed, the last component not),
//! directories, files and soft links sorted by depth (a stable sort; Ignition's is not, but
//! entries of one depth never depend on each other), hard links last, so a hard link may
//! point at a deeper file.

use super::passwd::read_account_file;
use super::{default_dir_attrs, kind_name, ApplyError, Contents, ErrorKind, Node, Op, Planner, DEFAULT_FILE_MODE, ROOT_OWNER};
use crate::config::latest::{Directory, File, Link, NodeGroup, NodeUser, Storage};
use crate::report::JsonPath;
use crate::root::{self, Attrs, Kind};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Owners given by name, looked up as Ignition looks them up: in the root's /etc/passwd and
/// /etc/group (symlinks followed inside the root) as they are when the node is made, so after
/// the users and groups and any earlier entry that writes them. Nothing is read without a name;
/// each file is parsed once into a map, and again only after a step touched it.
#[derive(Default)]
pub(crate) struct Owners {
    users: Option<IdsByName>,
    groups: Option<IdsByName>,
}

/// Which account file, and which of its fields must parse as numbers for a line to be an
/// entry (glibc's parser takes passwd's uid and gid, group's gid), the first being the id.
struct AccountKind {
    path: &'static str,
    numeric_fields: &'static [usize],
}

const PASSWD: AccountKind = AccountKind { path: "/etc/passwd", numeric_fields: &[2, 3] };
const GROUP: AccountKind = AccountKind { path: "/etc/group", numeric_fields: &[2] };

/// An account file's ids by name, with what it was read through and when.
struct IdsByName {
    by_name: HashMap<Vec<u8>, u32>,
    /// The file's path and every path a symlink led through to it: a step at one of them, or
    /// at an ancestor, may change what the file says.
    read_through: Vec<String>,
    /// The plan's steps up to here are known not to touch the file.
    checked_steps: usize,
    /// How often the file was parsed, which is what a lookup costs.
    parses: usize,
}

impl Owners {
    /// The owner a node gets: ids win over names, a field left out keeps `default`'s.
    fn resolve(
        &mut self,
        planner: &Planner,
        at: &JsonPath,
        path: &str,
        user: Option<&NodeUser>,
        group: Option<&NodeGroup>,
        default: (u32, u32),
    ) -> Result<(u32, u32), ApplyError> {
        let user_name = user.and_then(|user| user.name.as_deref());
        let group_name = group.and_then(|group| group.name.as_deref());
        let uid = owner_id(at, path, "user", user.and_then(|user| user.id), user_name, default.0, |name| {
            lookup(&mut self.users, &PASSWD, planner, at, name)
        })?;
        let gid = owner_id(at, path, "group", group.and_then(|group| group.id), group_name, default.1, |name| {
            lookup(&mut self.groups, &GROUP, planner, at, name)
        })?;
        Ok((uid, gid))
    }
}

/// `name`'s id in the account file, parsing it only when it was never parsed or a step since
/// touched it.
fn lookup(cache: &mut Option<IdsByName>, kind: &AccountKind, planner: &Planner, at: &JsonPath, name: &str) -> Result<Option<u32>, ApplyError> {
    let steps = planner.steps.len();
    let parses = match cache {
        Some(ids) if !planner.touched_since(ids.checked_steps, &ids.read_through) => {
            ids.checked_steps = steps;
            return Ok(ids.by_name.get(name.as_bytes()).copied());
        }
        Some(ids) => ids.parses,
        None => 0,
    };
    let read_through = planner.follow_all(at, kind.path)?;
    let resolved = read_through.last().map_or(kind.path, String::as_str);
    let contents = read_account_file(planner, at, resolved)?.contents;
    let by_name = contents.map(|bytes| ids_by_name(&bytes, kind.numeric_fields)).unwrap_or_default();
    let found = by_name.get(name.as_bytes()).copied();
    *cache = Some(IdsByName { by_name, read_through, checked_steps: steps, parses: parses + 1 });
    Ok(found)
}

/// Each name's id from the first line that is an entry, as glibc's files lookup (getpwnam and
/// getgrnam in a chroot of the root, how Ignition resolves names) reads the file: leading blanks
/// skipped, empty and `#` lines ignored, `+`/`-` (NIS) names never matched, a line an entry only
/// when its numeric fields are numbers, which other bytes (not UTF-8 in a GECOS) do not upset.
/// An id that does not fit 32 bits names no account (glibc would truncate it).
fn ids_by_name(text: &[u8], numeric_fields: &[usize]) -> HashMap<Vec<u8>, u32> {
    let mut ids = HashMap::new();
    for line in text.split(|byte| *byte == b'\n') {
        let line = line.trim_ascii_start();
        let fields: Vec<&[u8]> = line.splitn(numeric_fields.iter().max().map_or(1, |last| last + 2), |byte| *byte == b':').collect();
        let Some(name) = fields.first().filter(|name| !matches!(name.first(), None | Some(b'#' | b'+' | b'-'))) else { continue };
        let numbers: Option<Vec<u32>> = numeric_fields.iter().map(|index| fields.get(*index).and_then(|field| decimal_id(field))).collect();
        if let Some(id) = numbers.and_then(|numbers| numbers.first().copied()) {
            ids.entry(name.to_vec()).or_insert(id);
        }
    }
    ids
}

/// A decimal id as strtoul reads one: leading blanks and a `+` allowed, at least one digit.
fn decimal_id(field: &[u8]) -> Option<u32> {
    let field = field.trim_ascii_start();
    let digits = field.strip_prefix(b"+").unwrap_or(field);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// One half of an owner: the id if given, else the name looked up in the account file (passwd
/// for "user", group for "group"), else `default`.
fn owner_id(
    at: &JsonPath,
    path: &str,
    field: &str,
    id: Option<i64>,
    name: Option<&str>,
    default: u32,
    lookup: impl FnOnce(&str) -> Result<Option<u32>, ApplyError>,
) -> Result<u32, ApplyError> {
    let file = if field == "user" { "passwd" } else { "group" };
    match (id, name) {
        (Some(id), _) => {
            u32::try_from(id).map_err(|_| ApplyError::new(at, path, ErrorKind::UnknownOwner, format!("{field}.id {id} is not a valid id")))
        }
        (None, Some(name)) if !name.is_empty() => lookup(name)?.ok_or_else(|| {
            ApplyError::new(
                at,
                path,
                ErrorKind::UnknownOwner,
                format!("no {field} {name:?} in the root's /etc/{file}: add it under passwd.{field}s or give {field}.id"),
            )
        }),
        _ => Ok(default),
    }
}

/// The mode a regular file ends with in Ignition, which sets the mode and then the owner:
/// Linux's chown clears setuid, and setgid when the group may execute, even for root.
pub(crate) fn mode_after_chown(mode: u32) -> u32 {
    let without_setuid = mode & !0o4000;
    if without_setuid & 0o010 != 0 {
        without_setuid & !0o2000
    } else {
        without_setuid
    }
}

fn config_mode(mode: Option<i64>) -> Option<u32> {
    mode.and_then(|mode| u32::try_from(mode).ok()).map(|mode| mode & 0o7777)
}

enum EntryKind<'c> {
    Directory(&'c Directory),
    File(&'c File),
    Link(&'c Link),
}

struct Entry<'c> {
    at: JsonPath,
    path: String,
    kind: EntryKind<'c>,
}

pub(crate) fn plan_storage(planner: &mut Planner, storage: &Storage, owners: &mut Owners, unit_paths: &[String]) -> Result<(), ApplyError> {
    let storage_path = JsonPath::root().field("storage");
    let mut entries = Vec::new();
    let mut hard_links = Vec::new();
    let mut seen: HashMap<String, JsonPath> = HashMap::new();
    let directories =
        storage.directories.iter().flatten().enumerate().map(|(index, entry)| ("directories", index, &entry.path, EntryKind::Directory(entry)));
    let files = storage.files.iter().flatten().enumerate().map(|(index, entry)| ("files", index, &entry.path, EntryKind::File(entry)));
    let links = storage.links.iter().flatten().enumerate().map(|(index, entry)| ("links", index, &entry.path, EntryKind::Link(entry)));
    for (list, index, path, kind) in directories.chain(files).chain(links) {
        let at = storage_path.field(list).index(index);
        let resolved = planner.resolve_on_disk(&at, path)?;
        if let Some(other) = seen.get(&resolved) {
            return Err(ApplyError::new(&at, &resolved, ErrorKind::Duplicate, format!("{other} resolves to the same path: keep one of them")));
        }
        seen.insert(resolved.clone(), at.clone());
        let entry = Entry { at, path: resolved, kind };
        match entry.kind {
            EntryKind::Link(link) if link.hard == Some(true) => hard_links.push(entry),
            _ => entries.push(entry),
        }
    }
    entries.sort_by_key(|entry| root::depth(&entry.path));

    let mut expected: HashSet<String> = seen.into_keys().collect();
    for unit_path in unit_paths {
        expected.insert(planner.resolve_on_disk(&storage_path, unit_path)?);
    }
    let implied: HashSet<String> = expected.iter().flat_map(|path| root::ancestors(path)).map(str::to_owned).collect();
    let written = Written { expected: &expected, implied: &implied };

    for entry in entries.iter().chain(&hard_links) {
        match entry.kind {
            EntryKind::Directory(directory) => plan_directory(planner, entry, directory, owners, &written)?,
            EntryKind::File(file) => plan_file(planner, entry, file, owners)?,
            EntryKind::Link(link) => plan_link(planner, entry, link, owners)?,
        }
    }
    Ok(())
}

/// The paths this config writes and their ancestors: what an overwritten directory may hold
/// for the plan to leave it in place.
struct Written<'a> {
    expected: &'a HashSet<String>,
    implied: &'a HashSet<String>,
}

fn exists_error(entry: &Entry, node: &Node, what: &str) -> ApplyError {
    ApplyError::new(
        &entry.at,
        &entry.path,
        ErrorKind::Exists,
        format!("a {} is already there{what} and overwrite is false: set overwrite to true to replace it, or remove it", kind_name(node.kind)),
    )
}

fn plan_file(planner: &mut Planner, entry: &Entry, file: &File, owners: &mut Owners) -> Result<(), ApplyError> {
    let (at, path) = (&entry.at, entry.path.as_str());
    let source = file.contents.as_ref().filter(|contents| contents.source.is_some());
    let contents = source.map(|resource| planner.fetch(&at.field("contents"), path, resource)).transpose()?;
    let mut fragments = Vec::new();
    for (index, resource) in file.append.iter().flatten().enumerate() {
        fragments.extend(planner.fetch(&at.field("append").index(index), path, resource)?);
    }
    let has_appends = file.append.as_ref().is_some_and(|append| !append.is_empty());
    let has_source = contents.is_some();
    let mode = config_mode(file.mode);
    // What Ignition makes when nothing is there (or after it removed what was): the contents
    // and fragments, 0644 unless told, root's unless told.
    let mut fresh = contents.unwrap_or_default();
    fresh.extend_from_slice(&fragments);
    let fresh_owner = owners.resolve(planner, at, path, file.user.as_ref(), file.group.as_ref(), ROOT_OWNER)?;
    let fresh_attrs = Attrs { mode: mode_after_chown(mode.unwrap_or(DEFAULT_FILE_MODE)), uid: fresh_owner.0, gid: fresh_owner.1 };
    let write_fresh = |planner: &mut Planner, bytes: Vec<u8>| {
        planner.push(
            at,
            Op::WriteFile {
                path: path.to_owned(),
                contents: Contents { bytes: Arc::new(bytes), secret: false },
                attrs: fresh_attrs,
                append_record: None,
            },
        )
    };

    match planner.probe(at, path)? {
        Some(node) if file.overwrite == Some(true) => {
            if planner.holds(at, path, &node, fresh_attrs, &fresh)? {
                return Ok(());
            }
            // A regular file is replaced by the rename; anything else must go first.
            if node.kind != Kind::File {
                planner.push(at, Op::Remove { path: path.to_owned() })?;
            }
            write_fresh(planner, fresh)
        }
        Some(node) if node.kind != Kind::File => Err(exists_error(entry, &node, "")),
        // Ignition refuses any existing file here; one that is already the result is a rerun.
        Some(node) if has_source => match planner.holds(at, path, &node, fresh_attrs, &fresh)? {
            true => Ok(()),
            false => Err(exists_error(entry, &node, " with other contents, mode or owner")),
        },
        Some(node) => {
            let owner = owners.resolve(planner, at, path, file.user.as_ref(), file.group.as_ref(), (node.attrs.uid, node.attrs.gid))?;
            let attrs = Attrs { mode: mode_after_chown(mode.unwrap_or(node.attrs.mode)), uid: owner.0, gid: owner.1 };
            if has_appends {
                return planner.plan_append(at, path, Some(&node), &fragments, attrs, false);
            }
            if node.attrs != attrs {
                planner.push(at, Op::SetAttrs { path: path.to_owned(), attrs })?;
            }
            Ok(())
        }
        None if has_appends && !has_source => planner.plan_append(at, path, None, &fragments, fresh_attrs, false),
        None => {
            planner.ensure_parents(at, path, default_dir_attrs())?;
            write_fresh(planner, fresh)
        }
    }
}

fn plan_directory(planner: &mut Planner, entry: &Entry, directory: &Directory, owners: &mut Owners, written: &Written) -> Result<(), ApplyError> {
    let (at, path) = (&entry.at, entry.path.as_str());
    let mode = config_mode(directory.mode);
    let existing = planner.probe(at, path)?;
    let new_attrs = |planner: &Planner, owners: &mut Owners| -> Result<Attrs, ApplyError> {
        let owner = owners.resolve(planner, at, path, directory.user.as_ref(), directory.group.as_ref(), ROOT_OWNER)?;
        Ok(Attrs { mode: mode.unwrap_or(super::DEFAULT_DIRECTORY_MODE), uid: owner.0, gid: owner.1 })
    };
    match existing {
        Some(node) if directory.overwrite == Some(true) => {
            // Ignition empties the path and makes the directory anew; one that already holds
            // only what this config puts there is that result.
            let attrs = new_attrs(planner, owners)?;
            if node.kind == Kind::Dir && node.attrs == attrs && holds_only_written(planner, at, path, written)? {
                return Ok(());
            }
            planner.push(at, Op::Remove { path: path.to_owned() })?;
            planner.push(at, Op::CreateDir { path: path.to_owned(), attrs })?;
        }
        Some(node) if node.kind == Kind::Dir => {
            let owner = owners.resolve(planner, at, path, directory.user.as_ref(), directory.group.as_ref(), (node.attrs.uid, node.attrs.gid))?;
            let attrs = Attrs { mode: mode.unwrap_or(node.attrs.mode), uid: owner.0, gid: owner.1 };
            if node.attrs != attrs {
                planner.push(at, Op::SetAttrs { path: path.to_owned(), attrs })?;
            }
        }
        Some(node) => return Err(exists_error(entry, &node, "")),
        None => {
            let attrs = new_attrs(planner, owners)?;
            planner.ensure_parents(at, path, default_dir_attrs())?;
            planner.push(at, Op::CreateDir { path: path.to_owned(), attrs })?;
        }
    }
    Ok(())
}

/// True when everything under the on-disk directory `path` is something the config writes, or
/// a directory Ignition would create on the way to one (0755, root's).
fn holds_only_written(planner: &Planner, at: &JsonPath, path: &str, written: &Written) -> Result<bool, ApplyError> {
    let names = match planner.root().list_dir(path) {
        Ok(names) => names,
        // No config entry can name it, so it is not something the config writes.
        Err(error) if root::is_not_utf8(&error) => return Ok(false),
        Err(error) => return Err(ApplyError::new(at, path, ErrorKind::Io, format!("cannot list the directory: {error}"))),
    };
    for name in names {
        let child = if path == "/" { format!("/{name}") } else { format!("{path}/{name}") };
        let Some(node) = planner.probe(at, &child)? else { continue };
        let is_written = written.expected.contains(&child);
        if !is_written && !written.implied.contains(&child) {
            return Ok(false);
        }
        if node.kind == Kind::Dir {
            if !is_written && node.attrs != default_dir_attrs() {
                return Ok(false);
            }
            if !holds_only_written(planner, at, &child, written)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Ignition compares symlink targets after Go's `filepath.Clean`.
fn same_target(existing: &str, wanted: &str) -> bool {
    existing.starts_with('/') == wanted.starts_with('/') && root::clean(existing) == root::clean(wanted)
}

fn plan_link(planner: &mut Planner, entry: &Entry, link: &Link, owners: &mut Owners) -> Result<(), ApplyError> {
    let (at, path) = (&entry.at, entry.path.as_str());
    let Some(target) = link.target.as_deref() else {
        return Err(ApplyError::new(at, path, ErrorKind::MissingTarget, "the link has no target: set target"));
    };
    let existing = planner.probe(at, path)?;
    if link.hard == Some(true) {
        let target_path = planner.resolve_on_disk(&at.field("target"), target)?;
        let target_node = planner.probe(at, &target_path)?;
        let same_inode = |node: &Node| match (node.on_disk, target_node.as_ref().and_then(|target| target.on_disk)) {
            (Some(link_meta), Some(target_meta)) => (link_meta.dev, link_meta.ino) == (target_meta.dev, target_meta.ino),
            _ => false,
        };
        match existing {
            Some(node) if same_inode(&node) => return Ok(()),
            Some(_) if link.overwrite == Some(true) => planner.push(at, Op::Remove { path: path.to_owned() })?,
            Some(node) => return Err(exists_error(entry, &node, " that is not the target")),
            None => {}
        }
        match &target_node {
            None => {
                return Err(ApplyError::new(
                    at,
                    path,
                    ErrorKind::MissingTarget,
                    format!("the hard link's target {target_path} does not exist: create it first"),
                ));
            }
            // The kernel refuses it (EPERM) only when the link is made, after earlier writes.
            Some(node) if node.kind == Kind::Dir => {
                return Err(ApplyError::new(
                    at,
                    path,
                    ErrorKind::WrongType,
                    format!("the hard link's target {target_path} is a directory, which cannot be hard-linked: use a soft link"),
                ));
            }
            Some(_) => {}
        }
        planner.ensure_parents(at, path, default_dir_attrs())?;
        planner.push(at, Op::HardLink { path: path.to_owned(), target: target_path })?;
        return Ok(());
    }

    // Ignition's default owner for a symlink is what stat() finds through it, from outside the
    // root: a relative target is the root's file, an absolute one the initrd's, which is root's
    // (or missing, which Ignition also takes as root's).
    let target_owner = if target.starts_with('/') {
        ROOT_OWNER
    } else {
        let target_in_root = root::clean(&format!("{}/{target}", root::split_parent(path).map_or("/", |(parent, _)| parent)));
        match planner.probe(at, &target_in_root)? {
            Some(node) if node.kind != Kind::Symlink => (node.attrs.uid, node.attrs.gid),
            _ => planner.root().stat(&target_in_root).ok().flatten().map_or(ROOT_OWNER, |meta| (meta.uid, meta.gid)),
        }
    };
    let owner = owners.resolve(planner, at, path, link.user.as_ref(), link.group.as_ref(), target_owner)?;
    match existing {
        Some(node) if link.overwrite == Some(true) => {
            if node.kind == Kind::Symlink && planner.link_target(at, path, &node)? == target && (node.attrs.uid, node.attrs.gid) == owner {
                return Ok(());
            }
            planner.push(at, Op::Remove { path: path.to_owned() })?;
        }
        Some(node) if node.kind == Kind::Symlink => {
            let existing_target = planner.link_target(at, path, &node)?;
            if same_target(&existing_target, target) {
                return Ok(());
            }
            return Err(exists_error(entry, &node, &format!(" pointing to {existing_target:?}")));
        }
        Some(node) => return Err(exists_error(entry, &node, "")),
        None => {}
    }
    planner.ensure_parents(at, path, default_dir_attrs())?;
    planner.push(at, Op::Symlink { path: path.to_owned(), target: target.to_owned(), owner })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{plan, ErrorKind, APPEND_RECORD};
    use std::io::Write;

    fn storage(json: &str) -> String {
        format!(r#"{{"ignition":{{"version":"3.4.0"}},"storage":{json}}}"#)
    }

    fn plan_error(root: &crate::root::Root, json: &str) -> super::ApplyError {
        plan(&config(&storage(json)), root, true).unwrap_err()
    }

    #[test]
    fn new_nodes_get_ignitions_default_modes_and_root_as_owner() {
        let (path, root) = fresh_root("defaults");
        apply(&root, &storage(r#"{"files":[{"path":"/a/b/f","contents":{"source":"data:,x"}}],"directories":[{"path":"/d/e"}]}"#));
        assert_eq!(mode_owner(&path.join("a/b/f")), (0o644, 0, 0));
        assert_eq!(mode_owner(&path.join("a")), (0o755, 0, 0));
        assert_eq!(mode_owner(&path.join("d/e")), (0o755, 0, 0));
        assert_eq!(std::fs::read_to_string(path.join("a/b/f")).unwrap(), "x");
    }

    #[test]
    fn a_directory_entry_is_made_before_the_deeper_file_whatever_the_config_order() {
        let (path, root) = fresh_root("depth-order");
        let json = storage(r#"{"files":[{"path":"/p/q/f","contents":{"source":"data:,x"}}],"directories":[{"path":"/p/q","mode":448}]}"#);
        let plan = apply(&root, &json);
        assert_eq!(mode_owner(&path.join("p/q")), (0o700, 0, 0));
        assert!(!plan.to_string().contains("chown/chmod"), "{plan}");
    }

    #[test]
    fn only_one_of_user_and_group_keeps_the_other_from_what_is_there() {
        let (path, root) = fresh_root("owner-half");
        std::fs::write(path.join("existing"), "x").unwrap();
        std::os::unix::fs::chown(path.join("existing"), Some(3), Some(4)).unwrap();
        apply(&root, &storage(r#"{"files":[{"path":"/existing","user":{"id":5}},{"path":"/new","contents":{"source":"data:,"},"group":{"id":6}}]}"#));
        assert_eq!(mode_owner(&path.join("existing")), (0o644, 5, 4));
        assert_eq!(mode_owner(&path.join("new")), (0o644, 0, 6));
    }

    #[test]
    fn owners_by_name_must_exist_in_the_roots_accounts() {
        let (_, root) = fresh_root("owner-name");
        let error = plan_error(&root, r#"{"files":[{"path":"/f","contents":{"source":"data:,"},"user":{"name":"nobody-here"}}]}"#);
        assert_eq!(error.kind, ErrorKind::UnknownOwner);
        assert_eq!(error.config_path.as_str(), "$.storage.files[0]");
        let error = plan_error(&root, r#"{"directories":[{"path":"/d","group":{"name":"nogroup-here"}}]}"#);
        assert_eq!(error.kind, ErrorKind::UnknownOwner);
    }

    #[test]
    fn setuid_is_lost_as_ignitions_chown_after_chmod_loses_it_on_files_but_not_directories() {
        let (path, root) = fresh_root("setuid");
        apply(
            &root,
            &storage(
                r#"{"files":[{"path":"/s","mode":2541,"contents":{"source":"data:,"}},{"path":"/g","mode":1460,"contents":{"source":"data:,"}}],
            "directories":[{"path":"/d","mode":3565}]}"#,
            ),
        );
        assert_eq!(mode_owner(&path.join("s")).0, 0o755);
        assert_eq!(mode_owner(&path.join("g")).0, 0o2664);
        assert_eq!(mode_owner(&path.join("d")).0, 0o6755);
    }

    #[test]
    fn an_existing_file_with_other_contents_is_refused_without_overwrite_and_kept_when_identical() {
        let (path, root) = fresh_root("exists");
        std::fs::write(path.join("f"), "old").unwrap();
        let error = plan_error(&root, r#"{"files":[{"path":"/f","contents":{"source":"data:,new"}}]}"#);
        assert_eq!(error.kind, ErrorKind::Exists);
        assert!(error.to_string().contains("set overwrite to true"), "{error}");
        let same = plan(&config(&storage(r#"{"files":[{"path":"/f","contents":{"source":"data:,old"}}]}"#)), &root, true).unwrap();
        assert!(steps_besides_result(&same).is_empty(), "{same}");
    }

    #[test]
    fn overwrite_replaces_a_directory_with_the_file() {
        let (path, root) = fresh_root("overwrite-dir");
        std::fs::create_dir_all(path.join("f/inner")).unwrap();
        let refused = plan_error(&root, r#"{"files":[{"path":"/f","contents":{"source":"data:,x"}}]}"#);
        assert_eq!(refused.kind, ErrorKind::Exists);
        apply(&root, &storage(r#"{"files":[{"path":"/f","contents":{"source":"data:,x"},"overwrite":true}]}"#));
        assert_eq!(std::fs::read_to_string(path.join("f")).unwrap(), "x");
    }

    #[test]
    fn a_file_without_contents_keeps_what_is_there_and_only_changes_its_mode() {
        let (path, root) = fresh_root("no-contents");
        std::fs::write(path.join("f"), "kept").unwrap();
        let plan = apply(&root, &storage(r#"{"files":[{"path":"/f","mode":384},{"path":"/empty"}]}"#));
        assert_eq!(std::fs::read_to_string(path.join("f")).unwrap(), "kept");
        assert_eq!(mode_owner(&path.join("f")).0, 0o600);
        assert_eq!(std::fs::read(path.join("empty")).unwrap(), b"");
        assert!(plan.to_string().contains("chown/chmod /f 0600 0:0"), "{plan}");
    }

    #[test]
    fn appends_go_after_the_contents_in_order_and_once() {
        let (path, root) = fresh_root("append");
        std::fs::write(path.join("etc/existing"), "0").unwrap();
        std::fs::set_permissions(path.join("etc/existing"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let json = storage(
            r#"{"files":[{"path":"/etc/existing","append":[{"source":"data:,1"},{"source":"data:,2"}]},
                         {"path":"/etc/new","append":[{"source":"data:,a"}]},
                         {"path":"/etc/both","contents":{"source":"data:,c"},"append":[{"source":"data:,d"}]}]}"#,
        );
        apply(&root, &json);
        apply(&root, &json);
        assert_eq!(std::fs::read_to_string(path.join("etc/existing")).unwrap(), "012");
        assert_eq!(mode_owner(&path.join("etc/existing")).0, 0o600);
        assert_eq!(std::fs::read_to_string(path.join("etc/new")).unwrap(), "a");
        assert_eq!(std::fs::read_to_string(path.join("etc/both")).unwrap(), "cd");
    }

    #[test]
    fn a_file_changed_after_its_append_is_appended_to_again() {
        let (path, root) = fresh_root("append-changed");
        let json = storage(r#"{"files":[{"path":"/etc/log","append":[{"source":"data:,x"}]}]}"#);
        apply(&root, &json);
        assert!(root.xattr("/etc/log", APPEND_RECORD).unwrap().is_some());
        std::fs::write(path.join("etc/log"), "rewritten").unwrap();
        apply(&root, &json);
        assert_eq!(std::fs::read_to_string(path.join("etc/log")).unwrap(), "rewrittenx");
    }

    #[test]
    fn another_configs_fragments_are_appended_to_an_appended_file_and_once() {
        let (path, root) = fresh_root("append-another");
        std::fs::write(path.join("etc/log"), "0").unwrap();
        let first = storage(r#"{"files":[{"path":"/etc/log","append":[{"source":"data:,1"}]}]}"#);
        let second = storage(r#"{"files":[{"path":"/etc/log","append":[{"source":"data:,2"}]}]}"#);
        apply(&root, &first);
        apply(&root, &second);
        apply(&root, &second);
        assert_eq!(std::fs::read_to_string(path.join("etc/log")).unwrap(), "012");
    }

    #[test]
    fn a_power_cut_before_the_rename_leaves_the_file_unappended_and_the_rerun_appends_once() {
        let (path, root) = fresh_root("append-power-cut");
        std::fs::write(path.join("etc/log"), "0").unwrap();
        let json = storage(r#"{"files":[{"path":"/etc/log","append":[{"source":"data:,1"}]}]}"#);
        let plan = plan(&config(&json), &root, true).unwrap();
        // The cut on a filesystem without O_TMPFILE: a named temporary got the contents and the
        // record, the rename never happened.
        let super::Op::WriteFile { contents, attrs, append_record: Some(record), .. } = &plan.steps()[0].op else { panic!("{plan}") };
        let stray = "/etc/.keel-tmp-cut";
        root.write_file(stray, &contents.bytes, *attrs, Some((APPEND_RECORD, record.as_bytes()))).unwrap();
        apply(&root, &json);
        apply(&root, &json);
        assert_eq!(std::fs::read_to_string(path.join("etc/log")).unwrap(), "01");
    }

    #[test]
    fn gzip_contents_are_decompressed_and_verified() {
        let (path, root) = fresh_root("gzip");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"hello").unwrap();
        let gzipped = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, encoder.finish().unwrap());
        let sha256_hello = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        apply(
            &root,
            &storage(&format!(
                r#"{{"files":[{{"path":"/z","contents":{{"source":"data:;base64,{gzipped}","compression":"gzip","verification":{{"hash":"sha256-{sha256_hello}"}}}}}}]}}"#
            )),
        );
        assert_eq!(std::fs::read_to_string(path.join("z")).unwrap(), "hello");
        let error = plan_error(
            &root,
            &format!(r#"{{"files":[{{"path":"/y","append":[{{"source":"data:,nothello","verification":{{"hash":"sha256-{sha256_hello}"}}}}]}}]}}"#),
        );
        assert_eq!((error.kind, error.config_path.as_str()), (ErrorKind::Fetch, "$.storage.files[0].append[0]"));
    }

    #[test]
    fn soft_links_keep_their_target_verbatim_and_an_existing_one_must_match() {
        let (path, root) = fresh_root("symlink");
        apply(&root, &storage(r#"{"links":[{"path":"/l/rel","target":"../etc/./x"},{"path":"/abs","target":"/nowhere"}]}"#));
        assert_eq!(std::fs::read_link(path.join("l/rel")).unwrap().to_str(), Some("../etc/./x"));
        let same = plan(&config(&storage(r#"{"links":[{"path":"/l/rel","target":"../etc/x"}]}"#)), &root, true).unwrap();
        assert!(steps_besides_result(&same).is_empty(), "{same}");
        let error = plan_error(&root, r#"{"links":[{"path":"/abs","target":"/elsewhere"}]}"#);
        assert_eq!(error.kind, ErrorKind::Exists);
        apply(&root, &storage(r#"{"links":[{"path":"/abs","target":"/elsewhere","overwrite":true}]}"#));
        assert_eq!(std::fs::read_link(path.join("abs")).unwrap().to_str(), Some("/elsewhere"));
    }

    #[test]
    fn a_soft_link_with_a_relative_target_is_owned_like_the_target_unless_told_otherwise() {
        let (path, root) = fresh_root("symlink-owner");
        std::fs::write(path.join("etc/target"), "").unwrap();
        std::os::unix::fs::chown(path.join("etc/target"), Some(8), Some(9)).unwrap();
        apply(
            &root,
            &storage(
                r#"{"links":[{"path":"/to-target","target":"etc/target"},{"path":"/mine","target":"etc/target","user":{"id":1}},
                             {"path":"/absolute","target":"/etc/target"},{"path":"/dangling","target":"none"}]}"#,
            ),
        );
        let owner = |name: &str| {
            let (_, uid, gid) = mode_owner(&path.join(name));
            (uid, gid)
        };
        assert_eq!(owner("to-target"), (8, 9));
        assert_eq!(owner("mine"), (1, 9));
        assert_eq!(owner("absolute"), (0, 0));
        assert_eq!(owner("dangling"), (0, 0));
    }

    #[test]
    fn hard_links_come_last_and_may_point_at_deeper_files() {
        let (path, root) = fresh_root("hardlink");
        let json =
            storage(r#"{"links":[{"path":"/h","target":"/a/b/c/f","hard":true}],"files":[{"path":"/a/b/c/f","contents":{"source":"data:,x"}}]}"#);
        apply(&root, &json);
        let inode = |name: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path.join(name)).unwrap());
        assert_eq!(inode("h"), inode("a/b/c/f"));
        let again = plan(&config(&json), &root, true).unwrap();
        assert!(steps_besides_result(&again).is_empty(), "{again}");
        let error = plan_error(&root, r#"{"links":[{"path":"/h2","target":"/missing","hard":true}]}"#);
        assert_eq!(error.kind, ErrorKind::MissingTarget);
        std::fs::write(path.join("other"), "").unwrap();
        let error = plan_error(&root, r#"{"links":[{"path":"/other","target":"/h","hard":true}]}"#);
        assert_eq!(error.kind, ErrorKind::Exists);
    }

    #[test]
    fn an_overwritten_directory_loses_what_the_config_does_not_put_there() {
        let (path, root) = fresh_root("overwrite-directory");
        std::fs::create_dir_all(path.join("d/old/deeper")).unwrap();
        let json = storage(r#"{"directories":[{"path":"/d","overwrite":true}],"files":[{"path":"/d/sub/f","contents":{"source":"data:,x"}}]}"#);
        apply(&root, &json);
        assert!(!path.join("d/old").exists());
        assert_eq!(std::fs::read_to_string(path.join("d/sub/f")).unwrap(), "x");
        let again = plan(&config(&json), &root, true).unwrap();
        assert!(steps_besides_result(&again).is_empty(), "{again}");
        std::fs::write(path.join("d/stray"), "").unwrap();
        let wipes = plan(&config(&json), &root, true).unwrap();
        assert!(wipes.to_string().contains("remove /d\n"), "{wipes}");
    }

    #[test]
    fn an_overwritten_directory_is_made_anew_when_a_parent_on_the_way_has_another_mode() {
        let (path, root) = fresh_root("overwrite-directory-parent");
        let json = storage(r#"{"directories":[{"path":"/d","overwrite":true}],"files":[{"path":"/d/sub/f","contents":{"source":"data:,x"}}]}"#);
        apply(&root, &json);
        std::fs::set_permissions(path.join("d/sub"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        apply(&root, &json);
        assert_eq!(mode_owner(&path.join("d/sub")), (0o755, 0, 0));
    }

    #[test]
    fn an_existing_directory_keeps_its_mode_unless_one_is_given() {
        let (path, root) = fresh_root("existing-directory");
        std::fs::create_dir(path.join("d")).unwrap();
        std::fs::set_permissions(path.join("d"), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
        std::fs::write(path.join("f"), "").unwrap();
        apply(&root, &storage(r#"{"directories":[{"path":"/d","group":{"id":3}}]}"#));
        assert_eq!(mode_owner(&path.join("d")), (0o711, 0, 3));
        let error = plan_error(&root, r#"{"directories":[{"path":"/f"}]}"#);
        assert_eq!(error.kind, ErrorKind::Exists);
    }

    #[test]
    fn two_entries_reaching_one_path_through_a_symlink_are_an_error() {
        let (path, root) = fresh_root("duplicate");
        std::fs::create_dir(path.join("real")).unwrap();
        std::os::unix::fs::symlink("/real", path.join("alias")).unwrap();
        let error =
            plan_error(&root, r#"{"files":[{"path":"/real/f","contents":{"source":"data:,"}},{"path":"/alias/f","contents":{"source":"data:,"}}]}"#);
        assert_eq!((error.kind, error.config_path.as_str(), error.path.as_str()), (ErrorKind::Duplicate, "$.storage.files[1]", "/real/f"));
    }

    #[test]
    fn an_account_file_is_parsed_once_for_many_owners_by_name_and_again_after_a_step_changes_it() {
        let (path, root) = fresh_root("owners-parsed-once");
        let mut passwd = String::from("root:x:0:0::/root:/bin/sh\n");
        for index in 0..2000 {
            passwd.push_str(&format!("user{index}:x:{}:100::/home/user{index}:/bin/sh\n", 1000 + index));
        }
        std::fs::write(path.join("etc/passwd"), passwd).unwrap();
        let files: Vec<String> = (0..500)
            .map(|index| format!(r#"{{"path":"/d/f{index}","contents":{{"source":"data:,"}},"user":{{"name":"user{}"}}}}"#, index * 3))
            .collect();
        let many = config(&storage(&format!(r#"{{"files":[{}]}}"#, files.join(","))));
        let mut planner = super::Planner::new(&root);
        let mut owners = super::Owners::default();
        super::plan_storage(&mut planner, many.storage.as_ref().unwrap(), &mut owners, &[]).unwrap();
        assert_eq!(owners.users.as_ref().map(|ids| ids.parses), Some(1));
        assert!(owners.groups.is_none(), "no group was named, so /etc/group was not read");
        let plan = super::super::Plan { steps: planner.steps };
        plan.execute(&root).unwrap();
        assert_eq!(mode_owner(&path.join("d/f499")).1, 1000 + 499 * 3);

        let rewritten = storage(
            r#"{"files":[{"path":"/etc/passwd","overwrite":true,"contents":{"source":"data:,root:x:0:0::/root:/bin/sh%0Anew:x:7:7::/:/bin/sh%0A"}},
                         {"path":"/a/b/f","contents":{"source":"data:,"},"user":{"name":"new"}}]}"#,
        );
        let rewritten = config(&rewritten);
        let mut planner = super::Planner::new(&root);
        let mut owners = super::Owners::default();
        super::plan_storage(&mut planner, rewritten.storage.as_ref().unwrap(), &mut owners, &[]).unwrap();
        assert_eq!(owners.users.as_ref().map(|ids| ids.parses), Some(1), "read once the earlier entry wrote it");
        super::super::Plan { steps: planner.steps }.execute(&root).unwrap();
        assert_eq!(mode_owner(&path.join("a/b/f")).1, 7);
    }

    #[test]
    fn a_cached_account_file_is_parsed_again_after_a_step_touches_it() {
        let (path, root) = fresh_root("owners-reparsed");
        std::fs::write(path.join("etc/group"), "root:x:0:\nold:x:5:\n").unwrap();
        let mut planner = super::Planner::new(&root);
        let mut owners = super::Owners::default();
        let at = crate::report::JsonPath::root();
        let group = |name: &str| crate::config::latest::NodeGroup { id: None, name: Some(name.to_owned()) };
        assert_eq!(owners.resolve(&planner, &at, "/x", None, Some(&group("old")), (0, 0)).unwrap(), (0, 5));
        let contents = super::Contents { bytes: std::sync::Arc::new(b"root:x:0:\nnew:x:6:\n".to_vec()), secret: false };
        let attrs = crate::root::Attrs { mode: 0o644, uid: 0, gid: 0 };
        planner
            .push(&at, super::Op::WriteFile { path: "/etc/unrelated".to_owned(), contents: contents.clone(), attrs, append_record: None })
            .unwrap();
        assert_eq!(owners.resolve(&planner, &at, "/x", None, Some(&group("old")), (0, 0)).unwrap(), (0, 5));
        assert_eq!(owners.groups.as_ref().map(|ids| ids.parses), Some(1));
        planner.push(&at, super::Op::WriteFile { path: "/etc/group".to_owned(), contents, attrs, append_record: None }).unwrap();
        assert_eq!(owners.resolve(&planner, &at, "/x", None, Some(&group("new")), (0, 0)).unwrap(), (0, 6));
        assert_eq!(owners.groups.as_ref().map(|ids| ids.parses), Some(2));
    }

    #[test]
    fn names_are_looked_up_as_glibc_reads_the_account_files() {
        let passwd = b"# comment:x:1:1::/:/bin/sh\n  lead:x:2:2::/:/bin/sh\n+nis:x:3:3::/:/bin/sh\nbad:x:4x:4::/:/bin/sh\nbad:x:5:5::/:/bin/sh\n\
            first:x:6:6:caf\xe9:/:/bin/sh\nfirst:x:7:7::/:/bin/sh\nshort:x:8:8\nhalf:x:9\nbig:x:4294967296:1::/:/bin/sh\nplus:x: +10:1::/:/bin/sh\n";
        let ids = super::ids_by_name(passwd, super::PASSWD.numeric_fields);
        let id = |name: &str| ids.get(name.as_bytes()).copied();
        assert_eq!((id("lead"), id("bad"), id("first"), id("short"), id("plus")), (Some(2), Some(5), Some(6), Some(8), Some(10)));
        assert_eq!((id("# comment"), id("+nis"), id("nis"), id("half"), id("big")), (None, None, None, None, None));
        let groups = super::ids_by_name(b"wheel:x:10:a,b\nempty:x::\n", super::GROUP.numeric_fields);
        assert_eq!((groups.get(&b"wheel"[..]), groups.get(&b"empty"[..])), (Some(&10), None));
    }

    // Cases an adversarial review found; each failed before its fix.

    #[test]
    fn a_later_config_appending_other_fragments_is_not_taken_for_a_rerun() {
        let (path, root) = fresh_root("review-append-later");
        apply(&root, &storage(r#"{"files":[{"path":"/etc/motd","append":[{"source":"data:,image%0A"}]}]}"#));
        apply(&root, &storage(r#"{"files":[{"path":"/etc/motd","append":[{"source":"data:,user%0A"}]}]}"#));
        assert_eq!(std::fs::read_to_string(path.join("etc/motd")).unwrap(), "image\nuser\n");
    }

    #[test]
    fn a_hard_link_to_a_directory_is_refused_before_anything_is_written() {
        let (path, root) = fresh_root("review-hardlink-dir");
        let json = storage(r#"{"files":[{"path":"/first","contents":{"source":"data:,x"}}],"links":[{"path":"/h","target":"/etc","hard":true}]}"#);
        let error = plan(&config(&json), &root, true).unwrap_err();
        assert_eq!((error.kind, error.config_path.as_str()), (ErrorKind::WrongType, "$.storage.links[0]"), "{error}");
        assert!(!path.join("first").exists());
        std::os::unix::fs::symlink("etc", path.join("to-etc")).unwrap();
        apply(&root, &storage(r#"{"links":[{"path":"/h","target":"/to-etc","hard":true}]}"#));
        assert_eq!(std::fs::read_link(path.join("h")).unwrap().to_str(), Some("etc"), "a symlink to a directory is linked itself");
    }

    #[test]
    fn an_overwritten_directory_holding_a_name_that_is_not_utf8_is_emptied() {
        use std::os::unix::ffi::OsStrExt;
        let (path, root) = fresh_root("review-non-utf8-wipe");
        std::fs::create_dir(path.join("wiped")).unwrap();
        std::fs::write(path.join("wiped").join(std::ffi::OsStr::from_bytes(b"evil\xff")), "x").unwrap();
        apply(&root, &storage(r#"{"directories":[{"path":"/wiped","overwrite":true}]}"#));
        assert_eq!(std::fs::read_dir(path.join("wiped")).unwrap().count(), 0);
    }
}
