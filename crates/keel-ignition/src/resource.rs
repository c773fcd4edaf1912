//! Resources: where a file's contents, an `append` fragment, or a merged config come from.
//! keel reads `data:` URLs here; network sources get a clear error until the initrd has a
//! network (the next issues add sources that belong to the boot, such as the OEM partition).
//! What comes back is decompressed and checked against `verification.hash` before anyone uses
//! it: a resource is either exactly what the config promised, or an error.

use crate::config::latest::Resource;
use base64::Engine;
use sha2::{Digest, Sha256, Sha512};
use std::fmt;
use std::io::Read;

/// One resource's decompressed size may not exceed this: a gzip bomb in a config costs an
/// error, not the machine's memory.
pub const MAX_RESOURCE_BYTES: u64 = 256 << 20;

/// The schemes Ignition accepts but keel cannot fetch without a network.
const NETWORK_SCHEMES: &[&str] = &["http", "https", "tftp", "s3", "gs", "arn"];

#[derive(Debug, PartialEq, Eq)]
pub enum FetchError {
    NoSource,
    NotADataUrl { scheme: String },
    NeedsNetwork { scheme: String },
    MalformedDataUrl { reason: String },
    UnknownCompression { compression: String },
    Decompression { reason: String },
    TooLarge { limit: u64 },
    MalformedHash { reason: String },
    HashMismatch { algorithm: &'static str, expected: String, actual: String },
}

impl fmt::Display for FetchError {
    // Never print the resource's data: a data URL may carry a secret.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::NoSource => write!(formatter, "the resource has no source"),
            FetchError::NotADataUrl { scheme } => write!(formatter, "unsupported source scheme {scheme:?}"),
            FetchError::NeedsNetwork { scheme } => {
                write!(formatter, "{scheme} sources need the network, which keel does not bring up yet: embed the contents as a data: URL")
            }
            FetchError::MalformedDataUrl { reason } => write!(formatter, "malformed data: URL: {reason}"),
            FetchError::UnknownCompression { compression } => {
                write!(formatter, "unknown compression {compression:?} (Ignition knows gzip, or none)")
            }
            FetchError::Decompression { reason } => write!(formatter, "cannot decompress the contents: {reason}"),
            FetchError::TooLarge { limit } => write!(formatter, "the contents are larger than {limit} bytes"),
            FetchError::MalformedHash { reason } => write!(formatter, "malformed verification hash: {reason}"),
            FetchError::HashMismatch { algorithm, expected, actual } => {
                write!(formatter, "{algorithm} of the contents is {actual}, but verification.hash says {expected}")
            }
        }
    }
}

impl std::error::Error for FetchError {}

/// The resource's bytes: fetched, decompressed, and verified against its hash.
pub fn fetch(resource: &Resource) -> Result<Vec<u8>, FetchError> {
    fetch_at_most(resource, MAX_RESOURCE_BYTES)
}

/// As [`fetch`], but decompression stops as soon as the contents pass `limit` (or
/// [`MAX_RESOURCE_BYTES`], whichever is less): for a caller with a budget over many resources.
pub fn fetch_at_most(resource: &Resource, limit: u64) -> Result<Vec<u8>, FetchError> {
    let source = resource.source.as_deref().ok_or(FetchError::NoSource)?;
    let raw = read_source(source)?;
    let contents = decompress(&raw, resource.compression.as_deref().unwrap_or(""), limit.min(MAX_RESOURCE_BYTES))?;
    if let Some(hash) = resource.verification.as_ref().and_then(|verification| verification.hash.as_deref()) {
        verify(&contents, hash)?;
    }
    Ok(contents)
}

fn read_source(source: &str) -> Result<Vec<u8>, FetchError> {
    let scheme = source.split_once(':').map_or("", |(scheme, _)| scheme).to_ascii_lowercase();
    if scheme == "data" {
        decode_data_url(&source["data:".len()..])
    } else if NETWORK_SCHEMES.contains(&scheme.as_str()) {
        Err(FetchError::NeedsNetwork { scheme })
    } else {
        Err(FetchError::NotADataUrl { scheme })
    }
}

