//! Which renderer a pool uses: its `user_data_template` (placeholders compatible with the v0 Python
//! dispatcher's templates), else the built-in cloud-init (Linux) or cloudbase-init (Windows) user-data; and
//! the agent payload for `agent` injection.

use cloudinit_render::{AgentFile, Credential, Os as RenderOs, RunnerSpec, UserData};
use pool_scheduler::{Injection, Os, Pool};
use secrecy::SecretString;

use crate::config::RuntimeConfig;
use crate::error::Error;

/// What a runner VM of `pool` named `runner_name` is handed, with `credential`.
pub fn spec(
    cfg: &RuntimeConfig,
    pool: &Pool,
    runner_name: &str,
    credential: Credential,
) -> RunnerSpec {
    RunnerSpec {
        runner_name: runner_name.to_owned(),
        labels: pool.labels.clone(),
        runner_user: pool.runner_user.clone(),
        target_url: cfg.runner_url.clone(),
        os: match pool.os {
            Os::Windows => RenderOs::Windows,
            _ => RenderOs::Linux,
        },
        credential,
    }
}

/// A placeholder credential of the kind `pool` gets (for dry renders; never sent anywhere).
pub fn placeholder_credential(cfg: &RuntimeConfig, pool: &Pool) -> Credential {
    let placeholder = SecretString::from("REDACTED-CREDENTIAL");
    if cfg.uses_registration_token(&pool.name) {
        Credential::RegistrationToken(placeholder)
    } else {
        Credential::Jit(placeholder)
    }
}

/// The user-data a VM of `pool` gets for `spec` (snippet injection).
pub fn user_data(cfg: &RuntimeConfig, pool: &Pool, spec: &RunnerSpec) -> Result<UserData, Error> {
    if let Some(template) = cfg.templates.get(&pool.name) {
        return Ok(cloudinit_render::render_template(&template.text, spec)?);
    }
    Ok(match spec.os {
        RenderOs::Windows => cloudinit_render::render_windows_user_data(spec)?,
        _ => cloudinit_render::render_cloud_config(spec)?,
    })
}

/// The files `agent/file-write` puts into a VM of `pool` (agent injection).
pub fn agent_files(spec: &RunnerSpec) -> Result<Vec<AgentFile>, Error> {
    Ok(cloudinit_render::agent_payload(spec)?)
}

/// Renders what a VM of `pool` named `runner_name` would be handed, with a placeholder credential: a
/// render error shows before anything is cloned or minted.
pub fn preflight(cfg: &RuntimeConfig, pool: &Pool, runner_name: &str) -> Result<(), Error> {
    let spec = spec(cfg, pool, runner_name, placeholder_credential(cfg, pool));
    match pool.injection {
        Injection::Snippet => user_data(cfg, pool, &spec).map(drop),
        Injection::Agent => agent_files(&spec).map(drop),
    }
}
