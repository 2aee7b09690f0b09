//! Windows cloudbase-init `#cloud-config`.

use serde::Serialize;

use crate::linux::{WriteFile, to_yaml};
use crate::{Credential, Error, Os, RunnerSpec, UserData, WINDOWS_JIT_PATH};

/// The only cloud-config key written for Windows: cloudbase-init's `write_files` plugin supports
/// `path`, `content`, `encoding`, `permissions` and `append` (owner is ignored on Windows).
#[derive(Serialize)]
struct WindowsConfig<'a> {
    write_files: Vec<WriteFile<'a>>,
}

fn document<'a>(secret: &'a str) -> WindowsConfig<'a> {
    WindowsConfig {
        write_files: vec![WriteFile {
            path: WINDOWS_JIT_PATH,
            content: secret,
            owner: None,
            // cloudbase-init applies this with os.chmod: on Windows it only decides the read-only
            // flag (owner-write set = writable, so run-jit.ps1 can delete the file). The directory's
            // ACL (SYSTEM and Administrators only, set by the image) protects the content.
            permissions: "0600",
        }],
    }
}

/// Renders cloudbase-init user-data for a Windows runner VM (snippet injection).
///
/// A `#cloud-config` whose only key is `write_files`, placing the JIT config at
/// [`WINDOWS_JIT_PATH`]; the image's scheduled task `ActionsRunnerJit` waits for that file, runs the
/// runner once and shuts the VM down. Nothing runs a command line: there is no `runcmd`, and the
/// hostname is left to the image (cloudbase-init's hostname plugin would need a reboot).
///
/// # Errors
/// [`Error::UnsupportedCredential`] for a registration token (the Windows image has no
/// registration-token flow) or when `spec.os` is not [`Os::Windows`]; [`Error::InvalidSpec`] /
/// [`Error::EmptyCredential`] for unusable input.
pub fn render_windows_user_data(spec: &RunnerSpec) -> Result<UserData, Error> {
    if spec.os != Os::Windows {
        return Err(Error::UnsupportedCredential {
            what: "Windows cloudbase-init user-data",
            os: spec.os,
            kind: spec.credential.kind(),
            hint: "use render_cloud_config for Linux runners",
        });
    }
    if let Credential::RegistrationToken(_) = spec.credential {
        return Err(Error::UnsupportedCredential {
            what: "Windows cloudbase-init user-data",
            os: spec.os,
            kind: spec.credential.kind(),
            hint: "the Windows image only consumes a JIT config; mint one with generate-jitconfig",
        });
    }
    spec.validate(false)?;
    let text = to_yaml(&document(spec.credential.secret()), "Windows user-data")?;
    let marker = spec.credential.marker();
    let redacted = to_yaml(&document(&marker), "Windows user-data")?;
    Ok(UserData::new(text, redacted))
}
