//! `keel boot analyze`: the timeline keel-init left for the real root, read back as
//! untrusted text, as blame lines and, with `--svg`, as a chart.

use crate::args::Args;
use anyhow::{bail, Context};
use keel_timeline::Timeline;
use std::path::Path;

pub fn analyze(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &["svg"], &[])?;
    let path = match args.positional.as_slice() {
        [] => keel_timeline::PATH,
        [path] => path.as_str(),
        _ => bail!("give at most one timeline file\n{}", crate::USAGE),
    };
    let timeline = Timeline::read(Path::new(path))?;
    print!("{}", keel_timeline::blame(&timeline));
    if let Some(svg_path) = args.get("svg") {
        std::fs::write(svg_path, keel_timeline::svg(&timeline)).with_context(|| format!("cannot write the chart to {svg_path}"))?;
        println!("chart: {svg_path}");
    }
    Ok(())
}
