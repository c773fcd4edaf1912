//! `systemd.units`, as Ignition writes them: dropins, then the unit's contents (none when
//! empty), then mask or unmask, unit by unit; then one block of preset lines appended to
//! `/etc/systemd/system-preset/20-ignition.preset`, sorted as newer Ignition sorts them
//! (2.14 walks a Go map, so its order is random), template instances on one line in config
//! order. `enabled: false` also removes the unit's enablement symlinks, which Ignition has
//! `systemctl disable` do.

use super::{default_dir_attrs, kind_name, ApplyError, Contents, ErrorKind, Op, Planner, DEFAULT_FILE_MODE, ROOT_OWNER};
use crate::config::latest::Systemd;
use crate::report::JsonPath;
use crate::root::{Attrs, Kind};
use std::collections::BTreeMap;
use std::sync::Arc;

const UNITS_DIR: &str = "/etc/systemd/system";
const PRESET_FILE: &str = "/etc/systemd/system-preset/20-ignition.preset";
const MASK_TARGET: &str = "/dev/null";
/// The directories of a target's dependencies that `systemctl enable` fills with symlinks.
const DEPENDENCY_DIR_SUFFIXES: &[&str] = &[".wants", ".requires", ".upholds"];

const UNIT_ATTRS: Attrs = Attrs { mode: DEFAULT_FILE_MODE, uid: ROOT_OWNER.0, gid: ROOT_OWNER.1 };

/// The paths the units section writes, for an overwritten directory to keep them.
pub(crate) fn written_paths(systemd: Option<&Systemd>) -> Vec<String> {
    let mut paths = Vec::new();
    for unit in systemd.iter().flat_map(|systemd| systemd.units.iter().flatten()) {
        for dropin in unit.dropins.iter().flatten().filter(|dropin| dropin.contents.is_some()) {
            paths.push(format!("{UNITS_DIR}/{}.d/{}", unit.name, dropin.name));
        }
        if unit.contents.as_deref().is_some_and(|contents| !contents.is_empty()) || unit.mask == Some(true) {
            paths.push(format!("{UNITS_DIR}/{}", unit.name));
        }
        if unit.enabled.is_some() {
            paths.push(PRESET_FILE.to_owned());
        }
    }
    paths
}

/// One preset line: a unit, or a template with the instances the config names.
struct Preset {
    unit: String,
    enabled: bool,
    instances: Vec<String>,
}

impl Preset {
    fn line(&self) -> String {
        let verb = if self.enabled { "enable" } else { "disable" };
        if self.instances.is_empty() {
            format!("{verb} {}\n", self.unit)
        } else {
            format!("{verb} {} {}\n", self.unit, self.instances.join(" "))
        }
    }

    /// The unit names whose enablement symlinks `disable` removes.
    fn unit_names(&self) -> Vec<String> {
        match self.unit.split_once("@.") {
            Some((prefix, suffix)) if !self.instances.is_empty() => {
                self.instances.iter().map(|instance| format!("{prefix}@{instance}.{suffix}")).collect()
            }
            _ => vec![self.unit.clone()],
        }
    }
}

/// `foo@bar.service` as the template `foo@.service` and the instance `bar`.
fn template_and_instance(name: &str) -> Option<(String, String)> {
    let (prefix, rest) = name.split_once('@')?;
    let (instance, suffix) = rest.rsplit_once('.')?;
    Some((format!("{prefix}@.{suffix}"), instance.to_owned()))
}

