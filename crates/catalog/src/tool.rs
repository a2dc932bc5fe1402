//! The parts of a tool definition the catalog reads, and its fingerprint.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The fields of a tool definition that say what it does; the fingerprint covers exactly
/// these, so that a change to any of them is a change to the tool.
pub const PINNED_FIELDS: [&str; 6] = [
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
];

/// A tool as listed by its server (`tools/list` item), read leniently: a missing or
/// ill-typed field is treated as absent.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    /// The whole definition as the server sent it.
    pub raw: Value,
}

impl ToolDef {
    /// Wraps a `tools/list` item.
    pub fn new(raw: Value) -> ToolDef {
        ToolDef { raw }
    }

    fn str_field(&self, key: &str) -> &str {
        self.raw.get(key).and_then(Value::as_str).unwrap_or("")
    }

    /// The tool's name on its server.
    pub fn name(&self) -> &str {
        self.str_field("name")
    }

    /// Its title, or "".
    pub fn title(&self) -> &str {
        self.str_field("title")
    }

    /// Its description, or "".
    pub fn description(&self) -> &str {
        self.str_field("description")
    }

    /// Its annotations object, if any.
    pub fn annotations(&self) -> Option<&Map<String, Value>> {
        self.raw.get("annotations").and_then(Value::as_object)
    }

    /// An explicit boolean annotation (`destructiveHint`, ...); `None` when not declared.
    pub fn hint(&self, key: &str) -> Option<bool> {
        self.annotations()?.get(key)?.as_bool()
    }

    /// The top-level properties of its input schema, in order.
    pub fn arguments(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.raw
            .get("inputSchema")
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v))
    }

    /// SHA-256 over the canonical JSON of the pinned fields (`sha256:` + hex).
    pub fn fingerprint(&self) -> String {
        let mut pinned = Map::new();
        for key in PINNED_FIELDS {
            if let Some(v) = self.raw.get(key) {
                pinned.insert(key.to_owned(), v.clone());
            }
        }
        fingerprint_of(&Value::Object(pinned))
    }

    /// The pinned fields alone, as canonical pretty JSON, for showing a change.
    pub fn pinned_json(&self) -> Value {
        let mut pinned = Map::new();
        for key in PINNED_FIELDS {
            if let Some(v) = self.raw.get(key) {
                pinned.insert(key.to_owned(), v.clone());
            }
        }
        canonical(&Value::Object(pinned))
    }
}

/// The fingerprint of a server's identity: its `serverInfo` and `instructions`.
pub fn server_fingerprint(server_info: Option<&Value>, instructions: Option<&str>) -> String {
    let mut pinned = Map::new();
    if let Some(info) = server_info {
        pinned.insert("serverInfo".into(), info.clone());
    }
    if let Some(text) = instructions {
        pinned.insert("instructions".into(), Value::String(text.to_owned()));
    }
    fingerprint_of(&Value::Object(pinned))
}

/// `sha256:` + the hex SHA-256 of a value's canonical JSON.
pub fn fingerprint_of(value: &Value) -> String {
    let mut hasher = Sha256::new();
    write_canonical(value, &mut hasher);
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// The value with every object's keys sorted (recursively): two definitions that differ only
/// in key order are the same definition.
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Streams the canonical JSON of `value` (sorted keys, no whitespace, serde_json's escaping)
/// into the hasher without building it.
fn write_canonical(value: &Value, hasher: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            hasher.update(b"{");
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                hasher.update(Value::String(k.clone()).to_string().as_bytes());
                hasher.update(b":");
                write_canonical(v, hasher);
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                write_canonical(v, hasher);
            }
            hasher.update(b"]");
        }
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_unpinned_fields_do_not_change_the_fingerprint() {
        let a = ToolDef::new(json!({"name": "t", "description": "d",
            "inputSchema": {"type": "object", "properties": {"x": {"type": "string"}}}}));
        let b = ToolDef::new(
            json!({"inputSchema": {"properties": {"x": {"type": "string"}},
            "type": "object"}, "description": "d", "name": "t", "icons": [], "_meta": {"k": 1}}),
        );
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(a.fingerprint().starts_with("sha256:"));
        assert_eq!(a.fingerprint().len(), 7 + 64);
    }

    #[test]
    fn every_pinned_field_changes_the_fingerprint() {
        let base = json!({"name": "t", "title": "T", "description": "d",
            "inputSchema": {"type": "object"}, "outputSchema": {"type": "object"},
            "annotations": {"readOnlyHint": true}});
        let fp = ToolDef::new(base.clone()).fingerprint();
        for key in PINNED_FIELDS {
            let mut changed = base.clone();
            changed[key] = json!("other");
            assert_ne!(ToolDef::new(changed).fingerprint(), fp, "{key}");
        }
    }

    #[test]
    fn canonical_hash_matches_the_canonical_text() {
        let v = json!({"b": [1, {"d": "\u{200b}x", "c": null}], "a": "\"q\""});
        let text = canonical(&v).to_string();
        let mut h = Sha256::new();
        h.update(text.as_bytes());
        assert_eq!(
            fingerprint_of(&v),
            format!("sha256:{}", hex::encode(h.finalize()))
        );
    }
}
