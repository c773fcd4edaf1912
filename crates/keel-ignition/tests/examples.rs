//! Every config in ignition-examples/ (the OEM partition tree in `oem/` too) is valid, resolves
//! (its merges fetched and verified), and renders to a config that reads back the same. The CLI's
//! tests apply each top-level one to a root; a VM scenario boots an image whose OEM partition is
//! `oem/`.

use keel_ignition::report::{has_errors, Level};
use keel_ignition::resolve::{render, resolve, Document};
use std::path::PathBuf;

fn examples() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut pending = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ignition-examples")];
    while let Some(dir) = pending.pop() {
        for path in std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().path()) {
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "ign") {
                paths.push(path);
            }
        }
    }
    paths.sort();
    paths
}

#[test]
fn every_example_is_valid_and_resolves() {
    let examples = examples();
    assert!(examples.len() >= 10, "the issue asks for at least ten examples, found {}", examples.len());
    assert!(examples.iter().any(|path| path.ends_with("oem/config.ign")), "the OEM tree was not walked: {examples:?}");
    for path in examples {
        let bytes = std::fs::read(&path).unwrap();
        let parsed = keel_ignition::parse(&bytes).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let mut reports = parsed.reports.clone();
        reports.extend(keel_ignition::validate::validate(&parsed.config, parsed.version));
        assert!(!has_errors(&reports), "{}: {reports:?}", path.display());
        assert!(reports.iter().all(|report| report.level != Level::Warning), "{}: an example should not warn: {reports:?}", path.display());
        let document = Document { name: path.display().to_string(), bytes };
        let check = |parsed: &keel_ignition::Parsed| keel_ignition::validate::validate(&parsed.config, parsed.version);
        let resolved = resolve(&[], Some(&document), &check).unwrap_or_else(|error| panic!("{error}"));
        let rendered = render(&resolved.config).unwrap();
        assert_eq!(keel_ignition::parse(rendered.as_bytes()).unwrap().config, resolved.config, "{}", path.display());
    }
}
