//! systemd units and drop-ins: names, contents, and enabling what cannot be enabled.

use super::{gopath, unit_file};
use crate::config::latest::{Systemd, Unit};
use crate::config::SpecVersion;
use crate::report::{JsonPath, Report};

const UNIT_TYPES: [&str; 12] =
    [".service", ".socket", ".device", ".mount", ".automount", ".swap", ".target", ".path", ".timer", ".snapshot", ".slice", ".scope"];

/// Every rule about `systemd.units`.
pub(super) fn validate_systemd(systemd: &Systemd, at: &JsonPath, version: SpecVersion) -> Vec<Report> {
    let units = systemd.units.as_deref().unwrap_or_default();
    let mut reports = Vec::new();
    for (index, unit) in units.iter().enumerate() {
        reports.extend(validate_unit(unit, &at.field("units").index(index)));
        if version.at_least(4) {
            reports.extend(template_can_be_enabled(unit, units, &at.field("units").index(index).field("contents")));
        }
    }
    reports.extend(super::repeated_keys(
        units,
        |unit| &unit.name,
        &at.field("units"),
        |name| format!("duplicate unit {name:?}: the same name appears earlier"),
    ));
    reports
}

fn validate_unit(unit: &Unit, at: &JsonPath) -> Vec<Report> {
    let mut reports = Vec::new();
    reports.extend(unit_type_is_known(&unit.name, &at.field("name")));
    match unit.contents.as_deref().map(unit_file::parse) {
        Some(Err(reason)) => reports.push(Report::error(at.field("contents"), format!("invalid unit contents: {reason}"))),
        Some(Ok(options)) if unit.enabled == Some(true) && unit.contents.as_deref().is_some_and(|contents| !contents.is_empty()) => {
            reports.extend(enabled_unit_has_install_section(&unit.name, &options, &at.field("contents")));
        }
        _ => {}
    }
    let dropins = unit.dropins.as_deref().unwrap_or_default();
    for (index, dropin) in dropins.iter().enumerate() {
        let at = at.field("dropins").index(index);
        if let Some(Err(reason)) = dropin.contents.as_deref().map(unit_file::parse) {
            reports.push(Report::error(at.field("contents"), format!("invalid drop-in contents: {reason}")));
        }
        reports.extend(dropin_name_is_conf(&dropin.name, &at.field("name")));
    }
    reports.extend(super::repeated_keys(
        dropins,
        |dropin| &dropin.name,
        &at.field("dropins"),
        |name| format!("duplicate drop-in {name:?}: the same name appears earlier in this unit"),
    ));
    reports
}

/// InvalidSystemdExt: the name's extension is a unit type systemd knows.
pub(super) fn unit_type_is_known(name: &str, at: &JsonPath) -> Option<Report> {
    let extension = gopath::extension(name);
    (!UNIT_TYPES.contains(&extension))
        .then(|| Report::error(at.clone(), format!("unit name {name:?} does not end in a unit type (.service, .socket, .timer, .mount, .target...)")))
}

/// InvalidSystemdDropinExt: systemd reads only `*.conf` drop-ins.
pub(super) fn dropin_name_is_conf(name: &str, at: &JsonPath) -> Option<Report> {
    (gopath::extension(name) != ".conf")
        .then(|| Report::error(at.clone(), format!("drop-in name {name:?} does not end in .conf, so systemd would ignore it")))
}

/// NoInstallSection (a warning): enabling a unit means running its [Install] section; a unit
/// with contents but no option in [Install] is enabled in name only.
pub(super) fn enabled_unit_has_install_section(name: &str, options: &[unit_file::UnitOption], at: &JsonPath) -> Option<Report> {
    (!options.iter().any(|option| option.section == "Install"))
        .then(|| Report::warning(at.clone(), format!("unit {name:?} is enabled, but has no [Install] section, so enabling it does nothing")))
}

