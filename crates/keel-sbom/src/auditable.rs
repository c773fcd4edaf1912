//! The Rust crates linked into a binary, read from the binary itself: `cargo auditable
//! build` embeds the resolved dependency graph of that build (its target, no
//! dev-dependencies) as zlib-compressed JSON in the ELF section `.dep-v0`. Reading the
//! binary that is packed, not the workspace's Cargo.lock, is what makes the list true of
//! that binary: Cargo.lock holds every platform's and every dev-dependency's crates.

use anyhow::{bail, Context};
use serde_json::Value;

const SECTION: &str = ".dep-v0";
/// The graph of a binary with a few hundred crates is tens of KiB of JSON; cargo-auditable's
/// own reader stops at 8 MiB.
const MAX_GRAPH_BYTES: usize = 8 << 20;

/// One crate of a build.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crate {
    pub name: String,
    pub version: String,
    /// `crates.io`, `local` (a path dependency, such as keel's own crates), `git`, `registry`.
    pub source: String,
}

impl Crate {
    /// Only a crate from crates.io has a purl that names it anywhere.
    pub fn purl(&self) -> Option<String> {
        (self.source == "crates.io").then(|| format!("pkg:cargo/{}@{}", self.name, self.version))
    }
}

/// The binary's own crate and the crates linked into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedCrates {
    pub root: Crate,
    /// Sorted; without build-time crates (build scripts' and proc macros' dependencies),
    /// which run on the build host and are not in the binary.
    pub linked: Vec<Crate>,
}

/// The crates of `elf`'s `.dep-v0` section; `None` when the binary has no such section
/// (it was built without cargo-auditable).
pub fn linked_crates(elf: &[u8]) -> anyhow::Result<Option<LinkedCrates>> {
    let Some(section) = elf_section(elf, SECTION)? else { return Ok(None) };
    let json = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(section, MAX_GRAPH_BYTES)
        // The status only: the error also carries everything inflated so far, up to the limit.
        .map_err(|error| anyhow::anyhow!("the {SECTION} section does not inflate ({:?}): not cargo-auditable's data", error.status))?;
    let graph: Value = serde_json::from_slice(&json).with_context(|| format!("the {SECTION} section is not JSON"))?;
    parse_graph(&graph).map(Some)
}

fn parse_graph(graph: &Value) -> anyhow::Result<LinkedCrates> {
    let packages = graph.get("packages").and_then(Value::as_array).with_context(|| format!("{SECTION} has no package list"))?;
    let mut root = None;
    let mut linked = Vec::new();
    for package in packages {
        let text = |field: &str| package.get(field).and_then(Value::as_str).map(str::to_string);
        let name = text("name").with_context(|| format!("a package of {SECTION} has no name"))?;
        let version = text("version").with_context(|| format!("{name} in {SECTION} has no version"))?;
        let source = text("source").unwrap_or_else(|| "crates.io".to_string());
        let krate = Crate { name, version, source };
        // cargo-auditable leaves out `kind` for the default, runtime.
        let build_time = package.get("kind").and_then(Value::as_str) == Some("build");
        if package.get("root").and_then(Value::as_bool) == Some(true) {
            if root.replace(krate).is_some() {
                bail!("{SECTION} names two root packages");
            }
        } else if !build_time {
            linked.push(krate);
        }
    }
    linked.sort();
    Ok(LinkedCrates { root: root.with_context(|| format!("{SECTION} names no root package"))?, linked })
}

/// The bytes of the section named `name` in an ELF file, read with the `object` crate (every
/// offset checked against the file).
fn elf_section<'a>(elf: &'a [u8], name: &str) -> anyhow::Result<Option<&'a [u8]>> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(elf).context("not an ELF file")?;
    match file.section_by_name(name) {
        Some(section) => section.data().map(Some).with_context(|| format!("the {name} section lies outside the file")),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_time_crates_are_not_linked() {
        let graph = serde_json::json!({"packages": [
            {"name": "keel-init", "version": "0.1.0", "source": "local", "root": true, "dependencies": [1, 2]},
            {"name": "libc", "version": "0.2.177", "source": "crates.io"},
            {"name": "serde_derive", "version": "1.0.229", "source": "crates.io", "kind": "build"},
            {"name": "keel-boot", "version": "0.1.0", "source": "local"},
        ]});
        let crates = parse_graph(&graph).unwrap();
        assert_eq!(crates.root.name, "keel-init");
        let names: Vec<&str> = crates.linked.iter().map(|krate| krate.name.as_str()).collect();
        assert_eq!(names, ["keel-boot", "libc"]);
        assert_eq!(crates.linked[1].purl().as_deref(), Some("pkg:cargo/libc@0.2.177"));
        assert_eq!(crates.linked[0].purl(), None, "a path dependency is on no registry");
    }

    #[test]
    fn the_section_objcopy_adds_to_a_binary_is_read_back() {
        let dir = keel_test_support::scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "auditable-section");
        let graph = r#"{"packages":[{"name":"demo","version":"1.0.0","source":"local","root":true,"dependencies":[1]},{"name":"libc","version":"0.2.177","source":"crates.io"}]}"#;
        std::fs::write(dir.join("graph.z"), miniz_oxide::deflate::compress_to_vec_zlib(graph.as_bytes(), 6)).unwrap();
        let section = format!("{SECTION}={}", dir.join("graph.z").display());
        keel_test_support::run("objcopy", &["--add-section", &section, "/usr/bin/true", dir.join("demo").to_str().unwrap()]);
        let crates = linked_crates(&std::fs::read(dir.join("demo")).unwrap()).unwrap().unwrap();
        assert_eq!((crates.root.name.as_str(), crates.linked.len()), ("demo", 1));
        assert_eq!(crates.linked[0].purl().as_deref(), Some("pkg:cargo/libc@0.2.177"));
    }

    #[test]
    fn a_zlib_bomb_is_refused_in_a_short_message() {
        let dir = keel_test_support::scratch_dir(std::env::temp_dir().join("keel-sbom-tests"), "auditable-bomb");
        let bomb = miniz_oxide::deflate::compress_to_vec_zlib(&vec![b' '; 2 * MAX_GRAPH_BYTES], 10);
        std::fs::write(dir.join("bomb.z"), bomb).unwrap();
        let section = format!("{SECTION}={}", dir.join("bomb.z").display());
        keel_test_support::run("objcopy", &["--add-section", &section, "/usr/bin/true", dir.join("bomb").to_str().unwrap()]);
        let error = linked_crates(&std::fs::read(dir.join("bomb")).unwrap()).unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("does not inflate (HasMoreOutput)"), "{}", &message[..message.len().min(200)]);
        assert!(message.len() < 200, "{} bytes", message.len());
    }

    #[test]
    fn a_binary_without_the_section_has_no_crates() {
        let host_binary = std::fs::read("/usr/sbin/mkfs.ext4").unwrap();
        assert_eq!(linked_crates(&host_binary).unwrap(), None);
    }

    #[test]
    fn a_truncated_elf_is_an_error_not_a_panic() {
        let host_binary = std::fs::read("/usr/sbin/mkfs.ext4").unwrap();
        for length in [0, 5, 64, 100, host_binary.len() / 2] {
            assert!(linked_crates(&host_binary[..length]).is_err(), "{length} bytes");
        }
    }
}
