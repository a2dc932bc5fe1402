//! Words: quoting, `$'...'` decoding, parameter expansion, command and process substitution,
//! arithmetic. Quoting decides what a word *is* (`r''m` is `rm`), so it is decoded exactly as
//! bash does; where bash and POSIX shells differ, the reading that finds more code wins.

use crate::ast::*;
use crate::error::ParseError;
use crate::parse::{MAX_DEPTH, Parser, R, is_meta, two_pass};

/// Where double-quote-like text is being read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Inside `"..."`.
    Dq,
    /// An unquoted here-document body: like `"..."`, but `"` is plain text and it ends at EOF.
    Heredoc,
}

/// Collects word parts, merging runs of literal or quoted text.
#[derive(Default)]
pub(crate) struct Parts {
    parts: Vec<WordPart>,
    lit: String,
}

impl Parts {
    fn lit(&mut self, c: char) {
        self.lit.push(c);
    }

    fn push(&mut self, part: WordPart) {
        self.flush();
        match (self.parts.last_mut(), part) {
            (Some(WordPart::Quoted(a)), WordPart::Quoted(b)) => a.push_str(&b),
            (_, part) => self.parts.push(part),
        }
    }

    fn flush(&mut self) {
        if !self.lit.is_empty() {
            self.parts
                .push(WordPart::Literal(std::mem::take(&mut self.lit)));
        }
    }

    fn finish(mut self) -> Vec<WordPart> {
        self.flush();
        self.parts
    }

    /// Whether the text so far is exactly `NAME=` or `NAME+=` (before an array's `(`).
    fn is_assign_prefix(&self) -> bool {
        if !self.parts.is_empty() {
            return false;
        }
        let name = self
            .lit
            .strip_suffix("+=")
            .or_else(|| self.lit.strip_suffix('='))
            .unwrap_or("");
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }
}

