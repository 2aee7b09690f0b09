//! No secret in the logs: the Proxmox token secret, the GitHub token and every credential the fake minted
//! are absent from everything `tracing` printed (text and JSON, every level) over provisions and deletions
//! in both injection modes, the registration-token flow and rollbacks; also from `Debug` of the
//! configuration and the reconciler, and from the `Display` of errors a pass returns.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

use super::fake::{Fake, api_error};
use super::harness::{GH_TOKEN, PVE_SECRET, Setup};

/// A `MakeWriter` appending to a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const POOLS: &str = r#"{"pools": [
  {"name": "snip", "template": "ubuntu-2404-runner-template", "labels": ["linux", "x64", "snip"],
   "vmid_start": 200, "vmid_end": 219, "runner_name_prefix": "snip-"},
  {"name": "agent", "template": "ubuntu-2404-runner-template", "labels": ["linux", "x64", "agent"],
   "injection": "agent", "vmid_start": 220, "vmid_end": 239, "runner_name_prefix": "agent-"},
  {"name": "seed", "template": "ubuntu-2404-runner-template", "labels": ["linux", "x64", "seed"],
   "vmid_start": 240, "vmid_end": 259, "runner_name_prefix": "seed-",
   "user_data_template": "seed-user-data.yaml"}
]}"#;

const SEED_TEMPLATE: &str = "#cloud-config\nhostname: ${runner_name}\nwrite_files:\n  - path: /var/lib/actions-runner-jit/registration-token\n    permissions: '0600'\n    content: ${registration_token}\nruncmd:\n  - [/opt/actions-runner/run-once.sh, '${repo_url}', '@/var/lib/actions-runner-jit/registration-token', '${runner_name}', '${runner_labels}']\n";

fn labels(pool: &str) -> [&str; 4] {
    ["self-hosted", "linux", "x64", pool]
}

#[tokio::test]
async fn no_secret_reaches_the_logs_debug_output_or_error_messages() {
    let text = Buffer::default();
    let json = Buffer::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::TRACE)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(text.clone()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(json.clone()),
        );
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = Fake::new();
    fake.world().faults.agent_after_pings = Some(2);
    for (job, pool) in [(1, "snip"), (2, "agent"), (3, "seed")] {
        fake.queue_job(job, &labels(pool));
    }
    let h = Setup::new()
        .pools(POOLS)
        .file("seed-user-data.yaml", SEED_TEMPLATE)
        .build(fake);
    assert!(h.rec.cfg.uses_registration_token("seed"));

    // Provisions in all three flavours.
    assert_eq!(h.pass().await.started, 3);
    assert_eq!(h.rec.failed_tasks(), 0);

    // Rollbacks: a snippet-mode and an agent-mode start that fail.
    for (job, pool) in [(4, "snip"), (5, "agent")] {
        h.fake
            .world()
            .faults
            .start_task_failures
            .push_back("start failed: QEMU exited with code 1".to_owned());
        h.fake.queue_job(job, &labels(pool));
    }
    let report = h.pass().await;
    assert_eq!(report.started, 2, "{report:?}");
    assert_eq!(h.rec.failed_tasks(), 2);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(h.pass().await.started, 2, "both retried after the back-off");
    // A pass that lists the new VMs settles their provisions (until then they count as in flight).
    assert_eq!(h.pass().await.started, 0);

    // Every job runs and ends; every VM is deleted.
    let names: Vec<String> = h
        .fake
        .world()
        .vms
        .values()
        .filter(|v| !v.template)
        .filter_map(|v| v.name.clone())
        .collect();
    assert_eq!(names.len(), 5);
    for (i, name) in names.iter().enumerate() {
        h.fake.runner_takes_job(name, i as u64 + 1);
        h.fake.runner_finishes(name);
    }
    assert_eq!(h.pass().await.deleting, 5);
    assert!(h.fake.runner_vmids().is_empty());
    assert!(h.snippet_files().is_empty());

    // A failing pass: its error text.
    h.fake
        .world()
        .faults
        .list_runners_errors
        .push_back(github_runners::Error::Auth(
            "401 Bad credentials".to_owned(),
        ));
    let pass_error = h
        .rec
        .pass()
        .await
        .err()
        .unwrap_or_else(|| panic!("the pass must fail"));
    let failed_clone = crate::error::Error::from(api_error(
        "POST",
        "/nodes/{node}/qemu/{vmid}/clone",
        500,
        "unable to create VM 200: config file already exists",
    ));

    let secrets: Vec<String> = {
        let w = h.fake.world();
        assert!(w.jit_issued.len() >= 6 && !w.reg_tokens.is_empty());
        let mut s = w.issued_secrets();
        s.push(PVE_SECRET.to_owned());
        s.push(GH_TOKEN.to_owned());
        s
    };
    let logs = text.text();
    let json_logs = json.text();
    assert!(
        logs.contains("plan pool=") && logs.contains("rolling back"),
        "the capture works:\n{logs}"
    );
    assert!(logs.lines().count() > 20 && json_logs.lines().count() > 20);
    let outputs = [
        ("text log", logs),
        ("json log", json_logs),
        ("Debug of RuntimeConfig", format!("{:?}", h.rec.cfg)),
        ("Debug of Reconciler", format!("{:?}", h.rec)),
        ("pass error", format!("{pass_error} / {pass_error:?}")),
        ("clone error", format!("{failed_clone} / {failed_clone:?}")),
    ];
    for (what, output) in &outputs {
        for secret in &secrets {
            assert!(
                !output.contains(secret.as_str()),
                "{what} contains the secret {}…",
                &secret[..6]
            );
        }
    }
    // The fake's own call log (method arguments) never held one either.
    let fake_calls: String = h
        .fake
        .world()
        .calls
        .iter()
        .map(|c| c.args.clone())
        .collect::<Vec<_>>()
        .join("\n");
    for secret in &secrets {
        assert!(!fake_calls.contains(secret.as_str()));
    }
}
