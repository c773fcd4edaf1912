//! An SBOM as a small graph (the artifact, packages, files and the relationships between
//! them) and its SPDX 2.3 JSON form.

use crate::{hex, sha256_hex, Digests, KEEL_URI, KEEL_VERSION};
use keel_ignition::apply::rfc3339_utc;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use std::collections::BTreeSet;

/// SPDX's primary package purposes keel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Purpose {
    Application,
    Archive,
    Library,
    OperatingSystem,
    File,
    Install,
}

impl Purpose {
    fn name(self) -> &'static str {
        match self {
            Purpose::Application => "APPLICATION",
            Purpose::Archive => "ARCHIVE",
            Purpose::Library => "LIBRARY",
            Purpose::OperatingSystem => "OPERATING-SYSTEM",
            Purpose::File => "FILE",
            Purpose::Install => "INSTALL",
        }
    }
}

/// One SPDX package: the artifact itself, a Debian package, a kernel, a binary, a crate, a
/// filesystem of an image.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub name: String,
    /// None: NOASSERTION (nothing told keel the version).
    pub version: Option<String>,
    /// `Organization: Debian` and the like.
    pub supplier: Option<String>,
    pub purl: Option<String>,
    pub sha256: Option<String>,
    pub purpose: Purpose,
    /// What a reader needs to know that no field says (a verity root hash, why an origin is unknown).
    pub comment: Option<String>,
}

impl Package {
    pub fn new(name: &str, version: Option<&str>, purpose: Purpose) -> Package {
        Package { name: name.to_string(), version: version.map(str::to_string), supplier: None, purl: None, sha256: None, purpose, comment: None }
    }
}

/// One file of the artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SbomFile {
    /// Its path in the artifact, without the leading `/` (`lib/modules/…`, `EFI/BOOT/BOOTX64.EFI`).
    pub path: String,
    pub digests: Digests,
    pub comment: Option<String>,
}

/// Another SPDX document this one refers to (SPDX 2.3 §6.6): an initrd's SBOM from the image's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalDocument {
    /// `DocumentRef-<name>`, this document's name for it.
    pub id: String,
    pub namespace: String,
    /// SHA-256 of the document's bytes: what says it is the document meant, not a later one.
    pub sha256: String,
}

impl ExternalDocument {
    /// The document in file `file_name` (`disk.usr-a.initrd.spdx.json`) with `namespace`, whose bytes hash to `sha256`.
    pub fn new(file_name: &str, namespace: &str, sha256: &str) -> ExternalDocument {
        let name = file_name.strip_suffix(".spdx.json").unwrap_or(file_name);
        ExternalDocument { id: format!("DocumentRef-{}", sanitize(name)), namespace: namespace.to_string(), sha256: sha256.to_string() }
    }
}

/// An end of a relationship.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    Artifact,
    Package(usize),
    File(usize),
    /// The artifact an external document (by its number) describes: keel's documents all
    /// describe theirs as `SPDXRef-Artifact`.
    ExternalArtifact(usize),
}

/// The artifact (the document's one described package), what it carries, and how they
/// relate. Files and packages are numbered in the order they are added; the document
/// sorts nothing by itself, so builders add them in a deterministic order.
#[derive(Clone, Debug)]
pub struct Sbom {
    pub artifact: Package,
    /// The artifact's file name (`initrd.img`), which names the document too.
    pub artifact_file_name: String,
    pub packages: Vec<Package>,
    pub files: Vec<SbomFile>,
    pub relationships: BTreeSet<(Node, &'static str, Node)>,
    pub external_documents: Vec<ExternalDocument>,
}

impl Sbom {
    pub fn new(artifact_file_name: &str, artifact: Package) -> Sbom {
        Sbom {
            artifact,
            artifact_file_name: artifact_file_name.to_string(),
            packages: Vec::new(),
            files: Vec::new(),
            relationships: BTreeSet::new(),
            external_documents: Vec::new(),
        }
    }

