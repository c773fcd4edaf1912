use crate::VerityError;

pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

/// Decodes lower- or upper-case hex; `what` names the value in the error.
pub fn decode_hex(text: &str, what: &str) -> Result<Vec<u8>, VerityError> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bad = || VerityError::InvalidParams(format!("{what} is not hex: {text:?}"));
    if !text.len().is_multiple_of(2) {
        return Err(bad());
    }
    text.as_bytes().chunks_exact(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect::<Option<Vec<u8>>>().ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_non_hex() {
        let bytes = [0x00, 0x7f, 0xab, 0xff];
        assert_eq!(encode_hex(&bytes), "007fabff");
        assert_eq!(decode_hex("007FabfF", "x").unwrap(), bytes);
        assert!(decode_hex("abc", "x").is_err());
        assert!(decode_hex("zz", "x").is_err());
        assert_eq!(decode_hex("", "x").unwrap(), Vec::<u8>::new());
    }
}
