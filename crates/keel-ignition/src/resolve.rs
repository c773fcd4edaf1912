//! From the documents a boot found to the one config it applies, in Ignition's order:
//! 1. each base config is read and checked; base configs form groups (Ignition's `base.d`, then
//!    `base.platform.d/<platform>`), each group is merged in order, then the groups;
//! 2. the user config is read and checked, then rendered: `ignition.config.replace`, when it has a
//!    source, stands in for the whole document; otherwise each `ignition.config.merge` entry is
//!    fetched, checked, rendered in turn (so its own references are followed, depth first) and
//!    merged on top, in list order; the rendered user config is checked as a whole;
//! 3. final = merge(bases, user).
//!
//! Ignition never follows references in base configs: they are kept in the result unfetched, and
//! keel says so in a warning. Merging is not associative (a later entry can move a path between
//! files and links, or drop a header), which is why the grouping above is kept exactly.
//!
//! Referenced configs are untrusted and can be built to multiply (a gzip-compressed list of the
//! same reference, nested): depth, count and total bytes are capped.

use crate::config::latest::Resource;
use crate::config::{parse, Latest, ParseError, Parsed, SpecVersion, MAX_CONFIG_BYTES};
use crate::merge::merge;
use crate::report::{has_errors, JsonPath, Level, Report};
use crate::resource::{fetch_at_most, FetchError};
use std::fmt;

/// How many references deep a chain may go below the user config.
pub const MAX_REFERENCE_DEPTH: usize = 10;
/// How many configs one resolution may fetch through references.
pub const MAX_REFERENCED_CONFIGS: usize = 64;
/// The bytes of every document read (base, user and referenced, decompressed) together.
pub const MAX_TOTAL_BYTES: usize = 64 << 20;

/// A config as found: its bytes, and the name that messages use for it (a file path, "base
/// config 2").
#[derive(Clone, Debug)]
pub struct Document {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A report about one document. For a referenced config the document is the chain that led to
/// it, `user.ign → $.ignition.config.merge[1]`; for a merged result, a description of the merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentReport {
    pub document: String,
    pub report: Report,
}

impl fmt::Display for DocumentReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.document, self.report)
    }
}

#[derive(Clone, Debug)]
pub struct Resolved {
    pub config: Latest,
    /// Every document's parse and check reports, in the order the documents were read.
    pub reports: Vec<DocumentReport>,
    /// False when there was no user config or it was empty; Ignition records this in
    /// `/etc/.ignition-result.json`.
    pub user_config_provided: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Problem {
    Parse(ParseError),
    Fetch(FetchError),
    /// The check found errors; they are among the error's reports, tagged with its document.
    Invalid,
    EmptyReferencedConfig,
    TooDeep,
    TooManyReferencedConfigs,
    TooManyBytes,
}

/// Resolution stopped at `document`. `reports` holds every report gathered until then, so the
/// warnings of the documents read before are not lost.
#[derive(Debug, PartialEq, Eq)]
pub struct ResolveError {
    pub document: String,
    pub problem: Problem,
    pub reports: Vec<DocumentReport>,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: ", self.document)?;
        match &self.problem {
            Problem::Parse(error) => write!(formatter, "cannot parse the config: {error}"),
            Problem::Fetch(error) => write!(formatter, "cannot fetch the referenced config: {error}"),
            Problem::Invalid => {
                write!(formatter, "the config is invalid")?;
                let mut errors = self.reports.iter().filter(|tagged| tagged.document == self.document && tagged.report.level == Level::Error);
                errors.try_for_each(|tagged| write!(formatter, "\n  {}", tagged.report))
            }
            Problem::EmptyReferencedConfig => write!(formatter, "the referenced config is empty"),
            Problem::TooDeep => write!(formatter, "references nest more than {MAX_REFERENCE_DEPTH} deep; is it a loop?"),
            Problem::TooManyReferencedConfigs => write!(formatter, "more than {MAX_REFERENCED_CONFIGS} referenced configs in all"),
            Problem::TooManyBytes => write!(formatter, "the configs add up to more than {MAX_TOTAL_BYTES} bytes"),
        }
    }
}

