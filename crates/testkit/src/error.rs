use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while running a throwaway server.
///
/// Messages name the binary, the port and, when a child failed, the last lines it wrote, so a
/// failing test says why without anyone having to re-run it.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("{tool} not found ({looked}); run scripts/bootstrap.sh")]
    ToolMissing { tool: &'static str, looked: String },

    #[error("could not start {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{what} ({}) on 127.0.0.1:{port} exited with {status} before it became ready; last output:\n{stderr_tail}",
        binary.display()
    )]
    Exited {
        what: String,
        binary: PathBuf,
        port: u16,
        status: String,
        stderr_tail: String,
    },

    #[error(
        "{what} ({}) on 127.0.0.1:{port} not ready after {waited:?}: {last_error}; last output:\n{stderr_tail}",
        binary.display()
    )]
    NotReady {
        what: String,
        binary: PathBuf,
        port: u16,
        waited: Duration,
        last_error: String,
        stderr_tail: String,
    },

    #[error("{} failed with {status}; output:\n{output}", binary.display())]
    CommandFailed {
        binary: PathBuf,
        status: String,
        output: String,
    },

    #[error("{what} is not running (stopped or killed); call restart() first")]
    NotRunning { what: String },

    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout { what: String, waited: Duration },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "running as root but there is no `postgres` user to run the server as; run scripts/bootstrap.sh"
    )]
    NoPostgresUser,

    #[error("nats on {url}: {detail}")]
    Nats { url: String, detail: String },

    #[error("postgres: {0}")]
    Sql(#[from] sqlx::Error),

    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),

    #[error("invalid argument: {0}")]
    Invalid(String),
}

pub type Result<T, E = TestkitError> = std::result::Result<T, E>;

impl TestkitError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TestkitError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn nats(url: &str, detail: impl std::fmt::Display) -> Self {
        TestkitError::Nats {
            url: url.to_owned(),
            detail: detail.to_string(),
        }
    }

    /// True when a child died because its port was taken between picking and binding it: the
    /// caller may retry on another port.
    pub(crate) fn is_port_in_use(&self) -> bool {
        match self {
            TestkitError::Exited { stderr_tail, .. }
            | TestkitError::NotReady { stderr_tail, .. } => stderr_tail
                .to_ascii_lowercase()
                .contains("address already in use"),
            _ => false,
        }
    }
}
