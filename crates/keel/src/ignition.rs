//! `keel ignition validate|render|apply`: the Ignition engine for image builders, offline.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use keel_ignition::config::MAX_CONFIG_BYTES;
use keel_ignition::report::has_errors;
use keel_ignition::resolve::{Document, Resolved};
use std::io::Read;

#[derive(Subcommand)]
pub enum IgnitionCommand {
    /// every error and warning of a config, with its JSON path
    ///
    /// Ignition spec 3.0-3.6; exit 1 when there is an error.
    Validate(ValidateArgs),
    /// the final config, merged: secrets included
    ///
    /// The base configs in order, the config over them, and every config it merges (data: URLs, checked against
    /// their hashes); it prints everything the configs hold, secrets included.
    Render(RenderArgs),
    /// writes a config into a root directory, as Ignition's files stage
    ///
    /// Files, directories, links, users and groups, systemd units and presets written into DIR as Ignition's files
    /// stage writes them; nothing is written before every content is fetched and verified.
    Apply(ApplyArgs),
}

impl IgnitionCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            IgnitionCommand::Validate(args) => validate(&args),
            IgnitionCommand::Render(args) => render(&args),
            IgnitionCommand::Apply(args) => apply(&args),
        }
    }
}

#[derive(Args)]
pub struct ValidateArgs {
    /// the config file
    config: String,
}

/// A config and the base configs under it.
#[derive(Args)]
pub struct RenderArgs {
    /// the config file
    config: String,
    /// a base config, merged under CONFIG; give it once for each, in order, as Ignition's base.d holds them
    #[arg(long = "base", value_name = "CONFIG")]
    bases: Vec<String>,
}

#[derive(Args)]
pub struct ApplyArgs {
    /// the root directory to write into
    #[arg(long, value_name = "DIR")]
    root: String,
    #[command(flatten)]
    configs: RenderArgs,
    /// print the operations apply would run, and write nothing
    #[arg(long)]
    dry_run: bool,
}

/// A config file's bytes, read no further than keel would parse: a 100 MB file costs 32 MiB.
fn read_document(path: &str) -> anyhow::Result<Document> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {path}"))?;
    if bytes.len() > MAX_CONFIG_BYTES {
        bail!("{path} is larger than {MAX_CONFIG_BYTES} bytes, more than keel reads in a config");
    }
    Ok(Document { name: path.to_owned(), bytes })
}

/// Exits 1 when the config has errors, after printing every report.
fn validate(args: &ValidateArgs) -> anyhow::Result<()> {
    let path = &args.config;
    let document = read_document(path)?;
    let parsed = keel_ignition::parse(&document.bytes).with_context(|| format!("{path} is not a valid Ignition config"))?;
    let mut reports = parsed.reports.clone();
    reports.extend(keel_ignition::validate::validate(&parsed.config, parsed.version));
    let lines: String = reports.iter().map(|report| format!("{path}: {report}\n")).collect();
    crate::print_out(&lines)?;
    if has_errors(&reports) {
        bail!("{path}: the config has errors");
    }
    Ok(())
}

fn resolve(args: &RenderArgs) -> anyhow::Result<Resolved> {
    let bases = args.bases.iter().map(|base| read_document(base)).collect::<anyhow::Result<Vec<_>>>()?;
    let user = read_document(&args.config)?;
    // The --base configs are one group, as Ignition's base.d is: merged in order, then the user config over them.
    let resolved =
        keel_ignition::resolve::resolve(&[&bases], Some(&user), &|parsed| keel_ignition::validate::validate(&parsed.config, parsed.version))?;
    for report in &resolved.reports {
        eprintln!("{report}");
    }
    Ok(resolved)
}

fn render(args: &RenderArgs) -> anyhow::Result<()> {
    let resolved = resolve(args)?;
    crate::print_out(&format!("{}\n", keel_ignition::resolve::render(&resolved.config)?))
}

fn apply(args: &ApplyArgs) -> anyhow::Result<()> {
    let root_path = &args.root;
    let resolved = resolve(&args.configs)?;
    let root = keel_ignition::root::Root::open(root_path.as_ref()).with_context(|| format!("cannot open the root {root_path}"))?;
    let plan = keel_ignition::apply::plan(&resolved.config, &root, resolved.user_config_provided)?;
    if args.dry_run {
        return crate::print_out(&plan.to_string());
    }
    plan.execute(&root)?;
    crate::print_out(&format!("{root_path}: {} operations applied (--dry-run lists them)\n", plan.steps().len()))
}
