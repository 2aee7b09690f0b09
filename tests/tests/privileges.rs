//! The least-privilege recipe for the dispatcher's API token (issue 15, item 2), checked three ways:
//!
//! 1. PROXMOX_SETUP.md's `pveum` commands (the `# Proxmox VE 9.x` and `# Proxmox VE 8.x` code blocks, parsed here
//!    so the document cannot drift) are exactly `dispatcher_bin::privileges::recipe`.
//! 2. Every Proxmox API call the dispatcher makes — found in its source, so a new call must be added to
//!    [`calls`] — passes the `permissions` entry of `pve-apidata-9.1.json` for that method and path, evaluated
//!    against the recipe's ACLs the way Proxmox VE resolves them (propagation down the tree, a pool's ACLs on
//!    its member VMs), for PVE 9 and 8 and for snippet-only, agent-only and mixed pools.
//! 3. Nothing more: removing any single privilege from the recipe makes some call fail.
//!
//! What the schema's `permissions` do not say comes from the Proxmox sources and is named where it is used:
//! the per-option checks of `PUT …/config` (qemu-server `$check_vm_modify_config_perm`,
//! `PVE::GuestHelpers::assert_tag_permissions`), the storage and bridge checks of clone (stated in the schema's
//! description; qemu-server `$check_storage_access_clone`, `check_bridge_access`), the `VM.Audit` filter of
//! `GET /cluster/resources` (pve-manager `PVE/API2/Cluster.pm`) and PVE 8's `VM.Monitor` for every guest-agent
//! call (qemu-server 8.4 `PVE/API2/Qemu/Agent.pm`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use dispatcher_bin::privileges::{self, Grant, Target, Uses, When};
use serde_json::Value;

const POOL: &str = "ghr-runners";
const TEMPLATE: &str = "9000";
const CLONE: &str = "201";
const DISK_STORAGE: &str = "local-lvm";
const SNIPPET_STORAGE: &str = "ghr-snippets";
const BRIDGE_PATH: &str = "/sdn/zones/localnetwork/vmbr0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------------------------
// The schema
// ---------------------------------------------------------------------------------------------------------

/// `(METHOD, path template)` → the method's `permissions` object, for every method of the schema.
fn schema_permissions() -> BTreeMap<(String, String), Value> {
    let path = tests::default_apidata_path();
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set {})", path.display(), tests::APIDATA_ENV));
    let tree: Value = serde_json::from_str(&text).expect("apidata JSON");
    let mut out = BTreeMap::new();
    let mut stack: Vec<&Value> = tree.as_array().expect("top-level array").iter().collect();
    while let Some(node) = stack.pop() {
        if let (Some(p), Some(info)) = (node["path"].as_str(), node["info"].as_object()) {
            for (method, def) in info {
                out.insert(
                    (method.clone(), p.to_owned()),
                    def.get("permissions").cloned().unwrap_or(Value::Null),
                );
            }
        }
        if let Some(children) = node["children"].as_array() {
            stack.extend(children);
        }
    }
    out
}

