//! Which Debian package a file of the build host comes from, read from dpkg's own
//! database (`var/lib/dpkg/status`, `var/lib/dpkg/info/*.list`, `var/lib/dpkg/diversions`)
//! under a root, the way `dpkg -S` answers, without running dpkg: the builder may look at
//! another system's root.

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// dpkg's status file on a large system is a few MiB; anything near this is not one.
const MAX_STATUS_BYTES: u64 = 256 << 20;
/// Each package's file list; the largest in Debian (texlive, firmware) are a few MiB.
const MAX_LIST_BYTES: u64 = 64 << 20;
/// The top-level directories Debian's merged /usr turned into links to their /usr twins.
const MERGED_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// One installed Debian package.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
}

impl DebPackage {
    /// The package a control file (`DEBIAN/control` of `dpkg-deb -e`, a status stanza)
    /// describes.
    pub fn from_control(text: &str) -> anyhow::Result<DebPackage> {
        let fields = stanza_fields(text);
        let field = |name: &str| fields.get(name).map(|value| value.to_string()).with_context(|| format!("the control data has no {name} field"));
        Ok(DebPackage { name: field("Package")?, version: field("Version")?, architecture: field("Architecture")? })
    }
}

/// The distribution a build root runs, from its os-release: what a Debian package's purl and
/// supplier say. The same `.deb` name and version may come from Debian, Ubuntu or a
/// derivative, and scanners look packages up in the advisories of the distribution and release
/// the purl names (syft writes `pkg:deb/debian/NAME@VERSION?arch=amd64&distro=debian-12`;
/// Grype skips a `pkg:deb` purl without `distro`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Distro {
    /// os-release's `ID` (`debian`, `ubuntu`); None when the root has no os-release.
    pub id: Option<String>,
    /// `VERSION_ID` (`12`), else `VERSION_CODENAME` (Debian's testing and sid have no number).
    pub release: Option<String>,
}

impl Distro {
    /// `ROOT/etc/os-release`, else `ROOT/usr/lib/os-release`, as systemd looks for it.
    pub fn read(root: &Path) -> anyhow::Result<Distro> {
        for path in [root.join("etc/os-release"), root.join("usr/lib/os-release")] {
            match std::fs::read_to_string(&path) {
                Ok(text) => return Ok(Distro::from_os_release(&text)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
            }
        }
        Ok(Distro::default())
    }

    pub fn from_os_release(text: &str) -> Distro {
        let fields: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.trim(), value.trim().trim_matches(|c| c == '"' || c == '\'')))
            .filter(|(_, value)| !value.is_empty())
            .collect();
        let field = |name: &str| fields.get(name).map(|value| value.to_string());
        Distro { id: field("ID"), release: field("VERSION_ID").or_else(|| field("VERSION_CODENAME")) }
    }

    /// The package's purl (`pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-12`), None
    /// when the root does not say which distribution it is.
    pub fn purl(&self, package: &DebPackage) -> Option<String> {
        let id = self.id.as_deref()?;
        let mut purl = format!(
            "pkg:deb/{}/{}@{}?arch={}",
            purl_escape(id),
            purl_escape(&package.name),
            purl_escape(&package.version),
            purl_escape(&package.architecture)
        );
        if let Some(release) = &self.release {
            purl += &format!("&distro={}-{}", purl_escape(id), purl_escape(release));
        }
        Some(purl)
    }

    /// SPDX's supplier of the root's packages: Debian only when the root says it is Debian;
    /// a derivative's packages are its own (None: NOASSERTION).
    pub fn supplier(&self) -> Option<String> {
        (self.id.as_deref() == Some("debian")).then(|| "Organization: Debian".to_string())
    }
}

