//! Typed ids and the request/response shapes of the endpoints this crate covers.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::Error;
use crate::lenient;

// ---------------------------------------------------------------------------------------------
// VmId
// ---------------------------------------------------------------------------------------------

/// A guest id (`vmid`). PVE accepts 100 ..= 999 999 999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmId(pub u32);

impl VmId {
    /// The smallest id PVE accepts.
    pub const MIN: u32 = 100;
    /// The largest id PVE accepts.
    pub const MAX: u32 = 999_999_999;

    /// Builds a checked id (100 ..= 999 999 999).
    pub fn new(id: u32) -> Result<Self, Error> {
        if (Self::MIN..=Self::MAX).contains(&id) {
            Ok(VmId(id))
        } else {
            Err(Error::InvalidValue {
                what: "vmid",
                value: id.to_string(),
                reason: format!("must be between {} and {}", Self::MIN, Self::MAX),
            })
        }
    }

    /// The numeric id.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for VmId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let n: u32 = s.trim().parse().map_err(|_| Error::InvalidValue {
            what: "vmid",
            value: s.to_owned(),
            reason: "not an unsigned integer".into(),
        })?;
        VmId::new(n)
    }
}

impl From<VmId> for u32 {
    fn from(v: VmId) -> u32 {
        v.0
    }
}

impl Serialize for VmId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for VmId {
    /// Lenient: a number or a numeric string (PVE sends both).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        lenient::value_as_u64(&v)
            .and_then(|n| u32::try_from(n).ok())
            .map(VmId)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid vmid {v}")))
    }
}

// ---------------------------------------------------------------------------------------------
// NodeName
// ---------------------------------------------------------------------------------------------

/// A cluster node name (a host name label, e.g. `pve1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct NodeName(String);

impl NodeName {
    /// Builds a checked node name: letters, digits and inner `-`, at most 63 characters.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 63
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if ok {
            Ok(NodeName(name))
        } else {
            Err(Error::InvalidValue {
                what: "node name",
                value: name,
                reason: "expected a host name label (letters, digits, inner '-')".into(),
            })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NodeName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        NodeName::new(s)
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for NodeName {
    /// Lenient: any non-empty string the server sends.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Err(serde::de::Error::custom("empty node name"));
        }
        Ok(NodeName(s))
    }
}

// ---------------------------------------------------------------------------------------------
// Upid
// ---------------------------------------------------------------------------------------------

/// A task id: `UPID:{node}:{pid}:{pstart}:{starttime}:{type}:{id}:{user}:` (hex numbers).
///
/// Task status must be polled on the node named inside it ([`Upid::node`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    raw: String,
    node: NodeName,
    pid: u32,
    pstart: u64,
    starttime: u64,
    /// Byte ranges of type, id and user inside `raw` (keeps the type small).
    task_type: (u16, u16),
    id: (u16, u16),
    user: (u16, u16),
}

impl Upid {
    /// The node that runs the task.
    pub fn node(&self) -> &NodeName {
        &self.node
    }
    /// Worker process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }
    /// Process start time (clock ticks since boot).
    pub fn pstart(&self) -> u64 {
        self.pstart
    }
    /// Task start, Unix seconds.
    pub fn starttime(&self) -> u64 {
        self.starttime
    }
    /// Task type, e.g. `qmclone`, `qmstart`, `qmdestroy`.
    pub fn task_type(&self) -> &str {
        self.span(self.task_type)
    }
    /// Task object id, usually the VMID (may be empty).
    pub fn id(&self) -> &str {
        self.span(self.id)
    }
    /// The user or token that started it.
    pub fn user(&self) -> &str {
        self.span(self.user)
    }
    fn span(&self, (start, end): (u16, u16)) -> &str {
        self.raw
            .get(usize::from(start)..usize::from(end))
            .unwrap_or("")
    }
    /// The UPID string exactly as the server gave it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl FromStr for Upid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidValue {
            what: "upid",
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.first() != Some(&"UPID") {
            return Err(bad("does not start with 'UPID:'"));
        }
        // UPID node pid pstart starttime type id user [""]
        let trailing_ok = parts.len() == 8 || (parts.len() == 9 && parts[8].is_empty());
        if !trailing_ok {
            return Err(bad("expected 8 ':'-separated fields"));
        }
        let hex32 = |f: &str, name: &str| {
            u32::from_str_radix(f, 16).map_err(|_| bad(&format!("{name} is not hexadecimal")))
        };
        let hex64 = |f: &str, name: &str| {
            u64::from_str_radix(f, 16).map_err(|_| bad(&format!("{name} is not hexadecimal")))
        };
        let node = NodeName::new(parts[1]).map_err(|_| bad("invalid node name"))?;
        let pid = hex32(parts[2], "pid")?;
        let pstart = hex64(parts[3], "pstart")?;
        let starttime = hex64(parts[4], "starttime")?;
        if parts[5].is_empty() {
            return Err(bad("empty task type"));
        }
        if s.len() > usize::from(u16::MAX) {
            return Err(bad("too long"));
        }
        // Byte offsets of fields 5, 6 and 7 (each field is followed by one ':').
        let mut spans = [(0u16, 0u16); 8];
        let mut offset = 0usize;
        for (i, part) in parts.iter().enumerate().take(8) {
            let start = u16::try_from(offset).map_err(|_| bad("too long"))?;
            let end = u16::try_from(offset + part.len()).map_err(|_| bad("too long"))?;
            spans[i] = (start, end);
            offset += part.len() + 1;
        }
        Ok(Upid {
            raw: s.to_owned(),
            node,
            pid,
            pstart,
            starttime,
            task_type: spans[5],
            id: spans[6],
            user: spans[7],
        })
    }
}

