//! The engine alone, as keel-init will carry it: one config resolved, planned and applied to a
//! root. `cargo xtask bench ignition` builds it static, like keel-init, and reports its size
//! beside a static program that does nothing: their difference is what linking the engine into
//! keel-init costs.

use keel_ignition::resolve::{resolve, Document};
use std::process::ExitCode;

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let [root, config] = arguments.as_slice() else {
        eprintln!("usage: apply_root ROOT CONFIG");
        return ExitCode::FAILURE;
    };
    match apply(root, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("apply_root: {error}");
            ExitCode::FAILURE
        }
    }
}

fn apply(root: &str, config: &str) -> Result<(), Box<dyn std::error::Error>> {
    let user = Document { name: config.to_owned(), bytes: std::fs::read(config)? };
    let check = |parsed: &keel_ignition::Parsed| keel_ignition::validate::validate(&parsed.config, parsed.version);
    let resolved = resolve(&[], Some(&user), &check)?;
    let root = keel_ignition::root::Root::open(root.as_ref())?;
    keel_ignition::apply::plan(&resolved.config, &root, resolved.user_config_provided)?.execute(&root)?;
    Ok(())
}