/// Every privilege name the schema's permission checks use.
fn privileges_in_checks(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Array(items) => {
            if items.first().and_then(Value::as_str) == Some("perm")
                && let Some(privs) = items.get(2).and_then(Value::as_array)
            {
                out.extend(privs.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            for i in items {
                privileges_in_checks(i, out);
            }
        }
        Value::Object(map) => map.values().for_each(|x| privileges_in_checks(x, out)),
        _ => {}
    }
}

/// Every `'Group.Privilege'` a permissions `description` names.
fn privileges_in_descriptions(v: &Value, out: &mut BTreeSet<String>) {
    if let Some(d) = v.get("description").and_then(Value::as_str) {
        for quoted in d.split('\'').skip(1).step_by(2) {
            let looks_like = quoted.split('.').count() >= 2
                && quoted
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.')
                && quoted.starts_with(|c: char| c.is_ascii_uppercase());
            if looks_like {
                out.insert(quoted.to_owned());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// A model of Proxmox VE's permission resolution
// ---------------------------------------------------------------------------------------------------------

/// The token's ACLs (all propagating, as `pveum acl modify` sets them) and the pool's members.
#[derive(Debug, Clone)]
struct World {
    pve_major: u8,
    acls: Vec<(String, String)>,
    members: BTreeSet<String>,
}

impl World {
    /// The recipe's ACLs with the test's concrete objects; the clone is a member of the pool.
    fn from_recipe(grants: &[Grant], pve_major: u8) -> Self {
        let mut acls = Vec::new();
        for g in grants {
            let path = concrete(g.target);
            for p in g.privs {
                acls.push((path.clone(), (*p).to_owned()));
            }
        }
        World {
            pve_major,
            acls,
            members: [CLONE.to_owned()].into(),
        }
    }

    fn has(&self, path: &str, privilege: &str) -> bool {
        let on_tree = self.acls.iter().any(|(p, privs)| {
            privs == privilege
                && (p == path
                    || p == "/"
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|r| r.starts_with('/')))
        });
        // PVE::RPCEnvironment: the roles on /pool/<pool> apply to the pool's member VMs.
        let from_pool = path
            .strip_prefix("/vms/")
            .is_some_and(|id| self.members.contains(id))
            && self.has(&format!("/pool/{POOL}"), privilege);
        on_tree || from_pool
    }

    /// PVE 8 names every guest-agent privilege `VM.Monitor`.
    fn translate(&self, privilege: &str) -> String {
        if self.pve_major < 9 && privilege.starts_with("VM.GuestAgent.") {
            "VM.Monitor".to_owned()
        } else {
            privilege.to_owned()
        }
    }

    fn satisfies(&self, req: &Req) -> bool {
        let privs: Vec<String> = req.privs.iter().map(|p| self.translate(p)).collect();
        if req.any {
            privs.iter().any(|p| self.has(&req.path, p))
        } else {
            privs.iter().all(|p| self.has(&req.path, p))
        }
    }

    /// Evaluates a schema `check` expression for `call`.
    fn check(&self, expr: &Value, call: &Call) -> bool {
        let items = expr.as_array().expect("check is an array");
        match items[0].as_str().expect("check operator") {
            "and" => items[1..].iter().all(|e| self.check(e, call)),
            "or" => items[1..].iter().any(|e| self.check(e, call)),
            "perm" => {
                let path = call.substitute(items[1].as_str().expect("perm path"));
                let privs: Vec<String> = items[2]
                    .as_array()
                    .expect("perm privileges")
                    .iter()
                    .map(|p| p.as_str().expect("privilege").to_owned())
                    .collect();
                let mut any = false;
                let mut opts = items[3..].iter();
                while let Some(key) = opts.next() {
                    let value = opts.next().expect("option value");
                    match key.as_str().expect("option name") {
                        "any" => any = value.as_u64() == Some(1) || value == &Value::Bool(true),
                        "require_param" => {
                            let name = value.as_str().expect("param name");
                            if !call.params.contains(&name) {
                                return false;
                            }
                        }
                        other => panic!("{}: unknown perm option {other}", call.name),
                    }
                }
                self.satisfies(&Req { path, privs, any })
            }
            other => panic!("{}: unknown check operator {other}", call.name),
        }
    }

    /// Whether `call` succeeds: the schema's `permissions`, then what the code checks besides.
    fn allows(&self, call: &Call, perms: &Value) -> Result<(), String> {
        let ok = match (
            perms.get("check"),
            perms.get("user").and_then(Value::as_str),
        ) {
            (Some(check), _) => self.check(check, call),
            (None, Some("all")) => true,
            _ => panic!("{}: unexpected permissions {perms}", call.name),
        };
        if !ok {
            return Err(format!("{}: schema check {perms} fails", call.name));
        }
        for req in &call.extra {
            if !self.satisfies(req) {
                return Err(format!("{}: {req:?} ({})", call.name, call.why));
            }
        }
        Ok(())
    }
}

fn concrete(target: Target) -> String {
    target
        .pattern()
        .replace("{pool}", POOL)
        .replace("{template}", TEMPLATE)
        .replace("{disk_storage}", DISK_STORAGE)
        .replace("{snippet_storage}", SNIPPET_STORAGE)
        .replace("{zone}", "localnetwork")
        .replace("{bridge}", "vmbr0")
}

// ---------------------------------------------------------------------------------------------------------
// Every call the dispatcher makes
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Req {
    path: String,
    privs: Vec<String>,
    any: bool,
}

fn all_of(path: &str, privs: &[&str]) -> Req {
    Req {
        path: path.to_owned(),
        privs: privs.iter().map(|p| (*p).to_owned()).collect(),
        any: false,
    }
}

fn any_of(path: &str, privs: &[&str]) -> Req {
    Req {
        any: true,
        ..all_of(path, privs)
    }
}

#[derive(Debug, Clone)]
struct Call {
    /// The `ProxmoxApi` method.
    name: &'static str,
    method: &'static str,
    path: &'static str,
    vars: Vec<(&'static str, &'static str)>,
    params: Vec<&'static str>,
    when: When,
    /// Requirements the schema's `permissions` do not state.
    extra: Vec<Req>,
    why: &'static str,
}

impl Call {
    fn substitute(&self, template: &str) -> String {
        let mut s = template.to_owned();
        for (k, v) in &self.vars {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        assert!(
            !s.contains('{'),
            "{}: unbound variable in {template}",
            self.name
        );
        s
    }
}

fn call(name: &'static str, method: &'static str, path: &'static str) -> Call {
    Call {
        name,
        method,
        path,
        vars: vec![("node", "pve"), ("vmid", CLONE)],
        params: vec![],
        when: When::Always,
        extra: vec![],
        why: "",
    }
}

/// The calls, with the objects they act on: the template 9000, the clone 201 (a member of the pool), the
/// snippet storage, on node `pve`.
fn calls() -> Vec<Call> {
    let vm_config = "/nodes/{node}/qemu/{vmid}/config";
    let clone_vm = format!("/vms/{CLONE}");
    vec![
        call("version", "GET", "/version"),
        Call {
            extra: vec![
                all_of(&format!("/vms/{TEMPLATE}"), &["VM.Audit"]),
                all_of(&clone_vm, &["VM.Audit"]),
            ],
            why: "pve-manager PVE/API2/Cluster.pm lists a guest only with VM.Audit on /vms/<vmid>: the \
                  dispatcher finds its templates and clones there",
            ..call("cluster_guests", "GET", "/cluster/resources")
        },
        call("nodes", "GET", "/nodes"),
        call("vm_config", "GET", vm_config),
        Call {
            params: vec!["tags"],
            extra: vec![all_of(&clone_vm, &["VM.Config.Options"])],
            why: "GuestHelpers::assert_tag_permissions: VM.Config.Options for tags",
            ..call("update_config", "PUT", vm_config)
        },
        Call {
            params: vec!["tags", "cicustom"],
            when: When::Snippet,
            extra: vec![
                all_of(&clone_vm, &["VM.Config.Options"]),
                any_of(&clone_vm, &["VM.Config.Cloudinit", "VM.Config.Network"]),
            ],
            why: "qemu-server $check_vm_modify_config_perm: cicustom is a cloud-init option; no storage \
                  check for the snippet volume",
            ..call("update_config", "PUT", vm_config)
        },
        Call {
            vars: vec![
                ("node", "pve"),
                ("vmid", TEMPLATE),
                ("newid", CLONE),
                ("pool", POOL),
            ],
            params: vec!["newid", "name", "description", "pool"],
            extra: vec![
                all_of(
                    &format!("/storage/{DISK_STORAGE}"),
                    &["Datastore.AllocateSpace"],
                ),
                all_of(BRIDGE_PATH, &["SDN.Use"]),
            ],
            why: "the schema's description: Datastore.AllocateSpace on any used storage, SDN.Use on any \
                  used bridge/vnet",
            ..call("clone_vm", "POST", "/nodes/{node}/qemu/{vmid}/clone")
        },
        call("start", "POST", "/nodes/{node}/qemu/{vmid}/status/start"),
        call("stop", "POST", "/nodes/{node}/qemu/{vmid}/status/stop"),
        call(
            "shutdown",
            "POST",
            "/nodes/{node}/qemu/{vmid}/status/shutdown",
        ),
        call(
            "vm_status",
            "GET",
            "/nodes/{node}/qemu/{vmid}/status/current",
        ),
        Call {
            params: vec!["purge", "destroy-unreferenced-disks"],
            ..call("delete_vm", "DELETE", "/nodes/{node}/qemu/{vmid}")
        },
        Call {
            vars: vec![
                ("node", "pve"),
                ("upid", "UPID:pve:1:2:3:qmclone:201:x@pve!t:"),
            ],
            ..call("task_status", "GET", "/nodes/{node}/tasks/{upid}/status")
        },
        Call {
            params: vec!["source"],
            ..call("node_tasks", "GET", "/nodes/{node}/tasks")
        },
        Call {
            when: When::Agent,
            ..call("agent_ping", "POST", "/nodes/{node}/qemu/{vmid}/agent/ping")
        },
        Call {
            when: When::Agent,
            params: vec!["file", "content"],
            ..call(
                "agent_file_write",
                "POST",
                "/nodes/{node}/qemu/{vmid}/agent/file-write",
            )
        },
        Call {
            vars: vec![("storage", SNIPPET_STORAGE)],
            when: When::Snippet,
            ..call("storage", "GET", "/storage/{storage}")
        },
        call("permissions", "GET", "/access/permissions"),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// The calls in the source
// ---------------------------------------------------------------------------------------------------------

/// `ProxmoxApi` method → `(METHOD, path)` from its doc comment in proxmox-api/src/api.rs.
fn api_endpoints() -> BTreeMap<String, (String, String)> {
    let text = read("proxmox-api/src/api.rs");
    let start = text.find("pub trait ProxmoxApi").expect("the trait");
    let end = start + text[start..].find("\n}\n").expect("end of the trait");
    let mut docs = String::new();
    let mut out = BTreeMap::new();
    for line in text[start..end].lines() {
        let t = line.trim();
        if let Some(doc) = t.strip_prefix("///") {
            docs.push_str(doc);
            docs.push('\n');
        } else if let Some(rest) = t.strip_prefix("async fn ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let endpoint = docs.split('`').skip(1).step_by(2).find_map(|span| {
                let (m, p) = span.split_once(' ')?;
                ["GET", "POST", "PUT", "DELETE"].contains(&m).then(|| {
                    let p = p.split(['?', '[']).next().unwrap_or(p);
                    (m.to_owned(), p.to_owned())
                })
            });
            if let Some(e) = endpoint {
                out.insert(name, e);
            }
            docs.clear();
        } else if !t.starts_with('#') {
            docs.clear();
        }
    }
    out
}

/// `ProxmoxApi` methods called on a `pve` / `api` receiver in the dispatcher (tests excluded) and in the
/// task watcher it uses.
fn used_api_methods(known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut files = vec![repo().join("proxmox-api/src/watch.rs")];
    let mut stack = vec![repo().join("dispatcher-bin/src")];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "tests") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut used = BTreeSet::new();
    for f in files {
        let text = fs::read_to_string(&f).expect("source");
        let s = text.split("#[cfg(test)]").next().unwrap_or("");
        for receiver in ["pve", "api"] {
            let mut from = 0;
            while let Some(i) = s[from..].find(receiver) {
                let at = from + i;
                from = at + receiver.len();
                let before_ok = at == 0
                    || !s[..at]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_');
                let rest = s[from..].trim_start();
                let Some(rest) = rest.strip_prefix('.') else {
                    continue;
                };
                let rest = rest.trim_start();
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let after = rest[name.len()..].trim_start();
                if before_ok && after.starts_with('(') && known.contains(&name) {
                    used.insert(name);
                }
            }
        }
        if s.contains("poll_task_status(") {
            used.insert("task_status".to_owned());
        }
    }
    used
}

#[test]
fn the_call_table_covers_every_api_call_the_dispatcher_makes() {
    let endpoints = api_endpoints();
    let known: BTreeSet<String> = endpoints.keys().cloned().collect();
    for m in [
        "version",
        "clone_vm",
        "agent_file_write",
        "storage",
        "node_tasks",
    ] {
        assert!(known.contains(m), "api.rs parse lost {m}: {known:?}");
    }
    let used = used_api_methods(&known);
    for m in [
        "clone_vm",
        "delete_vm",
        "update_config",
        "vm_status",
        "node_tasks",
    ] {
        assert!(used.contains(m), "source scan lost {m}: {used:?}");
    }
    let table = calls();
    let listed: BTreeSet<String> = table.iter().map(|c| c.name.to_owned()).collect();
    let unlisted: Vec<&String> = used.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "the dispatcher calls {unlisted:?}: add them to calls() with their privileges"
    );
    // The table's endpoints are the ones the client sends, and exist in the schema.
    let schema = schema_permissions();
    for c in &table {
        let (m, p) = endpoints
            .get(c.name)
            .unwrap_or_else(|| panic!("{} is not a ProxmoxApi method", c.name));
        assert_eq!((m.as_str(), p.as_str()), (c.method, c.path), "{}", c.name);
        assert!(
            schema.contains_key(&(c.method.to_owned(), c.path.to_owned())),
            "{} {} is not in the schema",
            c.method,
            c.path
        );
    }
    // What the extra requirements of clone rest on is still in the schema.
    let clone = &schema[&(
        "POST".to_owned(),
        "/nodes/{node}/qemu/{vmid}/clone".to_owned(),
    )];
    let desc = clone["description"].as_str().unwrap_or("");
    assert!(
        desc.contains("'Datastore.AllocateSpace' on any used storage")
            && desc.contains("'SDN.Use' on any used bridge/vnet"),
        "{desc}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// The recipe against the calls
// ---------------------------------------------------------------------------------------------------------

const USES: [Uses; 3] = [
    Uses {
        snippet: true,
        agent: false,
    },
    Uses {
        snippet: false,
        agent: true,
    },
    Uses {
        snippet: true,
        agent: true,
    },
];

fn applicable(uses: Uses) -> Vec<Call> {
    let endpoints = api_endpoints();
    let used = used_api_methods(&endpoints.keys().cloned().collect());
    calls()
        .into_iter()
        .filter(|c| c.when.applies(uses) && used.contains(c.name))
        .collect()
}

fn failures(
    world: &World,
    calls: &[Call],
    schema: &BTreeMap<(String, String), Value>,
) -> Vec<String> {
    calls
        .iter()
        .filter_map(|c| {
            let perms = &schema[&(c.method.to_owned(), c.path.to_owned())];
            world.allows(c, perms).err()
        })
        .collect()
}

#[test]
fn the_recipe_grants_every_privilege_each_call_needs() {
    let schema = schema_permissions();
    for major in [9, 8] {
        for uses in USES {
            let world = World::from_recipe(&privileges::recipe_for(major, uses), major);
            let calls = applicable(uses);
            assert!(calls.len() >= 14, "{calls:?}");
            let failed = failures(&world, &calls, &schema);
            assert!(failed.is_empty(), "PVE {major} {uses:?}: {failed:#?}");
        }
    }
    // The model does fail calls: without any ACL only the unprivileged calls pass.
    let empty = World {
        pve_major: 9,
        acls: vec![],
        members: [CLONE.to_owned()].into(),
    };
    let calls = applicable(USES[2]);
    let privileged = calls
        .iter()
        .filter(|c| {
            !c.extra.is_empty()
                || schema[&(c.method.to_owned(), c.path.to_owned())]
                    .get("check")
                    .is_some()
        })
        .count();
    assert!(privileged >= 10);
    let failed = failures(&empty, &calls, &schema);
    assert_eq!(failed.len(), privileged, "{failed:#?}");
}

#[test]
fn the_recipe_holds_nothing_a_call_does_not_need() {
    let schema = schema_permissions();
    for major in [9, 8] {
        for uses in USES {
            let grants = privileges::recipe_for(major, uses);
            let world = World::from_recipe(&grants, major);
            let calls = applicable(uses);
            let base = failures(&world, &calls, &schema);
            assert!(base.is_empty(), "PVE {major} {uses:?}: {base:#?}");
            for i in 0..world.acls.len() {
                let mut less = world.clone();
                let (path, privilege) = less.acls.remove(i);
                assert!(
                    !failures(&less, &calls, &schema).is_empty(),
                    "PVE {major} {uses:?}: no call needs {privilege} on {path}"
                );
            }
        }
    }
}

#[test]
fn every_privilege_of_the_recipe_exists_in_its_version() {
    let schema = schema_permissions();
    let mut in_checks = BTreeSet::new();
    let mut named = BTreeSet::new();
    for perms in schema.values() {
        privileges_in_checks(perms, &mut in_checks);
        privileges_in_descriptions(perms, &mut named);
    }
    // The 9.1 schema checks no privilege PVE 9 lacks, and names every privilege of the PVE 9 recipe in some
    // method's permissions (SDN.Use only in descriptions: the bridge check is in code).
    let unknown: Vec<&String> = in_checks
        .iter()
        .chain(&named)
        .filter(|p| !privileges::PVE9_PRIVILEGES.contains(&p.as_str()))
        .collect();
    assert!(unknown.is_empty(), "{unknown:?}");
    assert!(
        in_checks.len() > 40 && named.contains("SDN.Use"),
        "{named:?}"
    );
    for g in privileges::recipe(9) {
        for p in g.privs {
            assert!(
                in_checks.contains(*p) || named.contains(*p),
                "{p} is named nowhere in the 9.1 schema's permissions"
            );
        }
    }
    for major in [9, 8] {
        for g in privileges::recipe(major) {
            for p in g.privs {
                assert!(
                    privileges::known_privileges(major).contains(p),
                    "PVE {major} has no privilege {p}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// PROXMOX_SETUP.md
// ---------------------------------------------------------------------------------------------------------

/// One ACL line of the document: path pattern, role, the role's privileges (sorted), condition.
type DocGrant = (String, String, Vec<String>, When);

fn when_of(comment: &str) -> When {
    match comment.trim() {
        "" => When::Always,
        "snippet injection" => When::Snippet,
        "agent injection" => When::Agent,
        other => panic!("unknown condition comment `# {other}`"),
    }
}

/// Splits `cmd  # comment` (a `#` inside double quotes does not count).
fn split_comment(line: &str) -> (&str, &str) {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return (line[..i].trim(), line[i + 1..].trim()),
            _ => {}
        }
    }
    (line.trim(), "")
}

/// The `bash` code blocks of the document, each as its lines.
fn code_blocks(doc: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            match current.take() {
                Some(b) => blocks.push(b),
                None => current = Some(Vec::new()),
            }
        } else if let Some(b) = current.as_mut() {
            b.push(line);
        }
    }
    blocks
}

/// The recipe blocks of PROXMOX_SETUP.md by major version.
fn doc_recipes(doc: &str) -> BTreeMap<u8, Vec<DocGrant>> {
    let vars = [
        ("$POOL", "{pool}"),
        ("$TEMPLATE_VMID", "{template}"),
        ("$DISK_STORAGE", "{disk_storage}"),
        ("$SNIPPET_STORAGE", "{snippet_storage}"),
        ("$ZONE", "{zone}"),
        ("$BRIDGE", "{bridge}"),
    ];
    let mut out = BTreeMap::new();
    for block in code_blocks(doc) {
        let Some(major) = block.first().and_then(|l| {
            l.trim()
                .strip_prefix("# Proxmox VE ")?
                .strip_suffix(".x")?
                .parse::<u8>()
                .ok()
        }) else {
            continue;
        };
        let mut roles: BTreeMap<String, (Vec<String>, When)> = BTreeMap::new();
        let mut acls = Vec::new();
        let mut pool_created = false;
        for line in &block[1..] {
            let (cmd, comment) = split_comment(line);
            let words: Vec<&str> = cmd.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["pveum", "role", "add", role, "--privs", ..] => {
                    let privs = cmd
                        .split('"')
                        .nth(1)
                        .unwrap_or_else(|| panic!("unquoted --privs: {line}"));
                    let mut privs: Vec<String> =
                        privs.split_whitespace().map(str::to_owned).collect();
                    privs.sort();
                    let prev = roles.insert((*role).to_owned(), (privs, when_of(comment)));
                    assert!(prev.is_none(), "role {role} defined twice");
                }
                [
                    "pveum",
                    "acl",
                    "modify",
                    path,
                    "--users",
                    "\"$GHR_USER\"",
                    "--roles",
                    role,
                ] => {
                    let mut p = path.trim_matches('"').to_owned();
                    for (var, placeholder) in vars {
                        p = p.replace(var, placeholder);
                    }
                    assert!(!p.contains('$'), "unknown variable in {line}");
                    acls.push((p, (*role).to_owned(), when_of(comment)));
                }
                ["pveum", "pool", "add", "\"$POOL\"", ..] => pool_created = true,
                [assignment] if assignment.contains('=') => {}
                _ => panic!("PVE {major} recipe: unexpected line `{line}`"),
            }
        }
        assert!(pool_created, "PVE {major}: the recipe creates the pool");
        let mut grants: Vec<DocGrant> = Vec::new();
        let mut used = BTreeSet::new();
        for (path, role, when) in acls {
            let (privs, role_when) = roles
                .get(&role)
                .unwrap_or_else(|| panic!("PVE {major}: role {role} is not created"));
            assert_eq!(
                *role_when, when,
                "PVE {major}: role {role} and its ACL disagree"
            );
            assert!(used.insert(role.clone()), "role {role} used twice");
            grants.push((path, role, privs.clone(), when));
        }
        assert_eq!(
            used.len(),
            roles.len(),
            "PVE {major}: a role is created but never granted"
        );
        grants.sort();
        assert!(
            out.insert(major, grants).is_none(),
            "two PVE {major} blocks"
        );
    }
    out
}

fn data_recipe(major: u8) -> Vec<DocGrant> {
    let mut v: Vec<DocGrant> = privileges::recipe(major)
        .into_iter()
        .map(|g| {
            let mut privs: Vec<String> = g.privs.iter().map(|p| (*p).to_owned()).collect();
            privs.sort();
            (g.path().to_owned(), g.role.to_owned(), privs, g.when)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn proxmox_setup_md_states_exactly_the_recipe() {
    let doc = read("PROXMOX_SETUP.md");
    let recipes = doc_recipes(&doc);
    assert_eq!(
        recipes.keys().copied().collect::<Vec<_>>(),
        [8, 9],
        "one recipe block per version"
    );
    for (major, grants) in &recipes {
        assert_eq!(grants, &data_recipe(*major), "PVE {major}");
    }
    // No other grant anywhere in the document: nothing on / or beside the recipe.
    let mut outside = 0;
    for block in code_blocks(&doc) {
        let is_recipe = block
            .first()
            .is_some_and(|l| l.trim().starts_with("# Proxmox VE "));
        for line in block {
            let grant = line.contains("pveum acl modify") || line.contains("pveum role add");
            if grant && !is_recipe {
                outside += 1;
            }
        }
    }
    assert_eq!(outside, 0, "pveum grants outside the recipe blocks");
    assert!(
        !doc.contains("acl modify / "),
        "the document grants a role on /"
    );
}

#[test]
fn the_doc_parser_sees_a_drifted_recipe() {
    let doc = read("PROXMOX_SETUP.md");
    let drifted = doc.replacen(
        "--privs \"VM.Audit VM.Clone\"",
        "--privs \"VM.Audit VM.Clone VM.Allocate\"",
        1,
    );
    assert_ne!(
        doc, drifted,
        "the template role line changed: update this test"
    );
    assert_ne!(doc_recipes(&drifted)[&9], data_recipe(9));
}
