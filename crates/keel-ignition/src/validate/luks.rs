//! LUKS volumes: names, labels, devices, key files, and how they are unlocked (Clevis with TPM2,
//! Tang or a custom pin; IBM CEX).

use super::gopath;
use super::resource::{self, Role};
use super::url;
use crate::config::latest::{Clevis, ClevisCustom, Luks, Tang};
use crate::config::SpecVersion;
use crate::report::{JsonPath, Report};

/// Every rule about `storage.luks`.
pub(super) fn validate_luks_volumes(volumes: &[Luks], at: &JsonPath, version: SpecVersion) -> Vec<Report> {
    let mut reports = Vec::new();
    for (index, luks) in volumes.iter().enumerate() {
        reports.extend(validate_luks(luks, &at.index(index), version));
    }
    reports.extend(super::repeated_keys(
        volumes,
        |luks| &luks.name,
        at,
        |name| format!("duplicate LUKS volume: another volume in this config is named {name:?}"),
    ));
    reports
}

fn validate_luks(luks: &Luks, at: &JsonPath, version: SpecVersion) -> Vec<Report> {
    let mut reports = Vec::new();
    reports.extend(name_has_no_slash(&luks.name, &at.field("name")));
    reports.extend(label_fits(luks.label.as_deref(), &at.field("label")));
    match luks.device.as_deref().filter(|device| !device.is_empty()) {
        None => reports.push(Report::error(at.field("device"), "a LUKS volume needs a device")),
        Some(device) => reports.extend(gopath::absolute_and_clean(device, &at.field("device"))),
    }
    if let Some(clevis) = &luks.clevis {
        reports.extend(custom_pin_alone(clevis, &at.field("clevis"), version));
        if let Some(custom) = &clevis.custom {
            reports.extend(custom_pin_is_complete(custom, &at.field("clevis").field("custom"), version));
        }
        let servers = clevis.tang.as_deref().unwrap_or_default();
        for (index, tang) in servers.iter().enumerate() {
            reports.extend(validate_tang(tang, &at.field("clevis").field("tang").index(index), version));
        }
        reports.extend(super::repeated_keys(servers, tang_url, &at.field("clevis").field("tang"), |_| {
            "duplicate Tang server: another entry has the same URL".to_owned()
        }));
    }
    let key_file_source = luks.key_file.as_ref().and_then(|key_file| key_file.source.as_deref()).filter(|source| !source.is_empty());
    if let Some(key_file) = &luks.key_file {
        reports.extend(resource::validate_resource(key_file, &at.field("keyFile"), Role::LuksKeyFile, version));
        if key_file_source.is_some_and(|source| url::source_problem(source, version).is_some()) {
            reports.push(Report::error(at.field("keyFile"), "the key file's source is not valid (see its source)"));
        }
    }
    if version.at_least(5) {
        reports.extend(cex_alone(luks, key_file_source.is_some(), &at.field("cex")));
    }
    reports.extend(super::repeated_strings(luks.open_options.as_deref().unwrap_or_default(), &at.field("openOptions"), "open option", true));
    reports
}

fn tang_url(tang: &Tang) -> &str {
    tang.url.as_deref().unwrap_or("")
}

/// LuksNameContainsSlash: the name becomes `/dev/mapper/NAME`.
pub(super) fn name_has_no_slash(name: &str, at: &JsonPath) -> Option<Report> {
    name.contains('/').then(|| Report::error(at.clone(), format!("LUKS volume name {name:?} contains a slash")))
}

/// LuksLabelTooLong: LUKS2 stores 47 bytes and a terminator.
pub(super) fn label_fits(label: Option<&str>, at: &JsonPath) -> Option<Report> {
    let label = label?;
    (label.len() > 47).then(|| Report::error(at.clone(), format!("LUKS label {label:?} is {} bytes long; the limit is 47", label.len())))
}

