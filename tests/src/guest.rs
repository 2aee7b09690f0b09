//! Simulated guests: boot, find the runner credential (cloud-init user-data or an agent-written file),
//! bring the runner online, and power off when the runner exits.

use std::time::Instant;

use base64::Engine as _;
use serde::Deserialize;

use crate::world::{CredentialKind, GuestPhase, Runner, World};

#[derive(Debug, Deserialize, Default)]
struct UserData {
    #[serde(default)]
    write_files: Vec<WriteFile>,
}

#[derive(Debug, Deserialize)]
struct WriteFile {
    path: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    encoding: Option<String>,
}

/// The content of the JIT file a cloud-config `write_files` entry writes to `path`, if any.
pub(crate) fn user_data_file(user_data: &str, path: &str) -> Option<String> {
    let ud: UserData = serde_saphyr::from_str(user_data).ok()?;
    let wf = ud.write_files.into_iter().find(|w| w.path == path)?;
    let content = wf.content.unwrap_or_default();
    match wf.encoding.as_deref() {
        Some("b64" | "base64") => base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
        _ => Some(content),
    }
}

impl World {
    /// A runner's VM went away: the runner drops offline and a job it runs fails.
    pub(crate) fn runner_lost(&mut self, runner_id: u64) {
        let job = self.gh.runners.get_mut(&runner_id).and_then(|r| {
            r.online = false;
            r.busy = false;
            r.job.take()
        });
        if let Some(job_id) = job {
            self.finish_job(job_id, "failure", Instant::now());
        }
    }

    pub(crate) fn tick_guests(&mut self, now: Instant) {
        let vmids: Vec<u32> = self
            .pve
            .vms
            .values()
            .filter(|v| v.running && v.guest.is_some())
            .map(|v| v.vmid)
            .collect();
        for vmid in vmids {
            self.tick_guest(vmid, now);
        }
    }

    fn tick_guest(&mut self, vmid: u32, now: Instant) {
        let (phase, boot_at, next_at) = match self.pve.vms.get(&vmid).and_then(|v| v.guest.as_ref())
        {
            Some(g) => (g.phase.clone(), g.boot_at, g.next_at),
            None => return,
        };
        match phase {
            GuestPhase::Booting if now >= boot_at => {
                self.set_phase(vmid, GuestPhase::WaitingForCredential, None);
                self.look_for_credential(vmid, now);
            }
            GuestPhase::WaitingForCredential => self.look_for_credential(vmid, now),
            GuestPhase::Connecting { runner_id } if next_at.is_some_and(|t| now >= t) => {
                let os = self.pve.vms.get(&vmid).map(|v| v.os);
                let mut label_ids = Vec::new();
                if let Some(os) = os {
                    label_ids.push((
                        self.label_id(os.label()),
                        os.label().to_string(),
                        "read-only",
                    ));
                    label_ids.push((self.label_id("X64"), "X64".to_string(), "read-only"));
                }
                match self.gh.runners.get_mut(&runner_id) {
                    Some(r) => {
                        r.online = true;
                        r.os = os;
                        for l in label_ids {
                            if !r
                                .labels
                                .iter()
                                .any(|(_, n, _)| n.eq_ignore_ascii_case(&l.1))
                            {
                                r.labels.push(l);
                            }
                        }
                        self.set_phase(vmid, GuestPhase::Online { runner_id }, None);
                    }
                    None => {
                        self.set_phase(
                            vmid,
                            GuestPhase::CredentialRejected(
                                "runner registration was deleted".into(),
                            ),
                            None,
                        );
                    }
                }
            }
            GuestPhase::Online { runner_id } if !self.gh.runners.contains_key(&runner_id) => {
                // ephemeral runner removed after its job (or deleted): the runner process exits
                let off = now + self.cfg.timing.poweroff;
                self.set_phase(vmid, GuestPhase::PoweringOff, Some(off));
            }
            GuestPhase::PoweringOff if next_at.is_some_and(|t| now >= t) => self.power_off(vmid),
            _ => {}
        }
    }

    fn set_phase(&mut self, vmid: u32, phase: GuestPhase, next_at: Option<Instant>) {
        if let Some(g) = self.pve.vms.get_mut(&vmid).and_then(|v| v.guest.as_mut()) {
            g.phase = phase;
            g.next_at = next_at;
        }
    }

