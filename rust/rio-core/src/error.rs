//! Errors a caller can cause. Each names the argument or file it concerns; the Python bindings map
//! them to `ValueError`, `TypeError`, `CheckpointError` and `ConfigError`.
use crate::DType;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor argument has the wrong shape.
    #[error("{arg}: expected shape {expected}, got {actual:?}")]
    Shape { arg: String, expected: String, actual: Vec<usize> },

    /// A tensor argument has the wrong element type.
    #[error("{arg}: expected dtype {expected}, got {actual}")]
    DType { arg: String, expected: String, actual: DType },

    /// Any other bad argument value (k > E, NaN router logits, negative sizes, ...).
    #[error("{arg}: {message}")]
    Value { arg: String, message: String },

    /// A checkpoint file is missing, truncated or inconsistent.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },

    /// A config file is unreadable or holds unsupported values.
    #[error("config {path}: {message}")]
    Config { path: String, message: String },

    /// The operation is valid but this backend or build cannot run it.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn shape(arg: impl Into<String>, expected: impl Into<String>, actual: &[usize]) -> Self {
        Error::Shape { arg: arg.into(), expected: expected.into(), actual: actual.to_vec() }
    }
    pub fn dtype(arg: impl Into<String>, expected: impl Into<String>, actual: DType) -> Self {
        Error::DType { arg: arg.into(), expected: expected.into(), actual }
    }
    pub fn value(arg: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Value { arg: arg.into(), message: message.into() }
    }
    pub fn checkpoint(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Checkpoint { path: path.into(), message: message.into() }
    }
    pub fn config(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { path: path.into(), message: message.into() }
    }
}