/// CexWithClevis, CexWithKeyFile (spec 3.5 on): a CEX volume gets its key from the CEX card
/// alone.
pub(super) fn cex_alone(luks: &Luks, has_key_file: bool, at: &JsonPath) -> Vec<Report> {
    if luks.cex.as_ref().is_none_or(|cex| cex.enabled != Some(true)) {
        return Vec::new();
    }
    let mut reports = Vec::new();
    if luks.clevis.as_ref().is_some_and(clevis_is_present) {
        reports.push(Report::error(at.clone(), "CEX and Clevis cannot both unlock a volume: choose one"));
    }
    if has_key_file {
        reports.push(Report::error(at.clone(), "CEX volumes take no key file: CEX provides the key"));
    }
    reports
}

/// Whether Clevis would bind the volume at all (a custom pin, Tang servers, TPM2 or a threshold).
fn clevis_is_present(clevis: &Clevis) -> bool {
    let custom_pin = clevis.custom.as_ref().and_then(|custom| custom.pin.as_deref()).is_some_and(|pin| !pin.is_empty());
    custom_pin
        || !clevis.tang.as_deref().unwrap_or_default().is_empty()
        || clevis.tpm2 == Some(true)
        || clevis.threshold.is_some_and(|threshold| threshold != 0)
}

/// ClevisCustomWithOthers: a custom pin is the whole Clevis configuration. Spec 3.2 counted any
/// custom object; 3.3 on, only one with a pin.
pub(super) fn custom_pin_alone(clevis: &Clevis, at: &JsonPath, version: SpecVersion) -> Option<Report> {
    let others = !clevis.tang.as_deref().unwrap_or_default().is_empty()
        || clevis.tpm2 == Some(true)
        || clevis.threshold.is_some_and(|threshold| threshold != 0);
    let custom = match &clevis.custom {
        Some(custom) if version.at_least(3) => custom.pin.as_deref().is_some_and(|pin| !pin.is_empty()),
        Some(_) => true,
        None => false,
    };
    (custom && others).then(|| Report::error(at.clone(), "a custom Clevis pin cannot be combined with tpm2, tang or threshold"))
}

/// ClevisPinRequired, UnknownClevisPin, ClevisConfigRequired: a custom pin that is used at all
/// needs its pin and config. Until spec 3.6 the pin must be tpm2, tang or sss.
pub(super) fn custom_pin_is_complete(custom: &ClevisCustom, at: &JsonPath, version: SpecVersion) -> Vec<Report> {
    let pin = custom.pin.as_deref().unwrap_or("");
    let config = custom.config.as_deref().unwrap_or("");
    let used = !pin.is_empty() || !config.is_empty() || (version.at_least(3) && custom.needs_network == Some(true));
    if !used {
        return Vec::new();
    }
    let mut reports = Vec::new();
    if pin.is_empty() && version.at_least(3) {
        reports.push(Report::error(at.field("pin"), "a custom Clevis configuration needs a pin"));
    } else if !version.at_least(6) && !["tpm2", "tang", "sss"].contains(&pin) {
        reports.push(Report::error(at.field("pin"), format!("unknown Clevis pin {pin:?}: spec {version} knows tpm2, tang and sss")));
    }
    if config.is_empty() {
        reports.push(Report::error(at.field("config"), "a custom Clevis pin needs a config"));
    }
    reports
}

/// A Tang server: an http(s) URL (InvalidUrl, InvalidScheme), a thumbprint
/// (TangThumbprintRequired), and from spec 3.4 an advertisement that is JSON
/// (InvalidTangAdvertisement).
fn validate_tang(tang: &Tang, at: &JsonPath, version: SpecVersion) -> Vec<Report> {
    let mut reports = Vec::new();
    reports.extend(tang_url_is_http(tang_url(tang), &at.field("url")));
    if tang.thumbprint.as_deref().is_none_or(str::is_empty) {
        reports.push(Report::error(at.field("thumbprint"), "a Tang server needs the thumbprint of its signing key"));
    }
    if version.at_least(4) {
        reports.extend(advertisement_is_json(tang.advertisement.as_deref(), &at.field("advertisement")));
    }
    reports
}

