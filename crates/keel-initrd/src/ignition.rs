//! Ignition base configs baked into the initrd (`--ignition-base DIR`). DIR mirrors
//! Ignition's own layout, `base.d/*.ign` and `base.platform.d/<platform>/*.ign`, and holds
//! nothing else: a vendor's `base/` or `config.json` would otherwise be left out without a
//! word and the machines would boot without it. Each config is checked here as keel-init
//! will check it, so an image never ships a base config that stops every first boot.

use crate::{Source, Tree};
use anyhow::{bail, Context};
use keel_ignition::config::MAX_CONFIG_BYTES;
use keel_ignition::report::has_errors;
use keel_ignition::resolve::{resolve, Document};
use keel_manifest::INITRD_IGNITION_DIR;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

const BASE_DIR: &str = "base.d";
const PLATFORM_DIR: &str = "base.platform.d";
const LAYOUT: &str = "an Ignition base directory holds only base.d/*.ign and base.platform.d/PLATFORM/*.ign";

/// Packs every config under `dir` below INITRD_IGNITION_DIR as a root-owned 0644 file and
/// returns the warnings of the valid ones, each line naming its file. Nothing is packed
/// when one config has an error: the error names each such file with every report.
pub fn insert_base_configs(tree: &mut Tree, dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut configs = Vec::new();
    for (name, path) in entries(dir)? {
        match name.as_str() {
            BASE_DIR if path.is_dir() => configs.extend(config_files(&path, BASE_DIR)?),
            PLATFORM_DIR if path.is_dir() => {
                for (platform, platform_path) in entries(&path)? {
                    if !platform_path.is_dir() || !is_platform_name(&platform) {
                        bail!(
                            "{}: {PLATFORM_DIR} holds one directory per platform, named in lower-case letters, digits, - and _ (qemu, aws, …)",
                            platform_path.display()
                        );
                    }
                    configs.extend(config_files(&platform_path, &format!("{PLATFORM_DIR}/{platform}"))?);
                }
            }
            _ => bail!("{}: {LAYOUT}", path.display()),
        }
    }

    let (mut warnings, mut refusals) = (Vec::new(), Vec::new());
    let mut checked = Vec::new();
    for (initrd_path, host_path) in configs {
        let data = read_config(&host_path)?;
        let reports = match keel_ignition::parse(&data) {
            Ok(parsed) => {
                let mut reports = parsed.reports;
                reports.extend(keel_ignition::validate::validate(&parsed.config, parsed.version));
                reports
            }
            Err(error) => {
                refusals.push(format!("{}: {error}", host_path.display()));
                continue;
            }
        };
        let lines = reports.iter().map(|report| format!("{}: {report}", host_path.display()));
        if has_errors(&reports) {
            refusals.extend(lines);
        } else {
            warnings.extend(lines);
            checked.push((initrd_path, data, host_path));
        }
    }
    if !refusals.is_empty() {
        bail!("Ignition base configs with errors (keel-init would refuse them at every first boot):\n{}", refusals.join("\n"));
    }
    let configs: Vec<(String, Vec<u8>)> = checked.iter().map(|(initrd_path, data, _)| (initrd_path.clone(), data.clone())).collect();
    check_merged(&configs)?;
    for (initrd_path, data, host_path) in checked {
        tree.file(&initrd_path, data, 0o644, Source::IgnitionBase(host_path));
    }
    Ok(warnings)
}

/// Valid configs can still clash once merged (a path that one makes a file and another a
/// directory): base.d is merged alone, and with each platform's configs, and checked as keel-init
/// will check it (the OEM partition's base configs join at boot, and are checked then).
fn check_merged(checked: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    let base_prefix = format!("{INITRD_IGNITION_DIR}/{BASE_DIR}/");
    let platform_prefix = format!("{INITRD_IGNITION_DIR}/{PLATFORM_DIR}/");
    let document = |(path, data): &(String, Vec<u8>)| Document { name: path.clone(), bytes: data.clone() };
    let base: Vec<Document> = checked.iter().filter(|(path, _)| path.starts_with(&base_prefix)).map(document).collect();
    let mut platforms: BTreeMap<&str, Vec<Document>> = BTreeMap::new();
    for entry in checked {
        if let Some((platform, _)) = entry.0.strip_prefix(&platform_prefix).and_then(|rest| rest.split_once('/')) {
            platforms.entry(platform).or_default().push(document(entry));
        }
    }
    let check = |parsed: &keel_ignition::Parsed| keel_ignition::validate::validate(&parsed.config, parsed.version);
    let mut groups = vec![("base.d".to_string(), vec![base.as_slice(), &[]])];
    groups
        .extend(platforms.iter().map(|(platform, documents)| (format!("base.d with base.platform.d/{platform}"), vec![base.as_slice(), documents])));
    for (name, group) in groups {
        resolve(&group, None, &check).map_err(|error| anyhow::anyhow!("{name} merged (keel-init would refuse it at every first boot): {error}"))?;
    }
    Ok(())
}

/// The `.ign` files of `dir`, each with its path in the initrd.
fn config_files(dir: &Path, relative: &str) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for (name, path) in entries(dir)? {
        let is_config_name = name.strip_suffix(".ign").is_some_and(|stem| !stem.is_empty());
        if !is_config_name || !path.is_file() {
            bail!("{}: {LAYOUT}, and each config is a regular file named NAME.ign", path.display());
        }
        files.push((format!("{INITRD_IGNITION_DIR}/{relative}/{name}"), path));
    }
    Ok(files)
}

/// The entries of `dir`, sorted, with names that can be paths in the initrd. A symlink
/// counts as what it points to: the initrd gets that file's contents.
fn entries(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().into_string().map_err(|name| anyhow::anyhow!("{name:?} in {} is not UTF-8", dir.display()))?;
        entries.push((name, entry.path()));
    }
    entries.sort();
    Ok(entries)
}

fn is_platform_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_')
}

/// The file's bytes, refused past the most keel-init reads of one config.
fn read_config(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut data = Vec::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1).read_to_end(&mut data).with_context(|| format!("cannot read {}", path.display()))?;
    if data.len() > MAX_CONFIG_BYTES {
        bail!("{} is over {MAX_CONFIG_BYTES} bytes, the most keel-init reads of one Ignition config", path.display());
    }
    Ok(data)
}