pub(crate) fn plan_units(planner: &mut Planner, systemd: &Systemd) -> Result<(), ApplyError> {
    let units_at = JsonPath::root().field("systemd").field("units");
    // Keyed as Ignition keys them, so the sort matches newer Ignition's.
    let mut presets: BTreeMap<String, Preset> = BTreeMap::new();
    for (index, unit) in systemd.units.iter().flatten().enumerate() {
        let at = units_at.index(index);
        for (dropin_index, dropin) in unit.dropins.iter().flatten().enumerate() {
            if let Some(contents) = dropin.contents.as_deref() {
                let dropin_at = at.field("dropins").index(dropin_index);
                let path = planner.resolve(&dropin_at, &format!("{UNITS_DIR}/{}.d/{}", unit.name, dropin.name))?;
                write_replacing(planner, &dropin_at, &path, contents.as_bytes())?;
            }
        }
        let unit_path = planner.resolve(&at, &format!("{UNITS_DIR}/{}", unit.name))?;
        // A masked unit's contents are replaced by the mask right after Ignition writes them.
        let contents = unit.contents.as_deref().filter(|contents| !contents.is_empty());
        if let (Some(contents), false) = (contents, unit.mask == Some(true)) {
            write_replacing(planner, &at, &unit_path, contents.as_bytes())?;
        }
        match unit.mask {
            Some(true) => mask(planner, &at, &unit_path)?,
            Some(false) => unmask(planner, &at, &unit_path)?,
            None => {}
        }
        if let Some(enabled) = unit.enabled {
            let state = if enabled { "enabled" } else { "disabled" };
            match template_and_instance(&unit.name) {
                Some((template, instance)) => {
                    presets
                        .entry(format!("{template}-{state}"))
                        .or_insert_with(|| Preset { unit: template, enabled, instances: Vec::new() })
                        .instances
                        .push(instance);
                }
                None => {
                    presets.insert(format!("{}-{state}", unit.name), Preset { unit: unit.name.clone(), enabled, instances: Vec::new() });
                }
            }
        }
    }
    if presets.is_empty() {
        return Ok(());
    }
    for preset in presets.values().filter(|preset| !preset.enabled) {
        remove_enablement_links(planner, &units_at, &preset.unit_names())?;
    }
    let lines: String = presets.values().map(Preset::line).collect();
    let path = planner.resolve(&units_at, PRESET_FILE)?;
    let existing = planner.probe(&units_at, &path)?;
    match existing {
        Some(node) if node.kind != Kind::File => Err(ApplyError::new(
            &units_at,
            &path,
            ErrorKind::WrongType,
            format!("a {} is where the preset file goes: remove it", kind_name(node.kind)),
        )),
        Some(node) => {
            let attrs = node.attrs;
            planner.plan_append(&units_at, &path, Some(&node), lines.as_bytes(), attrs, false)
        }
        None => planner.plan_append(&units_at, &path, None, lines.as_bytes(), UNIT_ATTRS, false),
    }
}

/// A unit or dropin file, replaced whatever was there (Ignition renames over it), 0644 root's.
fn write_replacing(planner: &mut Planner, at: &JsonPath, path: &str, contents: &[u8]) -> Result<(), ApplyError> {
    match planner.probe(at, path)? {
        Some(node) if planner.holds(at, path, &node, UNIT_ATTRS, contents)? => return Ok(()),
        Some(node) if node.kind == Kind::Dir => {
            return Err(ApplyError::new(at, path, ErrorKind::WrongType, "a directory is where the unit file goes: remove it"));
        }
        Some(_) => {}
        None => planner.ensure_parents(at, path, default_dir_attrs())?,
    }
    let op = Op::WriteFile {
        path: path.to_owned(),
        contents: Contents { bytes: Arc::new(contents.to_vec()), secret: false },
        attrs: UNIT_ATTRS,
        append_record: None,
    };
    planner.push(at, op)?;
    Ok(())
}

fn is_mask(planner: &Planner, at: &JsonPath, path: &str) -> Result<Option<bool>, ApplyError> {
    match planner.probe(at, path)? {
        None => Ok(None),
        Some(node) if node.kind == Kind::Symlink => {
            Ok(Some(planner.link_target(at, path, &node)? == MASK_TARGET && node.attrs.uid == 0 && node.attrs.gid == 0))
        }
        Some(_) => Ok(Some(false)),
    }
}

fn mask(planner: &mut Planner, at: &JsonPath, path: &str) -> Result<(), ApplyError> {
    match is_mask(planner, at, path)? {
        Some(true) => return Ok(()),
        Some(false) => planner.push(at, Op::Remove { path: path.to_owned() })?,
        None => planner.ensure_parents(at, path, default_dir_attrs())?,
    }
    planner.push(at, Op::Symlink { path: path.to_owned(), target: MASK_TARGET.to_owned(), owner: ROOT_OWNER })?;
    Ok(())
}

fn unmask(planner: &mut Planner, at: &JsonPath, path: &str) -> Result<(), ApplyError> {
    let masked = match planner.probe(at, path)? {
        Some(node) if node.kind == Kind::Symlink => planner.link_target(at, path, &node)? == MASK_TARGET,
        _ => false,
    };
    if masked {
        planner.push(at, Op::Remove { path: path.to_owned() })?;
    }
    Ok(())
}

