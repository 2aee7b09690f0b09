//! The pools configuration: the seed's `runner-pools.json` keys and defaults, the extensions of DESIGN §2.3,
//! and validation that reports every problem at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Location, Problem, ProblemKind, Warning};
use crate::marks;

/// Name of the single pool built from [`Defaults`] when no pools file is given.
pub const DEFAULT_POOL_NAME: &str = "default";
/// Smallest VMID Proxmox accepts.
pub const MIN_VMID: u32 = 100;
/// Largest VMID Proxmox accepts.
pub const MAX_VMID: u32 = 999_999_999;
/// Longest accepted `runner_name_prefix` (after normalisation), so that names stay valid DNS labels
/// (≤ 63 characters with up to 9 VMID digits, a dash and a 7-character time suffix).
pub const MAX_PREFIX_LEN: usize = 40;
/// Default `boot_timeout`: 10 minutes.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Default `max_lifetime`: 12 hours.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Longest `boot_timeout` / `max_lifetime` accepted: 365 days. A larger value is refused (it would overflow
/// the clock arithmetic of whoever adds it to an instant, and means nothing for a runner VM anyway).
pub const MAX_POOL_DURATION: Duration = Duration::from_secs(365 * 86_400);

const TOP_KEYS: &[&str] = &["max_total_runners", "pools"];
const POOL_KEYS: &[&str] = &[
    "name",
    "node",
    "nodes",
    "template",
    "labels",
    "vmid_start",
    "vmid_end",
    "runner_name_prefix",
    "runner_user",
    "user_data_template",
    "storage",
    "clone_storage",
    "pve_pool",
    "max_runners",
    "injection",
    "full_clone",
    "min_idle",
    "boot_timeout",
    "max_lifetime",
    "os",
    "runner_group_id",
];

/// How the runner credential reaches the VM (DESIGN §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Injection {
    /// Cloud-init snippet on the node's snippet storage (seed behaviour).
    #[default]
    Snippet,
    /// QEMU guest agent `file-write` after boot.
    Agent,
}

impl Injection {
    /// Parses `snippet` / `agent` (case-insensitive).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "snippet" => Some(Self::Snippet),
            "agent" => Some(Self::Agent),
            _ => None,
        }
    }

    /// The configuration spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snippet => "snippet",
            Self::Agent => "agent",
        }
    }
}

/// The guest operating system of a pool's template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    /// Linux (cloud-init).
    #[default]
    Linux,
    /// Windows (cloudbase-init / scheduled task).
    Windows,
}

impl Os {
    /// Parses `linux` / `windows` (case-insensitive).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "linux" => Some(Self::Linux),
            "windows" => Some(Self::Windows),
            _ => None,
        }
    }

    /// The configuration spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linux => "linux",
            Self::Windows => "windows",
        }
    }
}

/// Operator switches that change what a plan may do (seed `DISABLE_CLEANUP`, `PAUSE_ON_STOPPED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Flags {
    /// Delete nothing and remove no registrations.
    pub disable_cleanup: bool,
    /// Start nothing in a pool while it has a stopped VM of ours (per pool).
    pub pause_on_stopped: bool,
}

/// Per-pool defaults and global overrides, filled by the binary from the environment (seed names).
/// Build it with `Defaults { node: …, ..Defaults::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// `TEMPLATE_NAME` (seed default `ubuntu-2404-runner-template`).
    pub template_name: String,
    /// `PROXMOX_NODE` (required by the binary; empty here means "not set").
    pub node: String,
    /// `PROXMOX_STORAGE` (default `local`).
    pub storage: String,
    /// `RUNNER_ID_START` (default 200).
    pub vmid_start: u32,
    /// `RUNNER_ID_END` (default 299).
    pub vmid_end: u32,
    /// `RUNNER_NAME_PREFIX` (default `gh-runner-`; a `-` is appended when missing).
    pub runner_name_prefix: String,
    /// `RUNNER_USER` (default `ci`).
    pub runner_user: String,
    /// `RUNNER_LABELS`, already split (see [`split_labels`]); default `linux, x64`.
    pub labels: Vec<String>,
    /// `USER_DATA_TEMPLATE` (default none: the built-in renderer is used). Taken as given (not re-based).
    pub user_data_template: Option<PathBuf>,
    /// `RUNNER_INJECTION` (default snippet).
    pub injection: Injection,
    /// `RUNNER_GROUP_ID` (default 1).
    pub runner_group_id: u64,
    /// `MAX_TOTAL_RUNNERS`: like the seed, `Some(n)` with `n > 0` overrides the file's `max_total_runners`;
    /// `None` or `Some(0)` keeps the file's value.
    pub max_total_runners: Option<u32>,
    /// `DISABLE_CLEANUP` / `PAUSE_ON_STOPPED`.
    pub flags: Flags,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            template_name: "ubuntu-2404-runner-template".to_owned(),
            node: String::new(),
            storage: "local".to_owned(),
            vmid_start: 200,
            vmid_end: 299,
            runner_name_prefix: "gh-runner-".to_owned(),
            runner_user: "ci".to_owned(),
            labels: vec!["linux".to_owned(), "x64".to_owned()],
            user_data_template: None,
            injection: Injection::Snippet,
            runner_group_id: 1,
            max_total_runners: None,
            flags: Flags::default(),
        }
    }
}

