//! The crate's one error type.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::types::Upid;

/// Everything that can go wrong talking to Proxmox VE.
///
/// No variant ever carries the API token secret: `Display` is safe to log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a non-success HTTP status.
    #[error("{method} {endpoint}: HTTP {status}: {}{}", one_line(.message), fmt_param_errors(.errors))]
    Api {
        /// HTTP method of the failed request.
        method: &'static str,
        /// Templated endpoint, e.g. `/nodes/{node}/qemu/{vmid}/clone`.
        endpoint: &'static str,
        /// HTTP status code (PVE also uses 595, 596 and 599 for proxy failures).
        status: u16,
        /// The body's `message` (trimmed), else the HTTP reason phrase.
        message: String,
        /// Per-parameter errors of a 400 answer (`{"errors": {"param": "msg"}}`).
        errors: BTreeMap<String, String>,
    },
    /// The request could not be sent or its answer not received (connect, TLS, timeout, reset).
    #[error("{method} {endpoint}: transport error: {source}")]
    Transport {
        /// HTTP method of the failed request.
        method: &'static str,
        /// Templated endpoint.
        endpoint: &'static str,
        /// The underlying client error (its URL never contains credentials).
        #[source]
        source: reqwest::Error,
    },
    /// The answer arrived but did not have the expected shape.
    #[error("{method} {endpoint}: cannot decode response: {}", one_line(.message))]
    Decode {
        /// HTTP method of the request.
        method: &'static str,
        /// Templated endpoint.
        endpoint: &'static str,
        /// What did not match.
        message: String,
    },
    /// A task ended, but not successfully (exit status neither `OK` nor `WARNINGS: n`).
    #[error("task {upid} failed: {}", one_line(.exitstatus))]
    TaskFailed {
        /// The task.
        upid: Upid,
        /// Its exit status text, e.g. `unable to create VM 105: config file already exists`.
        exitstatus: String,
    },
    /// A task did not finish before the caller's deadline (it may still be running).
    #[error("task {upid} still running after {waited:?} (deadline exceeded)")]
    DeadlineExceeded {
        /// The task waited for.
        upid: Upid,
        /// How long we waited.
        waited: Duration,
    },
    /// The client configuration is invalid (names the variable or field and the offending value).
    #[error("invalid configuration {field}={value:?}: {reason}")]
    InvalidConfig {
        /// Environment variable or config field, e.g. `PROXMOX_URL`.
        field: String,
        /// The offending value (`<redacted>` for secrets).
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A value given to (or parsed by) this crate is invalid: a VMID, tag, UPID, file too large…
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue {
        /// What kind of value, e.g. `tag`, `vmid`, `upid`.
        what: &'static str,
        /// The offending value (or a description of it when it may be secret).
        value: String,
        /// Why it is invalid.
        reason: String,
    },
}

fn fmt_param_errors(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors
        .iter()
        .map(|(k, v)| format!("{}: {}", one_line(k), one_line(v)))
        .collect();
    format!(" ({})", parts.join("; "))
}

/// Longest text taken from an answer into an error message.
const MAX_MESSAGE_CHARS: usize = 500;

/// Server-supplied `text` on one line for an error message: control characters (line breaks included)
/// become spaces, whitespace runs collapse, at most [`MAX_MESSAGE_CHARS`] characters are kept (`…` marks
/// a cut).
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::new();
    let mut count = 0usize;
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            continue;
        }
        let needed = 1 + usize::from(pending_space);
        if count + needed > MAX_MESSAGE_CHARS {
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

impl Error {
    /// Whether repeating the same request later may succeed.
    ///
    /// True for transport errors (connect failures, timeouts, connection resets), 5xx answers
    /// (including PVE's proxy failures 595/596/599) and lock timeouts
    /// (`can't lock file … got timeout`), except 501 (unknown method/path: it will never work).
    /// False for 4xx parameter/permission errors, decode errors, failed tasks and deadlines, and
    /// for the 500s that state a fact a retry cannot change: the VMID is taken
    /// ([`Error::is_vmid_taken`]) or the VM's config does not exist ([`Error::is_not_found`]).
    ///
    /// Retrying a non-idempotent call (clone) after a timeout may find the first attempt
    /// succeeded: callers handle that via [`Error::is_vmid_taken`].
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { source, .. } => {
                source.is_connect() || source.is_timeout() || source.is_request()
            }
            Error::Api {
                status, message, ..
            } => {
                is_lock_timeout_text(message)
                    || (*status >= 500
                        && *status != 501
                        && !is_vmid_taken_text(message)
                        && !is_missing_config_text(message))
            }
            Error::TaskFailed { exitstatus, .. } => is_lock_timeout_text(exitstatus),
            _ => false,
        }
    }

    /// Whether the failure is a lock timeout (`can't lock file '…' - got timeout`), in an API
    /// answer or in a task's exit status. Retrying later is the right response.
    pub fn is_lock_timeout(&self) -> bool {
        match self {
            Error::Api { message, .. } => is_lock_timeout_text(message),
            Error::TaskFailed { exitstatus, .. } => is_lock_timeout_text(exitstatus),
            _ => false,
        }
    }

    /// Whether the failure says the requested VMID is already in use — the early clone check
    /// (`unable to create VM N: config file already exists`) or a clone task that failed for the
    /// same reason on another node. The caller should take another id.
    pub fn is_vmid_taken(&self) -> bool {
        match self {
            Error::Api { message, .. } => is_vmid_taken_text(message),
            Error::TaskFailed { exitstatus, .. } => is_vmid_taken_text(exitstatus),
            _ => false,
        }
    }

    /// The HTTP status of an [`Error::Api`], if that is what this is.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server said the object does not exist (404, or PVE's 500
    /// `Configuration file '…' does not exist`).
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Api {
                status, message, ..
            } => *status == 404 || is_missing_config_text(message),
            _ => false,
        }
    }
}

