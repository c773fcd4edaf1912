//! One colon-separated account file (passwd, shadow, group, gshadow) held the way shadow-utils'
//! commonio holds it: every line is kept, lines that do not parse as an entry are kept verbatim and
//! are invisible to lookups, and only the entries that changed are re-rendered from their fields.
//! This is what makes keel's output line-for-line identical to `useradd --root`'s.

/// Which file a table holds: decides how many fields an entry has and which must be numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Passwd,
    Shadow,
    Group,
    Gshadow,
}

impl Kind {
    fn field_count(self) -> usize {
        match self {
            Kind::Passwd => 7,
            Kind::Shadow => 9,
            Kind::Group | Kind::Gshadow => 4,
        }
    }

    /// shadow-utils' parsers refuse an entry whose ids or day counts are not numbers; such a line
    /// stays in the file but names no account.
    fn fields_parse(self, fields: &[&str]) -> bool {
        if fields.len() != self.field_count() {
            return false;
        }
        match self {
            Kind::Passwd => fields.get(2..4).is_some_and(|ids| ids.iter().all(|id| parse_id(id).is_some())),
            Kind::Group => fields.get(2).is_some_and(|id| parse_id(id).is_some()),
            Kind::Shadow => fields.get(2..9).is_some_and(|days| days.iter().all(|day| day.is_empty() || day.parse::<i64>().is_ok())),
            Kind::Gshadow => true,
        }
    }
}

/// An id in an account file as shadow-utils' `get_uid` reads it (`strtoll`, base 10): leading
/// white space and a sign are accepted, the value must fit 32 bits unsigned.
pub fn parse_id(text: &str) -> Option<u32> {
    let unsigned = text.trim_start_matches([' ', '\t', '\n', '\u{b}', '\u{c}', '\r']);
    let (negative, digits) = match unsigned.as_bytes().first() {
        Some(b'-') => (true, unsigned.get(1..)?),
        Some(b'+') => (false, unsigned.get(1..)?),
        _ => (false, unsigned),
    };
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let value = digits.trim_start_matches('0');
    let value: u32 = if value.is_empty() { 0 } else { value.parse().ok()? };
    (!negative || value == 0).then_some(value)
}

#[derive(Clone, Debug)]
struct Line {
    text: String,
    /// The entry's fields when the line parses; `None` for comments, NIS lines, damage.
    fields: Option<Vec<String>>,
    changed: bool,
}

#[derive(Clone, Debug)]
pub struct Table {
    lines: Vec<Line>,
    /// Whether commonio would write the file back: an entry was added, removed or changed.
    modified: bool,
}

impl Table {
    pub fn parse(kind: Kind, text: &str) -> Table {
        let lines = text
            .split_terminator('\n')
            .map(|line| {
                let pieces: Vec<&str> = line.split(':').collect();
                let fields = kind.fields_parse(&pieces).then(|| pieces.iter().map(|piece| piece.to_string()).collect());
                Line { text: line.to_string(), fields, changed: false }
            })
            .collect();
        Table { lines, modified: false }
    }

    pub fn modified(&self) -> bool {
        self.modified
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match (&line.fields, line.changed) {
                (Some(fields), true) => out.push_str(&fields.join(":")),
                _ => out.push_str(&line.text),
            }
            out.push('\n');
        }
        out
    }

    fn entries(&self) -> impl Iterator<Item = (usize, &Vec<String>)> {
        self.lines.iter().enumerate().filter_map(|(index, line)| line.fields.as_ref().map(|fields| (index, fields)))
    }

    /// The first entry with this name, as commonio's lookup finds it.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.entries().find(|(_, fields)| fields.first().is_some_and(|first| first == name)).map(|(index, _)| index)
    }

    pub fn field(&self, entry: usize, field: usize) -> Option<&str> {
        self.lines.get(entry)?.fields.as_ref()?.get(field).map(String::as_str)
    }

    pub fn set_field(&mut self, entry: usize, field: usize, value: &str) {
        let Some(line) = self.lines.get_mut(entry) else { return };
        if let Some(slot) = line.fields.as_mut().and_then(|fields| fields.get_mut(field))
            && slot != value
        {
            *slot = value.to_string();
            line.changed = true;
            self.modified = true;
        }
    }

    /// Every entry's name and the number in `field` (an id), for lookups and id allocation.
    pub fn ids(&self, field: usize) -> impl Iterator<Item = (usize, &str, u32)> {
        self.entries().filter_map(move |(index, fields)| {
            let name = fields.first()?;
            let id = parse_id(fields.get(field)?)?;
            Some((index, name.as_str(), id))
        })
    }

    pub fn entry_indexes(&self) -> Vec<usize> {
        self.entries().map(|(index, _)| index).collect()
    }

    /// A new entry goes after the last local one: before the first NIS (`+`/`-`) line, like
    /// commonio, so compat-mode lookups still see it.
    pub fn append(&mut self, fields: Vec<String>) {
        let position = self.lines.iter().position(|line| line.text.starts_with('+') || line.text.starts_with('-')).unwrap_or(self.lines.len());
        self.lines.insert(position, Line { text: String::new(), fields: Some(fields), changed: true });
        self.modified = true;
    }

    pub fn remove(&mut self, entry: usize) {
        if entry < self.lines.len() {
            self.lines.remove(entry);
            self.modified = true;
        }
    }

    /// Removes the first entry with this name, if there is one.
    pub fn remove_named(&mut self, name: &str) {
        if let Some(entry) = self.find(name) {
            self.remove(entry);
        }
    }
}