/// Splits a comma-separated label string (as in `RUNNER_LABELS` or a pool's `labels` string): entries are
/// trimmed and empty entries dropped.
#[must_use]
pub fn split_labels(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One resolved, validated pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// Unique name.
    pub name: String,
    /// The pool's node (`node`, default `PROXMOX_NODE`).
    pub node: String,
    /// Nodes new VMs may go to: `nodes` when given, else `[node]`. Never empty, no duplicates.
    pub nodes: Vec<String>,
    /// Template VM name.
    pub template: String,
    /// Labels as written (trimmed, empty entries dropped, case-insensitive duplicates dropped).
    pub labels: Vec<String>,
    /// First VMID of the range (inclusive).
    pub vmid_start: u32,
    /// Last VMID of the range (inclusive).
    pub vmid_end: u32,
    /// Runner/VM name prefix, normalised to end with `-`.
    pub runner_name_prefix: String,
    /// User the runner runs as.
    pub runner_user: String,
    /// User-data template path (relative paths resolved against the pools file's folder).
    pub user_data_template: Option<PathBuf>,
    /// Storage for snippets (seed `storage`).
    pub storage: String,
    /// Target storage for full clones.
    pub clone_storage: Option<String>,
    /// Proxmox resource pool the clones join (`pool=` of the clone call): the token's role can then be
    /// granted on `/pool/<pve_pool>` instead of `/vms`.
    pub pve_pool: Option<String>,
    /// Pool cap (0 = unlimited).
    pub max_runners: u32,
    /// Credential injection.
    pub injection: Injection,
    /// Full instead of linked clone.
    pub full_clone: bool,
    /// Warm pool size.
    pub min_idle: u32,
    /// Creating/booting longer than this (since creation) is stale.
    pub boot_timeout: Duration,
    /// A non-busy runner older than this (since creation) is stale.
    pub max_lifetime: Duration,
    /// Guest OS.
    pub os: Os,
    /// GitHub runner group id for JIT configs.
    pub runner_group_id: u64,
    /// Lowercased labels without `self-hosted`, for matching.
    #[serde(skip)]
    match_labels: Vec<String>,
    /// The `ghr-pool-…` tag.
    #[serde(skip)]
    tag: String,
}

impl Pool {
    /// Whether `vmid` is in this pool's range.
    #[must_use]
    pub fn contains_vmid(&self, vmid: u32) -> bool {
        (self.vmid_start..=self.vmid_end).contains(&vmid)
    }

    /// The number of VMIDs in the range.
    #[must_use]
    pub fn range_size(&self) -> u64 {
        u64::from(self.vmid_end) - u64::from(self.vmid_start) + 1
    }

    /// The pool cap, `None` when unlimited.
    #[must_use]
    pub fn cap(&self) -> Option<u32> {
        (self.max_runners > 0).then_some(self.max_runners)
    }

    /// The pool's `ghr-pool-…` tag.
    #[must_use]
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Labels used for matching: lowercased, deduplicated, without `self-hosted` (which is implicit).
    /// Their count is what "fewest labels wins" compares.
    #[must_use]
    pub fn match_labels(&self) -> &[String] {
        &self.match_labels
    }

    /// The runner name for a VM of this pool (see [`marks::runner_name`]).
    #[must_use]
    pub fn runner_name(&self, vmid: u32, created_unix: u64) -> String {
        marks::runner_name(&self.runner_name_prefix, vmid, created_unix)
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pools: Vec<Pool>,
    max_total_runners: u32,
    flags: Flags,
    /// (start, end, pool index) sorted by start, for VMID → pool lookups.
    ranges: Vec<(u32, u32, usize)>,
    /// prefix → pool index.
    prefixes: HashMap<String, usize>,
    /// The dispatcher instance these pools belong to (see [`crate::marks::instance_tag`]).
    instance: Option<String>,
}

/// A loaded configuration and its warnings (unknown keys).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Non-fatal remarks, one line each.
    pub warnings: Vec<Warning>,
}