impl std::error::Error for ResolveError {}

/// Whether `id` can name a platform: it names the directory `base.platform.d/<id>` of base
/// configs, so lower-case letters, digits, `-` and `_` only (`qemu`, `aws`, `openstack`).
pub fn is_platform_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_')
}

/// The validator: reports about one parsed document (the parse's own reports are kept apart;
/// the check need not repeat them).
pub type Check<'a> = &'a dyn Fn(&Parsed) -> Vec<Report>;

/// The final config from the base configs, grouped as Ignition groups them (`base.d` with the
/// OEM's base, then the platform's), and the user config, if any. An empty user config counts
/// as none, as in Ignition.
pub fn resolve(base_groups: &[&[Document]], user: Option<&Document>, check: Check<'_>) -> Result<Resolved, ResolveError> {
    resolve_within(&LIMITS, base_groups, user, check)
}

struct Limits {
    depth: usize,
    referenced_configs: usize,
    total_bytes: usize,
}

const LIMITS: Limits = Limits { depth: MAX_REFERENCE_DEPTH, referenced_configs: MAX_REFERENCED_CONFIGS, total_bytes: MAX_TOTAL_BYTES };

fn resolve_within(limits: &Limits, base_groups: &[&[Document]], user: Option<&Document>, check: Check<'_>) -> Result<Resolved, ResolveError> {
    let mut resolver = Resolver { limits, check, reports: Vec::new(), referenced_configs: 0, bytes: 0, merges: 0 };
    let mut sources = 0;
    let mut bases = None;
    for group in base_groups {
        let mut group_config = None;
        for document in group.iter() {
            let config = resolver.read(&document.name, &document.bytes)?;
            resolver.warn_of_unfollowed_references(&document.name, &config);
            group_config = Some(merge_onto(group_config, config));
            sources += 1;
        }
        if let Some(group_config) = group_config {
            bases = Some(merge_onto(bases, group_config));
        }
    }
    let user = match user {
        Some(document) if document.bytes.is_empty() => {
            resolver.tag(&document.name, Report::warning(JsonPath::root(), "the user config is empty: there is no user config"));
            None
        }
        user => user,
    };
    let mut config = bases.unwrap_or_default();
    if let Some(document) = user {
        let read = resolver.read(&document.name, &document.bytes)?;
        let merges_before = resolver.merges;
        let rendered = resolver.render(&document.name, read, 0)?;
        let rendered = if resolver.merges > merges_before {
            resolver.check_merged(&format!("{} with its referenced configs", document.name), rendered)?
        } else {
            rendered
        };
        config = merge(&config, &rendered);
        sources += 1;
    }
    if sources > 1 {
        let merged = if user.is_some() { "the base configs merged with the user config" } else { "the base configs merged" };
        config = resolver.check_merged(merged, config)?;
    }
    Ok(Resolved { config, reports: resolver.reports, user_config_provided: user.is_some() })
}

/// Ignition folds configs onto an empty one; merging onto nothing is the config itself.
fn merge_onto(parent: Option<Latest>, child: Latest) -> Latest {
    match parent {
        Some(parent) => merge(&parent, &child),
        None => child,
    }
}

struct Resolver<'a> {
    limits: &'a Limits,
    check: Check<'a>,
    reports: Vec<DocumentReport>,
    referenced_configs: usize,
    bytes: usize,
    merges: usize,
}

