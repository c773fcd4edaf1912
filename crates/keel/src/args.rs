use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::str::FromStr;

/// A subcommand's arguments: `--name value` options (each at most once, unless it is one of
/// the repeatable ones), `--flag` switches, and positional words. Unknown options are errors,
/// not silently ignored.
pub struct Args {
    options: BTreeMap<String, String>,
    repeated: BTreeMap<String, Vec<String>>,
    flags: Vec<String>,
    pub positional: Vec<String>,
}

impl Args {
    pub fn parse(words: &[String], options: &[&str], flags: &[&str]) -> anyhow::Result<Args> {
        Args::parse_repeatable(words, options, &[], flags)
    }

    /// As `parse`, with options in `repeatable` allowed any number of times, in order.
    pub fn parse_repeatable(words: &[String], options: &[&str], repeatable: &[&str], flags: &[&str]) -> anyhow::Result<Args> {
        let mut args = Args { options: BTreeMap::new(), repeated: BTreeMap::new(), flags: Vec::new(), positional: Vec::new() };
        let mut words = words.iter();
        while let Some(word) = words.next() {
            let Some(name) = word.strip_prefix("--") else {
                args.positional.push(word.clone());
                continue;
            };
            let (name, inline) = match name.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (name, None),
            };
            if flags.contains(&name) && inline.is_none() {
                args.flags.push(name.to_string());
            } else if options.contains(&name) || repeatable.contains(&name) {
                let value = match inline {
                    Some(value) => value,
                    None => words.next().with_context(|| format!("--{name} needs a value"))?.clone(),
                };
                if repeatable.contains(&name) {
                    args.repeated.entry(name.to_string()).or_default().push(value);
                } else if args.options.insert(name.to_string(), value).is_some() {
                    bail!("--{name} is given twice");
                }
            } else {
                let known: Vec<String> = options.iter().chain(repeatable).chain(flags).map(|o| format!("--{o}")).collect();
                bail!("unknown option --{name} (known: {})", known.join(" "));
            }
        }
        Ok(args)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    /// Every value of a repeatable option, in the order given.
    pub fn all(&self, name: &str) -> &[String] {
        self.repeated.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn required(&self, name: &str) -> anyhow::Result<&str> {
        self.get(name).with_context(|| format!("--{name} is required"))
    }

    pub fn number<T: FromStr>(&self, name: &str) -> anyhow::Result<Option<T>> {
        self.get(name).map(|text| text.parse().map_err(|_| anyhow::anyhow!("--{name} {text:?} is not a number"))).transpose()
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}