impl Config {
    /// Parses and validates a pools file's text. `base_dir` is the file's folder (relative
    /// `user_data_template` paths are resolved against it). Returns every problem at once.
    ///
    /// # Errors
    /// [`Error::Json`] for a syntax error, [`Error::Invalid`] listing every validation problem.
    pub fn from_json(text: &str, base_dir: &Path, defaults: &Defaults) -> Result<Loaded, Error> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Json {
            message: e.to_string(),
        })?;
        build(&value, base_dir, defaults)
    }

    /// Reads `path` with `std::fs` and calls [`Config::from_json`] with its folder.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, else as [`Config::from_json`].
    pub fn load_file(path: &Path, defaults: &Defaults) -> Result<Loaded, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_json(&text, base, defaults)
    }

    /// The seed behaviour without a pools file: one pool named `default` built from `defaults`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the defaults themselves are invalid (e.g. no node, empty labels).
    pub fn from_defaults(defaults: &Defaults) -> Result<Loaded, Error> {
        let value = serde_json::json!({ "pools": [ { "name": DEFAULT_POOL_NAME } ] });
        build(&value, Path::new("."), defaults)
    }

    /// The pools in file order.
    #[must_use]
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// A pool by name (exact).
    #[must_use]
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// A pool's index by name (exact).
    #[must_use]
    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }

    /// The total cap (0 = unlimited), after the `MAX_TOTAL_RUNNERS` override.
    #[must_use]
    pub fn max_total_runners(&self) -> u32 {
        self.max_total_runners
    }

    /// The operator switches.
    #[must_use]
    pub fn flags(&self) -> Flags {
        self.flags
    }

    /// Replaces the operator switches.
    pub fn set_flags(&mut self, flags: Flags) {
        self.flags = flags;
    }

    /// The dispatcher instance these pools belong to: its VMs carry `ghr-inst-<id>` and `instance=<id>` in
    /// their marker, and VMs marked by any other instance are never ours.
    #[must_use]
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// Sets the instance id (validated by the caller with [`crate::marks::is_valid_instance_id`]).
    pub fn set_instance(&mut self, id: Option<String>) {
        self.instance = id;
    }

    /// The index of the pool whose VMID range contains `vmid` (ranges never overlap).
    #[must_use]
    pub fn pool_for_vmid(&self, vmid: u32) -> Option<usize> {
        let i = self.ranges.partition_point(|&(start, _, _)| start <= vmid);
        let &(start, end, idx) = self.ranges.get(i.checked_sub(1)?)?;
        (start..=end).contains(&vmid).then_some(idx)
    }

    /// If `name` is a runner name of one of our pools (`<prefix><vmid>-<suffix>` with the VMID in that
    /// pool's range): `(pool index, vmid, created_unix)`.
    #[must_use]
    pub fn parse_runner_name(&self, name: &str) -> Option<(usize, u32, u64)> {
        let (head, _) = name.rsplit_once('-')?;
        let (prefix_stem, _) = head.rsplit_once('-')?;
        let prefix = &name[..=prefix_stem.len()];
        let &idx = self.prefixes.get(prefix)?;
        let pool = &self.pools[idx];
        let (vmid, created) = marks::parse_runner_name(&pool.runner_name_prefix, name)?;
        pool.contains_vmid(vmid).then_some((idx, vmid, created))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Parsing

fn short(v: &Value) -> String {
    let s = match v {
        Value::Null => "null".to_owned(),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    };
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

struct Sink {
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
}

impl Sink {
    fn into_error(mut self) -> Error {
        crate::error::sort_problems(&mut self.problems);
        Error::Invalid {
            problems: self.problems,
            warnings: self.warnings,
        }
    }

    fn problem(&mut self, location: &Location, key: &str, kind: ProblemKind) {
        self.problems.push(Problem {
            location: location.clone(),
            key: key.to_owned(),
            kind,
        });
    }
}

fn read_u64(v: &Value) -> Result<u64, ProblemKind> {
    let not_int = || ProblemKind::NotAnInteger { found: short(v) };
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(u)
            } else {
                match n.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= 9.0e15 =>
                    {
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        Ok(f as u64)
                    }
                    _ => Err(not_int()),
                }
            }
        }
        Value::String(s) => s.trim().parse::<u64>().map_err(|_| not_int()),
        _ => Err(not_int()),
    }
}

fn read_string(v: &Value) -> Result<String, ProblemKind> {
    match v {
        Value::String(s) => Ok(s.trim().to_owned()),
        _ => Err(ProblemKind::WrongType {
            expected: "a string",
            found: short(v),
        }),
    }
}

fn read_bool(v: &Value) -> Result<bool, ProblemKind> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(ProblemKind::BadChoice {
                value: short(v),
                allowed: "true, false",
            }),
        },
        _ => Err(ProblemKind::BadChoice {
            value: short(v),
            allowed: "true, false",
        }),
    }
}

