//! Reading kvmroll's `--json` output and kvmroll-guests' journal in tests.

pub use serde_json::Value;
use std::collections::BTreeMap;

/// Parses JSON; `None` when it is not.
pub fn parse(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok()
}

/// Short accessors for assertions: a missing member is `Null`.
pub trait Get {
    fn at(&self, key: &str) -> &Value;
    fn str(&self) -> Option<&str>;
    fn num(&self) -> Option<f64>;
    fn arr(&self) -> &[Value];
    fn obj(&self) -> Option<&serde_json::Map<String, Value>>;
}

impl Get for Value {
    fn at(&self, key: &str) -> &Value {
        &self[key]
    }
    fn str(&self) -> Option<&str> {
        self.as_str()
    }
    fn num(&self) -> Option<f64> {
        self.as_f64()
    }
    fn arr(&self) -> &[Value] {
        self.as_array().map_or(&[], Vec::as_slice)
    }
    fn obj(&self) -> Option<&serde_json::Map<String, Value>> {
        self.as_object()
    }
}

/// An array of flat objects as text maps: strings as they are, numbers
/// and booleans as written, null as `None`.
pub fn rows(text: &str) -> Vec<BTreeMap<String, Option<String>>> {
    let v: Value = serde_json::from_str(text).expect("valid JSON");
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|row| {
            row.as_object()
                .expect("an array of objects")
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::Null => None,
                        Value::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .collect()
}
