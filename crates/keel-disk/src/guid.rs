use anyhow::bail;
use std::fmt;

/// A GUID as text shows it (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`), stored in text order.
/// GPT stores the first three fields little-endian: see `to_gpt_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);

    pub fn parse(text: &str) -> anyhow::Result<Guid> {
        // Checked first: the slicing below counts bytes, which is only safe for ASCII.
        if !text.is_ascii() {
            bail!("{text:?} is not a GUID: not ASCII");
        }
        let groups: Vec<&str> = text.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lengths != [8, 4, 4, 4, 12] {
            bail!("{text:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
        }
        let hex: String = groups.concat();
        // from_str_radix takes a leading '+': every character must be a hex digit itself.
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{text:?} is not a GUID: not hex");
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| anyhow::anyhow!("{text:?} is not a GUID: not hex"))?;
        }
        Ok(Guid(bytes))
    }

    /// Marks 16 arbitrary bytes as a random (version 4, RFC 4122 variant) GUID.
    pub fn from_random_bytes(mut bytes: [u8; 16]) -> Guid {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Guid(bytes)
    }

    pub fn to_gpt_bytes(self) -> [u8; 16] {
        let b = self.0;
        [b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]
    }

    pub fn from_gpt_bytes(b: &[u8; 16]) -> Guid {
        // The byte swap is its own inverse.
        Guid(Guid(*b).to_gpt_bytes())
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_gpt_byte_order() {
        let guid = Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(guid.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        // The ESP type GUID as it appears on disk.
        assert_eq!(guid.to_gpt_bytes()[..4], [0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(Guid::from_gpt_bytes(&guid.to_gpt_bytes()), guid);
        for bad in [
            "",
            "c12a7328f81f11d2ba4b00a0c93ec93b",
            "g12a7328-f81f-11d2-ba4b-00a0c93ec93b",
            "+12a7328-f81f-11d2-ba4b-00a0c93ec93b",
            "ab\u{20ac}\u{20ac}-0000-0000-0000-000000000000",
        ] {
            assert!(Guid::parse(bad).is_err());
        }
    }
}
