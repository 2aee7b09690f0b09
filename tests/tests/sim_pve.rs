//! Self-tests of the simulated Proxmox VE (and of guests), through plain HTTP.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tests::{GuestPhase, JobSpec, JobStatus, Sim, SimConfig, Unavailable, VmSpec};

fn fast() -> SimConfig {
    let mut c = SimConfig::default();
    c.timing.clone = Duration::from_millis(100);
    c.timing.start = Duration::from_millis(50);
    c.timing.boot = Duration::from_millis(150);
    c.timing.job = Duration::from_millis(150);
    c.timing.lock_timeout = Duration::from_millis(150);
    c.timing.status_interval = Duration::from_millis(400);
    c.timing.auth_failure_delay = Duration::from_millis(100);
    c
}

struct Pve {
    c: reqwest::Client,
    base: String,
    auth: String,
}

impl Pve {
    fn new(sim: &Sim) -> Self {
        Self {
            c: reqwest::Client::new(),
            base: sim.pve_url(),
            auth: sim.pve_auth_header(),
        }
    }

    async fn call(&self, method: Method, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        let mut rb = self
            .c
            .request(method.clone(), url)
            .header("Authorization", &self.auth);
        rb = if method == Method::GET || method == Method::DELETE {
            rb.query(params)
        } else {
            rb.form(params)
        };
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, &[]).await
    }

    async fn wait_task(&self, upid: &str) -> Value {
        let node = upid.split(':').nth(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (s, v) = self
                .get(&format!("/nodes/{node}/tasks/{upid}/status"))
                .await;
            assert_eq!(s, 200, "{v}");
            if v["data"]["status"] == "stopped" {
                return v["data"].clone();
            }
            assert!(Instant::now() < deadline, "task {upid} did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn clone(&self, node: &str, src: u32, newid: u32, name: &str) -> (u16, Value) {
        let id = newid.to_string();
        self.call(
            Method::POST,
            &format!("/nodes/{node}/qemu/{src}/clone"),
            &[
                ("newid", &id),
                ("name", name),
                ("description", "managed-by: ghr-dispatcher"),
            ],
        )
        .await
    }

    async fn clone_ok(&self, node: &str, src: u32, newid: u32, name: &str) {
        let (s, v) = self.clone(node, src, newid, name).await;
        assert_eq!(s, 200, "{v}");
        let t = self.wait_task(v["data"].as_str().unwrap()).await;
        assert_eq!(t["exitstatus"], "OK");
    }

    async fn start_ok(&self, node: &str, vmid: u32) {
        let (s, v) = self
            .call(
                Method::POST,
                &format!("/nodes/{node}/qemu/{vmid}/status/start"),
                &[],
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let t = self.wait_task(v["data"].as_str().unwrap()).await;
        assert_eq!(t["exitstatus"], "OK", "{t}");
    }
}

#[tokio::test]
async fn clone_creates_locked_vm_then_task_clears_lock_and_tags_normalise() {
    let sim = Sim::start(fast()).await.unwrap();
    let pve = Pve::new(&sim);
    let (s, v) = pve.get("/version").await;
    assert_eq!((s, v["data"]["version"].as_str()), (200, Some("9.1.1")));
    let (s, v) = pve.clone("pve1", 9000, 201, "gh-runner-201").await;
    assert_eq!(s, 200, "{v}");
    let upid = v["data"].as_str().unwrap().to_string();
    assert!(
        upid.starts_with("UPID:pve1:") && upid.contains(":qmclone:9000:dispatcher@pve!runners:"),
        "{upid}"
    );
    let (s, cfg) = pve.get("/nodes/pve1/qemu/201/config").await;
    assert_eq!(s, 200);
    assert_eq!(cfg["data"]["lock"], "clone");
    assert_eq!(cfg["data"]["name"], "gh-runner-201");
    assert_eq!(cfg["data"]["agent"], "1", "template config copied");
    assert!(cfg["data"].get("template").is_none());
    // config changes are refused while the clone holds the lock
    let (s, v) = pve
        .call(Method::PUT, "/nodes/pve1/qemu/201/config", &[("tags", "x")])
        .await;
    assert_eq!(s, 500);
    assert_eq!(v["message"], "VM 201 is locked (clone)\n");
    let task = pve.wait_task(&upid).await;
    assert_eq!(task["exitstatus"], "OK");
    assert_eq!(task["type"], "qmclone");
    let (_, cfg) = pve.get("/nodes/pve1/qemu/201/config").await;
    assert!(cfg["data"].get("lock").is_none(), "{cfg}");
    // PUT is synchronous (data null); tags are lowercased, deduplicated, sorted, ';'-joined
    let (s, v) = pve
        .call(
            Method::PUT,
            "/nodes/pve1/qemu/201/config",
            &[("tags", "GHR-Managed,ghr-pool-a;ghr-managed")],
        )
        .await;
    assert_eq!((s, &v["data"]), (200, &Value::Null));
    let (_, cfg) = pve.get("/nodes/pve1/qemu/201/config").await;
    assert_eq!(cfg["data"]["tags"], "ghr-managed;ghr-pool-a");
    // POST config returns a UPID
    let (s, v) = pve
        .call(
            Method::POST,
            "/nodes/pve1/qemu/201/config",
            &[("delete", "tags")],
        )
        .await;
    assert_eq!(s, 200);
    assert!(v["data"].as_str().unwrap().contains(":qmconfig:201:"));
    let (s, v) = pve
        .call(
            Method::PUT,
            "/nodes/pve1/qemu/201/config",
            &[("tags", "bad:tag")],
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["errors"]["tags"].is_string(), "{v}");
    // wrong node
    let (s, v) = pve.get("/nodes/pve2/qemu/201/config").await;
    assert_eq!(s, 500);
    assert_eq!(
        v["message"],
        "Configuration file 'nodes/pve2/qemu-server/201.conf' does not exist\n"
    );
    // a task polled on another node does not exist there
    let (s, _) = pve.get(&format!("/nodes/pve2/tasks/{upid}/status")).await;
    assert_eq!(s, 500);
    assert_eq!(sim.pve().created_vms().len(), 1);
    assert_eq!(pve.get("/cluster/nextid").await.1["data"], "100");
    sim.shutdown().await;
}

#[tokio::test]
async fn vmid_collisions_early_on_same_node_late_on_other_node() {
    let sim = Sim::start(fast()).await.unwrap();
    let pve = Pve::new(&sim);
    sim.pve()
        .add_vm(VmSpec::new(205, "pve2", "someone-elses-vm"))
        .unwrap();
    sim.pve().add_container(206, "pve1", "ct", true).unwrap();
    sim.pve()
        .add_vm(VmSpec::new(207, "pve1", "local-vm"))
        .unwrap();
    // same node: early 500
    let (s, v) = pve.clone("pve1", 9000, 207, "gh-runner-207").await;
    assert_eq!(s, 500);
    assert_eq!(
        v["message"],
        "unable to create VM 207: config file already exists\n"
    );
    // another node: accepted, the task fails
    let (s, v) = pve.clone("pve1", 9000, 205, "gh-runner-205").await;
    assert_eq!(s, 200);
    let t = pve.wait_task(v["data"].as_str().unwrap()).await;
    assert_eq!(t["exitstatus"], "VM 205 already exists on node 'pve2'");
    // a container holds the id too
    let (s, v) = pve.clone("pve1", 9000, 206, "gh-runner-206").await;
    assert_eq!(s, 200);
    let t = pve.wait_task(v["data"].as_str().unwrap()).await;
    assert_eq!(t["exitstatus"], "CT 206 already exists on node 'pve1'");
    assert_eq!(
        sim.pve().vm(205).unwrap().name.as_deref(),
        Some("someone-elses-vm")
    );
    // linked clone to another node from local storage is refused
    let (s, v) = pve
        .call(
            Method::POST,
            "/nodes/pve1/qemu/9000/clone",
            &[("newid", "210"), ("name", "x"), ("target", "pve2")],
        )
        .await;
    assert_eq!(s, 500);
    assert_eq!(
        v["message"],
        "can't clone VM to node 'pve2' (VM uses local storage)\n"
    );
    let (_, res) = pve
        .call(Method::GET, "/cluster/resources", &[("type", "vm")])
        .await;
    let types: Vec<&str> = res["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(types.contains(&"lxc") && types.contains(&"qemu"));
    assert_eq!(pve.get("/cluster/nextid").await.1["data"], "100");
    sim.shutdown().await;
}

#[tokio::test]
async fn clones_beyond_the_slots_fail_with_lock_timeout() {
    let mut cfg = fast();
    cfg.pve.clone_slots = 2;
    let sim = Sim::start(cfg).await.unwrap();
    let pve = Pve::new(&sim);
    let mut upids = Vec::new();
    for id in 301..=303 {
        let (s, v) = pve
            .clone("pve1", 9000, id, &format!("gh-runner-{id}"))
            .await;
        assert_eq!(s, 200, "{v}");
        upids.push(v["data"].as_str().unwrap().to_string());
    }
    let mut exits = Vec::new();
    for u in &upids {
        exits.push(
            pve.wait_task(u).await["exitstatus"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(exits[0], "OK");
    assert_eq!(exits[1], "OK");
    assert_eq!(
        exits[2],
        "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout"
    );
    assert!(sim.pve().vm(303).is_none());
    // the other node has its own slots
    pve.clone_ok("pve2", 9001, 304, "gh-runner-304").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn delete_refuses_running_and_locked_vms_and_records_mutations() {
    let sim = Sim::start(fast()).await.unwrap();
    let pve = Pve::new(&sim);
    let (_, v) = pve.clone("pve1", 9000, 401, "gh-runner-401").await;
    let (s, d) = pve
        .call(Method::DELETE, "/nodes/pve1/qemu/401", &[("purge", "1")])
        .await;
    assert_eq!(s, 500);
    assert_eq!(d["message"], "VM 401 is locked (clone)\n");
    pve.wait_task(v["data"].as_str().unwrap()).await;
    pve.start_ok("pve1", 401).await;
    let (s, d) = pve
        .call(
            Method::DELETE,
            "/nodes/pve1/qemu/401",
            &[("purge", "1"), ("destroy-unreferenced-disks", "1")],
        )
        .await;
    assert_eq!(s, 500);
    assert_eq!(d["message"], "VM 401 is running - destroy failed\n");
    let (_, cur) = pve.get("/nodes/pve1/qemu/401/status/current").await;
    assert_eq!(cur["data"]["status"], "running");
    let (_, v) = pve
        .call(Method::POST, "/nodes/pve1/qemu/401/status/stop", &[])
        .await;
    assert_eq!(
        pve.wait_task(v["data"].as_str().unwrap()).await["exitstatus"],
        "OK"
    );
    let (s, v) = pve
        .call(
            Method::DELETE,
            "/nodes/pve1/qemu/401",
            &[("purge", "1"), ("destroy-unreferenced-disks", "1")],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        pve.wait_task(v["data"].as_str().unwrap()).await["exitstatus"],
        "OK"
    );
    assert!(sim.pve().vm(401).is_none());
    let muts = sim.pve().mutations_on(401);
    assert_eq!(muts.len(), 5, "{muts:?}");
    assert!(
        sim.pve().mutations_on(9000).is_empty(),
        "cloning does not count as touching the template"
    );
    // shutdown of a stopped VM fails in its task
    sim.pve()
        .add_vm(VmSpec::new(402, "pve1", "stopped"))
        .unwrap();
    let (_, v) = pve
        .call(Method::POST, "/nodes/pve1/qemu/402/status/shutdown", &[])
        .await;
    assert_eq!(
        pve.wait_task(v["data"].as_str().unwrap()).await["exitstatus"],
        "VM 402 not running"
    );
    assert_eq!(sim.pve().max_existing("gh-runner-"), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn agent_answers_only_after_boot_and_resources_lag() {
    let sim = Sim::start(fast()).await.unwrap();
    let pve = Pve::new(&sim);
    let (_, v) = pve.clone("pve1", 9000, 501, "gh-runner-501").await;
    // just cloned: the pvestatd snapshot does not know it yet
    let (_, res) = pve
        .call(Method::GET, "/cluster/resources", &[("type", "vm")])
        .await;
    let e = res["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["vmid"] == 501)
        .unwrap()
        .clone();
    assert_eq!(e["status"], "unknown");
    assert!(e.get("name").is_none());
    assert_eq!(e["lock"], "clone", "lock is current");
    pve.wait_task(v["data"].as_str().unwrap()).await;
    let (s, p) = pve
        .call(Method::POST, "/nodes/pve1/qemu/501/agent/ping", &[])
        .await;
    assert_eq!(
        (s, p["message"].as_str()),
        (500, Some("VM 501 is not running\n"))
    );
    sim.pve().refresh_status();
    let (_, v) = pve
        .call(Method::POST, "/nodes/pve1/qemu/501/status/start", &[])
        .await;
    pve.wait_task(v["data"].as_str().unwrap()).await;
    // started, but the listing still says stopped until the next broadcast
    let (_, res) = pve
        .call(Method::GET, "/cluster/resources", &[("type", "vm")])
        .await;
    let e = res["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["vmid"] == 501)
        .unwrap()
        .clone();
    assert_eq!(
        (e["status"].as_str(), e["name"].as_str()),
        (Some("stopped"), Some("gh-runner-501"))
    );
    let (s, p) = pve
        .call(Method::POST, "/nodes/pve1/qemu/501/agent/ping", &[])
        .await;
    assert_eq!(
        (s, p["message"].as_str()),
        (500, Some("QEMU guest agent is not running\n"))
    );
    let ok = sim
        .wait_until(Duration::from_secs(3), |s| {
            s.pve()
                .vm(501)
                .and_then(|v| v.guest)
                .is_some_and(|g| g.phase != GuestPhase::Booting)
        })
        .await;
    assert!(ok);
    let (s, p) = pve
        .call(Method::POST, "/nodes/pve1/qemu/501/agent/ping", &[])
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["data"], json!({"result": {}}));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (_, res) = pve
        .call(Method::GET, "/cluster/resources", &[("type", "vm")])
        .await;
    let e = res["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["vmid"] == 501)
        .unwrap()
        .clone();
    assert_eq!(e["status"], "running");
    sim.shutdown().await;
}

#[tokio::test]
async fn schema_validation_auth_and_unknown_methods() {
    let sim = Sim::start(fast()).await.unwrap();
    let pve = Pve::new(&sim);
    let (s, v) = pve
        .call(
            Method::POST,
            "/nodes/pve1/qemu/9000/clone",
            &[("newid", "601"), ("bogus", "1")],
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        v["errors"]["bogus"],
        "property is not defined in schema and the schema does not allow additional properties"
    );
    assert_eq!(v["message"], "Parameter verification failed.\n");
    let (s, v) = pve
        .call(
            Method::POST,
            "/nodes/pve1/qemu/9000/clone",
            &[("newid", "601"), ("full", "true")],
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        v["errors"]["full"],
        "type check ('boolean') failed - got 'true'"
    );
    let (s, v) = pve
        .call(
            Method::POST,
            "/nodes/pve1/qemu/9000/clone",
            &[("newid", "12")],
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["errors"]["newid"].as_str().unwrap().contains("minimum"));
    // JSON bodies may carry real booleans
    let resp = reqwest::Client::new()
        .post(format!("{}/nodes/pve1/qemu/9000/clone", sim.pve_url()))
        .header("Authorization", sim.pve_auth_header())
        .json(&json!({"newid": 602, "full": false, "name": "gh-runner-602"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // POST /cloudinit does not exist (PUT does); unknown paths are 501 too
    let (s, v) = pve
        .call(Method::POST, "/nodes/pve1/qemu/9000/cloudinit", &[])
        .await;
    assert_eq!(s, 501);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("Method 'POST /nodes/pve1/qemu/9000/cloudinit' not implemented")
    );
    assert_eq!(pve.get("/no/such/path").await.0, 501);
    // the error message is also the HTTP reason phrase
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = sim
            .pve_url()
            .trim_start_matches("http://")
            .trim_end_matches("/api2/json")
            .to_string();
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "DELETE /api2/json/nodes/pve1/qemu/777 HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            sim.pve_auth_header()
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = String::new();
        tcp.read_to_string(&mut buf).await.unwrap();
        assert!(
            buf.starts_with("HTTP/1.1 500 Configuration file 'nodes/pve1/qemu-server/777.conf' does not exist\r\n"),
            "{buf}"
        );
    }
    // wrong token: 401 after the configured delay
    let t0 = Instant::now();
    let resp = reqwest::Client::new()
        .get(format!("{}/version", sim.pve_url()))
        .header("Authorization", "PVEAPIToken=dispatcher@pve!runners=wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(t0.elapsed() >= Duration::from_millis(100));
    let counts = sim.pve().requests();
    assert_eq!(
        counts[&(
            "POST".to_string(),
            "/nodes/{node}/qemu/{vmid}/clone".to_string(),
            400
        )],
        3
    );
    assert_eq!(counts[&("GET".to_string(), "/version".to_string(), 401)], 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn unavailable_then_back_and_write_faults() {
    let mut cfg = fast();
    cfg.faults.pve_write_error_rate = 1.0;
    let sim = Sim::start(cfg).await.unwrap();
    let pve = Pve::new(&sim);
    let (s, _) = pve.clone("pve1", 9000, 701, "gh-runner-701").await;
    assert!(s == 500 || s == 595, "{s}");
    assert!(
        sim.pve().vm(701).is_none(),
        "a failed write is not performed"
    );
    assert_eq!(pve.get("/version").await.0, 200, "reads are not faulted");
    sim.pve()
        .set_unavailable(Some(Unavailable::ServiceUnavailable))
        .await
        .unwrap();
    assert_eq!(pve.get("/version").await.0, 503);
    sim.pve()
        .set_unavailable(Some(Unavailable::Refused))
        .await
        .unwrap();
    let err = reqwest::Client::new()
        .get(format!("{}/version", sim.pve_url()))
        .send()
        .await;
    assert!(err.is_err(), "connection refused");
    sim.pve().set_unavailable(None).await.unwrap();
    assert_eq!(pve.get("/version").await.0, 200);
    sim.shutdown().await;
}

async fn mint_jit(sim: &Sim, name: &str, labels: &[&str]) -> String {
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/repos/NREL/EnergyPlus/actions/runners/generate-jitconfig",
            sim.github_url()
        ))
        .bearer_auth("github_pat_sim_0123456789")
        .json(
            &json!({"name": name, "runner_group_id": 1, "labels": labels, "work_folder": "_work"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let v: Value = resp.json().await.unwrap();
    v["encoded_jit_config"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn snippet_guest_runs_one_job_and_powers_off() {
    let sim = Sim::start(fast()).await.unwrap();
    let pve = Pve::new(&sim);
    let gh = sim.github();
    let run = gh.queue_run(
        "NREL/EnergyPlus",
        vec![JobSpec::new(
            "build",
            &["self-hosted", "Linux", "ubuntu-24.04"],
        )],
    );
    let jit = mint_jit(&sim, "gh-runner-801", &["ubuntu-24.04", "linux"]).await;
    let snippet = sim.snippets_dir().unwrap().join("gh-runner-801.yaml");
    std::fs::write(
        &snippet,
        format!(
            "#cloud-config\nhostname: gh-runner-801\nwrite_files:\n  - path: /var/lib/actions-runner-jit/jitconfig\n    permissions: '0600'\n    content: |\n      {jit}\nruncmd:\n  - [systemctl, start, --wait, actions-runner-jit.service]\npower_state:\n  mode: poweroff\n"
        ),
    )
    .unwrap();
    pve.clone_ok("pve1", 9000, 801, "gh-runner-801").await;
    let (s, _) = pve
        .call(
            Method::PUT,
            "/nodes/pve1/qemu/801/config",
            &[("cicustom", "user=ghr-snippets:snippets/gh-runner-801.yaml")],
        )
        .await;
    assert_eq!(s, 200);
    pve.start_ok("pve1", 801).await;
    std::fs::remove_file(&snippet).unwrap(); // deleting the snippet after start does not affect the guest
    let done = sim
        .wait_until(Duration::from_secs(5), |s| s.github().all_jobs_completed())
        .await;
    assert!(done, "{:?}", gh.jobs());
    let job = gh.job(run.job_ids[0]).unwrap();
    assert_eq!(job.conclusion.as_deref(), Some("success"));
    assert_eq!(job.runner_name.as_deref(), Some("gh-runner-801"));
    assert!(job.started.unwrap() >= job.queued.unwrap());
    let off = sim
        .wait_until(Duration::from_secs(2), |s| {
            s.pve().vm(801).is_some_and(|v| !v.running)
        })
        .await;
    assert!(off);
    assert!(gh.runners().is_empty(), "ephemeral runner removed");
    assert_eq!(gh.removed_runners().len(), 1);
    assert_eq!(
        sim.pve().vm(801).unwrap().guest.unwrap().phase,
        GuestPhase::Off
    );
    // a second start of a VM whose snippet is gone fails like PVE
    let (_, v) = pve
        .call(Method::POST, "/nodes/pve1/qemu/801/status/start", &[])
        .await;
    let t = pve.wait_task(v["data"].as_str().unwrap()).await;
    assert_eq!(
        t["exitstatus"],
        "volume 'ghr-snippets:snippets/gh-runner-801.yaml' does not exist"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn agent_guest_and_unmatched_and_uncredentialed_guests() {
    let sim = Sim::start(fast()).await.unwrap();
    let pve = Pve::new(&sim);
    let gh = sim.github();
    gh.queue_run(
        "NREL/EnergyPlus",
        vec![JobSpec::new("gpu", &["self-hosted", "gpu"])],
    );
    let run = gh.queue_run(
        "NREL/EnergyPlus",
        vec![JobSpec::new("build", &["self-hosted", "LINUX"])],
    );
    let jit = mint_jit(&sim, "gh-runner-901", &["linux"]).await;
    pve.clone_ok("pve1", 9000, 901, "gh-runner-901").await;
    pve.clone_ok("pve1", 9000, 902, "gh-runner-902").await;
    pve.start_ok("pve1", 901).await;
    pve.start_ok("pve1", 902).await;
    let booted = sim
        .wait_until(Duration::from_secs(3), |s| {
            s.pve()
                .vm(901)
                .and_then(|v| v.guest)
                .is_some_and(|g| g.phase == GuestPhase::WaitingForCredential)
        })
        .await;
    assert!(booted);
    let (s, v) = pve
        .call(
            Method::POST,
            "/nodes/pve1/qemu/901/agent/file-write",
            &[
                ("file", "/var/lib/actions-runner-jit/jitconfig"),
                ("content", &jit),
            ],
        )
        .await;
    assert_eq!((s, &v["data"]), (200, &Value::Null));
    let done = sim
        .wait_until(Duration::from_secs(5), |s| {
            s.github()
                .job(run.job_ids[0])
                .is_some_and(|j| j.status == JobStatus::Completed)
        })
        .await;
    assert!(done);
    assert!(
        sim.wait_until(Duration::from_secs(2), |s| s
            .pve()
            .vm(901)
            .is_some_and(|v| !v.running))
            .await
    );
    // the unmatched gpu job stays queued; the VM without credential idles, running
    assert_eq!(gh.jobs_with_status(JobStatus::Queued).len(), 1);
    let v902 = sim.pve().vm(902).unwrap();
    assert!(v902.running);
    assert_eq!(v902.guest.unwrap().phase, GuestPhase::WaitingForCredential);
    assert_eq!(sim.pve().max_concurrent("gh-runner-"), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn windows_guest_reads_agent_file_written_pre_encoded() {
    use base64::Engine as _;
    let mut cfg = fast();
    cfg.pve.templates.push(tests::TemplateSpec::windows(
        9100,
        "pve2",
        "windows-2022-runner-template",
    ));
    let sim = Sim::start(cfg).await.unwrap();
    let pve = Pve::new(&sim);
    let run = sim.github().queue_run(
        "NREL/EnergyPlus",
        vec![JobSpec::new("win", &["self-hosted", "windows"])],
    );
    let jit = mint_jit(&sim, "win-runner-950", &["windows"]).await;
    pve.clone_ok("pve2", 9100, 950, "win-runner-950").await;
    pve.start_ok("pve2", 950).await;
    let ready = sim
        .wait_until(Duration::from_secs(3), |s| {
            s.pve()
                .vm(950)
                .and_then(|v| v.guest)
                .is_some_and(|g| g.phase == GuestPhase::WaitingForCredential)
        })
        .await;
    assert!(ready);
    // the Linux path means nothing to a Windows guest
    let encoded = base64::engine::general_purpose::STANDARD.encode(&jit);
    let (s, _) = pve
        .call(
            Method::POST,
            "/nodes/pve2/qemu/950/agent/file-write",
            &[
                ("file", tests::LINUX_JIT_PATH),
                ("content", &encoded),
                ("encode", "0"),
            ],
        )
        .await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        sim.github().job(run.job_ids[0]).unwrap().status,
        JobStatus::Queued
    );
    let (s, _) = pve
        .call(
            Method::POST,
            "/nodes/pve2/qemu/950/agent/file-write",
            &[
                ("file", tests::WINDOWS_JIT_PATH),
                ("content", &encoded),
                ("encode", "0"),
            ],
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        sim.wait_until(Duration::from_secs(3), |s| s.github().all_jobs_completed())
            .await
    );
    let runner = sim.github().removed_runners();
    assert_eq!(runner[0].1, "win-runner-950");
    sim.shutdown().await;
}

/// The `upid`s of a task list answer, in order.
fn upids(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|t| t["upid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn node_task_list_active_first_then_archive_with_pves_filters() {
    let mut cfg = fast();
    cfg.timing.task_archive = Duration::from_millis(800);
    let sim = Sim::start(cfg).await.unwrap();
    let pve = Pve::new(&sim);
    let h = sim.pve();
    let (s, v) = pve.clone("pve1", 9000, 201, "gh-runner-201").await;
    assert_eq!(s, 200, "{v}");
    let clone = v["data"].as_str().unwrap().to_string();
    let failed = h.add_task(
        "pve1",
        "qmstart",
        "205",
        "dispatcher@pve!runners",
        Duration::from_millis(20),
        "VM 205 already running",
    );
    let backup = h.add_task(
        "pve1",
        "vzdump",
        "",
        "root@pam",
        Duration::from_secs(30),
        "OK",
    );
    let elsewhere = h.add_task(
        "pve2",
        "qmstart",
        "301",
        "dispatcher@pve!runners",
        Duration::from_millis(10),
        "OK",
    );
    pve.wait_task(&clone).await;
    pve.wait_task(&failed).await;
    pve.wait_task(&elsewhere).await;
    let list = |q: &'static [(&'static str, &'static str)]| {
        let pve = &pve;
        async move { pve.call(Method::GET, "/nodes/pve1/tasks", q).await }
    };

    // Finished, not archived yet: only the active list has them (newest first).
    let (s, v) = list(&[("source", "active")]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        upids(&v),
        [backup.as_str(), failed.as_str(), clone.as_str()]
    );
    let running = &v["data"][0];
    assert_eq!(running["status"], "RUNNING");
    assert!(running.get("endtime").is_none(), "{running}");
    assert_eq!(running["user"], "root@pam");
    assert!(running.get("tokenid").is_none());
    let f = &v["data"][1];
    assert_eq!(f["status"], "VM 205 already running");
    assert!(f["endtime"].as_i64().unwrap() >= f["starttime"].as_i64().unwrap());
    assert_eq!(
        (&f["user"], &f["tokenid"]),
        (&json!("dispatcher@pve"), &json!("runners"))
    );
    assert_eq!(
        (&f["type"], &f["id"], &f["node"]),
        (&json!("qmstart"), &json!("205"), &json!("pve1"))
    );
    assert_eq!(v["data"][2]["status"], "OK");
    assert!(
        upids(&list(&[]).await.1).is_empty(),
        "default source is the archive"
    );
    assert_eq!(upids(&list(&[("source", "all")]).await.1).len(), 3);

    // Archived: the active list keeps only the running task; the archive follows it,
    // most recently finished first.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        upids(&list(&[("source", "active")]).await.1),
        [backup.as_str()]
    );
    assert_eq!(upids(&list(&[]).await.1), [clone.as_str(), failed.as_str()]);
    let (_, all) = list(&[("source", "all")]).await;
    assert_eq!(
        upids(&all),
        [backup.as_str(), clone.as_str(), failed.as_str()]
    );
    assert_eq!(all["data"][1]["status"], "OK");
    assert!(all["data"][1]["endtime"].is_i64());
    assert!(!upids(&all).contains(&elsewhere), "tasks of that node only");
    let (_, v2) = pve
        .call(Method::GET, "/nodes/pve2/tasks", &[("source", "all")])
        .await;
    assert_eq!(upids(&v2), [elsewhere.as_str()]);

    // Filters.
    let all_with = |extra: &'static [(&'static str, &'static str)]| {
        let pve = &pve;
        async move {
            let mut q = vec![("source", "all")];
            q.extend_from_slice(extra);
            upids(&pve.call(Method::GET, "/nodes/pve1/tasks", &q).await.1)
        }
    };
    assert_eq!(
        all_with(&[("typefilter", "qmclone")]).await,
        [clone.as_str()]
    );
    assert_eq!(all_with(&[("vmid", "205")]).await, [failed.as_str()]);
    assert_eq!(all_with(&[("userfilter", "ROOT")]).await, [backup.as_str()]);
    assert_eq!(
        all_with(&[("userfilter", "runners")]).await,
        Vec::<String>::new()
    );
    // errors=1 hides OK tasks only (a running task's class is "unknown").
    assert_eq!(
        all_with(&[("errors", "1")]).await,
        [backup.as_str(), failed.as_str()]
    );
    assert_eq!(all_with(&[("statusfilter", "ok")]).await, [clone.as_str()]);
    assert_eq!(
        all_with(&[("statusfilter", "error,ok")]).await,
        [clone.as_str(), failed.as_str()]
    );
    assert_eq!(
        all_with(&[("limit", "2")]).await,
        [backup.as_str(), clone.as_str()]
    );
    assert_eq!(
        all_with(&[("start", "1"), ("limit", "1")]).await,
        [clone.as_str()]
    );
    assert_eq!(all_with(&[("limit", "0")]).await, Vec::<String>::new());
    let start = u64::from_str_radix(clone.split(':').nth(4).unwrap(), 16).unwrap();
    let after = (start + 3600).to_string();
    let before = (start - 3600).to_string();
    let (_, v) = pve
        .call(
            Method::GET,
            "/nodes/pve1/tasks",
            &[("source", "all"), ("since", &after)],
        )
        .await;
    assert!(upids(&v).is_empty());
    let (_, v) = pve
        .call(
            Method::GET,
            "/nodes/pve1/tasks",
            &[("source", "all"), ("until", &before)],
        )
        .await;
    assert!(upids(&v).is_empty());
    let (_, v) = pve
        .call(
            Method::GET,
            "/nodes/pve1/tasks",
            &[("source", "all"), ("since", &before), ("until", &after)],
        )
        .await;
    assert_eq!(upids(&v).len(), 3);

    // Schema validation and unknown nodes.
    let (s, v) = list(&[("source", "running")]).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["errors"]["source"].is_string(), "{v}");
    let (s, _) = list(&[("errors", "true")]).await;
    assert_eq!(s, 400);
    let (s, _) = pve.get("/nodes/pve9/tasks").await;
    assert_eq!(s, 500);
    sim.shutdown().await;
}

#[tokio::test]
async fn node_task_list_without_sys_audit_shows_only_the_tokens_tasks() {
    let mut cfg = fast();
    cfg.pve.privileges.retain(|(path, _)| path != "/");
    let sim = Sim::start(cfg).await.unwrap();
    let pve = Pve::new(&sim);
    let h = sim.pve();
    let own = h.add_task(
        "pve1",
        "qmstart",
        "205",
        "dispatcher@pve!runners",
        Duration::from_secs(30),
        "OK",
    );
    let _backup = h.add_task(
        "pve1",
        "vzdump",
        "",
        "root@pam",
        Duration::from_secs(30),
        "OK",
    );
    let _other_token = h.add_task(
        "pve1",
        "qmstart",
        "206",
        "dispatcher@pve!other",
        Duration::from_secs(30),
        "OK",
    );
    let (s, v) = pve
        .call(Method::GET, "/nodes/pve1/tasks", &[("source", "all")])
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(upids(&v), [own.as_str()]);
    sim.shutdown().await;
}

/// A `proxmox-api` client for the simulator (the default token).
fn api_client(sim: &Sim) -> std::sync::Arc<dyn proxmox_api::ProxmoxApi> {
    let c = SimConfig::default();
    let vars = [
        ("PROXMOX_URL", sim.pve_url()),
        ("PROXMOX_TOKEN_ID", c.pve.token_id),
        ("PROXMOX_TOKEN_SECRET", c.pve.token_secret),
    ];
    let config = proxmox_api::ProxmoxConfig::from_lookup(|k| {
        vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    std::sync::Arc::new(proxmox_api::ProxmoxClient::new(config).unwrap())
}

/// 30 tasks of 0.2–1.65 s over two nodes, waited for concurrently: with `wait_task` (one status
/// poller per task) and with a `TaskWatcher` (one list poll per node and tick). Both give the
/// same results; the watcher sends no status requests and far fewer requests overall.
#[tokio::test]
async fn task_watcher_against_the_simulator_polls_each_node_once_per_tick() {
    use proxmox_api::{Error, TaskWatcher, TaskWatcherOptions, Upid};
    let sim = Sim::start(fast()).await.unwrap();
    let h = sim.pve();
    let api = api_client(&sim);
    let burst = |round: u32| -> Vec<Upid> {
        (0..30u32)
            .map(|i| {
                let node = if i % 2 == 0 { "pve1" } else { "pve2" };
                let exit = match i {
                    7 => "WARNINGS: 2".to_string(),
                    13 => format!("VM {} already running", 500 + i),
                    _ => "OK".to_string(),
                };
                let d = Duration::from_millis(200 + 50 * u64::from(i));
                let id = (round * 100 + 500 + i).to_string();
                h.add_task(node, "qmstart", &id, "dispatcher@pve!runners", d, &exit)
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    let check = |i: usize, r: Result<proxmox_api::TaskStatus, Error>| match i {
        7 => assert_eq!(r.unwrap().warnings(), Some(2)),
        13 => match r {
            Err(Error::TaskFailed { exitstatus, .. }) => {
                assert_eq!(exitstatus, "VM 513 already running");
            }
            other => panic!("{other:?}"),
        },
        _ => assert!(r.unwrap().is_success()),
    };
    let status_ep = "/nodes/{node}/tasks/{upid}/status";
    let list_ep = "/nodes/{node}/tasks";

    // Per-task polling.
    let tasks = burst(0);
    let handles: Vec<_> = tasks
        .iter()
        .map(|u| {
            let (api, u) = (api.clone(), u.clone());
            tokio::spawn(async move { api.wait_task(&u, Duration::from_secs(10)).await })
        })
        .collect();
    for (i, jh) in handles.into_iter().enumerate() {
        check(i, jh.await.unwrap());
    }
    let per_task = h.request_count("GET", status_ep);
    assert_eq!(h.request_count("GET", list_ep), 0);

    // Shared watcher, default options (500 ms interval).
    let watcher = TaskWatcher::new(api.clone(), TaskWatcherOptions::default());
    let tasks = burst(1);
    let started = Instant::now();
    let handles: Vec<_> = tasks
        .iter()
        .map(|u| {
            let (w, u) = (watcher.clone(), u.clone());
            tokio::spawn(async move { w.wait(&u, Duration::from_secs(10)).await })
        })
        .collect();
    for (i, jh) in handles.into_iter().enumerate() {
        check(i, jh.await.unwrap());
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lists = h.request_count("GET", list_ep);
    assert_eq!(
        h.request_count("GET", status_ep),
        per_task,
        "no status requests"
    );
    // The longest task takes 1.65 s: first poll at 0.15 s, then every 0.5 s → at most 5 per node.
    assert!(lists <= 10, "{lists} list requests in {took:?}");
    assert!(
        per_task >= 5 * lists,
        "wait_task: {per_task} requests, watcher: {lists}"
    );
    println!(
        "30 tasks: wait_task sent {per_task} status requests; TaskWatcher sent {lists} list requests (in {took:?})"
    );
    sim.shutdown().await;
}