/// `+` and `:` (an epoch) are legal in Debian versions and must be percent-encoded in a purl;
/// `~` is one of RFC 3986's unreserved characters and stays as it is.
fn purl_escape(text: &str) -> String {
    let mut escaped = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b".-_~".contains(&byte) {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

/// The `Field: value` lines of one stanza; continuation lines are dropped (no field keel
/// reads has any).
fn stanza_fields(stanza: &str) -> BTreeMap<&str, &str> {
    stanza
        .lines()
        .filter(|line| !line.starts_with([' ', '\t']))
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect()
}

/// The installed packages of one root, the files each one owns, and the distribution.
#[derive(Debug, Default)]
pub struct DpkgDatabase {
    /// By the path key of each file the lists name, every package that claims it (after
    /// diversions): one, or more when packages conflict (directories, which many share, too).
    claims: BTreeMap<String, Vec<DebPackage>>,
    pub distro: Distro,
}

/// One `dpkg-divert`: the file a package ships at `from` is at `to` instead, unless the
/// package is the one that diverted it (`by`; `:` for the administrator).
struct Diversion {
    to: String,
    by: String,
}

/// Why a file has no package, when no list names it.
const UNOWNED: &str =
    "no Debian package owns it (dpkg's database of the build root does not list it, and no package control data is kept beside its tree)";

impl DpkgDatabase {
    /// Reads the database under `root` (`/` for the build host). A root without dpkg gives an
    /// empty database: every file is then one that no package owns.
    pub fn read(root: &Path) -> anyhow::Result<DpkgDatabase> {
        let dpkg_dir = root.join("var/lib/dpkg");
        let status_path = dpkg_dir.join("status");
        let distro = Distro::read(root)?;
        if !status_path.exists() {
            return Ok(DpkgDatabase { claims: BTreeMap::new(), distro });
        }
        let status = read_bounded(&status_path, MAX_STATUS_BYTES)?;
        let mut installed: BTreeMap<(String, String), DebPackage> = BTreeMap::new();
        for stanza in status.split("\n\n") {
            let fields = stanza_fields(stanza);
            // Only "install ok installed" packages have their files on disk as listed; a
            // package removed but not purged keeps a status stanza and perhaps a list.
            if fields.get("Status").is_some_and(|status| status.ends_with(" installed")) {
                let package = DebPackage::from_control(stanza).with_context(|| format!("in {}", status_path.display()))?;
                installed.insert((package.name.clone(), package.architecture.clone()), package);
            }
        }
        let diversions = read_diversions(&dpkg_dir.join("diversions"))?;
        let mut claims: BTreeMap<String, Vec<DebPackage>> = BTreeMap::new();
        let info_dir = dpkg_dir.join("info");
        let mut lists: Vec<_> = std::fs::read_dir(&info_dir)
            .with_context(|| format!("cannot read {}", info_dir.display()))?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot read {}", info_dir.display()))?;
        lists.sort();
        for list in lists {
            let Some(stem) = list.file_name().and_then(|name| name.to_str()).and_then(|name| name.strip_suffix(".list")) else { continue };
            // `libc6:amd64.list` for a package of multi-arch "same", `e2fsprogs.list` otherwise.
            let package = match stem.split_once(':') {
                Some((name, architecture)) => installed.get(&(name.to_string(), architecture.to_string())),
                None => installed.iter().find(|((name, _), _)| name == stem).map(|(_, package)| package),
            };
            let Some(package) = package else { continue };
            for path in read_bounded(&list, MAX_LIST_BYTES)?.lines() {
                let mut key = path_key(path);
                if let Some(diversion) = diversions.get(&key).filter(|diversion| diversion.by != package.name) {
                    key = diversion.to.clone();
                }
                let claimants = claims.entry(key).or_default();
                if !claimants.contains(package) {
                    claimants.push(package.clone());
                }
            }
        }
        Ok(DpkgDatabase { claims, distro })
    }

    /// The package that owns `path` (absolute, as seen from the database's root), whichever
    /// side of merged /usr either of them names; None when none does or two claim it.
    pub fn owner(&self, path: &str) -> Option<&DebPackage> {
        match self.claims.get(&path_key(path)).map(Vec::as_slice) {
            Some([package]) => Some(package),
            _ => None,
        }
    }

    /// Why `owner` has no package for `path`, for the SBOM's note.
    pub fn why_unowned(&self, path: &str) -> String {
        match self.claims.get(&path_key(path)) {
            Some(claimants) if claimants.len() > 1 => {
                let names: Vec<&str> = claimants.iter().map(|package| package.name.as_str()).collect();
                format!("packages {} all claim it in dpkg's database, and no diversion says which ships it", names.join(", "))
            }
            _ => UNOWNED.to_string(),
        }
    }
}

/// `diversions`: three lines each, the diverted path, where it went, and the package that
/// diverted it; by the diverted path's key.
fn read_diversions(path: &Path) -> anyhow::Result<BTreeMap<String, Diversion>> {
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let text = read_bounded(path, MAX_LIST_BYTES)?;
    let lines: Vec<&str> = text.lines().collect();
    if !lines.len().is_multiple_of(3) {
        bail!("{} has {} lines, not three per diversion: not dpkg's diversions file", path.display(), lines.len());
    }
    Ok(lines
        .chunks_exact(3)
        .filter_map(|entry| match entry {
            [from, to, by] => Some((path_key(from), Diversion { to: path_key(to), by: by.to_string() })),
            _ => None,
        })
        .collect())
}

/// The path with merged /usr folded in: `/lib/x/y` and `/usr/lib/x/y` are one file on a
/// merged-/usr system, and a package's list may name either.
fn path_key(path: &str) -> String {
    let path = path.trim_end_matches('/');
    if let Some(rest) = path.strip_prefix("/usr/") {
        let top = rest.split('/').next().unwrap_or_default();
        if MERGED_DIRS.contains(&top) {
            return format!("/{rest}");
        }
    }
    path.to_string()
}

fn read_bounded(path: &Path, limit: u64) -> anyhow::Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > limit {
        bail!("{} is over {limit} bytes: not dpkg's database as Debian writes it", path.display());
    }
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_test_support::{run, scratch_dir};

    fn fake_root(dir: &Path) {
        let info = dir.join("var/lib/dpkg/info");
        std::fs::create_dir_all(&info).unwrap();
        std::fs::write(
            dir.join("var/lib/dpkg/status"),
            "Package: e2fsprogs\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.47.0-2\nDescription: ext2/ext3/ext4\n tools\n\n\
             Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nMulti-Arch: same\nVersion: 2.36-9+deb12u14\n\n\
             Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n\n\
             Package: fancy-mkfs\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2\n\n\
             Package: other-mkfs\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3\n",
        )
        .unwrap();
        std::fs::write(info.join("e2fsprogs.list"), "/.\n/sbin\n/sbin/mkfs.ext4\n/sbin/mkfs.ext3\n").unwrap();
        std::fs::write(info.join("libc6:amd64.list"), "/usr/lib/x86_64-linux-gnu/libc.so.6\n").unwrap();
        std::fs::write(info.join("gone.list"), "/usr/bin/gone\n").unwrap();
        std::fs::write(info.join("fancy-mkfs.list"), "/usr/sbin\n/usr/sbin/mkfs.ext3\n/usr/sbin/mkfs.both\n").unwrap();
        std::fs::write(info.join("other-mkfs.list"), "/usr/sbin/mkfs.both\n").unwrap();
        // fancy-mkfs moved e2fsprogs' mkfs.ext3 aside and ships its own at the name.
        std::fs::write(dir.join("var/lib/dpkg/diversions"), "/sbin/mkfs.ext3\n/sbin/mkfs.ext3.e2fsprogs\nfancy-mkfs\n").unwrap();
        std::fs::create_dir_all(dir.join("usr/lib")).unwrap();
        std::fs::write(dir.join("usr/lib/os-release"), "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n").unwrap();
    }

    /// The database of a fake root in a scratch directory of its own.
    fn fake_database(name: &str) -> DpkgDatabase {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), name);
        fake_root(&dir);
        DpkgDatabase::read(&dir).unwrap()
    }

    #[test]
    fn a_list_naming_one_side_of_merged_usr_owns_the_other() {
        let database = fake_database("dpkg-merged-usr");
        assert_eq!(database.owner("/usr/sbin/mkfs.ext4").map(|p| p.name.as_str()), Some("e2fsprogs"));
        assert_eq!(database.owner("/sbin/mkfs.ext4").map(|p| p.version.as_str()), Some("1.47.0-2"));
        let libc = database.owner("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        assert_eq!(database.distro.purl(libc).unwrap(), "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64&distro=debian-12");
        let stub = DebPackage { name: "systemd-boot-efi".into(), version: "1:252.39-1~deb12u2".into(), architecture: "amd64".into() };
        let purl = database.distro.purl(&stub).unwrap();
        assert_eq!(purl, "pkg:deb/debian/systemd-boot-efi@1%3A252.39-1~deb12u2?arch=amd64&distro=debian-12");
    }

    #[test]
    fn the_purl_and_supplier_are_the_roots_distribution() {
        let libc = DebPackage { name: "libc6".into(), version: "2.39-0ubuntu8".into(), architecture: "amd64".into() };
        let ubuntu = Distro::from_os_release("NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\nVERSION_CODENAME=noble\n");
        assert_eq!(ubuntu.purl(&libc).unwrap(), "pkg:deb/ubuntu/libc6@2.39-0ubuntu8?arch=amd64&distro=ubuntu-24.04");
        assert_eq!(ubuntu.supplier(), None, "Ubuntu's packages are not Debian's");
        let sid =
            Distro::from_os_release("PRETTY_NAME=\"Debian GNU/Linux trixie/sid\"\nNAME=\"Debian GNU/Linux\"\nVERSION_CODENAME=trixie\nID=debian\n");
        assert_eq!(sid.purl(&libc).unwrap(), "pkg:deb/debian/libc6@2.39-0ubuntu8?arch=amd64&distro=debian-trixie");
        assert_eq!(sid.supplier().as_deref(), Some("Organization: Debian"));
        assert_eq!(Distro::default().purl(&libc), None, "a root that does not say what it is");
        assert_eq!(Distro::default().supplier(), None);
    }

    #[test]
    fn a_diverted_file_belongs_to_the_diverter_and_its_new_name_to_the_shipper() {
        let database = fake_database("dpkg-diversions");
        assert_eq!(database.owner("/usr/sbin/mkfs.ext3").map(|p| p.name.as_str()), Some("fancy-mkfs"));
        assert_eq!(database.owner("/sbin/mkfs.ext3.e2fsprogs").map(|p| p.name.as_str()), Some("e2fsprogs"));
    }

    #[test]
    fn a_file_two_packages_claim_has_no_owner_and_a_reason() {
        let database = fake_database("dpkg-conflict");
        assert_eq!(database.owner("/usr/sbin/mkfs.both"), None);
        assert!(database.why_unowned("/usr/sbin/mkfs.both").starts_with("packages fancy-mkfs, other-mkfs all claim it"));
        assert!(database.why_unowned("/usr/sbin/mkfs.none").starts_with("no Debian package owns it"));
    }

    #[test]
    fn only_installed_packages_own_files() {
        let database = fake_database("dpkg-installed");
        assert_eq!(database.owner("/usr/bin/gone"), None);
        assert_eq!(database.owner("/usr/sbin/mkfs.xfs"), None);
        assert_eq!(database.owner("/usr/share"), None, "a directory no list names");
    }

    #[test]
    fn a_root_without_dpkg_owns_nothing() {
        let dir = scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "dpkg-none");
        assert_eq!(DpkgDatabase::read(&dir).unwrap().owner("/usr/sbin/mkfs.ext4"), None);
    }

    #[test]
    fn agrees_with_dpkg_query_on_the_build_host() {
        let database = DpkgDatabase::read(Path::new("/")).unwrap();
        let owner = database.owner("/usr/sbin/mkfs.ext4").unwrap();
        assert_eq!(owner.name, "e2fsprogs");
        assert_eq!(owner.version, run("dpkg-query", &["-W", "-f", "${Version}", "e2fsprogs"]));
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap();
        assert_eq!(database.distro, Distro::from_os_release(&os_release));
        assert!(database.distro.id.is_some());
    }
}
