//! `cloudinit-render` — pure rendering of what a runner VM is handed at boot.
//!
//! The dispatcher gives every new VM exactly one runner credential: a JIT config (the default) or,
//! for the seed's templates, a registration token. This crate turns a typed [`RunnerSpec`] into
//!
//! * Linux `#cloud-config` user-data ([`render_cloud_config`]) built from typed structs and
//!   serialised with `serde-saphyr`, which quotes every scalar a YAML 1.1 reader (cloud-init's PyYAML)
//!   could read as something other than a string (`on`, `yes`, `0755`, `12:30`, `~`, …);
//! * Windows cloudbase-init `#cloud-config` ([`render_windows_user_data`]);
//! * a user-supplied seed template rendered with Python `string.Template` semantics
//!   ([`render_template`]), inserting each value in the form that is safe where it stands;
//! * the exact `(path, content)` pairs for Proxmox's `agent/file-write` ([`agent_payload`]).
//!
//! The guest side (paths, unit names) is fixed by `images/guest-contract.md`; the constants below
//! mirror it. Nothing secret is ever put into `runcmd` or any other command line, and the
//! credential appears only in the file that the image's watcher consumes.
//!
//! Rendered output is a [`UserData`]: the text is a [`SecretString`]; [`UserData::redacted`] gives a
//! copy with the credential replaced by a marker (for `dispatcher render` and logs). `Debug` of every
//! type here prints no secret, and no [`Error`] contains it.
//!
//! ```no_run
//! use cloudinit_render::{render_cloud_config, Credential, Os, RunnerSpec};
//! use secrecy::SecretString;
//!
//! let spec = RunnerSpec {
//!     runner_name: "gh-runner-201".into(),
//!     labels: vec!["self-hosted".into(), "linux".into(), "x64".into()],
//!     runner_user: "ci".into(),
//!     target_url: "https://github.com/NREL/EnergyPlus".into(),
//!     os: Os::Linux,
//!     credential: Credential::Jit(SecretString::from("eyJ…encoded_jit_config…")),
//! };
//! let user_data = render_cloud_config(&spec)?;
//! println!("{}", user_data.redacted()); // safe to log
//! let _snippet_text: &str = user_data.expose(); // write this to the 0600 snippet file
//! # Ok::<(), cloudinit_render::Error>(())
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod agent;
mod error;
mod linux;
mod scalar;
mod spec;
mod template;
mod windows;
mod yaml_context;

pub use agent::{AgentFile, agent_payload};
pub use error::Error;
pub use linux::render_cloud_config;
pub use spec::{Credential, Os, RunnerSpec};
pub use template::{render_template, template_placeholders, template_uses_registration_token};
pub use windows::render_windows_user_data;

use secrecy::{ExposeSecret, SecretString};

/// Where the dispatcher puts the JIT config on a Linux runner (`actions-runner-jit.path` watches it).
pub const LINUX_JIT_PATH: &str = "/var/lib/actions-runner-jit/jitconfig";
/// The directory holding [`LINUX_JIT_PATH`] (created by the image: mode 0700, owner root).
pub const LINUX_JIT_DIR: &str = "/var/lib/actions-runner-jit";
/// The systemd path unit in the Linux image that starts [`LINUX_JIT_SERVICE`] when the file appears.
pub const LINUX_JIT_PATH_UNIT: &str = "actions-runner-jit.path";
/// The systemd service in the Linux image that runs the runner once with the JIT config.
pub const LINUX_JIT_SERVICE: &str = "actions-runner-jit.service";
/// The seed's registration-token flow script in the Linux image.
pub const LINUX_RUN_ONCE: &str = "/opt/actions-runner/run-once.sh";
/// Where a registration token is written (0600, root) for `run-once.sh @FILE`, which reads and
/// deletes it (same file as the image's own `runner-user-data.pkrtpl`).
pub const LINUX_REGISTRATION_TOKEN_PATH: &str = "/var/lib/actions-runner-jit/registration-token";
/// Where the dispatcher puts the JIT config on a Windows runner (scheduled task `ActionsRunnerJit`).
pub const WINDOWS_JIT_PATH: &str = r"C:\ProgramData\actions-runner-jit\jitconfig";
/// The scheduled task in the Windows image that waits for [`WINDOWS_JIT_PATH`].
pub const WINDOWS_JIT_TASK: &str = "ActionsRunnerJit";
/// Proxmox's limit on `agent/file-write` `content` (characters).
pub const AGENT_FILE_WRITE_MAX_CHARS: usize = 61_440;

/// Rendered user-data. It contains the runner credential, so the text is a [`SecretString`].
pub struct UserData {
    text: SecretString,
    redacted: String,
}

impl UserData {
    pub(crate) fn new(text: String, redacted: String) -> Self {
        Self {
            text: SecretString::from(text),
            redacted,
        }
    }

    /// The rendered text, credential included (for the snippet file).
    #[must_use]
    pub fn expose(&self) -> &str {
        self.text.expose_secret()
    }

    /// The rendered text as a secret, for handing on without exposing it.
    #[must_use]
    pub fn into_secret(self) -> SecretString {
        self.text
    }

    /// The same document with the credential replaced by a marker such as `<redacted:jit-config>`;
    /// safe to print and log.
    #[must_use]
    pub fn redacted(&self) -> String {
        self.redacted.clone()
    }
}

impl std::fmt::Debug for UserData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserData")
            .field("len", &self.text.expose_secret().len())
            .field("text", &"<redacted>")
            .finish()
    }
}
