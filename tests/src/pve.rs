//! The simulated Proxmox VE API (`/api2/json`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method as HttpMethod, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Shared;
use crate::config::Faults;
use crate::schema::valid_tag;
use crate::server::set_reason;
use crate::world::{
    CreatedVm, GuestPhase, Mutation, Service, SnapEntry, Task, TaskEffect, Unavailable, Vm,
    VmEventKind, World,
};

/// A PVE error answer.
#[derive(Debug)]
pub(crate) struct ApiErr {
    status: u16,
    message: String,
    errors: Option<BTreeMap<String, String>>,
}

impl ApiErr {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: None,
        }
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
    fn params(errors: BTreeMap<String, String>) -> Self {
        Self {
            status: 400,
            message: "Parameter verification failed.".into(),
            errors: Some(errors),
        }
    }
    fn param(name: &str, msg: impl Into<String>) -> Self {
        Self::params(BTreeMap::from([(name.to_string(), msg.into())]))
    }
}

type Params = BTreeMap<String, String>;
type ApiResult = Result<Value, ApiErr>;

fn respond(result: ApiResult) -> (u16, Response) {
    match result {
        Ok(v) => (
            200,
            (StatusCode::OK, axum::Json(json!({ "data": v }))).into_response(),
        ),
        Err(e) => {
            let mut body =
                json!({ "data": null, "message": format!("{}\n", e.message.trim_end()) });
            if let Some(errs) = &e.errors {
                body["errors"] = json!(errs);
            }
            let status =
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = (status, axum::Json(body)).into_response();
            set_reason(&mut resp, &e.message);
            (e.status, resp)
        }
    }
}

fn parse_params(
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Params, BTreeMap<String, bool>), ApiErr> {
    let mut params = Params::new();
    let mut json_bools = BTreeMap::new();
    if let Some(q) = uri.query() {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            params.insert(k.into_owned(), v.into_owned());
        }
    }
    if body.is_empty() {
        return Ok((params, json_bools));
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiErr::new(400, format!("unable to parse JSON body - {e}")))?;
        let Some(obj) = v.as_object() else {
            return Err(ApiErr::new(400, "JSON body is not an object"));
        };
        for (k, v) in obj {
            let s = match v {
                Value::Null => continue,
                Value::Bool(b) => {
                    json_bools.insert(k.clone(), *b);
                    if *b { "1".to_string() } else { "0".to_string() }
                }
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            params.insert(k.clone(), s);
        }
    } else {
        for (k, v) in url::form_urlencoded::parse(body) {
            params.insert(k.into_owned(), v.into_owned());
        }
    }
    Ok((params, json_bools))
}

fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The axum fallback handler of the PVE server.
pub(crate) async fn handle(
    State(sh): State<Arc<Shared>>,
    method: HttpMethod,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let m = method.as_str().to_string();
    let path = percent_decode(uri.path());
    let (token_id, token_secret, auth_delay, unavailable) = {
        let w = sh.lock();
        (
            w.cfg.pve.token_id.clone(),
            w.cfg.pve.token_secret.clone(),
            w.cfg.timing.auth_failure_delay,
            w.pve.unavailable,
        )
    };
    let endpoint_guess = sh
        .schema
        .match_path(&m, path.strip_prefix("/api2/json").unwrap_or(&path));
    let endpoint_name = endpoint_guess
        .as_ref()
        .map_or_else(|| path.clone(), |mt| mt.template.clone());
    let finish = |status: u16, resp: Response| {
        sh.lock().count(Service::Pve, &m, &endpoint_name, status);
        resp
    };
    if unavailable == Some(Unavailable::ServiceUnavailable) {
        let (s, r) = respond(Err(ApiErr::new(503, "Service Unavailable")));
        return finish(s, r);
    }
    // token auth
    let expected = format!("PVEAPIToken={token_id}={token_secret}");
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth != Some(expected.as_str()) {
        tokio::time::sleep(auth_delay).await;
        let msg = if auth.is_none() {
            "No ticket"
        } else {
            "authentication failure"
        };
        let (s, r) = respond(Err(ApiErr::new(401, msg)));
        return finish(s, r);
    }
    let Some(api_path) = path.strip_prefix("/api2/json") else {
        let (s, r) = respond(Err(ApiErr::new(
            501,
            format!("Method '{m} {path}' not implemented"),
        )));
        return finish(s, r);
    };
    let not_impl = || ApiErr::new(501, format!("Method '{m} {api_path}' not implemented"));
    let Some(matched) = endpoint_guess else {
        let (s, r) = respond(Err(not_impl()));
        return finish(s, r);
    };
    let Some(schema) = matched.method.clone() else {
        let (s, r) = respond(Err(not_impl()));
        return finish(s, r);
    };
    let (mut params, json_bools) = match parse_params(&uri, &headers, &body) {
        Ok(p) => p,
        Err(e) => {
            let (s, r) = respond(Err(e));
            return finish(s, r);
        }
    };
    for (k, v) in &matched.vars {
        params.insert(k.clone(), v.clone());
    }
    let errors = schema.validate(&params, &json_bools);
    if !errors.is_empty() {
        let (s, r) = respond(Err(ApiErr::params(errors)));
        return finish(s, r);
    }
    let template = matched.template.clone();
    let is_write = m != "GET";
    let (status, resp) = {
        let mut w = sh.lock();
        let faults: Faults = w.cfg.faults.clone();
        let agent_call = template.contains("/agent/");
        let result = if is_write && !agent_call && w.fault(faults.pve_write_error_rate) {
            // transient failure, nothing performed
            Err(if w.fault(0.5) {
                ApiErr::new(500, "got timeout")
            } else {
                ApiErr::new(
                    595,
                    "Errors during connection establishment, proxy handshake failed",
                )
            })
        } else {
            let r = w.pve_dispatch(&m, &template, &params);
            if is_write && !agent_call && r.is_ok() && w.fault(faults.pve_lost_response_rate) {
                Err(ApiErr::new(596, "Broken pipe"))
            } else {
                r
            }
        };
        let (status, resp) = respond(result);
        let destructive =
            is_write && template.contains("{vmid}") && !template.ends_with("/clone") && !agent_call;
        if destructive && let Some(vmid) = params.get("vmid").and_then(|v| v.parse().ok()) {
            let at = w.since_start();
            w.pve.mutations.push(Mutation {
                at,
                method: m.clone(),
                endpoint: template.clone(),
                vmid,
                node: params.get("node").cloned().unwrap_or_default(),
                status,
            });
        }
        (status, resp)
    };
    finish(status, resp)
}

