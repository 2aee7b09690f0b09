//! Lenient `serde` helpers for the loose shapes PVE answers with: booleans as `0`/`1`/`"1"`/
//! `true`, integers as numbers or strings, and absent-or-null fields.
//!
//! Use them with `#[serde(default, deserialize_with = "proxmox_api::lenient::bool")]`.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Interprets a JSON value as a PVE boolean: `true`/`false`, any number (non-zero = true), or
/// the strings `1`/`0`/`true`/`false`/`yes`/`no`/`on`/`off` (case-insensitive).
pub fn value_as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => parse_bool_str(s),
        _ => None,
    }
}

/// Parses `1`/`0`/`true`/`false`/`yes`/`no`/`on`/`off` (case-insensitive, trimmed).
pub fn parse_bool_str(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Interprets a JSON value as an unsigned integer: a number (floats are truncated) or a numeric string.
pub fn value_as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Interprets a JSON value as a string: strings as is, numbers and booleans formatted.
pub fn value_as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1".into() } else { "0".into() }),
        _ => None,
    }
}

/// A boolean that may arrive as `0`/`1`, `"1"`, `true`/`false` or `null` (= false).
pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::Null => Ok(false),
        other => value_as_bool(&other)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a boolean, got {other}"))),
    }
}

/// An optional unsigned integer given as number or numeric string; `null` and `""` = `None`.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        other => value_as_u64(other)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("expected an integer, got {other}"))),
    }
}

/// An optional floating point number given as number or numeric string.
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("expected a number, got {s:?}"))),
        other => Err(serde::de::Error::custom(format!(
            "expected a number, got {other}"
        ))),
    }
}

/// An optional string that may arrive as a number or boolean (e.g. `agent: 1`); `null` = `None`.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        other => value_as_string(other)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a string, got {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize)]
    struct B {
        #[serde(default, deserialize_with = "bool")]
        b: bool,
        #[serde(default, deserialize_with = "opt_u64")]
        n: Option<u64>,
        #[serde(default, deserialize_with = "opt_string")]
        s: Option<String>,
    }

    #[test]
    fn lenient_booleans_numbers_strings() {
        for (v, want) in [
            (json!(1), true),
            (json!(0), false),
            (json!("1"), true),
            (json!("0"), false),
            (json!(true), true),
            (json!(false), false),
            (json!("true"), true),
            (json!(null), false),
        ] {
            let b: B = serde_json::from_value(json!({ "b": v })).unwrap();
            assert_eq!(b.b, want, "{v}");
        }
        let b: B = serde_json::from_value(json!({})).unwrap();
        assert!(!b.b);
        assert_eq!(b.n, None);
        let b: B = serde_json::from_value(json!({"n": "42", "s": 1})).unwrap();
        assert_eq!(b.n, Some(42));
        assert_eq!(b.s.as_deref(), Some("1"));
        let b: B = serde_json::from_value(json!({"n": 42.0})).unwrap();
        assert_eq!(b.n, Some(42));
        assert!(serde_json::from_value::<B>(json!({"b": "maybe"})).is_err());
        assert!(serde_json::from_value::<B>(json!({"n": "x"})).is_err());
    }
}