impl Resolver<'_> {
    fn tag(&mut self, document: &str, report: Report) {
        self.reports.push(DocumentReport { document: document.to_owned(), report });
    }

    fn fail(&mut self, document: &str, problem: Problem) -> ResolveError {
        ResolveError { document: document.to_owned(), problem, reports: std::mem::take(&mut self.reports) }
    }

    /// Parses and checks one document; its errors stop resolution.
    fn read(&mut self, document: &str, bytes: &[u8]) -> Result<Latest, ResolveError> {
        self.bytes = self.bytes.saturating_add(bytes.len());
        if self.bytes > self.limits.total_bytes {
            return Err(self.fail(document, Problem::TooManyBytes));
        }
        let parsed = parse(bytes).map_err(|error| self.fail(document, Problem::Parse(error)))?;
        let checked = (self.check)(&parsed);
        let reports: Vec<Report> = parsed.reports.iter().cloned().chain(checked).collect();
        let invalid = has_errors(&reports);
        reports.into_iter().for_each(|report| self.tag(document, report));
        if invalid {
            return Err(self.fail(document, Problem::Invalid));
        }
        Ok(parsed.upgraded())
    }

    /// Checks a config that merging produced. Each document's warnings were reported when it
    /// was read; repeating them for the merge would only be noise, so only errors (which can
    /// arise from the combination alone) are kept. Merged configs are checked under the newest
    /// spec, as Ignition checks them under its own.
    fn check_merged(&mut self, description: &str, config: Latest) -> Result<Latest, ResolveError> {
        let parsed = Parsed { config, version: SpecVersion::NEWEST, reports: Vec::new() };
        let errors: Vec<Report> = (self.check)(&parsed).into_iter().filter(|report| report.level == Level::Error).collect();
        if errors.is_empty() {
            return Ok(parsed.config);
        }
        errors.into_iter().for_each(|report| self.tag(description, report));
        Err(self.fail(description, Problem::Invalid))
    }

    fn warn_of_unfollowed_references(&mut self, document: &str, config: &Latest) {
        let references = config.ignition.config.as_ref();
        let merges = references.and_then(|references| references.merge.as_ref()).is_some_and(|merge| !merge.is_empty());
        let replaces = references.and_then(|references| references.replace.as_ref()).is_some_and(|replace| replace.source.is_some());
        if merges || replaces {
            let path = JsonPath::root().field("ignition").field("config");
            self.tag(document, Report::warning(path, "a base config's merge and replace references are not followed (nor are they by Ignition)"));
        }
    }

    /// The config with its references resolved, as Ignition's RenderConfig does.
    fn render(&mut self, document: &str, config: Latest, depth: usize) -> Result<Latest, ResolveError> {
        let references = config.ignition.config.clone().unwrap_or_default();
        if let Some(replace) = references.replace.filter(|replace| replace.source.is_some()) {
            let chain = format!("{document} → $.ignition.config.replace");
            let replacement = self.referenced(&chain, &replace, depth + 1)?;
            return self.render(&chain, replacement, depth + 1);
        }
        let mut rendered = config;
        for (index, reference) in references.merge.iter().flatten().enumerate() {
            let chain = format!("{document} → $.ignition.config.merge[{index}]");
            let child = self.referenced(&chain, reference, depth + 1)?;
            let child = self.render(&chain, child, depth + 1)?;
            rendered = merge(&rendered, &child);
            self.merges += 1;
        }
        Ok(rendered)
    }

    fn referenced(&mut self, chain: &str, reference: &Resource, depth: usize) -> Result<Latest, ResolveError> {
        if depth > self.limits.depth {
            return Err(self.fail(chain, Problem::TooDeep));
        }
        self.referenced_configs += 1;
        if self.referenced_configs > self.limits.referenced_configs {
            return Err(self.fail(chain, Problem::TooManyReferencedConfigs));
        }
        // A compressed child stops unpacking where it could no longer be read: past one config's
        // limit, or past what the documents so far leave of the total.
        let total_room = self.limits.total_bytes.saturating_sub(self.bytes);
        let bytes = match fetch_at_most(reference, MAX_CONFIG_BYTES.min(total_room) as u64) {
            Err(FetchError::TooLarge { .. }) if total_room <= MAX_CONFIG_BYTES => return Err(self.fail(chain, Problem::TooManyBytes)),
            Err(FetchError::TooLarge { .. }) => return Err(self.fail(chain, Problem::Parse(ParseError::TooLarge { bytes: MAX_CONFIG_BYTES + 1 }))),
            fetched => fetched.map_err(|error| self.fail(chain, Problem::Fetch(error)))?,
        };
        // Ignition 2.14 takes an empty referenced config as an empty *user* config and
        // provisions without any of it; keel refuses instead.
        if bytes.is_empty() {
            return Err(self.fail(chain, Problem::EmptyReferencedConfig));
        }
        self.read(chain, &bytes)
    }
}

