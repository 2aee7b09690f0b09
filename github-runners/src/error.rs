//! The crate's one error type.

use std::time::SystemTime;

/// Everything that can go wrong talking to GitHub or configuring the client.
///
/// No variant ever carries a credential: messages name variables, fields, endpoints and HTTP statuses only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration (environment or struct) is invalid; the message names the variable/field and value.
    #[error("configuration error: {0}")]
    Config(String),

    /// A caller-supplied argument is invalid (e.g. an empty JIT label list).
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidInput {
        /// Name of the offending argument or field.
        field: &'static str,
        /// The offending value (never a secret).
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// Authentication failed: 401 from GitHub, or the App JWT could not be built from the private key.
    #[error("authentication failed: {0}")]
    Auth(String),

    /// GitHub rate-limited us (primary or secondary limit); do not call again before `until`.
    #[error("rate limited until {} ({reason})", unix_secs(*until))]
    RateLimited {
        /// Earliest time at which a new request may be sent.
        until: SystemTime,
        /// Which rule triggered it (`retry-after`, `x-ratelimit-remaining: 0`, secondary limit, …).
        reason: String,
    },

    /// 404: the resource (repository, run, job, runner …) does not exist or is not visible to the credential.
    #[error("not found: {endpoint}")]
    NotFound {
        /// The endpoint template that answered 404, e.g. `/repos/{owner}/{repo}/actions/runners/{runner_id}`.
        endpoint: &'static str,
    },

    /// 409 from `generate-jitconfig`: a runner with this name already exists.
    #[error("a runner named {name:?} already exists (409 from generate-jitconfig)")]
    JitNameConflict {
        /// The requested runner name.
        name: String,
    },

    /// 422 from `DELETE …/runners/{id}`: the runner is running a job and cannot be removed.
    #[error("runner {id} is busy and cannot be deleted (422)")]
    RunnerBusy {
        /// The runner id.
        id: u64,
    },

    /// Any other non-success HTTP status.
    #[error("GitHub API error {status} on {endpoint}: {message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// Endpoint template.
        endpoint: &'static str,
        /// GitHub's `message` field, else the reason phrase.
        message: String,
    },

    /// The request could not be sent or the response not read (connect, TLS, timeout).
    #[error("transport error on {endpoint}: {message}")]
    Transport {
        /// Endpoint template.
        endpoint: &'static str,
        /// Description of the failure.
        message: String,
    },

    /// The response body or a header could not be decoded.
    #[error("could not decode response of {endpoint}: {message}")]
    Decode {
        /// Endpoint template.
        endpoint: &'static str,
        /// Description of the failure.
        message: String,
    },

    /// The operation is not available for the configured scope (e.g. org-wide queued jobs without a
    /// repository list).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Error {
    /// Whether trying again later can succeed: rate limits (after `until`), transport failures and 5xx.
    /// Client errors (4xx), configuration and decoding errors are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Transport { .. } => true,
            Self::Api { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// For [`Error::RateLimited`], the time before which no request should be sent.
    pub fn retry_at(&self) -> Option<SystemTime> {
        match self {
            Self::RateLimited { until, .. } => Some(*until),
            _ => None,
        }
    }
}

fn unix_secs(t: SystemTime) -> String {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => format!("unix {}", d.as_secs()),
        Err(_) => "unix 0".to_owned(),
    }
}

/// `text` on one line for an error message: control characters (line breaks included) become spaces,
/// whitespace runs collapse, and at most `max` characters are kept (`…` marks a cut).
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0usize;
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            continue;
        }
        let needed = 1 + usize::from(pending_space);
        if count + needed > max {
            out.push('…');
            return out;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
        count += needed;
    }
    out
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn one_line_flattens_and_cuts() {
        assert_eq!(one_line("  a\nb\r\n\t c\u{7}d ", 100), "a b c d");
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("", 3), "");
    }
}
