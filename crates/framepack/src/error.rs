//! The crate's error type.

use std::path::PathBuf;

use crate::bundle::BundlePart;

/// Errors returned by the FramePack core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request or configuration value is out of range or inconsistent.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The argument or field that is wrong.
        what: &'static str,
        /// Why it is wrong, in words a user can act on.
        reason: String,
    },
    /// A model bundle lacks a part, or its parts do not fit.
    #[error("invalid model bundle: {0}")]
    Bundle(#[from] BundleError),
    /// Model weights are missing, corrupt or do not fit the model.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// Generation was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid { what, reason: reason.into() }
    }
}

/// What is wrong with a model bundle.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// A part (its folder, config, weights or tokenizer) is not there.
    #[error("{part} ({}) is missing: {what}", part.describe())]
    Missing {
        /// The part.
        part: BundlePart,
        /// What was looked for, and where.
        what: String,
    },
    /// A part is there but cannot be used: unreadable, an invalid config, or weights that do
    /// not fit its config.
    #[error("{part} ({}) does not fit: {reason}", part.describe())]
    Mismatched {
        /// The part.
        part: BundlePart,
        /// Why, in words a user can act on.
        reason: String,
    },
    /// Parts that each load but disagree with each other (e.g. encoder widths and the
    /// transformer's inputs).
    #[error("{reason}")]
    Inconsistent {
        /// What disagrees.
        reason: String,
    },
}

/// Problems found while opening safetensors files or matching them to a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// A weights file could not be opened or mapped.
    #[error("cannot open weights file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A weights file is not a valid safetensors file.
    #[error("weights file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the safetensors parser reported.
        reason: String,
    },
    /// The same tensor name is stored in two files.
    #[error("tensor `{name}` is stored twice: in {first} and in {second}")]
    Duplicate {
        /// Tensor name.
        name: String,
        /// First file holding it.
        first: PathBuf,
        /// Second file holding it.
        second: PathBuf,
    },
    /// The model asked for a tensor that no file holds.
    #[error("missing tensor `{name}` (expected shape {expected:?}) in {files}")]
    Missing {
        /// Tensor name.
        name: String,
        /// Shape the model expects.
        expected: Vec<usize>,
        /// The files that were searched, comma separated.
        files: String,
    },
    /// A tensor exists but has the wrong shape.
    #[error("tensor `{name}` in {file}: expected shape {expected:?}, found {actual:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// File holding it.
        file: String,
        /// Shape the model expects.
        expected: Vec<usize>,
        /// Shape stored in the file.
        actual: Vec<usize>,
    },
    /// Files hold tensors the model does not use (a sign of a wrong config or checkpoint).
    #[error("{} unexpected tensor(s) in {file}, e.g. `{}`", names.len(), names.first().map(String::as_str).unwrap_or(""))]
    Unexpected {
        /// File(s) holding them.
        file: String,
        /// Every unexpected name, sorted.
        names: Vec<String>,
    },
    /// A tensor could not be read or converted.
    #[error("cannot load tensor `{name}` from {file}: {reason}")]
    Load {
        /// Tensor name.
        name: String,
        /// File holding it.
        file: String,
        /// What failed.
        reason: String,
    },
}

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message of a caught panic's payload (`&str` or `String`), or "unknown panic": what the
/// plugin's worker and remote workers report when inference panics.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