impl Serialize for Upid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for Upid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// TaskStatus
// ---------------------------------------------------------------------------------------------

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct TaskStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// Set once stopped: `OK`, `WARNINGS: n`, or an error text.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub exitstatus: Option<String>,
    /// The task's UPID.
    #[serde(default)]
    pub upid: Option<String>,
    /// Node running the task.
    #[serde(default)]
    pub node: Option<String>,
    /// Task type (`qmclone`, …).
    #[serde(default, rename = "type")]
    pub task_type: Option<String>,
    /// Task object id.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub id: Option<String>,
    /// User or token that started it.
    #[serde(default)]
    pub user: Option<String>,
    /// Start time, Unix seconds.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub starttime: Option<u64>,
}

impl TaskStatus {
    /// Still running.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }

    /// Finished (successfully or not).
    pub fn is_stopped(&self) -> bool {
        self.status == "stopped"
    }

    /// Finished successfully: stopped with exit status `OK` or `WARNINGS: n`.
    pub fn is_success(&self) -> bool {
        self.is_stopped()
            && match self.exitstatus.as_deref().map(str::trim) {
                Some("OK") => true,
                Some(_) => self.warnings().is_some(),
                None => false,
            }
    }

    /// The number of warnings of a task that ended `WARNINGS: n`.
    pub fn warnings(&self) -> Option<u32> {
        self.exitstatus
            .as_deref()?
            .trim()
            .strip_prefix("WARNINGS:")?
            .trim()
            .parse()
            .ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Task list
// ---------------------------------------------------------------------------------------------

/// One entry of `GET /nodes/{node}/tasks`.
///
/// With `source=active|all` the node's active tasks come first: a running one has status
/// `RUNNING` and no `endtime`; one that finished but is not archived yet has its exit status and
/// `endtime`. Archived tasks (`source=archive|all`) follow, newest first, always finished.
///
/// Decoded leniently: only `upid` is required; numbers may come as strings; `node`, `type`, `id`,
/// `user` and `starttime` default to the UPID's fields. For an API token's task, PVE splits the
/// owner into `user` (`dispatcher@pve`) and `tokenid` (`runners`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskListEntry {
    /// The UPID exactly as the server gave it.
    pub upid: String,
    /// The UPID, parsed (`None` when it does not parse).
    #[serde(skip)]
    pub parsed_upid: Option<Upid>,
    /// Node running the task.
    pub node: String,
    /// Task type (`qmclone`, `qmstart`, …).
    #[serde(rename = "type")]
    pub task_type: String,
    /// Task object id, usually the VMID (may be empty).
    pub id: String,
    /// The user that started it (for a token, the token's user).
    pub user: String,
    /// The token that started it, when it was an API token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenid: Option<String>,
    /// Start, Unix seconds.
    pub starttime: u64,
    /// End, Unix seconds (set once finished).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endtime: Option<u64>,
    /// `RUNNING`, or once finished the exit status: `OK`, `WARNINGS: n` or an error text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Worker process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Worker process start (clock ticks since boot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pstart: Option<u64>,
}

impl TaskListEntry {
    /// Finished: an `endtime` is set, or a status other than `RUNNING`.
    pub fn is_finished(&self) -> bool {
        self.endtime.is_some()
            || self
                .status
                .as_deref()
                .is_some_and(|s| !s.trim().eq_ignore_ascii_case("RUNNING"))
    }

    /// Still running (not [`TaskListEntry::is_finished`]).
    pub fn is_running(&self) -> bool {
        !self.is_finished()
    }

    /// The exit status of a finished task (`None` while running or when the server gave none).
    pub fn exitstatus(&self) -> Option<&str> {
        self.status
            .as_deref()
            .filter(|s| !s.trim().eq_ignore_ascii_case("RUNNING"))
    }

