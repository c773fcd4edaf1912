//! A directory that every write of an apply stays inside. The root is held as a directory fd;
//! every path is opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` up to its
//! parent, and the final component is touched with an `*at` call that does not follow it. A
//! symlink in the root, absolute or relative, in a parent or as the final component, can
//! therefore never send a write outside: the kernel resolves it as if the root were `/`.
//!
//! Paths here are the config's paths: absolute, `/`-separated, as seen from inside the root.

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Symlinks followed while resolving one path before giving up, as the kernel's own limit.
pub const MAX_SYMLINK_HOPS: usize = 40;

const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// What `lstat` says about a node, reduced to what an apply compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
}

/// Mode and owner a node is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Parent directories kept open: an apply writes many files into few directories, and
/// resolving each parent anew would cost more than the write.
const CACHED_DIRECTORIES: usize = 64;

pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    /// Directories opened by path. Every fd was opened confined to the root and stays inside
    /// it; the cache is dropped whenever something is removed or moved, or a symlink is
    /// replaced, so a path never names a directory that has since been replaced.
    directories: RefCell<HashMap<String, Rc<OwnedFd>>>,
}

/// The path's components after lexical clean-up of `.` and empty components; `..` is kept,
/// for the resolver to apply against what it has resolved so far.
fn raw_components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|component| !component.is_empty() && *component != ".")
}

/// `path` as a clean absolute path; `..` is applied lexically and stops at `/`.
pub fn clean(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for component in raw_components(path) {
        if component == ".." {
            kept.pop();
        } else {
            kept.push(component);
        }
    }
    format!("/{}", kept.join("/"))
}

/// The parent of a clean absolute path and its final component; `None` for `/`.
pub fn split_parent(path: &str) -> Option<(&str, &str)> {
    let (parent, name) = path.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

/// The paths of every ancestor of a clean absolute path, outermost first, without `/`.
/// `path` with every symlink in its parents resolved inside the root (the final component is
/// not followed), as the kernel resolves for `RESOLVE_IN_ROOT`: `symlink_target` says whether a
/// path is a symlink and where it points, so the same walk serves the disk ([`Root`]) and a plan
/// (the root as earlier steps will leave it). Components that do not exist are kept as written;
/// more than [`MAX_SYMLINK_HOPS`] symlinks give `too_many()`.
pub fn resolve_parents_with<E>(
    path: &str,
    mut symlink_target: impl FnMut(&str) -> Result<Option<String>, E>,
    too_many: impl FnOnce() -> E,
) -> Result<String, E> {
    let clean_path = clean(path);
    let Some((parent, last)) = split_parent(&clean_path) else { return Ok(clean_path) };
    let mut pending: Vec<String> = raw_components(parent).rev().map(str::to_owned).collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        if component == ".." {
            resolved.pop();
            continue;
        }
        resolved.push(component);
        let Some(target) = symlink_target(&format!("/{}", resolved.join("/")))? else { continue };
        hops += 1;
        if hops > MAX_SYMLINK_HOPS {
            return Err(too_many());
        }
        resolved.pop();
        if target.starts_with('/') {
            resolved.clear();
        }
        pending.extend(raw_components(&target).rev().map(str::to_owned));
    }
    resolved.push(last.to_owned());
    Ok(format!("/{}", resolved.join("/")))
}

pub fn ancestors(path: &str) -> Vec<&str> {
    path.match_indices('/').filter(|(index, _)| *index > 0).filter_map(|(index, _)| path.get(..index)).collect()
}

/// How deep a clean absolute path is: `/` is 0, `/a` is 1.
pub fn depth(path: &str) -> usize {
    raw_components(path).count()
}

fn relative(path: &str) -> &str {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() {
        "."
    } else {
        trimmed
    }
}

fn kind_of(file_type: FileType) -> Kind {
    match file_type {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// A node's type as a message names it.
fn type_name(file_type: FileType) -> &'static str {
    match file_type {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a fifo",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "a node of unknown type",
    }
}

fn meta_of(stat: &rustix::fs::Stat) -> Meta {
    Meta {
        kind: kind_of(FileType::from_raw_mode(stat.st_mode)),
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid,
        gid: stat.st_gid,
        dev: stat.st_dev,
        ino: stat.st_ino,
        size: u64::try_from(stat.st_size).unwrap_or(0),
    }
}

/// A name or symlink target in the root that keel cannot carry: paths are text from the config
/// to the plan, and a lossy decoding would name another node (or none), so the node would be
/// silently skipped, or a copied link would point elsewhere.
#[derive(Debug)]
struct NotUtf8(String);

impl std::fmt::Display for NotUtf8 {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: keel handles only UTF-8 names and targets, rename it", self.0)
    }
}