/// A list of strings or a comma-separated string; entries trimmed, empty ones dropped.
fn read_list(v: &Value) -> Result<Vec<String>, ProblemKind> {
    match v {
        Value::String(s) => Ok(split_labels(s)),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.extend(split_labels(s)),
                    other => {
                        return Err(ProblemKind::WrongType {
                            expected: "a list of strings or a comma-separated string",
                            found: format!("an entry {}", short(other)),
                        });
                    }
                }
            }
            Ok(out)
        }
        _ => Err(ProblemKind::WrongType {
            expected: "a list of strings or a comma-separated string",
            found: short(v),
        }),
    }
}

fn read_duration(v: &Value) -> Result<Duration, ProblemKind> {
    let d = match v {
        Value::Number(_) => {
            read_u64(v)
                .map(Duration::from_secs)
                .map_err(|_| ProblemKind::BadDuration {
                    value: short(v),
                    reason: "not a whole number of seconds".to_owned(),
                })?
        }
        Value::String(s) => {
            crate::duration::parse_duration(s).map_err(|reason| ProblemKind::BadDuration {
                value: short(v),
                reason,
            })?
        }
        _ => {
            return Err(ProblemKind::BadDuration {
                value: short(v),
                reason: "expected seconds or a string".to_owned(),
            });
        }
    };
    if d.is_zero() {
        return Err(ProblemKind::BadDuration {
            value: short(v),
            reason: "must be greater than zero".to_owned(),
        });
    }
    if d > MAX_POOL_DURATION {
        return Err(ProblemKind::BadDuration {
            value: short(v),
            reason: format!(
                "must be at most {} days ({} s)",
                MAX_POOL_DURATION.as_secs() / 86_400,
                MAX_POOL_DURATION.as_secs()
            ),
        });
    }
    Ok(d)
}

/// Checks a prefix and normalises it to end with `-`.
fn normalise_prefix(raw: &str) -> Result<String, ProblemKind> {
    let bad = |reason| ProblemKind::InvalidPrefix {
        value: raw.to_owned(),
        reason,
    };
    if raw.is_empty() {
        return Err(bad("must not be empty"));
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad("only lowercase letters, digits and '-' are allowed"));
    }
    if raw.starts_with('-') {
        return Err(bad("must start with a lowercase letter or a digit"));
    }
    let mut p = raw.to_owned();
    if !p.ends_with('-') {
        p.push('-');
    }
    if p.len() > MAX_PREFIX_LEN {
        return Err(bad("longer than 40 characters"));
    }
    Ok(p)
}

fn check_name(name: &str) -> Result<(), ProblemKind> {
    let bad = |reason| ProblemKind::InvalidName {
        value: name.to_owned(),
        reason,
    };
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain whitespace or control characters"));
    }
    if name.chars().count() > 64 {
        return Err(bad("longer than 64 characters"));
    }
    Ok(())
}

/// A pool whose fields may have failed to parse (problems already recorded).
struct Draft {
    location: Location,
    name: Option<String>,
    node: Option<String>,
    nodes: Option<Vec<String>>,
    template: Option<String>,
    labels: Option<Vec<String>>,
    vmid_start: Option<u32>,
    vmid_end: Option<u32>,
    prefix: Option<String>,
    runner_user: Option<String>,
    user_data_template: Option<Option<PathBuf>>,
    storage: Option<String>,
    clone_storage: Option<Option<String>>,
    pve_pool: Option<Option<String>>,
    max_runners: Option<u32>,
    injection: Option<Injection>,
    full_clone: Option<bool>,
    min_idle: Option<u32>,
    boot_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    os: Option<Os>,
    runner_group_id: Option<u64>,
}

/// Reads one key with `read`, falling back to `default` when absent; records a problem and yields `None`
/// when invalid.
fn field<T>(
    obj: &Map<String, Value>,
    key: &str,
    loc: &Location,
    sink: &mut Sink,
    default: impl FnOnce() -> T,
    read: impl FnOnce(&Value) -> Result<T, ProblemKind>,
) -> Option<T> {
    match obj.get(key) {
        None => Some(default()),
        Some(v) => match read(v) {
            Ok(t) => Some(t),
            Err(kind) => {
                sink.problem(loc, key, kind);
                None
            }
        },
    }
}

fn u32_in(v: &Value, min: u32, max: u32) -> Result<u32, ProblemKind> {
    let n = read_u64(v)?;
    if n < u64::from(min) || n > u64::from(max) {
        return Err(ProblemKind::OutOfRange {
            value: n,
            min: u64::from(min),
            max: u64::from(max),
        });
    }
    u32::try_from(n).map_err(|_| ProblemKind::OutOfRange {
        value: n,
        min: u64::from(min),
        max: u64::from(max),
    })
}