    /// The [`TaskStatus`] `GET …/tasks/{upid}/status` would give: `stopped` with the exit status
    /// once finished, `running` otherwise.
    pub fn task_status(&self) -> TaskStatus {
        let finished = self.is_finished();
        TaskStatus {
            status: if finished { "stopped" } else { "running" }.into(),
            exitstatus: if finished {
                self.exitstatus().map(str::to_owned)
            } else {
                None
            },
            upid: Some(self.upid.clone()),
            node: Some(self.node.clone()).filter(|n| !n.is_empty()),
            task_type: Some(self.task_type.clone()).filter(|t| !t.is_empty()),
            id: Some(self.id.clone()),
            user: Some(self.user.clone()).filter(|u| !u.is_empty()),
            starttime: Some(self.starttime),
        }
    }
}

impl<'de> Deserialize<'de> for TaskListEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, Value>::deserialize(d)?;
        let s = |k: &str| raw.get(k).and_then(lenient::value_as_string);
        let n = |k: &str| raw.get(k).and_then(lenient::value_as_u64);
        let upid = s("upid")
            .filter(|u| !u.is_empty())
            .ok_or_else(|| serde::de::Error::missing_field("upid"))?;
        let parsed: Option<Upid> = upid.parse().ok();
        let from_upid = |f: fn(&Upid) -> &str| parsed.as_ref().map(|u| f(u).to_owned());
        Ok(TaskListEntry {
            node: s("node")
                .or_else(|| from_upid(|u| u.node().as_str()))
                .unwrap_or_default(),
            task_type: s("type")
                .or_else(|| from_upid(Upid::task_type))
                .unwrap_or_default(),
            id: s("id").or_else(|| from_upid(Upid::id)).unwrap_or_default(),
            user: s("user")
                .or_else(|| from_upid(Upid::user))
                .unwrap_or_default(),
            tokenid: s("tokenid").filter(|t| !t.is_empty()),
            starttime: n("starttime")
                .or_else(|| parsed.as_ref().map(Upid::starttime))
                .unwrap_or(0),
            endtime: n("endtime"),
            status: s("status").filter(|st| !st.trim().is_empty()),
            pid: n("pid")
                .and_then(|p| u32::try_from(p).ok())
                .or_else(|| parsed.as_ref().map(Upid::pid)),
            pstart: n("pstart").or_else(|| parsed.as_ref().map(Upid::pstart)),
            upid,
            parsed_upid: parsed,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Tags
// ---------------------------------------------------------------------------------------------

/// A guest's tag list, normalised as PVE does: lowercase, deduplicated, sorted, joined with `;`.
///
/// Each tag must match `^[a-z0-9_][a-z0-9_\-+.]*$` (after lowercasing). Parsing accepts `;`, `,`
/// and whitespace as separators.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Tags(Vec<String>);

impl Tags {
    /// An empty list.
    pub fn new() -> Self {
        Tags(Vec::new())
    }

    /// Builds a checked list from tags.
    pub fn from_tags<I, S>(tags: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut t = Tags::new();
        for tag in tags {
            t.insert(tag.as_ref())?;
        }
        Ok(t)
    }

    /// Checks one tag (after lowercasing): `^[a-z0-9_][a-z0-9_\-+.]*$`.
    pub fn validate(tag: &str) -> Result<String, Error> {
        let lower = tag.trim().to_lowercase();
        let mut chars = lower.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        let rest_ok = chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '+' | '.')
        });
        if first_ok && rest_ok {
            Ok(lower)
        } else {
            Err(Error::InvalidValue {
                what: "tag",
                value: tag.to_owned(),
                reason: "must match ^[a-z0-9_][a-z0-9_\\-+.]*$".into(),
            })
        }
    }

    /// Adds a tag (checked, lowercased); returns whether it was new.
    pub fn insert(&mut self, tag: &str) -> Result<bool, Error> {
        let tag = Self::validate(tag)?;
        match self.0.binary_search(&tag) {
            Ok(_) => Ok(false),
            Err(pos) => {
                self.0.insert(pos, tag);
                Ok(true)
            }
        }
    }

    /// Removes a tag (case-insensitive); returns whether it was present.
    pub fn remove(&mut self, tag: &str) -> bool {
        let tag = tag.trim().to_lowercase();
        match self.0.binary_search(&tag) {
            Ok(pos) => {
                self.0.remove(pos);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the tag is present (case-insensitive).
    pub fn contains(&self, tag: &str) -> bool {
        self.0.binary_search(&tag.trim().to_lowercase()).is_ok()
    }

    /// The tags, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No tags.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Lenient parse for server data: splits and normalises, keeps tags it would reject.
    fn parse_lenient(s: &str) -> Self {
        let mut v: Vec<String> = split_tags(s).map(str::to_lowercase).collect();
        v.sort();
        v.dedup();
        Tags(v)
    }
}

fn split_tags(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
}

impl fmt::Display for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(";"))
    }
}

impl FromStr for Tags {
    type Err = Error;
    /// Strict parse: every tag is checked.
    fn from_str(s: &str) -> Result<Self, Error> {
        Tags::from_tags(split_tags(s))
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Tags {
    /// Lenient: a `;`/`,`/space separated string, a list of strings, or `null`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v {
            Value::Null => Ok(Tags::new()),
            Value::String(s) => Ok(Tags::parse_lenient(&s)),
            Value::Array(items) => {
                let joined: Vec<String> =
                    items.iter().filter_map(lenient::value_as_string).collect();
                Ok(Tags::parse_lenient(&joined.join(";")))
            }
            other => Err(serde::de::Error::custom(format!("invalid tags {other}"))),
        }
    }
}

impl<'a> IntoIterator for &'a Tags {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

// ---------------------------------------------------------------------------------------------
// Response shapes
// ---------------------------------------------------------------------------------------------

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Version {
    /// Full pve-manager version, e.g. `9.1.1`.
    pub version: String,
    /// Point release, e.g. `9.1`.
    #[serde(default)]
    pub release: String,
    /// Short git revision.
    #[serde(default)]
    pub repoid: String,
}

/// One QEMU VM of `GET /cluster/resources?type=vm`.
///
/// `status`, `name`, `template` and `uptime` lag by up to ~10 s (pvestatd broadcast): a VM just
/// cloned may have no name and status `unknown`. `lock` and `tags` are current.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ClusterVm {
    /// Resource type; always `qemu` in [`crate::ProxmoxApi::cluster_vms`] results.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The VMID.
    pub vmid: VmId,
    /// Node the VM lives on.
    pub node: NodeName,
    /// Name (may be missing for a VM just created).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub name: Option<String>,
    /// `running`, `stopped`, `unknown`… (lags).
    #[serde(default)]
    pub status: Option<String>,
    /// Whether it is a template.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub template: bool,
    /// Tags (current).
    #[serde(default)]
    pub tags: Tags,
    /// Config lock, e.g. `clone` (current).
    #[serde(default)]
    pub lock: Option<String>,
    /// Uptime in seconds.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub uptime: Option<u64>,
    /// Used memory, bytes.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub mem: Option<u64>,
    /// Configured memory, bytes.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub maxmem: Option<u64>,
    /// Resource pool.
    #[serde(default)]
    pub pool: Option<String>,
    /// HA state, if HA-managed.
    #[serde(default)]
    pub hastate: Option<String>,
}

