//! Merging a child config into its parent, with Ignition's rules (config/merge in Ignition 2.14,
//! unchanged since):
//! - a field Ignition models as a pointer (every optional scalar) takes the child's value only
//!   when the child sets it; a field it models as a plain value (the keys, and the version) always
//!   takes the child's;
//! - nested objects merge field by field;
//! - lists of entries with an identity merge by that identity: an entry whose key the child also
//!   has is merged in place, the child's other entries follow in the child's order;
//! - files, directories and links share one key space (the path), and so do a kernel argument's
//!   `shouldExist` and `shouldNotExist`: a child entry in one list removes the parent's entry with
//!   that key from the other lists;
//! - an HTTP header the child names without a value removes the parent's header;
//! - argument lists for tools (mkfs `options`, `mountOptions`, luks and raid `options`) and a
//!   file's `append` are concatenated, duplicates and all.
//!
//! Typed code rather than a walk over JSON values: every field of every type is named below, so
//! a field added by a new spec version fails to compile until someone decides how it merges.

use crate::config::latest::{
    Cex, Clevis, ClevisCustom, Directory, Disk, Dropin, File, Filesystem, Group, HttpHeadersItem, Ignition, IgnitionConfig, KernelArguments, Link,
    Luks, NodeGroup, NodeUser, Partition, Passwd, Proxy, Raid, Resource, Security, SecurityTls, Storage, Systemd, Tang, Timeouts, Unit, User,
    Verification,
};
use crate::config::Latest;
use std::collections::{HashMap, HashSet};

/// The config `child` makes of `parent`: what Ignition does for `ignition.config.merge` and for
/// a base config followed by the user config.
pub fn merge(parent: &Latest, child: &Latest) -> Latest {
    parent.merged_with(child)
}

trait Merge {
    fn merged_with(&self, child: &Self) -> Self;
}

/// The identity of a list entry: entries with equal keys in parent and child are one entry.
trait Keyed {
    fn key(&self) -> String;
}

fn scalar<T: Clone>(parent: &Option<T>, child: &Option<T>) -> Option<T> {
    child.as_ref().or(parent.as_ref()).cloned()
}

fn nested<T: Merge + Clone>(parent: &Option<T>, child: &Option<T>) -> Option<T> {
    match (parent, child) {
        (Some(parent), Some(child)) => Some(parent.merged_with(child)),
        (parent, None) => parent.clone(),
        (None, child) => child.clone(),
    }
}

/// Ignition leaves a list that ends up empty unset, whichever way the inputs spelled "empty".
fn non_empty<T>(list: Vec<T>) -> Option<Vec<T>> {
    (!list.is_empty()).then_some(list)
}

fn appended<T: Clone>(parent: &Option<Vec<T>>, child: &Option<Vec<T>>) -> Option<Vec<T>> {
    non_empty(parent.iter().chain(child).flatten().cloned().collect())
}

