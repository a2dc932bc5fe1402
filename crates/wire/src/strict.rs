use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::{ErrorCode, WireError};

/// Bounds on one message. The defaults suit MCP traffic: large tool results fit, abuse does not.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and objects.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: 4 * 1024 * 1024,
            max_depth: 64,
        }
    }
}

/// Checks that `bytes` hold exactly one JSON value, in UTF-8, within `limits`, with no object
/// that repeats a key.
///
/// Duplicate keys matter for a gateway: if the gateway read the first `"name"` and the upstream
/// the last, a policy could be checked against one tool while another one runs.
pub fn validate(bytes: &[u8], limits: &Limits) -> Result<(), WireError> {
    if bytes.len() > limits.max_bytes {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            format!(
                "message of {} bytes exceeds the limit of {} bytes",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = Check {
        depth: 0,
        max_depth: limits.max_depth,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    result.map_err(|e| {
        let text = e.to_string();
        if text.starts_with(DUPLICATE) || text.starts_with(TOO_DEEP) {
            WireError::new(ErrorCode::InvalidRequest, text)
        } else {
            WireError::new(ErrorCode::Parse, format!("parse error: {text}"))
        }
    })
}

/// Most keys an object may have for [`plainly_strict`] to judge it; a larger one goes to
/// [`validate`], whose set keeps the check linear.
const FEW_KEYS: usize = 32;

/// The fast half of [`validate`] for the common case, in one pass over the bytes with no
/// parsing: `true` when, *if* `bytes` are valid JSON, no object repeats a key and nesting
/// stays within `max_depth`. It does not check the syntax (the parser that follows does),
/// and it answers `false` whenever it cannot tell cheaply (a key with escapes, an object with
/// many keys, deep nesting, unbalanced brackets), which sends the caller to [`validate`].
pub(crate) fn plainly_strict(bytes: &[u8], max_depth: usize) -> bool {
    // On the stack, so that the common message costs no allocation: the open containers (`{`
    // or `[`), where each open object's keys start in `keys`, and the keys of the open
    // objects. A message that needs more goes to `validate`.
    const DEEP: usize = 32;
    const KEYS: usize = 128;
    let max_depth = max_depth.min(DEEP);
    let mut open = [0u8; DEEP];
    let mut object_starts = [0usize; DEEP];
    // Where each key is in `bytes` (start, end): zeroed memory is cheaper to set up than
    // slices.
    let mut keys = [(0u32, 0u32); KEYS];
    if bytes.len() > u32::MAX as usize {
        return false;
    }
    let (mut depth, mut objects, mut key_count) = (0, 0, 0);
    let mut expect_key = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                let mut escaped = false;
                i = start;
                loop {
                    match bytes.get(i) {
                        None => return false,
                        Some(b'"') => break,
                        Some(b'\\') => {
                            escaped = true;
                            i += 2;
                        }
                        Some(_) => i += 1,
                    }
                }
                if expect_key {
                    let key = &bytes[start..i];
                    let first = object_starts[objects - 1];
                    if escaped
                        || key_count == KEYS
                        || key_count - first >= FEW_KEYS
                        || keys[first..key_count]
                            .iter()
                            .any(|&(s, e)| &bytes[s as usize..e as usize] == key)
                    {
                        return false;
                    }
                    keys[key_count] = (start as u32, i as u32);
                    key_count += 1;
                    expect_key = false;
                }
            }
            c @ (b'{' | b'[') => {
                if depth >= max_depth {
                    return false;
                }
                open[depth] = c;
                depth += 1;
                expect_key = c == b'{';
                if expect_key {
                    object_starts[objects] = key_count;
                    objects += 1;
                }
            }
            b'}' => {
                if depth == 0 || open[depth - 1] != b'{' {
                    return false;
                }
                depth -= 1;
                objects -= 1;
                key_count = object_starts[objects];
                expect_key = false;
            }
            b']' => {
                if depth == 0 || open[depth - 1] != b'[' {
                    return false;
                }
                depth -= 1;
                expect_key = false;
            }
            b',' => expect_key = depth > 0 && open[depth - 1] == b'{',
            _ => {}
        }
        i += 1;
    }
    depth == 0
}

const DUPLICATE: &str = "duplicate key";
const TOO_DEEP: &str = "nesting deeper than";

#[derive(Clone, Copy)]
struct Check {
    depth: usize,
    max_depth: usize,
}

