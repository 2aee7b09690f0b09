//! Ownership marks: runner/VM names, the clone `description` marker line, and Proxmox tags.
//!
//! * VM name = runner name = `<runner_name_prefix><vmid>-<suffix>`, where `suffix` is the creation time
//!   (unix seconds) in lowercase base 36, so the creation time can be read back from the name alone (which
//!   `/cluster/resources` lists). Prefixes are normalised at config load to end with `-`.
//! * The clone `description` starts with the line
//!   `ghr-managed: pool=<pool> runner=<runner name> created=<unix secs> instance=<dispatcher id>`, followed by
//!   free text lines (`instance=` is absent on VMs made before instance identities existed).
//! * Tags: [`MANAGED_TAG`], [`pool_tag`], [`instance_tag`] and, once the VM is started and its credential
//!   injected, [`READY_TAG`].

use serde::{Deserialize, Serialize};

/// The tag every VM this dispatcher created carries.
pub const MANAGED_TAG: &str = "ghr-managed";
/// The tag added once the VM was started and its runner credential injected.
pub const READY_TAG: &str = "ghr-ready";
/// The prefix of the per-pool tag (see [`pool_tag`]).
pub const POOL_TAG_PREFIX: &str = "ghr-pool-";
/// The key that starts the first line of a managed VM's description.
pub const MARKER_KEY: &str = "ghr-managed:";
/// The prefix of the per-instance tag (see [`instance_tag`]).
pub const INSTANCE_TAG_PREFIX: &str = "ghr-inst-";

/// Whether `id` can name a dispatcher instance: 1–32 characters of `[a-z0-9_.-]`, starting with a letter
/// or digit (it becomes part of a Proxmox tag and of the description marker).
#[must_use]
pub fn is_valid_instance_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// The per-instance tag: `ghr-inst-<id>`. Two dispatchers with different ids never touch each other's VMs.
#[must_use]
pub fn instance_tag(id: &str) -> String {
    format!("{INSTANCE_TAG_PREFIX}{id}")
}

/// The instance a tag list names, if any.
#[must_use]
pub fn tagged_instance(tags: &[String]) -> Option<&str> {
    tags.iter()
        .find_map(|t| t.strip_prefix(INSTANCE_TAG_PREFIX))
}

/// The per-pool tag: `ghr-pool-<name>`, the name lowercased and every character outside `[a-z0-9_+.-]`
/// replaced by `-` (Proxmox tags allow only those).
#[must_use]
pub fn pool_tag(pool: &str) -> String {
    let mut tag = String::with_capacity(POOL_TAG_PREFIX.len() + pool.len());
    tag.push_str(POOL_TAG_PREFIX);
    tag.extend(pool.chars().map(|c| {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '+' | '.' | '-') {
            c
        } else {
            '-'
        }
    }));
    tag
}

/// The tags to set right after the clone: `[ghr-managed, ghr-pool-<name>]`.
#[must_use]
pub fn managed_tags(pool: &str) -> Vec<String> {
    vec![MANAGED_TAG.to_owned(), pool_tag(pool)]
}

/// Whether a tag list carries [`MANAGED_TAG`] (Proxmox lowercases tags; compared case-insensitively anyway).
#[must_use]
pub fn has_managed_tag(tags: &[String]) -> bool {
    tags.iter().any(|t| t.eq_ignore_ascii_case(MANAGED_TAG))
}

/// Whether a tag list carries [`READY_TAG`].
#[must_use]
pub fn has_ready_tag(tags: &[String]) -> bool {
    tags.iter().any(|t| t.eq_ignore_ascii_case(READY_TAG))
}

/// Lowercase base 36 of `n` (`0` → `"0"`).
#[must_use]
pub fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".to_owned();
    }
    let mut buf = Vec::with_capacity(13);
    while n > 0 {
        buf.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    buf.reverse();
    buf.into_iter().map(char::from).collect()
}

fn parse_base36(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    let mut n: u64 = 0;
    for c in s.chars() {
        let d = match c {
            '0'..='9' => u64::from(c as u8 - b'0'),
            'a'..='z' => u64::from(c as u8 - b'a') + 10,
            _ => return None,
        };
        n = n.checked_mul(36)?.checked_add(d)?;
    }
    Some(n)
}