    fn look_for_credential(&mut self, vmid: u32, now: Instant) {
        let Some(vm) = self.pve.vms.get_mut(&vmid) else {
            return;
        };
        let jit_path = vm.os.jit_path();
        let vm_name = vm
            .name()
            .map_or_else(|| format!("vm-{vmid}"), str::to_string);
        let reg_labels = vm.registration_labels.clone();
        let Some(g) = vm.guest.as_mut() else { return };
        // the path unit reads and deletes an agent-written file; cloud-init's write_files comes first at boot
        let jit = g
            .user_data
            .as_deref()
            .and_then(|ud| user_data_file(ud, jit_path))
            .or_else(|| g.files.remove(jit_path));
        let user_data = g.user_data.clone();
        if let Some(cfg) = jit {
            let cfg = cfg.trim().to_string();
            let cred = self
                .gh
                .credentials
                .iter_mut()
                .find(|c| c.kind == CredentialKind::JitConfig && c.secret == cfg);
            let outcome = match cred {
                None => Err("unknown JIT config".to_string()),
                Some(c) if c.used => Err("JIT config already used".to_string()),
                Some(c) => {
                    c.used = true;
                    c.runner_id
                        .ok_or_else(|| "JIT config without runner".to_string())
                }
            };
            match outcome {
                Ok(rid) if self.gh.runners.contains_key(&rid) => {
                    let at = now + self.cfg.timing.runner_online;
                    let name = self.gh.runners.get(&rid).map(|r| r.name.clone());
                    if let Some(g) = self.pve.vms.get_mut(&vmid).and_then(|v| v.guest.as_mut()) {
                        g.runner_name = name;
                    }
                    self.set_phase(vmid, GuestPhase::Connecting { runner_id: rid }, Some(at));
                }
                Ok(_) => self.set_phase(
                    vmid,
                    GuestPhase::CredentialRejected("runner registration was deleted".into()),
                    None,
                ),
                Err(e) => self.set_phase(vmid, GuestPhase::CredentialRejected(e), None),
            }
            return;
        }
        // the seed's registration-token flow: run-once.sh <url> <token> <name> <labels>
        let Some(ud) = user_data else { return };
        let token = self
            .gh
            .credentials
            .iter()
            .find(|c| {
                c.kind == CredentialKind::RegistrationToken
                    && c.expires > now
                    && ud.contains(&c.secret)
            })
            .map(|c| c.scope.clone());
        let Some(scope) = token else { return };
        if self
            .gh
            .runners
            .values()
            .any(|r| r.name == vm_name && r.scope == scope)
        {
            self.set_phase(
                vmid,
                GuestPhase::CredentialRejected("a runner exists with the same name".into()),
                None,
            );
            return;
        }
        let id = self.next_gh_id();
        let mut labels = Vec::new();
        for l in reg_labels {
            let lid = self.label_id(&l);
            let ty = if l.eq_ignore_ascii_case("self-hosted") {
                "read-only"
            } else {
                "custom"
            };
            labels.push((lid, l, ty));
        }
        if !labels
            .iter()
            .any(|(_, n, _)| n.eq_ignore_ascii_case("self-hosted"))
        {
            labels.insert(
                0,
                (
                    self.label_id("self-hosted"),
                    "self-hosted".into(),
                    "read-only",
                ),
            );
        }
        self.gh.runners.insert(
            id,
            Runner {
                id,
                name: vm_name.clone(),
                scope,
                labels,
                online: false,
                busy: false,
                ephemeral: true,
                group_id: 1,
                os: None,
                job: None,
                jit: false,
            },
        );
        if let Some(g) = self.pve.vms.get_mut(&vmid).and_then(|v| v.guest.as_mut()) {
            g.runner_name = Some(vm_name);
        }
        let at = now + self.cfg.timing.runner_online;
        self.set_phase(vmid, GuestPhase::Connecting { runner_id: id }, Some(at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_write_files() {
        let ud = "#cloud-config\nhostname: r1\nwrite_files:\n  - path: /var/lib/actions-runner-jit/jitconfig\n    permissions: '0600'\n    content: |\n      abc==\nruncmd:\n  - [systemctl, start, --wait, actions-runner-jit.service]\n";
        assert_eq!(
            user_data_file(ud, crate::LINUX_JIT_PATH)
                .as_deref()
                .map(str::trim),
            Some("abc==")
        );
        let ud = "#cloud-config\nwrite_files:\n- path: /var/lib/actions-runner-jit/jitconfig\n  encoding: b64\n  content: aGVsbG8=\n";
        assert_eq!(
            user_data_file(ud, crate::LINUX_JIT_PATH).as_deref(),
            Some("hello")
        );
        assert_eq!(
            user_data_file("#cloud-config\n", crate::LINUX_JIT_PATH),
            None
        );
    }
}
