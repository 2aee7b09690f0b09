//! The least-privilege recipe for the dispatcher's Proxmox VE API token (PROXMOX_SETUP.md §6) and the checks
//! `dispatcher check` can run against it:
//!
//! - [`recipe`] / [`recipe_for`]: the ACLs, per Proxmox VE major version (9 has `VM.GuestAgent.*`, 8 has
//!   `VM.Monitor`), each on a path pattern ([`Target`]) and only when the pools need it ([`When`]);
//! - [`missing`] and [`beyond_recipe`]: the token's `GET /access/permissions` compared with the recipe for the
//!   pools at hand ([`Scope`]), as one line per path;
//! - [`clone_needs`]: the storages and bridges a clone of a template touches (what the clone checks);
//! - [`snippet_storage_problems`]: why a storage must not be the snippet storage handed to the dispatcher's
//!   container, from `GET /storage/{storage}`.
//!
//! Where the privileges come from (Proxmox VE 9.1 API schema, `permissions` of each call; qemu-server 9.2 and
//! 8.4 for what the schema does not say):
//!
//! | call | needs |
//! |---|---|
//! | `POST /nodes/{n}/qemu/{template}/clone` with `pool=` | `VM.Clone` on `/vms/{template}`, `VM.Allocate` on `/pool/{pool}`, `Datastore.AllocateSpace` on every storage of the template's disks (or the full clone's target storage), `SDN.Use` on the bridge of each NIC |
//! | `GET /cluster/resources` | `VM.Audit` on a VM to see it (templates and clones) |
//! | `GET`/`PUT …/config`, `…/status/*`, `DELETE …/qemu/{id}` | `VM.Audit`, `VM.Config.Options` (tags, description), `VM.Config.Cloudinit` (`cicustom`), `VM.PowerMgmt`, `VM.Allocate` on the clone: inherited from `/pool/{pool}`, of which the clone is a member |
//! | `POST …/agent/ping`, `…/agent/file-write` | PVE 9: `VM.GuestAgent.Audit`, `VM.GuestAgent.FileWrite`; PVE 8: `VM.Monitor` |
//! | `GET /storage/{storage}` (`check`) | `Datastore.Allocate` on the snippet storage |
//! | `GET /version`, `/nodes`, `/access/permissions`, the token's own tasks | nothing |
//!
//! `qemu-server` checks no storage privilege for `cicustom` (only `VM.Config.Cloudinit` on the VM), so the
//! snippet storage needs no privilege for provisioning; `Datastore.Allocate` there only lets `check` read its
//! definition (on a storage whose only content is snippets it also allows deleting snippet volumes).

use std::collections::{BTreeMap, BTreeSet};

use proxmox_api::{Permissions, StorageConfig, VmConfig};

/// What an ACL of the recipe is placed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// `/pool/{pool}`: the resource pool (`pve_pool`) the clones are made in; its members inherit it.
    Pool,
    /// `/vms/{template}`: each template VM (not a member of the pool).
    Template,
    /// `/storage/{disk_storage}`: the storage of the templates' disks (linked clones), or a pool's
    /// `clone_storage` (full clones).
    DiskStorage,
    /// `/storage/{snippet_storage}`: the dedicated snippets storage (snippet injection only).
    SnippetStorage,
    /// `/sdn/zones/{zone}/{bridge}`: the bridge (or SDN vnet) of the templates' NICs; `zone` is `localnetwork`
    /// for a plain Linux bridge.
    Bridge,
}

impl Target {
    /// The ACL path pattern, with `{placeholders}`.
    pub fn pattern(self) -> &'static str {
        match self {
            Target::Pool => "/pool/{pool}",
            Target::Template => "/vms/{template}",
            Target::DiskStorage => "/storage/{disk_storage}",
            Target::SnippetStorage => "/storage/{snippet_storage}",
            Target::Bridge => "/sdn/zones/{zone}/{bridge}",
        }
    }

    /// Every target.
    pub const ALL: [Target; 5] = [
        Target::Pool,
        Target::Template,
        Target::DiskStorage,
        Target::SnippetStorage,
        Target::Bridge,
    ];
}

/// When an ACL of the recipe is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum When {
    /// Always.
    Always,
    /// Only when a pool uses snippet (cloud-init `cicustom`) injection.
    Snippet,
    /// Only when a pool uses guest-agent injection.
    Agent,
}

