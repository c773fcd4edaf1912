//! Parsing: any spec 3.0.0–3.6.0 document becomes the newest spec's types (the
//! `ignition-config` crate's 3.6 schema), with the keys its declared version does not know
//! reported as unused and left out, as Ignition's parser for that version leaves them (see
//! [`parse`]).

use crate::report::{JsonPath, Report};
use std::fmt;

/// The newest spec keel reads; every document is translated to it.
pub use ignition_config::v3_6 as latest;
pub type Latest = latest::Config;

/// Larger documents are refused before parsing, so a hostile config costs bounded memory.
/// Files embedded as `data:` URLs count here; 32 MiB is far more than any real config needs.
pub const MAX_CONFIG_BYTES: usize = 32 << 20;

const OLDEST_MINOR: u64 = 0;
const NEWEST_MINOR: u64 = 6;

/// The spec version a document declared: 3.minor.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpecVersion {
    pub minor: u64,
}

impl SpecVersion {
    pub const NEWEST: SpecVersion = SpecVersion { minor: NEWEST_MINOR };

    pub fn at_least(self, minor: u64) -> bool {
        self.minor >= minor
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "3.{}.0", self.minor)
    }
}

/// A document as it was written, in the newest spec's types: validation reads it so (special
/// mode bits and all); [`Parsed::upgraded`] is what merge and apply use.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub config: Latest,
    pub version: SpecVersion,
    /// Warnings found while parsing: keys the declared version does not know.
    pub reports: Vec<Report>,
}

/// The first spec whose file and directory modes may carry setuid, setgid and sticky bits.
const SPECIAL_MODE_BITS_SINCE_MINOR: u64 = 6;
const SPECIAL_MODE_BITS: i64 = 0o7000;

impl Parsed {
    /// The config as the newest spec means it. Before 3.6 a mode's special bits are a warning
    /// and are dropped when Ignition translates the config upward, so the node gets the mode
    /// without them (Ignition 2.14, which took them from 3.4.0-experimental on, does the same
    /// for 3.0-3.3).
    pub fn upgraded(self) -> Latest {
        let mut config = self.config;
        if !self.version.at_least(SPECIAL_MODE_BITS_SINCE_MINOR)
            && let Some(storage) = config.storage.as_mut()
        {
            let files = storage.files.iter_mut().flatten().map(|file| &mut file.mode);
            let directories = storage.directories.iter_mut().flatten().map(|directory| &mut directory.mode);
            for mode in files.chain(directories).flatten() {
                *mode &= !SPECIAL_MODE_BITS;
            }
        }
        config
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    TooLarge {
        bytes: usize,
    },
    /// Not JSON, or JSON that does not fit the spec's types; line and column are 1-based.
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    MissingVersion {
        message: String,
    },
    UnsupportedVersion {
        version: String,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooLarge { .. } => write!(formatter, "the config is over {MAX_CONFIG_BYTES} bytes, the most keel reads of one config"),
            ParseError::Syntax { line, column, message } => write!(formatter, "line {line} column {column}: {message}"),
            ParseError::MissingVersion { message } => {
                write!(formatter, "not an Ignition config: {message} (it needs \"ignition\": {{\"version\": \"3.x.0\"}})")
            }
            ParseError::UnsupportedVersion { version } => write!(
                formatter,
                "config version {version} is not supported: keel reads spec 3.{OLDEST_MINOR}.0 through 3.{NEWEST_MINOR}.0{}",
                if version.starts_with("2.") || version.starts_with('1') {
                    " (translate a spec 2.x config to 3.x first, as Ignition 2.x itself requires)"
                } else {
                    ""
                }
            ),
        }
    }
}

impl std::error::Error for ParseError {}

fn syntax(error: &serde_json::Error) -> ParseError {
    // serde_json appends " at line L column C" to its messages; the fields carry them already.
    let message = error.to_string();
    let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(message, _)| message);
    ParseError::Syntax { line: error.line(), column: error.column(), message: redact_strings(message) }
}

/// serde quotes the offending string value (`invalid type: string "…", expected …`); that
/// value may be a password hash or a key put in the wrong place, so it is never repeated.
/// Field names, in backticks, stay: they are what the reader needs.
fn redact_strings(message: &str) -> String {
    let mut redacted = String::with_capacity(message.len());
    let mut in_string = false;
    let mut escaped = false;
    for character in message.chars() {
        match (in_string, character) {
            (false, '"') => {
                in_string = true;
                redacted.push_str("\"…\"");
            }
            (false, _) => redacted.push(character),
            (true, '\\') if !escaped => escaped = true,
            (true, '"') if !escaped => in_string = false,
            (true, _) => escaped = false,
        }
    }
    redacted
}

