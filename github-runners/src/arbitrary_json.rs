//! Test-only proptest strategies for JSON: arbitrary values, and valid documents with fields dropped or
//! replaced by values of any type (numbers as strings, huge numbers, unknown enum values…).

use proptest::prelude::*;
use serde_json::{Map, Value};

/// A scalar: null, booleans, extreme and ordinary numbers, numbers as strings, dates, short text.
pub(crate) fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<u64>().prop_map(|n| Value::String(n.to_string())),
        Just(Value::String("2026-01-01T00:00:00Z".into())),
        Just(Value::String("+999999-12-31T23:59:60Z".into())),
        Just(Value::String("queued".into())),
        "\\PC{0,16}".prop_map(Value::String),
        "[a-z_]{0,12}\n[ -~]{0,12}".prop_map(Value::String),
    ]
}

/// Any JSON value, a few levels deep.
pub(crate) fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `template` (an object) with each member kept, dropped or replaced by an arbitrary value, plus a few
/// unknown members.
pub(crate) fn mutated(template: Value) -> impl Strategy<Value = Value> {
    let keys: Vec<String> = template
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let n = keys.len();
    (
        prop::collection::vec(
            prop_oneof![
                4 => Just(None),
                1 => Just(Some(Value::Null)),
                3 => value().prop_map(Some),
            ],
            n,
        ),
        prop::collection::vec(any::<bool>(), n),
        prop::collection::btree_map("[a-z_]{1,8}", leaf(), 0..3),
    )
        .prop_map(move |(replace, drop, extra)| {
            let mut out: Map<String, Value> = template.as_object().cloned().unwrap_or_default();
            for ((key, new), gone) in keys.iter().zip(replace).zip(drop) {
                if gone && new.is_none() {
                    out.remove(key);
                } else if let Some(v) = new {
                    out.insert(key.clone(), v);
                }
            }
            for (k, v) in extra {
                out.entry(k).or_insert(v);
            }
            Value::Object(out)
        })
}