/// The config as pretty JSON, for people: keys sorted (so the same config always prints the
/// same), unset fields left out. It contains everything the config does, secrets included.
pub fn render(config: &Latest) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(config)?;
    drop_nulls(&mut value);
    serde_json::to_string_pretty(&value)
}

/// The spec's types write an unset optional field as null; a config never holds a null that
/// means anything else.
fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(members) => {
            members.retain(|_, member| !member.is_null());
            members.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    //! Expectations marked "Ignition 2.14" were checked with its binary: the user config given
    //! with `-platform file`, the rendered config read from the fetch stage's config cache.
    use super::*;
    use base64::Engine;
    use serde_json::json;
    use sha2::{Digest, Sha512};

    fn data_url(text: &str) -> String {
        format!("data:;base64,{}", base64::engine::general_purpose::STANDARD.encode(text))
    }

    /// A config for user core with a shell, SSH keys, and `ignition.config.merge` entries.
    fn keys_config(shell: Option<&str>, keys: &[&str], merge: &[String]) -> String {
        let mut config = json!({"ignition": {"version": "3.6.0"}, "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": keys}]}});
        if let Some(shell) = shell {
            config["passwd"]["users"][0]["shell"] = json!(shell);
        }
        if !merge.is_empty() {
            config["ignition"]["config"] = json!({"merge": merge.iter().map(|child| json!({"source": data_url(child)})).collect::<Vec<_>>()});
        }
        config.to_string()
    }

    fn document(name: &str, text: &str) -> Document {
        Document { name: name.to_owned(), bytes: text.as_bytes().to_vec() }
    }

    fn no_check(_: &Parsed) -> Vec<Report> {
        Vec::new()
    }

    /// Stands in for the validator: a file under /bad is an error.
    fn refuse_bad_files(parsed: &Parsed) -> Vec<Report> {
        let files = parsed.config.storage.as_ref().and_then(|storage| storage.files.as_deref()).unwrap_or_default();
        let files_path = JsonPath::root().field("storage").field("files");
        let bad = files.iter().enumerate().filter(|(_, file)| file.path.starts_with("/bad"));
        bad.map(|(index, _)| Report::error(files_path.index(index).field("path"), "bad path")).collect()
    }

    /// Stands in for a rule only a combination can break: at most one user.
    fn one_user_at_most(parsed: &Parsed) -> Vec<Report> {
        let users = parsed.config.passwd.as_ref().and_then(|passwd| passwd.users.as_ref()).map_or(0, Vec::len);
        if users > 1 {
            vec![Report::error(JsonPath::root().field("passwd").field("users"), "more than one user")]
        } else {
            Vec::new()
        }
    }

    fn resolve_user(text: &str, check: Check<'_>) -> Result<Resolved, ResolveError> {
        resolve(&[], Some(&document("user.ign", text)), check)
    }

    fn core(resolved: &Resolved) -> &crate::config::latest::User {
        &resolved.config.passwd.as_ref().unwrap().users.as_ref().unwrap()[0]
    }

    fn keys(resolved: &Resolved) -> Vec<&str> {
        core(resolved).ssh_authorized_keys.iter().flatten().map(String::as_str).collect()
    }

    /// The config with one `ignition.config.merge` entry that only the network could fetch.
    fn with_network_merge(text: &str) -> String {
        let mut config: serde_json::Value = serde_json::from_str(text).unwrap();
        config["ignition"]["config"] = json!({"merge": [{"source": "https://example.com/never-fetched"}]});
        config.to_string()
    }

    #[test]
    fn merged_references_are_rendered_depth_first_in_list_order() {
        // Ignition 2.14: keys a, b, d, c and shell d.
        let d = keys_config(Some("d"), &["d"], &[]);
        let b = keys_config(Some("b"), &["b"], &[d]);
        let c = keys_config(None, &["c"], &[]);
        let resolved = resolve_user(&keys_config(Some("a"), &["a"], &[b, c]), &no_check).unwrap();
        assert_eq!(keys(&resolved), ["a", "b", "d", "c"]);
        assert_eq!(core(&resolved).shell.as_deref(), Some("d"));
        assert!(resolved.user_config_provided);
        assert!(resolved.reports.is_empty(), "{:?}", resolved.reports);
    }

    #[test]
    fn a_replace_stands_in_for_the_whole_config_and_its_own_references_are_followed() {
        // Ignition 2.14: keys r, rm and shell rm; the replaced config's merge list is never
        // fetched (here it would need the network, and fail).
        let replacement = keys_config(Some("r"), &["r"], &[keys_config(Some("rm"), &["rm"], &[])]);
        let mut top: serde_json::Value = serde_json::from_str(&with_network_merge(&keys_config(Some("a"), &["a"], &[]))).unwrap();
        top["ignition"]["config"]["replace"] = json!({"source": data_url(&replacement)});
        let resolved = resolve_user(&top.to_string(), &no_check).unwrap();
        assert_eq!(keys(&resolved), ["r", "rm"]);
        assert_eq!(core(&resolved).shell.as_deref(), Some("rm"));
    }

    #[test]
    fn a_replace_without_a_source_is_not_followed() {
        let mut top: serde_json::Value = serde_json::from_str(&keys_config(None, &["a"], &[keys_config(None, &["b"], &[])])).unwrap();
        top["ignition"]["config"]["replace"] = json!({"compression": "gzip"});
        assert_eq!(keys(&resolve_user(&top.to_string(), &no_check).unwrap()), ["a", "b"]);
    }

    fn nested(levels: usize) -> String {
        (0..levels).fold(keys_config(None, &["deepest"], &[]), |inner, _| keys_config(None, &[], &[inner]))
    }

    #[test]
    fn references_nest_at_most_ten_deep() {
        assert_eq!(keys(&resolve_user(&nested(MAX_REFERENCE_DEPTH), &no_check).unwrap()), ["deepest"]);
        let error = resolve_user(&nested(MAX_REFERENCE_DEPTH + 1), &no_check).unwrap_err();
        assert_eq!(error.problem, Problem::TooDeep);
        assert_eq!(error.document.matches(" → $.ignition.config.merge[0]").count(), MAX_REFERENCE_DEPTH + 1);
        assert!(error.to_string().contains("more than 10 deep"), "{error}");
    }

    #[test]
    fn one_resolution_fetches_at_most_sixty_four_referenced_configs() {
        let child = keys_config(None, &["k"], &[]);
        let within = keys_config(None, &[], &vec![child.clone(); MAX_REFERENCED_CONFIGS]);
        assert_eq!(keys(&resolve_user(&within, &no_check).unwrap()), ["k"]);
        let beyond = keys_config(None, &[], &vec![child; MAX_REFERENCED_CONFIGS + 1]);
        let error = resolve_user(&beyond, &no_check).unwrap_err();
        assert_eq!(error.problem, Problem::TooManyReferencedConfigs);
        assert_eq!(error.document, format!("user.ign → $.ignition.config.merge[{MAX_REFERENCED_CONFIGS}]"));
    }

    #[test]
    fn the_bytes_of_all_documents_together_are_capped() {
        let child = keys_config(None, &["k"], &[]);
        let user = keys_config(None, &[], std::slice::from_ref(&child));
        let base = keys_config(None, &["base"], &[]);
        let exactly = Limits { total_bytes: base.len() + user.len() + child.len(), ..LIMITS };
        let resolve_limited = |limits: &Limits| resolve_within(limits, &[&[document("base", &base)]], Some(&document("user.ign", &user)), &no_check);
        assert!(resolve_limited(&exactly).is_ok());
        let one_less = Limits { total_bytes: exactly.total_bytes - 1, ..LIMITS };
        let error = resolve_limited(&one_less).unwrap_err();
        assert_eq!((error.problem, error.document.as_str()), (Problem::TooManyBytes, "user.ign → $.ignition.config.merge[0]"));
    }

    #[test]
    fn a_compressed_child_stops_unpacking_at_one_configs_limit() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &vec![b' '; MAX_CONFIG_BYTES + 1]).unwrap();
        let bomb = format!("data:;base64,{}", base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap()));
        let user = json!({"ignition": {"version": "3.6.0", "config": {"merge": [{"source": bomb, "compression": "gzip"}]}}}).to_string();
        let error = resolve_user(&user, &no_check).unwrap_err();
        assert_eq!(error.problem, Problem::Parse(ParseError::TooLarge { bytes: MAX_CONFIG_BYTES + 1 }));
        let small_total = Limits { total_bytes: user.len() + 1000, ..LIMITS };
        let error = resolve_within(&small_total, &[], Some(&document("user.ign", &user)), &no_check).unwrap_err();
        assert_eq!(error.problem, Problem::TooManyBytes, "the total's remaining room binds first");
    }

    fn with_hash(child: &str, hashed: &str) -> String {
        let hash = format!("sha512-{}", crate::resource::encode_hex(&Sha512::digest(hashed)));
        json!({"ignition": {"version": "3.6.0", "config": {"merge": [{"source": data_url(child), "verification": {"hash": hash}}]}}}).to_string()
    }

    #[test]
    fn a_referenced_config_must_match_its_verification_hash() {
        let child = keys_config(None, &["k"], &[]);
        assert_eq!(keys(&resolve_user(&with_hash(&child, &child), &no_check).unwrap()), ["k"]);
        let error = resolve_user(&with_hash(&child, "something else"), &no_check).unwrap_err();
        assert!(matches!(error.problem, Problem::Fetch(FetchError::HashMismatch { algorithm: "sha512", .. })), "{error:?}");
        assert_eq!(error.document, "user.ign → $.ignition.config.merge[0]");
    }

    #[test]
    fn a_referenced_config_with_errors_stops_resolution_with_its_reports() {
        let child = json!({"ignition": {"version": "3.6.0"}, "storage": {"files": [{"path": "/good"}, {"path": "/bad/x"}]}}).to_string();
        let error = resolve_user(&keys_config(None, &["a"], &[child]), &refuse_bad_files).unwrap_err();
        assert_eq!(error.problem, Problem::Invalid);
        let chain = "user.ign → $.ignition.config.merge[0]";
        assert_eq!(
            error.reports,
            [DocumentReport {
                document: chain.to_owned(),
                report: Report::error(JsonPath::root().field("storage").field("files").index(1).field("path"), "bad path")
            }]
        );
        assert_eq!(error.to_string(), format!("{chain}: the config is invalid\n  error at $.storage.files[1].path: bad path"));
        let good = json!({"ignition": {"version": "3.6.0"}, "storage": {"files": [{"path": "/good"}]}}).to_string();
        assert!(resolve_user(&keys_config(None, &["a"], &[good]), &refuse_bad_files).is_ok());
    }

    #[test]
    fn a_referenced_config_of_an_unsupported_version_is_refused() {
        let error = resolve_user(&keys_config(None, &["a"], &[r#"{"ignition": {"version": "2.2.0"}}"#.to_owned()]), &no_check).unwrap_err();
        assert_eq!(error.problem, Problem::Parse(ParseError::UnsupportedVersion { version: "2.2.0".to_owned() }));
        // Older 3.x versions are fine in a newer parent.
        let old = r#"{"ignition": {"version": "3.0.0"}, "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["old"]}]}}"#;
        assert_eq!(keys(&resolve_user(&keys_config(None, &["a"], &[old.to_owned()]), &no_check).unwrap()), ["a", "old"]);
    }

    #[test]
    fn a_network_reference_is_refused_with_a_clear_error() {
        let error = resolve_user(&with_network_merge(&keys_config(None, &[], &[])), &no_check).unwrap_err();
        assert_eq!(error.problem, Problem::Fetch(FetchError::NeedsNetwork { scheme: "https".to_owned() }));
        assert!(error.to_string().starts_with("user.ign → $.ignition.config.merge[0]: cannot fetch the referenced config: https sources need"));
    }

    #[test]
    fn an_empty_referenced_config_is_refused() {
        // Ignition 2.14 provisions an empty config instead, dropping the whole user config.
        let top = json!({"ignition": {"version": "3.6.0", "config": {"merge": [{"source": "data:,"}]}}}).to_string();
        assert_eq!(resolve_user(&top, &no_check).unwrap_err().problem, Problem::EmptyReferencedConfig);
    }

    #[test]
    fn the_user_config_is_merged_over_the_bases() {
        let base = document("base.d/10.ign", &keys_config(Some("/bin/base"), &["base"], &[]));
        let user = document("user.ign", &keys_config(Some("/bin/user"), &["user"], &[]));
        let resolved = resolve(&[&[base]], Some(&user), &no_check).unwrap();
        assert_eq!(keys(&resolved), ["base", "user"]);
        assert_eq!(core(&resolved).shell.as_deref(), Some("/bin/user"));
    }

    #[test]
    fn without_a_user_config_the_bases_are_the_config() {
        let bases = [document("a.ign", &keys_config(None, &["a"], &[])), document("b.ign", &keys_config(Some("sh"), &["b"], &[]))];
        let resolved = resolve(&[&bases], None, &no_check).unwrap();
        assert_eq!((keys(&resolved), resolved.user_config_provided), (vec!["a", "b"], false));
        // An empty user config is none at all, as in Ignition, and said so.
        let resolved = resolve(&[&bases], Some(&document("user.ign", "")), &no_check).unwrap();
        assert_eq!((keys(&resolved), resolved.user_config_provided), (vec!["a", "b"], false));
        assert_eq!(resolved.reports.len(), 1);
        assert!(resolved.reports[0].to_string().starts_with("user.ign: warning at $: the user config is empty"));
        let nothing = resolve(&[], None, &no_check).unwrap();
        assert_eq!(nothing.config, Latest::default());
    }

    #[test]
    fn each_base_group_is_merged_on_its_own_before_the_groups() {
        // In one chain the platform's link would drop base.d's file (and its owner) before the
        // platform's file came back; Ignition merges the platform group first, so the file
        // entries meet and the owner stays.
        let base_d = [document("base.d/a.ign", r#"{"ignition": {"version": "3.6.0"}, "storage": {"files": [{"path": "/a", "user": {"id": 5}}]}}"#)];
        let platform = [
            document("base.platform.d/qemu/1.ign", r#"{"ignition": {"version": "3.6.0"}, "storage": {"links": [{"path": "/a", "target": "/x"}]}}"#),
            document("base.platform.d/qemu/2.ign", r#"{"ignition": {"version": "3.6.0"}, "storage": {"files": [{"path": "/a", "mode": 384}]}}"#),
        ];
        let resolved = resolve(&[&base_d, &platform], None, &no_check).unwrap();
        let storage = resolved.config.storage.unwrap();
        assert_eq!(storage.links, None);
        let files = storage.files.unwrap();
        assert_eq!((files.len(), files[0].mode, files[0].user.as_ref().and_then(|user| user.id)), (1, Some(384), Some(5)));
    }

    #[test]
    fn a_base_configs_references_are_kept_but_not_followed() {
        let base = document("base.d/10.ign", &with_network_merge(&keys_config(None, &["base"], &[])));
        let resolved = resolve(&[&[base]], None, &no_check).unwrap();
        assert_eq!(keys(&resolved), ["base"]);
        assert_eq!(resolved.config.ignition.config.unwrap().merge.unwrap().len(), 1);
        assert_eq!(resolved.reports.len(), 1);
        assert_eq!(resolved.reports[0].report.path.as_str(), "$.ignition.config");
        let plain = document("base.d/20.ign", &keys_config(None, &["base"], &[]));
        assert!(resolve(&[&[plain]], None, &no_check).unwrap().reports.is_empty());
    }

    #[test]
    fn a_base_config_with_errors_stops_resolution_keeping_earlier_warnings() {
        let first = document("base.d/10.ign", r#"{"ignition": {"version": "3.6.0"}, "colour": "red"}"#);
        let second = document("base.d/20.ign", r#"{"ignition": {"version": "3.6.0"}, "storage": {"files": [{"path": "/bad"}]}}"#);
        let user = document("user.ign", &keys_config(None, &["a"], &[]));
        let error = resolve(&[&[first.clone(), second]], Some(&user), &refuse_bad_files).unwrap_err();
        assert_eq!((error.problem, error.document.as_str()), (Problem::Invalid, "base.d/20.ign"));
        let reports: Vec<String> = error.reports.iter().map(ToString::to_string).collect();
        assert_eq!(reports, ["base.d/10.ign: warning at $.colour: unused key", "base.d/20.ign: error at $.storage.files[0].path: bad path"]);
        assert!(resolve(&[&[first]], Some(&user), &refuse_bad_files).is_ok());
    }

    #[test]
    fn the_rendered_user_config_is_checked_as_a_whole() {
        let child = json!({"ignition": {"version": "3.6.0"}, "passwd": {"users": [{"name": "other"}]}}).to_string();
        let error = resolve_user(&keys_config(None, &[], &[child]), &one_user_at_most).unwrap_err();
        assert_eq!((error.problem, error.document.as_str()), (Problem::Invalid, "user.ign with its referenced configs"));
        assert!(resolve_user(&keys_config(None, &[], &[]), &one_user_at_most).is_ok());
    }

    #[test]
    fn the_bases_merged_with_the_user_config_are_checked_as_a_whole() {
        let base = document("base.ign", r#"{"ignition": {"version": "3.6.0"}, "passwd": {"users": [{"name": "other"}]}}"#);
        let user = document("user.ign", &keys_config(None, &[], &[]));
        let error = resolve(&[std::slice::from_ref(&base)], Some(&user), &one_user_at_most).unwrap_err();
        assert_eq!((error.problem, error.document.as_str()), (Problem::Invalid, "the base configs merged with the user config"));
        assert!(resolve(&[&[base]], None, &one_user_at_most).is_ok());
    }

    #[test]
    fn warnings_are_kept_tagged_with_their_document() {
        let child = r#"{"ignition": {"version": "3.6.0"}, "colour": "red"}"#.to_owned();
        let resolved = resolve_user(&keys_config(None, &["a"], &[child]), &no_check).unwrap();
        let reports: Vec<String> = resolved.reports.iter().map(ToString::to_string).collect();
        assert_eq!(reports, ["user.ign → $.ignition.config.merge[0]: warning at $.colour: unused key"]);
    }

    #[test]
    fn render_prints_set_fields_only_in_a_stable_order_and_reads_back() {
        let resolved = resolve_user(&keys_config(Some("/bin/sh"), &["k"], &[keys_config(None, &["c"], &[])]), &no_check).unwrap();
        let rendered = render(&resolved.config).unwrap();
        assert!(!rendered.contains("null"), "{rendered}");
        assert!(rendered.contains("\n  \"passwd\": {"), "{rendered}");
        assert_eq!(parse(rendered.as_bytes()).unwrap().config, resolved.config);
        assert_eq!(render(&resolved.config).unwrap(), rendered);
        assert_eq!(render(&Latest::default()).unwrap(), "{\n  \"ignition\": {\n    \"version\": \"3.6.0\"\n  }\n}");
    }
}