/// The VM/runner name: `<prefix><vmid>-<base36(created_unix)>`.
///
/// ```
/// let name = pool_scheduler::marks::runner_name("gh-runner-", 201, 1_700_000_000);
/// assert_eq!(name, "gh-runner-201-s44we8");
/// assert_eq!(pool_scheduler::marks::parse_runner_name("gh-runner-", &name), Some((201, 1_700_000_000)));
/// ```
#[must_use]
pub fn runner_name(prefix: &str, vmid: u32, created_unix: u64) -> String {
    format!("{prefix}{vmid}-{}", base36(created_unix))
}

/// Parses a name made by [`runner_name`] with this prefix: `Some((vmid, created_unix))`. Only the canonical
/// form is accepted (no leading zeros, lowercase), so a parsed name always re-renders to itself.
#[must_use]
pub fn parse_runner_name(prefix: &str, name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix(prefix)?;
    let (vmid, suffix) = rest.split_once('-')?;
    if vmid.is_empty()
        || !vmid.bytes().all(|b| b.is_ascii_digit())
        || (vmid.len() > 1 && vmid.starts_with('0'))
    {
        return None;
    }
    let vmid: u32 = vmid.parse().ok()?;
    let created = parse_base36(suffix)?;
    Some((vmid, created))
}

/// The ownership marker read from (or written to) the first line of a VM's `description`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The pool's name.
    pub pool: String,
    /// The runner (and VM) name.
    pub runner: String,
    /// Creation time, unix seconds.
    pub created: u64,
    /// The dispatcher instance that made it (`None` on VMs made before instance identities).
    #[serde(default)]
    pub instance: Option<String>,
}

/// The clone `description`: the marker line, then `details` (free text, e.g. `job=1 run=2 repo=o/r`) on the
/// following line(s) when not empty.
///
/// ```
/// use pool_scheduler::marks::{description_marker, parse_description_marker};
/// let d = description_marker("linux", "gh-runner-201-s44we8", 1_700_000_000, "job=7 run=3 repo=o/r");
/// assert_eq!(d, "ghr-managed: pool=linux runner=gh-runner-201-s44we8 created=1700000000\njob=7 run=3 repo=o/r");
/// assert_eq!(parse_description_marker(&d).map(|m| m.pool), Some("linux".to_owned()));
/// ```
#[must_use]
pub fn description_marker(pool: &str, runner: &str, created_unix: u64, details: &str) -> String {
    description_marker_of(None, pool, runner, created_unix, details)
}

/// [`description_marker`] naming the dispatcher instance that makes the VM.
///
/// ```
/// use pool_scheduler::marks::{description_marker_of, parse_description_marker};
/// let d = description_marker_of(Some("ci-a"), "linux", "gh-runner-201-s44we8", 1_700_000_000, "");
/// assert_eq!(d, "ghr-managed: pool=linux runner=gh-runner-201-s44we8 created=1700000000 instance=ci-a");
/// assert_eq!(parse_description_marker(&d).and_then(|m| m.instance), Some("ci-a".to_owned()));
/// ```
#[must_use]
pub fn description_marker_of(
    instance: Option<&str>,
    pool: &str,
    runner: &str,
    created_unix: u64,
    details: &str,
) -> String {
    let mut s = format!("{MARKER_KEY} pool={pool} runner={runner} created={created_unix}");
    if let Some(id) = instance {
        s.push_str(" instance=");
        s.push_str(id);
    }
    let details = details.trim_end();
    if !details.is_empty() {
        s.push('\n');
        s.push_str(details);
    }
    s
}

