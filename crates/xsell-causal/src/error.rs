//! Error type of the crate.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while loading or running a causal language model.
///
/// Variants are distinguishable so that callers (the SQL layer) can map them to
/// different error codes: bad arguments, unreadable files, malformed or unsupported
/// model files, tokenizer problems and numerical/compute failures.
#[derive(Debug)]
pub enum LmError {
    /// A caller-supplied argument is out of range or inconsistent (empty prompt,
    /// `top_p` outside (0, 1], token id outside the vocabulary, ...).
    InvalidParameter(String),
    /// The model file or folder could not be read.
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The model file is truncated, corrupt, or its tensors/metadata are inconsistent.
    ModelFormat(String),
    /// The model is well formed but uses an architecture, tensor type, tokenizer or
    /// option that this crate does not implement.
    Unsupported(String),
    /// The tokenizer could not be built or failed on an input.
    Tokenizer(String),
    /// A numerical kernel failed (for instance the model produced non-finite logits).
    Compute(String),
}

impl fmt::Display for LmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LmError::InvalidParameter(m) => write!(f, "invalid parameter: {m}"),
            LmError::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            LmError::ModelFormat(m) => write!(f, "invalid or corrupt model: {m}"),
            LmError::Unsupported(m) => write!(f, "unsupported model: {m}"),
            LmError::Tokenizer(m) => write!(f, "tokenizer error: {m}"),
            LmError::Compute(m) => write!(f, "language model computation failed: {m}"),
        }
    }
}

impl std::error::Error for LmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LmError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl LmError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        LmError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn format(msg: impl Into<String>) -> Self {
        LmError::ModelFormat(msg.into())
    }
    pub(crate) fn param(msg: impl Into<String>) -> Self {
        LmError::InvalidParameter(msg.into())
    }
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, LmError>;