impl When {
    /// Whether pools that use `uses` need it.
    pub fn applies(self, uses: Uses) -> bool {
        match self {
            When::Always => true,
            When::Snippet => uses.snippet,
            When::Agent => uses.agent,
        }
    }
}

/// The injection modes the configured pools use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Uses {
    /// Some pool uses snippet injection.
    pub snippet: bool,
    /// Some pool uses guest-agent injection.
    pub agent: bool,
}

/// One ACL of the recipe: `pveum acl modify <target> --users <user> --roles <role>` with a role holding
/// exactly `privs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Where.
    pub target: Target,
    /// The role name PROXMOX_SETUP.md creates for it.
    pub role: &'static str,
    /// The role's privileges.
    pub privs: &'static [&'static str],
    /// When it is needed.
    pub when: When,
}

impl Grant {
    /// The ACL path pattern.
    pub fn path(&self) -> &'static str {
        self.target.pattern()
    }
}

const CLONES: &[&str] = &[
    "VM.Allocate",
    "VM.Audit",
    "VM.Config.Options",
    "VM.PowerMgmt",
];
const CLOUDINIT: &[&str] = &["VM.Config.Cloudinit"];
const AGENT_9: &[&str] = &["VM.GuestAgent.Audit", "VM.GuestAgent.FileWrite"];
const AGENT_8: &[&str] = &["VM.Monitor"];
const TEMPLATE: &[&str] = &["VM.Audit", "VM.Clone"];
const DISKS: &[&str] = &["Datastore.AllocateSpace"];
const SNIPPETS: &[&str] = &["Datastore.Allocate"];
const NETWORK: &[&str] = &["SDN.Use"];

/// The recipe for Proxmox VE `pve_major` (9 and later: `VM.GuestAgent.*`; 8 and earlier: `VM.Monitor`),
/// every ACL including the conditional ones.
pub fn recipe(pve_major: u8) -> Vec<Grant> {
    let agent = if pve_major >= 9 { AGENT_9 } else { AGENT_8 };
    let g = |target, role, privs, when| Grant {
        target,
        role,
        privs,
        when,
    };
    vec![
        g(Target::Pool, "GHRClones", CLONES, When::Always),
        g(Target::Pool, "GHRCloudinit", CLOUDINIT, When::Snippet),
        g(Target::Pool, "GHRAgent", agent, When::Agent),
        g(Target::Template, "GHRTemplate", TEMPLATE, When::Always),
        g(Target::DiskStorage, "GHRDisks", DISKS, When::Always),
        g(
            Target::SnippetStorage,
            "GHRSnippets",
            SNIPPETS,
            When::Snippet,
        ),
        g(Target::Bridge, "GHRNetwork", NETWORK, When::Always),
    ]
}

/// The ACLs pools using `uses` need.
pub fn recipe_for(pve_major: u8, uses: Uses) -> Vec<Grant> {
    recipe(pve_major)
        .into_iter()
        .filter(|g| g.when.applies(uses))
        .collect()
}

/// Every privilege name of Proxmox VE 9.1 (`pve-access-control` 9.1.1: the privilege groups plus
/// `Permissions.Modify`). `VM.Monitor` is gone; `VM.GuestAgent.*` and `VM.Replicate` are new.
pub const PVE9_PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// Every privilege name of Proxmox VE 8.4 (`pve-access-control` 8.2.3, `stable-bookworm`).
pub const PVE8_PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.Migrate",
    "VM.Monitor",
    "VM.PowerMgmt",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// The privilege names `pveum role add` accepts on Proxmox VE `pve_major`.
pub fn known_privileges(pve_major: u8) -> &'static [&'static str] {
    if pve_major >= 9 {
        PVE9_PRIVILEGES
    } else {
        PVE8_PRIVILEGES
    }
}

/// The major version of a `GET /version` `version` string (`9.1.1` → 9).
pub fn pve_major(version: &str) -> Option<u8> {
    version.trim().split('.').next()?.parse().ok()
}

