//! Where the NATS server is and how to authenticate to it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{RemoteError, Result};

/// The default server: a NATS server on this machine (nothing listens on a public address unless
/// you say so).
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// The default namespace of the streams, buckets and subjects.
pub const DEFAULT_PREFIX: &str = "framepack";

/// How a client proves who it is (passed through to the server unchanged).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials (a server without authorization).
    #[default]
    None,
    /// A user name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A token.
    Token(String),
    /// An nkey seed (`SU…`).
    NkeySeed(String),
    /// A `.creds` file (JWT and nkey seed, as `nsc` writes them).
    CredentialsFile(PathBuf),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::UserPassword { user, .. } => write!(f, "UserPassword {{ user: {user:?}, password: <redacted> }}"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::NkeySeed(_) => f.write_str("NkeySeed(<redacted>)"),
            Self::CredentialsFile(p) => write!(f, "CredentialsFile({p:?})"),
        }
    }
}

/// TLS settings (a `tls://` URL also turns TLS on).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// Refuse a connection without TLS.
    pub required: bool,
    /// A PEM file of root certificates to trust (a private CA).
    pub root_certificates: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

/// How to reach the NATS server, shared by workers and clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteOptions {
    /// The server URL(s), comma-separated (`nats://host:4222`, `tls://host:4222`).
    pub url: String,
    /// Authentication.
    pub credentials: Credentials,
    /// TLS.
    pub tls: Tls,
    /// Namespace of the streams (`<prefix>_jobs`, `<prefix>_events`), buckets and subjects, so
    /// several deployments can share a server: letters, digits, `_` and `-`.
    pub prefix: String,
    /// The connection's name as the server shows it.
    pub name: Option<String>,
    /// How long the first connection may take.
    pub connect_timeout: Duration,
    /// How long a JetStream request (publish acknowledgement, stream or bucket lookup) may take.
    pub request_timeout: Duration,
    /// How long a job waits for a lost connection to come back before it fails.
    pub disconnect_timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.into(),
            credentials: Credentials::None,
            tls: Tls::default(),
            prefix: DEFAULT_PREFIX.into(),
            name: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            disconnect_timeout: Duration::from_secs(10),
        }
    }
}

impl RemoteOptions {
    /// The defaults with another server URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), ..Self::default() }
    }

    /// With credentials.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// With another namespace.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// With another disconnect timeout.
    pub fn with_disconnect_timeout(mut self, timeout: Duration) -> Self {
        self.disconnect_timeout = timeout;
        self
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.url.trim().is_empty() {
            return Err(RemoteError::Options("the server URL is empty".into()));
        }
        if self.prefix.is_empty() || !self.prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(RemoteError::Options(format!("prefix `{}` must be letters, digits, `_` or `-`", self.prefix)));
        }
        Ok(())
    }

    /// Connects (one attempt, within `connect_timeout`); the client then reconnects by itself
    /// whenever the connection drops.
    pub(crate) async fn connect(&self) -> Result<async_nats::Client> {
        self.check()?;
        let fail = |reason: String| RemoteError::Connect { url: self.url.clone(), reason };
        let refused = |reason: String| RemoteError::Refused { url: self.url.clone(), reason };
        let mut o = match &self.credentials {
            Credentials::None => async_nats::ConnectOptions::new(),
            Credentials::UserPassword { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            Credentials::Token(t) => async_nats::ConnectOptions::with_token(t.clone()),
            Credentials::NkeySeed(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
            Credentials::CredentialsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| RemoteError::Options(format!("credentials file {}: {e}", path.display())))?,
        };
        if self.tls.required {
            o = o.require_tls(true);
        }
        if let Some(ca) = &self.tls.root_certificates {
            o = o.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client_certificate {
            o = o.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(name) = &self.name {
            o = o.name(name);
        }
        o = o
            .connection_timeout(self.connect_timeout)
            .request_timeout(Some(self.request_timeout))
            .max_reconnects(None)
            // Silences async-nats' default callback; disconnects are watched through
            // `connection_state`.
            .event_callback(|_| async {});
        use async_nats::ConnectErrorKind as K;
        match tokio::time::timeout(self.connect_timeout + Duration::from_secs(1), o.connect(self.url.as_str())).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => match e.kind() {
                K::Authentication | K::AuthorizationViolation | K::Tls | K::ServerParse => Err(refused(e.to_string())),
                _ => Err(fail(e.to_string())),
            },
            Err(_) => Err(fail(format!("no answer within {:.1} s", self.connect_timeout.as_secs_f64()))),
        }
    }
}
