//! `storage.files`, `storage.directories` and `storage.links`, in Ignition's order: every
//! path's parents resolved first (symlinks in the root followed, the last component not),
//! directories, files and soft links sorted by depth (a stable sort; Ignition's is not, but
//! entries of one depth never depend on each other), hard links last, so a hard link may
//! point at a deeper file.

use super::{default_dir_attrs, kind_name, ApplyError, Contents, ErrorKind, Node, Op, Planner, DEFAULT_FILE_MODE, ROOT_OWNER};
use crate::config::latest::{Directory, File, Link, NodeGroup, NodeUser, Resource, Storage};
use crate::report::JsonPath;
use crate::resource;
use crate::root::{self, Attrs, Kind};
use crate::users;
use std::collections::{HashMap, HashSet};

/// The account files as they are once users and groups are applied, for owners given by name.
pub(crate) struct Owners {
    pub passwd: String,
    pub group: String,
}

impl Owners {
    /// The owner a node gets: ids win over names, a field left out keeps `default`'s.
    fn resolve(&self, at: &JsonPath, path: &str, user: Option<&NodeUser>, group: Option<&NodeGroup>, default: (u32, u32)) -> Result<(u32, u32), ApplyError> {
        let uid = match user {
            Some(NodeUser { id: Some(id), .. }) => id_of(at, path, "user.id", *id)?,
            Some(NodeUser { name: Some(name), .. }) if !name.is_empty() => users::uid_by_name(&self.passwd, name).ok_or_else(|| {
                ApplyError::new(at, path, ErrorKind::UnknownOwner, format!("no user {name:?} in the root's /etc/passwd: add it under passwd.users or give user.id"))
            })?,
            _ => default.0,
        };
        let gid = match group {
            Some(NodeGroup { id: Some(id), .. }) => id_of(at, path, "group.id", *id)?,
            Some(NodeGroup { name: Some(name), .. }) if !name.is_empty() => users::gid_by_name(&self.group, name).ok_or_else(|| {
                ApplyError::new(at, path, ErrorKind::UnknownOwner, format!("no group {name:?} in the root's /etc/group: add it under passwd.groups or give group.id"))
            })?,
            _ => default.1,
        };
        Ok((uid, gid))
    }
}

fn id_of(at: &JsonPath, path: &str, field: &str, id: i64) -> Result<u32, ApplyError> {
    u32::try_from(id).map_err(|_| ApplyError::new(at, path, ErrorKind::UnknownOwner, format!("{field} {id} is not a valid id")))
}