    /// The package's number: an equal package added before is the same package.
    pub fn package(&mut self, package: Package) -> usize {
        if let Some(index) = self.packages.iter().position(|known| *known == package) {
            return index;
        }
        self.packages.push(package);
        self.packages.len() - 1
    }

    /// Adds a file the artifact contains, and says that `origin` (a package) contains it too.
    pub fn file(&mut self, file: SbomFile, origin: Option<usize>) -> usize {
        self.file_in(file, Some(Node::Artifact), origin)
    }

    /// Adds a file that `container` contains (None: a file the artifact's files are made
    /// from, not one it holds as it is), and says that `origin` (a package) contains it too.
    pub fn file_in(&mut self, file: SbomFile, container: Option<Node>, origin: Option<usize>) -> usize {
        self.files.push(file);
        let index = self.files.len() - 1;
        if let Some(container) = container {
            self.relate(container, "CONTAINS", Node::File(index));
        }
        if let Some(package) = origin {
            self.relate(Node::Package(package), "CONTAINS", Node::File(index));
        }
        index
    }

    pub fn relate(&mut self, from: Node, kind: &'static str, to: Node) {
        self.relationships.insert((from, kind, to));
    }

    /// Refers to another document; its number, for `Node::ExternalArtifact`.
    pub fn external_document(&mut self, document: ExternalDocument) -> usize {
        if let Some(index) = self.external_documents.iter().position(|known| *known == document) {
            return index;
        }
        self.external_documents.push(document);
        self.external_documents.len() - 1
    }

