//! Ignition spec 3.x for keel: parse every version the `ignition-config` crate knows,
//! validate with Ignition's rules, merge base and child configs, and apply a config to a root
//! directory. The engine knows nothing of booting: keel-boot (and the `keel ignition` CLI) feed
//! it sources and a root.
//!
//! Every version is translated to the newest one after parsing, so validation, merge and apply
//! have one set of types; the version a document declared is kept for the rules that depend on it.

pub mod apply;
pub mod config;
pub mod merge;
pub mod report;
pub mod resolve;
pub mod resource;
pub mod root;
pub mod users;
pub mod validate;

pub use config::{parse, Latest, ParseError, Parsed, SpecVersion};
pub use report::{JsonPath, Level, Report};