/// RFC 2397 as Ignition's data URL library (vincent-petithory/dataurl) reads it:
/// `[type/subtype][;attribute=value]*[;base64],data`. The media type must be a known discrete
/// or composite type or an `x-` extension; parameter values may be quoted. Base64 data is decoded
/// as Go's `StdEncoding` does (padding required, newlines skipped, trailing bits ignored); other
/// data must be URL characters, and is percent-decoded.
pub fn decode_data_url(after_scheme: &str) -> Result<Vec<u8>, FetchError> {
    let (data, base64) = DataUrlHeader { text: after_scheme.as_bytes(), at: 0 }.skip()?;
    if base64 {
        if !data.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"+/=\n".contains(&byte)) {
            return Err(malformed("invalid character in base64 data"));
        }
        let joined: String = data.chars().filter(|&character| character != '\n').collect();
        GO_STD_ENCODING.decode(joined).map_err(|error| malformed(&format!("bad base64: {error}")))
    } else {
        if !data.bytes().all(is_url_character) {
            return Err(malformed("invalid character in the data (escape it as %XX)"));
        }
        percent_decode(data).ok_or_else(|| malformed("bad percent-escape in the data"))
    }
}

const GO_STD_ENCODING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

fn malformed(reason: &str) -> FetchError {
    FetchError::MalformedDataUrl { reason: reason.to_owned() }
}

/// RFC 2396's URL characters: printable ASCII except the delimiters and "unwise" characters.
fn is_url_character(byte: u8) -> bool {
    (0x21..0x7f).contains(&byte) && !b"<>#\"{}|\\^[]`".contains(&byte)
}

/// RFC 2045's token characters.
fn is_token(byte: u8) -> bool {
    (0x21..0x7f).contains(&byte) && !b"()<>@,;:\\\"/[]?=".contains(&byte)
}

const MEDIA_TYPES: &[&str] = &["text", "image", "audio", "video", "application", "message", "multipart"];

/// The part of a data URL before its comma, walked only to find where the data starts and
/// whether it is base64: keel has no use for the media type, but refuses what Ignition refuses.
struct DataUrlHeader<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> DataUrlHeader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    /// Token characters up to (not including) the next byte that is not one.
    fn token(&mut self) -> &'a [u8] {
        let start = self.at;
        while self.peek().is_some_and(is_token) {
            self.at += 1;
        }
        self.text.get(start..self.at).unwrap_or_default()
    }

    /// Returns the data after the comma, and whether it is base64.
    fn skip(mut self) -> Result<(&'a str, bool), FetchError> {
        if !matches!(self.peek(), Some(b';' | b',')) {
            let media_type = self.token();
            let known = MEDIA_TYPES.iter().any(|known| media_type.starts_with(known.as_bytes()));
            let extension = media_type.len() >= 2 && media_type[..2].eq_ignore_ascii_case(b"x-");
            if self.peek() != Some(b'/') {
                return Err(malformed("the media type has no slash"));
            }
            if !known && !extension {
                return Err(malformed("unknown media type"));
            }
            self.at += 1;
            self.token();
        }
        let mut base64 = false;
        loop {
            match self.peek() {
                Some(b',') => break,
                Some(b';') => self.at += 1,
                _ => return Err(malformed("expected ';' or ',' after the media type or a parameter")),
            }
            let attribute = self.token();
            if attribute.is_empty() {
                return Err(malformed("empty parameter"));
            }
            match self.peek() {
                Some(b',') if attribute == b"base64" => {
                    base64 = true;
                    break;
                }
                Some(b'=') => {
                    self.at += 1;
                    self.parameter_value()?;
                }
                _ => return Err(malformed("a parameter needs a value, or must be the final ;base64")),
            }
        }
        let data = self.text.get(self.at + 1..).unwrap_or_default();
        Ok((std::str::from_utf8(data).map_err(|_| malformed("non-ASCII data"))?, base64))
    }

    fn parameter_value(&mut self) -> Result<(), FetchError> {
        if self.peek() != Some(b'"') {
            return if self.token().is_empty() { Err(malformed("empty parameter value")) } else { Ok(()) };
        }
        self.at += 1;
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') if self.text.get(self.at + 1).is_some_and(u8::is_ascii) => self.at += 2,
                Some(byte) if byte.is_ascii() && byte != b'\\' => self.at += 1,
                _ => return Err(malformed("unterminated quoted parameter value")),
            }
        }
    }
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let high = (*bytes.get(index + 1)? as char).to_digit(16)?;
            let low = (*bytes.get(index + 2)? as char).to_digit(16)?;
            decoded.push((high * 16 + low) as u8);
            index += 3;
        } else {
            decoded.push(byte);
            index += 1;
        }
    }
    Some(decoded)
}