/// A comma-separated member list as a list (empty field: nobody).
pub fn members(field: &str) -> Vec<String> {
    if field.is_empty() {
        Vec::new()
    } else {
        field.split(',').map(str::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_table_renders_its_text_with_a_final_newline() {
        let text = "root:x:0:0:root:/root:/bin/bash\n# a comment\n\nbin:x:1:1::/:/sbin/nologin";
        assert_eq!(Table::parse(Kind::Passwd, text).render(), format!("{text}\n"));
    }

    #[test]
    fn damaged_lines_are_kept_verbatim_and_name_nobody() {
        let text = "short:x:0\nhuge:x:99999999999:0::/:/bin/sh\nneg:x:-1:0::/:/bin/sh\nnan:x:1e3:0::/:/bin/sh\nok:x:5:5::/:/bin/sh\n";
        let table = Table::parse(Kind::Passwd, text);
        assert_eq!(table.render(), text);
        for name in ["short", "huge", "neg", "nan"] {
            assert_eq!(table.find(name), None, "{name}");
        }
        assert_eq!(table.find("ok"), Some(4));
    }

    #[test]
    fn shadow_day_fields_must_be_numbers_or_empty() {
        let table = Table::parse(Kind::Shadow, "a:*:19000:0:99999:7:::\nb:*:soon:::::: \n");
        assert_eq!(table.find("a"), Some(0));
        assert_eq!(table.find("b"), None);
    }

    #[test]
    fn a_table_is_modified_only_by_real_changes() {
        let mut table = Table::parse(Kind::Group, "wheel:x:10:root");
        table.set_field(0, 3, "root");
        assert!(!table.modified());
        table.set_field(0, 3, "root,core");
        assert!(table.modified());
        let mut appended = Table::parse(Kind::Group, "");
        appended.append(vec!["a".into(), "x".into(), "1".into(), String::new()]);
        assert!(appended.modified());
        let mut removed = Table::parse(Kind::Group, "wheel:x:10:root\n");
        removed.remove_named("wheel");
        assert!(removed.modified());
        removed.remove_named("wheel");
        assert_eq!(removed.render(), "");
    }

    #[test]
    fn only_changed_entries_are_rerendered() {
        let mut table = Table::parse(Kind::Group, "wheel:x:10:root\nusers:x:100:\n");
        table.set_field(1, 3, "core");
        assert_eq!(table.render(), "wheel:x:10:root\nusers:x:100:core\n");
    }

    #[test]
    fn setting_a_field_to_its_value_changes_nothing() {
        let mut table = Table::parse(Kind::Group, "wheel:x:010:root\n");
        table.set_field(0, 3, "root");
        assert_eq!(table.render(), "wheel:x:010:root\n");
    }

    #[test]
    fn new_entries_go_before_nis_lines() {
        let mut table = Table::parse(Kind::Group, "root:x:0:\n+:::\n");
        table.append(vec!["core".into(), "x".into(), "500".into(), String::new()]);
        assert_eq!(table.render(), "root:x:0:\ncore:x:500:\n+:::\n");
        let mut plain = Table::parse(Kind::Group, "root:x:0:\n");
        plain.append(vec!["core".into(), "x".into(), "500".into(), String::new()]);
        assert_eq!(plain.render(), "root:x:0:\ncore:x:500:\n");
    }

    #[test]
    fn ids_read_like_strtoll_and_must_fit_32_bits() {
        for (text, id) in [("1000", 1000), ("0", 0), ("+7", 7), (" 7", 7), ("007", 7), ("-0", 0), ("4294967295", u32::MAX)] {
            assert_eq!(parse_id(text), Some(id), "{text:?}");
        }
        for bad in ["", "-", "+", "-1", "0x10", "7 ", "4294967296", "99999999999999999999999"] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn member_lists_split_on_commas() {
        assert_eq!(members(""), Vec::<String>::new());
        assert_eq!(members("a,b"), vec!["a".to_string(), "b".to_string()]);
    }
}
