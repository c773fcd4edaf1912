//! `keel boot analyze`: the timeline keel-init left for the real root, read back as
//! untrusted text, as blame lines and, with `--svg`, as a chart.

use anyhow::Context;
use clap::{Args, Subcommand};
use keel_timeline::Timeline;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum BootCommand {
    /// each keel-init stage's time, the longest first, as systemd-analyze blame
    #[command(long_about = "Each keel-init stage's time, the longest first, under the kernel's time before /init and keel-init's own, as \
                      systemd-analyze blame. The timeline is read as untrusted input: a malformed one is an error that names the field.")]
    Analyze(AnalyzeArgs),
}

impl BootCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            BootCommand::Analyze(args) => analyze(&args),
        }
    }
}

#[derive(Args)]
pub struct AnalyzeArgs {
    /// the timeline keel-init wrote
    #[arg(default_value = keel_timeline::PATH)]
    timeline: PathBuf,
    /// also draw the boot as a chart (SVG: stages as bars on a time axis, the kernel's time before /init included)
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

fn analyze(args: &AnalyzeArgs) -> anyhow::Result<()> {
    let timeline = Timeline::read(&args.timeline)?;
    crate::print_out(&keel_timeline::blame(&timeline))?;
    if let Some(svg_path) = &args.svg {
        std::fs::write(svg_path, keel_timeline::svg(&timeline)).with_context(|| format!("cannot write the chart to {}", svg_path.display()))?;
        crate::print_out(&format!(
            "chart: {}
",
            svg_path.display()
        ))?;
    }
    Ok(())
}
