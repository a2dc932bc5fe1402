use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON object whose members stay raw: their order and their bytes are kept, so that an
/// object can be read, one member changed, and written out again with everything else intact.
#[derive(Debug, Clone, Default)]
pub struct RawObject {
    entries: Vec<(Cow<'static, str>, Box<RawValue>)>,
}

impl RawObject {
    /// An empty object.
    pub fn new() -> RawObject {
        RawObject::default()
    }

    /// Reads a JSON object. Fails on anything else.
    pub fn parse(json: &str) -> Result<RawObject, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Reads the object held in a raw value.
    pub fn from_raw(raw: &RawValue) -> Result<RawObject, serde_json::Error> {
        RawObject::parse(raw.get())
    }

    /// The raw value of a member.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| &**v)
    }

    /// A member read as a string, if it is one.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key)
            .and_then(|v| serde_json::from_str(v.get()).ok())
    }

    /// A member read as an object, if it is one.
    pub fn get_object(&self, key: &str) -> Option<RawObject> {
        self.get(key).and_then(|v| RawObject::from_raw(v).ok())
    }

    /// Whether the member exists (even as `null`).
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Replaces a member in place, or appends it.
    pub fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.entries.push((intern(key), value)),
        }
    }

    /// Sets a member to a serializable value.
    pub fn set_value<T: serde::Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        self.set(key, raw(value));
    }

    /// Removes a member.
    pub fn remove(&mut self, key: &str) -> Option<Box<RawValue>> {
        let at = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(at).1)
    }

    /// The members in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), &**v))
    }

    /// Whether the object has no members.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the JSON text of the object.
    pub fn write_to(&self, out: &mut String) {
        out.push('{');
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(out, k);
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
    }

    /// The object as JSON text.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.text_len());
        self.write_to(&mut out);
        out
    }

    /// About the length of the JSON text (exact unless a member name needs escapes), so that
    /// a writer can size its buffer once.
    pub(crate) fn text_len(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>()
            + 2
    }

    /// The object as a raw value.
    pub fn to_raw(&self) -> Box<RawValue> {
        RawValue::from_string(self.to_json()).expect("a RawObject writes valid JSON")
    }
}

/// Appends `s` as a JSON string, as `serde_json` writes it. Member names, ids and digests
/// rarely need escapes, so the common case is a check of eight bytes at a time and a copy.
pub fn push_json_str(out: &mut String, s: &str) {
    if needs_escape(s.as_bytes()) {
        out.push_str(&serde_json::to_string(s).expect("a string serializes"));
    } else {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// Whether a JSON string needs an escape: a quote, a backslash or a control character.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    // A byte of `v` is below `n` (n <= 0x80): the classic word-at-a-time test, exact as a
    // yes/no answer for the word.
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let v = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let hit = below(v, 0x20)
            | below(v ^ (ONES * u64::from(b'"')), 1)
            | below(v ^ (ONES * u64::from(b'\\')), 1);
        if hit != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b == b'"' || b == b'\\' || b < 0x20)
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawObject, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(Key(key)) = map.next_key::<Key>()? {
                    let value: Box<RawValue> = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(RawObject { entries })
            }
        }
        d.deserialize_map(ObjectVisitor)
    }
}

/// Member names MCP messages repeat, kept without an allocation when read or set.
const KNOWN_KEYS: [&str; 26] = [
    "jsonrpc",
    "id",
    "method",
    "params",
    "result",
    "error",
    "code",
    "message",
    "data",
    "name",
    "arguments",
    "_meta",
    "progressToken",
    "progress",
    "total",
    "content",
    "type",
    "text",
    "isError",
    "structuredContent",
    "cursor",
    "nextCursor",
    "tools",
    "uri",
    "requestId",
    "reason",
];

fn known(key: &str) -> Option<&'static str> {
    KNOWN_KEYS.iter().find(|k| **k == key).copied()
}

fn intern(key: &str) -> Cow<'static, str> {
    known(key).map_or_else(|| Cow::Owned(key.to_owned()), Cow::Borrowed)
}

/// A member name as read: one of [`KNOWN_KEYS`] or a copy.
struct Key(Cow<'static, str>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(Key(intern(key)))
            }
            fn visit_string<E: serde::de::Error>(self, key: String) -> Result<Key, E> {
                Ok(Key(known(&key).map_or(Cow::Owned(key), Cow::Borrowed)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Serializes a value into a raw JSON value.
pub fn raw<T: serde::Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("serializable to JSON")
}

/// A JSON string as a raw value.
pub fn raw_string(s: &str) -> Box<RawValue> {
    raw(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_members_and_their_bytes_survive_an_edit() {
        let text = r#"{"a": 1.50, "b":{"x" : [1,2]},"c":"\u00e9"}"#;
        let mut obj = RawObject::parse(text).unwrap();
        obj.set("a", raw(&2));
        assert_eq!(obj.to_json(), r#"{"a":2,"b":{"x" : [1,2]},"c":"\u00e9"}"#);
    }

    #[test]
    fn member_names_are_escaped_when_they_must_be() {
        let text = r#"{"plain":1,"q\"uote":2,"back\\slash":3,"tab\t":4,"\u00e9":5}"#;
        let obj = RawObject::parse(text).unwrap();
        let again: serde_json::Value = serde_json::from_str(&obj.to_json()).unwrap();
        assert_eq!(
            again,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
        assert_eq!(
            obj.to_json(),
            r#"{"plain":1,"q\"uote":2,"back\\slash":3,"tab\t":4,"é":5}"#
        );
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let json = |s: &str| {
            let mut out = String::new();
            push_json_str(&mut out, s);
            out
        };
        // Every character that needs an escape, and some that do not (DEL, non-ASCII), at
        // every position of a string spanning two words and a remainder.
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', ' ', '\u{7f}', 'é', '€'] {
            for at in 0..19 {
                let mut s: String = "abcdefghijklmnopqr".into();
                s.insert(at, special);
                assert_eq!(json(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
            }
        }
        assert_eq!(json(""), "\"\"");
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_written_as_serde_json_writes_it(s in "\\PC*|[\"\\\\\\x00-\\x7f]{0,40}") {
            let mut out = String::new();
            push_json_str(&mut out, &s);
            proptest::prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
        }
    }

    #[test]
    fn set_appends_a_missing_member() {
        let mut obj = RawObject::parse("{}").unwrap();
        obj.set_value("k", "v");
        assert_eq!(obj.get_str("k").as_deref(), Some("v"));
        assert_eq!(obj.to_json(), r#"{"k":"v"}"#);
    }
}