fn decompress(raw: &[u8], compression: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
    let reader: Box<dyn Read + '_> = match compression {
        "" => Box::new(raw),
        "gzip" => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        other => return Err(FetchError::UnknownCompression { compression: other.to_owned() }),
    };
    let mut contents = Vec::new();
    reader.take(limit.saturating_add(1)).read_to_end(&mut contents).map_err(|error| FetchError::Decompression { reason: error.to_string() })?;
    if contents.len() as u64 > limit {
        return Err(FetchError::TooLarge { limit });
    }
    // Reading grew the buffer by doubling: without this, a held 200 MiB file costs 256 MiB.
    contents.shrink_to_fit();
    Ok(contents)
}

/// A verification hash, `sha256-HEX` or `sha512-HEX`, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct ExpectedHash {
    pub algorithm: &'static str,
    pub digest: Vec<u8>,
}

pub fn parse_hash(hash: &str) -> Result<ExpectedHash, FetchError> {
    let malformed = |reason: String| FetchError::MalformedHash { reason };
    let (algorithm, hex) = hash.split_once('-').ok_or_else(|| malformed(format!("{hash:?} is not TYPE-HEX")))?;
    let (algorithm, length) = match algorithm {
        "sha256" => ("sha256", 32),
        "sha512" => ("sha512", 64),
        other => return Err(malformed(format!("unknown hash type {other:?}: Ignition knows sha256 and sha512"))),
    };
    let digest = decode_hex(hex).ok_or_else(|| malformed(format!("{hex:?} is not hexadecimal")))?;
    if digest.len() != length {
        return Err(malformed(format!("a {algorithm} digest is {length} bytes, this one is {}", digest.len())));
    }
    Ok(ExpectedHash { algorithm, digest })
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|index| u8::from_str_radix(hex.get(index..index + 2)?, 16).ok()).collect()
}

