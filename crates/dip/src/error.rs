//! One error type for the library. Every variant names what went wrong and, where there is one, the file.

use std::path::PathBuf;

/// Errors from the library. The CLI prints them as one line and exits with code 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, decoded, or written.
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    /// An argument or setting is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// The fit diverged beyond recovery.
    #[error("{0}")]
    Diverged(String),
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error about a file.
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.into(),
        }
    }
    /// An error about an argument or setting.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}
