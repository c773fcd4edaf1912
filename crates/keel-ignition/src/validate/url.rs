//! Source URLs as Ignition judges them: parsed the way Go's `net/url` parses (what it refuses is
//! InvalidUrl), then by scheme: which schemes a spec version knows (InvalidScheme), S3 object
//! versions and ARNs, and `data:` URLs read as the `dataurl` library reads them.
//!
//! Messages never repeat the URL: a data URL is file contents, and others may carry credentials.

use crate::config::SpecVersion;

/// The parts of a parsed URL the rules look at.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ParsedUrl<'a> {
    /// Lower-cased, as Go stores it; empty for a relative reference.
    pub scheme: String,
    /// What follows `scheme:` when it does not start with a slash (`data:`, `arn:`), before any query.
    pub opaque: &'a str,
    pub raw_query: &'a str,
}

/// Go's `url.Parse`: Ok for everything it accepts, with the reason it refuses the rest.
pub(super) fn parse(raw: &str) -> Result<ParsedUrl<'_>, String> {
    let (before_fragment, fragment) = raw.split_once('#').unwrap_or((raw, ""));
    let parsed = parse_before_fragment(before_fragment)?;
    unescape(fragment, Component::Other)?;
    Ok(parsed)
}

fn parse_before_fragment(raw: &str) -> Result<ParsedUrl<'_>, String> {
    if raw.bytes().any(|byte| byte < 0x20 || byte == 0x7f) {
        return Err("it contains a control character".to_owned());
    }
    if raw == "*" {
        return Ok(ParsedUrl { scheme: String::new(), opaque: "", raw_query: "" });
    }
    let (scheme, rest) = split_scheme(raw)?;
    let scheme = scheme.to_ascii_lowercase();
    let (rest, raw_query) = match rest.strip_suffix('?') {
        Some(without_mark) if !without_mark.contains('?') => (without_mark, ""),
        _ => rest.split_once('?').unwrap_or((rest, "")),
    };
    if !rest.starts_with('/') {
        if !scheme.is_empty() {
            return Ok(ParsedUrl { scheme, opaque: rest, raw_query });
        }
        if rest.split('/').next().is_some_and(|first_segment| first_segment.contains(':')) {
            return Err("the first path segment of a relative URL contains a colon".to_owned());
        }
    }
    let mut path = rest;
    if let Some(after_slashes) = rest.strip_prefix("//").filter(|_| !scheme.is_empty() || !rest.starts_with("///")) {
        let (authority, after_authority) = match after_slashes.find('/') {
            Some(slash) => after_slashes.split_at(slash),
            None => (after_slashes, ""),
        };
        check_authority(authority)?;
        path = after_authority;
    }
    unescape(path, Component::Other)?;
    Ok(ParsedUrl { scheme, opaque: "", raw_query })
}

/// `scheme:rest` when `raw` starts with a valid scheme (`[A-Za-z][A-Za-z0-9+.-]*:`), otherwise
/// no scheme and all of `raw`; a leading colon is an error.
fn split_scheme(raw: &str) -> Result<(&str, &str), String> {
    for (index, byte) in raw.bytes().enumerate() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if index > 0 => {}
            b':' if index == 0 => return Err("it has no scheme before the colon".to_owned()),
            b':' => {
                let (scheme, colon_and_rest) = raw.split_at(index);
                return Ok((scheme, colon_and_rest.get(1..).unwrap_or("")));
            }
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

fn check_authority(authority: &str) -> Result<(), String> {
    let (userinfo, host) = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, at_and_host) = authority.split_at(at);
            (Some(userinfo), at_and_host.get(1..).unwrap_or(""))
        }
        None => (None, authority),
    };
    check_host(host)?;
    if let Some(userinfo) = userinfo {
        let allowed = |character: char| character.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(character);
        if !userinfo.chars().all(allowed) {
            return Err("the user information before @ has a character that must be escaped".to_owned());
        }
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        unescape(user, Component::Other)?;
        unescape(password, Component::Other)?;
    }
    Ok(())
}

