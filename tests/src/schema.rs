//! The Proxmox VE API schema (`pve-apidata-9.1.json`): route matching and parameter validation the way
//! PVE's `PVE::JSONSchema` does it (strings in, 0/1 booleans, `additionalProperties: 0`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Error;

/// Environment variable that overrides where `pve-apidata-9.1.json` is read from.
pub const APIDATA_ENV: &str = "PVE_APIDATA_JSON";

/// One API method of one path.
#[derive(Debug, Clone)]
pub(crate) struct Method {
    /// `parameters.properties` (may be empty).
    properties: BTreeMap<String, Value>,
    /// `parameters.additionalProperties` is not 0.
    additional: bool,
}

/// A path template such as `/nodes/{node}/qemu/{vmid}/config`.
#[derive(Debug, Clone)]
struct Route {
    template: String,
    segments: Vec<Segment>,
    methods: BTreeMap<String, Method>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Var(String),
}

/// The loaded schema.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    routes: Vec<Route>,
}

/// Result of matching a request path.
#[derive(Debug, Clone)]
pub(crate) struct Matched {
    /// The templated path, e.g. `/nodes/{node}/qemu/{vmid}`.
    pub template: String,
    /// Path variables.
    pub vars: BTreeMap<String, String>,
    /// The method's schema, `None` when the path exists but the method does not.
    pub method: Option<Method>,
}

