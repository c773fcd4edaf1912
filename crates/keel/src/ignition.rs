//! `keel ignition validate|render|apply`: the Ignition engine for image builders, offline.

use crate::args::Args;
use anyhow::{bail, Context};
use keel_ignition::config::MAX_CONFIG_BYTES;
use keel_ignition::report::has_errors;
use keel_ignition::resolve::{Document, Resolved};
use std::io::{Read, Write};

/// Writes to stdout; a reader that went away (`| head`) ends the output, not the command with a
/// panic, as println! would.
fn print_out(text: &str) -> anyhow::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error).context("cannot write to stdout"),
        _ => Ok(()),
    }
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
pub fn validate(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &[], &[])?;
    let [path] = args.positional.as_slice() else { bail!("give one config file") };
    let document = read_document(path)?;
    let parsed = keel_ignition::parse(&document.bytes).with_context(|| format!("{path} is not a valid Ignition config"))?;
    let mut reports = parsed.reports.clone();
    reports.extend(keel_ignition::validate::validate(&parsed.config, parsed.version));
    let lines: String = reports.iter().map(|report| format!("{path}: {report}\n")).collect();
    print_out(&lines)?;
    if has_errors(&reports) {
        bail!("{path}: the config has errors");
    }
    Ok(())
}

fn resolve(args: &Args) -> anyhow::Result<Resolved> {
    let [path] = args.positional.as_slice() else { bail!("give one config file (and --base CONFIG for each base config)") };
    let bases = args.all("base").iter().map(|base| read_document(base)).collect::<anyhow::Result<Vec<_>>>()?;
    let user = read_document(path)?;
    // The --base configs are one group, as Ignition's base.d is: merged in order, then the user config over them.
    let resolved =
        keel_ignition::resolve::resolve(&[&bases], Some(&user), &|parsed| keel_ignition::validate::validate(&parsed.config, parsed.version))?;
    for report in &resolved.reports {
        eprintln!("{report}");
    }
    Ok(resolved)
}

pub fn render(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse_repeatable(words, &[], &["base"], &[])?;
    let resolved = resolve(&args)?;
    print_out(&format!("{}\n", keel_ignition::resolve::render(&resolved.config)?))
}

pub fn apply(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse_repeatable(words, &["root"], &["base"], &["dry-run"])?;
    let root_path = args.required("root")?;
    let resolved = resolve(&args)?;
    let root = keel_ignition::root::Root::open(root_path.as_ref()).with_context(|| format!("cannot open the root {root_path}"))?;
    let plan = keel_ignition::apply::plan(&resolved.config, &root, resolved.user_config_provided)?;
    if args.flag("dry-run") {
        return print_out(&plan.to_string());
    }
    plan.execute(&root)?;
    print_out(&format!("{root_path}: {} operations applied (--dry-run lists them)\n", plan.steps().len()))
}