/// The version the document declares, read before its body so that a wrong version is named as
/// such rather than as a field error in some other version's types.
fn declared_version(bytes: &[u8]) -> Result<String, ParseError> {
    #[derive(serde::Deserialize)]
    struct Minimal {
        ignition: MinimalIgnition,
    }
    #[derive(serde::Deserialize)]
    struct MinimalIgnition {
        version: String,
    }
    match serde_json::from_slice::<Minimal>(bytes) {
        Ok(minimal) => Ok(minimal.ignition.version),
        Err(error) if error.is_data() => Err(ParseError::MissingVersion { message: syntax(&error).to_string() }),
        Err(error) => Err(syntax(&error)),
    }
}

fn spec_version(declared: &str) -> Option<SpecVersion> {
    let minor_text = declared.strip_prefix("3.")?.strip_suffix(".0")?;
    let minor: u64 = minor_text.parse().ok()?;
    // "3.01.0" is not a semver version; Ignition refuses it too.
    (minor.to_string() == minor_text && (OLDEST_MINOR..=NEWEST_MINOR).contains(&minor)).then_some(SpecVersion { minor })
}

/// Parses a config of any supported version into the newest spec's types.
///
/// One set of types reads every version: spec 3.x only ever added fields (the `ignition-config`
/// crate's per-version schemas show it), so a document of 3.k is read with the 3.6 types and the
/// fields that arrived after 3.k are then taken out again, reported as unused keys, as Ignition's
/// parser for 3.k would leave them. Reading each version with its own types would link seven
/// copies of the deserializer into keel-init (1.2 MB of a static binary, measured), and those
/// older types also demand fields that Ignition's Go types leave optional (a link's `target`
/// before 3.3, a CA's `source` in 3.0), refusing configs Ignition accepts.
pub fn parse(bytes: &[u8]) -> Result<Parsed, ParseError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ParseError::TooLarge { bytes: bytes.len() });
    }
    let declared = declared_version(bytes)?;
    let version = spec_version(&declared).ok_or_else(|| ParseError::UnsupportedVersion { version: declared.clone() })?;
    let mut unused = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let mut config: Latest = serde_ignored::deserialize(&mut deserializer, |path| unused.push(json_path(&path))).map_err(|error| syntax(&error))?;
    deserializer.end().map_err(|error| syntax(&error))?;
    unused.extend(drop_fields_newer_than(&mut config, version));
    unused.sort();
    let reports = unused.into_iter().map(|path| Report::warning(path, "unused key")).collect();
    config.ignition.version = SpecVersion::NEWEST.to_string();
    Ok(Parsed { config, version, reports })
}

/// serde_ignored's path of an unused key, as a JSON path.
fn json_path(path: &serde_ignored::Path<'_>) -> JsonPath {
    use serde_ignored::Path;
    match path {
        Path::Root => JsonPath::root(),
        Path::Seq { parent, index } => json_path(parent).index(*index),
        Path::Map { parent, key } => json_path(parent).field(key),
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => json_path(parent),
    }
}

/// Takes `field` out when the document's spec predates the field's, returning its path.
fn drop_if_newer<T>(field: &mut Option<T>, since_minor: u64, version: SpecVersion, path: impl FnOnce() -> JsonPath) -> Option<JsonPath> {
    (!version.at_least(since_minor) && field.take().is_some()).then(path)
}

