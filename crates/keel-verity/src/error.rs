use std::fmt;
use std::io;

/// Why a verity operation failed. `Corrupt` means the bytes on disk do not match what
/// the parameters promise; every other variant is a problem with the request or the I/O.
#[derive(Debug)]
pub enum VerityError {
    InvalidParams(String),
    BadSuperblock(String),
    Corrupt(String),
    Io { context: String, source: io::Error },
}

impl VerityError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> VerityError {
        let context = context.into();
        move |source| VerityError::Io { context, source }
    }
}

impl fmt::Display for VerityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerityError::InvalidParams(why) => write!(f, "invalid verity parameters: {why}"),
            VerityError::BadSuperblock(why) => write!(f, "bad verity superblock: {why}"),
            VerityError::Corrupt(why) => write!(f, "verity hash tree is corrupt: {why}"),
            VerityError::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for VerityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VerityError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
