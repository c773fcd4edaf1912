//! Validation with Ignition's rules: the same configs are accepted and refused, and the same
//! findings are errors or warnings, as `ignition-validate` says for the version the document
//! declared. Ignition validates each document with its own version's rules before translating it
//! upward, so the rules here take the declared [`SpecVersion`]: spec 3.0–3.3 follow Ignition
//! 2.14, spec 3.4–3.6 follow the newest Ignition (2.14 knew only a 3.4.0-experimental).
//!
//! Each section's module holds its rules: small functions from a node and its JSON path to
//! reports, named for what they demand. Messages name the offending value unless it may be a
//! secret (file contents, data URLs, header values, password hashes, SSH keys).

mod disks;
mod filesystems;
mod gopath;
mod ignition;
mod kargs;
mod luks;
mod nodes;
mod passwd;
mod raid;
mod resource;
mod systemd;
mod unit_file;
mod url;

use crate::config::{Latest, SpecVersion};
use crate::report::{JsonPath, Report};
use std::cmp::Ordering;
use std::collections::HashSet;
use std::hash::Hash;

/// Every finding about `config`, which declared `version`, in document order.
pub fn validate(config: &Latest, version: SpecVersion) -> Vec<Report> {
    let root = JsonPath::root();
    let mut reports = ignition::validate_ignition(&config.ignition, &root.field("ignition"), version);
    if let Some(kernel_arguments) = &config.kernel_arguments {
        reports.extend(kargs::validate_kernel_arguments(kernel_arguments, &root.field("kernelArguments")));
    }
    if let Some(passwd) = &config.passwd {
        reports.extend(passwd::validate_passwd(passwd, &root.field("passwd")));
    }
    if let Some(storage) = &config.storage {
        let at = root.field("storage");
        reports.extend(nodes::validate_nodes(storage, &at, version));
        reports.extend(disks::validate_disks(storage.disks.as_deref().unwrap_or_default(), &at.field("disks"), version));
        reports.extend(filesystems::validate_filesystems(storage, &at.field("filesystems"), version));
        reports.extend(luks::validate_luks_volumes(storage.luks.as_deref().unwrap_or_default(), &at.field("luks"), version));
        reports.extend(raid::validate_raids(storage.raid.as_deref().unwrap_or_default(), &at.field("raid"), version));
        if let Some(systemd) = &config.systemd {
            reports.extend(nodes::paths_conflict_with_units(storage, systemd, &at, version));
        }
    }
    if let Some(systemd) = &config.systemd {
        reports.extend(systemd::validate_systemd(systemd, &root.field("systemd"), version));
    }
    reports.sort_by(|left, right| document_order(left.path.as_str(), right.path.as_str()));
    reports
}

/// The positions of the entries whose key an earlier entry already has. Ignition reports every
/// repeat, never the first occurrence.
fn repeats<K: Eq + Hash>(keys: impl IntoIterator<Item = K>) -> Vec<usize> {
    let mut seen = HashSet::new();
    keys.into_iter().enumerate().filter_map(|(index, key)| (!seen.insert(key)).then_some(index)).collect()
}

/// Duplicate entries of a keyed list (disks by device, units by name...): an error at each
/// repeat, its message made by `describe` from the key.
fn repeated_keys<T>(items: &[T], key: impl Fn(&T) -> &str, at: &JsonPath, describe: impl Fn(&str) -> String) -> Vec<Report> {
    repeats(items.iter().map(&key)).into_iter().filter_map(|index| Some(Report::error(at.index(index), describe(key(items.get(index)?))))).collect()
}

/// Duplicate entries of a list of strings (SSH keys, groups, RAID devices...) where the entry is
/// its own key. `what` names an entry; `show` is false for values that may be secret.
fn repeated_strings(list: &[String], at: &JsonPath, what: &str, show: bool) -> Vec<Report> {
    repeats(list.iter())
        .into_iter()
        .map(|index| {
            let shown = if show { format!(" {:?}", list.get(index).map_or("", String::as_str)) } else { String::new() };
            Report::error(at.index(index), format!("duplicate {what}{shown}: the same entry appears earlier in the list"))
        })
        .collect()
}

/// Orders JSON paths the way the document reads: a node before what it contains, list entries by
/// index, and sibling fields in the spec's (alphabetical) field order, the order Ignition walks.
fn document_order(left: &str, right: &str) -> Ordering {
    let mut left_segments = segments(left);
    let mut right_segments = segments(right);
    loop {
        match (left_segments.next(), right_segments.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(left), Some(right)) => {
                let order = match (left, right) {
                    (Segment::Index(left), Segment::Index(right)) => left.cmp(&right),
                    (Segment::Field(left), Segment::Field(right)) => {
                        left.to_ascii_lowercase().cmp(&right.to_ascii_lowercase()).then_with(|| left.cmp(right))
                    }
                    (Segment::Field(_), Segment::Index(_)) => Ordering::Less,
                    (Segment::Index(_), Segment::Field(_)) => Ordering::Greater,
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Segment<'a> {
    Field(&'a str),
    Index(usize),
}

/// `$.storage.files[3].path` as `storage`, `files`, 3, `path`.
fn segments(path: &str) -> impl Iterator<Item = Segment<'_>> {
    path.strip_prefix('$').unwrap_or(path).split(['.', '[']).filter(|segment| !segment.is_empty()).map(|segment| {
        match segment.strip_suffix(']').and_then(|digits| digits.parse().ok()) {
            Some(index) => Segment::Index(index),
            None => Segment::Field(segment),
        }
    })
}

#[cfg(test)]
mod tests;