/// NoInstallSectionForInstantiableUnit (spec 3.4 on, a warning): an enabled instance
/// (`name@instance.service`) of a template this config writes, whose contents parse but have no
/// [Install] section.
pub(super) fn template_can_be_enabled(unit: &Unit, units: &[Unit], at: &JsonPath) -> Option<Report> {
    if unit.enabled != Some(true) {
        return None;
    }
    let (prefix, instance) = unit.name.strip_suffix(".service")?.split_once('@')?;
    // Ignition matches `^(.+?)@(.+?)\.service$`, whose dots stop at a newline.
    if prefix.is_empty() || instance.is_empty() || unit.name.contains('\n') {
        return None;
    }
    let template_name = format!("{prefix}@.service");
    // A repeated template name is looked up as Ignition's map holds it: the last one counts.
    let template = units.iter().rev().find(|candidate| candidate.name == template_name)?;
    let contents = template.contents.as_deref().filter(|contents| !contents.is_empty())?;
    let options = unit_file::parse(contents).ok()?;
    (!options.iter().any(|option| option.section == "Install")).then(|| {
        Report::warning(
            at.clone(),
            format!("template {template_name:?} of enabled unit {:?} has no [Install] section, so enabling it does nothing", unit.name),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::latest::Dropin;
    use crate::report::Level;

    const NEWEST: SpecVersion = SpecVersion::NEWEST;

    fn unit(name: &str, contents: Option<&str>, enabled: Option<bool>) -> Unit {
        Unit { contents: contents.map(str::to_owned), enabled, ..Unit::new(name.to_owned()) }
    }

    fn findings(units: Vec<Unit>, version: SpecVersion) -> Vec<(String, Level)> {
        validate_systemd(&Systemd { units: Some(units) }, &JsonPath::root(), version)
            .into_iter()
            .map(|report| (report.path.to_string(), report.level))
            .collect()
    }

    #[test]
    fn unit_names_end_in_a_unit_type() {
        for name in ["a.service", "a@b.service", "x.y.timer", "-.mount", ".service", "dir/a.socket"] {
            assert_eq!(unit_type_is_known(name, &JsonPath::root()), None, "{name}");
        }
        for name in ["a", "a.conf", "a.service/", "a.Service", "a.service.bak", ""] {
            assert!(unit_type_is_known(name, &JsonPath::root()).is_some(), "{name}");
        }
    }

    #[test]
    fn dropin_names_end_in_conf() {
        assert_eq!(dropin_name_is_conf("10-x.conf", &JsonPath::root()), None);
        assert!(dropin_name_is_conf("10-x", &JsonPath::root()).is_some());
        assert!(dropin_name_is_conf("x.conf.d/y", &JsonPath::root()).is_some());
    }

    #[test]
    fn unparsable_contents_are_errors() {
        let mut broken = unit("a.service", Some("[Unit"), None);
        broken.dropins = Some(vec![Dropin { contents: Some("[Service]\nNoEquals\n".to_owned()), name: "x.conf".to_owned() }]);
        assert_eq!(
            findings(vec![broken], NEWEST),
            [("$.units[0].contents".to_owned(), Level::Error), ("$.units[0].dropins[0].contents".to_owned(), Level::Error)]
        );
    }

    #[test]
    fn enabling_a_unit_without_install_section_is_a_warning() {
        let warned = |contents: Option<&str>, enabled| findings(vec![unit("a.service", contents, enabled)], NEWEST);
        assert_eq!(warned(Some("[Unit]\nA=b\n"), Some(true)), [("$.units[0].contents".to_owned(), Level::Warning)]);
        // Ignition 2.14 (built against go-systemd 22.5) warns about a comment-only unit too.
        assert_eq!(warned(Some("# nothing\n"), Some(true)).len(), 1);
        assert_eq!(warned(Some("[Install]\n"), Some(true)).len(), 1);
        assert!(warned(Some("[Install]\nWantedBy=multi-user.target\n"), Some(true)).is_empty());
        assert!(warned(Some("[Unit]\n"), Some(false)).is_empty());
        assert!(warned(Some(""), Some(true)).is_empty());
        assert!(warned(None, Some(true)).is_empty());
        // An unparsable unit gets its error, not the warning as well.
        assert_eq!(warned(Some("[Unit"), Some(true)), [("$.units[0].contents".to_owned(), Level::Error)]);
    }

    #[test]
    fn enabled_instances_of_templates_without_install_warn_from_3_4() {
        let units = || vec![unit("echo@.service", Some("[Service]\nExecStart=/bin/echo %i\n"), None), unit("echo@a.service", None, Some(true))];
        assert_eq!(findings(units(), NEWEST), [("$.units[1].contents".to_owned(), Level::Warning)]);
        assert!(findings(units(), SpecVersion { minor: 3 }).is_empty());
        let with_install = vec![unit("echo@.service", Some("[Install]\nWantedBy=x\n"), None), unit("echo@a.service", None, Some(true))];
        assert!(findings(with_install, NEWEST).is_empty());
        let not_configured = vec![unit("echo@a.service", None, Some(true))];
        assert!(findings(not_configured, NEWEST).is_empty());
    }

    #[test]
    fn units_and_dropins_are_keyed_by_name() {
        let mut first = unit("a.service", None, None);
        first.dropins = Some(vec![Dropin::new("x.conf".to_owned()), Dropin::new("x.conf".to_owned())]);
        let paths: Vec<String> = findings(vec![first, unit("a.service", None, None)], NEWEST).into_iter().map(|(path, _)| path).collect();
        assert_eq!(paths, ["$.units[0].dropins[1]", "$.units[1]"]);
    }
}
