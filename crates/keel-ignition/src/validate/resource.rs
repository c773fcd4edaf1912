//! Resources (file contents and appends, merged and replacing configs, CA certificates, LUKS key
//! files): compression, verification hashes, source URLs and HTTP headers.

use super::url;
use crate::config::latest::Resource;
use crate::config::SpecVersion;
use crate::report::{JsonPath, Report};

/// Where a resource sits decides which rules spec 3.0 applied to it: 3.0 had three separate
/// types, 3.1 made them one `Resource` with one set of rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    FileContents,
    /// `ignition.config.merge` or `.replace`.
    Config,
    CertificateAuthority,
    LuksKeyFile,
}

/// Every rule for one resource.
pub(super) fn validate_resource(resource: &Resource, at: &JsonPath, role: Role, version: SpecVersion) -> Vec<Report> {
    let source = resource.source.as_deref();
    let mut reports = Vec::new();
    reports.extend(compression_is_known(resource.compression.as_deref(), &at.field("compression")));
    // Spec 3.0's config and CA references did not ask for a source behind a hash.
    if version.at_least(1) || role == Role::FileContents {
        reports.extend(verification_has_source(resource, &at.field("verification").field("hash")));
    }
    if let Some(hash) = resource.verification.as_ref().and_then(|verification| verification.hash.as_deref()) {
        reports.extend(hash_is_well_formed(hash, &at.field("verification").field("hash"), version));
    }
    if role == Role::CertificateAuthority && !version.at_least(1) {
        // 3.0's CA reference checked its (required) source even when empty.
        reports.extend(source_is_fetchable(source.unwrap_or(""), &at.field("source"), version));
    } else if let Some(source) = source.filter(|source| !source.is_empty()) {
        reports.extend(source_is_fetchable(source, &at.field("source"), version));
    }
    let headers = resource.http_headers.as_deref().unwrap_or_default();
    reports.extend(headers_need_http_source(headers.len(), source, &at.field("httpHeaders")));
    for (index, header) in headers.iter().enumerate() {
        let at = at.field("httpHeaders").index(index);
        reports.extend(header_has_name(&header.name, &at.field("name")));
        reports.extend(header_value_not_empty(header.value.as_deref(), &at.field("value")));
    }
    reports.extend(super::repeated_keys(
        headers,
        |header| &header.name,
        &at.field("httpHeaders"),
        |name| format!("duplicate HTTP header {name:?}: the same header name appears earlier"),
    ));
    reports
}

/// SourceRequired (with InvalidUrl and the scheme rules): a merged config or a CA certificate
/// must come from somewhere. Spec 3.1 added the rule, reported at the entry itself.
pub(super) fn source_is_required(resource: &Resource, at: &JsonPath, version: SpecVersion) -> Option<Report> {
    if !version.at_least(1) {
        return None;
    }
    match resource.source.as_deref().filter(|source| !source.is_empty()) {
        None => Some(Report::error(at.clone(), "a source is required")),
        Some(source) => source_is_fetchable(source, at, version),
    }
}

/// CompressionInvalid: Ignition decompresses gzip only.
pub(super) fn compression_is_known(compression: Option<&str>, at: &JsonPath) -> Option<Report> {
    match compression {
        None | Some("" | "gzip") => None,
        Some(other) => Some(Report::error(at.clone(), format!("unknown compression {other:?}: use \"gzip\", or leave it out"))),
    }
}

/// VerificationAndNilSource: a hash with nothing to verify. An empty source still counts as
/// one, as it does for Ignition.
pub(super) fn verification_has_source(resource: &Resource, at: &JsonPath) -> Option<Report> {
    let has_hash = resource.verification.as_ref().is_some_and(|verification| verification.hash.is_some());
    (has_hash && resource.source.is_none()).then(|| Report::error(at.clone(), "a verification hash needs a source to verify"))
}

/// HashMalformed, HashUnrecognized, HashWrongSize: `TYPE-HEX` with a type the spec knows (3.0
/// knew only sha512) and as many characters as the digest has hex digits. Ignition checks the
/// length only, so neither does keel check the digits here (fetching does).
pub(super) fn hash_is_well_formed(hash: &str, at: &JsonPath, version: SpecVersion) -> Option<Report> {
    let Some((function, digest)) = hash.split_once('-') else {
        return Some(Report::error(at.clone(), format!("hash {hash:?} is not of the form sha512-HEX")));
    };
    let hex_length = match function {
        "sha512" => 128,
        "sha256" if version.at_least(1) => 64,
        _ => {
            let known = if version.at_least(1) { "sha512 and sha256" } else { "sha512 (sha256 arrived in spec 3.1.0)" };
            return Some(Report::error(at.clone(), format!("unknown hash function {function:?}: spec {version} knows {known}")));
        }
    };
    (digest.len() != hex_length)
        .then(|| Report::error(at.clone(), format!("a {function} hash has {hex_length} hex digits, this one has {}", digest.len())))
}