/// What `systemctl disable` removes under /etc/systemd/system: the units' symlinks in the
/// dependency directories of other units, and aliases (symlinks that name another unit and
/// point at one of these).
fn remove_enablement_links(planner: &mut Planner, at: &JsonPath, unit_names: &[String]) -> Result<(), ApplyError> {
    // Resolving a name inside the directory resolves the directory itself, as a parent.
    let inside = planner.resolve(at, &format!("{UNITS_DIR}/name"))?;
    let Some((units_dir, _)) = crate::root::split_parent(&inside) else { return Ok(()) };
    let units_dir = units_dir.to_owned();
    let Some(node) = planner.probe(at, &units_dir)? else { return Ok(()) };
    if node.kind != Kind::Dir || node.on_disk.is_none() {
        return Ok(());
    }
    let list = |planner: &Planner, dir: &str| {
        planner.root().list_dir(dir).map_err(|error| ApplyError::new(at, dir, ErrorKind::Io, format!("cannot list the directory: {error}")))
    };
    for name in list(planner, &units_dir)? {
        let path = format!("{units_dir}/{name}");
        let Some(node) = planner.probe(at, &path)? else { continue };
        if node.kind == Kind::Dir && DEPENDENCY_DIR_SUFFIXES.iter().any(|suffix| name.ends_with(suffix)) && node.on_disk.is_some() {
            for link_name in list(planner, &path)? {
                let link_path = format!("{path}/{link_name}");
                let is_link = planner.probe(at, &link_path)?.is_some_and(|node| node.kind == Kind::Symlink);
                if is_link && unit_names.contains(&link_name) {
                    planner.push(at, Op::Remove { path: link_path })?;
                }
            }
        } else if node.kind == Kind::Symlink && !unit_names.contains(&name) {
            let target = planner.link_target(at, &path, &node)?;
            let target_name = target.rsplit('/').next().unwrap_or_default();
            if target != MASK_TARGET && unit_names.iter().any(|unit| unit == target_name) {
                planner.push(at, Op::Remove { path })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{plan, ErrorKind};

    fn units(json: &str) -> String {
        format!(r#"{{"ignition":{{"version":"3.4.0"}},"systemd":{{"units":{json}}}}}"#)
    }

    #[test]
    fn units_and_dropins_are_written_0644_and_empty_contents_write_nothing() {
        let (path, root) = fresh_root("units");
        apply(
            &root,
            &units(
                r#"[{"name":"a.service","contents":"[Unit]\n","dropins":[{"name":"x.conf","contents":""},{"name":"none.conf"}]},{"name":"empty.service","contents":""}]"#,
            ),
        );
        let system = path.join("etc/systemd/system");
        assert_eq!(std::fs::read_to_string(system.join("a.service")).unwrap(), "[Unit]\n");
        assert_eq!(mode_owner(&system.join("a.service")), (0o644, 0, 0));
        assert_eq!(std::fs::read(system.join("a.service.d/x.conf")).unwrap(), b"");
        assert!(!system.join("a.service.d/none.conf").exists());
        assert!(!system.join("empty.service").exists());
    }

    #[test]
    fn an_existing_unit_is_replaced_without_asking() {
        let (path, root) = fresh_root("unit-replace");
        let system = path.join("etc/systemd/system");
        std::fs::create_dir_all(&system).unwrap();
        std::fs::write(system.join("a.service"), "old").unwrap();
        std::fs::set_permissions(system.join("a.service"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        apply(&root, &units(r#"[{"name":"a.service","contents":"new"}]"#));
        assert_eq!(std::fs::read_to_string(system.join("a.service")).unwrap(), "new");
        assert_eq!(mode_owner(&system.join("a.service")).0, 0o644);
    }

    #[test]
    fn mask_links_to_dev_null_and_unmask_removes_only_that_link() {
        let (path, root) = fresh_root("mask");
        let system = path.join("etc/systemd/system");
        std::fs::create_dir_all(&system).unwrap();
        std::fs::write(system.join("m.service"), "contents go").unwrap();
        std::os::unix::fs::symlink("/dev/null", system.join("u.service")).unwrap();
        std::os::unix::fs::symlink("/lib/systemd/system/k.service", system.join("k.service")).unwrap();
        apply(&root, &units(r#"[{"name":"m.service","mask":true},{"name":"u.service","mask":false},{"name":"k.service","mask":false}]"#));
        assert_eq!(std::fs::read_link(system.join("m.service")).unwrap().to_str(), Some("/dev/null"));
        assert!(std::fs::symlink_metadata(system.join("u.service")).is_err());
        assert!(std::fs::symlink_metadata(system.join("k.service")).is_ok());
    }

    #[test]
    fn presets_are_sorted_with_template_instances_on_one_line() {
        let (path, root) = fresh_root("presets");
        apply(
            &root,
            &units(
                r#"[{"name":"z.service","enabled":true},{"name":"getty@tty2.service","enabled":true},{"name":"getty@tty1.service","enabled":true},
            {"name":"b.service","enabled":false},{"name":"getty@tty3.service","enabled":false}]"#,
            ),
        );
        let preset = path.join("etc/systemd/system-preset/20-ignition.preset");
        assert_eq!(
            std::fs::read_to_string(&preset).unwrap(),
            "disable b.service\ndisable getty@.service tty3\nenable getty@.service tty2 tty1\nenable z.service\n"
        );
        assert_eq!(mode_owner(&preset), (0o644, 0, 0));
    }

    #[test]
    fn presets_are_appended_to_an_existing_file_once() {
        let (path, root) = fresh_root("preset-append");
        let presets = path.join("etc/systemd/system-preset");
        std::fs::create_dir_all(&presets).unwrap();
        std::fs::write(presets.join("20-ignition.preset"), "enable old.service\n").unwrap();
        let json = units(r#"[{"name":"a.service","enabled":true}]"#);
        apply(&root, &json);
        let again = plan(&config(&json), &root, true).unwrap();
        assert!(steps_besides_result(&again).is_empty(), "{again}");
        assert_eq!(std::fs::read_to_string(presets.join("20-ignition.preset")).unwrap(), "enable old.service\nenable a.service\n");
    }

    #[test]
    fn another_configs_presets_are_appended_after_the_first_ones() {
        let (path, root) = fresh_root("preset-another");
        apply(&root, &units(r#"[{"name":"a.service","enabled":true}]"#));
        apply(&root, &units(r#"[{"name":"b.service","enabled":false}]"#));
        let preset = path.join("etc/systemd/system-preset/20-ignition.preset");
        assert_eq!(std::fs::read_to_string(preset).unwrap(), "enable a.service\ndisable b.service\n");
    }

    #[test]
    fn disabling_removes_the_units_enablement_symlinks_and_nothing_else() {
        let (path, root) = fresh_root("disable");
        let system = path.join("etc/systemd/system");
        std::fs::create_dir_all(system.join("multi-user.target.wants")).unwrap();
        std::os::unix::fs::symlink("/lib/systemd/system/b.service", system.join("multi-user.target.wants/b.service")).unwrap();
        std::os::unix::fs::symlink("/lib/systemd/system/c.service", system.join("multi-user.target.wants/c.service")).unwrap();
        std::os::unix::fs::symlink("/lib/systemd/system/b.service", system.join("alias-of-b.service")).unwrap();
        std::os::unix::fs::symlink("/lib/systemd/system/x@.service", system.join("multi-user.target.wants/x@one.service")).unwrap();
        apply(&root, &units(r#"[{"name":"b.service","enabled":false},{"name":"x@one.service","enabled":false}]"#));
        assert!(std::fs::symlink_metadata(system.join("multi-user.target.wants/b.service")).is_err());
        assert!(std::fs::symlink_metadata(system.join("alias-of-b.service")).is_err());
        assert!(std::fs::symlink_metadata(system.join("multi-user.target.wants/x@one.service")).is_err());
        assert!(std::fs::symlink_metadata(system.join("multi-user.target.wants/c.service")).is_ok());
    }

    #[test]
    fn a_directory_where_a_unit_goes_is_an_error() {
        let (path, root) = fresh_root("unit-dir");
        std::fs::create_dir_all(path.join("etc/systemd/system/a.service")).unwrap();
        let error = plan(&config(&units(r#"[{"name":"a.service","contents":"x"}]"#)), &root, true).unwrap_err();
        assert_eq!((error.kind, error.config_path.as_str()), (ErrorKind::WrongType, "$.systemd.units[0]"));
    }
}