/// One entry of `GET /nodes`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct NodeInfo {
    /// Node name.
    pub node: NodeName,
    /// `online`, `offline` or `unknown`.
    pub status: String,
    /// Used memory, bytes.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub mem: Option<u64>,
    /// Total memory, bytes.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub maxmem: Option<u64>,
    /// CPU utilisation (0..1).
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub cpu: Option<f64>,
    /// Number of CPUs.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub maxcpu: Option<u64>,
    /// Uptime, seconds.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub uptime: Option<u64>,
}

impl NodeInfo {
    /// Whether the node is online.
    pub fn is_online(&self) -> bool {
        self.status == "online"
    }
}

/// One entry of `GET /nodes/{node}/qemu` (read on the node itself: not lagging like the cluster list).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct NodeVm {
    /// The VMID.
    pub vmid: VmId,
    /// `running` or `stopped`.
    pub status: String,
    /// Name.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub name: Option<String>,
    /// Whether it is a template.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub template: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
    /// Config lock.
    #[serde(default)]
    pub lock: Option<String>,
    /// QMP status (`running`, `paused`, …).
    #[serde(default)]
    pub qmpstatus: Option<String>,
    /// Uptime, seconds.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub uptime: Option<u64>,
    /// Used memory, bytes.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub mem: Option<u64>,
    /// Configured memory, bytes.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub maxmem: Option<u64>,
}

/// `GET /nodes/{node}/qemu/{vmid}/status/current`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct VmStatus {
    /// `running` or `stopped` (authoritative, unlike the cluster list).
    pub status: String,
    /// QMP status (`running`, `paused`, `shutdown`…).
    #[serde(default)]
    pub qmpstatus: Option<String>,
    /// Config lock.
    #[serde(default)]
    pub lock: Option<String>,
    /// Uptime, seconds.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub uptime: Option<u64>,
    /// Whether the guest agent is enabled in the config.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub agent: bool,
    /// Name.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub name: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
    /// Whether it is a template.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub template: bool,
    /// The VMID.
    #[serde(default)]
    pub vmid: Option<VmId>,
    /// QEMU process id when running.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub pid: Option<u64>,
}

impl VmStatus {
    /// Whether the VM is running.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// `GET /nodes/{node}/qemu/{vmid}/config`: the common fields, typed, plus everything raw.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct VmConfig {
    /// `name`.
    pub name: Option<String>,
    /// `description` (free text; the dispatcher keeps its ownership marker here).
    pub description: Option<String>,
    /// `tags`.
    pub tags: Tags,
    /// `cicustom`, e.g. `user=local:snippets/runner-1.yaml`.
    pub cicustom: Option<String>,
    /// `template`.
    pub template: bool,
    /// `lock`.
    pub lock: Option<String>,
    /// `agent` property string, e.g. `1` or `enabled=1,fstrim_cloned_disks=1`.
    pub agent: Option<String>,
    /// `smbios1` property string.
    pub smbios1: Option<String>,
    /// `digest` of the config (for optimistic concurrency).
    pub digest: Option<String>,
    /// Every key as received.
    pub raw: BTreeMap<String, Value>,
}

impl VmConfig {
    /// Whether the guest agent is enabled (`agent: 1` or `enabled=1,…`).
    pub fn agent_enabled(&self) -> bool {
        let Some(agent) = self.agent.as_deref() else {
            return false;
        };
        for part in agent.split(',') {
            let (k, v) = match part.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => ("enabled", part.trim()),
            };
            if k == "enabled" {
                return lenient::parse_bool_str(v).unwrap_or(false);
            }
        }
        false
    }
}

impl<'de> Deserialize<'de> for VmConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, Value>::deserialize(d)?;
        let s = |k: &str| raw.get(k).and_then(lenient::value_as_string);
        let tags = match raw.get("tags") {
            Some(v) => Tags::deserialize(v.clone()).map_err(serde::de::Error::custom)?,
            None => Tags::new(),
        };
        Ok(VmConfig {
            name: s("name"),
            description: s("description"),
            tags,
            cicustom: s("cicustom"),
            template: raw
                .get("template")
                .and_then(lenient::value_as_bool)
                .unwrap_or(false),
            lock: s("lock"),
            agent: s("agent"),
            smbios1: s("smbios1"),
            digest: s("digest"),
            raw,
        })
    }
}

/// `GET /storage/{storage}`: a storage definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorageConfig {
    /// Storage id.
    pub storage: String,
    /// Storage type (`dir`, `nfs`, `lvmthin`, …).
    pub storage_type: String,
    /// Allowed content types (`images`, `snippets`, `iso`, …).
    pub content: Vec<String>,
    /// Filesystem path (file-based storages).
    pub path: Option<String>,
    /// Whether the storage is shared between nodes.
    pub shared: bool,
    /// Whether the storage is disabled.
    pub disable: bool,
    /// Node restriction, if any (comma list).
    pub nodes: Option<String>,
}

