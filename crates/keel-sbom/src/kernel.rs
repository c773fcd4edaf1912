//! Which Debian kernel package a module directory comes from.
//!
//! An installed kernel is in dpkg's database like any other package. A kernel unpacked from
//! its `.deb` without installing it (`dpkg-deb -x`, as the VM tests and image pipelines do)
//! is not: dpkg never saw it, and the unpacked tree holds no version but the directory name
//! (`6.1.0-41-cloud-amd64` names the kernel ABI, not the package's version, `6.1.158-1`).
//! The package's own control data is what says both, so the unpacking keeps it beside the
//! tree (`dpkg-deb -e PKG.deb ROOT/DEBIAN`, the layout `dpkg-deb -R` writes) and keel reads
//! it from there. The package's `usr/share/doc/*/changelog.Debian.gz` would say the
//! version too, but not the architecture, and only after decompressing a changelog.

use crate::dpkg::DebPackage;
use anyhow::Context;
use std::path::Path;

/// The control file's place relative to the unpacked root.
pub const CONTROL_PATH: &str = "DEBIAN/control";
/// The module directory is `ROOT/lib/modules/VERSION` or `ROOT/usr/lib/modules/VERSION`:
/// the unpacked root is at most this many levels up.
const MAX_LEVELS_UP: usize = 4;

/// The package whose unpacked tree holds `modules_dir`, from the control data kept beside
/// that tree; `None` when there is none (an installed kernel: ask dpkg's database instead).
pub fn unpacked_kernel_package(modules_dir: &Path) -> anyhow::Result<Option<DebPackage>> {
    for root in modules_dir.ancestors().skip(2).take(MAX_LEVELS_UP - 1) {
        let control = root.join(CONTROL_PATH);
        if control.is_file() {
            let text = std::fs::read_to_string(&control).with_context(|| format!("cannot read {}", control.display()))?;
            return DebPackage::from_control(&text).with_context(|| format!("in {}", control.display())).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_test_support::scratch_dir;

    #[test]
    fn the_control_data_beside_an_unpacked_tree_names_the_package() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "kernel-control");
        for modules in ["lib/modules/6.1.0-41-cloud-amd64", "usr/lib/modules/6.1.0-41-cloud-amd64"] {
            let root = dir.join(modules.split('/').next().unwrap());
            std::fs::create_dir_all(root.join(modules)).unwrap();
            std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
            let control =
                "Package: linux-image-6.1.0-41-cloud-amd64\nSource: linux-signed-amd64 (6.1.158+1)\nVersion: 6.1.158-1\nArchitecture: amd64\n";
            std::fs::write(root.join(CONTROL_PATH), control).unwrap();
            let package = unpacked_kernel_package(&root.join(modules)).unwrap().unwrap();
            assert_eq!((package.name.as_str(), package.version.as_str()), ("linux-image-6.1.0-41-cloud-amd64", "6.1.158-1"));
        }
    }

    #[test]
    fn an_installed_kernel_has_no_control_beside_it() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "kernel-installed");
        std::fs::create_dir_all(dir.join("lib/modules/6.1.0-test")).unwrap();
        assert_eq!(unpacked_kernel_package(&dir.join("lib/modules/6.1.0-test")).unwrap(), None);
    }
}
