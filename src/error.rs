//! The library's one error type. Every variant names the file (or item) and
//! what was expected, so a user can act on the message without a debugger.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file whose bytes do not have the expected structure.
    #[error("{path}: {item}: {msg}")]
    Format { path: PathBuf, item: String, msg: String },
    /// A model whose configuration or weights disagree with what the engine needs.
    #[error("model {model}: {msg}")]
    Model { model: String, msg: String },
    /// Two traces or a trace and its manifest that do not fit together.
    #[error("{msg}")]
    Mismatch { msg: String },
    /// A contract file that does not follow the schema.
    #[error("{path}: {msg}")]
    Contract { path: PathBuf, msg: String },
    /// A contract error at a known place in the file (1-based line and column).
    #[error("{path}:{line}:{column}: {msg}")]
    ContractAt { path: PathBuf, line: usize, column: usize, msg: String },
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn format(path: impl Into<PathBuf>, item: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Format { path: path.into(), item: item.into(), msg: msg.into() }
    }
    pub fn model(model: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Model { model: model.into(), msg: msg.into() }
    }
    pub fn mismatch(msg: impl Into<String>) -> Self {
        Error::Mismatch { msg: msg.into() }
    }
}