impl std::error::Error for NotUtf8 {}

fn not_utf8(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, NotUtf8(what))
}

/// True when `error` says a name or symlink target in the root is not UTF-8.
pub fn is_not_utf8(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<NotUtf8>())
}

/// Bytes in quotes, anything but printable ASCII escaped, for a message.
fn quoted(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

fn absent(errno: Errno) -> bool {
    errno == Errno::NOENT
}

fn uid(raw: u32) -> Option<rustix::fs::Uid> {
    Some(rustix::fs::Uid::from_raw(raw))
}

fn gid(raw: u32) -> Option<rustix::fs::Gid> {
    Some(rustix::fs::Gid::from_raw(raw))
}

static TEMPORARY_NAMES: AtomicU64 = AtomicU64::new(0);
static PROCESS_ID: OnceLock<u32> = OnceLock::new();

fn temporary_name() -> String {
    let process = PROCESS_ID.get_or_init(std::process::id);
    format!(".keel-tmp-{process}-{}", TEMPORARY_NAMES.fetch_add(1, Ordering::Relaxed))
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Root { fd, path: path.to_owned(), directories: RefCell::new(HashMap::new()) })
    }

    /// Where the root is on the host, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory at `path`, every symlink on the way resolved inside the root.
    fn open_dir(&self, path: &str) -> io::Result<OwnedFd> {
        Ok(rustix::fs::openat2(&self.fd, relative(path), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), IN_ROOT)?)
    }

    fn parent(&self, path: &str) -> io::Result<(Rc<OwnedFd>, String)> {
        let clean_path = clean(path);
        let (parent, name) =
            split_parent(&clean_path).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the root itself is not a file or link"))?;
        if let Some(dir) = self.directories.borrow().get(parent) {
            return Ok((Rc::clone(dir), name.to_owned()));
        }
        let dir = Rc::new(self.open_dir(parent)?);
        let mut directories = self.directories.borrow_mut();
        if directories.len() >= CACHED_DIRECTORIES {
            directories.clear();
        }
        directories.insert(parent.to_owned(), Rc::clone(&dir));
        Ok((dir, name.to_owned()))
    }

    /// The node at `path` without following a final symlink; `None` when nothing is there.
    pub fn lstat(&self, path: &str) -> io::Result<Option<Meta>> {
        if clean(path) == "/" {
            return Ok(Some(meta_of(&rustix::fs::fstat(&self.fd)?)));
        }
        let (dir, name) = match self.parent(path) {
            Ok(found) => found,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(meta_of(&stat))),
            Err(errno) if absent(errno) => Ok(None),
            Err(errno) => Err(errno.into()),
        }
    }

    /// The node at `path` with every symlink followed inside the root.
    pub fn stat(&self, path: &str) -> io::Result<Option<Meta>> {
        match rustix::fs::openat2(&self.fd, relative(path), OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), IN_ROOT) {
            Ok(fd) => Ok(Some(meta_of(&rustix::fs::fstat(&fd)?))),
            Err(errno) if absent(errno) => Ok(None),
            Err(errno) => Err(errno.into()),
        }
    }

    /// The target of the symlink at `path`; an error satisfying [`is_not_utf8`] when it is not UTF-8.
    pub fn read_link(&self, path: &str) -> io::Result<String> {
        let (dir, name) = self.parent(path)?;
        let target = rustix::fs::readlinkat(&dir, name.as_str(), Vec::new())?;
        String::from_utf8(target.into_bytes())
            .map_err(|error| not_utf8(format!("the target {} of the symlink {path} is not UTF-8", quoted(error.as_bytes()))))
    }

    /// The regular file at `path`, opened for reading, and what `fstat` says of it. Any other
    /// node is refused before it is opened: opening a fifo can block and opening a device acts
    /// on the device, and reading either may never end.
    fn open_regular(&self, path: &str) -> io::Result<(std::fs::File, rustix::fs::Stat)> {
        let (dir, name) = self.parent(path)?;
        let found = rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        let found_type = FileType::from_raw_mode(found.st_mode);
        if found_type != FileType::RegularFile {
            return Err(io::Error::other(format!("{path} is {}: keel reads only regular files", type_name(found_type))));
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, name.as_str(), flags, Mode::empty())?;
        let opened = rustix::fs::fstat(&fd)?;
        if (opened.st_dev, opened.st_ino) != (found.st_dev, found.st_ino) {
            return Err(io::Error::other(format!("{path} was replaced while keel opened it")));
        }
        Ok((std::fs::File::from(fd), opened))
    }

    /// A regular file's contents, refused when the file holds more than `limit` bytes.
    pub fn read_file(&self, path: &str, limit: u64) -> io::Result<Vec<u8>> {
        let too_large = || io::Error::other(format!("{path} holds more than {limit} bytes, the most keel reads of it"));
        let (file, stat) = self.open_regular(path)?;
        if u64::try_from(stat.st_size).unwrap_or(u64::MAX) > limit {
            return Err(too_large());
        }
        let mut contents = Vec::new();
        // The size can grow after the fstat; the reading stops one byte past the limit regardless.
        file.take(limit.saturating_add(1)).read_to_end(&mut contents)?;
        if contents.len() as u64 > limit {
            return Err(too_large());
        }
        Ok(contents)
    }

    /// A regular file's contents, or `None` when there is none at `path`.
    pub fn read_file_if_present(&self, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        match self.read_file(path, limit) {
            Ok(contents) => Ok(Some(contents)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// An extended attribute of a regular file; `None` when it is unset or the filesystem has none.
    pub fn xattr(&self, path: &str, name: &str) -> io::Result<Option<Vec<u8>>> {
        let (fd, _) = self.open_regular(path)?;
        let mut value = [0_u8; 256];
        match rustix::fs::fgetxattr(&fd, name, &mut value[..]) {
            Ok(length) => Ok(value.get(..length).map(<[u8]>::to_vec)),
            Err(Errno::NODATA | Errno::NOTSUP | Errno::RANGE) => Ok(None),
            Err(errno) => Err(errno.into()),
        }
    }

    /// `path` with every symlink in its parents resolved inside the root, as the kernel would
    /// resolve them for `RESOLVE_IN_ROOT`; the final component is not followed. Components that
    /// do not exist yet are kept as written.
    pub fn resolve_parents(&self, path: &str) -> io::Result<String> {
        resolve_parents_with(
            path,
            |candidate| match self.lstat(candidate)? {
                Some(meta) if meta.kind == Kind::Symlink => Ok(Some(self.read_link(candidate)?)),
                _ => Ok(None),
            },
            || Errno::LOOP.into(),
        )
    }

    /// Creates the directory `path` (its parent exists) with exactly `attrs`, whatever the umask.
    pub fn create_dir(&self, path: &str, attrs: Attrs) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o700))?;
        let created =
            rustix::fs::openat(&dir, name.as_str(), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
        rustix::fs::fchown(&created, uid(attrs.uid), gid(attrs.gid))?;
        rustix::fs::fchmod(&created, Mode::from_raw_mode(attrs.mode))?;
        Ok(())
    }

    /// Gives an existing node its owner, then its mode (a symlink has no mode of its own). The
    /// node is never opened: opening a device node planted in the root (a watchdog, a tty) acts
    /// on the device, and a socket cannot be opened at all.
    pub fn set_attrs(&self, path: &str, attrs: Attrs) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        let stat = rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        rustix::fs::chownat(&dir, name.as_str(), uid(attrs.uid), gid(attrs.gid), AtFlags::SYMLINK_NOFOLLOW)?;
        if kind_of(FileType::from_raw_mode(stat.st_mode)) == Kind::Symlink {
            return Ok(());
        }
        // fchmodat follows a final symlink, but the statat above found none, and nothing else
        // writes into the root while it is applied.
        Ok(rustix::fs::chmodat(&dir, name.as_str(), Mode::from_raw_mode(attrs.mode), AtFlags::empty())?)
    }

    /// Replaces whatever file is at `path` with `contents`. The file is written unnamed
    /// (`O_TMPFILE`), given its owner, mode and extended attribute, then linked in at its name;
    /// where a file is already there it is linked at a temporary name and renamed over it. The
    /// file never appears half-written or with the wrong mode, and a power cut leaves no stray
    /// temporary behind. A filesystem without `O_TMPFILE` gets a named temporary file instead.
    pub fn write_file(&self, path: &str, contents: &[u8], attrs: Attrs, xattr: Option<(&str, &[u8])>) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        let unnamed = rustix::fs::openat(&dir, ".", OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC, Mode::from_raw_mode(0o600));
        let (fd, temporary) = match unnamed {
            Ok(fd) => (fd, None),
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT) => {
                let temporary = temporary_name();
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                (rustix::fs::openat(&dir, temporary.as_str(), flags, Mode::from_raw_mode(0o600))?, Some(temporary))
            }
            Err(errno) => return Err(errno.into()),
        };
        let mut file = std::fs::File::from(fd);
        let mut linked = temporary.clone();
        let written = (|| -> io::Result<()> {
            file.write_all(contents)?;
            rustix::fs::fchown(&file, uid(attrs.uid), gid(attrs.gid))?;
            rustix::fs::fchmod(&file, Mode::from_raw_mode(attrs.mode))?;
            if let Some((xattr_name, value)) = xattr {
                rustix::fs::fsetxattr(&file, xattr_name, value, rustix::fs::XattrFlags::empty())?;
            }
            if linked.is_none() {
                match rustix::fs::linkat(&file, "", &dir, name.as_str(), AtFlags::EMPTY_PATH) {
                    Ok(()) => return Ok(()),
                    Err(Errno::EXIST) => {
                        let temporary = temporary_name();
                        rustix::fs::linkat(&file, "", &dir, temporary.as_str(), AtFlags::EMPTY_PATH)?;
                        linked = Some(temporary);
                    }
                    Err(errno) => return Err(errno.into()),
                }
            }
            let Some(temporary) = &linked else { return Ok(()) };
            // A cached directory may have been reached through a symlink this replaces, under
            // this path or another that led through it: only a directory or a symlink can be
            // on the way to one, and the rename cannot replace a directory.
            let replaces_symlink = rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Symlink);
            rustix::fs::renameat(&dir, temporary.as_str(), &dir, name.as_str())?;
            if replaces_symlink {
                self.directories.borrow_mut().clear();
            }
            Ok(())
        })();
        if let (Err(_), Some(temporary)) = (&written, &linked) {
            // The temporary name is ours alone; a failure to remove it changes nothing for the caller.
            let _ = rustix::fs::unlinkat(&dir, temporary.as_str(), AtFlags::empty());
        }
        written
    }

    /// A symlink at `path` holding `target` verbatim, owned as given.
    pub fn symlink(&self, target: &str, path: &str, owner: (u32, u32)) -> io::Result<()> {
        let (dir, name) = self.parent(path)?;
        rustix::fs::symlinkat(target, &dir, name.as_str())?;
        Ok(rustix::fs::chownat(&dir, name.as_str(), uid(owner.0), gid(owner.1), AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// A hard link at `path` to the node at `target` (a final symlink is linked, not followed).
    pub fn hard_link(&self, target: &str, path: &str) -> io::Result<()> {
        let (target_dir, target_name) = self.parent(target)?;
        let (dir, name) = self.parent(path)?;
        Ok(rustix::fs::linkat(&target_dir, target_name.as_str(), &dir, name.as_str(), AtFlags::empty())?)
    }

    /// Moves the node at `from` to `to`, which must not exist (as usermod --move-home renames).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from_dir, from_name) = self.parent(from)?;
        let (to_dir, to_name) = self.parent(to)?;
        rustix::fs::renameat_with(&from_dir, from_name.as_str(), &to_dir, to_name.as_str(), rustix::fs::RenameFlags::NOREPLACE)?;
        self.directories.borrow_mut().clear();
        Ok(())
    }

    /// Removes whatever is at `path`, a directory with everything in it; nothing there is fine.
    pub fn remove_all(&self, path: &str) -> io::Result<()> {
        self.directories.borrow_mut().clear();
        let (dir, name) = match self.parent(path) {
            Ok(found) => found,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        remove_entry(&dir, OsStr::new(&name))
    }

    /// The names in the directory at `path`, without `.` and `..`; an error satisfying
    /// [`is_not_utf8`] when one of them is not UTF-8.
    pub fn list_dir(&self, path: &str) -> io::Result<Vec<String>> {
        self.list_dir_at_most(path, usize::MAX)
    }

    /// [`Root::list_dir`], refused as soon as the directory holds more than `max` names: a
    /// directory on an untrusted disk can hold more names than memory.
    pub fn list_dir_at_most(&self, path: &str, max: usize) -> io::Result<Vec<String>> {
        let dir = self.open_dir(path)?;
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&dir)? {
            let name = entry?.file_name().to_bytes().to_owned();
            if name == b"." || name == b".." {
                continue;
            }
            if names.len() == max {
                return Err(io::Error::other(format!("{path} holds more than {max} names, the most keel reads of it")));
            }
            names.push(String::from_utf8(name).map_err(|error| not_utf8(format!("the name {} in {path} is not UTF-8", quoted(error.as_bytes()))))?);
        }
        names.sort();
        Ok(names)
    }

    /// One `syncfs` for everything written: the apply's single durability point.
    pub fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::syncfs(&self.fd)?)
    }
}