pub(super) fn tang_url_is_http(tang_url: &str, at: &JsonPath) -> Option<Report> {
    match url::parse(tang_url) {
        Err(reason) => Some(Report::error(at.clone(), format!("the Tang URL is not a valid URL: {reason}"))),
        Ok(parsed) if parsed.scheme == "http" || parsed.scheme == "https" => None,
        Ok(_) => Some(Report::error(at.clone(), "a Tang URL must be http or https")),
    }
}

pub(super) fn advertisement_is_json(advertisement: Option<&str>, at: &JsonPath) -> Option<Report> {
    let advertisement = advertisement.filter(|advertisement| !advertisement.is_empty())?;
    serde_json::from_str::<serde_json::Value>(advertisement)
        .err()
        .map(|error| Report::error(at.clone(), format!("the Tang advertisement is not JSON: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::latest::{Cex, Resource};

    const NEWEST: SpecVersion = SpecVersion::NEWEST;

    fn at() -> JsonPath {
        JsonPath::root().field("luks")
    }

    fn custom(pin: Option<&str>, config: Option<&str>) -> ClevisCustom {
        ClevisCustom { pin: pin.map(str::to_owned), config: config.map(str::to_owned), needs_network: None }
    }

    fn paths(reports: &[Report]) -> Vec<String> {
        reports.iter().map(|report| report.path.to_string()).collect()
    }

    #[test]
    fn names_have_no_slash_and_labels_fit() {
        assert!(name_has_no_slash("a/b", &at()).is_some());
        assert_eq!(name_has_no_slash("root", &at()), None);
        assert_eq!(label_fits(Some(&"l".repeat(47)), &at()), None);
        assert!(label_fits(Some(&"l".repeat(48)), &at()).is_some());
        assert_eq!(label_fits(None, &at()), None);
    }

    #[test]
    fn a_custom_pin_stands_alone() {
        let with_tpm = |custom| Clevis { custom, tpm2: Some(true), ..Default::default() };
        assert!(custom_pin_alone(&with_tpm(Some(self::custom(Some("tpm2"), Some("{}")))), &at(), NEWEST).is_some());
        assert_eq!(custom_pin_alone(&with_tpm(Some(self::custom(None, None))), &at(), NEWEST), None);
        // Spec 3.2 counted the custom object itself.
        assert!(custom_pin_alone(&with_tpm(Some(self::custom(Some(""), Some("")))), &at(), SpecVersion { minor: 2 }).is_some());
        let threshold_zero = Clevis { custom: Some(self::custom(Some("sss"), Some("{}"))), threshold: Some(0), ..Default::default() };
        assert_eq!(custom_pin_alone(&threshold_zero, &at(), NEWEST), None);
    }

    #[test]
    fn a_used_custom_pin_is_complete() {
        assert!(custom_pin_is_complete(&custom(None, None), &at(), NEWEST).is_empty());
        assert!(custom_pin_is_complete(&custom(Some("tpm2"), Some("{}")), &at(), NEWEST).is_empty());
        let needs_network = ClevisCustom { needs_network: Some(true), ..custom(None, None) };
        assert_eq!(paths(&custom_pin_is_complete(&needs_network, &at(), NEWEST)), ["$.luks.pin", "$.luks.config"]);
        assert_eq!(paths(&custom_pin_is_complete(&custom(Some("tpm2"), None), &at(), NEWEST)), ["$.luks.config"]);
    }

    #[test]
    fn unknown_pins_are_errors_until_3_6() {
        let odd = custom(Some("yubikey"), Some("{}"));
        assert_eq!(paths(&custom_pin_is_complete(&odd, &at(), SpecVersion { minor: 5 })), ["$.luks.pin"]);
        assert!(custom_pin_is_complete(&odd, &at(), NEWEST).is_empty());
        // Spec 3.2 had no "pin required": an empty pin beside a config is an unknown pin.
        let no_pin = custom(Some(""), Some("{}"));
        assert!(custom_pin_is_complete(&no_pin, &at(), SpecVersion { minor: 2 })[0].message.contains("unknown"));
        assert!(custom_pin_is_complete(&no_pin, &at(), SpecVersion { minor: 3 })[0].message.contains("needs a pin"));
    }

    #[test]
    fn tang_servers_need_http_urls_thumbprints_and_json_advertisements() {
        assert_eq!(tang_url_is_http("https://tang.example", &at()), None);
        assert!(tang_url_is_http("", &at()).is_some());
        assert!(tang_url_is_http("ftp://tang", &at()).is_some());
        assert!(tang_url_is_http("http://tang/%zz", &at()).is_some());
        assert_eq!(advertisement_is_json(Some("{\"payload\": \"x\"}"), &at()), None);
        assert_eq!(advertisement_is_json(Some(""), &at()), None);
        assert!(advertisement_is_json(Some("{"), &at()).is_some());
        let tang = Tang { url: Some("http://t".to_owned()), thumbprint: None, advertisement: Some("nope".to_owned()) };
        assert_eq!(paths(&validate_tang(&tang, &at(), NEWEST)), ["$.luks.thumbprint", "$.luks.advertisement"]);
        assert_eq!(paths(&validate_tang(&tang, &at(), SpecVersion { minor: 3 })), ["$.luks.thumbprint"]);
    }

    #[test]
    fn cex_stands_alone_when_enabled() {
        let with_clevis =
            |enabled, clevis: Clevis| Luks { cex: Some(Cex { enabled: Some(enabled) }), clevis: Some(clevis), ..Luks::new("v".to_owned()) };
        assert_eq!(cex_alone(&with_clevis(true, Clevis { threshold: Some(1), ..Default::default() }), false, &at()).len(), 1);
        assert_eq!(cex_alone(&with_clevis(true, Clevis { threshold: Some(0), ..Default::default() }), false, &at()).len(), 0);
        assert_eq!(cex_alone(&with_clevis(true, Clevis::default()), true, &at()).len(), 1);
        assert_eq!(cex_alone(&with_clevis(false, Clevis { tpm2: Some(true), ..Default::default() }), true, &at()).len(), 0);
    }

    #[test]
    fn cex_excludes_clevis_and_key_files_from_3_5() {
        let luks = Luks {
            device: Some("/dev/sda".to_owned()),
            cex: Some(Cex { enabled: Some(true) }),
            clevis: Some(Clevis { tpm2: Some(true), ..Default::default() }),
            key_file: Some(Resource { source: Some("data:,k".to_owned()), ..Default::default() }),
            ..Luks::new("v".to_owned())
        };
        assert_eq!(paths(&validate_luks(&luks, &at(), NEWEST)), ["$.luks.cex", "$.luks.cex"]);
        assert!(validate_luks(&luks, &at(), SpecVersion { minor: 4 }).is_empty());
    }

    #[test]
    fn volumes_need_a_device_and_a_valid_key_file() {
        let luks = Luks { key_file: Some(Resource { source: Some("ftp://k".to_owned()), ..Default::default() }), ..Luks::new("a/b".to_owned()) };
        let reports = validate_luks_volumes(&[luks.clone(), luks], &at(), NEWEST);
        let expected = ["$.luks[0].name", "$.luks[0].device", "$.luks[0].keyFile.source", "$.luks[0].keyFile"];
        assert_eq!(paths(&reports).get(..4), Some(&expected.map(str::to_owned)[..]));
        assert_eq!(paths(&reports).last().map(String::as_str), Some("$.luks[1]"));
    }
}
