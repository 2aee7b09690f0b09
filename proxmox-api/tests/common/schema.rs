//! Schema conformance: every request the tests send must name a path + method that exists in
//! `../shared/api/pve-apidata-9.1.json` and send only declared parameters with values of the
//! declared type (booleans `0`/`1` in forms and queries, integers, enums, lengths, and the
//! simple formats: vmid, node, storage id, pool id, tag list, config-id list, DNS name, cicustom,
//! smbios1). Fails — never skips — when the schema file is missing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

/// One request as sent on the wire.
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: String,
    /// URL path, percent-encoded as sent.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub form: Vec<(String, String)>,
    pub json: Option<serde_json::Map<String, Value>>,
}

impl Sent {
    pub fn from_wiremock(r: &wiremock::Request) -> Sent {
        let content_type = r
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Sent::build(
            r.method.as_str(),
            r.url.path(),
            r.url.query(),
            &content_type,
            &r.body,
        )
    }

    pub fn from_raw(head: &str, body: &[u8]) -> Sent {
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or("");
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("");
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let content_type = lines
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default();
        Sent::build(&method, path, query, &content_type, body)
    }

    fn build(
        method: &str,
        path: &str,
        query: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> Sent {
        let query = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let mut form = Vec::new();
        let mut json = None;
        if content_type.starts_with("application/x-www-form-urlencoded") {
            form = url::form_urlencoded::parse(body).into_owned().collect();
        } else if content_type.starts_with("application/json") && !body.is_empty() {
            json = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.as_object().cloned());
        } else if !body.is_empty() {
            form.push((
                "<unexpected body>".into(),
                String::from_utf8_lossy(body).into_owned(),
            ));
        }
        Sent {
            method: method.to_owned(),
            path: path.to_owned(),
            query,
            form,
            json,
        }
    }
}

pub fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/api/pve-apidata-9.1.json")
}

/// The schema tree's top-level nodes. Panics (fails the test) if the file is missing.
pub fn schema() -> &'static Vec<Value> {
    static SCHEMA: OnceLock<Vec<Value>> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let p = schema_path();
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| {
            panic!(
                "schema conformance: cannot read the PVE API schema at {}: {e} \
                 (the checkout needs ../shared/api beside it)",
                p.display()
            )
        });
        let v: Value = serde_json::from_str(&text).expect("schema file is valid JSON");
        v.as_array().expect("schema root is a list").clone()
    })
}

fn last_segment(node: &Value) -> &str {
    node["path"]
        .as_str()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("")
}

/// Finds the schema node for an API path (relative to /api2/json). Returns the node and the
/// path parameters it captured.
pub fn resolve(api_path: &str) -> Option<(&'static Value, BTreeMap<String, String>)> {
    let mut level: &Vec<Value> = schema();
    let mut found: Option<&Value> = None;
    let mut params = BTreeMap::new();
    for raw_seg in api_path.split('/').filter(|s| !s.is_empty()) {
        let seg = percent_decode(raw_seg);
        let node = level
            .iter()
            .find(|n| last_segment(n) == seg)
            .or_else(|| level.iter().find(|n| last_segment(n).starts_with('{')))?;
        let last = last_segment(node);
        if last.starts_with('{') {
            params.insert(last.trim_matches(|c| c == '{' || c == '}').to_owned(), seg);
        }
        found = Some(node);
        static EMPTY: Vec<Value> = Vec::new();
        level = node["children"].as_array().unwrap_or(&EMPTY);
    }
    found.map(|n| (n, params))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Checks one request; returns `METHOD /template` or the list of problems.
pub fn check(sent: &Sent) -> Result<String, Vec<String>> {
    let mut problems = Vec::new();
    let where_ = format!("{} {}", sent.method, sent.path);
    let Some(api_path) = sent.path.strip_prefix("/api2/json") else {
        return Err(vec![format!("{where_}: not under /api2/json")]);
    };
    let Some((node, path_params)) = resolve(api_path) else {
        return Err(vec![format!("{where_}: no such path in the PVE schema")]);
    };
    let template = node["path"].as_str().unwrap_or("").to_owned();
    let Some(info) = node["info"].get(&sent.method) else {
        return Err(vec![format!("{where_}: method not defined for {template}")]);
    };
    let props = info["parameters"]["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();

    let mut given: Vec<(String, Value, &str)> = Vec::new();
    for (k, v) in &path_params {
        given.push((k.clone(), Value::String(v.clone()), "path"));
    }
    for (k, v) in &sent.query {
        given.push((k.clone(), Value::String(v.clone()), "query"));
    }
    for (k, v) in &sent.form {
        given.push((k.clone(), Value::String(v.clone()), "form"));
    }
    if let Some(json) = &sent.json {
        for (k, v) in json {
            given.push((k.clone(), v.clone(), "json"));
        }
    }
    if (sent.method == "GET" || sent.method == "DELETE")
        && (!sent.form.is_empty() || sent.json.is_some())
    {
        problems.push(format!("{where_}: {} with a body", sent.method));
    }
    for (key, value, origin) in &given {
        let Some(spec) = lookup_prop(&props, key) else {
            problems.push(format!(
                "{where_}: parameter {key:?} ({origin}) is not declared for {} {template}",
                sent.method
            ));
            continue;
        };
        if let Err(e) = check_value(spec, value, *origin == "json") {
            problems.push(format!("{where_}: parameter {key}={value} ({origin}): {e}"));
        }
    }
    for (name, spec) in &props {
        let optional = spec.get("optional").and_then(Value::as_u64) == Some(1);
        if !optional && !name.contains("[n]") && !given.iter().any(|(k, _, _)| k == name) {
            problems.push(format!("{where_}: required parameter {name:?} missing"));
        }
    }
    if problems.is_empty() {
        Ok(format!("{} {template}", sent.method))
    } else {
        Err(problems)
    }
}

/// Checks all requests; panics listing every problem. Returns `METHOD /template` per request.
pub fn check_all(sent: &[Sent]) -> Vec<String> {
    let mut ok = Vec::new();
    let mut problems = Vec::new();
    for s in sent {
        match check(s) {
            Ok(t) => ok.push(t),
            Err(p) => problems.extend(p),
        }
    }
    assert!(
        problems.is_empty(),
        "schema conformance failures:\n{}",
        problems.join("\n")
    );
    ok
}

fn lookup_prop<'a>(props: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    if let Some(p) = props.get(key) {
        return Some(p);
    }
    // `net[n]` stands for net0, net1, …
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() < key.len() {
        return props.get(&format!("{base}[n]"));
    }
    None
}

