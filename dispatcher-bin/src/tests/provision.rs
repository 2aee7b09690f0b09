//! A queued job becomes exactly one VM: template, VMID, name, marker, tags, and the credential in the
//! right place for each injection mode.

use std::collections::BTreeSet;

use super::fake::{Fake, FakeVm};
use super::harness::{JOB_LABELS, NOW, Setup};

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A cluster where the lowest ids of the range are held: 200 by a foreign VM on pve1, 201 by a container
/// on pve2. The runner template exists on both nodes (9000 on pve1, 9001 on pve2).
fn crowded_cluster() -> Fake {
    let fake = Fake::new();
    {
        let mut w = fake.world();
        w.vms
            .insert(200, FakeVm::new("pve1", Some("build-cache")).running());
        w.containers.insert(201, ("pve2".to_owned(), false));
    }
    fake
}

#[tokio::test]
async fn queued_job_snippet_mode_makes_one_vm_with_every_mark() {
    let fake = crowded_cluster();
    fake.queue_job(4242, JOB_LABELS);
    let h = Setup::new().build(fake);

    let report = h.pass().await;
    assert_eq!(report.started, 1, "{report:?}");
    assert_eq!(report.queued_jobs, 1);
    assert_eq!(h.rec.failed_tasks(), 0);

    let name = h.runner_name(202);
    {
        let w = h.fake.world();
        assert_eq!(w.count("clone_vm"), 1);
        assert_eq!(w.count("start"), 1);
        let clone = w
            .calls
            .iter()
            .find(|c| c.method == "clone_vm")
            .unwrap_or_else(|| panic!("no clone"));
        assert_eq!(
            clone.args,
            format!(
                "node=pve1 template=9000 newid=202 name=Some({name:?}) full=None target=None storage=None"
            ),
            "template on the pool's node, lowest free VMID (200 foreign VM, 201 container elsewhere), linked clone"
        );

        let vm = w.vms.get(&202).unwrap_or_else(|| panic!("VM 202 missing"));
        assert_eq!(vm.node, "pve1");
        assert_eq!(vm.name.as_deref(), Some(name.as_str()));
        assert_eq!(vm.status, "running");
        assert_eq!(vm.lock, None);
        let description = vm.description.clone().unwrap_or_default();
        let marker = pool_scheduler::marks::parse_description_marker(&description)
            .unwrap_or_else(|| panic!("no marker in {description:?}"));
        assert_eq!(marker.pool, "default");
        assert_eq!(marker.runner, name);
        assert_eq!(marker.created, NOW);
        assert!(description.contains("job=4242"), "{description}");
        assert!(
            description.contains("https://github.com/acme/widgets"),
            "{description}"
        );
        let tags: BTreeSet<String> = vm.tags.iter().cloned().collect();
        let instance = format!("ghr-inst-{}", h.rec.cfg.instance());
        assert_eq!(
            tags,
            set(&["ghr-managed", "ghr-pool-default", "ghr-ready", &instance])
        );
        assert_eq!(marker.instance.as_deref(), Some(h.rec.cfg.instance()));
        let cicustom = format!("user=ghr-snippets:snippets/{name}.yaml");
        assert_eq!(vm.cicustom.as_deref(), Some(cicustom.as_str()));

        // The JIT registration: one, named like the VM, with the pool's labels (+ self-hosted), group 1.
        assert_eq!(w.jit_requests.len(), 1);
        let req = &w.jit_requests[0];
        assert_eq!(req.name, name);
        assert_eq!(req.runner_group_id, 1);
        let labels: BTreeSet<String> = req.labels.iter().map(|l| l.to_lowercase()).collect();
        assert_eq!(labels, set(&["self-hosted", "linux", "x64"]));
        assert_eq!(w.runners.len(), 1);

        // The snippet existed when the VM started, held the JIT config, and is gone now.
        assert_eq!(w.starts.len(), 1);
        let started = &w.starts[0];
        assert_eq!(started.vmid, 202);
        assert_eq!(started.cicustom.as_deref(), Some(cicustom.as_str()));
        let snippet = started
            .snippet
            .clone()
            .unwrap_or_else(|| panic!("snippet file missing at start"));
        let jit = &w.jit_issued[0].1;
        assert!(snippet.starts_with("#cloud-config"), "{snippet}");
        assert!(
            snippet.contains(jit.as_str()),
            "JIT config not in the user-data"
        );
        assert_eq!(w.count("agent_ping") + w.count("agent_file_write"), 0);
        // Nothing else was touched.
        assert!(w.mutations_of(200).is_empty());
        assert!(w.vms[&200].status == "running" && w.vms.contains_key(&9000));
    }
    assert!(
        h.snippet_files().is_empty(),
        "snippet left: {:?}",
        h.snippet_files()
    );

    // Later passes while the VM boots: no second VM for the same job.
    h.clock.advance(20);
    h.pass().await;
    h.clock.advance(20);
    h.pass().await;
    let w = h.fake.world();
    assert_eq!(w.count("clone_vm"), 1);
    assert_eq!(w.count("start"), 1);
    assert_eq!(w.count("delete_vm"), 0);
}