impl StorageConfig {
    /// Whether the storage allows a content type, e.g. `snippets`.
    pub fn has_content(&self, content: &str) -> bool {
        self.content.iter().any(|c| c == content)
    }
}

impl<'de> Deserialize<'de> for StorageConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, Value>::deserialize(d)?;
        let s = |k: &str| raw.get(k).and_then(lenient::value_as_string);
        let b = |k: &str| raw.get(k).and_then(lenient::value_as_bool).unwrap_or(false);
        let content = match raw.get("content") {
            Some(Value::Array(items)) => {
                items.iter().filter_map(lenient::value_as_string).collect()
            }
            Some(v) => lenient::value_as_string(v)
                .unwrap_or_default()
                .split(',')
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect(),
            None => Vec::new(),
        };
        Ok(StorageConfig {
            storage: s("storage").ok_or_else(|| serde::de::Error::missing_field("storage"))?,
            storage_type: s("type").ok_or_else(|| serde::de::Error::missing_field("type"))?,
            content,
            path: s("path"),
            shared: b("shared"),
            disable: b("disable"),
            nodes: s("nodes"),
        })
    }
}

/// `GET /access/permissions`: path → privilege → propagate flag.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Permissions(pub BTreeMap<String, BTreeMap<String, bool>>);

impl Permissions {
    /// Whether `privilege` is effective on `path`: granted on the path itself, or on an ancestor
    /// with propagation (`/vms/100` inherits from `/vms` and `/` when they propagate).
    pub fn allows(&self, path: &str, privilege: &str) -> bool {
        let path = normalise_acl_path(path);
        if self.0.get(&path).is_some_and(|p| p.contains_key(privilege)) {
            return true;
        }
        let mut cur = path;
        while cur != "/" {
            cur = match cur.rfind('/') {
                Some(0) | None => "/".to_owned(),
                Some(i) => cur[..i].to_owned(),
            };
            if self
                .0
                .get(&cur)
                .and_then(|p| p.get(privilege))
                .is_some_and(|propagate| *propagate)
            {
                return true;
            }
        }
        false
    }

    /// Of `privileges`, those not effective on `path`.
    pub fn missing<'a>(&self, path: &str, privileges: &[&'a str]) -> Vec<&'a str> {
        privileges
            .iter()
            .copied()
            .filter(|p| !self.allows(path, p))
            .collect()
    }
}

fn normalise_acl_path(path: &str) -> String {
    let trimmed = path.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

impl<'de> Deserialize<'de> for Permissions {
    /// Lenient: propagate flags as `0`/`1`/booleans/strings.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, BTreeMap<String, Value>>::deserialize(d)?;
        Ok(Permissions(
            raw.into_iter()
                .map(|(path, privs)| {
                    let privs = privs
                        .into_iter()
                        .map(|(k, v)| {
                            let b = lenient::value_as_bool(&v).unwrap_or(false);
                            (k, b)
                        })
                        .collect();
                    (path, privs)
                })
                .collect(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Request shapes
// ---------------------------------------------------------------------------------------------

/// Parameters of `POST /nodes/{node}/qemu/{vmid}/clone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneRequest {
    /// The new VM's id (required).
    pub newid: VmId,
    /// The new VM's name (a DNS name).
    pub name: Option<String>,
    /// Full clone (`true`) or linked clone (`false`; only from templates). `None` = server default.
    pub full: Option<bool>,
    /// Target node (the template's storage must be shared for another node).
    pub target: Option<NodeName>,
    /// Target storage for a full clone.
    pub storage: Option<String>,
    /// Resource pool to add the VM to.
    pub pool: Option<String>,
    /// Description of the new VM (the dispatcher's ownership marker goes here).
    pub description: Option<String>,
}

impl CloneRequest {
    /// A clone request with only the new id set.
    pub fn new(newid: VmId) -> Self {
        CloneRequest {
            newid,
            name: None,
            full: None,
            target: None,
            storage: None,
            pool: None,
            description: None,
        }
    }

    pub(crate) fn form(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("newid", self.newid.to_string())];
        push_opt(&mut f, "name", self.name.as_deref());
        if let Some(full) = self.full {
            f.push(("full", form_bool(full)));
        }
        push_opt(&mut f, "target", self.target.as_ref().map(NodeName::as_str));
        push_opt(&mut f, "storage", self.storage.as_deref());
        push_opt(&mut f, "pool", self.pool.as_deref());
        push_opt(&mut f, "description", self.description.as_deref());
        f
    }
}

/// Parameters of `PUT`/`POST /nodes/{node}/qemu/{vmid}/config` this crate sets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigUpdate {
    /// `cicustom`, e.g. `user=local:snippets/runner-1.yaml`.
    pub cicustom: Option<String>,
    /// `tags` (replaces the whole list).
    pub tags: Option<Tags>,
    /// `description`.
    pub description: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `smbios1` property string.
    pub smbios1: Option<String>,
    /// `agent` property string, e.g. `1` or `enabled=1`.
    pub agent: Option<String>,
    /// Settings to remove, e.g. `["cicustom"]`.
    pub delete: Vec<String>,
    /// Only apply if the config's digest still matches.
    pub digest: Option<String>,
}

impl ConfigUpdate {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.cicustom.is_none()
            && self.tags.is_none()
            && self.description.is_none()
            && self.name.is_none()
            && self.smbios1.is_none()
            && self.agent.is_none()
            && self.delete.is_empty()
    }

    pub(crate) fn form(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::new();
        push_opt(&mut f, "cicustom", self.cicustom.as_deref());
        if let Some(tags) = &self.tags {
            f.push(("tags", tags.to_string()));
        }
        push_opt(&mut f, "description", self.description.as_deref());
        push_opt(&mut f, "name", self.name.as_deref());
        push_opt(&mut f, "smbios1", self.smbios1.as_deref());
        push_opt(&mut f, "agent", self.agent.as_deref());
        if !self.delete.is_empty() {
            f.push(("delete", self.delete.join(",")));
        }
        push_opt(&mut f, "digest", self.digest.as_deref());
        f
    }
}

fn push_opt(f: &mut Vec<(&'static str, String)>, key: &'static str, v: Option<&str>) {
    if let Some(v) = v {
        f.push((key, v.to_owned()));
    }
}

/// `source` of `GET /nodes/{node}/tasks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskSource {
    /// Archived (finished) tasks only — the server's default.
    Archive,
    /// The node's active list only: running tasks and finished ones not archived yet.
    Active,
    /// Active first, then the archive.
    All,
}

impl TaskSource {
    /// The query value: `archive`, `active` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskSource::Archive => "archive",
            TaskSource::Active => "active",
            TaskSource::All => "all",
        }
    }
}