/// InvalidUrl, InvalidScheme and the scheme-specific rules (see [`url::source_problem`]).
pub(super) fn source_is_fetchable(source: &str, at: &JsonPath, version: SpecVersion) -> Option<Report> {
    url::source_problem(source, version).map(|problem| Report::error(at.clone(), problem))
}

/// InvalidUrl / UnsupportedSchemeForHTTPHeaders: headers are sent only over HTTP(S).
pub(super) fn headers_need_http_source(header_count: usize, source: Option<&str>, at: &JsonPath) -> Option<Report> {
    if header_count == 0 {
        return None;
    }
    let Some(source) = source.filter(|source| !source.is_empty()) else {
        return Some(Report::error(at.clone(), "HTTP headers are given but the source is missing"));
    };
    match url::parse(source) {
        Err(reason) => Some(Report::error(at.clone(), format!("HTTP headers are given but the source is not a valid URL: {reason}"))),
        Ok(parsed) if parsed.scheme == "http" || parsed.scheme == "https" => None,
        Ok(parsed) => Some(Report::error(at.clone(), format!("HTTP headers need an http or https source, not scheme {:?}", parsed.scheme))),
    }
}

/// EmptyHTTPHeaderName.
pub(super) fn header_has_name(name: &str, at: &JsonPath) -> Option<Report> {
    name.is_empty().then(|| Report::error(at.clone(), "an HTTP header needs a name"))
}