fn flag(p: &Params, key: &str) -> Option<bool> {
    p.get(key).map(|v| v == "1")
}

fn num(p: &Params, key: &str) -> Result<u32, ApiErr> {
    p.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiErr::param(key, "property is missing and it is not optional"))
}

/// Lowercase, dedupe, sort, `;`-join (as PVE stores tags).
pub(crate) fn normalize_tags(raw: &str) -> Result<String, String> {
    let mut set = BTreeSet::new();
    for t in raw.split([';', ',', ' ']).filter(|t| !t.is_empty()) {
        let t = t.to_ascii_lowercase();
        if !valid_tag(&t) {
            return Err(format!("invalid format - invalid characters in tag '{t}'"));
        }
        set.insert(t);
    }
    Ok(set.into_iter().collect::<Vec<_>>().join(";"))
}

fn digest(config: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in config {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())[..40].to_string()
}

const NUMERIC_CONFIG_KEYS: &[&str] = &[
    "template",
    "cores",
    "sockets",
    "onboot",
    "protection",
    "numa",
    "balloon",
    "vcpus",
];

fn config_json(vm: &Vm) -> Value {
    let mut obj = serde_json::Map::new();
    for (k, v) in &vm.config {
        if NUMERIC_CONFIG_KEYS.contains(&k.as_str())
            && let Ok(n) = v.parse::<i64>()
        {
            obj.insert(k.clone(), json!(n));
            continue;
        }
        obj.insert(k.clone(), json!(v));
    }
    if let Some(l) = &vm.lock {
        obj.insert("lock".into(), json!(l));
    }
    obj.insert("digest".into(), json!(digest(&vm.config)));
    Value::Object(obj)
}

impl World {
    fn check_node(&self, node: &str) -> Result<(), ApiErr> {
        if self.pve.nodes.iter().any(|n| n == node) {
            Ok(())
        } else {
            Err(ApiErr::internal(format!(
                "hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"
            )))
        }
    }

    fn vm_on(&self, node: &str, vmid: u32) -> Result<&Vm, ApiErr> {
        self.check_node(node)?;
        match self.pve.vms.get(&vmid) {
            Some(vm) if vm.node == node => Ok(vm),
            _ => Err(ApiErr::internal(format!(
                "Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"
            ))),
        }
    }

    fn token_user(&self) -> String {
        self.cfg.pve.token_id.clone()
    }

    pub(crate) fn new_task(
        &mut self,
        node: &str,
        kind: &str,
        id: &str,
        duration: std::time::Duration,
        effect: TaskEffect,
    ) -> String {
        let user = self.token_user();
        self.new_task_by(node, kind, id, &user, duration, effect)
    }

    /// A task started by `user` (a user or a token, `user@realm!token`).
    pub(crate) fn new_task_by(
        &mut self,
        node: &str,
        kind: &str,
        id: &str,
        user: &str,
        duration: std::time::Duration,
        effect: TaskEffect,
    ) -> String {
        self.pve.next_pid += 17;
        let pid = self.pve.next_pid;
        let pstart = 1_000_000 + u64::from(pid) * 3;
        let starttime = time::OffsetDateTime::now_utc().unix_timestamp();
        let user = user.to_string();
        let upid =
            format!("UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{kind}:{id}:{user}:");
        let task = Task {
            upid: upid.clone(),
            node: node.to_string(),
            kind: kind.to_string(),
            id: id.to_string(),
            user,
            pid,
            pstart,
            starttime,
            done_at: Instant::now() + duration,
            exitstatus: None,
            ended: None,
            effect,
        };
        self.pve.tasks.insert(upid.clone(), task);
        upid
    }

