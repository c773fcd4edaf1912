//! Unit file contents as go-systemd's deserializer reads them, which is what Ignition refuses a
//! unit or drop-in for: a section header without `]` or with text after it, an option name
//! broken by a newline or cut off by the end of the file, and a line longer than systemd's
//! LINE_MAX.
//!
//! The length check is the library's, and so is its blind spot: it looks only at what its 4 KiB
//! read buffer holds, before each lexing step, and only when 2048 bytes or more are buffered. A
//! long line is therefore refused or not depending on where it falls; the buffer is modelled
//! exactly so that keel refuses the same files.

/// systemd's LINE_MAX, as the library assumes it.
const LINE_MAX: usize = 2048;
/// The size of Go's default `bufio.Reader` buffer.
const READ_BUFFER: usize = 4096;

/// One `Name=value` line, by the section it belongs to: all a rule needs to know of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct UnitOption {
    pub section: String,
}

/// The options of a unit file, or why the library refuses it.
pub(super) fn parse(contents: &str) -> Result<Vec<UnitOption>, String> {
    let mut reader = BufferedReader { text: contents, read: 0, filled: 0, last_character: 0 };
    let mut options = Vec::new();
    let mut step = Step::BeforeFirstSection;
    loop {
        if reader.buffered() >= LINE_MAX && !reader.buffered_bytes(LINE_MAX).iter().any(|byte| *byte == b'\n' || *byte == b'\r') {
            return Err(format!("a line is longer than {LINE_MAX} bytes, which systemd would truncate"));
        }
        step = match step {
            Step::BeforeFirstSection => match reader.read_character() {
                None => return Ok(options),
                Some('[') => Step::SectionName,
                Some('#' | ';') => Step::Comment { then_section: None },
                Some(_) => Step::BeforeFirstSection,
            },
            Step::SectionName => {
                let (name, found) = reader.read_through(b']');
                let Some(name) = name.strip_suffix(']').filter(|_| found) else {
                    return Err("a section header has no closing ]".to_owned());
                };
                Step::AfterSectionName(name.to_owned())
            }
            Step::AfterSectionName(section) => {
                let (rest_of_line, _) = reader.read_line();
                if !rest_of_line.trim().is_empty() {
                    return Err(format!("text follows the section header [{section}] on its line"));
                }
                Step::InSection(section)
            }
            Step::Comment { then_section } => {
                // A comment continues onto the next line when it ends with a backslash (one
                // trailing space allowed), as the library reads comments.
                loop {
                    let (line, _) = reader.read_line();
                    let line = line.strip_suffix(' ').unwrap_or(line);
                    if !line.ends_with('\\') {
                        break;
                    }
                }
                match then_section {
                    None => Step::BeforeFirstSection,
                    Some(section) => Step::InSection(section),
                }
            }
            Step::InSection(section) => match reader.read_character() {
                None => return Ok(options),
                Some(character) if character.is_whitespace() => Step::InSection(section),
                Some('[') => Step::SectionName,
                Some('#' | ';') => Step::Comment { then_section: Some(section) },
                Some(_) => {
                    reader.unread_character();
                    Step::OptionName(section)
                }
            },
            Step::OptionName(section) => {
                loop {
                    match reader.read_character() {
                        None => return Err("the file ends inside an option name (no =)".to_owned()),
                        // The line is not shown: unit contents may hold secrets.
                        Some('\n' | '\r') => return Err("a line in a section is neither an option (NAME=value) nor a comment".to_owned()),
                        Some('=') => break,
                        Some(_) => {}
                    }
                }
                Step::OptionValue(section)
            }
            Step::OptionValue(section) => {
                let (line, _) = reader.read_line();
                if !line.trim().is_empty() && line.ends_with('\\') {
                    Step::OptionValue(section)
                } else {
                    options.push(UnitOption { section: section.clone() });
                    Step::InSection(section)
                }
            }
        };
    }
}

enum Step {
    BeforeFirstSection,
    SectionName,
    AfterSectionName(String),
    Comment { then_section: Option<String> },
    InSection(String),
    OptionName(String),
    OptionValue(String),
}

/// Go's `bufio.Reader` over the contents, reduced to what decides the line-length check: how
/// many bytes are buffered. `read..filled` is the buffered window; a refill moves the window to
/// start at `read` and fills it to 4 KiB or the end.
struct BufferedReader<'a> {
    text: &'a str,
    read: usize,
    filled: usize,
    last_character: usize,
}

impl<'a> BufferedReader<'a> {
    fn buffered(&self) -> usize {
        self.filled - self.read
    }