/// The device and inode of an open node: what tells a directory reached through `..` is the
/// one that was left, and not another the tree was moved under meanwhile.
fn identity(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    let stat = rustix::fs::fstat(fd)?;
    Ok((stat.st_dev, stat.st_ino))
}

/// A subdirectory (or `..`) of a tree being removed, never across a mount: a bind mount in an
/// image builder's root (its /dev, /proc, a host directory) stops the removal with EXDEV instead
/// of losing what is mounted there (Go's RemoveAll, which Ignition uses, would empty it).
fn open_subdirectory(dir: &OwnedFd, name: &[u8]) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let resolve = ResolveFlags::NO_XDEV | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(dir, OsStr::from_bytes(name), flags, Mode::empty(), resolve) {
        Err(Errno::XDEV) => Err(io::Error::other("a mount point is in the tree: keel does not remove across mounts, unmount it first")),
        opened => Ok(opened?),
    }
}

/// Removes every node in `dir` but its subdirectories, whose names it returns.
fn remove_all_but_subdirectories(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_owned();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    let mut subdirectories = Vec::new();
    for name in names {
        match rustix::fs::unlinkat(dir, OsStr::from_bytes(&name), AtFlags::empty()) {
            Ok(()) => {}
            Err(errno) if absent(errno) => {}
            Err(Errno::ISDIR) => subdirectories.push(name),
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(subdirectories)
}

/// A directory on the way down a tree being removed.
struct Descent {
    name: Vec<u8>,
    /// The identity of the directory holding it, checked on the way back up through `..`.
    parent: (u64, u64),
    subdirectories: Vec<Vec<u8>>,
}

/// Removes the node `name` in `top`, a directory with everything in it. The walk holds the
/// directory it is in and, for a moment, the next one: a tree of any depth costs a few
/// descriptors and no stack, only the names of the directories still to remove on the way.
fn remove_entry(top: &OwnedFd, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(top, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(errno) if absent(errno) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(errno) => return Err(errno.into()),
    }
    let mut current = open_subdirectory(top, name.as_bytes())?;
    let mut descents =
        vec![Descent { name: name.as_bytes().to_owned(), parent: identity(top)?, subdirectories: remove_all_but_subdirectories(&current)? }];
    while let Some(descent) = descents.last_mut() {
        if let Some(subdirectory) = descent.subdirectories.pop() {
            let child = match open_subdirectory(&current, &subdirectory) {
                Ok(child) => child,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            let parent = identity(&current)?;
            let subdirectories = remove_all_but_subdirectories(&child)?;
            descents.push(Descent { name: subdirectory, parent, subdirectories });
            current = child;
            continue;
        }
        let Some(emptied) = descents.pop() else { break };
        let parent = if descents.is_empty() {
            None
        } else {
            let up = open_subdirectory(&current, b"..")?;
            if identity(&up)? != emptied.parent {
                return Err(io::Error::other("a directory being removed was moved meanwhile"));
            }
            Some(up)
        };
        match rustix::fs::unlinkat(parent.as_ref().unwrap_or(top), OsStr::from_bytes(&emptied.name), AtFlags::REMOVEDIR) {
            Ok(()) => {}
            Err(errno) if absent(errno) => {}
            Err(errno) => return Err(errno.into()),
        }
        match parent {
            Some(parent) => current = parent,
            None => break,
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// An empty directory of this test's own, removed and made again on every run.
    pub(crate) fn scratch(name: &str) -> PathBuf {
        keel_test_support::scratch_dir(std::env::temp_dir().join("keel-ignition-tests"), name)
    }

    /// A root inside a scratch directory, next to a sentinel directory outside it.
    pub(crate) fn hostile(name: &str) -> (PathBuf, PathBuf, Root) {
        let base = scratch(name);
        let outside = base.join("outside");
        let root_path = base.join("root");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(&root_path).unwrap();
        std::fs::write(outside.join("sentinel"), "untouched").unwrap();
        let root = Root::open(&root_path).unwrap();
        (root_path, outside, root)
    }

    pub(crate) fn outside_untouched(outside: &Path) {
        let names: Vec<_> = std::fs::read_dir(outside).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("sentinel")]);
        assert_eq!(std::fs::read_to_string(outside.join("sentinel")).unwrap(), "untouched");
    }

    const ROOT_OWNED: Attrs = Attrs { mode: 0o644, uid: 0, gid: 0 };

    #[test]
    fn clean_applies_dots_lexically_and_stops_at_the_root() {
        assert_eq!(clean("/a/./b//c/../d"), "/a/b/d");
        assert_eq!(clean("/../../etc"), "/etc");
        assert_eq!(clean(""), "/");
    }

    #[test]
    fn ancestors_and_depth_count_components() {
        assert_eq!(ancestors("/a/b/c"), vec!["/a", "/a/b"]);
        assert!(ancestors("/a").is_empty());
        assert_eq!(depth("/"), 0);
        assert_eq!(depth("/a/b/c"), 3);
        assert_eq!(split_parent("/a"), Some(("/", "a")));
        assert_eq!(split_parent("/"), None);
    }

    #[test]
    fn absolute_symlink_in_a_parent_resolves_inside_the_root() {
        let (root_path, outside, root) = hostile("absolute-parent");
        std::os::unix::fs::symlink(&outside, root_path.join("etc")).unwrap();
        root.write_file("/etc/sentinel", b"replaced", ROOT_OWNED, None).unwrap_err();
        std::fs::create_dir(root_path.join("inner")).unwrap();
        std::fs::remove_file(root_path.join("etc")).unwrap();
        std::os::unix::fs::symlink("/inner", root_path.join("etc")).unwrap();
        root.write_file("/etc/sentinel", b"confined", ROOT_OWNED, None).unwrap();
        assert_eq!(std::fs::read_to_string(root_path.join("inner/sentinel")).unwrap(), "confined");
        outside_untouched(&outside);
    }

    #[test]
    fn relative_symlink_climbing_out_is_clamped_at_the_root() {
        let (root_path, outside, root) = hostile("relative-parent");
        std::os::unix::fs::symlink("../../../../outside", root_path.join("up")).unwrap();
        root.create_dir("/up", Attrs { mode: 0o755, uid: 0, gid: 0 }).unwrap_err();
        std::fs::create_dir(root_path.join("outside")).unwrap();
        root.write_file("/up/sentinel", b"confined", ROOT_OWNED, None).unwrap();
        assert_eq!(std::fs::read_to_string(root_path.join("outside/sentinel")).unwrap(), "confined");
        outside_untouched(&outside);
    }

    #[test]
    fn final_symlink_is_replaced_not_followed() {
        let (root_path, outside, root) = hostile("final-symlink");
        std::os::unix::fs::symlink(outside.join("sentinel"), root_path.join("file")).unwrap();
        root.write_file("/file", b"new", ROOT_OWNED, None).unwrap();
        assert_eq!(std::fs::read_to_string(root_path.join("file")).unwrap(), "new");
        assert_eq!(root.list_dir("/").unwrap(), vec!["file".to_owned()], "no temporary name is left behind");
        root.set_attrs("/file", Attrs { mode: 0o600, uid: 0, gid: 0 }).unwrap();
        std::os::unix::fs::symlink(outside.join("sentinel"), root_path.join("link")).unwrap();
        root.set_attrs("/link", Attrs { mode: 0o777, uid: 5, gid: 5 }).unwrap();
        assert_eq!(std::fs::metadata(outside.join("sentinel")).unwrap().uid(), 0);
        root.remove_all("/link").unwrap();
        outside_untouched(&outside);
    }

    #[test]
    fn set_attrs_changes_a_node_that_cannot_be_opened_without_opening_it() {
        let (root_path, outside, root) = hostile("set-attrs-socket");
        // Opening a socket fails with ENXIO: only a path-based chown and chmod reach it.
        let _listener = std::os::unix::net::UnixListener::bind(root_path.join("sock")).unwrap();
        root.set_attrs("/sock", Attrs { mode: 0o640, uid: 7, gid: 8 }).unwrap();
        let meta = std::fs::symlink_metadata(root_path.join("sock")).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o640, 7, 8));
        std::fs::create_dir(root_path.join("dir")).unwrap();
        root.set_attrs("/dir", Attrs { mode: 0o1750, uid: 3, gid: 4 }).unwrap();
        let meta = std::fs::symlink_metadata(root_path.join("dir")).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o1750, 3, 4));
        outside_untouched(&outside);
    }

    #[test]
    fn read_file_refuses_anything_but_a_regular_file_before_opening_it() {
        let (root_path, _, root) = hostile("read-type");
        // A fifo without a writer reads as empty when opened non-blocking: only the type check refuses it.
        rustix::fs::mknodat(rustix::fs::CWD, root_path.join("fifo").as_path(), FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
        let error = root.read_file("/fifo", 10).unwrap_err();
        assert_eq!(error.to_string(), "/fifo is a fifo: keel reads only regular files");
        assert!(root.read_file_if_present("/fifo", 10).is_err());
        // 1:5 is /dev/zero: read to its end, it would fill the memory.
        let zero = rustix::fs::makedev(1, 5);
        rustix::fs::mknodat(rustix::fs::CWD, root_path.join("zero").as_path(), FileType::CharacterDevice, Mode::from_raw_mode(0o644), zero).unwrap();
        assert_eq!(root.read_file("/zero", 10).unwrap_err().to_string(), "/zero is a character device: keel reads only regular files");
        std::fs::create_dir(root_path.join("dir")).unwrap();
        assert!(root.read_file_if_present("/dir", 10).is_err());
        std::os::unix::fs::symlink("file", root_path.join("link")).unwrap();
        std::fs::write(root_path.join("file"), "x").unwrap();
        assert_eq!(root.read_file("/link", 10).unwrap_err().to_string(), "/link is a symlink: keel reads only regular files");
        assert_eq!(root.read_file_if_present("/file", 10).unwrap(), Some(b"x".to_vec()));
        assert_eq!(root.read_file_if_present("/absent", 10).unwrap(), None);
    }

    #[test]
    fn read_file_refuses_a_file_larger_than_the_limit() {
        let (root_path, _, root) = hostile("read-limit");
        std::fs::write(root_path.join("f"), "0123456789").unwrap();
        assert_eq!(root.read_file("/f", 10).unwrap(), b"0123456789");
        let error = root.read_file("/f", 9).unwrap_err();
        assert_eq!(error.to_string(), "/f holds more than 9 bytes, the most keel reads of it");
        assert!(root.read_file_if_present("/f", 9).is_err());
    }

    #[test]
    fn a_name_or_link_target_that_is_not_utf8_is_an_error_naming_it() {
        let (root_path, _, root) = hostile("not-utf8");
        std::fs::create_dir(root_path.join("dir")).unwrap();
        std::fs::write(root_path.join("dir/plain"), "").unwrap();
        assert_eq!(root.list_dir("/dir").unwrap(), vec!["plain".to_owned()]);
        std::fs::write(root_path.join("dir").join(OsStr::from_bytes(b"evil\xff")), "").unwrap();
        let error = root.list_dir("/dir").unwrap_err();
        assert!(is_not_utf8(&error));
        assert_eq!(error.to_string(), r#"the name "evil\xff" in /dir is not UTF-8: keel handles only UTF-8 names and targets, rename it"#);
        std::os::unix::fs::symlink("caf\u{e9}", root_path.join("utf8")).unwrap();
        assert_eq!(root.read_link("/utf8").unwrap(), "caf\u{e9}");
        std::os::unix::fs::symlink(OsStr::from_bytes(b"caf\xe9"), root_path.join("latin1")).unwrap();
        let error = root.read_link("/latin1").unwrap_err();
        assert!(is_not_utf8(&error));
        assert!(error.to_string().starts_with(r#"the target "caf\xe9" of the symlink /latin1 is not UTF-8"#), "{error}");
        assert!(!is_not_utf8(&root.list_dir("/absent").unwrap_err()));
    }

    #[test]
    fn a_directory_with_more_names_than_asked_for_is_refused_while_it_is_read() {
        let (root_path, _, root) = hostile("many-names");
        std::fs::create_dir(root_path.join("dir")).unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(root_path.join("dir").join(name), "").unwrap();
        }
        assert_eq!(root.list_dir_at_most("/dir", 3).unwrap(), ["a", "b", "c"]);
        let error = root.list_dir_at_most("/dir", 2).unwrap_err();
        assert_eq!(error.to_string(), "/dir holds more than 2 names, the most keel reads of it");
    }

    const DEEP_TREE_LEVELS: usize = 10_000;

    /// `levels` nested directories `d` under `path`, a file and a symlink out of the root at the
    /// bottom, built without ever holding more than two descriptors.
    fn deep_tree(path: &Path, levels: usize, outside: &Path) {
        let mut current = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..levels {
            rustix::fs::mkdirat(&current, "d", Mode::from_raw_mode(0o755)).unwrap();
            rustix::fs::openat(&current, "f", OFlags::WRONLY | OFlags::CREATE, Mode::from_raw_mode(0o644)).unwrap();
            current = rustix::fs::openat(&current, "d", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        }
        rustix::fs::symlinkat(outside, &current, "out").unwrap();
    }

    #[test]
    #[ignore = "run by removing_a_deep_tree_needs_neither_a_deep_stack_nor_many_descriptors, under a low descriptor limit"]
    fn remove_all_of_a_deep_tree_in_a_small_stack() {
        let (root_path, outside, _) = hostile("remove-deep");
        std::fs::create_dir(root_path.join("deep")).unwrap();
        deep_tree(&root_path.join("deep"), DEEP_TREE_LEVELS, &outside);
        let removal = {
            let root_path = root_path.clone();
            std::thread::Builder::new().stack_size(256 << 10).spawn(move || Root::open(&root_path)?.remove_all("/deep")).unwrap()
        };
        removal.join().unwrap().unwrap();
        assert!(!root_path.join("deep").exists());
        outside_untouched(&outside);
    }

    #[test]
    fn removing_a_tree_stops_at_a_bind_mount_in_it_and_loses_nothing_mounted_there() {
        let (root_path, outside, root) = hostile("bind-mount");
        let mount_point = root_path.join("a/m");
        std::fs::create_dir_all(&mount_point).unwrap();
        std::fs::write(root_path.join("a/file"), "in the tree").unwrap();
        let mounted = std::process::Command::new("mount").arg("--bind").arg(&outside).arg(&mount_point).status();
        if !mounted.is_ok_and(|status| status.success()) {
            eprintln!("SKIPPED: cannot bind-mount here (not root?)");
            return;
        }
        let removed = root.remove_all("/a");
        let unmounted = std::process::Command::new("umount").arg(&mount_point).status().unwrap();
        assert!(unmounted.success());
        let error = removed.unwrap_err();
        assert!(error.to_string().contains("mount point"), "{error}");
        outside_untouched(&outside);
    }

    #[test]
    fn removing_a_deep_tree_needs_neither_a_deep_stack_nor_many_descriptors() {
        let test_binary = std::env::current_exe().unwrap();
        let run = std::process::Command::new("sh")
            .args(["-c", "ulimit -n 32 && exec \"$0\" \"$@\""])
            .arg(test_binary)
            .args(["--exact", "root::tests::remove_all_of_a_deep_tree_in_a_small_stack", "--ignored", "--test-threads=1"])
            .output()
            .unwrap();
        assert!(run.status.success(), "{}\n{}{}", run.status, String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    }

    #[test]
    fn resolve_parents_follows_chains_and_keeps_missing_components() {
        let (root_path, outside, root) = hostile("resolve");
        std::fs::create_dir_all(root_path.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/real", root_path.join("abs")).unwrap();
        std::os::unix::fs::symlink("abs/dir", root_path.join("chain")).unwrap();
        std::os::unix::fs::symlink(&outside, root_path.join("escape")).unwrap();
        assert_eq!(root.resolve_parents("/chain/x/y").unwrap(), "/real/dir/x/y");
        assert_eq!(root.resolve_parents("/chain").unwrap(), "/chain");
        assert_eq!(root.resolve_parents("/escape/file").unwrap(), format!("{}/file", outside.display()));
        std::os::unix::fs::symlink("loop", root_path.join("loop")).unwrap();
        assert!(root.resolve_parents("/loop/x").is_err());
    }

    #[test]
    fn a_symlink_replaced_by_a_file_no_longer_leads_to_its_directory() {
        let (root_path, outside, root) = hostile("replaced-symlink");
        std::fs::create_dir(root_path.join("real")).unwrap();
        std::os::unix::fs::symlink("real", root_path.join("link")).unwrap();
        std::os::unix::fs::symlink("/link", root_path.join("alias")).unwrap();
        root.write_file("/link/through-link", b"x", ROOT_OWNED, None).unwrap();
        root.write_file("/alias/through-alias", b"x", ROOT_OWNED, None).unwrap();
        root.write_file("/link", b"now a file", ROOT_OWNED, None).unwrap();
        assert!(root.write_file("/link/after", b"x", ROOT_OWNED, None).is_err());
        assert!(root.write_file("/alias/after", b"x", ROOT_OWNED, None).is_err());
        assert!(root.lstat("/link/through-link").is_err());
        assert!(!root_path.join("real/after").exists());
        outside_untouched(&outside);
    }

    #[test]
    fn a_file_where_a_directory_is_needed_is_an_error() {
        let (root_path, outside, root) = hostile("file-as-dir");
        std::fs::write(root_path.join("plain"), "x").unwrap();
        assert!(root.write_file("/plain/child", b"x", ROOT_OWNED, None).is_err());
        assert!(root.lstat("/plain/child").is_err());
        outside_untouched(&outside);
    }

    #[test]
    fn write_file_gives_mode_owner_and_xattr_before_the_rename() {
        let (root_path, _, root) = hostile("write");
        root.write_file("/f", b"data", Attrs { mode: 0o4750, uid: 12, gid: 34 }, Some(("user.keel.test", b"v"))).unwrap();
        let meta = std::fs::metadata(root_path.join("f")).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o4750, 12, 34));
        assert_eq!(root.xattr("/f", "user.keel.test").unwrap(), Some(b"v".to_vec()));
        assert_eq!(root.xattr("/f", "user.keel.other").unwrap(), None);
        assert_eq!(root.list_dir("/").unwrap(), vec!["f".to_owned()]);
    }

    #[test]
    fn remove_all_removes_trees_without_following_links() {
        let (root_path, outside, root) = hostile("remove");
        std::fs::create_dir_all(root_path.join("tree/sub")).unwrap();
        std::fs::write(root_path.join("tree/sub/f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, root_path.join("tree/out")).unwrap();
        root.remove_all("/tree").unwrap();
        root.remove_all("/never-was").unwrap();
        assert!(!root_path.join("tree").exists());
        outside_untouched(&outside);
    }
}