/// InvalidHTTPHeader: a header may leave its value out, but not give an empty one. The value
/// may be a credential, so it is never shown.
pub(super) fn header_value_not_empty(value: Option<&str>, at: &JsonPath) -> Option<Report> {
    (value == Some("")).then(|| Report::error(at.clone(), "an HTTP header's value is empty: give a value or leave it out"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::latest::{HttpHeadersItem, Verification};
    use crate::report::Level;

    const NEWEST: SpecVersion = SpecVersion::NEWEST;
    const V3_0: SpecVersion = SpecVersion { minor: 0 };

    fn at() -> JsonPath {
        JsonPath::root().field("r")
    }

    fn resource(source: Option<&str>, hash: Option<&str>) -> Resource {
        Resource {
            source: source.map(str::to_owned),
            verification: hash.map(|hash| Verification { hash: Some(hash.to_owned()) }),
            ..Default::default()
        }
    }

    fn paths(reports: &[Report]) -> Vec<&str> {
        reports.iter().map(|report| report.path.as_str()).collect()
    }

    #[test]
    fn compression_is_gzip_or_nothing() {
        for compression in [None, Some(""), Some("gzip")] {
            assert_eq!(compression_is_known(compression, &at()), None);
        }
        assert!(compression_is_known(Some("xz"), &at()).unwrap().message.contains("\"xz\""));
        assert!(compression_is_known(Some("GZIP"), &at()).is_some());
    }

    #[test]
    fn a_hash_needs_a_source_even_an_empty_one() {
        assert!(verification_has_source(&resource(None, Some("sha512-0")), &at()).is_some());
        assert_eq!(verification_has_source(&resource(Some(""), Some("sha512-0")), &at()), None);
        assert_eq!(verification_has_source(&resource(None, None), &at()), None);
    }

    #[test]
    fn hashes_are_checked_for_function_and_length() {
        let sha512 = format!("sha512-{}", "a".repeat(128));
        let sha256 = format!("sha256-{}", "b".repeat(64));
        assert_eq!(hash_is_well_formed(&sha512, &at(), NEWEST), None);
        assert_eq!(hash_is_well_formed(&sha256, &at(), NEWEST), None);
        // Ignition counts characters; it does not look at them.
        assert_eq!(hash_is_well_formed(&format!("sha256-{}", "z".repeat(64)), &at(), NEWEST), None);
        assert_eq!(hash_is_well_formed(&sha512, &at(), V3_0), None);
        assert!(hash_is_well_formed(&sha256, &at(), V3_0).unwrap().message.contains("unknown hash function"));
        assert!(hash_is_well_formed("sha512", &at(), NEWEST).unwrap().message.contains("form"));
        assert!(hash_is_well_formed("md5-00", &at(), NEWEST).unwrap().message.contains("unknown"));
        assert!(hash_is_well_formed("SHA512-00", &at(), NEWEST).is_some());
        assert!(hash_is_well_formed("sha256-abc", &at(), NEWEST).unwrap().message.contains("64 hex digits"));
        assert!(hash_is_well_formed(&format!("{sha256}0"), &at(), NEWEST).is_some());
    }

    #[test]
    fn headers_need_an_http_source() {
        assert_eq!(headers_need_http_source(0, Some("data:,x"), &at()), None);
        assert_eq!(headers_need_http_source(1, Some("https://h/"), &at()), None);
        assert_eq!(headers_need_http_source(1, Some("HTTP://h/"), &at()), None);
        assert!(headers_need_http_source(1, None, &at()).is_some());
        assert!(headers_need_http_source(1, Some(""), &at()).is_some());
        assert!(headers_need_http_source(1, Some("s3://b/k"), &at()).unwrap().message.contains("\"s3\""));
        assert!(headers_need_http_source(1, Some("http://h/%zz"), &at()).is_some());
    }

    #[test]
    fn header_names_and_values_may_not_be_empty() {
        assert!(header_has_name("", &at()).is_some());
        assert_eq!(header_has_name("Authorization", &at()), None);
        assert!(header_value_not_empty(Some(""), &at()).is_some());
        assert_eq!(header_value_not_empty(None, &at()), None);
        assert_eq!(header_value_not_empty(Some("Bearer x"), &at()), None);
    }

    #[test]
    fn header_values_never_reach_a_message() {
        let mut resource = resource(Some("ftp://h/"), None);
        resource.http_headers = Some(vec![
            HttpHeadersItem { name: "Authorization".to_owned(), value: Some("secret-token".to_owned()) },
            HttpHeadersItem { name: "Authorization".to_owned(), value: Some("secret-token".to_owned()) },
        ]);
        let reports = validate_resource(&resource, &at(), Role::FileContents, NEWEST);
        assert_eq!(paths(&reports), ["$.r.source", "$.r.httpHeaders", "$.r.httpHeaders[1]"]);
        assert!(reports.iter().all(|report| !report.message.contains("secret-token")));
    }

    #[test]
    fn a_data_url_source_is_never_echoed() {
        let reports = validate_resource(&resource(Some("data:;base64,c2VjcmV0!"), None), &at(), Role::FileContents, NEWEST);
        assert_eq!(paths(&reports), ["$.r.source"]);
        assert!(!reports[0].message.contains("c2VjcmV0"), "{}", reports[0].message);
    }

    #[test]
    fn spec_3_0_config_and_ca_references_had_their_own_rules() {
        // No source behind a hash was fine for a 3.0 config reference, not for 3.0 file contents.
        let hashed = resource(None, Some(&format!("sha512-{}", "a".repeat(128))));
        assert!(validate_resource(&hashed, &at(), Role::Config, V3_0).is_empty());
        assert_eq!(paths(&validate_resource(&hashed, &at(), Role::FileContents, V3_0)), ["$.r.verification.hash"]);
        assert_eq!(paths(&validate_resource(&hashed, &at(), Role::Config, NEWEST)), ["$.r.verification.hash"]);
        // A 3.0 CA's empty source is an invalid URL; from 3.1 it is SourceRequired, at the entry.
        assert_eq!(paths(&validate_resource(&resource(Some(""), None), &at(), Role::CertificateAuthority, V3_0)), ["$.r.source"]);
        assert!(validate_resource(&resource(Some(""), None), &at(), Role::CertificateAuthority, NEWEST).is_empty());
        assert_eq!(source_is_required(&resource(Some(""), None), &at(), V3_0), None);
        assert!(source_is_required(&resource(Some(""), None), &at(), NEWEST).unwrap().message.contains("required"));
        assert!(source_is_required(&resource(None, None), &at(), NEWEST).is_some());
        assert!(source_is_required(&resource(Some("ftp://x"), None), &at(), NEWEST).is_some());
        assert_eq!(source_is_required(&resource(Some("https://x"), None), &at(), NEWEST), None);
    }

    #[test]
    fn every_resource_finding_is_an_error() {
        let mut bad = resource(None, Some("nope"));
        bad.compression = Some("zstd".to_owned());
        let reports = validate_resource(&bad, &at(), Role::FileContents, NEWEST);
        assert_eq!(paths(&reports), ["$.r.compression", "$.r.verification.hash", "$.r.verification.hash"]);
        assert!(reports.iter().all(|report| report.level == Level::Error));
    }
}