/// The concrete objects the recipe is evaluated for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Proxmox VE major version ([`pve_major`] of `GET /version`).
    pub pve_major: u8,
    /// Injection modes of the pools.
    pub uses: Uses,
    /// The resource pool the clones are made in (`pve_pool`).
    pub pool: String,
    /// VMIDs of the templates.
    pub templates: Vec<u32>,
    /// VMIDs of the pool's members (`pool` of `GET /cluster/resources`): `GET /access/permissions` lists each
    /// with the privileges inherited from the pool.
    pub pool_members: Vec<u32>,
    /// Storages clones allocate on ([`clone_needs`] of each template, or a pool's `clone_storage`).
    pub disk_storages: Vec<String>,
    /// Snippet storages (the pools' `storage`, snippet injection only).
    pub snippet_storages: Vec<String>,
    /// Bridges / SDN vnets of the templates' NICs ([`clone_needs`]); matched in any SDN zone.
    pub bridges: Vec<String>,
}

/// The concrete ACL paths of `target` in `scope` (for a bridge: its path in the `localnetwork` zone).
fn concrete_paths(target: Target, scope: &Scope) -> Vec<String> {
    match target {
        Target::Pool => vec![format!("/pool/{}", scope.pool)],
        Target::Template => scope
            .templates
            .iter()
            .map(|id| format!("/vms/{id}"))
            .collect(),
        Target::DiskStorage => scope
            .disk_storages
            .iter()
            .map(|s| format!("/storage/{s}"))
            .collect(),
        Target::SnippetStorage => scope
            .snippet_storages
            .iter()
            .map(|s| format!("/storage/{s}"))
            .collect(),
        Target::Bridge => scope
            .bridges
            .iter()
            .map(|b| format!("/sdn/zones/localnetwork/{b}"))
            .collect(),
    }
}

/// `/sdn/zones/{zone}/{bridge}[/…]`: the bridge named, in any zone.
fn sdn_bridge_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/sdn/zones/")?;
    let mut parts = rest.split('/');
    let _zone = parts.next().filter(|z| !z.is_empty())?;
    parts.next().filter(|b| !b.is_empty())
}

/// Whether `held` grants `privilege` on `path`; for a bridge, on it in whichever zone an ACL names it.
fn allows(held: &Permissions, target: Target, path: &str, privilege: &str) -> bool {
    if held.allows(path, privilege) {
        return true;
    }
    if target == Target::Bridge {
        let bridge = sdn_bridge_of(path);
        return held
            .0
            .keys()
            .filter(|p| sdn_bridge_of(p).is_some() && sdn_bridge_of(p) == bridge)
            .filter(|p| p.matches('/').count() == 4)
            .any(|p| held.allows(p, privilege));
    }
    false
}

/// What the token lacks of the recipe for `scope`: one line per ACL path, e.g.
/// `lacks VM.Clone on /vms/9000 (role GHRTemplate of the recipe)`. Empty when it holds everything.
pub fn missing(held: &Permissions, scope: &Scope) -> Vec<String> {
    let mut out = Vec::new();
    for grant in recipe_for(scope.pve_major, scope.uses) {
        let paths = concrete_paths(grant.target, scope);
        if paths.is_empty() || (grant.target == Target::Pool && scope.pool.is_empty()) {
            out.push(format!(
                "no {} known: cannot check role {} ({})",
                grant.target.pattern(),
                grant.role,
                grant.privs.join(", ")
            ));
            continue;
        }
        for path in paths {
            let lacks: Vec<&str> = grant
                .privs
                .iter()
                .copied()
                .filter(|p| !allows(held, grant.target, &path, p))
                .collect();
            if !lacks.is_empty() {
                out.push(format!(
                    "lacks {} on {path} (role {} of the recipe)",
                    lacks.join(", "),
                    grant.role
                ));
            }
        }
    }
    out
}

/// The privileges the recipe allows on `path`: the grants on it or on an ancestor (`pveum acl modify`
/// propagates by default), the pool's grants on a member VM, the bridge grants on the bridge in any zone.
fn allowed_at(path: &str, scope: &Scope, grants: &[Grant]) -> BTreeSet<&'static str> {
    let mut set = BTreeSet::new();
    let member = path
        .strip_prefix("/vms/")
        .and_then(|id| id.parse::<u32>().ok())
        .filter(|id| scope.pool_members.contains(id) && !scope.templates.contains(id));
    for grant in grants {
        let on_path = concrete_paths(grant.target, scope)
            .iter()
            .any(|g| path == g || path.starts_with(&format!("{g}/")));
        let on_member = grant.target == Target::Pool && member.is_some();
        let on_bridge = grant.target == Target::Bridge
            && sdn_bridge_of(path).is_some_and(|b| scope.bridges.iter().any(|s| s == b));
        if on_path || on_member || on_bridge {
            set.extend(grant.privs.iter().copied());
        }
    }
    set
}

