//! `/etc/login.defs` read the way shadow-utils' getdef reads it, so ids, ages and home modes come
//! out as `useradd --root` would pick them from the same root.

use std::collections::HashMap;

#[derive(Clone, Debug, Default)]
pub struct LoginDefs {
    values: HashMap<String, String>,
}

impl LoginDefs {
    /// Lines are `NAME value`; the value starts after blanks and quotes and ends at the next
    /// quote; a later line for the same name wins. Nothing here can fail: getdef ignores what it
    /// cannot use.
    pub fn parse(text: &str) -> LoginDefs {
        let mut values = HashMap::new();
        for line in text.lines() {
            let line = line.trim_end_matches(|character: char| character.is_ascii_whitespace());
            let line = line.trim_start_matches([' ', '\t']);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some(name_end) = line.find([' ', '\t']) else { continue };
            let (name, rest) = line.split_at(name_end);
            let value = rest.trim_start_matches([' ', '\t', '"']);
            let value = value.split('"').next().unwrap_or_default();
            values.insert(name.to_string(), value.to_string());
        }
        LoginDefs { values }
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `yes` in any case is true; anything else, or nothing, is false.
    pub fn flag(&self, name: &str) -> bool {
        self.value(name).is_some_and(|value| value.eq_ignore_ascii_case("yes"))
    }

    /// getdef_ulong: an unparsable value falls back to the default, like shadow-utils (which
    /// also prints a complaint); the value is then cast to the 32-bit id type.
    pub fn id(&self, name: &str, default: u32) -> u32 {
        // strtoul wraps a negative number around and the cast to uid_t keeps the low bits: so
        // does this cast.
        self.value(name).and_then(parse_c_integer).map_or(default, |value| value as u32)
    }

    /// getdef_num: a signed int, default when absent or out of int range.
    pub fn number(&self, name: &str, default: i64) -> i64 {
        self.value(name).and_then(parse_c_integer).filter(|value| i64::from(i32::MIN) <= *value && *value <= i64::from(i32::MAX)).unwrap_or(default)
    }
}

/// `strtol(text, &end, 0)` that must consume everything: `0x` hex, leading-`0` octal, decimal,
/// optional sign.
fn parse_c_integer(text: &str) -> Option<i64> {
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, text.get(1..)?),
        Some(b'+') => (false, text.get(1..)?),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(hex) = unsigned.strip_prefix("0x").or_else(|| unsigned.strip_prefix("0X")) {
        (16, hex)
    } else if unsigned.len() > 1 && unsigned.starts_with('0') {
        (8, unsigned.get(1..)?)
    } else {
        (10, unsigned)
    };
    // from_str_radix would take a second sign; strtol does not.
    if digits.is_empty() || !digits.chars().all(|digit| digit.is_digit(radix)) {
        return None;
    }
    let magnitude = i64::from_str_radix(digits, radix).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_follow_the_name_after_blanks_and_quotes() {
        let defs = LoginDefs::parse("# UID_MIN 5\n  UID_MIN\t\t 1000  \nENV_PATH PATH=/usr/bin:/bin\nQUOTED \"yes\" trailing\nLONELY\n");
        assert_eq!(defs.value("UID_MIN"), Some("1000"));
        assert_eq!(defs.value("ENV_PATH"), Some("PATH=/usr/bin:/bin"));
        assert_eq!(defs.value("QUOTED"), Some("yes"));
        assert_eq!(defs.value("LONELY"), None);
        assert_eq!(defs.value("#"), None);
    }

    #[test]
    fn a_later_line_wins() {
        assert_eq!(LoginDefs::parse("UID_MIN 1000\nUID_MIN 2000\n").id("UID_MIN", 1), 2000);
    }

    #[test]
    fn numbers_read_like_strtol_base_0() {
        let defs = LoginDefs::parse("OCT 077\nHEX 0x1F\nDEC 22\nNEG -1\nBAD 12abc\nZERO 0\nEIGHT 08\nSIGNS 0x-5\n");
        assert_eq!(defs.number("OCT", 5), 0o77);
        assert_eq!(defs.number("HEX", 5), 31);
        assert_eq!(defs.number("DEC", 5), 22);
        assert_eq!(defs.number("NEG", 5), -1);
        assert_eq!(defs.number("ZERO", 5), 0);
        assert_eq!(defs.number("BAD", 5), 5);
        assert_eq!(defs.number("EIGHT", 5), 5);
        assert_eq!(defs.number("SIGNS", 5), 5);
        assert_eq!(defs.number("ABSENT", 5), 5);
    }

    #[test]
    fn numbers_out_of_int_range_fall_back_to_the_default() {
        assert_eq!(LoginDefs::parse("BIG 3000000000\n").number("BIG", 7), 7);
    }

    #[test]
    fn flags_are_yes_in_any_case() {
        let defs = LoginDefs::parse("A yes\nB YES\nC no\nD 1\n");
        assert!(defs.flag("A") && defs.flag("B"));
        assert!(!defs.flag("C") && !defs.flag("D") && !defs.flag("E"));
    }

    #[test]
    fn ids_keep_the_low_32_bits_and_default_when_unparsable() {
        let defs = LoginDefs::parse("UID_MIN 500\nUID_MAX junk\n");
        assert_eq!(defs.id("UID_MIN", 1000), 500);
        assert_eq!(defs.id("UID_MAX", 60000), 60000);
        assert_eq!(defs.id("SYS_UID_MIN", 101), 101);
    }
}
