//! Which renderer a pool uses: its `user_data_template` (seed placeholders), else the built-in
//! cloud-init (Linux) or cloudbase-init (Windows) user-data.

use cloudinit_render::{Os as RenderOs, RunnerSpec, UserData};
use pool_scheduler::Pool;

use crate::config::RuntimeConfig;
use crate::error::Error;

/// The user-data a VM of `pool` gets for `spec`.
pub fn user_data(cfg: &RuntimeConfig, pool: &Pool, spec: &RunnerSpec) -> Result<UserData, Error> {
    if let Some(template) = cfg.templates.get(&pool.name) {
        return Ok(cloudinit_render::render_template(&template.text, spec)?);
    }
    Ok(match spec.os {
        RenderOs::Windows => cloudinit_render::render_windows_user_data(spec)?,
        _ => cloudinit_render::render_cloud_config(spec)?,
    })
}