/// Lower-case hex, as hashes are written in configs.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub fn verify(contents: &[u8], hash: &str) -> Result<(), FetchError> {
    let expected = parse_hash(hash)?;
    let actual = match expected.algorithm {
        "sha256" => Sha256::digest(contents).to_vec(),
        _ => Sha512::digest(contents).to_vec(),
    };
    if actual == expected.digest {
        Ok(())
    } else {
        Err(FetchError::HashMismatch { algorithm: expected.algorithm, expected: encode_hex(&expected.digest), actual: encode_hex(&actual) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::latest::Verification;
    use std::io::Write;

    fn resource(source: &str, compression: Option<&str>, hash: Option<String>) -> Resource {
        Resource {
            source: Some(source.to_owned()),
            compression: compression.map(str::to_owned),
            verification: hash.map(|hash| Verification { hash: Some(hash) }),
            ..Default::default()
        }
    }

    #[test]
    fn data_urls_decode_as_ignition_reads_them() {
        assert_eq!(fetch(&resource("data:,hello%20world%0A", None, None)).unwrap(), b"hello world\n");
        assert_eq!(fetch(&resource("data:text/plain;charset=utf-8;base64,aGk=", None, None)).unwrap(), b"hi");
        assert_eq!(fetch(&resource("data:,", None, None)).unwrap(), b"");
        assert_eq!(fetch(&resource("data:application/x-sh;name=\"a,b\";base64,aG\nk=", None, None)).unwrap(), b"hi");
        assert_eq!(fetch(&resource("data:;base64,aGl=", None, None)).unwrap(), b"hi", "Go ignores trailing bits");
        for bad in [
            "data:;base64,aGk",
            "data:,%zz",
            "data:,%4",
            "data:no-comma",
            "data:,caf\u{e9}",
            "data:,[agent]",
            "data:,a b",
            "data:foo/bar,x",
            "data:text,x",
            "data:;charset,x",
            "data:;base64;a=b,aGk=",
            "data:;base64,aG k=",
        ] {
            assert!(matches!(fetch(&resource(bad, None, None)), Err(FetchError::MalformedDataUrl { .. })), "{bad}");
        }
    }

    #[test]
    fn network_sources_are_a_clear_error() {
        let error = fetch(&resource("https://example.com/x", None, None)).unwrap_err();
        assert_eq!(error, FetchError::NeedsNetwork { scheme: "https".to_owned() });
        assert!(error.to_string().contains("data: URL"));
        assert!(matches!(fetch(&resource("file:///etc/passwd", None, None)), Err(FetchError::NotADataUrl { .. })));
        assert_eq!(fetch(&Resource::default()), Err(FetchError::NoSource));
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn data_url(bytes: &[u8]) -> String {
        format!("data:;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    #[test]
    fn the_hash_covers_the_decompressed_contents() {
        let contents = b"net.ipv4.ip_forward = 1\n";
        let hash = format!("sha512-{}", encode_hex(&Sha512::digest(contents)));
        assert_eq!(fetch(&resource(&data_url(&gzip(contents)), Some("gzip"), Some(hash.clone()))).unwrap(), contents);
        let compressed_hash = format!("sha256-{}", encode_hex(&Sha256::digest(gzip(contents))));
        let error = fetch(&resource(&data_url(&gzip(contents)), Some("gzip"), Some(compressed_hash))).unwrap_err();
        assert!(matches!(error, FetchError::HashMismatch { algorithm: "sha256", .. }));
        assert!(matches!(fetch(&resource(&data_url(contents), Some("xz"), None)), Err(FetchError::UnknownCompression { .. })));
        assert!(matches!(fetch(&resource(&data_url(contents), Some("gzip"), None)), Err(FetchError::Decompression { .. })));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0; (MAX_RESOURCE_BYTES + 1) as usize]);
        assert!(bomb.len() < 1 << 20);
        assert_eq!(fetch(&resource(&data_url(&bomb), Some("gzip"), None)), Err(FetchError::TooLarge { limit: MAX_RESOURCE_BYTES }));
    }

    #[test]
    fn a_smaller_limit_stops_decompression_there() {
        let contents = vec![7; 1000];
        let url = data_url(&gzip(&contents));
        assert_eq!(fetch_at_most(&resource(&url, Some("gzip"), None), 1000).unwrap(), contents);
        assert_eq!(fetch_at_most(&resource(&url, Some("gzip"), None), 999), Err(FetchError::TooLarge { limit: 999 }));
        assert_eq!(fetch_at_most(&resource("data:,abc", None, None), 2), Err(FetchError::TooLarge { limit: 2 }));
    }

    #[test]
    fn hashes_are_parsed_strictly() {
        assert!(parse_hash(&format!("sha256-{}", "ab".repeat(32))).is_ok());
        for bad in ["sha256", "md5-00", "sha256-abc", "sha512-zz", &format!("sha512-{}", "ab".repeat(32))] {
            assert!(matches!(parse_hash(bad), Err(FetchError::MalformedHash { .. })), "{bad}");
        }
    }
}
