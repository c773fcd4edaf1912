use anyhow::Context;
use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};
use std::ffi::CString;
use std::fs::File;

/// Loads each module of `list` (paths, dependencies first, as `keel initrd build` wrote
/// them) and returns how many the kernel had not loaded yet.
pub fn load_listed(list: &str) -> anyhow::Result<usize> {
    let mut loaded = 0;
    for path in list.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
        let file = File::open(path).with_context(|| format!("cannot open kernel module {path}"))?;
        match finit_module(&file, &CString::default(), ModuleInitFlags::empty()) {
            Ok(()) => loaded += 1,
            Err(Errno::EEXIST) => {}
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