fn non_empty_string(v: &Value, hint: &str) -> Result<String, ProblemKind> {
    let s = read_string(v)?;
    if s.is_empty() {
        return Err(ProblemKind::Empty {
            hint: hint.to_owned(),
        });
    }
    Ok(s)
}

#[allow(clippy::too_many_lines)]
fn parse_pool(
    index: usize,
    value: &Value,
    base_dir: &Path,
    d: &Defaults,
    sink: &mut Sink,
) -> Option<Draft> {
    let mut loc = Location::Pool { name: None, index };
    let Value::Object(obj) = value else {
        sink.problem(
            &loc,
            "pools",
            ProblemKind::NotAnObject {
                found: short(value),
            },
        );
        return None;
    };

    let name = match obj.get("name") {
        None => {
            sink.problem(
                &loc,
                "name",
                ProblemKind::Missing {
                    hint: String::new(),
                },
            );
            None
        }
        Some(v) => match read_string(v).and_then(|s| {
            if s.is_empty() {
                Err(ProblemKind::Empty {
                    hint: String::new(),
                })
            } else {
                check_name(&s).map(|()| s)
            }
        }) {
            Ok(s) => Some(s),
            Err(kind) => {
                sink.problem(&loc, "name", kind);
                None
            }
        },
    };
    if let Some(n) = &name {
        loc = Location::Pool {
            name: Some(n.clone()),
            index,
        };
    }

    for key in obj.keys() {
        if !POOL_KEYS.contains(&key.as_str()) {
            sink.warnings.push(Warning {
                location: loc.clone(),
                key: key.clone(),
                message: "unknown key ignored (typo?)".to_owned(),
            });
        }
    }

    let node_default = d.node.clone();
    let node = match obj.get("node") {
        None if node_default.is_empty() => {
            // Only a problem when `nodes` does not supply the node either.
            if obj.get("nodes").is_none() {
                sink.problem(
                    &loc,
                    "node",
                    ProblemKind::Missing {
                        hint: " (set `node` in the pool or PROXMOX_NODE)".to_owned(),
                    },
                );
                None
            } else {
                Some(String::new())
            }
        }
        None => Some(node_default),
        Some(v) => match non_empty_string(v, "") {
            Ok(s) => Some(s),
            Err(kind) => {
                sink.problem(&loc, "node", kind);
                None
            }
        },
    };
    let nodes = match obj.get("nodes") {
        None => Some(None),
        Some(v) => match read_list(v) {
            Ok(list) if list.is_empty() => {
                sink.problem(
                    &loc,
                    "nodes",
                    ProblemKind::Empty {
                        hint: " (omit `nodes` to use `node`)".to_owned(),
                    },
                );
                None
            }
            Ok(list) => {
                let mut uniq: Vec<String> = Vec::with_capacity(list.len());
                for n in list {
                    if !uniq.contains(&n) {
                        uniq.push(n);
                    }
                }
                Some(Some(uniq))
            }
            Err(kind) => {
                sink.problem(&loc, "nodes", kind);
                None
            }
        },
    };
    let (node, nodes) = match (node, nodes) {
        (Some(node), Some(Some(list))) => {
            let node = if node.is_empty() {
                list[0].clone()
            } else {
                node
            };
            (Some(node), Some(list))
        }
        (Some(node), Some(None)) => (Some(node.clone()), Some(vec![node])),
        _ => (None, None),
    };

    let template = field(
        obj,
        "template",
        &loc,
        sink,
        || d.template_name.clone(),
        |v| non_empty_string(v, ""),
    );
    let template = match template {
        Some(t) if t.is_empty() => {
            sink.problem(
                &loc,
                "template",
                ProblemKind::Missing {
                    hint: " (set `template` in the pool or TEMPLATE_NAME)".to_owned(),
                },
            );
            None
        }
        t => t,
    };

    let labels = match field(obj, "labels", &loc, sink, || d.labels.clone(), read_list) {
        Some(list) => {
            let mut seen: Vec<String> = Vec::new();
            let mut kept = Vec::with_capacity(list.len());
            for l in list {
                let low = l.to_lowercase();
                if !seen.contains(&low) {
                    seen.push(low);
                    kept.push(l);
                }
            }
            if kept.is_empty() {
                sink.problem(
                    &loc,
                    "labels",
                    ProblemKind::Empty {
                        hint: " (set `labels` in the pool or RUNNER_LABELS)".to_owned(),
                    },
                );
                None
            } else {
                Some(kept)
            }
        }
        None => None,
    };

    let vmid_start = field(
        obj,
        "vmid_start",
        &loc,
        sink,
        || d.vmid_start,
        |v| u32_in(v, MIN_VMID, MAX_VMID),
    );
    let vmid_end = field(
        obj,
        "vmid_end",
        &loc,
        sink,
        || d.vmid_end,
        |v| u32_in(v, MIN_VMID, MAX_VMID),
    );
    // Defaults come from the environment: check them too.
    for (key, got, val) in [
        ("vmid_start", obj.contains_key("vmid_start"), d.vmid_start),
        ("vmid_end", obj.contains_key("vmid_end"), d.vmid_end),
    ] {
        if !got && !(MIN_VMID..=MAX_VMID).contains(&val) {
            sink.problem(
                &loc,
                key,
                ProblemKind::OutOfRange {
                    value: u64::from(val),
                    min: u64::from(MIN_VMID),
                    max: u64::from(MAX_VMID),
                },
            );
        }
    }
    let (vmid_start, vmid_end) = match (vmid_start, vmid_end) {
        (Some(s), Some(e))
            if !(MIN_VMID..=MAX_VMID).contains(&s) || !(MIN_VMID..=MAX_VMID).contains(&e) =>
        {
            (None, None)
        }
        (Some(s), Some(e)) if s > e => {
            sink.problem(
                &loc,
                "vmid_start",
                ProblemKind::ReversedRange { start: s, end: e },
            );
            (None, None)
        }
        other => other,
    };

    let prefix = field(
        obj,
        "runner_name_prefix",
        &loc,
        sink,
        || d.runner_name_prefix.clone(),
        read_string,
    )
    .and_then(|p| match normalise_prefix(&p) {
        Ok(p) => Some(p),
        Err(kind) => {
            sink.problem(&loc, "runner_name_prefix", kind);
            None
        }
    });

    let runner_user = field(
        obj,
        "runner_user",
        &loc,
        sink,
        || d.runner_user.clone(),
        |v| non_empty_string(v, ""),
    );
    let user_data_template = field(
        obj,
        "user_data_template",
        &loc,
        sink,
        || d.user_data_template.clone(),
        |v| {
            let s = non_empty_string(v, "")?;
            let p = PathBuf::from(s);
            Ok(Some(if p.is_relative() { base_dir.join(p) } else { p }))
        },
    );
    let storage = field(
        obj,
        "storage",
        &loc,
        sink,
        || d.storage.clone(),
        |v| non_empty_string(v, ""),
    );
    let storage = match storage {
        Some(s) if s.is_empty() => {
            sink.problem(
                &loc,
                "storage",
                ProblemKind::Empty {
                    hint: " (set `storage` in the pool or PROXMOX_STORAGE)".to_owned(),
                },
            );
            None
        }
        s => s,
    };
    let clone_storage = field(
        obj,
        "clone_storage",
        &loc,
        sink,
        || None,
        |v| non_empty_string(v, "").map(Some),
    );
    let pve_pool = field(
        obj,
        "pve_pool",
        &loc,
        sink,
        || None,
        |v| non_empty_string(v, "").map(Some),
    );
    let max_runners = field(
        obj,
        "max_runners",
        &loc,
        sink,
        || 0,
        |v| u32_in(v, 0, u32::MAX),
    );
    let injection = field(
        obj,
        "injection",
        &loc,
        sink,
        || d.injection,
        |v| {
            let s = read_string(v)?;
            Injection::parse(&s).ok_or(ProblemKind::BadChoice {
                value: short(v),
                allowed: "snippet, agent",
            })
        },
    );
    let full_clone = field(obj, "full_clone", &loc, sink, || false, read_bool);
    let min_idle = field(
        obj,
        "min_idle",
        &loc,
        sink,
        || 0,
        |v| u32_in(v, 0, u32::MAX),
    );
    let boot_timeout = field(
        obj,
        "boot_timeout",
        &loc,
        sink,
        || DEFAULT_BOOT_TIMEOUT,
        read_duration,
    );
    let max_lifetime = field(
        obj,
        "max_lifetime",
        &loc,
        sink,
        || DEFAULT_MAX_LIFETIME,
        read_duration,
    );
    if let (Some(b), Some(l)) = (boot_timeout, max_lifetime)
        && b >= l
    {
        sink.problem(
            &loc,
            "boot_timeout",
            ProblemKind::BootTimeoutNotBelowLifetime {
                boot_secs: b.as_secs(),
                lifetime_secs: l.as_secs(),
            },
        );
    }
    let os = field(obj, "os", &loc, sink, Os::default, |v| {
        let s = read_string(v)?;
        Os::parse(&s).ok_or(ProblemKind::BadChoice {
            value: short(v),
            allowed: "linux, windows",
        })
    });
    let runner_group_id = field(
        obj,
        "runner_group_id",
        &loc,
        sink,
        || d.runner_group_id,
        |v| {
            let n = read_u64(v)?;
            if n == 0 {
                return Err(ProblemKind::OutOfRange {
                    value: 0,
                    min: 1,
                    max: u64::MAX,
                });
            }
            Ok(n)
        },
    );

    Some(Draft {
        location: loc,
        name,
        node,
        nodes,
        template,
        labels,
        vmid_start,
        vmid_end,
        prefix,
        runner_user,
        user_data_template,
        storage,
        clone_storage,
        pve_pool,
        max_runners,
        injection,
        full_clone,
        min_idle,
        boot_timeout,
        max_lifetime,
        os,
        runner_group_id,
    })
}