fn check_host(host: &str) -> Result<(), String> {
    if host.starts_with('[') {
        let close = host.rfind(']').ok_or("the IPv6 host has no closing ]")?;
        let (literal, after_literal) = host.split_at(close);
        check_optional_port(after_literal.get(1..).unwrap_or(""))?;
        if let Some(zone) = literal.find("%25") {
            let (address, zone_id) = literal.split_at(zone);
            unescape(address, Component::Host)?;
            unescape(zone_id, Component::Zone)?;
            return unescape(after_literal, Component::Host);
        }
    } else if let Some(colon) = host.rfind(':') {
        check_optional_port(host.get(colon..).unwrap_or(""))?;
    }
    unescape(host, Component::Host)
}

fn check_optional_port(colon_port: &str) -> Result<(), String> {
    match colon_port.strip_prefix(':') {
        _ if colon_port.is_empty() => Ok(()),
        Some(port) if port.bytes().all(|byte| byte.is_ascii_digit()) => Ok(()),
        _ => Err(format!("the port {colon_port:?} after the host is not a number")),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Component {
    Host,
    /// An IPv6 zone identifier, after `%25`.
    Zone,
    /// Path, user information, fragment: only the escapes are checked.
    Other,
}

/// Hosts may hold letters, digits and these punctuation characters unescaped; nothing else.
fn allowed_in_host(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!$&'()*+,;=:[]<>\"-_.~".contains(&byte)
}

/// Go's unescaping checks: every `%` starts two hex digits; a host escapes only non-ASCII bytes
/// (and `%25`), a zone only bytes a host could hold; hosts and zones refuse other punctuation.
fn unescape(text: &str, component: Component) -> Result<(), String> {
    let bytes = text.as_bytes();
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let escape = text.get(index..index + 3).unwrap_or(text.get(index..).unwrap_or("%"));
            let high = bytes.get(index + 1).and_then(|digit| (*digit as char).to_digit(16));
            let low = bytes.get(index + 2).and_then(|digit| (*digit as char).to_digit(16));
            let (Some(high), Some(low)) = (high, low) else {
                return Err(format!("{escape:?} is not a valid %-escape"));
            };
            let decoded = (high * 16 + low) as u8;
            let refused = match component {
                Component::Host => high < 8 && escape != "%25",
                Component::Zone => escape != "%25" && decoded != b' ' && !allowed_in_host(decoded),
                Component::Other => false,
            };
            if refused {
                return Err(format!("{escape:?} may not be escaped in a host"));
            }
            index += 3;
        } else {
            if component != Component::Other && byte < 0x80 && !allowed_in_host(byte) {
                return Err(format!("the host contains the character {:?}", byte as char));
            }
            index += 1;
        }
    }
    Ok(())
}

/// Go's query parsing, for the one parameter Ignition reads: the first `versionId` value, when
/// the query names one. Pairs with a semicolon or a bad escape are skipped, as Go skips them.
fn version_id(raw_query: &str) -> Option<Vec<u8>> {
    raw_query.split('&').filter(|pair| !pair.is_empty() && !pair.contains(';')).find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = query_unescape(key)?;
        let value = query_unescape(value)?;
        (key == b"versionId").then_some(value)
    })
}

fn query_unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'%' => {
                let high = (*bytes.get(index + 1)? as char).to_digit(16)?;
                let low = (*bytes.get(index + 2)? as char).to_digit(16)?;
                decoded.push((high * 16 + low) as u8);
                index += 3;
            }
            b'+' => {
                decoded.push(b' ');
                index += 1;
            }
            other => {
                decoded.push(other);
                index += 1;
            }
        }
    }
    Some(decoded)
}

/// The schemes a spec version fetches from: gs arrived in 3.2, arn (S3 access points) in 3.4.
pub(super) fn known_schemes(version: SpecVersion) -> &'static [&'static str] {
    match version.minor {
        0 | 1 => &["http", "https", "tftp", "s3", "data"],
        2 | 3 => &["http", "https", "tftp", "s3", "gs", "data"],
        _ => &["http", "https", "tftp", "s3", "gs", "arn", "data"],
    }
}