    fn vmid_holder(&self, vmid: u32) -> Option<(String, &'static str)> {
        if let Some(vm) = self.pve.vms.get(&vmid) {
            return Some((vm.node.clone(), "VM"));
        }
        self.pve.cts.get(&vmid).map(|c| (c.node.clone(), "CT"))
    }

    pub(crate) fn pve_dispatch(&mut self, method: &str, template: &str, p: &Params) -> ApiResult {
        let node = p.get("node").cloned().unwrap_or_default();
        match (method, template) {
            ("GET", "/version") => Ok(json!({
                "version": self.cfg.pve.version,
                "release": self.cfg.pve.version.rsplit_once('.').map_or(self.cfg.pve.version.as_str(), |(a, _)| a),
                "repoid": "a8736b6d",
            })),
            ("GET", "/cluster/resources") => Ok(self.cluster_resources(p.get("type").map(String::as_str))),
            ("GET", "/cluster/nextid") => {
                if let Some(v) = p.get("vmid") {
                    let id: u32 = v.parse().unwrap_or(0);
                    if self.vmid_holder(id).is_some() {
                        return Err(ApiErr::param("vmid", format!("VM {id} already exists")));
                    }
                    return Ok(json!(id.to_string()));
                }
                let mut id = 100;
                while self.vmid_holder(id).is_some() {
                    id += 1;
                }
                Ok(json!(id.to_string()))
            }
            ("GET", "/nodes") => Ok(Value::Array(
                self.pve
                    .nodes
                    .iter()
                    .map(|n| {
                        json!({"node": n, "id": format!("node/{n}"), "type": "node", "status": "online",
                            "cpu": 0.05, "maxcpu": 16, "mem": 8_589_934_592_u64, "maxmem": 68_719_476_736_u64,
                            "uptime": 86400, "level": ""})
                    })
                    .collect(),
            )),
            ("GET", "/nodes/{node}/qemu") => {
                self.check_node(&node)?;
                Ok(Value::Array(
                    self.pve.vms.values().filter(|v| v.node == node).map(|v| vm_summary(v, false)).collect(),
                ))
            }
            ("GET", "/nodes/{node}/lxc") => {
                self.check_node(&node)?;
                Ok(Value::Array(
                    self.pve
                        .cts
                        .values()
                        .filter(|c| c.node == node)
                        .map(|c| json!({"vmid": c.vmid, "name": c.name, "status": if c.running {"running"} else {"stopped"}, "type": "lxc"}))
                        .collect(),
                ))
            }
            ("GET", "/nodes/{node}/qemu/{vmid}") => {
                self.vm_on(&node, num(p, "vmid")?)?;
                Ok(json!([{"subdir": "config"}, {"subdir": "status"}, {"subdir": "agent"}, {"subdir": "clone"}]))
            }
            ("GET", "/nodes/{node}/qemu/{vmid}/config") => Ok(config_json(self.vm_on(&node, num(p, "vmid")?)?)),
            ("PUT", "/nodes/{node}/qemu/{vmid}/config") => {
                self.update_config(&node, num(p, "vmid")?, p)?;
                Ok(Value::Null)
            }
            ("POST", "/nodes/{node}/qemu/{vmid}/config") => {
                let vmid = num(p, "vmid")?;
                self.update_config(&node, vmid, p)?;
                let d = self.cfg.timing.config_task;
                Ok(json!(self.new_task(&node, "qmconfig", &vmid.to_string(), d, TaskEffect::Nothing)))
            }
            ("POST", "/nodes/{node}/qemu/{vmid}/clone") => self.clone_vm(&node, p).map(Value::String),
            ("POST", "/nodes/{node}/qemu/{vmid}/status/start") => self.start_vm(&node, num(p, "vmid")?, p),
            ("POST", "/nodes/{node}/qemu/{vmid}/status/stop") => {
                let vmid = num(p, "vmid")?;
                let vm = self.vm_on(&node, vmid)?;
                let effect = match &vm.lock {
                    Some(l) if flag(p, "skiplock") != Some(true) => TaskEffect::Fail(format!("VM {vmid} is locked ({l})")),
                    _ => TaskEffect::Stop { vmid },
                };
                let d = self.cfg.timing.stop;
                Ok(json!(self.new_task(&node, "qmstop", &vmid.to_string(), d, effect)))
            }
            ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown") => {
                let vmid = num(p, "vmid")?;
                let vm = self.vm_on(&node, vmid)?;
                let effect = if !vm.running {
                    TaskEffect::Fail(format!("VM {vmid} not running"))
                } else if let Some(l) = &vm.lock {
                    TaskEffect::Fail(format!("VM {vmid} is locked ({l})"))
                } else {
                    TaskEffect::Shutdown { vmid }
                };
                let d = self.cfg.timing.shutdown;
                Ok(json!(self.new_task(&node, "qmshutdown", &vmid.to_string(), d, effect)))
            }
            ("GET", "/nodes/{node}/qemu/{vmid}/status/current") => {
                let vm = self.vm_on(&node, num(p, "vmid")?)?;
                Ok(vm_summary(vm, true))
            }
            ("DELETE", "/nodes/{node}/qemu/{vmid}") => self.destroy_vm(&node, num(p, "vmid")?, p),
            ("GET", "/nodes/{node}/tasks/{upid}/status") => {
                self.check_node(&node)?;
                let upid = p.get("upid").cloned().unwrap_or_default();
                let task = self.find_task(&node, &upid)?;
                let mut v = json!({
                    "upid": task.upid, "node": task.node, "pid": task.pid, "pstart": task.pstart,
                    "starttime": task.starttime, "type": task.kind, "id": task.id, "user": task.user,
                    "status": if task.exitstatus.is_some() { "stopped" } else { "running" },
                });
                if let Some(tok) = task.user.split_once('!') {
                    v["tokenid"] = json!(tok.1);
                    v["user"] = json!(tok.0);
                }
                if let Some(e) = &task.exitstatus {
                    v["exitstatus"] = json!(e);
                }
                Ok(v)
            }
            ("GET", "/nodes/{node}/tasks") => {
                self.check_node(&node)?;
                Ok(self.node_tasks(&node, p))
            }
            ("GET", "/nodes/{node}/tasks/{upid}/log") => {
                self.check_node(&node)?;
                let upid = p.get("upid").cloned().unwrap_or_default();
                let task = self.find_task(&node, &upid)?;
                let mut lines = vec![json!({"n": 1, "t": format!("{} {}", task.kind, task.id)})];
                if let Some(e) = &task.exitstatus {
                    let t = if e == "OK" { "TASK OK".to_string() } else { format!("TASK ERROR: {e}") };
                    lines.push(json!({"n": 2, "t": t}));
                }
                Ok(Value::Array(lines))
            }
            ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping") => {
                self.agent_ready(&node, num(p, "vmid")?)?;
                Ok(json!({"result": {}}))
            }
            ("POST", "/nodes/{node}/qemu/{vmid}/agent/file-write") => {
                let vmid = num(p, "vmid")?;
                self.agent_ready(&node, vmid)?;
                let file = p.get("file").cloned().unwrap_or_default();
                let raw = p.get("content").cloned().unwrap_or_default();
                let content = if flag(p, "encode") == Some(false) {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(raw.trim())
                        .map_err(|e| ApiErr::internal(format!("guest-file-write: invalid base64 content - {e}")))?;
                    String::from_utf8_lossy(&bytes).into_owned()
                } else {
                    raw
                };
                if let Some(g) = self.pve.vms.get_mut(&vmid).and_then(|v| v.guest.as_mut()) {
                    g.files.insert(file, content);
                }
                Ok(Value::Null)
            }
            ("GET", "/storage/{storage}") => {
                let id = p.get("storage").cloned().unwrap_or_default();
                let s = self
                    .pve
                    .storages
                    .iter()
                    .find(|s| s.id == id)
                    .ok_or_else(|| ApiErr::internal(format!("storage '{id}' does not exist")))?;
                Ok(json!({
                    "storage": s.id, "type": "dir", "path": s.root.display().to_string(),
                    "content": s.content.join(","), "shared": i32::from(s.shared),
                    "digest": "0b3b1e4c2fd2e0d3c6b7aa1d0e9a4b31b5e1a1f0",
                }))
            }
            ("GET", "/access/permissions") => {
                let mut obj = serde_json::Map::new();
                for (path, privs) in &self.cfg.pve.privileges {
                    let mut pm = serde_json::Map::new();
                    for pr in privs {
                        pm.insert(pr.clone(), json!(1));
                    }
                    obj.insert(path.clone(), Value::Object(pm));
                }
                Ok(Value::Object(obj))
            }
            _ => Err(ApiErr::new(501, format!("Method '{method} {template}' not implemented by the simulator"))),
        }
    }

    /// `GET /nodes/{node}/tasks` as pve-manager's `PVE::API2::Tasks::node_tasks` answers it: the
    /// node's active list first (running tasks get status `RUNNING`; finished ones not archived
    /// yet have their exit status and `endtime`), then (`source` archive or all) the archive,
    /// most recently archived first. Filters: `userfilter` (substring of the user, token part
    /// split off, case-insensitive), visibility (without `Sys.Audit` on the node only the
    /// token's own tasks), `typefilter`, `vmid`, `since`/`until` on the start time,
    /// `statusfilter`/`errors` on the status class; then `start` skips and `limit` (default 50)
    /// bounds.
    fn node_tasks(&self, node: &str, p: &Params) -> Value {
        let int = |k: &str| p.get(k).and_then(|v| v.parse::<i64>().ok());
        let start = int("start").unwrap_or(0);
        let mut limit = int("limit").unwrap_or(50);
        let source = p.get("source").map_or("archive", String::as_str);
        let (since, until) = (int("since"), int("until"));
        let errors = flag(p, "errors") == Some(true);
        let statusfilter: Option<BTreeSet<String>> = if errors {
            Some(["warning", "error", "unknown"].map(String::from).into())
        } else {
            p.get("statusfilter").map(|f| {
                f.split([',', ';', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
        };
        let userfilter = p.get("userfilter").map(|u| u.to_lowercase());
        let token = self.token_user();
        let auditor = self.cfg.pve.privileges.iter().any(|(path, privs)| {
            let path = path.trim_end_matches('/');
            (path.is_empty() || path == "/nodes" || *path == format!("/nodes/{node}"))
                && privs.iter().any(|pr| pr == "Sys.Audit")
        });
        let now = Instant::now();
        let archived = |t: &Task| {
            t.ended
                .is_some_and(|(_, at)| now.duration_since(at) >= self.cfg.timing.task_archive)
        };
        let on_node = || self.pve.tasks.values().filter(|t| t.node == node);
        let mut active: Vec<&Task> = on_node().filter(|t| !archived(t)).collect();
        active.sort_by_key(|t| std::cmp::Reverse((t.starttime, t.pid)));
        let mut archive: Vec<&Task> = on_node().filter(|t| archived(t)).collect();
        archive.sort_by_key(|t| std::cmp::Reverse((t.ended.map(|(_, at)| at), t.pid)));

        let mut count = 0;
        let mut out = Vec::new();
        let mut take = |t: &Task| {
            let (user, tokenid) = match t.user.split_once('!') {
                Some((u, tok)) => (u, Some(tok)),
                None => (t.user.as_str(), None),
            };
            let class = match t.exitstatus.as_deref() {
                None | Some("unexpected status") => "unknown",
                Some("OK") => "ok",
                Some(s) if is_warnings(s) => "warning",
                Some(_) => "error",
            };
            let skip = userfilter
                .as_ref()
                .is_some_and(|f| !user.to_lowercase().contains(f))
                || !(auditor || t.user == token)
                || p.get("typefilter").is_some_and(|f| *f != t.kind)
                || p.get("vmid").is_some_and(|v| *v != t.id)
                || since.is_some_and(|s| t.starttime < s)
                || until.is_some_and(|u| t.starttime > u)
                || statusfilter.as_ref().is_some_and(|f| !f.contains(class));
            if skip {
                return;
            }
            count += 1;
            if count <= start || limit <= 0 {
                return;
            }
            limit -= 1;
            let mut v = json!({
                "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
                "starttime": t.starttime, "type": t.kind, "id": t.id, "user": user,
                "status": t.exitstatus.as_deref().unwrap_or("RUNNING"),
            });
            if let Some(tok) = tokenid {
                v["tokenid"] = json!(tok);
            }
            if let Some((endtime, _)) = t.ended {
                v["endtime"] = json!(endtime);
            }
            out.push(v);
        };
        if source == "active" || source == "all" {
            for t in active {
                take(t);
            }
        }
        if source != "active" {
            for t in archive {
                take(t);
            }
        }
        Value::Array(out)
    }

    fn find_task(&self, node: &str, upid: &str) -> Result<&Task, ApiErr> {
        let parts: Vec<&str> = upid.split(':').collect();
        if parts.len() < 8 || parts[0] != "UPID" {
            return Err(ApiErr::internal(format!(
                "unable to parse worker upid '{upid}'"
            )));
        }
        match self.pve.tasks.get(upid) {
            Some(t) if t.node == node => Ok(t),
            _ => Err(ApiErr::internal(format!(
                "unable to open file '/var/log/pve/tasks/{}/{upid}' - No such file or directory",
                parts[4].chars().last().unwrap_or('0')
            ))),
        }
    }

    fn agent_ready(&self, node: &str, vmid: u32) -> Result<(), ApiErr> {
        let vm = self.vm_on(node, vmid)?;
        if !vm.running {
            return Err(ApiErr::internal(format!("VM {vmid} is not running")));
        }
        if !vm.agent_enabled() {
            return Err(ApiErr::internal("No QEMU guest agent configured"));
        }
        match vm.guest.as_ref().map(|g| &g.phase) {
            None | Some(GuestPhase::Booting | GuestPhase::Off) => {
                Err(ApiErr::internal("QEMU guest agent is not running"))
            }
            Some(_) => Ok(()),
        }
    }

    fn update_config(&mut self, node: &str, vmid: u32, p: &Params) -> Result<(), ApiErr> {
        let vm = self.vm_on(node, vmid)?;
        if let Some(l) = &vm.lock
            && flag(p, "skiplock") != Some(true)
        {
            return Err(ApiErr::internal(format!("VM {vmid} is locked ({l})")));
        }
        if let Some(d) = p.get("digest")
            && *d != digest(&vm.config)
        {
            return Err(ApiErr::internal(
                "detected modified configuration - file changed by other user? Try again.",
            ));
        }
        let mut updates = BTreeMap::new();
        for (k, v) in p {
            if matches!(
                k.as_str(),
                "node"
                    | "vmid"
                    | "delete"
                    | "digest"
                    | "skiplock"
                    | "force"
                    | "revert"
                    | "background_delay"
            ) {
                continue;
            }
            let value = if k == "tags" {
                normalize_tags(v).map_err(|e| ApiErr::param("tags", e))?
            } else {
                v.clone()
            };
            updates.insert(k.clone(), value);
        }
        let deletes: Vec<String> = p
            .get("delete")
            .map(|d| {
                d.split([',', ';', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for d in &deletes {
            if updates.contains_key(d) {
                return Err(ApiErr::param(
                    "delete",
                    format!("unable to delete '{d}' - option is also set"),
                ));
            }
        }
        if let Some(vm) = self.pve.vms.get_mut(&vmid) {
            for d in deletes {
                vm.config.remove(&d);
            }
            vm.config.extend(updates);
        }
        self.vm_event(vmid, VmEventKind::Changed);
        Ok(())
    }

    fn clone_vm(&mut self, node: &str, p: &Params) -> Result<String, ApiErr> {
        let vmid = num(p, "vmid")?;
        let newid = num(p, "newid")?;
        let src = self.vm_on(node, vmid)?.clone();
        let target = p.get("target").cloned().unwrap_or_else(|| node.to_string());
        if !self.pve.nodes.contains(&target) {
            return Err(ApiErr::param(
                "target",
                format!("no such cluster node '{target}'"),
            ));
        }
        let is_template = src.is_template();
        let full = flag(p, "full").unwrap_or(!is_template);
        if p.contains_key("storage") && !full {
            return Err(ApiErr::internal(
                "parameter 'storage' not allowed for linked clones",
            ));
        }
        if p.contains_key("format") && !full {
            return Err(ApiErr::internal(
                "parameter 'format' not allowed for linked clones",
            ));
        }
        if !full && !is_template {
            return Err(ApiErr::internal(
                "Linked clone feature is not supported for drive 'scsi0'",
            ));
        }
        if target != node && !src.shared_storage {
            return Err(ApiErr::internal(format!(
                "can't clone VM to node '{target}' (VM uses local storage)"
            )));
        }
        if let Some(l) = &src.lock {
            return Err(ApiErr::internal(format!("VM {vmid} is locked ({l})")));
        }
        if newid == vmid {
            return Err(ApiErr::param("newid", "newid must differ from vmid"));
        }
        // early check: only the target node's config directory
        if self.pve.vms.get(&newid).is_some_and(|v| v.node == target) {
            return Err(ApiErr::internal(format!(
                "unable to create VM {newid}: config file already exists"
            )));
        }
        let running_clones = self
            .pve
            .tasks
            .values()
            .filter(|t| {
                t.node == node
                    && t.exitstatus.is_none()
                    && matches!(t.effect, TaskEffect::CloneDone { .. })
            })
            .count();
        let lock_fault = self.cfg.faults.clone_lock_failure_rate;
        if running_clones >= self.cfg.pve.clone_slots || self.fault(lock_fault) {
            let d = self.cfg.timing.lock_timeout;
            let msg =
                format!("can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout");
            return Ok(self.new_task(node, "qmclone", &vmid.to_string(), d, TaskEffect::Fail(msg)));
        }
        if let Some((holder, kind)) = self.vmid_holder(newid) {
            let d = self.cfg.timing.config_task;
            let msg = format!("{kind} {newid} already exists on node '{holder}'");
            return Ok(self.new_task(node, "qmclone", &vmid.to_string(), d, TaskEffect::Fail(msg)));
        }
        let mut config = src.config.clone();
        config.remove("template");
        let name = match p.get("name") {
            Some(n) => n.clone(),
            None => format!("Copy-of-VM-{}", src.name().unwrap_or(&vmid.to_string())),
        };
        config.insert("name".into(), name.clone());
        if let Some(d) = p.get("description") {
            config.insert("description".into(), d.clone());
        }
        let vm = Vm {
            vmid: newid,
            node: target.clone(),
            config,
            lock: Some("clone".into()),
            running: false,
            started_at: None,
            ever_started: false,
            linked_from: if full { None } else { Some(vmid) },
            os: src.os,
            shared_storage: src.shared_storage,
            registration_labels: src.registration_labels.clone(),
            guest: None,
        };
        self.pve.vms.insert(newid, vm);
        let at = self.since_start();
        self.pve.created.push(CreatedVm {
            at,
            vmid: newid,
            node: target,
            name: Some(name),
            description: p.get("description").cloned(),
            cloned_from: Some(vmid),
        });
        self.vm_event(newid, VmEventKind::Created);
        let d = if full {
            self.cfg.timing.full_clone
        } else {
            self.cfg.timing.clone
        };
        Ok(self.new_task(
            node,
            "qmclone",
            &vmid.to_string(),
            d,
            TaskEffect::CloneDone { newid },
        ))
    }

    fn start_vm(&mut self, node: &str, vmid: u32, p: &Params) -> ApiResult {
        let vm = self.vm_on(node, vmid)?;
        if vm.is_template() {
            return Err(ApiErr::internal("you can't start a vm if it's a template"));
        }
        let effect = if vm.running {
            TaskEffect::Fail(format!("VM {vmid} already running"))
        } else if let Some(l) = vm
            .lock
            .as_ref()
            .filter(|_| flag(p, "skiplock") != Some(true))
        {
            TaskEffect::Fail(format!("VM {vmid} is locked ({l})"))
        } else {
            match self.read_cicustom_user(vm) {
                Ok(user_data) => TaskEffect::Start { vmid, user_data },
                Err(e) => TaskEffect::Fail(e),
            }
        };
        let d = self.cfg.timing.start;
        Ok(json!(self.new_task(
            node,
            "qmstart",
            &vmid.to_string(),
            d,
            effect
        )))
    }

    /// Reads `cicustom: user=<storage>:snippets/<file>` as PVE does when it builds the cloud-init drive at start.
    fn read_cicustom_user(&self, vm: &Vm) -> Result<Option<String>, String> {
        let Some(cic) = vm.config.get("cicustom") else {
            return Ok(None);
        };
        let Some(volid) = cic.split(',').find_map(|part| part.strip_prefix("user=")) else {
            return Ok(None);
        };
        let missing = || format!("volume '{volid}' does not exist");
        let (storage, rel) = volid.split_once(':').ok_or_else(missing)?;
        let st = self
            .pve
            .storages
            .iter()
            .find(|s| s.id == storage)
            .ok_or_else(|| format!("storage '{storage}' does not exist"))?;
        if !st.content.iter().any(|c| c == "snippets") {
            return Err(format!(
                "storage '{storage}' does not support content-type 'snippets'"
            ));
        }
        // a non-shared storage's directory exists on the first node only (where the dispatcher writes)
        if !st.shared && self.pve.nodes.first().is_some_and(|n0| *n0 != vm.node) {
            return Err(missing());
        }
        let file = rel.strip_prefix("snippets/").ok_or_else(missing)?;
        if file.contains('/') || file.contains("..") {
            return Err(missing());
        }
        std::fs::read_to_string(st.root.join("snippets").join(file))
            .map(Some)
            .map_err(|_| missing())
    }

    fn destroy_vm(&mut self, node: &str, vmid: u32, p: &Params) -> ApiResult {
        let vm = self.vm_on(node, vmid)?;
        if vm.config.get("protection").is_some_and(|v| v == "1") {
            return Err(ApiErr::internal(format!(
                "can't remove VM {vmid} - protection mode enabled"
            )));
        }
        if let Some(l) = &vm.lock
            && flag(p, "skiplock") != Some(true)
        {
            return Err(ApiErr::internal(format!("VM {vmid} is locked ({l})")));
        }
        if vm.running {
            return Err(ApiErr::internal(format!(
                "VM {vmid} is running - destroy failed"
            )));
        }
        let effect =
            if vm.is_template() && self.pve.vms.values().any(|v| v.linked_from == Some(vmid)) {
                TaskEffect::Fail(format!(
                    "base volume 'local-lvm:base-{vmid}-disk-0' is still in use by linked cloned VM"
                ))
            } else {
                TaskEffect::Destroy { vmid }
            };
        if matches!(effect, TaskEffect::Destroy { .. })
            && let Some(v) = self.pve.vms.get_mut(&vmid)
        {
            v.lock = Some("destroyed".into());
        }
        let d = self.cfg.timing.destroy;
        Ok(json!(self.new_task(
            node,
            "qmdestroy",
            &vmid.to_string(),
            d,
            effect
        )))
    }

    fn cluster_resources(&self, ty: Option<&str>) -> Value {
        let mut out = Vec::new();
        if ty.is_none() || ty == Some("vm") {
            for vm in self.pve.vms.values() {
                let mut e = json!({
                    "id": format!("qemu/{}", vm.vmid), "type": "qemu", "vmid": vm.vmid, "node": vm.node,
                    "maxcpu": 2, "maxmem": 4_294_967_296_u64, "maxdisk": 34_359_738_368_u64,
                    "cpu": 0, "mem": 0, "disk": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
                });
                match self.pve.snapshot.get(&vm.vmid) {
                    Some(s) => {
                        e["status"] = json!(if s.running { "running" } else { "stopped" });
                        e["template"] = json!(i32::from(s.template));
                        e["uptime"] = json!(s.uptime);
                        if let Some(n) = &s.name {
                            e["name"] = json!(n);
                        }
                    }
                    None => {
                        e["status"] = json!("unknown");
                    }
                }
                if let Some(t) = vm.config.get("tags") {
                    e["tags"] = json!(t);
                }
                if let Some(l) = &vm.lock {
                    e["lock"] = json!(l);
                }
                out.push(e);
            }
            for c in self.pve.cts.values() {
                out.push(json!({
                    "id": format!("lxc/{}", c.vmid), "type": "lxc", "vmid": c.vmid, "node": c.node, "name": c.name,
                    "status": if c.running { "running" } else { "stopped" }, "template": 0, "uptime": 0,
                    "maxcpu": 1, "maxmem": 536_870_912, "maxdisk": 8_589_934_592_u64,
                }));
            }
        }
        if ty.is_none() || ty == Some("node") {
            for n in &self.pve.nodes {
                out.push(json!({"id": format!("node/{n}"), "type": "node", "node": n, "status": "online", "level": ""}));
            }
        }
        if ty.is_none() || ty == Some("storage") {
            for n in &self.pve.nodes {
                for s in &self.pve.storages {
                    out.push(
                        json!({"id": format!("storage/{n}/{}", s.id), "type": "storage", "node": n,
                        "storage": s.id, "status": "available", "shared": i32::from(s.shared),
                        "content": s.content.join(",")}),
                    );
                }
            }
        }
        Value::Array(out)
    }

    pub(crate) fn take_snapshot(&mut self, now: Instant) {
        self.pve.snapshot = self
            .pve
            .vms
            .values()
            .map(|vm| {
                (
                    vm.vmid,
                    SnapEntry {
                        name: vm.name().map(str::to_string),
                        running: vm.running,
                        template: vm.is_template(),
                        uptime: vm
                            .started_at
                            .filter(|_| vm.running)
                            .map_or(0, |s| now.duration_since(s).as_secs()),
                    },
                )
            })
            .collect();
        self.pve.last_snapshot = Some(now);
    }

    /// Completes every task whose time has come, applying its effect.
    pub(crate) fn complete_tasks(&mut self, now: Instant) {
        let mut due: Vec<(Instant, String)> = self
            .pve
            .tasks
            .values()
            .filter(|t| t.exitstatus.is_none() && t.done_at <= now)
            .map(|t| (t.done_at, t.upid.clone()))
            .collect();
        due.sort();
        for (_, upid) in due {
            let Some(effect) = self.pve.tasks.get(&upid).map(|t| t.effect.clone()) else {
                continue;
            };
            let exit = self.apply_effect(effect, now);
            if let Some(t) = self.pve.tasks.get_mut(&upid) {
                t.exitstatus = Some(exit);
                t.ended = Some((time::OffsetDateTime::now_utc().unix_timestamp(), now));
            }
        }
    }

    fn apply_effect(&mut self, effect: TaskEffect, now: Instant) -> String {
        match effect {
            TaskEffect::Nothing => "OK".into(),
            TaskEffect::Fail(msg) => msg,
            TaskEffect::CloneDone { newid } => {
                if let Some(vm) = self.pve.vms.get_mut(&newid) {
                    vm.lock = None;
                }
                self.vm_event(newid, VmEventKind::Changed);
                "OK".into()
            }
            TaskEffect::Start { vmid, user_data } => {
                let boot = self.cfg.timing.boot;
                let Some(vm) = self.pve.vms.get_mut(&vmid) else {
                    return format!(
                        "Configuration file 'nodes/unknown/qemu-server/{vmid}.conf' does not exist"
                    );
                };
                if vm.running {
                    return format!("VM {vmid} already running");
                }
                vm.running = true;
                vm.ever_started = true;
                vm.started_at = Some(now);
                vm.guest = Some(crate::world::Guest {
                    boot_at: now + boot,
                    user_data,
                    files: BTreeMap::new(),
                    phase: GuestPhase::Booting,
                    next_at: None,
                    runner_name: None,
                });
                self.vm_event(vmid, VmEventKind::Started);
                "OK".into()
            }
            TaskEffect::Stop { vmid } | TaskEffect::Shutdown { vmid } => {
                if self.pve.vms.get(&vmid).is_some_and(|v| v.running) {
                    self.power_off(vmid);
                }
                "OK".into()
            }
            TaskEffect::Destroy { vmid } => {
                if self.pve.vms.get(&vmid).is_some_and(|v| v.running) {
                    self.power_off(vmid);
                }
                self.vm_event(vmid, VmEventKind::Destroyed);
                self.pve.vms.remove(&vmid);
                "OK".into()
            }
        }
    }

    /// Powers a VM off: its runner (if any) drops offline and a job it was running fails.
    pub(crate) fn power_off(&mut self, vmid: u32) {
        let runner = self.pve.vms.get_mut(&vmid).and_then(|vm| {
            vm.running = false;
            vm.started_at = None;
            vm.guest.as_mut().and_then(|g| {
                let r = match g.phase {
                    GuestPhase::Connecting { runner_id } | GuestPhase::Online { runner_id } => {
                        Some(runner_id)
                    }
                    _ => None,
                };
                g.phase = GuestPhase::Off;
                r
            })
        });
        if let Some(rid) = runner {
            self.runner_lost(rid);
        }
        self.vm_event(vmid, VmEventKind::Stopped);
    }
}

/// `WARNINGS: n`, the exit status of a task that succeeded with warnings.
fn is_warnings(status: &str) -> bool {
    status
        .strip_prefix("WARNINGS: ")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

fn vm_summary(vm: &Vm, current: bool) -> Value {
    let mut v = json!({
        "vmid": vm.vmid, "name": vm.name().unwrap_or(""), "status": if vm.running { "running" } else { "stopped" },
        "uptime": vm.started_at.filter(|_| vm.running).map_or(0, |s| s.elapsed().as_secs()),
        "cpus": 2, "maxmem": 4_294_967_296_u64, "maxdisk": 34_359_738_368_u64, "mem": 0, "cpu": 0,
        "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
    });
    if vm.is_template() {
        v["template"] = json!(1);
    }
    if let Some(t) = vm.config.get("tags") {
        v["tags"] = json!(t);
    }
    if let Some(l) = &vm.lock {
        v["lock"] = json!(l);
    }
    if vm.running {
        v["pid"] = json!(100_000 + vm.vmid);
    }
    if current {
        v["qmpstatus"] = v["status"].clone();
        v["agent"] = json!(i32::from(vm.agent_enabled()));
        v["ha"] = json!({"managed": 0});
    }
    v
}