/// The mode a regular file ends with in Ignition, which sets the mode and then the owner:
/// Linux's chown clears setuid, and setgid when the group may execute, even for root.
fn mode_after_chown(mode: u32) -> u32 {
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

pub(crate) fn plan_storage(planner: &mut Planner, storage: &Storage, owners: &Owners, unit_paths: &[String]) -> Result<(), ApplyError> {
    let storage_path = JsonPath::root().field("storage");
    let mut entries = Vec::new();
    let mut hard_links = Vec::new();
    let mut seen: HashMap<String, JsonPath> = HashMap::new();
    let directories = storage.directories.iter().flatten().enumerate().map(|(index, entry)| ("directories", index, &entry.path, EntryKind::Directory(entry)));
    let files = storage.files.iter().flatten().enumerate().map(|(index, entry)| ("files", index, &entry.path, EntryKind::File(entry)));
    let links = storage.links.iter().flatten().enumerate().map(|(index, entry)| ("links", index, &entry.path, EntryKind::Link(entry)));
    for (list, index, path, kind) in directories.chain(files).chain(links) {
        let at = storage_path.field(list).index(index);
        let resolved = planner.resolve(&at, path)?;
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
        expected.insert(planner.resolve(&storage_path, unit_path)?);
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

fn fetch(at: &JsonPath, path: &str, resource: &Resource) -> Result<Vec<u8>, ApplyError> {
    resource::fetch(resource).map_err(|error| ApplyError::new(at, path, ErrorKind::Fetch, error.to_string()))
}

fn exists_error(entry: &Entry, node: &Node, what: &str) -> ApplyError {
    ApplyError::new(
        &entry.at,
        &entry.path,
        ErrorKind::Exists,
        format!("a {} is already there{what} and overwrite is false: set overwrite to true to replace it, or remove it", kind_name(node.kind)),
    )
}

fn plan_file(planner: &mut Planner, entry: &Entry, file: &File, owners: &Owners) -> Result<(), ApplyError> {
    let (at, path) = (&entry.at, entry.path.as_str());
    let source = file.contents.as_ref().filter(|contents| contents.source.is_some());
    let contents = source.map(|resource| fetch(&at.field("contents"), path, resource)).transpose()?;
    let mut fragments = Vec::new();
    for (index, resource) in file.append.iter().flatten().enumerate() {
        fragments.extend(fetch(&at.field("append").index(index), path, resource)?);
    }
    let has_appends = file.append.as_ref().is_some_and(|append| !append.is_empty());
    let mode = config_mode(file.mode);
    let new_attrs = |owner: (u32, u32)| Attrs { mode: mode_after_chown(mode.unwrap_or(DEFAULT_FILE_MODE)), uid: owner.0, gid: owner.1 };

    let existing = planner.probe(at, path)?;
    let replacing = file.overwrite == Some(true) && existing.is_some();
    match existing {
        None => {}
        Some(node) if replacing => {
            let attrs = new_attrs(owners.resolve(at, path, file.user.as_ref(), file.group.as_ref(), ROOT_OWNER)?);
            let mut desired = contents.clone().unwrap_or_default();
            desired.extend_from_slice(&fragments);
            if node.kind == Kind::File && node.attrs == attrs && planner.contents(at, path, &node)? == desired {
                return Ok(());
            }
            if node.kind != Kind::File {
                planner.push(at, Op::Remove { path: path.to_owned() });
            }
            planner.push(at, Op::WriteFile { path: path.to_owned(), contents: Contents { bytes: desired, secret: false }, attrs, record_append: false });
            return Ok(());
        }
        Some(node) if node.kind != Kind::File => return Err(exists_error(entry, &node, "")),
        Some(node) if contents.is_some() => {
            // Ignition refuses any existing file here; one that is already the result is a rerun.
            let attrs = new_attrs(owners.resolve(at, path, file.user.as_ref(), file.group.as_ref(), ROOT_OWNER)?);
            let mut desired = contents.unwrap_or_default();
            desired.extend_from_slice(&fragments);
            if node.attrs == attrs && planner.contents(at, path, &node)? == desired {
                return Ok(());
            }
            return Err(exists_error(entry, &node, " with other contents, mode or owner"));
        }
        Some(node) => {
            let owner = owners.resolve(at, path, file.user.as_ref(), file.group.as_ref(), (node.attrs.uid, node.attrs.gid))?;
            let attrs = Attrs { mode: mode_after_chown(mode.unwrap_or(node.attrs.mode)), uid: owner.0, gid: owner.1 };
            if has_appends {
                return planner.plan_append(at, path, Some(&node), &fragments, attrs, false);
            }
            if node.attrs != attrs {
                planner.push(at, Op::SetAttrs { path: path.to_owned(), attrs });
            }
            return Ok(());
        }
    }
    let attrs = new_attrs(owners.resolve(at, path, file.user.as_ref(), file.group.as_ref(), ROOT_OWNER)?);
    match contents {
        None if has_appends => planner.plan_append(at, path, None, &fragments, attrs, false),
        contents => {
            planner.ensure_parents(at, path, default_dir_attrs())?;
            let mut bytes = contents.unwrap_or_default();
            bytes.extend_from_slice(&fragments);
            planner.push(at, Op::WriteFile { path: path.to_owned(), contents: Contents { bytes, secret: false }, attrs, record_append: false });
            Ok(())
        }
    }
}

fn plan_directory(planner: &mut Planner, entry: &Entry, directory: &Directory, owners: &Owners, written: &Written) -> Result<(), ApplyError> {
    let (at, path) = (&entry.at, entry.path.as_str());
    let mode = config_mode(directory.mode);
    let existing = planner.probe(at, path)?;
    let new_attrs = || -> Result<Attrs, ApplyError> {
        let owner = owners.resolve(at, path, directory.user.as_ref(), directory.group.as_ref(), ROOT_OWNER)?;
        Ok(Attrs { mode: mode.unwrap_or(super::DEFAULT_DIRECTORY_MODE), uid: owner.0, gid: owner.1 })
    };
    match existing {
        Some(node) if directory.overwrite == Some(true) => {
            // Ignition empties the path and makes the directory anew; one that already holds
            // only what this config puts there is that result.
            let attrs = new_attrs()?;
            if node.kind == Kind::Dir && node.attrs == attrs && holds_only_written(planner, at, path, written)? {
                return Ok(());
            }
            planner.push(at, Op::Remove { path: path.to_owned() });
            planner.push(at, Op::CreateDir { path: path.to_owned(), attrs });
        }
        Some(node) if node.kind == Kind::Dir => {
            let owner = owners.resolve(at, path, directory.user.as_ref(), directory.group.as_ref(), (node.attrs.uid, node.attrs.gid))?;
            let attrs = Attrs { mode: mode.unwrap_or(node.attrs.mode), uid: owner.0, gid: owner.1 };
            if node.attrs != attrs {
                planner.push(at, Op::SetAttrs { path: path.to_owned(), attrs });
            }
        }
        Some(node) => return Err(exists_error(entry, &node, "")),
        None => {
            let attrs = new_attrs()?;
            planner.ensure_parents(at, path, default_dir_attrs())?;
            planner.push(at, Op::CreateDir { path: path.to_owned(), attrs });
        }
    }
    Ok(())
}

/// True when everything under the on-disk directory `path` is something the config writes, or
/// a directory Ignition would create on the way to one (0755, root's).
fn holds_only_written(planner: &Planner, at: &JsonPath, path: &str, written: &Written) -> Result<bool, ApplyError> {
    let names = planner.root().list_dir(path).map_err(|error| ApplyError::new(at, path, ErrorKind::Io, format!("cannot list the directory: {error}")))?;
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

fn plan_link(planner: &mut Planner, entry: &Entry, link: &Link, owners: &Owners) -> Result<(), ApplyError> {
    let (at, path) = (&entry.at, entry.path.as_str());
    let Some(target) = link.target.as_deref() else {
        return Err(ApplyError::new(at, path, ErrorKind::MissingTarget, "the link has no target: set target"));
    };
    let existing = planner.probe(at, path)?;
    if link.hard == Some(true) {
        let target_path = planner.resolve(&at.field("target"), target)?;
        let target_node = planner.probe(at, &target_path)?;
        let same_inode = |node: &Node| match (node.on_disk, target_node.as_ref().and_then(|target| target.on_disk)) {
            (Some(link_meta), Some(target_meta)) => (link_meta.dev, link_meta.ino) == (target_meta.dev, target_meta.ino),
            _ => false,
        };
        match existing {
            Some(node) if same_inode(&node) => return Ok(()),
            Some(_) if link.overwrite == Some(true) => planner.push(at, Op::Remove { path: path.to_owned() }),
            Some(node) => return Err(exists_error(entry, &node, " that is not the target")),
            None => {}
        }
        if target_node.is_none() {
            return Err(ApplyError::new(at, path, ErrorKind::MissingTarget, format!("the hard link's target {target_path} does not exist: create it first")));
        }
        planner.ensure_parents(at, path, default_dir_attrs())?;
        planner.push(at, Op::HardLink { path: path.to_owned(), target: target_path });
        return Ok(());
    }

    // Ignition's default owner for a symlink is what stat() finds through it: the target's.
    let target_in_root = match target.strip_prefix('/') {
        Some(_) => root::clean(target),
        None => root::clean(&format!("{}/{target}", root::split_parent(path).map_or("/", |(parent, _)| parent))),
    };
    let target_owner = match planner.probe(at, &target_in_root)? {
        Some(node) if node.kind != Kind::Symlink => (node.attrs.uid, node.attrs.gid),
        _ => planner.root().stat(&target_in_root).ok().flatten().map_or(ROOT_OWNER, |meta| (meta.uid, meta.gid)),
    };
    let owner = owners.resolve(at, path, link.user.as_ref(), link.group.as_ref(), target_owner)?;
    match existing {
        Some(node) if link.overwrite == Some(true) => {
            if node.kind == Kind::Symlink && planner.link_target(at, path, &node)? == target && (node.attrs.uid, node.attrs.gid) == owner {
                return Ok(());
            }
            planner.push(at, Op::Remove { path: path.to_owned() });
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
    planner.push(at, Op::Symlink { path: path.to_owned(), target: target.to_owned(), owner });
    Ok(())
}