    /// The SPDX 2.3 JSON document, created at `epoch` (the build's, not the clock's).
    pub fn to_spdx_json(&self, epoch: u64) -> String {
        let artifact_id = "SPDXRef-Artifact".to_string();
        let package_ids: Vec<String> = self.packages.iter().enumerate().map(|(index, package)| package_id(index, &package.name)).collect();
        let file_id = |index: usize| format!("SPDXRef-File-{}", index + 1);
        let id = |node: &Node| match node {
            Node::Artifact => artifact_id.clone(),
            Node::Package(index) => package_ids.get(*index).cloned().unwrap_or_else(|| "NOASSERTION".to_string()),
            Node::File(index) => file_id(*index),
            Node::ExternalArtifact(index) => match self.external_documents.get(*index) {
                Some(document) => format!("{}:{artifact_id}", document.id),
                None => "NOASSERTION".to_string(),
            },
        };
        let mut packages = vec![package_json(&self.artifact, &artifact_id, self.verification_code(Node::Artifact))];
        packages.extend(
            self.packages
                .iter()
                .zip(&package_ids)
                .enumerate()
                .map(|(index, (package, id))| package_json(package, id, self.verification_code(Node::Package(index)))),
        );
        let files: Vec<Value> = self
            .files
            .iter()
            .enumerate()
            .map(|(index, file)| {
                let mut value = json!({
                    "SPDXID": file_id(index),
                    "fileName": format!("./{}", file.path),
                    "checksums": [
                        {"algorithm": "SHA1", "checksumValue": file.digests.sha1},
                        {"algorithm": "SHA256", "checksumValue": file.digests.sha256},
                    ],
                    "licenseConcluded": "NOASSERTION",
                    "copyrightText": "NOASSERTION",
                });
                if let (Some(comment), Some(object)) = (&file.comment, value.as_object_mut()) {
                    object.insert("comment".into(), comment.clone().into());
                }
                value
            })
            .collect();
        let mut relationships =
            vec![json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": artifact_id})];
        relationships.extend(
            self.relationships
                .iter()
                .map(|(from, kind, to)| json!({"spdxElementId": id(from), "relationshipType": kind, "relatedSpdxElement": id(to)})),
        );
        let mut document = json!({
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": self.artifact_file_name,
            "documentNamespace": self.namespace(epoch),
            "creationInfo": {
                "created": rfc3339_utc(epoch),
                "creators": [format!("Tool: keel-{KEEL_VERSION}")],
            },
            "packages": packages,
            "files": files,
            "relationships": relationships,
        });
        if let (false, Some(object)) = (self.external_documents.is_empty(), document.as_object_mut()) {
            let references: Vec<Value> = self
                .external_documents
                .iter()
                .map(|external| {
                    json!({
                        "externalDocumentId": external.id,
                        "spdxDocument": external.namespace,
                        "checksum": {"algorithm": "SHA256", "checksumValue": external.sha256},
                    })
                })
                .collect();
            object.insert("externalDocumentRefs".into(), references.into());
        }
        let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
        text.push('\n');
        text
    }

    /// SPDX's package verification code of the files `package` contains (SHA-1 of their
    /// sorted SHA-1s), None when it contains none. SPDX lets only a package whose files
    /// were analyzed contain files; this code is what says which. It covers the files this
    /// document lists, not all a package ships: builders say so in the package's comment.
    fn verification_code(&self, package: Node) -> Option<String> {
        let mut sha1s: Vec<&str> = self
            .relationships
            .iter()
            .filter(|(from, kind, _)| *from == package && *kind == "CONTAINS")
            .filter_map(|(_, _, to)| match to {
                Node::File(index) => self.files.get(*index).map(|file| file.digests.sha1.as_str()),
                _ => None,
            })
            .collect();
        if sha1s.is_empty() {
            return None;
        }
        sha1s.sort_unstable();
        Some(hex(&Sha1::digest(sha1s.concat().as_bytes())))
    }

    /// Unique per document, the same for the same document: the artifact's digest, and a
    /// digest of everything the document says of it, its creation time included (SPDX: two
    /// documents never share a namespace, and one artifact described at two times is two).
    fn namespace(&self, epoch: u64) -> String {
        let summary = format!("{epoch}{:?}{:?}{:?}{:?}{:?}", self.artifact, self.packages, self.files, self.relationships, self.external_documents);
        let artifact = self.artifact.sha256.as_deref().unwrap_or("NOASSERTION");
        format!("{KEEL_URI}/spdx/{}/{artifact}-{}", sanitize(&self.artifact_file_name), sha256_hex(summary.as_bytes()))
    }
}

/// `SPDXRef-Package-<n>-<name>`: the number keeps ids unique where two names sanitize alike
/// (`libstdc++6`, two versions of one crate); the name keeps them readable.
fn package_id(index: usize, name: &str) -> String {
    format!("SPDXRef-Package-{}-{}", index + 1, sanitize(name))
}

/// What SPDX allows in an id: letters, digits, `.` and `-`.
fn sanitize(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

fn package_json(package: &Package, id: &str, verification_code: Option<String>) -> Value {
    let noassertion = || Value::from("NOASSERTION");
    let mut value = json!({
        "SPDXID": id,
        "name": package.name,
        "versionInfo": package.version.clone().map_or_else(noassertion, Value::from),
        "supplier": package.supplier.clone().map_or_else(noassertion, Value::from),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": verification_code.is_some(),
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": package.purpose.name(),
    });
    let Some(object) = value.as_object_mut() else { return value };
    if package.version.is_none() {
        // SPDX: a missing versionInfo is "no assertion"; the literal would read as a version.
        object.remove("versionInfo");
    }
    if let Some(code) = verification_code {
        object.insert("packageVerificationCode".into(), json!({"packageVerificationCodeValue": code}));
    }
    if let Some(purl) = &package.purl {
        object.insert("externalRefs".into(), json!([{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}]));
    }
    if let Some(sha256) = &package.sha256 {
        object.insert("checksums".into(), json!([{"algorithm": "SHA256", "checksumValue": sha256}]));
    }
    if let Some(comment) = &package.comment {
        object.insert("comment".into(), comment.clone().into());
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Sbom {
        let mut artifact = Package::new("initrd.img", Some("abc"), Purpose::Archive);
        artifact.sha256 = Some("00".repeat(32));
        let mut sbom = Sbom::new("initrd.img", artifact);
        let libc = sbom.package(Package::new("libc6", Some("2.36-9"), Purpose::Library));
        sbom.file(SbomFile { path: "lib/libc.so.6".into(), digests: Digests::of(b"libc"), comment: None }, Some(libc));
        sbom.file(SbomFile { path: "etc/keel/modules".into(), digests: Digests::of(b"list"), comment: Some("generated".into()) }, None);
        sbom
    }

    #[test]
    fn one_package_added_twice_is_one_package() {
        let mut sbom = example();
        assert_eq!(sbom.package(Package::new("libc6", Some("2.36-9"), Purpose::Library)), 0);
        assert_eq!(sbom.package(Package::new("libc6", Some("2.37-1"), Purpose::Library)), 1);
    }

    #[test]
    fn the_document_describes_the_artifact_and_what_contains_each_file() {
        let document: Value = serde_json::from_str(&example().to_spdx_json(1_700_000_000)).unwrap();
        assert_eq!(document["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        let relationships: Vec<String> = document["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r["spdxElementId"].as_str().unwrap(),
                    r["relationshipType"].as_str().unwrap(),
                    r["relatedSpdxElement"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            relationships,
            [
                "SPDXRef-DOCUMENT DESCRIBES SPDXRef-Artifact",
                "SPDXRef-Artifact CONTAINS SPDXRef-File-1",
                "SPDXRef-Artifact CONTAINS SPDXRef-File-2",
                "SPDXRef-Package-1-libc6 CONTAINS SPDXRef-File-1",
            ]
        );
        assert_eq!(document["files"][0]["fileName"], "./lib/libc.so.6");
        assert_eq!(document["packages"][0]["checksums"][0]["checksumValue"], "00".repeat(32));
    }

    #[test]
    fn the_namespace_changes_with_the_content_only() {
        let namespace = |sbom: &Sbom| serde_json::from_str::<Value>(&sbom.to_spdx_json(0)).unwrap()["documentNamespace"].clone();
        let mut other = example();
        other.files[0].digests = Digests::of(b"another libc");
        assert_eq!(namespace(&example()), namespace(&example()));
        assert_ne!(namespace(&example()), namespace(&other));
    }

    #[test]
    fn one_content_created_at_two_times_is_two_namespaces() {
        let namespace = |epoch: u64| serde_json::from_str::<Value>(&example().to_spdx_json(epoch)).unwrap()["documentNamespace"].clone();
        assert_eq!(namespace(5), namespace(5));
        assert_ne!(namespace(5), namespace(6));
    }

    #[test]
    fn a_referred_document_is_named_by_namespace_and_digest_and_its_artifact_by_its_id() {
        let with_reference = |sha256: &str| {
            let mut sbom = example();
            let document = sbom.external_document(ExternalDocument::new("disk.usr-a.initrd.spdx.json", "https://keel.invalid/a", sha256));
            sbom.relate(Node::File(0), "CONTAINS", Node::ExternalArtifact(document));
            serde_json::from_str::<Value>(&sbom.to_spdx_json(0)).unwrap()
        };
        let document = with_reference(&"aa".repeat(32));
        assert_eq!(
            document["externalDocumentRefs"],
            json!([{
                "externalDocumentId": "DocumentRef-disk.usr-a.initrd",
                "spdxDocument": "https://keel.invalid/a",
                "checksum": {"algorithm": "SHA256", "checksumValue": "aa".repeat(32)},
            }])
        );
        let relationships = document["relationships"].as_array().unwrap();
        assert!(relationships.contains(&json!({
            "spdxElementId": "SPDXRef-File-1", "relationshipType": "CONTAINS", "relatedSpdxElement": "DocumentRef-disk.usr-a.initrd:SPDXRef-Artifact"
        })));
        // Another initrd SBOM is another statement about the image.
        assert_ne!(document["documentNamespace"], with_reference(&"bb".repeat(32))["documentNamespace"]);
        assert!(serde_json::from_str::<Value>(&example().to_spdx_json(0)).unwrap().get("externalDocumentRefs").is_none());
    }

    #[test]
    fn ids_hold_only_what_spdx_allows() {
        assert_eq!(package_id(4, "libstdc++6"), "SPDXRef-Package-5-libstdc--6");
    }
}