/// Parses the marker from a description: its first line must be exactly
/// `ghr-managed: pool=<pool> runner=<runner> created=<secs>[ instance=<id>]` (trailing whitespace and `\r`
/// tolerated). Anything else gives `None`.
#[must_use]
pub fn parse_description_marker(description: &str) -> Option<Marker> {
    let first = description.lines().next()?.trim_end();
    let rest = first.strip_prefix(MARKER_KEY)?.strip_prefix(' ')?;
    let mut parts = rest.split(' ');
    let pool = parts.next()?.strip_prefix("pool=")?;
    let runner = parts.next()?.strip_prefix("runner=")?;
    let created = parts.next()?.strip_prefix("created=")?;
    let instance = match parts.next() {
        Some(p) => {
            let id = p.strip_prefix("instance=")?;
            if !is_valid_instance_id(id) {
                return None;
            }
            Some(id.to_owned())
        }
        None => None,
    };
    if parts.next().is_some() || pool.is_empty() || runner.is_empty() {
        return None;
    }
    if created.is_empty() || !created.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Marker {
        pool: pool.to_owned(),
        runner: runner.to_owned(),
        created: created.parse().ok()?,
        instance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_name_round_trips() {
        for (prefix, vmid, t) in [
            ("gh-runner-", 200, 0),
            ("gh-runner-", 299, 1),
            ("ubuntu-2404-", 100, 1_760_000_000),
            ("a-", 999_999_999, u64::MAX),
        ] {
            let name = runner_name(prefix, vmid, t);
            assert_eq!(parse_runner_name(prefix, &name), Some((vmid, t)), "{name}");
        }
    }

    #[test]
    fn parse_runner_name_rejects_other_shapes() {
        let p = "gh-runner-";
        for name in [
            "gh-runner-201",
            "gh-runner-201-",
            "gh-runner--abc",
            "gh-runner-0201-abc",
            "gh-runner-201-0abc",
            "gh-runner-201-ABC",
            "gh-runner-201-ab-c",
            "other-201-abc",
            "gh-runner-99999999999-abc",
            "gh-runner-201-zzzzzzzzzzzzzzz",
        ] {
            assert_eq!(parse_runner_name(p, name), None, "{name}");
        }
    }

    #[test]
    fn base36_known_values() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(parse_base36("10"), Some(36));
    }

    #[test]
    fn marker_round_trips_and_is_strict() {
        let d = description_marker("gpu", "gpu-300-abc", 42, "");
        assert_eq!(d, "ghr-managed: pool=gpu runner=gpu-300-abc created=42");
        assert_eq!(
            parse_description_marker(&format!("{d}\r\njob=1")),
            Some(Marker {
                pool: "gpu".into(),
                runner: "gpu-300-abc".into(),
                created: 42,
                instance: None,
            })
        );
        let d = description_marker_of(Some("site-a.1"), "gpu", "gpu-300-abc", 42, "x");
        assert_eq!(
            parse_description_marker(&d).and_then(|m| m.instance),
            Some("site-a.1".to_owned())
        );
        for bad in [
            "",
            "hello\nghr-managed: pool=a runner=b created=1",
            "ghr-managed: pool=a runner=b",
            "ghr-managed: pool=a runner=b created=x",
            "ghr-managed: pool= runner=b created=1",
            "ghr-managed:  pool=a runner=b created=1",
            "ghr-managed: runner=b pool=a created=1",
            "ghr-managed: pool=a runner=b created=1 extra=2",
            "ghr-managed: pool=a runner=b created=1 instance=",
            "ghr-managed: pool=a runner=b created=1 instance=UPPER",
            "ghr-managed: pool=a runner=b created=1 instance=a extra=2",
        ] {
            assert_eq!(parse_description_marker(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tags() {
        assert_eq!(pool_tag("Ubuntu 24.04/GPU"), "ghr-pool-ubuntu-24.04-gpu");
        assert_eq!(pool_tag("a_b+c"), "ghr-pool-a_b+c");
        assert_eq!(pool_tag("é"), "ghr-pool--");
        assert_eq!(managed_tags("x"), vec!["ghr-managed", "ghr-pool-x"]);
        assert!(has_managed_tag(&["GHR-MANAGED".to_owned()]));
        assert!(has_ready_tag(&["ghr-ready".to_owned()]));
        assert!(!has_ready_tag(&["ghr-managed".to_owned()]));
        assert_eq!(instance_tag("ci-a"), "ghr-inst-ci-a");
        assert_eq!(tagged_instance(&["ghr-inst-ci-a".to_owned()]), Some("ci-a"));
        assert!(is_valid_instance_id("a") && is_valid_instance_id("0f3c9a1b"));
        for bad in ["", "-a", "A", "a b", "a:b", &"x".repeat(33)] {
            assert!(!is_valid_instance_id(bad), "{bad:?}");
        }
    }
}
