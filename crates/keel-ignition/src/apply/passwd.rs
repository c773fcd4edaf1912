//! `passwd`: the account files the users module computes, the homes `useradd -m` would make
//! (with /etc/skel copied in, owned by the user), and `~/.ssh/authorized_keys.d/ignition`.
//! Ignition runs these before files, so files may be owned by a user this config adds.

use super::files::mode_after_chown;
use super::{default_dir_attrs, is_under, kind_name, ApplyError, Contents, ErrorKind, Op, Planner};
use crate::config::latest::Passwd;
use crate::report::JsonPath;
use crate::root::{Attrs, Kind};
use crate::users::{self, AuthorizedKeys, EtcFiles, Home, HomeMove, HomeReown, RemovedHome};
use std::sync::Arc;

const SKEL: &str = "/etc/skel";
/// Ignition makes missing directories on the way to the keys as the user, 0700.
const KEYS_DIR_MODE: u32 = 0o700;
const KEYS_FILE_MODE: u32 = 0o600;

/// An account file as useradd finds it, and where: a symlink is followed inside the root (as
/// useradd does, which reads through it and writes the file it leads to), anything but a regular
/// file at the end is an error.
pub(crate) fn read_account_file(planner: &Planner, at: &JsonPath, path: &str) -> Result<AccountFile<Arc<Vec<u8>>>, ApplyError> {
    let resolved = planner.follow(at, path)?;
    match planner.probe(at, &resolved)? {
        None => Ok(AccountFile { path: resolved, contents: None }),
        Some(node) if node.kind == Kind::File => {
            let contents = planner.contents(at, &resolved, &node)?;
            Ok(AccountFile { path: resolved, contents: Some(contents) })
        }
        Some(node) => Err(ApplyError::new(
            at,
            &resolved,
            ErrorKind::WrongType,
            format!("{path} is a {}, not a file: keel reads account files only when they are", kind_name(node.kind)),
        )),
    }
}

/// An account file's contents, `None` when there is none, and the path it is at (where it is
/// written back).
pub(crate) struct AccountFile<C> {
    pub path: String,
    pub contents: Option<C>,
}

