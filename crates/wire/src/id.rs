use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::value::RawValue;

/// A JSON-RPC request id, kept as its raw JSON text (`7`, `"abc"`) so that it is echoed back
/// exactly as the peer wrote it. Equality and hashing use that text. Shared: a request's id
/// is copied into every table and record that follows the request, and a copy costs no
/// allocation.
#[derive(Debug, Clone)]
pub struct Id(Arc<RawValue>);

impl Id {
    /// An integer id, as the gateway mints them towards upstreams.
    pub fn number(n: u64) -> Id {
        Id(Arc::from(
            RawValue::from_string(n.to_string()).expect("an integer is JSON"),
        ))
    }

    /// A string id.
    pub fn string(s: &str) -> Id {
        Id(Arc::from(crate::raw_string(s)))
    }

    /// Accepts a raw value as a request id if MCP allows it: a string or an integer.
    pub fn from_raw(raw: &RawValue) -> Option<Id> {
        let text = raw.get();
        let ok = match text.as_bytes().first() {
            Some(b'"') => true,
            Some(b'-' | b'0'..=b'9') => {
                text.bytes().skip(1).all(|b| b.is_ascii_digit()) && text.len() <= 20
            }
            _ => false,
        };
        ok.then(|| Id(Arc::from(raw.to_owned())))
    }

    /// The raw JSON text of the id.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The id as a raw JSON value.
    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }

    /// The id as an unsigned integer, if it is one (the gateway's own ids are).
    pub fn as_u64(&self) -> Option<u64> {
        self.0.get().parse().ok()
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Id) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Id {}

impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
