//! Kernel modules only some boots load, from the lists `keel initrd build` writes in
//! INITRD_ON_DEMAND_MODULES_DIR: each is loaded where it is first needed, so a boot pays
//! only for those it uses (under emulation, tens of milliseconds a module): a later boot of
//! an ext4 ROOT loads none.

use anyhow::Context;
use keel_manifest::INITRD_ON_DEMAND_MODULES_DIR;
use std::path::Path;

fn list_path(name: &str) -> String {
    format!("{INITRD_ON_DEMAND_MODULES_DIR}/{name}")
}

/// Whether this initrd packs the list `name`.
pub(crate) fn has_list(name: &str) -> bool {
    Path::new(&list_path(name)).exists()
}

/// Loads the modules of the list `name` the kernel does not have yet; false when this
/// initrd has no such list, so nothing was loaded.
pub(crate) fn load_list(name: &str) -> anyhow::Result<bool> {
    let path = list_path(name);
    match std::fs::read_to_string(&path) {
        Ok(list) => keel_kmod::load_listed(&list).map(|_| true).with_context(|| format!("cannot load the modules {path} lists")),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error).with_context(|| format!("cannot read {path}")),
    }
}