/// InvalidUrl, InvalidScheme, InvalidS3ObjectVersionId, InvalidS3ARN and the data URL errors:
/// why `source` is not a URL Ignition could fetch, or None.
pub(super) fn source_problem(source: &str, version: SpecVersion) -> Option<String> {
    let parsed = match parse(source) {
        Ok(parsed) => parsed,
        Err(reason) => return Some(format!("the source is not a valid URL: {reason}")),
    };
    let schemes = known_schemes(version);
    if !schemes.contains(&parsed.scheme.as_str()) {
        let scheme = if parsed.scheme.is_empty() { "no scheme".to_owned() } else { format!("scheme {:?}", parsed.scheme) };
        return Some(format!("the source has {scheme}; spec {version} sources use {}", schemes.join(", ")));
    }
    match parsed.scheme.as_str() {
        "s3" => s3_version_problem(&parsed),
        "arn" => arn_problem(&parsed).or_else(|| s3_version_problem(&parsed)),
        "data" => data_url_problem(source).map(|reason| format!("the data URL is malformed: {reason}")),
        _ => None,
    }
}

fn s3_version_problem(parsed: &ParsedUrl) -> Option<String> {
    version_id(parsed.raw_query)
        .filter(Vec::is_empty)
        .map(|_| "the source's versionId is empty: give the S3 object version, or leave versionId out".to_owned())
}

/// An S3 ARN names the s3 service and an object: `arn:PARTITION:s3:REGION:ACCOUNT:BUCKET/KEY`,
/// or `...:accesspoint/NAME/KEY` through an access point.
fn arn_problem(parsed: &ParsedUrl) -> Option<String> {
    let arn = format!("arn:{}", parsed.opaque);
    let sections: Vec<&str> = arn.splitn(6, ':').collect();
    let invalid = |why: &str| Some(format!("the source is not an S3 object ARN: {why}"));
    let (Some(service), Some(resource)) = (sections.get(2), sections.get(5)) else {
        return invalid("an ARN has six colon-separated sections");
    };
    if *service != "s3" {
        return invalid(&format!("its service is {service:?}, not \"s3\""));
    }
    let slash_separated = arn.split('/').count();
    if resource.starts_with("accesspoint/") && slash_separated < 3 {
        return invalid("an access point ARN needs accesspoint/NAME/KEY");
    }
    if slash_separated < 2 {
        return invalid("it names a bucket but no object (BUCKET/KEY)");
    }
    None
}

fn is_token(character: char) -> bool {
    character.is_ascii() && !character.is_ascii_control() && character != ' ' && !"()<>@,;:\\\"/[]?=".contains(character)
}

fn is_url_character(character: char) -> bool {
    character.is_ascii() && !character.is_ascii_control() && !" <>#\"{}|\\^[]`".contains(character)
}

fn is_base64_character(character: char) -> bool {
    character.is_ascii_alphanumeric() || "+/=\n".contains(character)
}

/// A data URL read by the rules of the `dataurl` library Ignition uses:
/// `data:[type/subtype][;attr=value]*[;base64],data`, where the type is a known top-level type
/// or an `x-` token, values are tokens or quoted strings, and the data is URL characters with
/// valid %-escapes, or padded base64. Returns why the URL is refused.
pub(super) fn data_url_problem(url: &str) -> Option<String> {
    let Some(after_prefix) = url.strip_prefix("data:") else {
        return Some("it does not start with \"data:\"".to_owned());
    };
    let mut cursor = Cursor { text: after_prefix, position: 0 };
    let mut base64 = false;
    match cursor.peek() {
        None => return Some("there is no comma before the data".to_owned()),
        Some(';' | ',') => {}
        Some(first) if is_token(first) => {
            if let Err(reason) = media_type(&mut cursor) {
                return Some(reason);
            }
        }
        Some(_) => return Some("the media type starts with an invalid character".to_owned()),
    }
    while cursor.peek() == Some(';') {
        cursor.next();
        match parameter(&mut cursor) {
            Ok(Parameter::Base64) => base64 = true,
            Ok(Parameter::Attribute) => {}
            Err(reason) => return Some(reason),
        }
        if base64 {
            break;
        }
    }
    match cursor.next() {
        Some(',') => {}
        None => return Some("there is no comma before the data".to_owned()),
        Some(_) => return Some("a ; or , must follow the media type or parameter".to_owned()),
    }
    let data = cursor.rest();
    if base64 {
        if let Some(bad) = data.chars().find(|character| !is_base64_character(*character)) {
            return Some(format!("{bad:?} is not a base64 character"));
        }
        (!padded_base64(data)).then(|| "the base64 data is not padded base64".to_owned())
    } else {
        if let Some(bad) = data.chars().find(|character| !is_url_character(*character)) {
            return Some(format!("{bad:?} must be %-escaped in the data"));
        }
        percent_escapes_problem(data)
    }
}