/// The default location of the apidata file, next to this crate in the shared folder, or [`APIDATA_ENV`].
pub fn default_apidata_path() -> PathBuf {
    if let Ok(p) = std::env::var(APIDATA_ENV) {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/api/pve-apidata-9.1.json")
}

impl Schema {
    /// Loads and indexes the schema file.
    pub(crate) fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Schema {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let tree: Value = serde_json::from_str(&text).map_err(|e| Error::Schema {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut routes = Vec::new();
        let Some(top) = tree.as_array() else {
            return Err(Error::Schema {
                path: path.display().to_string(),
                reason: "top level is not an array".into(),
            });
        };
        let mut stack: Vec<&Value> = top.iter().collect();
        while let Some(node) = stack.pop() {
            if let Some(children) = node.get("children").and_then(Value::as_array) {
                stack.extend(children.iter());
            }
            let Some(template) = node.get("path").and_then(Value::as_str) else {
                continue;
            };
            let mut methods = BTreeMap::new();
            if let Some(info) = node.get("info").and_then(Value::as_object) {
                for (m, def) in info {
                    let params = def.get("parameters");
                    let properties = params
                        .and_then(|p| p.get("properties"))
                        .and_then(Value::as_object)
                        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                        .unwrap_or_default();
                    let additional = params
                        .and_then(|p| p.get("additionalProperties"))
                        .is_some_and(|a| a.as_i64() == Some(1) || a.as_bool() == Some(true));
                    methods.insert(
                        m.clone(),
                        Method {
                            properties,
                            additional,
                        },
                    );
                }
            }
            let segments = template
                .split('/')
                .filter(|s| !s.is_empty())
                .map(
                    |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(v) => Segment::Var(v.to_string()),
                        None => Segment::Literal(s.to_string()),
                    },
                )
                .collect();
            routes.push(Route {
                template: template.to_string(),
                segments,
                methods,
            });
        }
        Ok(Self { routes })
    }

    /// Finds the route for a (percent-decoded, `/api2/json`-less) path; literal segments win over variables.
    pub(crate) fn match_path(&self, method: &str, path: &str) -> Option<Matched> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut best: Option<(Vec<bool>, &Route, BTreeMap<String, String>)> = None;
        for route in &self.routes {
            if route.segments.len() != parts.len() {
                continue;
            }
            let mut vars = BTreeMap::new();
            let mut literal_mask = Vec::with_capacity(parts.len());
            let mut ok = true;
            for (seg, part) in route.segments.iter().zip(&parts) {
                match seg {
                    Segment::Literal(l) => {
                        if l != part {
                            ok = false;
                            break;
                        }
                        literal_mask.push(true);
                    }
                    Segment::Var(v) => {
                        vars.insert(v.clone(), (*part).to_string());
                        literal_mask.push(false);
                    }
                }
            }
            if !ok {
                continue;
            }
            let better = match &best {
                None => true,
                Some((mask, _, _)) => literal_mask > *mask,
            };
            if better {
                best = Some((literal_mask, route, vars));
            }
        }
        best.map(|(_, route, vars)| Matched {
            template: route.template.clone(),
            vars,
            method: route.methods.get(method).cloned(),
        })
    }
}

impl Method {
    /// Validates parameters (path variables merged in) the way PVE does; returns the errors map.
    /// `json` = the values came from a JSON body (booleans `true`/`false` allowed).
    pub(crate) fn validate(
        &self,
        params: &BTreeMap<String, String>,
        json_bools: &BTreeMap<String, bool>,
    ) -> BTreeMap<String, String> {
        let mut errors = BTreeMap::new();
        for (name, value) in params {
            let Some(def) = self.lookup(name) else {
                if !self.additional {
                    errors.insert(
                        name.clone(),
                        "property is not defined in schema and the schema does not allow additional properties"
                            .to_string(),
                    );
                }
                continue;
            };
            if json_bools.contains_key(name)
                && def.get("type").and_then(Value::as_str) == Some("boolean")
            {
                continue;
            }
            if let Err(e) = check_value(def, value) {
                errors.insert(name.clone(), e);
            }
        }
        for (name, def) in &self.properties {
            if name.contains("[n]") {
                continue;
            }
            let optional = def
                .get("optional")
                .is_some_and(|o| o.as_i64() == Some(1) || o.as_bool() == Some(true));
            if !optional && !params.contains_key(name) {
                errors.insert(
                    name.clone(),
                    "property is missing and it is not optional".to_string(),
                );
            }
        }
        errors
    }

    fn lookup(&self, name: &str) -> Option<&Value> {
        if let Some(d) = self.properties.get(name) {
            return Some(d);
        }
        // `net[n]` stands for net0, net1, ...
        let digits = name.trim_end_matches(|c: char| c.is_ascii_digit());
        if digits.len() < name.len() {
            return self.properties.get(&format!("{digits}[n]"));
        }
        None
    }
}

fn num_attr(def: &Value, key: &str) -> Option<f64> {
    match def.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Checks one string value against a property definition. Messages follow PVE's `JSONSchema.pm`.
fn check_value(def: &Value, value: &str) -> Result<(), String> {
    let ty = def.get("type").and_then(Value::as_str).unwrap_or("string");
    match ty {
        "boolean" if value != "0" && value != "1" => {
            return Err(format!("type check ('boolean') failed - got '{value}'"));
        }
        "integer" => {
            let Ok(n) = value.parse::<i64>() else {
                return Err(format!("type check ('integer') failed - got '{value}'"));
            };
            #[allow(clippy::cast_precision_loss)]
            let n = n as f64;
            check_range(def, n)?;
        }
        "number" => {
            let Ok(n) = value.parse::<f64>() else {
                return Err(format!("type check ('number') failed - got '{value}'"));
            };
            check_range(def, n)?;
        }
        _ => {}
    }
    if let Some(en) = def.get("enum").and_then(Value::as_array) {
        let opts: Vec<&str> = en.iter().filter_map(Value::as_str).collect();
        if !opts.contains(&value) {
            return Err(format!(
                "value '{value}' does not have a value in the enumeration '{}'",
                opts.join(", ")
            ));
        }
    }
    if let Some(max) = num_attr(def, "maxLength") {
        #[allow(clippy::cast_precision_loss)]
        if value.chars().count() as f64 > max {
            return Err(format!("value may only be {max} characters long"));
        }
    }
    if let Some(min) = num_attr(def, "minLength") {
        #[allow(clippy::cast_precision_loss)]
        if (value.chars().count() as f64) < min {
            return Err(format!("value must be at least {min} characters long"));
        }
    }
    match def.get("format") {
        Some(Value::String(f)) => check_format(f, value),
        Some(Value::Object(fmt)) => check_property_string(fmt, value),
        _ => Ok(()),
    }
}

fn check_range(def: &Value, n: f64) -> Result<(), String> {
    if let Some(min) = num_attr(def, "minimum")
        && n < min
    {
        return Err(format!("value must have a minimum value of {min}"));
    }
    if let Some(max) = num_attr(def, "maximum")
        && n > max
    {
        return Err(format!("value must have a maximum value of {max}"));
    }
    Ok(())
}

/// A PVE tag (`pve-tag`).
pub(crate) fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
}

fn valid_dns_name(v: &str) -> bool {
    !v.is_empty()
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn check_format(format: &str, value: &str) -> Result<(), String> {
    let ok = match format {
        "dns-name" => valid_dns_name(value),
        "pve-node" => valid_dns_name(value),
        "pve-vmid" => value.parse::<u32>().is_ok(),
        "pve-tag-list" => value
            .split([';', ',', ' '])
            .filter(|t| !t.is_empty())
            .all(valid_tag),
        "pve-configid-list" => value
            .split([',', ';', ' '])
            .filter(|t| !t.is_empty())
            .all(|t| {
                t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            }),
        "pve-storage-id" => value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(match format {
            "dns-name" => format!("value '{value}' does not look like a valid DNS name"),
            "pve-tag-list" => format!("invalid format - invalid tag list '{value}'"),
            other => format!("value does not look like a valid {other}"),
        })
    }
}

/// Property strings such as `enabled=1,fstrim_cloned_disks=1` or a bare default-key value.
fn check_property_string(fmt: &serde_json::Map<String, Value>, value: &str) -> Result<(), String> {
    let default_key = fmt
        .iter()
        .find(|(_, d)| {
            d.get("default_key")
                .is_some_and(|v| v.as_i64() == Some(1) || v.as_bool() == Some(true))
        })
        .map(|(k, _)| k.clone());
    for part in value.split(',').filter(|p| !p.is_empty()) {
        let (key, val) = match part.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match &default_key {
                Some(k) => (k.clone(), part.to_string()),
                // keys used as flags (e.g. a net model holding the mac) are too varied to check
                None => continue,
            },
        };
        let Some(def) = fmt.get(&key) else {
            return Err(format!(
                "invalid format - property string: unknown key '{key}'"
            ));
        };
        if def.get("alias").is_some() {
            continue;
        }
        check_value(def, &val).map_err(|e| format!("invalid format - {key}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::load(&default_apidata_path()).unwrap()
    }

    #[test]
    fn matches_literal_over_var() {
        let s = schema();
        let m = s
            .match_path("POST", "/nodes/pve1/qemu/101/status/start")
            .unwrap();
        assert_eq!(m.template, "/nodes/{node}/qemu/{vmid}/status/start");
        assert_eq!(m.vars["vmid"], "101");
        assert!(m.method.is_some());
        let m = s
            .match_path("POST", "/nodes/pve1/qemu/101/cloudinit")
            .unwrap();
        assert!(m.method.is_none(), "POST cloudinit does not exist");
        assert!(s.match_path("GET", "/nope/x").is_none());
    }

    #[test]
    fn validates_like_pve() {
        let s = schema();
        let m = s
            .match_path("DELETE", "/nodes/pve1/qemu/101")
            .unwrap()
            .method
            .unwrap();
        let mut p = BTreeMap::from([
            ("node".to_string(), "pve1".to_string()),
            ("vmid".to_string(), "101".to_string()),
            ("purge".to_string(), "true".to_string()),
            ("bogus".to_string(), "1".to_string()),
        ]);
        let errs = m.validate(&p, &BTreeMap::new());
        assert!(errs["purge"].contains("type check ('boolean') failed"));
        assert!(errs["bogus"].contains("not defined in schema"));
        p.insert("purge".into(), "1".into());
        p.remove("bogus");
        assert!(m.validate(&p, &BTreeMap::new()).is_empty());
        let cfg = s
            .match_path("PUT", "/nodes/pve1/qemu/101/config")
            .unwrap()
            .method
            .unwrap();
        let p = BTreeMap::from([
            ("node".to_string(), "pve1".to_string()),
            ("vmid".to_string(), "101".to_string()),
            ("net0".to_string(), "virtio,bridge=vmbr0".to_string()),
            ("agent".to_string(), "enabled=1".to_string()),
        ]);
        assert!(
            cfg.validate(&p, &BTreeMap::new()).is_empty(),
            "{:?}",
            cfg.validate(&p, &BTreeMap::new())
        );
        let p = BTreeMap::from([
            ("node".to_string(), "pve1".to_string()),
            ("vmid".to_string(), "101".to_string()),
            ("agent".to_string(), "enabled=yes".to_string()),
        ]);
        assert!(cfg.validate(&p, &BTreeMap::new()).contains_key("agent"));
        let mut p = BTreeMap::from([
            ("node".to_string(), "pve1".to_string()),
            ("vmid".to_string(), "101".to_string()),
        ]);
        for (k, v) in [
            ("net0", "virtio=BC:24:11:22:33:44,bridge=vmbr0,firewall=1"),
            ("scsi0", "local-lvm:vm-201-disk-0,size=32G"),
            ("ide2", "local-lvm:cloudinit,media=cdrom"),
            ("ipconfig0", "ip=dhcp"),
            ("agent", "1,fstrim_cloned_disks=1"),
            ("serial0", "socket"),
            ("vga", "serial0"),
            ("cicustom", "user=local:snippets/gh-runner-201.yaml"),
            ("tags", "ghr-managed;ghr-pool-linux"),
            ("description", "managed-by: ghr-dispatcher\npool: linux"),
        ] {
            p.insert(k.to_string(), v.to_string());
        }
        let errs = cfg.validate(&p, &BTreeMap::new());
        assert!(errs.is_empty(), "{errs:?}");
    }
}