fn check_value(spec: &Value, value: &Value, is_json: bool) -> Result<(), String> {
    let ty = spec["type"].as_str().unwrap_or("string");
    match ty {
        "boolean" => match value {
            Value::String(s) if s == "0" || s == "1" => Ok(()),
            Value::Bool(_) if is_json => Ok(()),
            Value::Number(n) if is_json && (n.as_u64() == Some(0) || n.as_u64() == Some(1)) => {
                Ok(())
            }
            other => Err(format!("boolean must be 0 or 1, got {other}")),
        },
        "integer" => {
            let n = match value {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.parse::<i64>().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("not an integer: {value}"))?;
            if let Some(min) = spec["minimum"].as_i64()
                && n < min
            {
                return Err(format!("{n} below minimum {min}"));
            }
            if let Some(max) = spec["maximum"].as_i64()
                && n > max
            {
                return Err(format!("{n} above maximum {max}"));
            }
            if let Some(values) = spec["enum"].as_array()
                && !values.iter().any(|v| v.as_str() == Some(&n.to_string()))
            {
                return Err(format!("{n} not in enum"));
            }
            Ok(())
        }
        "number" => match value {
            Value::Number(_) => Ok(()),
            Value::String(s) if s.parse::<f64>().is_ok() => Ok(()),
            other => Err(format!("not a number: {other}")),
        },
        "string" => {
            let s = match value {
                Value::String(s) => s.clone(),
                other if !is_json => other.to_string(),
                other => return Err(format!("not a string: {other}")),
            };
            if let Some(values) = spec["enum"].as_array()
                && !values.iter().any(|v| v.as_str() == Some(&s))
            {
                return Err(format!("{s:?} not one of {values:?}"));
            }
            if let Some(max) = spec["maxLength"].as_u64()
                && s.chars().count() as u64 > max
            {
                return Err(format!("longer than maxLength {max}"));
            }
            if let Some(format) = spec["format"].as_str() {
                check_format(format, &s)?;
            }
            Ok(())
        }
        other => Err(format!("unsupported schema type {other}")),
    }
}

fn is_dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

fn is_storage_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

fn is_tag(t: &str) -> bool {
    let mut chars = t.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '+' | '.')
        })
}

fn check_format(format: &str, s: &str) -> Result<(), String> {
    let ok = match format {
        "pve-vmid" => s
            .parse::<u64>()
            .is_ok_and(|n| (100..=999_999_999).contains(&n)),
        "pve-node" => is_dns_label(s),
        "pve-storage-id" => is_storage_id(s),
        "pve-poolid" => {
            !s.is_empty()
                && s.split('/').count() <= 3
                && s.split('/').all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                })
        }
        "pve-tag-list" => {
            let tags: Vec<&str> = s.split([';', ',', ' ']).filter(|t| !t.is_empty()).collect();
            !tags.is_empty() && tags.iter().all(|t| is_tag(t))
        }
        "pve-configid-list" => s
            .split([',', ';', ' '])
            .filter(|t| !t.is_empty())
            .all(|id| {
                id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && id.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    })
            }),
        "dns-name" => s.split('.').all(is_dns_label),
        "pve-qm-cicustom" => s.split(',').all(|kv| {
            kv.split_once('=').is_some_and(|(k, v)| {
                matches!(k, "meta" | "network" | "user" | "vendor")
                    && v.split_once(':')
                        .is_some_and(|(st, vol)| is_storage_id(st) && !vol.is_empty())
            })
        }),
        "pve-qm-smbios1" => s.split(',').all(|kv| {
            kv.split_once('=').is_some_and(|(k, _)| {
                matches!(
                    k,
                    "base64"
                        | "family"
                        | "manufacturer"
                        | "product"
                        | "serial"
                        | "sku"
                        | "uuid"
                        | "version"
                )
            })
        }),
        // Formats we do not model are accepted (documented in the crate README).
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{s:?} does not match format {format}"))
    }
}