fn display_name(d: &Draft) -> String {
    match &d.location {
        Location::Pool { name: Some(n), .. } => n.clone(),
        Location::Pool { name: None, index } => format!("pools[{index}]"),
        Location::TopLevel => String::new(),
    }
}

#[allow(clippy::too_many_lines)]
fn build(value: &Value, base_dir: &Path, defaults: &Defaults) -> Result<Loaded, Error> {
    let mut sink = Sink {
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let top = Location::TopLevel;
    let mut file_total: u32 = 0;
    let pool_values: &[Value] = match value {
        Value::Object(obj) => {
            for key in obj.keys() {
                if !TOP_KEYS.contains(&key.as_str()) {
                    sink.warnings.push(Warning {
                        location: top.clone(),
                        key: key.clone(),
                        message: "unknown key ignored (typo?)".to_owned(),
                    });
                }
            }
            if let Some(v) = obj.get("max_total_runners") {
                match u32_in(v, 0, u32::MAX) {
                    Ok(n) => file_total = n,
                    Err(kind) => sink.problem(&top, "max_total_runners", kind),
                }
            }
            match obj.get("pools") {
                None => &[],
                Some(Value::Array(items)) => items,
                Some(other) => {
                    sink.problem(
                        &top,
                        "pools",
                        ProblemKind::WrongType {
                            expected: "a list of pools",
                            found: short(other),
                        },
                    );
                    return Err(sink.into_error());
                }
            }
        }
        Value::Array(items) => items,
        other => {
            sink.problem(
                &top,
                "pools",
                ProblemKind::NotAConfig {
                    found: short(other),
                },
            );
            return Err(sink.into_error());
        }
    };
    if pool_values.is_empty() {
        sink.problem(&top, "pools", ProblemKind::NoPools);
    }
    let max_total_runners = match defaults.max_total_runners {
        Some(n) if n > 0 => n,
        _ => file_total,
    };

    let drafts: Vec<Draft> = pool_values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| parse_pool(i, v, base_dir, defaults, &mut sink))
        .collect();

    // Cross-pool checks.
    for (i, a) in drafts.iter().enumerate() {
        let earlier = &drafts[..i];
        if let Some(name) = &a.name {
            let tag = marks::pool_tag(name);
            if let Some(b) = earlier
                .iter()
                .find(|b| b.name.as_ref().is_some_and(|n| marks::pool_tag(n) == tag))
            {
                sink.problem(
                    &a.location,
                    "name",
                    ProblemKind::DuplicateName {
                        value: name.clone(),
                        other: display_name(b),
                    },
                );
            }
        }
        if let (Some(s), Some(e)) = (a.vmid_start, a.vmid_end) {
            for b in earlier {
                if let (Some(bs), Some(be)) = (b.vmid_start, b.vmid_end)
                    && s <= be
                    && bs <= e
                {
                    sink.problem(
                        &a.location,
                        "vmid_start",
                        ProblemKind::OverlappingRange {
                            start: s,
                            end: e,
                            other: display_name(b),
                            other_start: bs,
                            other_end: be,
                        },
                    );
                }
            }
        }
        if let Some(p) = &a.prefix {
            for b in earlier {
                if let Some(bp) = &b.prefix
                    && (p.starts_with(bp.as_str()) || bp.starts_with(p.as_str()))
                {
                    sink.problem(
                        &a.location,
                        "runner_name_prefix",
                        ProblemKind::PrefixConflict {
                            value: p.clone(),
                            other: display_name(b),
                            other_value: bp.clone(),
                        },
                    );
                }
            }
        }
        if let (Some(t), Some(os)) = (&a.template, a.os)
            && let Some(b) = earlier
                .iter()
                .find(|b| b.template.as_ref() == Some(t) && b.os.is_some_and(|bo| bo != os))
        {
            sink.problem(
                &a.location,
                "os",
                ProblemKind::TemplateOsConflict {
                    template: t.clone(),
                    os: os.as_str(),
                    other: display_name(b),
                    other_os: b.os.map_or("?", Os::as_str),
                },
            );
        }
        if let Some(min_idle) = a.min_idle.filter(|&m| m > 0) {
            if let Some(cap) = a.max_runners.filter(|&c| c > 0 && min_idle > c) {
                sink.problem(
                    &a.location,
                    "min_idle",
                    ProblemKind::MinIdleAboveCap {
                        min_idle,
                        cap_key: "max_runners",
                        cap: u64::from(cap),
                    },
                );
            }
            if max_total_runners > 0 && min_idle > max_total_runners {
                sink.problem(
                    &a.location,
                    "min_idle",
                    ProblemKind::MinIdleAboveCap {
                        min_idle,
                        cap_key: "max_total_runners",
                        cap: u64::from(max_total_runners),
                    },
                );
            }
            if let (Some(s), Some(e)) = (a.vmid_start, a.vmid_end) {
                let size = u64::from(e) - u64::from(s) + 1;
                if u64::from(min_idle) > size {
                    sink.problem(
                        &a.location,
                        "min_idle",
                        ProblemKind::MinIdleAboveCap {
                            min_idle,
                            cap_key: "the VMID range size",
                            cap: size,
                        },
                    );
                }
            }
        }
    }
    let min_idle_sum: u64 = drafts
        .iter()
        .filter_map(|d| d.min_idle)
        .map(u64::from)
        .sum();
    if max_total_runners > 0
        && min_idle_sum > u64::from(max_total_runners)
        && drafts
            .iter()
            .all(|d| d.min_idle.unwrap_or(0) <= max_total_runners)
    {
        sink.problem(
            &top,
            "max_total_runners",
            ProblemKind::MinIdleSumAboveTotal {
                sum: min_idle_sum,
                cap: max_total_runners,
            },
        );
    }

    if !sink.problems.is_empty() {
        return Err(sink.into_error());
    }

    let mut pools = Vec::with_capacity(drafts.len());
    for d in drafts {
        // Every field parsed (no problems were recorded), so all are Some.
        let (
            Some(name),
            Some(node),
            Some(nodes),
            Some(template),
            Some(labels),
            Some(vmid_start),
            Some(vmid_end),
            Some(runner_name_prefix),
            Some(runner_user),
            Some(user_data_template),
            Some(storage),
            Some(clone_storage),
            Some(pve_pool),
            Some(max_runners),
            Some(injection),
            Some(full_clone),
            Some(min_idle),
            Some(boot_timeout),
            Some(max_lifetime),
            Some(os),
            Some(runner_group_id),
        ) = (
            d.name,
            d.node,
            d.nodes,
            d.template,
            d.labels,
            d.vmid_start,
            d.vmid_end,
            d.prefix,
            d.runner_user,
            d.user_data_template,
            d.storage,
            d.clone_storage,
            d.pve_pool,
            d.max_runners,
            d.injection,
            d.full_clone,
            d.min_idle,
            d.boot_timeout,
            d.max_lifetime,
            d.os,
            d.runner_group_id,
        )
        else {
            // Unreachable in practice: a field is None only after a problem was recorded.
            return Err(Error::Invalid {
                problems: vec![Problem {
                    location: d.location,
                    key: "pools".to_owned(),
                    kind: ProblemKind::NotAnObject {
                        found: "an incomplete pool".to_owned(),
                    },
                }],
                warnings: Vec::new(),
            });
        };
        let match_labels = labels
            .iter()
            .map(|l| l.to_lowercase())
            .filter(|l| l != "self-hosted")
            .collect();
        let tag = marks::pool_tag(&name);
        pools.push(Pool {
            tag,
            name,
            node,
            nodes,
            template,
            labels,
            vmid_start,
            vmid_end,
            runner_name_prefix,
            runner_user,
            user_data_template,
            storage,
            clone_storage,
            pve_pool,
            max_runners,
            injection,
            full_clone,
            min_idle,
            boot_timeout,
            max_lifetime,
            os,
            runner_group_id,
            match_labels,
        });
    }
    let mut ranges: Vec<(u32, u32, usize)> = pools
        .iter()
        .enumerate()
        .map(|(i, p)| (p.vmid_start, p.vmid_end, i))
        .collect();
    ranges.sort_unstable();
    let prefixes = pools
        .iter()
        .enumerate()
        .map(|(i, p)| (p.runner_name_prefix.clone(), i))
        .collect();
    Ok(Loaded {
        config: Config {
            pools,
            max_total_runners,
            flags: defaults.flags,
            ranges,
            prefixes,
            instance: None,
        },
        warnings: sink.warnings,
    })
}
