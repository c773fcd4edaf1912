//! The `ignition` section: configs to merge or replace with, TLS certificate authorities,
//! proxies and timeouts. (The version is the parser's business.)

use super::resource::{self, Role};
use super::url;
use crate::config::latest::{Ignition, Proxy, Resource};
use crate::config::SpecVersion;
use crate::report::{JsonPath, Report};

/// Every rule about `ignition`.
pub(super) fn validate_ignition(ignition: &Ignition, at: &JsonPath, version: SpecVersion) -> Vec<Report> {
    let mut reports = Vec::new();
    if let Some(config) = &ignition.config {
        let merge = config.merge.as_deref().unwrap_or_default();
        reports.extend(required_resources(merge, &at.field("config").field("merge"), Role::Config, version));
        if let Some(replace) = &config.replace {
            reports.extend(resource::validate_resource(replace, &at.field("config").field("replace"), Role::Config, version));
        }
    }
    if let Some(proxy) = &ignition.proxy {
        reports.extend(validate_proxy(proxy, &at.field("proxy")));
    }
    let authorities = ignition.security.as_ref().and_then(|security| security.tls.as_ref()).and_then(|tls| tls.certificate_authorities.as_deref());
    let authorities_at = at.field("security").field("tls").field("certificateAuthorities");
    reports.extend(required_resources(authorities.unwrap_or_default(), &authorities_at, Role::CertificateAuthority, version));
    // Timeouts have no rules: Ignition takes any number, negative ones included.
    reports
}

/// Merged configs and CA certificates: each needs a source, and none may repeat one.
fn required_resources(resources: &[Resource], at: &JsonPath, role: Role, version: SpecVersion) -> Vec<Report> {
    let mut reports = Vec::new();
    for (index, entry) in resources.iter().enumerate() {
        reports.extend(resource::source_is_required(entry, &at.index(index), version));
        reports.extend(resource::validate_resource(entry, &at.index(index), role, version));
    }
    reports.extend(super::repeated_keys(resources, source_of, at, |_| "duplicate entry: another entry in this list has the same source".to_owned()));
    reports
}

fn source_of(resource: &Resource) -> &str {
    resource.source.as_deref().unwrap_or("")
}

/// InvalidUrl, InvalidProxy, InsecureProxy (a warning), and no repeats in noProxy.
fn validate_proxy(proxy: &Proxy, at: &JsonPath) -> Vec<Report> {
    let mut reports = Vec::new();
    reports.extend(proxy_url_is_http(proxy.http_proxy.as_deref(), &at.field("httpProxy"), true));
    reports.extend(proxy_url_is_http(proxy.https_proxy.as_deref(), &at.field("httpsProxy"), false));
    reports.extend(super::repeated_strings(proxy.no_proxy.as_deref().unwrap_or_default(), &at.field("noProxy"), "noProxy entry", true));
    reports
}

/// A proxy is an http or https URL (even an empty one is checked); a plain-HTTP proxy for
/// HTTPS traffic works but is a warning.
pub(super) fn proxy_url_is_http(proxy: Option<&str>, at: &JsonPath, plain_http_ok: bool) -> Option<Report> {
    let parsed = match url::parse(proxy?) {
        Ok(parsed) => parsed,
        Err(reason) => return Some(Report::error(at.clone(), format!("the proxy is not a valid URL: {reason}"))),
    };
    match parsed.scheme.as_str() {
        "https" => None,
        "http" if plain_http_ok => None,
        "http" => Some(Report::warning(at.clone(), "a plain HTTP proxy for HTTPS requests exposes which hosts are contacted")),
        _ => Some(Report::error(at.clone(), "a proxy must be an http or https URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::latest::{IgnitionConfig, Security, SecurityTls};
    use crate::report::Level;

    const NEWEST: SpecVersion = SpecVersion::NEWEST;

    fn source(source: Option<&str>) -> Resource {
        Resource { source: source.map(str::to_owned), ..Default::default() }
    }

    fn findings(ignition: &Ignition, version: SpecVersion) -> Vec<String> {
        validate_ignition(ignition, &JsonPath::root(), version).iter().map(|report| report.path.to_string()).collect()
    }

    #[test]
    fn proxies_are_http_urls() {
        let at = JsonPath::root();
        assert_eq!(proxy_url_is_http(None, &at, true), None);
        assert_eq!(proxy_url_is_http(Some("http://proxy:3128"), &at, true), None);
        assert_eq!(proxy_url_is_http(Some("https://proxy"), &at, false), None);
        assert_eq!(proxy_url_is_http(Some("http://proxy"), &at, false).map(|report| report.level), Some(Level::Warning));
        assert_eq!(proxy_url_is_http(Some(""), &at, true).map(|report| report.level), Some(Level::Error));
        assert!(proxy_url_is_http(Some("socks5://proxy"), &at, true).is_some());
        assert!(proxy_url_is_http(Some("http://proxy:port"), &at, true).unwrap().message.contains("not a valid URL"));
    }

    #[test]
    fn merged_configs_and_authorities_need_distinct_sources() {
        let ignition = Ignition {
            config: Some(IgnitionConfig { merge: Some(vec![source(None), source(None), source(Some("tftp://h/c"))]), replace: Some(source(None)) }),
            security: Some(Security { tls: Some(SecurityTls { certificate_authorities: Some(vec![source(Some("ftp://ca"))]) }) }),
            ..Default::default()
        };
        assert_eq!(
            findings(&ignition, NEWEST),
            [
                "$.config.merge[0]",
                "$.config.merge[1]",
                "$.config.merge[1]",
                "$.security.tls.certificateAuthorities[0]",
                "$.security.tls.certificateAuthorities[0].source"
            ]
        );
        // Spec 3.0 required no source for a merge, and checked a CA's at its source only.
        assert_eq!(findings(&ignition, SpecVersion { minor: 0 }), ["$.config.merge[1]", "$.security.tls.certificateAuthorities[0].source"]);
    }

    #[test]
    fn no_proxy_entries_are_not_repeated() {
        let ignition =
            Ignition { proxy: Some(Proxy { no_proxy: Some(vec!["a".to_owned(), "a".to_owned()]), ..Default::default() }), ..Default::default() };
        assert_eq!(findings(&ignition, NEWEST), ["$.proxy.noProxy[1]"]);
        assert!(findings(&Ignition::default(), NEWEST).is_empty());
    }
}