fn is_ancestor(ancestor: &str, path: &str) -> bool {
    ancestor != path
        && (ancestor == "/"
            || path
                .strip_prefix(ancestor)
                .is_some_and(|rest| rest.starts_with('/')))
}

/// Privileges the token holds beyond the recipe for `scope`: one line per path, e.g.
/// `/vms: VM.Allocate, VM.Audit`. A privilege already listed on an ancestor it propagates from is not
/// repeated on the descendants. Empty when the token holds nothing more than the recipe.
pub fn beyond_recipe(held: &Permissions, scope: &Scope) -> Vec<String> {
    let grants = recipe_for(scope.pve_major, scope.uses);
    let mut paths: Vec<&String> = held.0.keys().collect();
    paths.sort_by_key(|p| (p.matches('/').count(), p.as_str()));
    // Privileges reported on a path and propagating from it.
    let mut reported: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut out = Vec::new();
    for path in paths {
        let privs = &held.0[path];
        let allowed = allowed_at(path, scope, &grants);
        let beyond: Vec<&str> = privs
            .keys()
            .map(String::as_str)
            .filter(|p| !allowed.contains(p))
            .filter(|p| {
                !reported
                    .iter()
                    .any(|(a, set)| is_ancestor(a, path) && set.contains(p))
            })
            .collect();
        if beyond.is_empty() {
            continue;
        }
        out.push(format!("{path}: {}", beyond.join(", ")));
        let propagating = beyond
            .iter()
            .copied()
            .filter(|p| privs.get(*p).copied().unwrap_or(false));
        reported.entry(path).or_default().extend(propagating);
    }
    out
}

/// The storages and bridges a clone of a template touches, as qemu-server's clone checks them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloneNeeds {
    /// Storages that need `Datastore.AllocateSpace` (sorted, unique).
    pub disk_storages: Vec<String>,
    /// Bridges / vnets that need `SDN.Use` (sorted, unique).
    pub bridges: Vec<String>,
}

/// What cloning `template` needs: the storage of every disk that is not a CD-ROM (the cloud-init drive is a
/// CD-ROM), or `full_clone_storage` instead for a full clone to that storage, plus `vmstatestorage`; and
/// the bridge of every NIC (`SDN.Use` on `/sdn/zones/<zone>/<bridge>`, `/<tag>` below it for a VLAN).
pub fn clone_needs(template: &VmConfig, full_clone_storage: Option<&str>) -> CloneNeeds {
    let mut disks = BTreeSet::new();
    let mut bridges = BTreeSet::new();
    for (key, value) in &template.raw {
        let Some(value) = proxmox_api::lenient::value_as_string(value) else {
            continue;
        };
        if is_drive_key(key) {
            let mut parts = value.split(',');
            let volid = parts.next().unwrap_or("").trim();
            let cdrom = parts.any(|p| p.trim() == "media=cdrom");
            if cdrom || volid.is_empty() || volid == "none" {
                continue;
            }
            if let Some(storage) = full_clone_storage {
                disks.insert(storage.to_owned());
            } else if let Some((storage, _)) = volid.split_once(':') {
                disks.insert(storage.to_owned());
            }
        } else if key == "vmstatestorage" {
            disks.insert(value.trim().to_owned());
        } else if key
            .strip_prefix("net")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            && let Some(bridge) = value
                .split(',')
                .find_map(|p| p.trim().strip_prefix("bridge="))
        {
            bridges.insert(bridge.to_owned());
        }
    }
    CloneNeeds {
        disk_storages: disks.into_iter().collect(),
        bridges: bridges.into_iter().collect(),
    }
}