struct Cursor<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        self.text.get(self.position..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let character = self.peek()?;
        self.position += character.len_utf8();
        Some(character)
    }

    /// Consumes token characters; returns them.
    fn token(&mut self) -> &'a str {
        let start = self.position;
        while self.peek().is_some_and(is_token) {
            self.next();
        }
        self.text.get(start..self.position).unwrap_or("")
    }
}

fn media_type(cursor: &mut Cursor) -> Result<(), String> {
    let top_level = cursor.token();
    let mut leading = top_level.chars();
    let starts_with_x = matches!(leading.next(), Some('x' | 'X'));
    let extension = starts_with_x && leading.next() == Some('-');
    // The library takes an `x` as the start of an `x-` extension type; any other type starting
    // with `x` ends in one error or another.
    if starts_with_x && !extension {
        return Err(format!("the media type {top_level:?} is not a known top-level type"));
    }
    match cursor.peek() {
        Some('/') => {}
        None => return Err("the media type has no slash".to_owned()),
        Some(_) => return Err("the media type contains an invalid character".to_owned()),
    }
    let known = ["text", "image", "audio", "video", "application", "message", "multipart"];
    if !extension && !known.iter().any(|known| top_level.starts_with(known)) {
        return Err(format!("the media type {top_level:?} is not a known top-level type"));
    }
    cursor.next();
    cursor.token();
    match cursor.peek() {
        Some(';' | ',') => Ok(()),
        None => Err("the media type is incomplete: no comma before the data".to_owned()),
        Some(_) => Err("the media subtype contains an invalid character".to_owned()),
    }
}

enum Parameter {
    Base64,
    Attribute,
}

fn parameter(cursor: &mut Cursor) -> Result<Parameter, String> {
    let unterminated = || "a parameter is unterminated".to_owned();
    match cursor.peek() {
        None | Some('=' | ',') => return Err(unterminated()),
        Some(first) if !is_token(first) => return Err("a parameter name contains an invalid character".to_owned()),
        Some(_) => {}
    }
    let name = cursor.token();
    match cursor.peek() {
        Some(',') if name == "base64" => return Ok(Parameter::Base64),
        Some(',') => return Err(format!("expected base64, got {name:?}")),
        Some('=') => {}
        None => return Err(unterminated()),
        Some(_) => return Err("a parameter name contains an invalid character".to_owned()),
    }
    cursor.next();
    match cursor.next() {
        Some('"') => quoted_value(cursor)?,
        None => return Err("there is no comma before the data".to_owned()),
        Some(first) if is_token(first) => {
            let start = cursor.position - first.len_utf8();
            cursor.token();
            match cursor.peek() {
                Some(';' | ',') => {}
                None => return Err("there is no comma before the data".to_owned()),
                Some(_) => return Err("a parameter value contains an invalid character".to_owned()),
            }
            if let Some(problem) = percent_escapes_problem(cursor.text.get(start..cursor.position).unwrap_or("")) {
                return Err(problem);
            }
        }
        Some(_) => return Err("a parameter value contains an invalid character".to_owned()),
    }
    match cursor.peek() {
        Some(';' | ',') => Ok(Parameter::Attribute),
        None => Err("there is no comma before the data".to_owned()),
        Some(_) => Err("a ; or , must follow a parameter".to_owned()),
    }
}

/// A quoted parameter value: ASCII up to the closing quote, backslash escaping one character,
/// then read as a Go string literal (so only Go's escapes are valid, and no newline).
fn quoted_value(cursor: &mut Cursor) -> Result<(), String> {
    let start = cursor.position;
    loop {
        match cursor.next() {
            None => return Err("a quoted parameter value is not closed".to_owned()),
            Some('\\') => match cursor.next() {
                None => return Err("a quoted parameter value is not closed".to_owned()),
                Some(escaped) if escaped.is_ascii() => {}
                Some(_) => return Err("a quoted parameter value escapes a non-ASCII character".to_owned()),
            },
            Some('"') => break,
            Some(character) if character.is_ascii() => {}
            Some(_) => return Err("a quoted parameter value contains a non-ASCII character".to_owned()),
        }
    }
    let inside = cursor.text.get(start..cursor.position.saturating_sub(1)).unwrap_or("");
    if go_string_literal_body_ok(inside) {
        Ok(())
    } else {
        Err("a quoted parameter value has an invalid escape or a newline".to_owned())
    }
}

