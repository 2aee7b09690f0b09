//! Guest-agent (`agent/file-write`) payloads.

use secrecy::SecretString;

use crate::{
    AGENT_FILE_WRITE_MAX_CHARS, Credential, Error, LINUX_JIT_PATH, Os, RunnerSpec, WINDOWS_JIT_PATH,
};

/// One `agent/file-write` call: `file` = [`AgentFile::path`], `content` = [`AgentFile::content`]
/// (send it with the API's default `encode=1`; Proxmox base64-encodes it for qemu-ga).
pub struct AgentFile {
    /// The absolute guest path.
    pub path: String,
    /// The exact file content (the credential).
    pub content: SecretString,
}

impl std::fmt::Debug for AgentFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentFile")
            .field("path", &self.path)
            .field("content", &"<redacted>")
            .finish()
    }
}

/// The exact `(path, content)` pairs to `agent/file-write` for this runner (agent injection): one
/// file, the JIT config exactly as GitHub returned it, at [`LINUX_JIT_PATH`] or
/// [`WINDOWS_JIT_PATH`]. The image's watcher (`actions-runner-jit.path` / task `ActionsRunnerJit`)
/// starts the runner when it appears. No `agent/exec` is ever needed.
///
/// # Errors
/// [`Error::UnsupportedCredential`] for a registration token (no image watcher consumes one),
/// [`Error::PayloadTooLarge`] when the content exceeds [`AGENT_FILE_WRITE_MAX_CHARS`], and
/// [`Error::InvalidSpec`]/[`Error::EmptyCredential`] for unusable input.
pub fn agent_payload(spec: &RunnerSpec) -> Result<Vec<AgentFile>, Error> {
    let Credential::Jit(jit) = &spec.credential else {
        return Err(Error::UnsupportedCredential {
            what: "guest-agent payload",
            os: spec.os,
            kind: spec.credential.kind(),
            hint: "agent injection needs a JIT config; registration tokens only work with snippet injection and a seed template",
        });
    };
    spec.validate(spec.os == Os::Linux)?;
    let path = match spec.os {
        Os::Linux => LINUX_JIT_PATH,
        Os::Windows => WINDOWS_JIT_PATH,
    };
    let chars = spec.credential.secret().chars().count();
    if chars > AGENT_FILE_WRITE_MAX_CHARS {
        return Err(Error::PayloadTooLarge {
            path: path.to_owned(),
            chars,
            limit: AGENT_FILE_WRITE_MAX_CHARS,
        });
    }
    Ok(vec![AgentFile {
        path: path.to_owned(),
        content: jit.clone(),
    }])
}
