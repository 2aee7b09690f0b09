//! The crate's one error type.

use crate::Os;

/// Everything that can go wrong while rendering user-data or a guest-agent payload.
///
/// No variant ever carries the credential: values are only quoted for the non-secret fields of a
/// [`RunnerSpec`](crate::RunnerSpec) (name, labels, user, URL), and template errors name the
/// placeholder and its line, never the value that was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A non-secret field of the runner spec is unusable (empty, a comma in a label, …).
    #[error("invalid runner spec: {field} = {value:?}: {reason}")]
    InvalidSpec {
        /// The field of [`RunnerSpec`](crate::RunnerSpec), e.g. `runner_user` or `labels[2]`.
        field: String,
        /// The offending (non-secret) value.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The credential is empty (or only whitespace).
    #[error("invalid runner spec: credential ({kind}) is empty")]
    EmptyCredential {
        /// `jit-config` or `registration-token`.
        kind: &'static str,
    },

    /// The credential kind cannot be delivered by this output for this OS.
    #[error("{what} for {os} cannot carry a {kind}: {hint}")]
    UnsupportedCredential {
        /// Which output was asked for (e.g. `guest-agent payload`).
        what: &'static str,
        /// The runner's OS.
        os: Os,
        /// `jit-config` or `registration-token`.
        kind: &'static str,
        /// What the operator can do instead.
        hint: &'static str,
    },

    /// A template contains a `$` that starts no valid placeholder (Python's `ValueError`).
    #[error("Invalid placeholder in string: line {line}, col {col}")]
    InvalidPlaceholder {
        /// 1-based line of the `$`.
        line: usize,
        /// 1-based column of the `$` (in characters).
        col: usize,
    },

    /// A template names a placeholder this crate does not know (Python's `KeyError`).
    #[error(
        "unknown placeholder ${{{name}}} at line {line} (known: runner_name, runner_user, repo_url, registration_token, runner_labels, jit_config)"
    )]
    UnknownPlaceholder {
        /// The placeholder's name as written.
        name: String,
        /// 1-based line.
        line: usize,
    },

    /// The template needs a credential kind that the spec does not carry.
    #[error(
        "template placeholder ${{{name}}} at line {line} needs a {needs}, but the runner credential is a {has}"
    )]
    CredentialMismatch {
        /// `registration_token` or `jit_config`.
        name: &'static str,
        /// 1-based line.
        line: usize,
        /// The credential kind the placeholder needs.
        needs: &'static str,
        /// The credential kind the spec carries.
        has: &'static str,
    },

    /// A placeholder's value cannot be inserted where it stands without changing the YAML.
    #[error("value of ${{{name}}} at line {line} cannot be inserted {context}: {reason}")]
    UnsafeValue {
        /// The placeholder's name.
        name: String,
        /// 1-based line of the placeholder.
        line: usize,
        /// Where it stands (e.g. `inside a block scalar`).
        context: &'static str,
        /// What in the value is the problem (never the value itself).
        reason: &'static str,
    },

    /// A guest-agent `file-write` payload is larger than Proxmox accepts.
    #[error(
        "guest-agent file-write content for {path} is {chars} characters; Proxmox accepts at most {limit}"
    )]
    PayloadTooLarge {
        /// The guest path.
        path: String,
        /// Length of the content in characters.
        chars: usize,
        /// The limit ([`AGENT_FILE_WRITE_MAX_CHARS`](crate::AGENT_FILE_WRITE_MAX_CHARS)).
        limit: usize,
    },

    /// The YAML serialiser refused the document (a bug; the secret is not included).
    #[error("could not serialise {what} as YAML")]
    Serialize {
        /// Which document.
        what: &'static str,
    },
}

impl Error {
    /// Whether trying again could succeed. Rendering is pure: the same input gives the same error,
    /// so this is always `false`; it exists for the workspace's uniform error handling.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        false
    }
}
