//! What validation says about a config: each report names the JSON path of the node it is
//! about, in the form people paste into `jq` (`$.storage.files[3].path`), and whether it stops
//! the config (error) or is only worth knowing (warning).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warning,
}

/// A JSON path from the document's root, `$`, through field names and list indexes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JsonPath(String);

impl JsonPath {
    pub fn root() -> Self {
        JsonPath("$".to_owned())
    }

    pub fn field(&self, name: &str) -> Self {
        JsonPath(format!("{}.{name}", self.0))
    }

    pub fn index(&self, index: usize) -> Self {
        JsonPath(format!("{}[{index}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub level: Level,
    pub path: JsonPath,
    pub message: String,
}

impl Report {
    pub fn error(path: JsonPath, message: impl Into<String>) -> Self {
        Report { level: Level::Error, path, message: message.into() }
    }

    pub fn warning(path: JsonPath, message: impl Into<String>) -> Self {
        Report { level: Level::Warning, path, message: message.into() }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(formatter, "{level} at {}: {}", self.path, self.message)
    }
}

/// True when any report is an error: the config must not be used.
pub fn has_errors(reports: &[Report]) -> bool {
    reports.iter().any(|report| report.level == Level::Error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_jq() {
        let path = JsonPath::root().field("storage").field("files").index(3).field("path");
        assert_eq!(path.as_str(), "$.storage.files[3].path");
        let report = Report::error(path, "path must be absolute");
        assert_eq!(report.to_string(), "error at $.storage.files[3].path: path must be absolute");
        assert!(has_errors(&[Report::warning(JsonPath::root(), "w"), report]));
        assert!(!has_errors(&[Report::warning(JsonPath::root(), "w")]));
    }
}