/// The fields each spec after 3.0 added (from the `ignition-config` crate's schemas, version by
/// version), taken out of a document of an older spec.
fn drop_fields_newer_than(config: &mut Latest, version: SpecVersion) -> Vec<JsonPath> {
    let mut dropped = Vec::new();
    let root = JsonPath::root();
    let ignition = root.field("ignition");
    dropped.extend(drop_if_newer(&mut config.kernel_arguments, 3, version, || root.field("kernelArguments")));
    dropped.extend(drop_if_newer(&mut config.ignition.proxy, 1, version, || ignition.field("proxy")));
    let mut resources: Vec<(JsonPath, &mut latest::Resource)> = Vec::new();
    if let Some(references) = config.ignition.config.as_mut() {
        let at = ignition.field("config");
        if let Some(replace) = references.replace.as_mut() {
            resources.push((at.field("replace"), replace));
        }
        for (index, merge) in references.merge.iter_mut().flatten().enumerate() {
            resources.push((at.field("merge").index(index), merge));
        }
    }
    let authorities =
        config.ignition.security.as_mut().and_then(|security| security.tls.as_mut()).and_then(|tls| tls.certificate_authorities.as_mut());
    for (index, authority) in authorities.into_iter().flatten().enumerate() {
        resources.push((ignition.field("security").field("tls").field("certificateAuthorities").index(index), authority));
    }
    for (at, resource) in &mut resources {
        dropped.extend(drop_if_newer(&mut resource.compression, 1, version, || at.field("compression")));
    }
    let storage_at = root.field("storage");
    if let Some(storage) = config.storage.as_mut() {
        for (index, file) in storage.files.iter_mut().flatten().enumerate() {
            let at = storage_at.field("files").index(index);
            if let Some(contents) = file.contents.as_mut() {
                resources.push((at.field("contents"), contents));
            }
            for (fragment, append) in file.append.iter_mut().flatten().enumerate() {
                resources.push((at.field("append").index(fragment), append));
            }
        }
        for (index, filesystem) in storage.filesystems.iter_mut().flatten().enumerate() {
            let at = storage_at.field("filesystems").index(index);
            dropped.extend(drop_if_newer(&mut filesystem.mount_options, 1, version, || at.field("mountOptions")));
        }
        for (disk_index, disk) in storage.disks.iter_mut().flatten().enumerate() {
            for (index, partition) in disk.partitions.iter_mut().flatten().enumerate() {
                let at = || storage_at.field("disks").index(disk_index).field("partitions").index(index).field("resize");
                dropped.extend(drop_if_newer(&mut partition.resize, 2, version, at));
            }
        }
        for (index, luks) in storage.luks.iter_mut().flatten().enumerate() {
            let at = storage_at.field("luks").index(index);
            dropped.extend(drop_if_newer(&mut luks.discard, 4, version, || at.field("discard")));
            dropped.extend(drop_if_newer(&mut luks.open_options, 4, version, || at.field("openOptions")));
            dropped.extend(drop_if_newer(&mut luks.cex, 5, version, || at.field("cex")));
            let tangs = luks.clevis.as_mut().and_then(|clevis| clevis.tang.as_mut());
            for (tang_index, tang) in tangs.into_iter().flatten().enumerate() {
                let at = || at.field("clevis").field("tang").index(tang_index).field("advertisement");
                dropped.extend(drop_if_newer(&mut tang.advertisement, 4, version, at));
            }
        }
        dropped.extend(drop_if_newer(&mut storage.luks, 2, version, || storage_at.field("luks")));
    }
    for (at, resource) in resources {
        dropped.extend(drop_if_newer(&mut resource.http_headers, 1, version, || at.field("httpHeaders")));
    }
    if let Some(passwd) = config.passwd.as_mut() {
        for (index, user) in passwd.users.iter_mut().flatten().enumerate() {
            dropped
                .extend(drop_if_newer(&mut user.should_exist, 2, version, || root.field("passwd").field("users").index(index).field("shouldExist")));
        }
        for (index, group) in passwd.groups.iter_mut().flatten().enumerate() {
            dropped.extend(drop_if_newer(&mut group.should_exist, 2, version, || {
                root.field("passwd").field("groups").index(index).field("shouldExist")
            }));
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_version_reads_into_the_newest_types() {
        for minor in OLDEST_MINOR..=NEWEST_MINOR {
            let text = format!(r#"{{"ignition": {{"version": "3.{minor}.0"}}, "storage": {{"files": [{{"path": "/z", "mode": 420}}]}}}}"#);
            let parsed = parse(text.as_bytes()).unwrap();
            assert_eq!(parsed.version, SpecVersion { minor });
            assert_eq!(parsed.config.ignition.version, "3.6.0");
            assert_eq!(parsed.config.storage.unwrap().files.unwrap()[0].mode, Some(420));
            assert!(parsed.reports.is_empty());
        }
    }

    #[test]
    fn unsupported_versions_name_the_supported_range() {
        for version in ["2.3.0", "3.7.0", "3.4.0-experimental", "3.01.0", "4.0.0", "z"] {
            let error = parse(format!(r#"{{"ignition": {{"version": "{version}"}}}}"#).as_bytes()).unwrap_err();
            assert_eq!(error, ParseError::UnsupportedVersion { version: version.to_owned() });
            assert!(error.to_string().contains("3.0.0 through 3.6.0"), "{error}");
        }
        assert!(parse(br#"{"ignition": {"version": "2.2.0"}}"#).unwrap_err().to_string().contains("spec 2.x"));
    }

    #[test]
    fn json_errors_name_line_and_column() {
        let error = parse(b"{\n  \"ignition\": {\"version\": \"3.3.0\"},\n  \"storage\": {\"files\": [{\"path\": 7}]}\n}").unwrap_err();
        match error {
            ParseError::Syntax { line, column, ref message } => {
                assert_eq!((line, column), (3, 34), "{message}");
                assert!(message.contains("invalid type"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(b"{\"ignition\": {\"version\": \"3.3.0\"},}").unwrap_err(), ParseError::Syntax { line: 1, .. }));
        assert!(matches!(parse(b"{}").unwrap_err(), ParseError::MissingVersion { .. }));
    }

    #[test]
    fn keys_the_declared_version_does_not_know_are_warnings_with_jq_paths() {
        // kernelArguments arrived in 3.3.0: in a 3.2.0 document it is unused, and dropped.
        let parsed = parse(
            br#"{"ignition": {"version": "3.2.0"}, "kernelArguments": {"shouldExist": ["a"]},
                 "systemd": {"units": [{"name": "a.service", "colour": "red"}]}}"#,
        )
        .unwrap();
        let paths: Vec<_> = parsed.reports.iter().map(|report| report.to_string()).collect();
        assert_eq!(paths, ["warning at $.kernelArguments: unused key", "warning at $.systemd.units[0].colour: unused key"]);
        assert!(parsed.config.kernel_arguments.is_none());
    }

    #[test]
    fn fields_a_version_predates_are_unused_keys_and_dropped() {
        let text = r#"{"ignition": {"version": "3.0.0", "proxy": {"httpProxy": "http://p"}},
            "storage": {"files": [{"path": "/f", "contents": {"source": "data:,", "httpHeaders": [{"name": "a", "value": "b"}]}}],
                        "luks": [{"name": "l", "device": "/dev/sda"}],
                        "disks": [{"device": "/dev/sda", "partitions": [{"number": 1, "resize": true}]}]},
            "passwd": {"users": [{"name": "u", "shouldExist": false}]}}"#;
        let parsed = parse(text.as_bytes()).unwrap();
        let paths: Vec<_> = parsed.reports.iter().map(|report| report.path.to_string()).collect();
        assert_eq!(
            paths,
            [
                "$.ignition.proxy",
                "$.passwd.users[0].shouldExist",
                "$.storage.disks[0].partitions[0].resize",
                "$.storage.files[0].contents.httpHeaders",
                "$.storage.luks"
            ]
        );
        let storage = parsed.config.storage.as_ref().unwrap();
        assert!(storage.luks.is_none() && parsed.config.ignition.proxy.is_none());
        assert!(storage.files.as_ref().unwrap()[0].contents.as_ref().unwrap().http_headers.is_none());
        let newer = parse(text.replace("3.0.0", "3.2.0").as_bytes()).unwrap();
        assert!(newer.reports.is_empty(), "{:?}", newer.reports);
        assert!(newer.config.storage.unwrap().luks.is_some());
    }

    #[test]
    fn string_values_never_reach_an_error_message() {
        let error = parse(br#"{"ignition": {"version": "3.3.0"}, "passwd": {"users": [{"name": "a", "uid": "$6$secret\"hash"}]}}"#).unwrap_err();
        let message = error.to_string();
        assert!(!message.contains("secret"), "{message}");
        assert!(message.contains("invalid type: string \"…\", expected i64"), "{message}");
    }

    #[test]
    fn special_mode_bits_are_dropped_on_upgrade_before_3_6_and_kept_from_it() {
        for (minor, expected) in [(0, 0o755), (3, 0o755), (5, 0o755), (6, 0o4755)] {
            let text = format!(
                r#"{{"ignition": {{"version": "3.{minor}.0"}}, "storage": {{"files": [{{"path": "/f", "mode": 2541}}], "directories": [{{"path": "/d", "mode": 2541}}]}}}}"#
            );
            let parsed = parse(text.as_bytes()).unwrap();
            assert_eq!(parsed.config.storage.as_ref().unwrap().files.as_ref().unwrap()[0].mode, Some(0o4755), "validation sees what was written");
            let storage = parsed.upgraded().storage.unwrap();
            assert_eq!(storage.files.unwrap()[0].mode, Some(expected), "3.{minor}.0");
            assert_eq!(storage.directories.unwrap()[0].mode, Some(expected), "3.{minor}.0");
        }
    }

    #[test]
    fn oversized_documents_are_refused_before_parsing() {
        let huge = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert_eq!(parse(&huge).unwrap_err(), ParseError::TooLarge { bytes: MAX_CONFIG_BYTES + 1 });
    }
}