/// A task state class of the `statusfilter` of `GET /nodes/{node}/tasks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskStatusType {
    /// Exit status `OK`.
    Ok,
    /// Exit status `WARNINGS: n`.
    Warning,
    /// Any other exit status.
    Error,
    /// No status (running) or `unexpected status`.
    Unknown,
}

impl TaskStatusType {
    /// The value PVE uses: `ok`, `warning`, `error`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatusType::Ok => "ok",
            TaskStatusType::Warning => "warning",
            TaskStatusType::Error => "error",
            TaskStatusType::Unknown => "unknown",
        }
    }
}

/// Query of `GET /nodes/{node}/tasks`; `None`/empty fields are not sent (server defaults:
/// `source=archive`, `limit=50`, `start=0`).
///
/// `since`/`until` filter on the task's start time; `limit` bounds the answer (0 = nothing);
/// `start` skips that many matching tasks; `errors` hides tasks that ended `OK`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskListQuery {
    /// Which list: archive (server default), active, or all.
    pub source: Option<TaskSource>,
    /// Only tasks started at or after this Unix time.
    pub since: Option<u64>,
    /// Only tasks started at or before this Unix time.
    pub until: Option<u64>,
    /// At most this many tasks (server default 50).
    pub limit: Option<u32>,
    /// Skip this many matching tasks.
    pub start: Option<u32>,
    /// Only tasks whose id is this VMID.
    pub vmid: Option<VmId>,
    /// Only tasks of this type, e.g. `qmclone`.
    pub typefilter: Option<String>,
    /// Only tasks whose user contains this text (case-insensitive).
    pub userfilter: Option<String>,
    /// Only tasks that did not end `OK` (`errors=1`).
    pub errors: Option<bool>,
    /// Only tasks of these state classes (sent comma-separated; empty = no filter).
    pub statusfilter: Vec<TaskStatusType>,
}

impl TaskListQuery {
    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(source) = self.source {
            q.push(("source", source.as_str().to_owned()));
        }
        let mut num = |key: &'static str, v: Option<u64>| {
            if let Some(v) = v {
                q.push((key, v.to_string()));
            }
        };
        num("since", self.since);
        num("until", self.until);
        num("limit", self.limit.map(u64::from));
        num("start", self.start.map(u64::from));
        num("vmid", self.vmid.map(|v| u64::from(v.get())));
        push_opt(&mut q, "typefilter", self.typefilter.as_deref());
        push_opt(&mut q, "userfilter", self.userfilter.as_deref());
        if let Some(errors) = self.errors {
            q.push(("errors", form_bool(errors)));
        }
        if !self.statusfilter.is_empty() {
            let list: Vec<&str> = self.statusfilter.iter().map(|t| t.as_str()).collect();
            q.push(("statusfilter", list.join(",")));
        }
        q
    }
}

