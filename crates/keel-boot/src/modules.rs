use anyhow::Context;
use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};
use std::ffi::CString;
use std::fs::File;
use std::time::{Duration, Instant};

/// What loading the listed modules did.
pub struct Loaded {
    pub count: usize,
    /// Modules that found nothing to drive: accelerated crypto on a CPU without the
    /// instructions it needs says ENODEV, and the generic one does the work instead.
    pub declined: usize,
    /// The module that took longest, and how long: the first place to look when boot is slow.
    pub slowest: Option<(String, Duration)>,
}

/// Loads each module of `list` (paths, dependencies first, as `keel initrd build` wrote
/// them); modules the kernel already has are skipped.
pub fn load_listed(list: &str) -> anyhow::Result<Loaded> {
    let mut loaded = Loaded { count: 0, declined: 0, slowest: None };
    for path in list.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
        let file = File::open(path).with_context(|| format!("cannot open kernel module {path}"))?;
        let started = Instant::now();
        match finit_module(&file, &CString::default(), ModuleInitFlags::empty()) {
            Ok(()) => {
                loaded.count += 1;
                let took = started.elapsed();
                if loaded.slowest.as_ref().is_none_or(|(_, slowest)| took > *slowest) {
                    let name = path.rsplit('/').next().unwrap_or(path).trim_end_matches(".ko");
                    loaded.slowest = Some((name.to_string(), took));
                }
            }
            Err(Errno::EEXIST) => {}
            Err(Errno::ENODEV) => loaded.declined += 1,
            Err(errno) => {
                let hint = match errno {
                    Errno::ENOEXEC => " (built for another kernel?)",
                    Errno::ENOENT => " (a dependency is missing from the initrd?)",
                    _ => "",
                };
                return Err(errno).with_context(|| format!("the kernel refused module {path}{hint}"));
            }
        }
    }
    Ok(loaded)
}
