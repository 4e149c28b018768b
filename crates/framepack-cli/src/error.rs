//! The `framepack` command's errors: the core's, the video writers', and its own arguments'.

use crate::video::VideoError;

/// Why a `framepack` subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The core refused or failed (bad settings, weights, inference).
    #[error(transparent)]
    Core(#[from] framepack::Error),
    /// Writing the video failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] VideoError),
    /// An argument or a file it names is unusable.
    #[error("invalid {what}: {reason}")]
    Argument {
        /// The option or input.
        what: &'static str,
        /// Why, in words a user can act on.
        reason: String,
    },
}

impl CliError {
    /// An [`CliError::Argument`].
    pub fn argument(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Argument { what, reason: reason.into() }
    }
}

/// Result alias of the command.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// clap's error as one line: its message, with any `tip:` it gives (a similar option name, how
/// to pass a value that starts with `-`) kept, and the usage block dropped.
pub fn one_line(clap_error: &str) -> String {
    let mut paragraphs = clap_error.split("\n\n").map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "));
    let mut line = paragraphs.next().unwrap_or_default();
    for tip in paragraphs.filter(|p| p.starts_with("tip:")) {
        line.push_str("; ");
        line.push_str(&tip);
    }
    if line.is_empty() { "error: bad arguments".to_string() } else { line }
}
