//! How an output was made, as an in-toto Statement v1 with a SLSA v1 provenance predicate:
//! the outputs (subjects) and their digests, the command as given, every input with its
//! digest, and the builder. Nothing about when or where: two directories building the same
//! inputs write the same statement.

use crate::dpkg::DpkgDatabase;
use crate::{portable_path, sha256_hex, KEEL_URI, KEEL_VERSION};
use anyhow::Context;
use serde_json::{json, Value};
use std::path::Path;

/// One input of a build.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResolvedDependency {
    /// The input as the build named it: a path relative to the build directory where it is
    /// below it, else absolute; or a purl for a tool.
    pub name: String,
    pub sha256: String,
}

/// One build's provenance.
#[derive(Clone, Debug)]
pub struct Provenance {
    /// `initrd` or `image`: the build type is `https://keel.invalid/build/<kind>/v1`.
    pub kind: &'static str,
    /// The command's arguments after `keel`, as given (paths made portable).
    pub arguments: Vec<String>,
    /// Settings that change the output but are not arguments (`SOURCE_DATE_EPOCH`).
    pub environment: Vec<(String, String)>,
    pub inputs: Vec<ResolvedDependency>,
    /// The outputs (name as written, relative where it can be) and their SHA-256.
    pub outputs: Vec<ResolvedDependency>,
}

impl Provenance {
    pub fn build_type(&self) -> String {
        format!("{KEEL_URI}/build/{}/v1", self.kind)
    }

    /// The statement as JSON. Inputs are sorted by name, so the order the builder read them
    /// in does not show.
    pub fn to_json(&self) -> String {
        let digest_set = |dependency: &ResolvedDependency| json!({"name": dependency.name, "digest": {"sha256": dependency.sha256}});
        let mut inputs = self.inputs.clone();
        inputs.sort();
        inputs.dedup();
        let environment: serde_json::Map<String, Value> = self.environment.iter().map(|(name, value)| (name.clone(), value.clone().into())).collect();
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": self.outputs.iter().map(digest_set).collect::<Vec<_>>(),
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {
                "buildDefinition": {
                    "buildType": self.build_type(),
                    "externalParameters": {
                        "command": std::iter::once("keel".to_string()).chain(self.arguments.iter().cloned()).collect::<Vec<_>>(),
                        "environment": environment,
                    },
                    "resolvedDependencies": inputs.iter().map(digest_set).collect::<Vec<_>>(),
                },
                "runDetails": {
                    "builder": {
                        "id": format!("{KEEL_URI}/builder/keel@{KEEL_VERSION}"),
                        "version": {"keel": KEEL_VERSION},
                    },
                },
            },
        });
        let mut text = serde_json::to_string_pretty(&statement).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// A host program the build ran (a compressor, mkfs), found in `PATH` as the build found it
/// and named as `input_name` names it; its digest is the program's. None when it is not in
/// `PATH` (the build then failed already, or did not need it).
pub fn tool(program: &str, dpkg: &DpkgDatabase) -> anyhow::Result<Option<ResolvedDependency>> {
    let search = std::env::var_os("PATH").unwrap_or_default();
    let Some(path) = std::env::split_paths(&search).map(|dir| dir.join(program)).find(|candidate| candidate.is_file()) else { return Ok(None) };
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(ResolvedDependency { name: input_name(&path, Path::new("/"), dpkg), sha256: sha256_hex(&bytes) }))
}

/// How the provenance names an input file: a file a Debian package owns by the package's
/// purl with the file as subpath (`pkg:deb/debian/e2fsprogs@1.47.0-2?arch=amd64&distro=debian-12#usr/sbin/mkfs.ext4`),
/// so a reader knows where it came from, not only where it was; any other file by its
/// path, relative to the build directory `base` where it is below it.
pub fn input_name(path: &Path, base: &Path, dpkg: &DpkgDatabase) -> String {
    if path.is_absolute() {
        let text = path.to_string_lossy();
        // A program reached through a link (`/usr/bin/x` → `/etc/alternatives/x` → ...) is
        // owned under its target's name.
        let real = || std::fs::canonicalize(path).ok().and_then(|real| dpkg.owner(&real.to_string_lossy()).cloned());
        if let Some(purl) = dpkg.owner(&text).cloned().or_else(real).and_then(|package| dpkg.distro.purl(&package)) {
            return format!("{purl}#{}", text.trim_start_matches('/'));
        }
    }
    portable_path(path, base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_names_outputs_inputs_and_builder() {
        let provenance = Provenance {
            kind: "initrd",
            arguments: vec!["initrd".into(), "build".into(), "--output".into(), "initrd.img".into()],
            environment: vec![("SOURCE_DATE_EPOCH".into(), "0".into())],
            inputs: vec![
                ResolvedDependency { name: "keel-init".into(), sha256: "bb".into() },
                ResolvedDependency { name: "disk.json".into(), sha256: "aa".into() },
                ResolvedDependency { name: "disk.json".into(), sha256: "aa".into() },
            ],
            outputs: vec![ResolvedDependency { name: "initrd.img".into(), sha256: "cc".into() }],
        };
        let statement: Value = serde_json::from_str(&provenance.to_json()).unwrap();
        assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
        assert_eq!(statement["subject"][0]["digest"]["sha256"], "cc");
        let definition = &statement["predicate"]["buildDefinition"];
        assert_eq!(definition["buildType"], "https://keel.invalid/build/initrd/v1");
        assert_eq!(definition["externalParameters"]["command"][0], "keel");
        let names: Vec<&str> = definition["resolvedDependencies"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["disk.json", "keel-init"], "sorted, each input once");
        assert_eq!(statement["predicate"]["runDetails"]["builder"]["version"]["keel"], KEEL_VERSION);
    }

    #[test]
    fn a_tool_is_named_by_its_package() {
        let dpkg = DpkgDatabase::read(std::path::Path::new("/")).unwrap();
        let mkfs = tool("mkfs.ext4", &dpkg).unwrap().unwrap();
        assert!(mkfs.name.starts_with("pkg:deb/debian/e2fsprogs@"), "{}", mkfs.name);
        assert!(mkfs.name.ends_with("/mkfs.ext4"), "{}", mkfs.name);
        assert_eq!(tool("keel-no-such-program", &dpkg).unwrap(), None);
    }
}