/// Where each of the four account files users and groups change is written back.
type WrittenTo = [(&'static str, String); 4];

fn read_text(planner: &Planner, at: &JsonPath, path: &str) -> Result<AccountFile<String>, ApplyError> {
    let AccountFile { path: resolved, contents } = read_account_file(planner, at, path)?;
    // Lossy decoding would corrupt the lines it replaced when the file is written back.
    let text = contents
        .map(|bytes| {
            String::from_utf8(Arc::unwrap_or_clone(bytes))
                .map_err(|_| ApplyError::new(at, path, ErrorKind::Users, "the file is not UTF-8: keel rewrites account files only when they are"))
        })
        .transpose()?;
    Ok(AccountFile { path: resolved, contents: text })
}

/// The account files and where each of the four is written back.
fn read_etc_files(planner: &Planner, at: &JsonPath) -> Result<(EtcFiles, WrittenTo), ApplyError> {
    let passwd = read_text(planner, at, "/etc/passwd")?;
    let shadow = read_text(planner, at, "/etc/shadow")?;
    let group = read_text(planner, at, "/etc/group")?;
    let gshadow = read_text(planner, at, "/etc/gshadow")?;
    let etc = EtcFiles {
        passwd: passwd.contents.unwrap_or_default(),
        shadow: shadow.contents,
        group: group.contents.unwrap_or_default(),
        gshadow: gshadow.contents,
        login_defs: read_text(planner, at, "/etc/login.defs")?.contents,
        useradd_defaults: read_text(planner, at, "/etc/default/useradd")?.contents,
    };
    Ok((etc, [("passwd", passwd.path), ("shadow", shadow.path), ("group", group.path), ("gshadow", gshadow.path)]))
}

/// Plans the users and groups. The account files are read only when there are some: Ignition
/// runs no tool, and so reads and judges none of them, without.
pub(crate) fn plan_passwd(planner: &mut Planner, passwd: Option<&Passwd>) -> Result<(), ApplyError> {
    let at = JsonPath::root().field("passwd");
    let Some(passwd) = passwd.filter(|passwd| {
        passwd.users.as_ref().is_some_and(|users| !users.is_empty()) || passwd.groups.as_ref().is_some_and(|groups| !groups.is_empty())
    }) else {
        return Ok(());
    };
    let (etc, written_to) = read_etc_files(planner, &at)?;
    let plan = users::plan_users(passwd, &etc).map_err(|error| ApplyError::new(&at, "", ErrorKind::Users, error.message))?;
    // Without a shadow (gshadow) file the password hashes are in passwd (group) itself.
    let written = |name: &str| plan.etc_files.iter().any(|etc_file| etc_file.name == name);
    let has_shadow = etc.shadow.is_some() || written("shadow");
    let has_gshadow = etc.gshadow.is_some() || written("gshadow");
    for etc_file in &plan.etc_files {
        let Some((_, path)) = written_to.iter().find(|(name, _)| *name == etc_file.name) else { continue };
        let secret = match etc_file.name {
            "passwd" => !has_shadow,
            "group" => !has_gshadow,
            _ => true,
        };
        write_keeping_attrs(planner, &at, path, etc_file.contents.as_bytes(), Attrs { mode: etc_file.mode_if_new, uid: 0, gid: 0 }, secret)?;
    }
    // usermod's and userdel's effects on homes, in the order the tools run them.
    for moved in &plan.home_moves {
        plan_home_move(planner, &at, moved)?;
    }
    for reown in &plan.home_reowns {
        plan_home_reown(planner, &at, reown)?;
    }
    for removed in &plan.removed_homes {
        plan_home_removal(planner, &at, removed)?;
    }
    for home in &plan.homes {
        plan_home(planner, &at, home)?;
    }
    for keys in &plan.authorized_keys {
        plan_authorized_keys(planner, &at, keys)?;
    }
    Ok(())
}

/// A file rewritten in place as shadow-utils and an `O_TRUNC` open do: an existing file keeps
/// its mode and owner, a new one gets `attrs_if_new`.
fn write_keeping_attrs(
    planner: &mut Planner,
    at: &JsonPath,
    path: &str,
    contents: &[u8],
    attrs_if_new: Attrs,
    secret: bool,
) -> Result<(), ApplyError> {
    let attrs = match planner.probe(at, path)? {
        Some(node) if node.kind == Kind::File => {
            if planner.contents(at, path, &node)?.as_slice() == contents {
                return Ok(());
            }
            node.attrs
        }
        Some(node) => {
            return Err(ApplyError::new(at, path, ErrorKind::WrongType, format!("a {} is where a file goes: remove it", kind_name(node.kind))));
        }
        None => {
            planner.ensure_parents(at, path, default_dir_attrs())?;
            attrs_if_new
        }
    };
    planner.push(
        at,
        Op::WriteFile { path: path.to_owned(), contents: Contents { bytes: Arc::new(contents.to_vec()), secret }, attrs, append_record: None },
    )?;
    Ok(())
}

/// `usermod --move-home`: nothing to move is fine; a target that exists is usermod's error.
fn plan_home_move(planner: &mut Planner, at: &JsonPath, moved: &HomeMove) -> Result<(), ApplyError> {
    let from = planner.resolve(at, &moved.from)?;
    let to = planner.resolve(at, &moved.to)?;
    if from == to {
        return Ok(());
    }
    match planner.probe(at, &from)? {
        None => return Ok(()),
        Some(node) if node.kind != Kind::Dir => {
            return Err(ApplyError::new(at, &from, ErrorKind::WrongType, "the old home is not a directory, so usermod cannot move it"));
        }
        Some(_) => {}
    }
    // usermod would move the root's whole tree, or a home into itself, which fails only after
    // the account files are written.
    if from == "/" || to == "/" {
        return Err(ApplyError::new(
            at,
            &from,
            ErrorKind::Users,
            format!("usermod would move {from} to {to}, and one of them is the root: keep the home"),
        ));
    }
    if is_under(&to, &from) {
        return Err(ApplyError::new(at, &to, ErrorKind::Users, format!("the new home is inside the old one, {from}, so it cannot be moved there")));
    }
    if planner.probe(at, &to)?.is_some() {
        return Err(ApplyError::new(at, &to, ErrorKind::Exists, "the new home already exists, so usermod will not move the old one there"));
    }
    if let Some((parent, _)) = crate::root::split_parent(&to)
        && !planner.probe(at, parent)?.is_some_and(|node| node.kind == Kind::Dir)
    {
        return Err(ApplyError::new(at, &to, ErrorKind::WrongType, "the new home's parent directory does not exist"));
    }
    planner.push(at, Op::Rename { from, to })?;
    Ok(())
}

/// usermod's ownership fix after a uid or gid change (chown_tree): what the old ids own in the
/// home goes to the new ones, symlinks included, with the setuid bits chown clears. It only
/// happens when the home belongs to the old or the new uid.
fn plan_home_reown(planner: &mut Planner, at: &JsonPath, reown: &HomeReown) -> Result<(), ApplyError> {
    let path = planner.resolve(at, &reown.path)?;
    let Some(home) = planner.probe(at, &path)? else { return Ok(()) };
    if home.attrs.uid != reown.old_uid && Some(home.attrs.uid) != reown.new_uid {
        return Ok(());
    }
    let mut pending = vec![(path, home)];
    while let Some((path, node)) = pending.pop() {
        if node.kind == Kind::Dir {
            for name in planner.list(at, &path)? {
                let child = format!("{path}/{name}");
                if let Some(child_node) = planner.probe(at, &child)? {
                    pending.push((child, child_node));
                }
            }
        }
        let uid = reown.new_uid.filter(|_| node.attrs.uid == reown.old_uid).unwrap_or(node.attrs.uid);
        let gid = reown.new_gid.filter(|_| node.attrs.gid == reown.old_gid).unwrap_or(node.attrs.gid);
        if (uid, gid) != (node.attrs.uid, node.attrs.gid) {
            let mode = if node.kind == Kind::Dir { node.attrs.mode } else { mode_after_chown(node.attrs.mode) };
            planner.push(at, Op::SetAttrs { path, attrs: Attrs { mode, uid, gid } })?;
        }
    }
    Ok(())
}

/// `userdel --remove`: refused, as userdel refuses, when the home is not the user's or holds
/// another user's home; a missing home is fine.
fn plan_home_removal(planner: &mut Planner, at: &JsonPath, removed: &RemovedHome) -> Result<(), ApplyError> {
    let path = planner.resolve(at, &removed.path)?;
    let Some(node) = planner.probe(at, &path)? else { return Ok(()) };
    if path == "/" {
        return Err(ApplyError::new(at, &path, ErrorKind::Users, "the home is the root itself, which userdel --remove would wipe: keel refuses"));
    }
    if let Some(other) = &removed.holds_home_of {
        return Err(ApplyError::new(
            at,
            &path,
            ErrorKind::Users,
            format!("the home holds the home of user {other:?}, so userdel will not remove it"),
        ));
    }
    if node.attrs.uid != removed.uid {
        return Err(ApplyError::new(at, &path, ErrorKind::Users, "the home is not owned by the deleted user, so userdel will not remove it"));
    }
    planner.push(at, Op::Remove { path })?;
    Ok(())
}

/// A new home as `useradd -m` makes it: the directory, then /etc/skel's tree in it with each
/// entry's mode kept and the user as owner. An existing home is left as it is.
fn plan_home(planner: &mut Planner, at: &JsonPath, home: &Home) -> Result<(), ApplyError> {
    let path = planner.resolve(at, &home.path)?;
    if planner.probe(at, &path)?.is_some() {
        return Ok(());
    }
    planner.ensure_parents(at, &path, default_dir_attrs())?;
    planner.push(at, Op::CreateDir { path: path.clone(), attrs: Attrs { mode: home.mode, uid: home.uid, gid: home.gid } })?;
    if home.copy_skel {
        let skel = planner.resolve(at, SKEL)?;
        if planner.probe(at, &skel)?.is_some_and(|node| node.kind == Kind::Dir) {
            copy_tree(planner, at, &skel, &path, (home.uid, home.gid))?;
        }
    }
    Ok(())
}

fn copy_tree(planner: &mut Planner, at: &JsonPath, from: &str, to: &str, owner: (u32, u32)) -> Result<(), ApplyError> {
    // A walk with a stack of its own: a skeleton directory nested thousands deep costs memory,
    // not PID 1's stack.
    let mut pending = vec![(from.to_owned(), to.to_owned())];
    while let Some((from, to)) = pending.pop() {
        for name in planner.list(at, &from)? {
            let source = format!("{from}/{name}");
            let destination = format!("{to}/{name}");
            let Some(node) = planner.probe(at, &source)? else { continue };
            let attrs = Attrs { mode: node.attrs.mode, uid: owner.0, gid: owner.1 };
            match node.kind {
                Kind::Dir => {
                    planner.push(at, Op::CreateDir { path: destination.clone(), attrs })?;
                    pending.push((source, destination));
                }
                Kind::File => {
                    let bytes = planner.contents(at, &source, &node)?;
                    planner.charge(at, &source, bytes.len())?;
                    planner.push(at, Op::WriteFile { path: destination, contents: Contents { bytes, secret: false }, attrs, append_record: None })?;
                }
                Kind::Symlink => {
                    let target = planner.link_target(at, &source, &node)?;
                    planner.push(at, Op::Symlink { path: destination, target, owner })?;
                }
                Kind::Other => {}
            }
        }
    }
    Ok(())
}

/// `~/.ssh/authorized_keys.d/ignition`: missing directories on the way made 0700 and the
/// user's, a new file 0600 and the user's, an existing one rewritten with its mode and owner.
fn plan_authorized_keys(planner: &mut Planner, at: &JsonPath, keys: &AuthorizedKeys) -> Result<(), ApplyError> {
    let path = planner.resolve(at, &format!("{}/.ssh/authorized_keys.d/ignition", keys.home))?;
    user_may_write_keys(planner, at, &path, keys)?;
    let user_dir = Attrs { mode: KEYS_DIR_MODE, uid: keys.uid, gid: keys.gid };
    planner.ensure_parents(at, &path, user_dir)?;
    write_keeping_attrs(planner, at, &path, keys.contents.as_bytes(), Attrs { mode: KEYS_FILE_MODE, uid: keys.uid, gid: keys.gid }, true)
}

/// Ignition makes the key directories and writes the key file as the user, so where the user
/// could not (a home that is root's, such as daemon's /usr/sbin, or none at all) the apply fails:
/// keel fails there too rather than write into a directory the user does not own. The deepest
/// directory that exists on the way must let the user in and write (supplementary groups are
/// not counted).
fn user_may_write_keys(planner: &Planner, at: &JsonPath, path: &str, keys: &AuthorizedKeys) -> Result<(), ApplyError> {
    if keys.uid == 0 {
        return Ok(());
    }
    let mut deepest = planner.probe(at, "/")?.map(|node| ("/", node));
    for ancestor in crate::root::ancestors(path) {
        match planner.probe(at, ancestor)? {
            Some(node) => deepest = Some((ancestor, node)),
            None => break,
        }
    }
    let Some((directory, node)) = deepest else { return Ok(()) };
    let (write, search) = if node.attrs.uid == keys.uid {
        (0o200, 0o100)
    } else if node.attrs.gid == keys.gid {
        (0o020, 0o010)
    } else {
        (0o002, 0o001)
    };
    if node.kind == Kind::Dir && node.attrs.mode & write != 0 && node.attrs.mode & search != 0 {
        return Ok(());
    }
    Err(ApplyError::new(
        at,
        path,
        ErrorKind::Users,
        format!(
            "uid {} may not write in {directory}, where its SSH keys go (Ignition writes them as the user): give the user a home it owns",
            keys.uid
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::Plan;
    use super::*;

    fn run(root: &crate::root::Root, build: impl FnOnce(&mut Planner) -> Result<(), ApplyError>) -> Plan {
        let mut planner = Planner::new(root);
        build(&mut planner).unwrap();
        let plan = Plan { steps: planner.steps };
        plan.execute(root).unwrap();
        plan
    }

    #[test]
    fn no_passwd_section_leaves_the_account_files_alone_and_owners_by_name_come_from_them() {
        let (path, root) = fresh_root("no-passwd");
        std::fs::write(path.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\ncore:x:500:501::/home/core:/bin/sh\n").unwrap();
        let mut planner = Planner::new(&root);
        plan_passwd(&mut planner, None).unwrap();
        assert!(planner.steps.is_empty());
        let json = r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/f","contents":{"source":"data:,"},"user":{"name":"core"}}]}}"#;
        plan_json(&root, json).unwrap().execute(&root).unwrap();
        assert_eq!(mode_owner(&path.join("f")).1, 500);
    }

    #[test]
    fn an_account_file_keeps_its_mode_and_owner_and_a_new_one_gets_mode_if_new() {
        let (path, root) = fresh_root("etc-files");
        std::fs::write(path.join("etc/passwd"), "old\n").unwrap();
        std::fs::set_permissions(path.join("etc/passwd"), std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(path.join("etc/passwd"), Some(0), Some(42)).unwrap();
        let plan = run(&root, |planner| {
            let at = JsonPath::root().field("passwd");
            write_keeping_attrs(planner, &at, "/etc/passwd", b"new\n", Attrs { mode: 0o644, uid: 0, gid: 0 }, false)?;
            write_keeping_attrs(planner, &at, "/etc/shadow", b"root:*:1::::::\n", Attrs { mode: 0o640, uid: 0, gid: 0 }, true)
        });
        assert_eq!(std::fs::read_to_string(path.join("etc/passwd")).unwrap(), "new\n");
        assert_eq!(mode_owner(&path.join("etc/passwd")), (0o640, 0, 42));
        assert_eq!(mode_owner(&path.join("etc/shadow")), (0o640, 0, 0));
        assert!(!plan.to_string().contains("root:*"), "{plan}");
    }

    #[test]
    fn a_new_home_gets_skel_copied_with_the_users_owner_and_an_existing_home_is_left_alone() {
        let (path, root) = fresh_root("home");
        std::fs::create_dir_all(path.join("etc/skel/.config")).unwrap();
        std::fs::write(path.join("etc/skel/.bashrc"), "bash").unwrap();
        std::fs::set_permissions(path.join("etc/skel/.bashrc"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(".bashrc", path.join("etc/skel/.profile")).unwrap();
        let home = Home { path: "/home/core".to_owned(), uid: 500, gid: 501, mode: 0o700, copy_skel: true };
        run(&root, |planner| plan_home(planner, &JsonPath::root(), &home));
        assert_eq!(mode_owner(&path.join("home")), (0o755, 0, 0));
        assert_eq!(mode_owner(&path.join("home/core")), (0o700, 500, 501));
        assert_eq!(mode_owner(&path.join("home/core/.bashrc")), (0o600, 500, 501));
        assert_eq!(std::fs::read_to_string(path.join("home/core/.bashrc")).unwrap(), "bash");
        assert_eq!(mode_owner(&path.join("home/core/.config")), (0o755, 500, 501));
        assert_eq!(std::fs::read_link(path.join("home/core/.profile")).unwrap().to_str(), Some(".bashrc"));
        assert_eq!((mode_owner(&path.join("home/core/.profile")).1, mode_owner(&path.join("home/core/.profile")).2), (500, 501));
        let again = run(&root, |planner| plan_home(planner, &JsonPath::root(), &home));
        assert!(again.is_empty(), "{again}");
    }

    #[test]
    fn ssh_keys_go_to_authorized_keys_d_with_private_modes_owned_by_the_user() {
        let (path, root) = fresh_root("keys");
        std::fs::create_dir_all(path.join("home/core")).unwrap();
        std::os::unix::fs::chown(path.join("home/core"), Some(500), Some(501)).unwrap();
        let keys = AuthorizedKeys { home: "/home/core".to_owned(), uid: 500, gid: 501, contents: "ssh-ed25519 AAAA key\n".to_owned() };
        let plan = run(&root, |planner| plan_authorized_keys(planner, &JsonPath::root(), &keys));
        assert!(!plan.to_string().contains("AAAA"), "{plan}");
        assert_eq!(mode_owner(&path.join("home/core")), (0o755, 500, 501));
        assert_eq!(mode_owner(&path.join("home/core/.ssh")), (0o700, 500, 501));
        assert_eq!(mode_owner(&path.join("home/core/.ssh/authorized_keys.d")), (0o700, 500, 501));
        let file = path.join("home/core/.ssh/authorized_keys.d/ignition");
        assert_eq!(mode_owner(&file), (0o600, 500, 501));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "ssh-ed25519 AAAA key\n");
        let again = run(&root, |planner| plan_authorized_keys(planner, &JsonPath::root(), &keys));
        assert!(again.is_empty(), "{again}");
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let changed = AuthorizedKeys { contents: "ssh-rsa BBBB\n".to_owned(), ..keys };
        run(&root, |planner| plan_authorized_keys(planner, &JsonPath::root(), &changed));
        assert_eq!(mode_owner(&file), (0o644, 500, 501));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "ssh-rsa BBBB\n");
    }

    #[test]
    fn ssh_keys_are_refused_where_the_user_could_not_write_them_as_ignition_writes_them() {
        let (path, root) = fresh_root("keys-refused");
        std::fs::create_dir_all(path.join("usr/sbin")).unwrap();
        let daemon = AuthorizedKeys { home: "/usr/sbin".to_owned(), uid: 1, gid: 1, contents: "ssh-ed25519 AAAA key\n".to_owned() };
        let mut planner = Planner::new(&root);
        let error = plan_authorized_keys(&mut planner, &JsonPath::root(), &daemon).unwrap_err();
        assert!(error.to_string().contains("may not write in /usr/sbin"), "{error}");
        assert!(!error.to_string().contains("AAAA"), "{error}");
        let homeless = AuthorizedKeys { home: "/home/nobody-here".to_owned(), ..daemon.clone() };
        assert!(
            plan_authorized_keys(&mut Planner::new(&root), &JsonPath::root(), &homeless).is_err(),
            "a missing home is made by root's rules, not the user's"
        );
        std::fs::create_dir_all(path.join("srv/shared")).unwrap();
        std::fs::set_permissions(path.join("srv/shared"), std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
        let shared = AuthorizedKeys { home: "/srv/shared".to_owned(), ..daemon };
        assert!(plan_authorized_keys(&mut Planner::new(&root), &JsonPath::root(), &shared).is_ok(), "a directory anyone may write in will do");
        let owned_by_root = AuthorizedKeys { home: "/usr/sbin".to_owned(), uid: 0, gid: 0, contents: String::new() };
        assert!(plan_authorized_keys(&mut Planner::new(&root), &JsonPath::root(), &owned_by_root).is_ok(), "root may write anywhere");
    }

    // Cases an adversarial review found; each failed before its fix.

    fn plan_json(root: &crate::root::Root, json: &str) -> Result<Plan, ApplyError> {
        super::super::plan(&config(json), root, true)
    }

    #[test]
    fn a_config_without_users_neither_reads_nor_judges_the_account_files() {
        let (path, root) = fresh_root("review-no-users");
        std::fs::write(path.join("etc/passwd"), b"root:x:0:0:r\xe9:/root:/bin/sh\ncore:x:500:500:\xe9:/home/core:/bin/sh\n").unwrap();
        std::fs::create_dir(path.join("etc/login.defs")).unwrap();
        plan_json(&root, r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/f","contents":{"source":"data:,"}}]}}"#).unwrap();
        let by_name = r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/f","contents":{"source":"data:,"},"user":{"name":"core"}}]}}"#;
        plan_json(&root, by_name).unwrap().execute(&root).unwrap();
        assert_eq!(mode_owner(&path.join("f")).1, 500, "a name is found past a GECOS that is not UTF-8");
        let error = plan_json(&root, r#"{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core"}]}}"#).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Users, "with users the files are judged: {error}");
    }

    #[test]
    fn account_files_that_are_symlinks_are_followed_inside_the_root_and_written_through() {
        let (path, root) = fresh_root("symlinked-passwd");
        std::fs::create_dir_all(path.join("usr/share/base")).unwrap();
        std::fs::write(path.join("usr/share/base/passwd"), "root:x:0:0::/root:/bin/sh\ncore:x:500:500::/home/core:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("../usr/share/base/passwd", path.join("etc/passwd")).unwrap();
        std::fs::write(path.join("etc/group"), "root:x:0:\n").unwrap();
        std::os::unix::fs::symlink("/etc/group", path.join("etc/group-link")).unwrap();
        let json = r#"{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"extra","uid":600,"noCreateHome":true}]},
            "storage":{"files":[{"path":"/f","contents":{"source":"data:,"},"user":{"name":"core"}}]}}"#;
        plan_json(&root, json).unwrap().execute(&root).unwrap();
        assert_eq!(std::fs::read_link(path.join("etc/passwd")).unwrap().to_str(), Some("../usr/share/base/passwd"));
        assert!(std::fs::read_to_string(path.join("usr/share/base/passwd")).unwrap().contains("\nextra:*:600:"));
        assert_eq!(mode_owner(&path.join("f")).1, 500);
        std::fs::remove_file(path.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("passwd", path.join("etc/passwd")).unwrap();
        let error = plan_json(&root, json).unwrap_err();
        assert!(error.to_string().contains("symlinks lead from it"), "{error}");
        std::fs::remove_file(path.join("etc/passwd")).unwrap();
        std::fs::create_dir(path.join("etc/passwd")).unwrap();
        let error = plan_json(&root, json).unwrap_err();
        assert!(error.to_string().contains("/etc/passwd is a directory, not a file"), "{error}");
    }

    fn passwd_root(name: &str, passwd: &str) -> (std::path::PathBuf, crate::root::Root) {
        let (path, root) = fresh_root(name);
        std::fs::write(path.join("etc/passwd"), passwd).unwrap();
        std::fs::write(path.join("etc/group"), "root:x:0:\nnobody:x:65534:\n").unwrap();
        (path, root)
    }

    #[test]
    fn a_home_move_into_itself_or_from_the_root_is_refused_by_the_plan() {
        for (old, new) in [("/home/a", "/home/a/sub"), ("/", "/home/nobody"), ("/home/a", "/")] {
            let (path, root) = passwd_root("review-move-into", &format!("root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::{old}:/bin/sh\n"));
            std::fs::create_dir_all(path.join("home/a")).unwrap();
            let json = format!(r#"{{"ignition":{{"version":"3.3.0"}},"passwd":{{"users":[{{"name":"nobody","homeDir":"{new}"}}]}}}}"#);
            let error = plan_json(&root, &json).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Users, "{old} -> {new}: {error}");
        }
        let (path, root) = passwd_root("move-beside", "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/home/a:/bin/sh\n");
        std::fs::create_dir_all(path.join("home/a/kept")).unwrap();
        plan_json(&root, r#"{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"nobody","homeDir":"/home/ab"}]}}"#)
            .unwrap()
            .execute(&root)
            .unwrap();
        assert!(path.join("home/ab/kept").is_dir(), "a sibling whose name starts like the old home is no move into itself");
    }

    #[test]
    fn removing_a_user_whose_home_is_the_root_never_plans_removing_the_root() {
        let (path, root) = passwd_root("review-userdel-root", "root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\n");
        let json = r#"{"ignition":{"version":"3.4.0"},"passwd":{"users":[{"name":"toor","shouldExist":false}]}}"#;
        let error = plan_json(&root, json).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Users, "{error}");
        std::fs::write(path.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/home/toor:/bin/sh\n").unwrap();
        std::fs::create_dir_all(path.join("home/toor")).unwrap();
        plan_json(&root, json).unwrap().execute(&root).unwrap();
        assert!(!path.join("home/toor").exists());
    }

    /// How the plan shows the write of /etc/`name`.
    fn shown_write(plan: &Plan, name: &str) -> String {
        plan.to_string().lines().find(|line| line.contains(&format!("write /etc/{name} "))).unwrap_or_default().to_owned()
    }

    #[test]
    fn passwd_and_group_are_secret_in_the_plan_when_no_shadow_file_holds_the_hashes() {
        let json = r#"{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core","passwordHash":"$6$salt$hash"}],"groups":[{"name":"g","passwordHash":"$6$g$h"}]}}"#;
        let (path, root) = passwd_root("secret-without-shadow", "root:x:0:0::/root:/bin/sh\n");
        let plan = plan_json(&root, json).unwrap();
        assert!(shown_write(&plan, "passwd").ends_with("bytes, secret)") && shown_write(&plan, "group").ends_with("bytes, secret)"), "{plan}");
        std::fs::write(path.join("etc/shadow"), "root:*:1::::::\n").unwrap();
        std::fs::write(path.join("etc/gshadow"), "root:*::\nnobody:*::\n").unwrap();
        let plan = plan_json(&root, json).unwrap();
        assert!(shown_write(&plan, "passwd").ends_with("bytes)") && shown_write(&plan, "group").ends_with("bytes)"), "{plan}");
        assert!(shown_write(&plan, "shadow").ends_with("bytes, secret)") && shown_write(&plan, "gshadow").ends_with("bytes, secret)"), "{plan}");
    }

    #[test]
    fn reowning_a_home_never_opens_a_device_node_in_it() {
        let (path, root) = passwd_root("review-reown-device", "root:x:0:0::/root:/bin/sh\na:x:1000:1000::/home/a:/bin/sh\n");
        std::fs::create_dir_all(path.join("home/a")).unwrap();
        std::os::unix::fs::chown(path.join("home/a"), Some(1000), Some(1000)).unwrap();
        // 5:0 is /dev/tty: opening it without a controlling terminal fails with ENXIO.
        let tty = path.join("home/a/tty");
        assert!(std::process::Command::new("mknod").arg(&tty).args(["c", "5", "0"]).status().unwrap().success());
        std::os::unix::fs::lchown(&tty, Some(1000), Some(1000)).unwrap();
        let plan = plan_json(&root, r#"{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"a","uid":1001}]}}"#).unwrap();
        plan.execute(&root).unwrap();
        assert_eq!(mode_owner(&tty).1, 1001);
    }
}