#[tokio::test]
async fn queued_job_agent_mode_writes_the_jit_config_after_the_agent_answers() {
    let fake = crowded_cluster();
    fake.world().faults.agent_after_pings = Some(3);
    fake.queue_job(7, JOB_LABELS);
    let h = Setup::new().var("RUNNER_INJECTION", "agent").build(fake);

    let report = h.pass().await;
    assert_eq!(report.started, 1);
    assert_eq!(h.rec.failed_tasks(), 0);
    let name = h.runner_name(202);
    let w = h.fake.world();
    assert_eq!(w.count("clone_vm"), 1);
    assert_eq!(w.count("start"), 1);
    let vm = &w.vms[&202];
    assert_eq!(vm.cicustom, None, "agent mode sets no cicustom");
    assert_eq!(vm.name.as_deref(), Some(name.as_str()));
    assert_eq!(vm.pings, 3, "the write waited for the agent");
    assert_eq!(w.count("agent_ping"), 3);
    assert_eq!(w.count("agent_file_write"), 1);
    let (jit_name, jit) = &w.jit_issued[0];
    assert_eq!(jit_name, &name);
    assert_eq!(
        vm.files.get(cloudinit_render::LINUX_JIT_PATH),
        Some(jit),
        "exactly the JIT config at the watched path"
    );
    assert_eq!(vm.files.len(), 1);
    let tags: BTreeSet<String> = vm.tags.iter().cloned().collect();
    let instance = format!("ghr-inst-{}", h.rec.cfg.instance());
    assert_eq!(
        tags,
        set(&["ghr-managed", "ghr-pool-default", "ghr-ready", &instance])
    );
    assert_eq!(w.starts[0].snippet, None);

    // Order: configure (no ready tag) → start → pings → file-write → ready tag.
    let steps: Vec<(&str, String)> = w
        .calls
        .iter()
        .filter(|c| c.vmid == Some(202) && c.method != "task_status")
        .map(|c| (c.method, c.args.clone()))
        .collect();
    let methods: Vec<&str> = steps.iter().map(|(m, _)| *m).collect();
    assert_eq!(
        methods,
        [
            "clone_vm",
            "update_config",
            "start",
            "agent_ping",
            "agent_ping",
            "agent_ping",
            "agent_file_write",
            "update_config"
        ]
    );
    assert!(
        !steps[1].1.contains("ghr-ready"),
        "ready before injection: {}",
        steps[1].1
    );
    assert!(steps[7].1.contains("ghr-ready"), "{}", steps[7].1);
    drop(w);
    assert!(h.snippet_files().is_empty());
}

#[tokio::test]
async fn template_on_another_node_is_cloned_with_target() {
    let fake = Fake::new();
    fake.world().vms.remove(&9000);
    fake.queue_job(1, JOB_LABELS);
    let h = Setup::new().build(fake);
    h.pass().await;
    let w = h.fake.world();
    let clone = w
        .calls
        .iter()
        .find(|c| c.method == "clone_vm")
        .unwrap_or_else(|| panic!("no clone"));
    assert!(
        clone.args.starts_with("node=pve2 template=9001 newid=200")
            && clone.args.contains("target=Some(\"pve1\")"),
        "{}",
        clone.args
    );
    assert_eq!(w.vms[&200].node, "pve1");
    assert_eq!(w.vms[&200].status, "running");
}

#[tokio::test]
async fn jobs_for_other_labels_start_nothing() {
    let fake = Fake::new();
    fake.queue_job(1, &["ubuntu-latest"]);
    fake.queue_job(2, &["self-hosted", "gpu"]);
    let h = Setup::new().build(fake);
    let report = h.pass().await;
    assert_eq!(report.started, 0);
    assert_eq!(report.queued_jobs, 2);
    let w = h.fake.world();
    assert_eq!(w.count("clone_vm"), 0);
    assert_eq!(w.count("generate_jit_config"), 0);
}