/// Whether `"body"` is a valid Go interpreted string literal (ASCII body).
fn go_string_literal_body_ok(body: &str) -> bool {
    if body.contains('\n') {
        return false;
    }
    let mut characters = body.chars().peekable();
    while let Some(character) = characters.next() {
        if character != '\\' {
            continue;
        }
        let hex_digits = |characters: &mut std::iter::Peekable<std::str::Chars>, count: usize| -> Option<u32> {
            (0..count).try_fold(0u32, |value, _| Some(value * 16 + characters.next()?.to_digit(16)?))
        };
        let valid = match characters.next() {
            Some('a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\' | '"') => true,
            Some('x') => hex_digits(&mut characters, 2).is_some(),
            Some('u') => hex_digits(&mut characters, 4).and_then(char::from_u32).is_some(),
            Some('U') => hex_digits(&mut characters, 8).and_then(char::from_u32).is_some(),
            Some(first @ '0'..='7') => {
                let rest = (0..2).try_fold(first.to_digit(8).unwrap_or(0), |value, _| Some(value * 8 + characters.next()?.to_digit(8)?));
                rest.is_some_and(|value| value <= 255)
            }
            _ => false,
        };
        if !valid {
            return false;
        }
    }
    true
}

/// Base64 as Go's standard decoder reads it: newlines ignored, padding required, and bits left
/// over in the last symbol are allowed.
fn padded_base64(data: &str) -> bool {
    let symbols: Vec<u8> = data.bytes().filter(|byte| *byte != b'\n' && *byte != b'\r').collect();
    let padding = symbols.iter().rev().take_while(|byte| **byte == b'=').count();
    symbols.len().is_multiple_of(4)
        && padding <= 2
        && symbols.iter().take(symbols.len() - padding).all(|byte| byte.is_ascii_alphanumeric() || *byte == b'+' || *byte == b'/')
}

fn percent_escapes_problem(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let valid = bytes.get(index + 1).is_some_and(u8::is_ascii_hexdigit) && bytes.get(index + 2).is_some_and(u8::is_ascii_hexdigit);
            if !valid {
                return Some("a % is not followed by two hexadecimal digits".to_owned());
            }
            index += 3;
        } else {
            index += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEWEST: SpecVersion = SpecVersion::NEWEST;

    #[test]
    fn go_url_parse_accepts_what_go_accepts() {
        for url in [
            "http://example.com/a?b=c#d",
            "https://user:pa%20ss@example.com:8080/x",
            "http://[fe80::1%25en0]:80/",
            "http://host:/",
            "tftp://h/p",
            "s3://bucket/key",
            "data:,x",
            "relative/path",
            "/abs",
            "*",
            "",
            "http://h/%41",
            "http://h/#%41",
            "HTTP://H/",
        ] {
            assert!(parse(url).is_ok(), "{url:?}: {:?}", parse(url));
        }
        assert_eq!(parse("HTTP://h").map(|parsed| parsed.scheme), Ok("http".to_owned()));
        let opaque = parse("arn:aws:s3:::b/k?versionId=1#f").unwrap();
        assert_eq!((opaque.opaque, opaque.raw_query), ("aws:s3:::b/k", "versionId=1"));
    }

    #[test]
    fn go_url_parse_refuses_what_go_refuses() {
        for url in [
            "http://example.com/\n",
            "http://a\u{7f}",
            ":foo",
            "http://host:port/",
            "http://[::1/",
            "http://[::1]x/",
            "http://exa mple.com/",
            "http://h/%zz",
            "http://h/%4",
            "http://h/#%g1",
            "http://us er@h/",
            "http://u:%zz@h/",
            "http://%41/",
            ":b/c",
            "1:relative",
        ] {
            assert!(parse(url).is_err(), "{url:?} parsed");
        }
    }

    #[test]
    fn schemes_depend_on_the_spec_version() {
        let v = |minor| SpecVersion { minor };
        assert!(source_problem("gs://bucket/key", v(1)).is_some());
        assert_eq!(source_problem("gs://bucket/key", v(2)), None);
        assert!(source_problem("arn:aws:s3:::bucket/key", v(3)).is_some());
        assert_eq!(source_problem("arn:aws:s3:::bucket/key", v(4)), None);
        for url in ["ftp://x/y", "file:///etc/passwd", "/local/path", "oem:///config"] {
            let problem = source_problem(url, NEWEST).unwrap_or_else(|| panic!("{url} passed"));
            assert!(problem.contains("sources use"), "{problem}");
        }
        assert!(source_problem("http://h/%zz", NEWEST).unwrap().contains("not a valid URL"));
    }

    #[test]
    fn s3_version_ids_may_not_be_empty() {
        assert_eq!(source_problem("s3://b/k?versionId=abc", NEWEST), None);
        assert_eq!(source_problem("s3://b/k?other=", NEWEST), None);
        assert_eq!(source_problem("s3://b/k?versionId=a&versionId=", NEWEST), None);
        for url in ["s3://b/k?versionId=", "s3://b/k?versionId", "s3://b/k?version%49d=", "arn:aws:s3:::b/k?versionId="] {
            assert!(source_problem(url, NEWEST).is_some_and(|problem| problem.contains("versionId")), "{url}");
        }
        // A pair with a semicolon is skipped by Go's query parser, so it cannot be empty.
        assert_eq!(source_problem("s3://b/k?versionId=;", NEWEST), None);
    }

    #[test]
    fn arns_must_name_an_s3_object() {
        for url in ["arn:aws:s3:::bucket/key", "arn:aws:s3:us-east-1:123:accesspoint/ap/key", "arn:aws:s3:r:a:b:c/d"] {
            assert_eq!(source_problem(url, NEWEST), None, "{url}");
        }
        for url in ["arn:aws:s3:::bucket", "arn:aws:ec2:::bucket/key", "arn:aws:s3::bucket/key", "arn:aws:s3:r:1:accesspoint/ap", "arn:/x"] {
            assert!(source_problem(url, NEWEST).is_some(), "{url}");
        }
    }

    #[test]
    fn data_urls_the_library_accepts() {
        for url in [
            "data:,",
            "data:,hello%20world",
            "data:;base64,aGk=",
            "data:;base64,aGl=",
            "data:;base64,aG\nk=",
            "data:;base64,",
            "data:text/plain;charset=utf-8;base64,aGk=",
            "data:text/plain;charset=US-ASCII,abc",
            "data:text/,abc",
            "data:application/octet-stream;base64,AAAA",
            "data:x-custom/thing,abc",
            "data:textual/x,abc",
            "data:text/plain;name=\"a b\\\"c\",abc",
            "data:text/plain;name=\"\\x41\\101\\u00e9\",abc",
            "data:;charset=%41,x",
        ] {
            assert_eq!(data_url_problem(url), None, "{url:?}");
        }
        // The URL parser refuses the newline the data URL library would accept in base64.
        assert!(source_problem("data:;base64,aG\nk=", NEWEST).unwrap().contains("control character"));
        assert_eq!(source_problem("data:text/plain;charset=utf-8;base64,aGk=", NEWEST), None);
    }

    #[test]
    fn data_urls_the_library_refuses() {
        for url in [
            "data:",
            "data:abc",
            "data:x/plain,abc",
            "data:foo/bar,abc",
            "data:/plain,abc",
            "data:text/plain",
            "data:text/pl ain,abc",
            "data:;base64,aGk",
            "data:;base64,a===",
            "data:;base64,aG=k",
            "data:;base64,aGk=\r",
            "data:;foo,abc",
            "data:;charset,abc",
            "data:;charset=,abc",
            "data:;=x,abc",
            "data:;charset=%zz,x",
            "data:text/plain;name=\"abc,x",
            "data:text/plain;name=\"a\\'b\",x",
            "data:text/plain;name=\"a\nb\",x",
            "data:text/plain;name=\"\u{e9}\",x",
            "data:text/plain;a=b c,x",
            "data:text/plain;a=\"b\"c,x",
            "data:,hello world",
            "data:,a%zz",
            "data:,a%4",
            "data:,caf\u{e9}",
            "data:,a#b",
            "data:text/plain;base64;charset=x,aGk=",
        ] {
            assert!(data_url_problem(url).is_some(), "{url:?} passed");
        }
        // The scheme is case-insensitive for the URL parser, but the library wants "data:".
        assert!(source_problem("DATA:,x", NEWEST).is_some());
    }
}
