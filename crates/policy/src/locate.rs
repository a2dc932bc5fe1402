//! Where things are in the policy text: JSON pointer -> line and column, and duplicate keys.
//!
//! `serde_json` forgets positions once it has built a value, and silently keeps the last of
//! two equal keys. One extra pass over the (already valid) text refuses duplicates: a policy
//! must never mean two things. Positions of every member are recorded only when there are
//! errors to place ([`Positions::scan`]); a valid policy, the common case, skips that work.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// Positions of every value in a JSON text, by JSON pointer.
#[derive(Debug, Default)]
pub struct Positions {
    /// Byte offset of each member's key (for object members) or of the value (array items).
    at: HashMap<String, usize>,
    /// Line starts, for offset -> line:column.
    lines: Vec<usize>,
    text_len: usize,
    /// Pointers of keys seen twice in one object, with the second occurrence's offset.
    pub duplicates: Vec<(String, usize)>,
}

impl Positions {
    /// Scans `text`, which must already be valid JSON, for duplicate keys only.
    pub fn duplicates(text: &str) -> Positions {
        Positions::scan_with(text, false)
    }

    /// Scans `text`, which must already be valid JSON, recording every member's position.
    pub fn scan(text: &str) -> Positions {
        Positions::scan_with(text, true)
    }

    fn scan_with(text: &str, record: bool) -> Positions {
        let mut lines = vec![0];
        lines.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        let mut scanner = Scanner {
            text: text.as_bytes(),
            pos: 0,
            record,
            out: Positions {
                lines,
                text_len: text.len(),
                ..Positions::default()
            },
        };
        let mut pointer = String::new();
        scanner.skip_ws();
        if record {
            scanner.out.at.insert(String::new(), scanner.pos);
        }
        scanner.value(&mut pointer, 0);
        scanner.out
    }

    /// Line and column (both from 1) of the value at `pointer`, or of its nearest ancestor.
    pub fn line_col(&self, pointer: &str) -> (usize, usize) {
        let mut p = pointer;
        loop {
            if let Some(&offset) = self.at.get(p) {
                return self.offset_line_col(offset);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return (1, 1),
            }
        }
    }

    /// Line and column of a byte offset.
    pub fn offset_line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text_len);
        let line = self.lines.partition_point(|&start| start <= offset);
        (line, offset - self.lines[line - 1] + 1)
    }
}

/// Escapes one reference token of a JSON pointer (RFC 6901).
pub fn escape_token(token: &str) -> Cow<'_, str> {
    if token.contains(['~', '/']) {
        Cow::Owned(token.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(token)
    }
}

/// Nesting beyond this is not walked (serde_json refuses beyond 128 anyway).
const MAX_DEPTH: usize = 128;

struct Scanner<'a> {
    text: &'a [u8],
    pos: usize,
    record: bool,
    out: Positions,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> u8 {
        self.text.get(self.pos).copied().unwrap_or(0)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
    }

    fn value(&mut self, pointer: &mut String, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        self.skip_ws();
        match self.peek() {
            b'{' => self.object(pointer, depth),
            b'[' => self.array(pointer, depth),
            b'"' => {
                self.string();
            }
            _ => {
                while !matches!(self.peek(), b',' | b'}' | b']' | 0)
                    && !self.peek().is_ascii_whitespace()
                {
                    self.pos += 1;
                }
            }
        }
    }

    /// Skips a string and returns its decoded content (borrowed unless it has escapes).
    fn string(&mut self) -> Cow<'a, str> {
        let start = self.pos;
        let mut escaped = false;
        self.pos += 1;
        while self.pos < self.text.len() {
            match self.text[self.pos] {
                b'\\' => {
                    escaped = true;
                    self.pos += 2;
                }
                b'"' => {
                    self.pos += 1;
                    break;
                }
                _ => self.pos += 1,
            }
        }
        let end = self.pos.min(self.text.len());
        let text: &'a [u8] = self.text;
        let Ok(raw) = std::str::from_utf8(&text[start..end]) else {
            return Cow::Borrowed("");
        };
        if escaped {
            Cow::Owned(serde_json::from_str(raw).unwrap_or_default())
        } else {
            Cow::Borrowed(raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default())
        }
    }

    fn object(&mut self, pointer: &mut String, depth: usize) {
        self.pos += 1;
        let mut seen = HashSet::new();
        loop {
            self.skip_ws();
            match self.peek() {
                b'}' => {
                    self.pos += 1;
                    return;
                }
                b',' => {
                    self.pos += 1;
                    continue;
                }
                b'"' => {}
                _ => return,
            }
            let key_at = self.pos;
            let key = self.string();
            let len = pointer.len();
            pointer.push('/');
            pointer.push_str(&escape_token(&key));
            if !seen.insert(key) {
                self.out.duplicates.push((pointer.clone(), key_at));
            } else if self.record {
                self.out.at.insert(pointer.clone(), key_at);
            }
            self.skip_ws();
            if self.peek() == b':' {
                self.pos += 1;
            }
            self.value(pointer, depth + 1);
            pointer.truncate(len);
        }
    }

    fn array(&mut self, pointer: &mut String, depth: usize) {
        self.pos += 1;
        let mut index = 0usize;
        loop {
            self.skip_ws();
            match self.peek() {
                b']' => {
                    self.pos += 1;
                    return;
                }
                b',' => {
                    self.pos += 1;
                    continue;
                }
                0 => return,
                _ => {}
            }
            let len = pointer.len();
            pointer.push('/');
            pointer.push_str(itoa(index, &mut [0u8; 20]));
            if self.record {
                self.out.at.insert(pointer.clone(), self.pos);
            }
            self.value(pointer, depth + 1);
            pointer.truncate(len);
            index += 1;
        }
    }
}

/// `index` in decimal, without allocating.
fn itoa(mut index: usize, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (index % 10) as u8;
        index /= 10;
        if index == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_members_and_items() {
        let text = "{\n  \"tools\": {\n    \"a/b\": {\"deny_if\": [1, {\"op\": 2}]}\n  }\n}";
        let p = Positions::scan(text);
        assert_eq!(p.line_col("/tools"), (2, 3));
        assert_eq!(p.line_col("/tools/a~1b"), (3, 5));
        assert_eq!(p.line_col("/tools/a~1b/deny_if/1/op"), (3, 29));
        assert_eq!(p.line_col("/tools/a~1b/deny_if/1/missing"), (3, 28));
        assert!(p.duplicates.is_empty());
    }

    #[test]
    fn reports_duplicate_keys() {
        let p = Positions::duplicates(
            r#"{"a": 1, "b": {"c": 1, "c": 2}, "d": [{"e\u0066": 1, "ef": 2}]}"#,
        );
        assert_eq!(p.duplicates.len(), 2);
        assert_eq!(p.duplicates[0].0, "/b/c");
        assert_eq!(p.duplicates[1].0, "/d/0/ef");
        assert_eq!(p.offset_line_col(p.duplicates[0].1), (1, 24));
    }
}