/// For each key in the child, the list (of those sharing a key space) and the index of the
/// child's entry. When the child repeats a key, its last entry wins, as in Ignition; the
/// lists must be recorded in the order Ignition's types declare them for that to hold across lists.
#[derive(Default)]
struct ChildKeys {
    owners: HashMap<String, (&'static str, usize)>,
}

impl ChildKeys {
    fn with<T: Keyed>(mut self, list: &'static str, entries: &Option<Vec<T>>) -> Self {
        for (index, entry) in entries.iter().flatten().enumerate() {
            self.owners.insert(entry.key(), (list, index));
        }
        self
    }
}

/// One list of a group sharing a key space. The parent's entries keep their order (merged with
/// the child's entry of the same key, or dropped when the child put that key in another list);
/// the child's entries whose key this parent list lacks follow in the child's order.
/// `merge_entry` returns None to remove the entry.
fn keyed_in_group<T: Keyed + Clone>(
    list: &'static str,
    parent: &Option<Vec<T>>,
    child: &Option<Vec<T>>,
    child_keys: &ChildKeys,
    merge_entry: impl Fn(&T, &T) -> Option<T>,
) -> Option<Vec<T>> {
    let parent = parent.as_deref().unwrap_or_default();
    let child = child.as_deref().unwrap_or_default();
    let mut result = Vec::with_capacity(parent.len() + child.len());
    for parent_entry in parent {
        match child_keys.owners.get(&parent_entry.key()) {
            None => result.push(parent_entry.clone()),
            Some((owner, index)) if *owner == list => {
                if let Some(child_entry) = child.get(*index) {
                    result.extend(merge_entry(parent_entry, child_entry));
                }
            }
            // The child moved this key to another list of the group, which adds it.
            Some(_) => {}
        }
    }
    let parent_keys: HashSet<String> = parent.iter().map(Keyed::key).collect();
    result.extend(child.iter().filter(|child_entry| !parent_keys.contains(&child_entry.key())).cloned());
    non_empty(result)
}

fn merged<T: Merge>(parent: &T, child: &T) -> Option<T> {
    Some(parent.merged_with(child))
}

fn keyed<T: Keyed + Merge + Clone>(parent: &Option<Vec<T>>, child: &Option<Vec<T>>) -> Option<Vec<T>> {
    keyed_in_group("", parent, child, &ChildKeys::default().with("", child), merged)
}

/// A field Ignition's types hold as a plain value, not a pointer: a key (equal on both sides
/// whenever two entries merge) or the version.
fn plain<T: Clone>(_parent: &T, child: &T) -> T {
    child.clone()
}

/// An object that is always present.
fn recurse<T: Merge>(parent: &T, child: &T) -> T {
    parent.merged_with(child)
}

/// The merge rule of every field, type by type. The struct literal it expands to names
/// every field, so the compiler catches a field without a rule.
macro_rules! merge_by_field {
    ($($object:ident { $($field:ident: $rule:ident),* $(,)? })*) => {
        $(impl Merge for $object {
            fn merged_with(&self, child: &Self) -> Self {
                $object { $($field: $rule(&self.$field, &child.$field)),* }
            }
        })*
    };
}

merge_by_field! {
    Latest { ignition: recurse, kernel_arguments: nested, passwd: nested, storage: nested, systemd: nested }
    Ignition { config: nested, proxy: nested, security: nested, timeouts: nested, version: plain }
    IgnitionConfig { merge: keyed, replace: nested }
    Proxy { http_proxy: scalar, https_proxy: scalar, no_proxy: keyed }
    Security { tls: nested }
    SecurityTls { certificate_authorities: keyed }
    Timeouts { http_response_headers: scalar, http_total: scalar }
    HttpHeadersItem { name: plain, value: scalar }
    Verification { hash: scalar }
    Passwd { groups: keyed, users: keyed }
    Group { gid: scalar, name: plain, password_hash: scalar, should_exist: scalar, system: scalar }
    User {
        gecos: scalar, groups: keyed, home_dir: scalar, name: plain, no_create_home: scalar, no_log_init: scalar, no_user_group: scalar,
        password_hash: scalar, primary_group: scalar, shell: scalar, should_exist: scalar, ssh_authorized_keys: keyed, system: scalar, uid: scalar,
    }
    Disk { device: plain, partitions: keyed, wipe_table: scalar }
    // A partition's number is a plain integer in Ignition's types: the child's, even when unset.
    Partition {
        guid: scalar, label: scalar, number: plain, resize: scalar, should_exist: scalar, size_mib: scalar, start_mib: scalar,
        type_guid: scalar, wipe_partition_entry: scalar,
    }
    Filesystem {
        device: plain, format: scalar, label: scalar, mount_options: appended, options: appended, path: scalar, uuid: scalar,
        wipe_filesystem: scalar,
    }
    Luks {
        cex: nested, clevis: nested, device: scalar, discard: scalar, key_file: nested, label: scalar, name: plain, open_options: keyed,
        options: appended, uuid: scalar, wipe_volume: scalar,
    }
    Cex { enabled: scalar }
    Clevis { custom: nested, tang: keyed, threshold: scalar, tpm2: scalar }
    ClevisCustom { config: scalar, needs_network: scalar, pin: scalar }
    Tang { advertisement: scalar, thumbprint: scalar, url: plain }
    Raid { devices: keyed, level: scalar, name: plain, options: appended, spares: scalar }
    NodeUser { id: scalar, name: scalar }
    NodeGroup { id: scalar, name: scalar }
    File { append: appended, contents: nested, group: nested, mode: scalar, overwrite: scalar, path: plain, user: nested }
    Directory { group: nested, mode: scalar, overwrite: scalar, path: plain, user: nested }
    Link { group: nested, hard: scalar, overwrite: scalar, path: plain, target: scalar, user: nested }
    Systemd { units: keyed }
    Unit { contents: scalar, dropins: keyed, enabled: scalar, mask: scalar, name: plain }
    Dropin { contents: scalar, name: plain }
}

/// Two equal strings in parent and child lists are one entry: the child's stands.
impl Merge for String {
    fn merged_with(&self, child: &Self) -> Self {
        child.clone()
    }
}

impl Merge for Resource {
    fn merged_with(&self, child: &Self) -> Self {
        let headers = ChildKeys::default().with("", &child.http_headers);
        Resource {
            compression: scalar(&self.compression, &child.compression),
            http_headers: keyed_in_group("", &self.http_headers, &child.http_headers, &headers, |parent, child| {
                child.value.is_some().then(|| parent.merged_with(child))
            }),
            source: scalar(&self.source, &child.source),
            verification: nested(&self.verification, &child.verification),
        }
    }
}

impl Merge for KernelArguments {
    fn merged_with(&self, child: &Self) -> Self {
        let arguments = ChildKeys::default().with("shouldExist", &child.should_exist).with("shouldNotExist", &child.should_not_exist);
        KernelArguments {
            should_exist: keyed_in_group("shouldExist", &self.should_exist, &child.should_exist, &arguments, merged),
            should_not_exist: keyed_in_group("shouldNotExist", &self.should_not_exist, &child.should_not_exist, &arguments, merged),
        }
    }
}

impl Merge for Storage {
    fn merged_with(&self, child: &Self) -> Self {
        // Ignition's Storage declares directories, files, links in this order: it decides which
        // list wins when a child repeats a path across them.
        let nodes = ChildKeys::default().with("directories", &child.directories).with("files", &child.files).with("links", &child.links);
        Storage {
            directories: keyed_in_group("directories", &self.directories, &child.directories, &nodes, merged),
            disks: keyed(&self.disks, &child.disks),
            files: keyed_in_group("files", &self.files, &child.files, &nodes, merged),
            filesystems: keyed(&self.filesystems, &child.filesystems),
            links: keyed_in_group("links", &self.links, &child.links, &nodes, merged),
            luks: keyed(&self.luks, &child.luks),
            raid: keyed(&self.raid, &child.raid),
        }
    }
}

/// Most entries are known by one string field: a name, a device, a path.
macro_rules! keyed_by_field {
    ($($entry:ty => $field:ident),* $(,)?) => {
        $(impl Keyed for $entry {
            fn key(&self) -> String {
                self.$field.clone()
            }
        })*
    };
}

keyed_by_field!(
    HttpHeadersItem => name,
    Group => name,
    User => name,
    Disk => device,
    Filesystem => device,
    Luks => name,
    Raid => name,
    File => path,
    Directory => path,
    Link => path,
    Unit => name,
    Dropin => name,
);

/// Strings in a list (SSH keys, groups, kernel arguments…) are their own key.
impl Keyed for String {
    fn key(&self) -> String {
        self.clone()
    }
}

/// Keyed by its source; a resource without one has the empty key, as in Ignition.
impl Keyed for Resource {
    fn key(&self) -> String {
        self.source.clone().unwrap_or_default()
    }
}

/// A partition is known by its number, or by its label when it has no number (0 is no number).
impl Keyed for Partition {
    fn key(&self) -> String {
        match (self.number, &self.label) {
            (Some(number), _) if number != 0 => format!("number:{number}"),
            (_, Some(label)) => format!("label:{label}"),
            _ => String::new(),
        }
    }
}

impl Keyed for Tang {
    fn key(&self) -> String {
        self.url.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    //! Where a test's expectation is non-obvious, it was checked against Ignition 2.14: the
    //! parent as a user config with the child in `ignition.config.merge`, rendered by
    //! `ignition -platform file -stage fetch`, whose config cache is the merged config.
    use super::*;

    /// A config from its sections; the `ignition` section is added unless they have one.
    fn config(sections: &str) -> Latest {
        let text = match sections.trim_start() {
            "" => r#"{"ignition": {"version": "3.6.0"}}"#.to_owned(),
            own if own.starts_with(r#""ignition""#) => format!("{{{sections}}}"),
            _ => format!(r#"{{"ignition": {{"version": "3.6.0"}}, {sections}}}"#),
        };
        crate::parse(text.as_bytes()).unwrap().config
    }

    fn assert_merges(parent: &str, child: &str, expected: &str) {
        assert_eq!(merge(&config(parent), &config(child)), config(expected));
    }

    #[test]
    fn a_scalar_takes_the_childs_value_only_when_the_child_sets_it() {
        assert_merges(
            r#""passwd": {"users": [{"name": "core", "shell": "/bin/bash", "uid": 500, "gecos": "old"}]}"#,
            r#""passwd": {"users": [{"name": "core", "homeDir": "/h", "gecos": "new"}]}"#,
            r#""passwd": {"users": [{"name": "core", "shell": "/bin/bash", "uid": 500, "gecos": "new", "homeDir": "/h"}]}"#,
        );
        // An explicit false or empty string is set, and wins.
        assert_merges(
            r#""systemd": {"units": [{"name": "a.service", "enabled": true, "contents": "x"}]}"#,
            r#""systemd": {"units": [{"name": "a.service", "enabled": false, "contents": ""}]}"#,
            r#""systemd": {"units": [{"name": "a.service", "enabled": false, "contents": ""}]}"#,
        );
    }

    #[test]
    fn nested_objects_merge_field_by_field() {
        assert_merges(
            r#""ignition": {"version": "3.6.0", "timeouts": {"httpTotal": 10}, "proxy": {"httpProxy": "http://p"}}"#,
            r#""ignition": {"version": "3.6.0", "timeouts": {"httpResponseHeaders": 5}, "proxy": {"httpsProxy": "http://q"}}"#,
            r#""ignition": {"version": "3.6.0", "timeouts": {"httpTotal": 10, "httpResponseHeaders": 5},
                "proxy": {"httpProxy": "http://p", "httpsProxy": "http://q"}}"#,
        );
        assert_merges(
            r#""storage": {"files": [{"path": "/c", "user": {"id": 5}, "group": {"name": "g"}}]}"#,
            r#""storage": {"files": [{"path": "/c", "user": {"name": "u"}}]}"#,
            r#""storage": {"files": [{"path": "/c", "user": {"id": 5, "name": "u"}, "group": {"name": "g"}}]}"#,
        );
    }

    #[test]
    fn keyed_entries_merge_in_place_and_the_childs_new_entries_follow_in_its_order() {
        assert_merges(
            r#""systemd": {"units": [{"name": "a.service", "mask": true, "dropins": [{"name": "10.conf", "contents": "p"}, {"name": "20.conf"}]},
                                     {"name": "b.service"}]}"#,
            r#""systemd": {"units": [{"name": "c.service"}, {"name": "a.service", "enabled": false,
                                      "dropins": [{"name": "30.conf"}, {"name": "10.conf", "contents": "c"}]}]}"#,
            r#""systemd": {"units": [{"name": "a.service", "mask": true, "enabled": false,
                                      "dropins": [{"name": "10.conf", "contents": "c"}, {"name": "20.conf"}, {"name": "30.conf"}]},
                                     {"name": "b.service"}, {"name": "c.service"}]}"#,
        );
        assert_merges(
            r#""storage": {"disks": [{"device": "/dev/vda", "wipeTable": false}, {"device": "/dev/vdb"}],
                           "filesystems": [{"device": "/dev/vda1", "format": "ext4"}], "luks": [{"name": "l", "device": "/dev/vda2"}],
                           "raid": [{"name": "md0", "level": "raid1"}]},
                "passwd": {"groups": [{"name": "g1", "gid": 10}, {"name": "g2"}]}"#,
            r#""storage": {"disks": [{"device": "/dev/vdc"}, {"device": "/dev/vda", "wipeTable": true}],
                           "filesystems": [{"device": "/dev/vda1", "path": "/var"}], "luks": [{"name": "l", "discard": true}],
                           "raid": [{"name": "md0", "spares": 1}]},
                "passwd": {"groups": [{"name": "g2", "system": true}, {"name": "g1", "passwordHash": "x"}]}"#,
            r#""storage": {"disks": [{"device": "/dev/vda", "wipeTable": true}, {"device": "/dev/vdb"}, {"device": "/dev/vdc"}],
                           "filesystems": [{"device": "/dev/vda1", "format": "ext4", "path": "/var"}],
                           "luks": [{"name": "l", "device": "/dev/vda2", "discard": true}], "raid": [{"name": "md0", "level": "raid1", "spares": 1}]},
                "passwd": {"groups": [{"name": "g1", "gid": 10, "passwordHash": "x"}, {"name": "g2", "system": true}]}"#,
        );
    }

    #[test]
    fn files_directories_and_links_share_the_path_as_their_key() {
        // Checked against Ignition 2.14: the child's link replaces the parent's file at /a, its
        // file replaces the parent's directory at /d; same-list entries merge in place.
        assert_merges(
            r#""storage": {"files": [{"path": "/a", "mode": 420}, {"path": "/b", "mode": 420, "contents": {"source": "data:,x"}}],
                           "directories": [{"path": "/d", "mode": 493}, {"path": "/e"}], "links": [{"path": "/f", "target": "/x"}]}"#,
            r#""storage": {"links": [{"path": "/a", "target": "/x"}, {"path": "/f", "hard": false}],
                           "files": [{"path": "/b", "mode": 384}, {"path": "/d", "contents": {"source": "data:,d"}}],
                           "directories": [{"path": "/z"}, {"path": "/e", "overwrite": true}]}"#,
            r#""storage": {"directories": [{"path": "/e", "overwrite": true}, {"path": "/z"}],
                           "files": [{"path": "/b", "mode": 384, "contents": {"source": "data:,x"}}, {"path": "/d", "contents": {"source": "data:,d"}}],
                           "links": [{"path": "/f", "target": "/x", "hard": false}, {"path": "/a", "target": "/x"}]}"#,
        );
    }

    #[test]
    fn other_keyed_lists_do_not_share_keys() {
        // A unit and a user of the same name, a disk and a filesystem on the same device: unrelated.
        assert_merges(
            r#""storage": {"disks": [{"device": "/dev/vda"}]}, "passwd": {"users": [{"name": "a"}]}"#,
            r#""storage": {"filesystems": [{"device": "/dev/vda", "format": "ext4"}]}, "systemd": {"units": [{"name": "a"}]}"#,
            r#""storage": {"disks": [{"device": "/dev/vda"}], "filesystems": [{"device": "/dev/vda", "format": "ext4"}]},
                "passwd": {"users": [{"name": "a"}]}, "systemd": {"units": [{"name": "a"}]}"#,
        );
    }

    #[test]
    fn a_child_header_without_a_value_removes_the_parents_header() {
        // Checked against Ignition 2.14, including the valueless header "e" the parent lacks: it stays.
        assert_merges(
            r#""storage": {"files": [{"path": "/h", "contents": {"source": "https://example.com/x",
                "httpHeaders": [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}, {"name": "d", "value": "4"}]}}]}"#,
            r#""storage": {"files": [{"path": "/h", "contents": {"source": "https://example.com/y", "compression": "gzip",
                "httpHeaders": [{"name": "b"}, {"name": "c", "value": "3"}, {"name": "a", "value": "9"}, {"name": "e"}]}}]}"#,
            r#""storage": {"files": [{"path": "/h", "contents": {"source": "https://example.com/y", "compression": "gzip",
                "httpHeaders": [{"name": "a", "value": "9"}, {"name": "d", "value": "4"}, {"name": "c", "value": "3"}, {"name": "e"}]}}]}"#,
        );
    }

    #[test]
    fn should_exist_and_should_not_exist_share_the_kernel_argument_as_key() {
        assert_merges(
            r#""kernelArguments": {"shouldExist": ["a", "b"], "shouldNotExist": ["c", "e"]}"#,
            r#""kernelArguments": {"shouldNotExist": ["a", "f"], "shouldExist": ["c", "d", "b"]}"#,
            r#""kernelArguments": {"shouldExist": ["b", "c", "d"], "shouldNotExist": ["e", "a", "f"]}"#,
        );
    }

    #[test]
    fn tool_options_and_file_appends_are_concatenated_with_their_duplicates() {
        assert_merges(
            r#""storage": {"filesystems": [{"device": "/dev/vda1", "format": "ext4", "options": ["-a", "-b"], "mountOptions": ["ro"]}],
                           "luks": [{"name": "root", "device": "/dev/vda2", "options": ["--x"]}],
                           "raid": [{"name": "md0", "level": "raid1", "devices": ["/dev/vdb"], "options": ["--o"]}],
                           "files": [{"path": "/f", "append": [{"source": "data:,1"}, {"source": "data:,2"}]}]}"#,
            r#""storage": {"filesystems": [{"device": "/dev/vda1", "options": ["-a", "-c"], "mountOptions": ["ro", "noatime"]}],
                           "luks": [{"name": "root", "options": ["--x", "--y"]}],
                           "raid": [{"name": "md0", "devices": ["/dev/vdb"], "options": ["--o"]}],
                           "files": [{"path": "/f", "append": [{"source": "data:,1"}, {"source": "data:,3"}]}]}"#,
            r#""storage": {"filesystems": [{"device": "/dev/vda1", "format": "ext4", "options": ["-a", "-b", "-a", "-c"], "mountOptions": ["ro", "ro", "noatime"]}],
                           "luks": [{"name": "root", "device": "/dev/vda2", "options": ["--x", "--x", "--y"]}],
                           "raid": [{"name": "md0", "level": "raid1", "devices": ["/dev/vdb"], "options": ["--o", "--o"]}],
                           "files": [{"path": "/f", "append": [{"source": "data:,1"}, {"source": "data:,2"}, {"source": "data:,1"}, {"source": "data:,3"}]}]}"#,
        );
    }

    #[test]
    fn other_string_lists_are_sets_that_keep_the_parents_order() {
        assert_merges(
            r#""ignition": {"version": "3.6.0", "proxy": {"noProxy": ["a", "b"]}},
                "passwd": {"users": [{"name": "core", "groups": ["wheel", "docker"], "sshAuthorizedKeys": ["k1", "k0"]}]},
                "storage": {"raid": [{"name": "md0", "devices": ["/dev/vdb", "/dev/vdc"]}], "luks": [{"name": "l", "openOptions": ["x"]}]}"#,
            r#""ignition": {"version": "3.6.0", "proxy": {"noProxy": ["c", "a"]}},
                "passwd": {"users": [{"name": "core", "groups": ["sudo", "wheel"], "sshAuthorizedKeys": ["k2", "k1"]}]},
                "storage": {"raid": [{"name": "md0", "devices": ["/dev/vdd", "/dev/vdb"]}], "luks": [{"name": "l", "openOptions": ["y", "x"]}]}"#,
            r#""ignition": {"version": "3.6.0", "proxy": {"noProxy": ["a", "b", "c"]}},
                "passwd": {"users": [{"name": "core", "groups": ["wheel", "docker", "sudo"], "sshAuthorizedKeys": ["k1", "k0", "k2"]}]},
                "storage": {"raid": [{"name": "md0", "devices": ["/dev/vdb", "/dev/vdc", "/dev/vdd"]}], "luks": [{"name": "l", "openOptions": ["x", "y"]}]}"#,
        );
    }

    #[test]
    fn a_partition_is_known_by_its_number_else_by_its_label() {
        assert_merges(
            r#""storage": {"disks": [{"device": "/dev/vda", "partitions": [{"number": 1, "label": "x", "sizeMiB": 10}, {"label": "y", "sizeMiB": 20},
                                                                            {"number": 3, "label": "w"}]}]}"#,
            r#""storage": {"disks": [{"device": "/dev/vda", "partitions": [{"label": "y", "startMiB": 2048}, {"number": 1, "label": "renamed"},
                                                                            {"label": "w", "sizeMiB": 5}]}]}"#,
            // The label-only "w" is not partition 3: Ignition 2.14 appends it, and then refuses
            // the result for using a label twice.
            r#""storage": {"disks": [{"device": "/dev/vda", "partitions": [{"number": 1, "label": "renamed", "sizeMiB": 10},
                                                                            {"label": "y", "sizeMiB": 20, "startMiB": 2048},
                                                                            {"number": 3, "label": "w"}, {"label": "w", "sizeMiB": 5}]}]}"#,
        );
    }

    #[test]
    fn a_childs_repeated_key_merges_its_last_entry_only_when_the_parent_has_the_key() {
        assert_merges(
            r#""systemd": {"units": [{"name": "a.service", "mask": true}]}"#,
            r#""systemd": {"units": [{"name": "a.service", "contents": "1"}, {"name": "a.service", "enabled": true},
                                     {"name": "b.service", "contents": "1"}, {"name": "b.service", "contents": "2"}]}"#,
            r#""systemd": {"units": [{"name": "a.service", "mask": true, "enabled": true},
                                     {"name": "b.service", "contents": "1"}, {"name": "b.service", "contents": "2"}]}"#,
        );
        // Across lists, the one Ignition declares last holds the key: the child's link at /p
        // drops the parent's file there and the child's own file too.
        assert_merges(
            r#""storage": {"files": [{"path": "/p", "mode": 420}]}"#,
            r#""storage": {"files": [{"path": "/p", "mode": 384}], "links": [{"path": "/p", "target": "/t"}]}"#,
            r#""storage": {"links": [{"path": "/p", "target": "/t"}]}"#,
        );
    }

    #[test]
    fn a_new_contents_source_keeps_the_parents_verification_hash() {
        // Ignition merges the resource field by field, so the old hash now guards the new
        // source and fetching fails: the child must restate the hash.
        let hash = format!("sha512-{}", "0".repeat(128));
        assert_merges(
            &format!(r#""storage": {{"files": [{{"path": "/f", "contents": {{"source": "data:,old", "verification": {{"hash": "{hash}"}}}}}}]}}"#),
            r#""storage": {"files": [{"path": "/f", "contents": {"source": "data:,new"}}]}"#,
            &format!(r#""storage": {{"files": [{{"path": "/f", "contents": {{"source": "data:,new", "verification": {{"hash": "{hash}"}}}}}}]}}"#),
        );
    }

    #[test]
    fn referenced_configs_and_certificate_authorities_are_keyed_by_source() {
        assert_merges(
            r#""ignition": {"version": "3.6.0", "config": {"merge": [{"source": "data:,a"}, {"source": "data:,b"}]},
                            "security": {"tls": {"certificateAuthorities": [{"source": "data:,ca1"}]}}}"#,
            r#""ignition": {"version": "3.6.0", "config": {"merge": [{"source": "data:,c"}, {"source": "data:,a", "compression": "gzip"}],
                                                           "replace": {"source": "data:,r"}},
                            "security": {"tls": {"certificateAuthorities": [{"source": "data:,ca1", "compression": "gzip"}, {"source": "data:,ca2"}]}}}"#,
            r#""ignition": {"version": "3.6.0", "config": {"merge": [{"source": "data:,a", "compression": "gzip"}, {"source": "data:,b"}, {"source": "data:,c"}],
                                                           "replace": {"source": "data:,r"}},
                            "security": {"tls": {"certificateAuthorities": [{"source": "data:,ca1", "compression": "gzip"}, {"source": "data:,ca2"}]}}}"#,
        );
    }

    #[test]
    fn an_empty_side_changes_nothing() {
        let full = r#""storage": {"files": [{"path": "/a"}, {"path": "/a"}], "filesystems": [{"device": "/d", "options": ["x"]}]},
                      "passwd": {"users": [{"name": "u", "sshAuthorizedKeys": ["k", "k"]}]},
                      "kernelArguments": {"shouldExist": ["q"]}"#;
        assert_merges(full, "", full);
        assert_merges("", full, full);
        // An empty list is unset in the result, as Ignition leaves it.
        let merged = merge(&config(r#""storage": {"files": []}"#), &config(r#""storage": {"files": []}"#));
        assert_eq!(merged.storage.unwrap().files, None);
    }

    #[test]
    fn the_result_has_the_childs_version() {
        let mut child = config("");
        child.ignition.version = "3.5.0".to_owned();
        assert_eq!(merge(&config(""), &child).ignition.version, "3.5.0");
    }
}
