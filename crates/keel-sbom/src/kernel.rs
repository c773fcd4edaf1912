//! Which Debian kernel package a module directory comes from.
//!
//! An installed kernel is in dpkg's database like any other package. A kernel unpacked from
//! its `.deb` without installing it (`dpkg-deb -x`, as the VM tests and image pipelines do)
//! is not: dpkg never saw it, and the unpacked tree holds no version but the directory name
//! (`6.1.0-41-cloud-amd64` names the kernel ABI, not the package's version, `6.1.158-1`).
//! The package's own control data is what says both, so the unpacking keeps it beside the
//! tree (`dpkg-deb -e PKG.deb ROOT/DEBIAN`, the layout `dpkg-deb -R` writes) and keel reads
//! it from there: `control` for the package, `md5sums` for the files it shipped. A module is
//! credited to the package only when the package is that release's kernel and the module's
//! bytes are the ones it shipped; a DKMS or hand-built module added to the tree later, or a
//! DEBIAN/ directory of some other package, is not.

use crate::dpkg::{DebPackage, DpkgDatabase};
use anyhow::Context;
use md5::{Digest, Md5};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The control file's place relative to the unpacked root.
pub const CONTROL_PATH: &str = "DEBIAN/control";
/// The MD5 of each file the package shipped, by its path relative to the root.
pub const MD5SUMS_PATH: &str = "DEBIAN/md5sums";

/// An unpacked kernel package: what its control data says, and what it shipped.
#[derive(Debug)]
pub struct UnpackedKernel {
    root: PathBuf,
    release: String,
    package: DebPackage,
    md5sums: BTreeMap<String, String>,
}

impl UnpackedKernel {
    /// The package unpacked at the root `modules_dir` belongs to (`ROOT/lib/modules/RELEASE`
    /// or `ROOT/usr/lib/modules/RELEASE`), from the control data kept there; `None` when
    /// there is none (an installed kernel: ask dpkg's database instead). No directory above
    /// that root is looked at: a DEBIAN/ there belongs to something else.
    pub fn find(modules_dir: &Path) -> anyhow::Result<Option<UnpackedKernel>> {
        let Some((root, release)) = package_root(modules_dir) else { return Ok(None) };
        let control = root.join(CONTROL_PATH);
        if !control.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&control).with_context(|| format!("cannot read {}", control.display()))?;
        let package = DebPackage::from_control(&text).with_context(|| format!("in {}", control.display()))?;
        let md5sums_path = root.join(MD5SUMS_PATH);
        let md5sums = match std::fs::read_to_string(&md5sums_path) {
            Ok(text) => parse_md5sums(&text),
            // Checked per module: without the list no module is credited, each with the reason.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(error) => return Err(error).with_context(|| format!("cannot read {}", md5sums_path.display())),
        };
        Ok(Some(UnpackedKernel { root, release, package, md5sums }))
    }

    /// The package, when it is this release's kernel and shipped `bytes` at `module` (a file
    /// below the module directory); otherwise why the module is not credited to it.
    pub fn package_of(&self, module: &Path, bytes: &[u8]) -> Result<&DebPackage, String> {
        let control = self.root.join(CONTROL_PATH);
        // Debian builds the signed kernel package from the unsigned one: both ship the modules.
        let expected = format!("linux-image-{}", self.release);
        if self.package.name != expected && self.package.name != format!("{expected}-unsigned") {
            return Err(format!("{} is of {}, not of {expected}, the package of these modules", control.display(), self.package.name));
        }
        let relative = module.strip_prefix(&self.root).map(|path| path.to_string_lossy().into_owned()).unwrap_or_default();
        let md5 = crate::hex(&Md5::digest(bytes));
        match self.md5sums.get(&relative) {
            Some(shipped) if *shipped == md5 => Ok(&self.package),
            Some(_) => Err(format!("its bytes are not the ones {} shipped ({} says another MD5)", self.package.name, MD5SUMS_PATH)),
            None => Err(format!("{} did not ship it ({} of {} does not list {relative})", self.package.name, MD5SUMS_PATH, self.root.display())),
        }
    }
}

/// The package that shipped `file` (a module, or the kernel image itself) of the kernel
/// whose module directory `unpacked` was found from: its control data when it was unpacked
/// from its package, else dpkg's database of the build root; or why no package is credited.
pub fn kernel_file_origin(unpacked: Option<&UnpackedKernel>, file: &Path, bytes: &[u8], dpkg: &DpkgDatabase) -> Result<DebPackage, String> {
    match unpacked {
        Some(kernel) => kernel.package_of(file, bytes).cloned(),
        None => {
            let file = crate::absolute(file);
            dpkg.owner(&file).cloned().ok_or_else(|| dpkg.why_unowned(&file))
        }
    }
}