    fn buffered_bytes(&self, count: usize) -> &'a [u8] {
        self.text.as_bytes().get(self.read..self.read + count).unwrap_or_default()
    }

    fn fill(&mut self) {
        self.filled = (self.read + READ_BUFFER).min(self.text.len());
    }

    fn rest(&self) -> &'a str {
        self.text.get(self.read..).unwrap_or("")
    }

    fn read_character(&mut self) -> Option<char> {
        let next = self.rest().chars().next();
        // bufio refills only when the buffer does not hold a whole character.
        if self.buffered() < next.map_or(1, char::len_utf8) {
            self.fill();
        }
        let character = next?;
        self.last_character = character.len_utf8();
        self.read += self.last_character;
        Some(character)
    }

    fn unread_character(&mut self) {
        self.read -= self.last_character;
    }

    /// Reads through the next `delimiter` (included), or to the end; says whether it was found.
    fn read_through(&mut self, delimiter: u8) -> (&'a str, bool) {
        let start = self.read;
        loop {
            let window = self.text.as_bytes().get(self.read..self.filled).unwrap_or_default();
            if let Some(offset) = window.iter().position(|byte| *byte == delimiter) {
                self.read += offset + 1;
                return (self.text.get(start..self.read).unwrap_or(""), true);
            }
            if self.buffered() >= READ_BUFFER {
                // A full buffer without the delimiter is handed over whole, then refilled.
                self.read = self.filled;
            } else if self.filled == self.text.len() {
                self.read = self.filled;
                return (self.text.get(start..).unwrap_or(""), false);
            } else {
                self.fill();
            }
        }
    }

    /// One line without its end (`\n`, and a `\r` before it or before the end of the file).
    fn read_line(&mut self) -> (&'a str, bool) {
        let (line, found) = self.read_through(b'\n');
        let line = line.strip_suffix('\r').unwrap_or(line);
        (line.strip_suffix('\n').unwrap_or(line), found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The section of each option, in order.
    fn sections(contents: &str) -> Vec<String> {
        parse(contents).unwrap().into_iter().map(|option| option.section).collect()
    }

    #[test]
    fn options_belong_to_their_sections() {
        let contents = "# comment \\\n continued\n[Unit]\nDescription=a \\\n  b\n\n[Service]\n  ExecStart = /bin/true\n; c\n[Install]\nWantedBy=x\n";
        assert_eq!(sections(contents), ["Unit", "Service", "Install"]);
        // A continued value is one option; a blank line ends it.
        assert_eq!(sections("[A]\nB=1 \\\nC=2\n\nD=3\n"), ["A", "A"]);
    }

    #[test]
    fn text_before_the_first_section_is_ignored() {
        assert_eq!(sections("Stray=1\n[A]\nB=c"), ["A"]);
        assert!(sections("").is_empty());
        assert!(sections("# only a comment\n").is_empty());
        assert!(sections("[Install]\n").is_empty());
    }

    #[test]
    fn malformed_sections_and_options_are_refused() {
        for contents in ["[Unit", "[Unit] trailing\nA=b", "[Unit]\nNoEquals\nA=b", "[Unit]\nNoEquals", "[Unit]\nA\r=b"] {
            assert!(parse(contents).is_err(), "{contents:?} parsed");
        }
        // The section name runs to the first ], across lines.
        assert_eq!(sections("[Un\nit]\nA=b"), ["Un\nit"]);
    }

    #[test]
    fn a_long_line_in_the_first_buffer_is_refused() {
        let contents = format!("[Service]\nExecStart=/bin/echo {}\n", "x".repeat(3000));
        assert!(parse(&contents).unwrap_err().contains("longer than 2048"));
        assert!(parse(&format!("[Service]\nExecStart=/bin/echo {}\n", "x".repeat(2000))).is_ok());
    }

    #[test]
    fn a_long_line_the_buffer_holds_less_than_line_max_of_is_missed_as_the_library_misses_it() {
        // The long line starts 3000 bytes in: when its value is read, only 1096 bytes are
        // buffered, so no check fires and the library reads the whole line.
        let padding = format!("[Service]\n{}", "Environment=A=b\n".repeat(187));
        assert!(padding.len() > 2990 && padding.len() < 3010);
        let contents = format!("{padding}ExecStart=/bin/echo {}\n", "x".repeat(3000));
        assert!(parse(&contents).is_ok());
    }

    #[test]
    fn a_long_comment_is_refused_when_seen() {
        assert!(parse(&format!("#{}\n[A]\nB=c\n", "x".repeat(2100))).is_err());
    }
}
