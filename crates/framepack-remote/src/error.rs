//! What can go wrong between a game, the NATS server and a worker.

/// A failure of the remote path (the connection, the server, or a message on it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The options are unusable (a URL, a prefix, a credentials file).
    #[error("invalid remote settings: {0}")]
    Options(String),
    /// The server could not be reached or refused the connection.
    #[error("cannot reach the NATS server at {url}: {reason}")]
    Connect {
        /// The server URL.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// The server refused the credentials, or the TLS or server settings are unusable (retrying
    /// does not help).
    #[error("the NATS server at {url} refused the connection: {reason}")]
    Refused {
        /// The server URL.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// The connection to the server was lost for longer than the options allow.
    #[error("lost the connection to the NATS server at {url} for {seconds:.1} s; the job's outcome is unknown")]
    Disconnected {
        /// The server URL.
        url: String,
        /// How long it has been down.
        seconds: f64,
    },
    /// A JetStream request (stream, consumer, bucket, publish) failed.
    #[error("NATS JetStream {what} failed: {reason}")]
    JetStream {
        /// The operation.
        what: &'static str,
        /// The server's or the client's message.
        reason: String,
    },
    /// A message on the wire could not be read.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// The message kind (job, event).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl RemoteError {
    pub(crate) fn js(what: &'static str, e: impl std::fmt::Display) -> Self {
        Self::JetStream { what, reason: e.to_string() }
    }
    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Malformed { what, reason: reason.into() }
    }
}

/// `Result` with a [`RemoteError`].
pub type Result<T, E = RemoteError> = std::result::Result<T, E>;