/// PVE form/query booleans are `1`/`0`.
pub(crate) fn form_bool(b: bool) -> String {
    if b { "1".into() } else { "0".into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vmid_parse_display_serde() {
        assert_eq!("105".parse::<VmId>().unwrap(), VmId(105));
        assert_eq!(VmId(105).to_string(), "105");
        assert!("99".parse::<VmId>().is_err());
        assert!(
            "abc"
                .parse::<VmId>()
                .unwrap_err()
                .to_string()
                .contains("abc")
        );
        assert_eq!(
            serde_json::from_value::<VmId>(json!(101)).unwrap(),
            VmId(101)
        );
        assert_eq!(
            serde_json::from_value::<VmId>(json!("101")).unwrap(),
            VmId(101)
        );
        assert!(serde_json::from_value::<VmId>(json!("x")).is_err());
        assert_eq!(serde_json::to_value(VmId(7)).unwrap(), json!(7));
    }

    #[test]
    fn node_name_checks() {
        assert!(NodeName::new("pve-1").is_ok());
        assert!(NodeName::new("-pve").is_err());
        assert!(NodeName::new("pve/1").is_err());
        assert!(NodeName::new("").is_err());
    }

    #[test]
    fn upid_round_trip() {
        let s = "UPID:pve2:0001E240:00ABCDEF:65F0A1B2:qmclone:9000:root@pam!ci:";
        let u: Upid = s.parse().unwrap();
        assert_eq!(u.node().as_str(), "pve2");
        assert_eq!(u.pid(), 0x1E240);
        assert_eq!(u.pstart(), 0xABCDEF);
        assert_eq!(u.starttime(), 0x65F0A1B2);
        assert_eq!(u.task_type(), "qmclone");
        assert_eq!(u.id(), "9000");
        assert_eq!(u.user(), "root@pam!ci");
        assert_eq!(u.to_string(), s);
        let back: Upid = serde_json::from_value(serde_json::to_value(&u).unwrap()).unwrap();
        assert_eq!(back, u);
        // Without trailing colon, empty id.
        let u2: Upid = "UPID:n1:00000001:00000002:00000003:vzdump::root@pam"
            .parse()
            .unwrap();
        assert_eq!(u2.id(), "");
        for bad in [
            "",
            "UPID",
            "PID:pve:1:2:3:qmstart:100:root@pam:",
            "UPID:pve:zz:2:3:qmstart:100:root@pam:",
            "UPID:pve:1:2:3:qmstart:100:root@pam:extra:",
            "UPID:pve:1:2:3::100:root@pam:",
        ] {
            assert!(bad.parse::<Upid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn task_status_success_rule() {
        let t = |status: &str, exit: Option<&str>| TaskStatus {
            status: status.into(),
            exitstatus: exit.map(Into::into),
            upid: None,
            node: None,
            task_type: None,
            id: None,
            user: None,
            starttime: None,
        };
        assert!(t("stopped", Some("OK")).is_success());
        assert!(t("stopped", Some("WARNINGS: 2")).is_success());
        assert_eq!(t("stopped", Some("WARNINGS: 2")).warnings(), Some(2));
        assert!(!t("stopped", Some("WARNINGS: x")).is_success());
        assert!(
            !t(
                "stopped",
                Some("unable to create VM 105: config file already exists")
            )
            .is_success()
        );
        assert!(!t("stopped", None).is_success());
        assert!(!t("running", None).is_success());
        assert!(t("running", None).is_running());
        let decoded: TaskStatus = serde_json::from_value(json!({
            "status": "stopped", "exitstatus": "OK", "type": "qmclone", "id": 100,
            "upid": "UPID:pve:1:2:3:qmclone:100:root@pam:", "node": "pve", "pid": 1, "pstart": 2,
            "starttime": 3, "user": "root@pam"
        }))
        .unwrap();
        assert!(decoded.is_success());
        assert_eq!(decoded.id.as_deref(), Some("100"));
    }

    #[test]
    fn task_list_entries_decode_leniently() {
        // A running task of the active list, a finished one not archived yet (numbers as
        // strings, token split like PVE does), an archived failure, and an odd UPID.
        let list: Vec<TaskListEntry> = serde_json::from_value(json!([
            {"upid": "UPID:pve1:0000A1B2:0001C3D4:6650F00D:qmclone:9000:dispatcher@pve!runners:",
             "node": "pve1", "pid": 41394, "pstart": 115668, "starttime": 1716580365,
             "type": "qmclone", "id": "9000", "user": "dispatcher@pve", "tokenid": "runners",
             "status": "RUNNING"},
            {"upid": "UPID:pve1:0000A1B3:0001C3D5:6650F00E:qmstart:205:dispatcher@pve!runners:",
             "node": "pve1", "pid": "41395", "pstart": "115669", "starttime": "1716580366",
             "endtime": "1716580370", "type": "qmstart", "id": 205, "user": "dispatcher@pve",
             "tokenid": "runners", "status": "WARNINGS: 1"},
            {"upid": "UPID:pve1:0000A1B4:0001C3D6:6650F00F:qmdestroy:206:root@pam:",
             "endtime": 1716580380, "status": "VM 206 is running - destroy failed"},
            {"upid": "not-a-upid", "starttime": 5, "endtime": 6, "status": "OK"}
        ]))
        .unwrap();
        let [running, warned, failed, odd] = &list[..] else {
            panic!("{list:?}")
        };
        assert!(running.is_running() && !running.is_finished());
        assert_eq!(running.exitstatus(), None);
        assert_eq!(running.tokenid.as_deref(), Some("runners"));
        assert_eq!(running.parsed_upid.as_ref().unwrap().task_type(), "qmclone");
        let st = running.task_status();
        assert!(st.is_running() && st.exitstatus.is_none());

        assert!(warned.is_finished());
        assert_eq!((warned.pid, warned.pstart), (Some(41395), Some(115669)));
        assert_eq!(
            (warned.starttime, warned.endtime),
            (1716580366, Some(1716580370))
        );
        assert_eq!(warned.id, "205");
        let st = warned.task_status();
        assert!(st.is_stopped() && st.is_success());
        assert_eq!(st.warnings(), Some(1));

        // Missing fields come from the UPID.
        assert_eq!(failed.node, "pve1");
        assert_eq!(failed.task_type, "qmdestroy");
        assert_eq!(failed.id, "206");
        assert_eq!(failed.user, "root@pam");
        assert_eq!(failed.starttime, 0x6650F00F);
        assert_eq!(failed.pid, Some(0xA1B4));
        let st = failed.task_status();
        assert!(st.is_stopped() && !st.is_success());
        assert_eq!(
            st.exitstatus.as_deref(),
            Some("VM 206 is running - destroy failed")
        );

        assert!(odd.parsed_upid.is_none());
        assert_eq!(odd.upid, "not-a-upid");
        assert!(odd.is_finished());
        assert!(serde_json::from_value::<TaskListEntry>(json!({"status": "OK"})).is_err());
        // Finished by endtime alone: no exit status to report.
        let e: TaskListEntry = serde_json::from_value(json!({"upid": "x", "endtime": 7})).unwrap();
        assert!(e.is_finished() && e.exitstatus().is_none());
    }

    #[test]
    fn task_list_query_sends_only_what_is_set() {
        assert!(TaskListQuery::default().query().is_empty());
        let q = TaskListQuery {
            source: Some(TaskSource::All),
            since: Some(1716580000),
            until: Some(1716590000),
            limit: Some(1000),
            start: Some(0),
            vmid: Some(VmId(205)),
            typefilter: Some("qmclone".into()),
            userfilter: Some("dispatcher@pve".into()),
            errors: Some(false),
            statusfilter: vec![TaskStatusType::Error, TaskStatusType::Warning],
        };
        assert_eq!(
            q.query(),
            vec![
                ("source", "all".to_owned()),
                ("since", "1716580000".into()),
                ("until", "1716590000".into()),
                ("limit", "1000".into()),
                ("start", "0".into()),
                ("vmid", "205".into()),
                ("typefilter", "qmclone".into()),
                ("userfilter", "dispatcher@pve".into()),
                ("errors", "0".into()),
                ("statusfilter", "error,warning".into()),
            ]
        );
    }

    #[test]
    fn tags_normalise_like_pve() {
        let t: Tags = "B;a,ghr-managed  a;ghr-pool-linux".parse().unwrap();
        assert_eq!(t.to_string(), "a;b;ghr-managed;ghr-pool-linux");
        assert!(t.contains("GHR-MANAGED"));
        assert!("bad:tag".parse::<Tags>().is_err());
        assert!("-x".parse::<Tags>().is_err());
        assert!("x=y".parse::<Tags>().is_err());
        assert!("_ok+1.2-3".parse::<Tags>().is_ok());
        let mut t = Tags::new();
        assert!(t.insert("Zed").unwrap());
        assert!(!t.insert("zed").unwrap());
        assert!(t.insert("alpha").unwrap());
        assert_eq!(t.iter().collect::<Vec<_>>(), ["alpha", "zed"]);
        assert!(t.remove("ZED"));
        assert_eq!(t.len(), 1);
        let d: Tags = serde_json::from_value(json!("b;a;a")).unwrap();
        assert_eq!(d.to_string(), "a;b");
        let d: Tags = serde_json::from_value(json!(null)).unwrap();
        assert!(d.is_empty());
        assert!(Tags::from_tags(["ok", "no way"]).is_err());
    }

    #[test]
    fn vm_config_typed_and_raw() {
        let c: VmConfig = serde_json::from_value(json!({
            "name": "gha-linux-1", "description": "managed-by: ghr\n", "tags": "ghr-managed;b",
            "cicustom": "user=local:snippets/x.yaml", "template": 1, "agent": "enabled=1,fstrim_cloned_disks=1",
            "memory": "4096", "cores": 2, "digest": "abc"
        }))
        .unwrap();
        assert_eq!(c.name.as_deref(), Some("gha-linux-1"));
        assert!(c.template);
        assert!(c.agent_enabled());
        assert_eq!(c.tags.to_string(), "b;ghr-managed");
        assert_eq!(c.raw.get("cores"), Some(&json!(2)));
        let c: VmConfig = serde_json::from_value(json!({"agent": 1})).unwrap();
        assert!(c.agent_enabled());
        let c: VmConfig = serde_json::from_value(json!({"agent": "0"})).unwrap();
        assert!(!c.agent_enabled());
    }

    #[test]
    fn permissions_inherit_through_propagation() {
        let p: Permissions = serde_json::from_value(json!({
            "/": {"Sys.Audit": 0},
            "/vms": {"VM.Clone": 1, "VM.Allocate": "1"},
            "/storage/local": {"Datastore.AllocateSpace": true}
        }))
        .unwrap();
        assert!(p.allows("/", "Sys.Audit"));
        assert!(!p.allows("/nodes/pve", "Sys.Audit"));
        assert!(p.allows("/vms/100", "VM.Clone"));
        assert!(p.allows("/vms/", "VM.Allocate"));
        assert!(p.allows("/storage/local", "Datastore.AllocateSpace"));
        assert_eq!(
            p.missing("/vms/100", &["VM.Clone", "VM.Audit"]),
            ["VM.Audit"]
        );
    }

    #[test]
    fn storage_content_list() {
        let s: StorageConfig = serde_json::from_value(json!({
            "storage": "local", "type": "dir", "content": "iso,snippets,vztmpl", "path": "/var/lib/vz",
            "digest": "x", "shared": 0
        }))
        .unwrap();
        assert!(s.has_content("snippets"));
        assert!(!s.has_content("images"));
        assert!(!s.shared);
    }

    #[test]
    fn forms_use_zero_one_booleans() {
        let mut c = CloneRequest::new(VmId(105));
        c.full = Some(false);
        c.name = Some("r1".into());
        assert_eq!(
            c.form(),
            vec![
                ("newid", "105".to_owned()),
                ("name", "r1".into()),
                ("full", "0".into())
            ]
        );
        let u = ConfigUpdate {
            delete: vec!["cicustom".into(), "smbios1".into()],
            ..Default::default()
        };
        assert_eq!(u.form(), vec![("delete", "cicustom,smbios1".to_owned())]);
        assert!(ConfigUpdate::default().is_empty());
    }
}