/// The root a module directory belongs to, and its release: `ROOT/lib/modules/RELEASE`, or
/// `ROOT/usr/lib/modules/RELEASE` when ROOT holds the control data (a merged-/usr package).
fn package_root(modules_dir: &Path) -> Option<(PathBuf, String)> {
    let release = modules_dir.file_name()?.to_str()?.to_string();
    let modules = modules_dir.parent().filter(|dir| dir.file_name().is_some_and(|name| name == "modules"))?;
    let lib = modules.parent().filter(|dir| dir.file_name().is_some_and(|name| name == "lib"))?;
    let above = lib.parent()?;
    let usr_root = above.parent().filter(|root| above.file_name().is_some_and(|name| name == "usr") && root.join(CONTROL_PATH).is_file());
    Some((usr_root.unwrap_or(above).to_path_buf(), release))
}

/// `md5sums` as dpkg writes it: `MD5  PATH` per line, the path relative to the root.
fn parse_md5sums(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(|line| line.split_once("  ")).map(|(md5, path)| (path.to_string(), md5.to_ascii_lowercase())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_test_support::{run, scratch_dir};

    const RELEASE: &str = "6.1.0-41-cloud-amd64";
    const MODULE: &str = "kernel/drivers/md/dm-verity.ko";

    /// An unpacked kernel package at `root` with one module, whose md5sums `md5sum` wrote.
    fn unpacked(root: &Path, modules: &str, package: &str) -> PathBuf {
        let modules_dir = root.join(modules);
        std::fs::create_dir_all(modules_dir.join(MODULE).parent().unwrap()).unwrap();
        std::fs::write(modules_dir.join(MODULE), "module").unwrap();
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        let control = format!("Package: {package}\nSource: linux-signed-amd64 (6.1.158+1)\nVersion: 6.1.158-1\nArchitecture: amd64\n");
        std::fs::write(root.join(CONTROL_PATH), control).unwrap();
        let listed = run("sh", &["-c", &format!("cd {} && md5sum {modules}/{MODULE}", root.display())]);
        std::fs::write(root.join(MD5SUMS_PATH), listed + "\n").unwrap();
        modules_dir
    }

    #[test]
    fn a_module_the_package_shipped_is_credited_to_it() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "kernel-control");
        for (root, modules) in [("a", format!("lib/modules/{RELEASE}")), ("b", format!("usr/lib/modules/{RELEASE}"))] {
            let modules_dir = unpacked(&dir.join(root), &modules, &format!("linux-image-{RELEASE}"));
            let kernel = UnpackedKernel::find(&modules_dir).unwrap().unwrap();
            let package = kernel.package_of(&modules_dir.join(MODULE), b"module").unwrap();
            assert_eq!((package.name.as_str(), package.version.as_str()), (format!("linux-image-{RELEASE}").as_str(), "6.1.158-1"));
        }
    }

    #[test]
    fn a_module_the_package_did_not_ship_is_not_credited() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "kernel-dkms");
        let modules_dir = unpacked(&dir, &format!("lib/modules/{RELEASE}"), &format!("linux-image-{RELEASE}"));
        let kernel = UnpackedKernel::find(&modules_dir).unwrap().unwrap();
        let changed = kernel.package_of(&modules_dir.join(MODULE), b"rebuilt").unwrap_err();
        assert!(changed.contains("not the ones linux-image-6.1.0-41-cloud-amd64 shipped"), "{changed}");
        let dkms = kernel.package_of(&modules_dir.join("updates/dkms/zfs.ko"), b"module").unwrap_err();
        assert!(dkms.contains("does not list lib/modules/6.1.0-41-cloud-amd64/updates/dkms/zfs.ko"), "{dkms}");
    }

    #[test]
    fn control_data_of_another_package_credits_nothing() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "kernel-other-package");
        let modules_dir = unpacked(&dir, &format!("lib/modules/{RELEASE}"), "zfs-dkms");
        let kernel = UnpackedKernel::find(&modules_dir).unwrap().unwrap();
        let refused = kernel.package_of(&modules_dir.join(MODULE), b"module").unwrap_err();
        assert!(refused.contains("is of zfs-dkms, not of linux-image-6.1.0-41-cloud-amd64"), "{refused}");
    }

    #[test]
    fn control_data_above_the_root_is_not_looked_at() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "kernel-above-root");
        unpacked(&dir, "unused", &format!("linux-image-{RELEASE}"));
        // ROOT is dir/root; dir/DEBIAN belongs to whatever dir is.
        std::fs::create_dir_all(dir.join("root/lib/modules/6.1.0-test")).unwrap();
        assert!(UnpackedKernel::find(&dir.join("root/lib/modules/6.1.0-test")).unwrap().is_none());
        std::fs::create_dir_all(dir.join("root/usr/lib/modules/6.1.0-test")).unwrap();
        assert!(UnpackedKernel::find(&dir.join("root/usr/lib/modules/6.1.0-test")).unwrap().is_none());
    }

    #[test]
    fn an_installed_kernel_has_no_control_beside_it() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "kernel-installed");
        std::fs::create_dir_all(dir.join("lib/modules/6.1.0-test")).unwrap();
        assert!(UnpackedKernel::find(&dir.join("lib/modules/6.1.0-test")).unwrap().is_none());
    }
}