impl Check {
    fn child<E: de::Error>(&self) -> Result<Check, E> {
        if self.depth >= self.max_depth {
            return Err(E::custom(format_args!(
                "{TOO_DEEP} {} levels",
                self.max_depth
            )));
        }
        Ok(Check {
            depth: self.depth + 1,
            max_depth: self.max_depth,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Check {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let child = self.child::<A::Error>()?;
        while seq.next_element_seed(child)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let child = self.child::<A::Error>()?;
        // Most MCP objects are small: a linear scan over keys kept on the stack beats hashing
        // (and allocating) until they are not.
        const FEW: usize = 16;
        let mut few: [Option<Cow<'de, str>>; FEW] = Default::default();
        let mut count = 0;
        let mut many: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(Key(key)) = map.next_key()? {
            let seen = match &mut many {
                Some(set) => !set.insert(key.clone()),
                None if count < FEW => {
                    let seen = few[..count].iter().any(|k| k.as_deref() == Some(&*key));
                    few[count] = Some(key.clone());
                    count += 1;
                    seen
                }
                None => {
                    let mut set: HashSet<_> = few.iter_mut().filter_map(Option::take).collect();
                    let seen = !set.insert(key.clone());
                    many = Some(set);
                    seen
                }
            };
            if seen {
                return Err(de::Error::custom(format_args!(
                    "{DUPLICATE} {key:?} in an object"
                )));
            }
            map.next_value_seed(child)?;
        }
        Ok(())
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &[u8]) -> Result<(), WireError> {
        validate(text, &Limits::default())
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let err = check(br#"{"a":{"b":1,"b":2}}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(
            err.message.contains("duplicate key \"b\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn escaped_duplicate_keys_are_refused() {
        let err = check(br#"{"name":1,"n\u0061me":2}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn duplicates_in_large_objects_are_found() {
        let mut text = String::from("{");
        for i in 0..40 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str("\"k3\":0}");
        assert!(check(text.as_bytes()).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let text = "[".repeat(100_000);
        let err = check(text.as_bytes()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(err.message.contains("nesting"));
    }

    #[test]
    fn invalid_utf8_is_a_parse_error() {
        let err = check(b"{\"a\":\"\xff\"}").unwrap_err();
        assert_eq!(err.code, ErrorCode::Parse);
    }

    #[test]
    fn trailing_garbage_is_a_parse_error() {
        assert_eq!(check(b"{} {}").unwrap_err().code, ErrorCode::Parse);
    }

    #[test]
    fn the_fast_check_agrees_with_the_full_one_on_valid_json() {
        let cases: &[&[u8]] = &[
            br#"{"a":1,"b":{"a":2,"c":[{"a":3},{"a":4}]},"c":"}\"{,"}"#,
            br#"{"a":{"b":1},"b":{"b":1}}"#,
            br#"{"a":{"b":1,"b":2}}"#,
            br#"{"a":[{"x":1,"x":2}]}"#,
            br#"{"k":"a","k":"b"}"#,
            br#"{"name":1,"n\u0061me":2}"#,
            br#"[[[[1]]]]"#,
            br#"{"a":"[[[[[[[[[[[[["}"#,
            br#"{"":1,"":2}"#,
            br#"{"a\\":1,"a":2}"#,
        ];
        let shallow = Limits {
            max_bytes: 1 << 20,
            max_depth: 3,
        };
        for text in cases {
            for limits in [Limits::default(), shallow] {
                let full = validate(text, &limits).is_ok();
                let fast = plainly_strict(text, limits.max_depth);
                // The fast check may send a good message to the full one, never pass a bad one.
                assert!(
                    !fast || full,
                    "fast check passed {:?} that validate refuses",
                    String::from_utf8_lossy(text)
                );
            }
        }
        assert!(plainly_strict(br#"{"a":1,"b":{"a":2}}"#, 64));
        assert!(!plainly_strict(br#"{"a":1,"a":2}"#, 64));
        assert!(!plainly_strict(br#"[[["#, 64));
        assert!(!plainly_strict(br#"[[[1]]]"#, 2));
        // Past what it keeps on the stack it defers to the full check, which accepts.
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        assert!(!plainly_strict(deep.as_bytes(), 64));
        assert!(validate(deep.as_bytes(), &Limits::default()).is_ok());
        let wide = format!(
            "{{{}}}",
            (0..40)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(!plainly_strict(wide.as_bytes(), 64));
        assert!(validate(wide.as_bytes(), &Limits::default()).is_ok());
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let limits = Limits {
            max_bytes: 10,
            max_depth: 8,
        };
        assert!(validate(b"{\"aaaaaaaaaaaa\":1}", &limits).is_err());
    }
}