fn is_lock_timeout_text(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    (t.contains("can't lock file") || t.contains("cannot lock file")) && t.contains("got timeout")
        || t.contains("got lock timeout")
}

fn is_missing_config_text(text: &str) -> bool {
    text.contains("Configuration file") && text.contains("does not exist")
}

fn is_vmid_taken_text(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("config file already exists")
        || (t.contains("vmid")
            && t.contains("already")
            && (t.contains("in use") || t.contains("exists")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, message: &str) -> Error {
        Error::Api {
            method: "POST",
            endpoint: "/nodes/{node}/qemu/{vmid}/clone",
            status,
            message: message.to_owned(),
            errors: BTreeMap::new(),
        }
    }

    #[test]
    fn retryable_table() {
        let cases: &[(u16, &str, bool)] = &[
            (400, "Parameter verification failed.", false),
            (401, "authentication failure", false),
            (403, "Permission check failed (/vms/100, VM.Clone)", false),
            (404, "Not Found", false),
            (
                500,
                "unable to create VM 105: config file already exists",
                false,
            ),
            (
                500,
                "Configuration file 'nodes/pve/qemu-server/105.conf' does not exist",
                false,
            ),
            (500, "VM 105 is running - destroy failed", true),
            (500, "Internal Server Error", true),
            (
                501,
                "Method 'POST /nodes/pve/qemu/100/cloudinit' not implemented",
                false,
            ),
            (502, "Bad Gateway", true),
            (503, "Service Unavailable", true),
            (595, "Connection refused", true),
            (596, "Connection timed out", true),
            (599, "Too many redirections", true),
            (
                409,
                "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout",
                true,
            ),
        ];
        for (status, message, want) in cases {
            assert_eq!(
                api(*status, message).is_retryable(),
                *want,
                "{status} {message}"
            );
        }
    }

    #[test]
    fn lock_and_vmid_helpers() {
        let lock = api(
            500,
            "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout",
        );
        assert!(lock.is_lock_timeout());
        assert!(lock.is_retryable());
        assert!(!lock.is_vmid_taken());
        let taken = api(500, "unable to create VM 105: config file already exists");
        assert!(taken.is_vmid_taken());
        assert!(!taken.is_lock_timeout());
        let upid: Upid = "UPID:pve2:00001234:0000ABCD:65F0A1B2:qmclone:100:root@pam:"
            .parse()
            .unwrap();
        let task = Error::TaskFailed {
            upid: upid.clone(),
            exitstatus: "unable to create VM 105: config file already exists".into(),
        };
        assert!(task.is_vmid_taken());
        assert!(!task.is_retryable());
        let task_lock = Error::TaskFailed {
            upid,
            exitstatus: "can't lock file '/var/lock/qemu-server/lock-105.conf' - got timeout"
                .into(),
        };
        assert!(task_lock.is_lock_timeout());
        assert!(task_lock.is_retryable());
        assert!(!api(400, "x").is_vmid_taken());
    }

    #[test]
    fn server_text_is_shown_on_one_line() {
        let mut errors = BTreeMap::new();
        errors.insert("a\nb".to_owned(), "line one\nline two\r\n".to_owned());
        let e = Error::Api {
            method: "GET",
            endpoint: "/x",
            status: 500,
            message: format!("first\nsecond {}", "y".repeat(2000)),
            errors,
        };
        let text = e.to_string();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("first second y") && text.contains("(a b: line one line two)"),
            "{text}"
        );
        assert!(text.len() < 1200, "{}", text.len());
        let upid: Upid = "UPID:pve2:00001234:0000ABCD:65F0A1B2:qmclone:100:root@pam:"
            .parse()
            .unwrap();
        let e = Error::TaskFailed {
            upid,
            exitstatus: "boom\nat line 2".into(),
        };
        assert!(e.to_string().ends_with("failed: boom at line 2"), "{e}");
        let e = Error::Decode {
            method: "GET",
            endpoint: "/x",
            message: "unknown variant `a\nb`".into(),
        };
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }

    #[test]
    fn display_includes_param_errors() {
        let mut errors = BTreeMap::new();
        errors.insert("newid".to_owned(), "invalid format\n".to_owned());
        let e = Error::Api {
            method: "POST",
            endpoint: "/nodes/{node}/qemu/{vmid}/clone",
            status: 400,
            message: "Parameter verification failed.".into(),
            errors,
        };
        assert_eq!(
            e.to_string(),
            "POST /nodes/{node}/qemu/{vmid}/clone: HTTP 400: Parameter verification failed. (newid: invalid format)"
        );
        assert!(!e.is_retryable());
    }
}
