/// A parsed command line: `key=value` and bare `key` words in their original order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    words: Vec<(String, Option<String>)>,
}

impl Cmdline {
    /// Splits as the kernel's `next_arg()` does: spaces separate words unless inside
    /// double quotes, the quotes themselves are dropped, and `--` ends the words meant for
    /// the kernel (what follows belongs to init).
    pub fn parse(text: &str) -> Cmdline {
        let mut words = Vec::new();
        let mut chars = text.trim().chars().peekable();
        loop {
            while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
            if chars.peek().is_none() {
                break;
            }
            let mut word = String::new();
            let mut quoted = false;
            while let Some(c) = chars.next_if(|c| quoted || !c.is_ascii_whitespace()) {
                if c == '"' {
                    quoted = !quoted;
                } else {
                    word.push(c);
                }
            }
            if word == "--" {
                break;
            }
            words.push(match word.split_once('=') {
                Some((key, value)) => (key.to_string(), Some(value.to_string())),
                None => (word, None),
            });
        }
        Cmdline { words }
    }

    /// The value of the last `key=value`, as the kernel and systemd let the last one win.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.words.iter().rev().find(|(k, _)| k == key).and_then(|(_, v)| v.as_deref())
    }

    /// The last of several names that is present, with its value (`None` for a bare word).
    pub fn last_of<'a>(&'a self, keys: &[&'a str]) -> Option<(&'a str, Option<&'a str>)> {
        self.words.iter().rev().find(|(k, _)| keys.contains(&k.as_str())).map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    /// Every word for the kernel, as `key=value` or `key`, quotes removed, in order.
    pub fn words(&self) -> impl Iterator<Item = String> + '_ {
        self.words.iter().map(|(key, value)| match value {
            Some(value) => format!("{key}={value}"),
            None => key.clone(),
        })
    }

    pub fn has(&self, key: &str) -> bool {
        self.words.iter().any(|(k, _)| k == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_what_the_kernel_was_given_without_quotes_and_init_arguments() {
        let line = Cmdline::parse("console=ttyS0 quiet \"rootflags=a b\" -- single=1");
        assert_eq!(line.words().collect::<Vec<_>>(), ["console=ttyS0", "quiet", "rootflags=a b"]);
    }

    #[test]
    fn splits_like_the_kernel() {
        let line = Cmdline::parse("  console=ttyS0 quiet  root=\"LABEL=MY ROOT\" \"rootflags=a b\" init=/x -- single=1\n");
        assert_eq!(line.value("console"), Some("ttyS0"));
        assert!(line.has("quiet"));
        assert_eq!(line.value("quiet"), None);
        assert_eq!(line.value("root"), Some("LABEL=MY ROOT"));
        assert_eq!(line.value("rootflags"), Some("a b"));
        assert_eq!(line.value("init"), Some("/x"));
        assert!(!line.has("single"), "words after -- belong to init");
    }

    #[test]
    fn last_one_wins() {
        let line = Cmdline::parse("rd.timeout=5 rd.timeout=9 usr=a mount.usr=b");
        assert_eq!(line.value("rd.timeout"), Some("9"));
        assert_eq!(line.last_of(&["mount.usr", "usr"]), Some(("mount.usr", Some("b"))));
        assert_eq!(line.last_of(&["nothing"]), None);
    }

    #[test]
    fn keeps_equals_signs_in_values() {
        let line = Cmdline::parse("verity.usr=PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132");
        assert_eq!(line.value("verity.usr"), Some("PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132"));
    }
}