fn is_drive_key(key: &str) -> bool {
    if key == "efidisk0" || key == "tpmstate0" {
        return true;
    }
    ["ide", "sata", "scsi", "virtio"].iter().any(|bus| {
        key.strip_prefix(bus)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Storage types whose content lives in a directory of the node (a shared one for nfs, cifs, cephfs).
const DIRECTORY_TYPES: &[&str] = &["dir", "nfs", "cifs", "cephfs"];

/// Directories (and everything below them) a snippet storage must not be in.
const SYSTEM_TREES: &[&str] = &[
    "/var/lib/vz",
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/boot",
    "/root",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/lib/pve-cluster",
    "/var/lib/pve-manager",
];

/// Directories a snippet storage must not be exactly (their subdirectories are fine).
const SYSTEM_DIRS: &[&str] = &["/", "/var", "/var/lib", "/home", "/mnt", "/mnt/pve", "/tmp"];

/// Why `storage` is unsafe as the snippet storage whose directory the dispatcher's container owns: the
/// container writes there, and everything in a storage's `snippets/` can be referenced by any VM (`cicustom`)
/// or run as root on the host (hookscripts). Safe means: a directory storage (`dir`, or `nfs`/`cifs`/`cephfs`
/// for a cluster), enabled, whose content is exactly `snippets`, whose path is not `/var/lib/vz` (the `local`
/// storage, which holds hookscripts and other VMs' cloud-init files) or inside it, nor a system directory.
/// Empty when safe. A storage shared with another storage's directory or holding files that are not the
/// dispatcher's cannot be seen from its definition: the bootstrap script checks those on the host.
pub fn snippet_storage_problems(storage: &StorageConfig) -> Vec<String> {
    let id = &storage.storage;
    let mut out = Vec::new();
    if storage.disable {
        out.push(format!("storage {id} is disabled"));
    }
    if !DIRECTORY_TYPES.contains(&storage.storage_type.as_str()) {
        out.push(format!(
            "storage {id} is of type {}: snippets need a directory storage (dir; nfs, cifs or cephfs when \
             shared by a cluster)",
            storage.storage_type
        ));
    }
    if !storage.has_content("snippets") {
        out.push(format!("storage {id} lacks the snippets content type"));
    }
    let others: Vec<&str> = storage
        .content
        .iter()
        .map(String::as_str)
        .filter(|c| *c != "snippets")
        .collect();
    if !others.is_empty() {
        out.push(format!(
            "storage {id} also holds {} content: the snippet storage must hold snippets only (a dedicated \
             storage: pvesm add dir ghr-snippets --path /var/lib/ghr-snippets --content snippets)",
            others.join(",")
        ));
    }
    match storage.path.as_deref().map(str::trim) {
        None | Some("") if storage.storage_type == "dir" => {
            out.push(format!("storage {id} has no path"));
        }
        None | Some("") => {}
        Some(path) => {
            if let Some(problem) = path_problem(path) {
                out.push(format!("storage {id}: path {path} {problem}"));
            }
        }
    }
    out
}

/// Why a snippet storage may not live at `path`.
fn path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("is not absolute");
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Some("is not normalised (. or ..)");
    }
    let norm = format!("/{}", parts.join("/"));
    let within = |tree: &str| norm == tree || norm.starts_with(&format!("{tree}/"));
    if within("/var/lib/vz") {
        return Some(
            "is the local storage's directory or inside it: its snippets/ holds hookscripts (run as root on \
             the host) and other VMs' cloud-init files",
        );
    }
    if SYSTEM_TREES.iter().any(|t| within(t)) || SYSTEM_DIRS.contains(&norm.as_str()) {
        return Some("is a system directory");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn storage(v: serde_json::Value) -> StorageConfig {
        serde_json::from_value(v).unwrap()
    }

    fn scope(major: u8, uses: Uses) -> Scope {
        Scope {
            pve_major: major,
            uses,
            pool: "ghr-runners".into(),
            templates: vec![9000],
            pool_members: vec![201, 202],
            disk_storages: vec!["local-lvm".into()],
            snippet_storages: if uses.snippet {
                vec!["ghr-snippets".into()]
            } else {
                vec![]
            },
            bridges: vec!["vmbr0".into()],
        }
    }

    const BOTH: Uses = Uses {
        snippet: true,
        agent: true,
    };

    /// What PVE answers for a token set up exactly by the recipe: the ACL paths (propagating) and the pool's
    /// members (inherited, not propagating).
    fn exact(major: u8, uses: Uses) -> Permissions {
        let s = scope(major, uses);
        let mut map: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
        for g in recipe_for(major, uses) {
            for p in concrete_paths(g.target, &s) {
                for privilege in g.privs {
                    map.entry(p.clone())
                        .or_default()
                        .insert((*privilege).to_owned(), true);
                }
                if g.target == Target::Pool {
                    for m in &s.pool_members {
                        for privilege in g.privs {
                            map.entry(format!("/vms/{m}"))
                                .or_default()
                                .insert((*privilege).to_owned(), false);
                        }
                    }
                }
            }
        }
        Permissions(map)
    }

    #[test]
    fn recipe_names_only_privileges_of_its_version() {
        for major in [8, 9] {
            let known = known_privileges(major);
            for g in recipe(major) {
                for p in g.privs {
                    assert!(known.contains(p), "PVE {major}: {p} of {} unknown", g.role);
                }
            }
        }
        let all9: Vec<&str> = recipe(9).iter().flat_map(|g| g.privs.to_vec()).collect();
        let all8: Vec<&str> = recipe(8).iter().flat_map(|g| g.privs.to_vec()).collect();
        assert!(all9.contains(&"VM.GuestAgent.FileWrite") && !all9.contains(&"VM.Monitor"));
        assert!(all8.contains(&"VM.Monitor") && !all8.iter().any(|p| p.contains("GuestAgent")));
        assert!(!PVE9_PRIVILEGES.contains(&"VM.Monitor"));
        assert_eq!(
            recipe(10),
            recipe(9),
            "later versions keep 9's names until known otherwise"
        );
    }

    #[test]
    fn recipe_is_conditional_on_injection() {
        let roles = |uses| -> Vec<&str> { recipe_for(9, uses).iter().map(|g| g.role).collect() };
        let snippet = roles(Uses {
            snippet: true,
            agent: false,
        });
        let agent = roles(Uses {
            snippet: false,
            agent: true,
        });
        assert!(snippet.contains(&"GHRSnippets") && snippet.contains(&"GHRCloudinit"));
        assert!(!snippet.contains(&"GHRAgent"));
        assert!(agent.contains(&"GHRAgent"));
        assert!(!agent.contains(&"GHRSnippets") && !agent.contains(&"GHRCloudinit"));
        // Nothing of the recipe is on /, /vms, /storage or /nodes as a whole.
        for g in recipe(9) {
            assert!(g.path().matches('/').count() >= 2, "{}", g.path());
        }
    }

    #[test]
    fn exact_recipe_is_neither_missing_nor_beyond() {
        for major in [8, 9] {
            for uses in [
                BOTH,
                Uses {
                    snippet: true,
                    agent: false,
                },
                Uses {
                    snippet: false,
                    agent: true,
                },
            ] {
                let held = exact(major, uses);
                let s = scope(major, uses);
                assert_eq!(missing(&held, &s), Vec::<String>::new(), "{major} {uses:?}");
                assert_eq!(
                    beyond_recipe(&held, &s),
                    Vec::<String>::new(),
                    "{major} {uses:?}"
                );
            }
        }
    }

    #[test]
    fn the_old_whole_tree_grant_is_reported_once_at_the_root() {
        // PROXMOX_SETUP.md before the recipe: the role on / (plus Sys.Audit, VM.Clone everywhere).
        let role: BTreeMap<String, bool> = [
            "VM.Audit",
            "VM.Clone",
            "VM.Allocate",
            "VM.Config.Options",
            "VM.Config.Cloudinit",
            "VM.PowerMgmt",
            "VM.GuestAgent.Audit",
            "VM.GuestAgent.FileWrite",
            "Datastore.Audit",
            "Datastore.AllocateSpace",
            "Sys.Audit",
            "SDN.Use",
        ]
        .iter()
        .map(|p| ((*p).to_owned(), true))
        .collect();
        let mut map = BTreeMap::new();
        for p in [
            "/",
            "/vms",
            "/storage",
            "/nodes",
            "/sdn",
            "/pool/ghr-runners",
            "/vms/201",
        ] {
            map.insert(p.to_owned(), role.clone());
        }
        let held = Permissions(map);
        let s = scope(9, BOTH);
        let beyond = beyond_recipe(&held, &s);
        assert_eq!(beyond.len(), 1, "{beyond:?}");
        assert!(beyond[0].starts_with("/: "), "{beyond:?}");
        for p in ["VM.Allocate", "Sys.Audit", "Datastore.Audit", "VM.Clone"] {
            assert!(beyond[0].contains(p), "{beyond:?}");
        }
        // It lacks nothing but Datastore.Allocate on the snippet storage (check's storage read).
        assert_eq!(
            missing(&held, &s),
            ["lacks Datastore.Allocate on /storage/ghr-snippets (role GHRSnippets of the recipe)"]
        );
    }

    #[test]
    fn extra_privileges_are_named_per_path() {
        let mut held = exact(9, BOTH);
        held.0
            .entry("/vms/9000".into())
            .or_default()
            .insert("VM.Allocate".into(), true);
        held.0.insert(
            "/storage/local-lvm".into(),
            [
                ("Datastore.AllocateSpace".to_owned(), true),
                ("Datastore.Audit".to_owned(), true),
            ]
            .into(),
        );
        held.0.insert(
            "/nodes".into(),
            [("Sys.Audit".to_owned(), true)].into_iter().collect(),
        );
        // A VM outside the pool (pool-derived entries exist only for members).
        held.0.insert(
            "/vms/300".into(),
            [("VM.PowerMgmt".to_owned(), false)].into(),
        );
        let beyond = beyond_recipe(&held, &scope(9, BOTH));
        assert_eq!(
            beyond,
            [
                "/nodes: Sys.Audit",
                "/storage/local-lvm: Datastore.Audit",
                "/vms/300: VM.PowerMgmt",
                "/vms/9000: VM.Allocate",
            ]
        );
    }

    #[test]
    fn a_template_inside_the_pool_is_reported() {
        // The template must not be a member of the clones' pool: the pool's role would let the token
        // delete or reconfigure it.
        let mut held = exact(9, BOTH);
        let mut s = scope(9, BOTH);
        s.pool_members.push(9000);
        for p in CLONES {
            held.0
                .entry("/vms/9000".into())
                .or_default()
                .insert((*p).to_owned(), false);
        }
        assert_eq!(
            beyond_recipe(&held, &s),
            ["/vms/9000: VM.Allocate, VM.Config.Options, VM.PowerMgmt"]
        );
    }

    #[test]
    fn missing_names_the_path_and_the_role() {
        let mut held = exact(8, BOTH);
        held.0.remove("/vms/9000");
        held.0
            .get_mut("/pool/ghr-runners")
            .unwrap()
            .remove("VM.Monitor");
        let got = missing(&held, &scope(8, BOTH));
        assert_eq!(
            got,
            [
                "lacks VM.Monitor on /pool/ghr-runners (role GHRAgent of the recipe)",
                "lacks VM.Audit, VM.Clone on /vms/9000 (role GHRTemplate of the recipe)",
            ]
        );
        // A privilege on an ancestor that propagates counts; one that does not, does not.
        let mut held = exact(9, BOTH);
        held.0.remove("/storage/local-lvm");
        held.0.insert(
            "/storage".into(),
            [("Datastore.AllocateSpace".to_owned(), false)].into(),
        );
        assert_eq!(missing(&held, &scope(9, BOTH)).len(), 1);
        held.0.insert(
            "/storage".into(),
            [("Datastore.AllocateSpace".to_owned(), true)].into(),
        );
        assert!(missing(&held, &scope(9, BOTH)).is_empty());
        // No pool configured: said so rather than checked against "/pool/".
        let mut s = scope(9, BOTH);
        s.pool.clear();
        assert!(
            missing(&exact(9, BOTH), &s)
                .iter()
                .any(|l| l.starts_with("no /pool/{pool} known"))
        );
    }

    #[test]
    fn bridges_match_in_any_zone_and_vlans_below_them() {
        let mut held = exact(9, BOTH);
        held.0.remove("/sdn/zones/localnetwork/vmbr0");
        held.0.insert(
            "/sdn/zones/zone1/vmbr0".into(),
            [("SDN.Use".to_owned(), true)].into(),
        );
        held.0.insert(
            "/sdn/zones/zone1/vmbr0/20".into(),
            [("SDN.Use".to_owned(), true)].into(),
        );
        let s = scope(9, BOTH);
        assert!(missing(&held, &s).is_empty(), "{:?}", missing(&held, &s));
        assert!(beyond_recipe(&held, &s).is_empty());
        held.0.insert(
            "/sdn/zones/zone1/vmbr1".into(),
            [("SDN.Use".to_owned(), true)].into(),
        );
        assert_eq!(
            beyond_recipe(&held, &s),
            ["/sdn/zones/zone1/vmbr1: SDN.Use"]
        );
    }

    #[test]
    fn clone_needs_reads_disks_and_bridges_like_the_clone_check() {
        let cfg: VmConfig = serde_json::from_value(json!({
            "scsi0": "local-lvm:base-9000-disk-0,discard=on,iothread=1,size=32G",
            "efidisk0": "nfs-a:9000/base-9000-disk-1.raw,efitype=4m,size=528K",
            "ide2": "local-lvm:vm-9000-cloudinit,media=cdrom",
            "sata0": "local:iso/virtio-win.iso,media=cdrom,size=700M",
            "ide0": "none,media=cdrom",
            "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1",
            "net1": "virtio=BC:24:11:00:00:02,bridge=vnet7,tag=20",
            "netmask": "ignored",
            "unused0": "local-lvm:vm-9000-disk-9",
            "template": 1
        }))
        .unwrap();
        assert_eq!(
            clone_needs(&cfg, None),
            CloneNeeds {
                disk_storages: vec!["local-lvm".into(), "nfs-a".into()],
                bridges: vec!["vmbr0".into(), "vnet7".into()],
            }
        );
        assert_eq!(
            clone_needs(&cfg, Some("fast")).disk_storages,
            vec!["fast".to_owned()]
        );
    }

    #[test]
    fn a_dedicated_snippets_storage_has_no_problem() {
        for v in [
            json!({"storage": "ghr-snippets", "type": "dir", "content": "snippets",
                   "path": "/var/lib/ghr-snippets", "digest": "d"}),
            json!({"storage": "ghr-nfs", "type": "nfs", "content": "snippets", "path": "/mnt/pve/ghr-nfs",
                   "server": "10.0.0.5", "export": "/srv/ghr", "shared": 1}),
            json!({"storage": "ghr-ceph", "type": "cephfs", "content": "snippets"}),
        ] {
            let s = storage(v);
            assert_eq!(snippet_storage_problems(&s), Vec::<String>::new(), "{s:?}");
        }
    }

    #[test]
    fn unsafe_snippet_storages_are_explained() {
        let p = |v| snippet_storage_problems(&storage(v));
        // The default `local` storage with snippets enabled: shared content, and /var/lib/vz.
        let local = p(
            json!({"storage": "local", "type": "dir", "content": "iso,vztmpl,backup,snippets", "path": "/var/lib/vz"}),
        );
        assert_eq!(local.len(), 2, "{local:?}");
        assert!(local[0].contains("also holds iso,vztmpl,backup content"));
        assert!(local[1].contains("path /var/lib/vz is the local storage's directory"));
        // A storage made for snippets but pointed inside /var/lib/vz.
        let inside = p(
            json!({"storage": "s", "type": "dir", "content": "snippets", "path": "/var/lib/vz/ghr/"}),
        );
        assert_eq!(inside.len(), 1);
        assert!(inside[0].contains("inside it"));
        assert_eq!(
            p(json!({"storage": "s", "type": "dir", "content": "snippets", "path": "/var/lib//vz"}))
                .len(),
            1
        );
        // System directories, relative and odd paths.
        for path in [
            "/",
            "/etc/pve",
            "/var/lib",
            "/root/x",
            "relative/dir",
            "/srv/../etc",
        ] {
            assert_eq!(
                p(json!({"storage": "s", "type": "dir", "content": "snippets", "path": path}))
                    .len(),
                1,
                "{path}"
            );
        }
        // Not a directory storage, disabled, no snippets content, no path.
        let lvm =
            p(json!({"storage": "local-lvm", "type": "lvmthin", "content": "images,rootdir"}));
        assert!(lvm[0].contains("type lvmthin"));
        assert!(lvm[1].contains("lacks the snippets content type"));
        assert!(lvm[2].contains("also holds images,rootdir content"));
        let off = p(
            json!({"storage": "s", "type": "dir", "content": "snippets", "path": "/srv/s", "disable": 1}),
        );
        assert_eq!(off, ["storage s is disabled"]);
        let nopath = p(json!({"storage": "s", "type": "dir", "content": "snippets"}));
        assert_eq!(nopath, ["storage s has no path"]);
    }

    #[test]
    fn pve_major_of_version_strings() {
        assert_eq!(pve_major("9.1.1"), Some(9));
        assert_eq!(pve_major("8.4.0"), Some(8));
        assert_eq!(pve_major(""), None);
        assert_eq!(pve_major("x.y"), None);
    }
}
