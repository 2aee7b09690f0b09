//! The typed input: one runner VM and its credential.

use secrecy::{ExposeSecret, SecretString};

use crate::Error;

/// The guest operating system of a runner VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Os {
    /// Ubuntu templates with cloud-init and the `actions-runner-jit.path` unit.
    Linux,
    /// Windows Server templates with cloudbase-init and the `ActionsRunnerJit` scheduled task.
    Windows,
}

impl std::fmt::Display for Os {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Os::Linux => "linux",
            Os::Windows => "windows",
        })
    }
}

/// The one credential a runner VM receives.
#[derive(Clone)]
pub enum Credential {
    /// The `encoded_jit_config` from `generate-jitconfig` (default).
    Jit(SecretString),
    /// A registration token for the seed's `run-once.sh` flow (`${registration_token}` templates).
    RegistrationToken(SecretString),
}

impl Credential {
    /// `jit-config` or `registration-token` (used in markers and errors).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::Jit(_) => "jit-config",
            Credential::RegistrationToken(_) => "registration-token",
        }
    }

    /// The marker that replaces the credential in redacted output, e.g. `<redacted:jit-config>`.
    #[must_use]
    pub fn marker(&self) -> String {
        format!("<redacted:{}>", self.kind())
    }

    pub(crate) fn secret(&self) -> &str {
        match self {
            Credential::Jit(s) | Credential::RegistrationToken(s) => s.expose_secret(),
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Jit(_) => f.write_str("Jit(<redacted>)"),
            Credential::RegistrationToken(_) => f.write_str("RegistrationToken(<redacted>)"),
        }
    }
}

/// Everything needed to render one runner VM's user-data or guest-agent payload.
#[derive(Clone)]
pub struct RunnerSpec {
    /// The runner's name (unique per VM); also the Linux hostname (see [`RunnerSpec::hostname`]).
    pub runner_name: String,
    /// The runner's labels (the pool's labels); comma-joined for `${runner_labels}`.
    pub labels: Vec<String>,
    /// The unprivileged user that runs jobs on Linux (default `ci`); owns the JIT file.
    pub runner_user: String,
    /// The repository or organisation URL the runner registers with (`${repo_url}`).
    pub target_url: String,
    /// The guest OS.
    pub os: Os,
    /// The credential.
    pub credential: Credential,
}

impl std::fmt::Debug for RunnerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerSpec")
            .field("runner_name", &self.runner_name)
            .field("labels", &self.labels)
            .field("runner_user", &self.runner_user)
            .field("target_url", &self.target_url)
            .field("os", &self.os)
            .field("credential", &self.credential)
            .finish()
    }
}

fn invalid(field: impl Into<String>, value: &str, reason: &'static str) -> Error {
    Error::InvalidSpec {
        field: field.into(),
        value: value.to_owned(),
        reason,
    }
}

impl RunnerSpec {
    /// The labels comma-joined, as `${runner_labels}` and `run-once.sh` expect them.
    #[must_use]
    pub fn labels_joined(&self) -> String {
        self.labels.join(",")
    }

    /// The Linux hostname derived from the runner name: the name itself when it is a valid
    /// hostname label; otherwise ASCII letters and digits are kept, every other run of characters
    /// becomes one `-`, the result is trimmed of `-` and cut to 63 characters (`runner` if nothing
    /// is left). The runner keeps its real name on GitHub (it is part of the JIT config).
    #[must_use]
    pub fn hostname(&self) -> String {
        let mut out = String::with_capacity(self.runner_name.len());
        for c in self.runner_name.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        let trimmed: String = out.trim_matches('-').chars().take(63).collect();
        let trimmed = trimmed.trim_end_matches('-');
        if trimmed.is_empty() {
            "runner".to_owned()
        } else {
            trimmed.to_owned()
        }
    }

    /// Checks the non-secret fields and that the credential is not empty. `linux` additionally
    /// checks `runner_user` (it becomes a file owner and the runner's account).
    pub(crate) fn validate(&self, linux: bool) -> Result<(), Error> {
        if self.runner_name.trim().is_empty() {
            return Err(invalid(
                "runner_name",
                &self.runner_name,
                "must not be empty",
            ));
        }
        if self.runner_name.chars().any(char::is_control) {
            return Err(invalid(
                "runner_name",
                &self.runner_name,
                "must not contain control characters (newline, tab, …)",
            ));
        }
        for (i, label) in self.labels.iter().enumerate() {
            if label.trim().is_empty() {
                return Err(invalid(format!("labels[{i}]"), label, "must not be empty"));
            }
            if label.chars().any(char::is_control) {
                return Err(invalid(
                    format!("labels[{i}]"),
                    label,
                    "must not contain control characters (newline, tab, …)",
                ));
            }
            if label.contains(',') {
                return Err(invalid(
                    format!("labels[{i}]"),
                    label,
                    "must not contain a comma (labels are comma-joined)",
                ));
            }
        }
        let url = &self.target_url;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(invalid(
                "target_url",
                url,
                "must be an http(s) repository or organisation URL",
            ));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("target_url", url, "must not contain whitespace"));
        }
        if linux {
            validate_user(&self.runner_user)?;
        }
        if self.credential.secret().trim().is_empty() {
            return Err(Error::EmptyCredential {
                kind: self.credential.kind(),
            });
        }
        Ok(())
    }
}

/// A Linux account name as `useradd` accepts it: `[A-Za-z_][A-Za-z0-9_.-]*`, at most 32
/// characters, not `root` (the image refuses to run jobs as root).
fn validate_user(user: &str) -> Result<(), Error> {
    let mut chars = user.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || user.len() > 32 {
        return Err(invalid(
            "runner_user",
            user,
            "must be a Linux user name ([A-Za-z_][A-Za-z0-9_.-]*, at most 32 characters)",
        ));
    }
    if user == "root" {
        return Err(invalid(
            "runner_user",
            user,
            "must not be root (the image refuses to run jobs as root)",
        ));
    }
    Ok(())
}
