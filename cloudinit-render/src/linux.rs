//! Linux `#cloud-config` from typed structs.

use serde::Serialize;
use serde_saphyr::FlowSeq;

use crate::{
    Credential, Error, LINUX_JIT_PATH, LINUX_JIT_SERVICE, LINUX_REGISTRATION_TOKEN_PATH,
    LINUX_RUN_ONCE, Os, RunnerSpec, UserData,
};

/// The cloud-config keys this crate writes (cloud-init's own names).
#[derive(Serialize)]
struct CloudConfig<'a> {
    hostname: String,
    write_files: Vec<WriteFile<'a>>,
    runcmd: Vec<FlowSeq<Vec<Arg>>>,
    power_state: PowerState,
}

/// One `runcmd` argument in a flow sequence. serde-saphyr quotes what YAML needs quoted; a `?`
/// is double-quoted as well because PyYAML (cloud-init's reader) ends a flow plain scalar there.
pub(crate) struct Arg(String);

impl Serialize for Arg {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.contains('?') {
            serde_saphyr::DoubleQuoted(self.0.as_str()).serialize(serializer)
        } else {
            serializer.serialize_str(&self.0)
        }
    }
}

/// One `write_files` entry.
#[derive(Serialize)]
pub(crate) struct WriteFile<'a> {
    pub(crate) path: &'a str,
    pub(crate) content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) owner: Option<String>,
    pub(crate) permissions: &'static str,
}

/// `power_state`: power off once cloud-init's final stage (and so `runcmd`) has finished.
#[derive(Serialize)]
struct PowerState {
    mode: &'static str,
    message: &'static str,
    timeout: u32,
    condition: bool,
}

/// Prefixes every rendered `#cloud-config` document.
pub(crate) const HEADER: &str = "#cloud-config\n";

pub(crate) fn to_yaml<T: Serialize>(value: &T, what: &'static str) -> Result<String, Error> {
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    let body = serde_saphyr::to_string_with_options(value, options)
        .map_err(|_| Error::Serialize { what })?;
    Ok(format!("{HEADER}{body}"))
}

fn document<'a>(spec: &'a RunnerSpec, secret: &'a str) -> CloudConfig<'a> {
    let (write_file, runcmd) = match &spec.credential {
        Credential::Jit(_) => (
            WriteFile {
                path: LINUX_JIT_PATH,
                content: secret,
                // User only: the runner user's primary group is not known here, and with mode 0600 the
                // group does not matter. cloud-init keeps the group (root) when none is given.
                owner: Some(spec.runner_user.clone()),
                permissions: "0600",
            },
            vec!["systemctl", "start", "--wait", LINUX_JIT_SERVICE]
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        ),
        Credential::RegistrationToken(_) => {
            let mut argv: Vec<String> = vec![
                "env".into(),
                format!("RUNNER_USER={}", spec.runner_user),
                LINUX_RUN_ONCE.into(),
                spec.target_url.clone(),
                format!("@{LINUX_REGISTRATION_TOKEN_PATH}"),
                spec.runner_name.clone(),
            ];
            if !spec.labels.is_empty() {
                argv.push(spec.labels_joined());
            }
            (
                WriteFile {
                    path: LINUX_REGISTRATION_TOKEN_PATH,
                    content: secret,
                    owner: Some("root:root".into()),
                    permissions: "0600",
                },
                argv,
            )
        }
    };
    CloudConfig {
        hostname: spec.hostname(),
        write_files: vec![write_file],
        runcmd: vec![FlowSeq(runcmd.into_iter().map(Arg).collect())],
        power_state: PowerState {
            mode: "poweroff",
            message: "ephemeral runner finished",
            timeout: 30,
            condition: true,
        },
    }
}

/// Renders Linux `#cloud-config` user-data for one runner VM (snippet injection).
///
/// * `hostname`: [`RunnerSpec::hostname`] (the runner name when it is a valid hostname).
/// * **JIT config** (default): `write_files` puts it at [`LINUX_JIT_PATH`] (`permissions: '0600'`,
///   owner the runner user), `runcmd: [[systemctl, start, --wait, actions-runner-jit.service]]`.
/// * **Registration token** (seed flow without a template): `write_files` puts the token at
///   [`LINUX_REGISTRATION_TOKEN_PATH`] (0600, `root:root`) and `runcmd` runs
///   `env RUNNER_USER=<user> /opt/actions-runner/run-once.sh <url> @<that file> <name> [<labels>]`;
///   `run-once.sh` reads and deletes the file, so the token is never in an argument list.
/// * `power_state: {mode: poweroff, timeout: 30, condition: true}` powers the VM off after `runcmd`.
///
/// The credential appears exactly once, as that file's `content`.
///
/// # Errors
/// [`Error::InvalidSpec`]/[`Error::EmptyCredential`] for unusable input, and
/// [`Error::UnsupportedCredential`] when `spec.os` is not [`Os::Linux`].
pub fn render_cloud_config(spec: &RunnerSpec) -> Result<UserData, Error> {
    if spec.os != Os::Linux {
        return Err(Error::UnsupportedCredential {
            what: "Linux cloud-config",
            os: spec.os,
            kind: spec.credential.kind(),
            hint: "use render_windows_user_data for Windows runners",
        });
    }
    spec.validate(true)?;
    let text = to_yaml(
        &document(spec, spec.credential.secret()),
        "Linux cloud-config",
    )?;
    let marker = spec.credential.marker();
    let redacted = to_yaml(&document(spec, &marker), "Linux cloud-config")?;
    Ok(UserData::new(text, redacted))
}