impl Parser<'_> {
    /// An unquoted word; empty when the cursor is at a delimiter.
    pub(crate) fn word(&mut self) -> R<Word> {
        self.word_in(false, false)
    }

    /// The right-hand side of `=~` in `[[ ]]`: `(`, `)` and `|` belong to the regex.
    pub(crate) fn regex_word(&mut self) -> R<Word> {
        self.word_in(true, false)
    }

    /// `decl`: the command is `declare`/`local`/..., where `NAME=(a b)` is an array.
    pub(crate) fn word_in(&mut self, regex: bool, decl: bool) -> R<Word> {
        let mut parts = Parts::default();
        let mut parens = 0usize;
        while let Some(c) = self.peek() {
            match c {
                '<' | '>' if self.peek_at(1) == Some('(') => {
                    self.pos += 2;
                    let script = self.substitution_body()?;
                    parts.push(WordPart::ProcessSub {
                        output: c == '>',
                        script,
                    });
                }
                '(' if regex => {
                    parens += 1;
                    parts.lit(c);
                    self.pos += 1;
                }
                ')' if regex && parens > 0 => {
                    parens -= 1;
                    parts.lit(c);
                    self.pos += 1;
                }
                '|' | '<' | '>' if regex && parens > 0 => {
                    parts.lit(c);
                    self.pos += 1;
                }
                '|' if regex => {
                    parts.lit(c);
                    self.pos += 1;
                }
                c if is_meta(c) => break,
                '\\' => {
                    match self.peek_at(1) {
                        None => parts.lit('\\'),
                        Some('\n') => self.continuation(false),
                        Some(next) => parts.push(WordPart::Quoted(next.to_string())),
                    }
                    self.pos += 2;
                }
                '\'' => {
                    let text = self.single_quoted()?;
                    parts.push(WordPart::Quoted(text));
                }
                '"' => {
                    self.pos += 1;
                    let inner = self.dq_parts(Mode::Dq)?;
                    parts.push(WordPart::DoubleQuoted(inner));
                }
                '$' => self.dollar(&mut parts, false)?,
                '`' => self.backquote(&mut parts, false)?,
                '=' if decl && self.peek_at(1) == Some('(') => {
                    parts.lit('=');
                    self.pos += 1;
                    if parts.is_assign_prefix() {
                        self.pos += 1;
                        let elements = self.array_elements()?;
                        parts.push(WordPart::Array(elements));
                    }
                }
                _ => {
                    parts.lit(c);
                    self.pos += 1;
                }
            }
        }
        self.pos = self.pos.min(self.s.len());
        Ok(Word {
            parts: parts.finish(),
        })
    }

    fn single_quoted(&mut self) -> R<String> {
        let start = self.pos + 1;
        let Some(len) = self
            .s
            .get(start..)
            .and_then(|rest| rest.iter().position(|&c| c == '\''))
        else {
            return Err(ParseError::UnterminatedSingleQuote);
        };
        self.pos = start + len + 1;
        Ok(self.s[start..start + len].iter().collect())
    }

    /// The inside of `"..."` (after the opening quote) or of an unquoted here-document.
    pub(crate) fn dq_parts(&mut self, mode: Mode) -> R<Vec<WordPart>> {
        let mut parts = Parts::default();
        loop {
            let Some(c) = self.peek() else {
                return match mode {
                    Mode::Heredoc => Ok(parts.finish()),
                    Mode::Dq => Err(ParseError::UnterminatedDoubleQuote),
                };
            };
            match c {
                '"' if mode == Mode::Dq => {
                    self.pos += 1;
                    break;
                }
                '\\' => match self.peek_at(1) {
                    Some('\n') => {
                        self.continuation(false);
                        self.pos += 2;
                    }
                    Some(n) if matches!(n, '$' | '`' | '\\') || (n == '"' && mode == Mode::Dq) => {
                        parts.lit(n);
                        self.pos += 2;
                    }
                    _ => {
                        parts.lit('\\');
                        self.pos += 1;
                    }
                },
                '$' => self.dollar(&mut parts, true)?,
                '`' => self.backquote(&mut parts, mode == Mode::Dq)?,
                _ => {
                    parts.lit(c);
                    self.pos += 1;
                }
            }
        }
        Ok(parts.finish())
    }

    /// Everything that starts with `$`. A `$` that starts nothing is literal text.
    fn dollar(&mut self, parts: &mut Parts, in_dq: bool) -> R<()> {
        match self.peek_at(1) {
            Some('\'') if !in_dq => {
                self.pos += 2;
                let text = self.ansi_c()?;
                parts.push(WordPart::Quoted(text));
            }
            Some('"') if !in_dq => {
                self.pos += 2;
                let inner = self.dq_parts(Mode::Dq)?;
                parts.push(WordPart::DoubleQuoted(inner));
            }
            Some('(') => {
                if self.peek_at(2) == Some('(') && self.arith_ahead(self.pos + 3) {
                    self.pos += 3;
                    let arith = self.arith_until(Some("))"))?;
                    parts.push(WordPart::Arith(arith));
                } else {
                    self.pos += 2;
                    let script = self.substitution_body()?;
                    parts.push(WordPart::CommandSub(script));
                }
            }
            Some('[') => {
                self.pos += 2;
                let arith = self.arith_until(Some("]"))?;
                parts.push(WordPart::Arith(arith));
            }
            Some('{') => {
                self.pos += 2;
                let param = self.braced_param(in_dq)?;
                parts.push(WordPart::Param(Box::new(param)));
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                self.pos += 1;
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.pos += 1;
                }
                let name = self.s[start..self.pos].iter().collect();
                parts.push(WordPart::Param(Box::new(plain_param(name))));
            }
            Some(c) if c.is_ascii_digit() || "@*#?-$!".contains(c) => {
                self.pos += 2;
                parts.push(WordPart::Param(Box::new(plain_param(c.to_string()))));
            }
            _ => {
                parts.lit('$');
                self.pos += 1;
            }
        }
        Ok(())
    }

    /// The script of `$(...)`, `<(...)` or `>(...)`, after the opening parenthesis.
    pub(crate) fn substitution_body(&mut self) -> R<Script> {
        let pending = self.pending_count();
        self.in_substitution += 1;
        let script = self.list(&[")"]);
        self.in_substitution -= 1;
        let script = script?;
        if self.peek() != Some(')') {
            return Err(if self.pos >= self.s.len() {
                ParseError::UnterminatedSubstitution
            } else {
                self.unexpected()
            });
        }
        self.pos += 1;
        if self.pending_count() > pending {
            return Err(ParseError::HeredocInSubstitution);
        }
        Ok(script)
    }

    /// `` `...` ``: backslash keeps its meaning only before `$`, `` ` ``, `\` (and `"` inside
    /// double quotes); the rest is parsed as a script of its own.
    fn backquote(&mut self, parts: &mut Parts, in_dq: bool) -> R<()> {
        let start = self.pos;
        self.pos += 1;
        let mut content = Vec::new();
        loop {
            match self.peek() {
                None => return Err(ParseError::UnterminatedBackquote),
                Some('`') => {
                    self.pos += 1;
                    break;
                }
                Some('\\') => match self.peek_at(1) {
                    Some(n) if matches!(n, '$' | '`' | '\\') || (in_dq && n == '"') => {
                        content.push(n);
                        self.pos += 2;
                    }
                    _ => {
                        content.push('\\');
                        self.pos += 1;
                    }
                },
                Some(c) => {
                    content.push(c);
                    self.pos += 1;
                }
            }
        }
        if self.depth + 1 > MAX_DEPTH {
            return Err(ParseError::TooDeep);
        }
        let script = two_pass(&content, self.base + start + 1, self.depth + 1, |p| {
            p.program()
        })?;
        parts.push(WordPart::CommandSub(script));
        Ok(())
    }

    /// `$'...'` after the opening quote, with escapes decoded. A NUL ends the string, as in
    /// bash (`$'rm\0x'` is `rm`).
    fn ansi_c(&mut self) -> R<String> {
        let mut out = Ansi::default();
        loop {
            let Some(c) = self.peek() else {
                return Err(ParseError::UnterminatedSingleQuote);
            };
            self.pos += 1;
            if c == '\'' {
                break;
            }
            if c != '\\' {
                out.char(c);
                continue;
            }
            let Some(e) = self.peek() else {
                return Err(ParseError::UnterminatedSingleQuote);
            };
            self.pos += 1;
            match e {
                'a' => out.char('\x07'),
                'b' => out.char('\x08'),
                'e' | 'E' => out.char('\x1b'),
                'f' => out.char('\x0c'),
                'n' => out.char('\n'),
                'r' => out.char('\r'),
                't' => out.char('\t'),
                'v' => out.char('\x0b'),
                '\\' | '\'' | '"' | '?' => out.char(e),
                '0'..='7' => {
                    let mut value = e.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        match self.peek().and_then(|d| d.to_digit(8)) {
                            Some(d) => {
                                value = value * 8 + d;
                                self.pos += 1;
                            }
                            None => break,
                        }
                    }
                    out.byte((value & 0xff) as u8);
                }
                'x' => match self.hex(2) {
                    Some(v) => out.byte((v & 0xff) as u8),
                    None => out.str("\\x"),
                },
                'u' | 'U' => match self.hex(if e == 'u' { 4 } else { 8 }) {
                    Some(v) => out.char(char::from_u32(v).unwrap_or('\u{fffd}')),
                    None => {
                        out.char('\\');
                        out.char(e);
                    }
                },
                'c' => match self.peek() {
                    Some(x) if x != '\'' => {
                        self.pos += 1;
                        let v = if x == '?' { 0x7f } else { (x as u32) & 0x1f };
                        out.char(char::from_u32(v).unwrap_or('\u{fffd}'));
                    }
                    _ => out.str("\\c"),
                },
                other => {
                    out.char('\\');
                    out.char(other);
                }
            }
        }
        Ok(String::from_utf8_lossy(&out.bytes).into_owned())
    }

    fn hex(&mut self, max: usize) -> Option<u32> {
        let mut value = 0u32;
        let mut n = 0;
        while n < max {
            match self.peek().and_then(|d| d.to_digit(16)) {
                Some(d) => {
                    value = value.wrapping_mul(16).wrapping_add(d);
                    self.pos += 1;
                    n += 1;
                }
                None => break,
            }
        }
        (n > 0).then_some(value)
    }

    /// `${...}` after the `${`.
    fn braced_param(&mut self, in_dq: bool) -> R<Param> {
        self.enter()?;
        let start = self.pos;
        let bad = |p: &Self| {
            let text: String = p.s[start..].iter().take(12).collect();
            ParseError::BadParameter(text)
        };
        let mut length = false;
        let mut indirect = false;
        let special = |c: Option<char>| {
            c.is_some_and(|c| c.is_ascii_alphanumeric() || "_@*#?-$!".contains(c))
        };
        match self.peek() {
            Some('#') if self.peek_at(1) != Some('}') && special(self.peek_at(1)) => {
                length = true;
                self.pos += 1;
            }
            Some('!') if self.peek_at(1) != Some('}') => {
                indirect = true;
                self.pos += 1;
            }
            _ => {}
        }
        let name: String = match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let from = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.pos += 1;
                }
                self.s[from..self.pos].iter().collect()
            }
            Some(c) if c.is_ascii_digit() => {
                let from = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                self.s[from..self.pos].iter().collect()
            }
            Some(c) if "@*#?-$!".contains(c) => {
                self.pos += 1;
                c.to_string()
            }
            None => return Err(ParseError::UnterminatedParameter),
            _ => return Err(bad(self)),
        };
        let subscript = if self.peek() == Some('[') {
            self.pos += 1;
            Some(self.arith_until(Some("]"))?)
        } else {
            None
        };
        let mut param = Param {
            name,
            length,
            indirect,
            subscript,
            op: None,
            arg: None,
        };
        if self.peek() == Some('}') {
            self.pos += 1;
            self.leave();
            return Ok(param);
        }
        if indirect && matches!(self.peek(), Some('*' | '@')) && self.peek_at(1) == Some('}') {
            param.op = self.peek().map(String::from);
            self.pos += 2;
            self.leave();
            return Ok(param);
        }
        const OPS: &[&str] = &[
            ":-", ":=", ":?", ":+", "##", "%%", "//", "/#", "/%", "^^", ",,", "-", "=", "?", "+",
            "#", "%", "/", "^", ",", "@", ":",
        ];
        let Some(op) = OPS.iter().find(|op| self.starts_with(op)) else {
            return Err(if self.pos >= self.s.len() {
                ParseError::UnterminatedParameter
            } else {
                bad(self)
            });
        };
        self.pos += op.len();
        param.op = Some((*op).to_string());
        param.arg = Some(self.param_word(in_dq)?);
        self.leave();
        Ok(param)
    }

    /// The word after a `${name op` up to the closing `}`. As in bash, a plain `{` does not
    /// nest (`${x:-{a}b}` ends at the first `}`); a nested `${...}` does.
    ///
    /// Inside double quotes, bash skips over `'...'` when it looks for the closing `}` but then
    /// expands what is between the quotes like the rest of the word (`$(...)` in it runs). Such
    /// text is accepted only when it holds nothing either reading would treat specially; `$'...'`
    /// is decoded there as bash 5 does, when it holds nothing special either.
    fn param_word(&mut self, in_dq: bool) -> R<Word> {
        let mut parts = Parts::default();
        loop {
            let Some(c) = self.peek() else {
                return Err(ParseError::UnterminatedParameter);
            };
            match c {
                '}' => {
                    self.pos += 1;
                    break;
                }
                '\\' if in_dq => match self.peek_at(1) {
                    Some('\n') => {
                        self.continuation(false);
                        self.pos += 2;
                    }
                    Some(n) if matches!(n, '$' | '`' | '\\' | '"' | '}') => {
                        parts.lit(n);
                        self.pos += 2;
                    }
                    _ => {
                        parts.lit('\\');
                        self.pos += 1;
                    }
                },
                '\\' => {
                    match self.peek_at(1) {
                        None => parts.lit('\\'),
                        Some('\n') => self.continuation(false),
                        Some(n) => parts.push(WordPart::Quoted(n.to_string())),
                    }
                    self.pos += 2;
                }
                '\'' if in_dq => {
                    let text = self.plain_quoted_in_dq(self.pos + 1)?;
                    parts.lit('\'');
                    text.chars().for_each(|c| parts.lit(c));
                    parts.lit('\'');
                    self.pos += text.chars().count() + 2;
                }
                '\'' => {
                    let text = self.single_quoted()?;
                    parts.push(WordPart::Quoted(text));
                }
                '$' if in_dq && self.peek_at(1) == Some('\'') => {
                    self.ansi_c_in_dq(self.pos + 2)?;
                    self.pos += 2;
                    let text = self.ansi_c()?;
                    parts.push(WordPart::Quoted(text));
                }
                '"' => {
                    self.pos += 1;
                    let inner = self.dq_parts(Mode::Dq)?;
                    parts.push(WordPart::DoubleQuoted(inner));
                }
                '$' => self.dollar(&mut parts, in_dq)?,
                '`' => self.backquote(&mut parts, in_dq)?,
                _ => {
                    parts.lit(c);
                    self.pos += 1;
                }
            }
        }
        self.pos = self.pos.min(self.s.len());
        Ok(Word {
            parts: parts.finish(),
        })
    }

    /// The text from `start` to the next `'`, for quotes inside `"${...}"`, if it holds
    /// nothing that bash's two readings of such quotes (skipped while finding the `}`, then
    /// expanded) could disagree on.
    fn plain_quoted_in_dq(&self, start: usize) -> R<String> {
        let Some(len) = self
            .s
            .get(start..)
            .and_then(|rest| rest.iter().position(|&c| c == '\''))
        else {
            return Err(ParseError::UnterminatedSingleQuote);
        };
        let text: String = self.s[start..start + len].iter().collect();
        if text.contains(['$', '`', '\\', '"', '{', '}']) {
            return Err(ParseError::Unsupported(
                "this quoting inside `${...}` inside double quotes",
            ));
        }
        Ok(text)
    }

    /// Checks the `$'...'` starting at `start` (after its quote) inside `"${...}"`: bash 5
    /// decodes it, but older versions read it as `$` and plain quotes, so it must hold nothing
    /// that would matter there.
    fn ansi_c_in_dq(&self, start: usize) -> R<()> {
        let mut i = start;
        loop {
            match self.s.get(i) {
                None => return Err(ParseError::UnterminatedSingleQuote),
                Some('\'') => return Ok(()),
                Some('\\') if self.s.get(i + 1) == Some(&'\'') => break,
                Some('\\') => i += 2,
                Some('$' | '`' | '"' | '{' | '}') => break,
                Some(_) => i += 1,
            }
        }
        Err(ParseError::Unsupported(
            "this quoting inside `${...}` inside double quotes",
        ))
    }

    /// Arithmetic text up to `close` (at parenthesis and bracket level 0), or to the end of
    /// input when `close` is `None`.
    pub(crate) fn arith_until(&mut self, close: Option<&str>) -> R<Arith> {
        self.enter()?;
        let mut parts = Parts::default();
        let mut parens = 0usize;
        let mut brackets = 0usize;
        loop {
            if parens == 0 && brackets == 0 && close.is_some_and(|c| self.starts_with(c)) {
                self.pos += close.map_or(0, str::len);
                break;
            }
            let Some(c) = self.peek() else {
                if close.is_none() {
                    break;
                }
                return Err(ParseError::UnterminatedArithmetic);
            };
            match c {
                '(' => parens += 1,
                ')' if parens == 0 => return Err(ParseError::Unexpected(")".into())),
                ')' => parens -= 1,
                '[' => brackets += 1,
                ']' if brackets == 0 => return Err(ParseError::Unexpected("]".into())),
                ']' => brackets -= 1,
                '$' => {
                    self.dollar(&mut parts, true)?;
                    continue;
                }
                '`' => {
                    self.backquote(&mut parts, false)?;
                    continue;
                }
                '"' => {
                    self.pos += 1;
                    let inner = self.dq_parts(Mode::Dq)?;
                    parts.push(WordPart::DoubleQuoted(inner));
                    continue;
                }
                '\'' => return Err(ParseError::Unsupported("a single quote inside arithmetic")),
                '\\' if self.peek_at(1) == Some('\n') => {
                    self.continuation(false);
                    self.pos += 2;
                    continue;
                }
                _ => {}
            }
            parts.lit(c);
            self.pos += 1;
        }
        self.leave();
        Ok(Arith {
            parts: parts.finish(),
        })
    }
}

/// Bytes decoded from `$'...'`; everything after a NUL is dropped.
#[derive(Default)]
struct Ansi {
    bytes: Vec<u8>,
    cut: bool,
}

impl Ansi {
    fn byte(&mut self, b: u8) {
        self.cut |= b == 0;
        if !self.cut {
            self.bytes.push(b);
        }
    }

    fn char(&mut self, c: char) {
        let mut buf = [0u8; 4];
        for &b in c.encode_utf8(&mut buf).as_bytes() {
            self.byte(b);
        }
    }

    fn str(&mut self, s: &str) {
        s.chars().for_each(|c| self.char(c));
    }
}

fn plain_param(name: String) -> Param {
    Param {
        name,
        length: false,
        indirect: false,
        subscript: None,
        op: None,
        arg: None,
    }
}
