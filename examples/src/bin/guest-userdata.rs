//! Renders what the dispatcher hands a Linux runner VM, for the guest boot test (`tests/guest/run.sh`), with
//! the same `cloudinit-render` calls as `dispatcher-bin/src/render.rs` and `provision.rs`:
//!
//! * `jit-snippet.user-data`: a JIT pool with snippet injection (`render_cloud_config`);
//! * `v0-snippet.user-data`: a pool with a seed `user_data_template` (`render_template` on the template's
//!   text, read as the dispatcher reads it, with a registration token);
//! * `jit-agent.path` + `jit-agent.content`: the one `agent/file-write` of a JIT pool with agent
//!   injection (`agent_payload`), i.e. Proxmox's `file` and `content` parameters;
//! * `bad-owner.user-data`: a JIT pool whose `runner_user` the image does not have (the negative boot).
//!
//! ```text
//! cargo run -p examples --bin guest-userdata -- OUT_DIR TEMPLATE
//! ```
//! `OUT_DIR/jit.secret` and `OUT_DIR/token.secret` hold the (fake) credentials; outputs are written
//! there with mode 0600. Nothing secret is printed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cloudinit_render::{Credential, Os, RunnerSpec};
use secrecy::{ExposeSecret, SecretString};

fn main() {
    if let Err(e) = run() {
        eprintln!("guest-userdata: {e}");
        std::process::exit(1);
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn read_secret(path: &Path) -> Result<SecretString> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(SecretString::from(text.trim().to_owned()))
}

fn write_private(path: &Path, content: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(content.as_bytes())?;
    Ok(())
}

fn spec(name: &str, runner_user: &str, credential: Credential) -> RunnerSpec {
    RunnerSpec {
        runner_name: name.to_owned(),
        labels: vec!["self-hosted".into(), "linux".into(), "x64".into()],
        runner_user: runner_user.to_owned(),
        target_url: "https://github.com/example-org/example-repo".into(),
        os: Os::Linux,
        credential,
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), Some(template)) = (args.next(), args.next()) else {
        return Err("usage: guest-userdata OUT_DIR TEMPLATE".into());
    };
    let out = PathBuf::from(out);
    let jit = read_secret(&out.join("jit.secret"))?;
    let token = read_secret(&out.join("token.secret"))?;

    let jit_snippet = spec("gh-runner-guest-jit", "ci", Credential::Jit(jit.clone()));
    let user_data = cloudinit_render::render_cloud_config(&jit_snippet)?;
    write_private(&out.join("jit-snippet.user-data"), user_data.expose())?;

    // dispatcher-bin's config reads the template with read_to_string and renders it unchanged.
    let text = std::fs::read_to_string(&template)
        .map_err(|e| format!("{}: {e}", Path::new(&template).display()))?;
    let v0 = spec(
        "gh-runner-guest-v0",
        "ci",
        Credential::RegistrationToken(token),
    );
    let user_data = cloudinit_render::render_template(&text, &v0)?;
    write_private(&out.join("v0-snippet.user-data"), user_data.expose())?;

    let agent = spec("gh-runner-guest-agent", "ci", Credential::Jit(jit.clone()));
    let files = cloudinit_render::agent_payload(&agent)?;
    let [file] = files.as_slice() else {
        return Err(format!("expected one agent file-write, got {}", files.len()).into());
    };
    write_private(&out.join("jit-agent.path"), &file.path)?;
    write_private(&out.join("jit-agent.content"), file.content.expose_secret())?;

    let bad = spec("gh-runner-guest-bad", "nosuchuser", Credential::Jit(jit));
    let user_data = cloudinit_render::render_cloud_config(&bad)?;
    write_private(&out.join("bad-owner.user-data"), user_data.expose())?;

    eprintln!("guest-userdata: rendered into {}", out.display());
    Ok(())
}
