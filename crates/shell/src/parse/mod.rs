//! Recursive-descent parser for the POSIX shell command language plus the bash extensions
//! agents actually write (`[[ ]]`, `(( ))`, `$'...'`, `<(...)`, `|&`, `&>`, arrays, `coproc`,
//! `function`, `select`, `;&`). It works on chars, never panics, and refuses rather than
//! guesses: a construct it does not know is a [`ParseError`], which the rule denies.
//!
//! Here-document bodies follow the line that introduces them, after the parser has already
//! built the redirection. Rather than patching the tree afterwards, a text with here-documents
//! is parsed twice: the first pass collects the bodies in order, the second one hands them out.

mod grammar;

use crate::ast::*;
use crate::error::ParseError;

/// Longest input accepted, in bytes.
pub const MAX_INPUT: usize = 64 * 1024;
/// Deepest nesting accepted (compound commands, substitutions, `${...}`, nested scripts).
pub const MAX_DEPTH: usize = 32;

pub(crate) type R<T> = Result<T, ParseError>;

const RESERVED: &[&str] = &[
    "if", "then", "elif", "else", "fi", "do", "done", "case", "esac", "while", "until", "for",
    "in", "select", "function", "time", "coproc", "{", "}", "!", "[[", "]]",
];

/// Whether `word` is a shell reserved word.
pub(crate) fn is_reserved(word: &str) -> bool {
    RESERVED.contains(&word)
}

/// Parses a shell command string.
///
/// Refuses input over [`MAX_INPUT`] bytes, containing NUL (a C string would be cut there and
/// the shell would see something else), or nested deeper than [`MAX_DEPTH`].
pub fn parse(text: &str) -> Result<Script, ParseError> {
    parse_at_depth(text, 0)
}

pub(crate) fn parse_at_depth(text: &str, depth: usize) -> R<Script> {
    if text.len() > MAX_INPUT {
        return Err(ParseError::TooLong);
    }
    if text.contains('\0') {
        return Err(ParseError::NulByte);
    }
    let chars: Vec<char> = text.chars().collect();
    two_pass(&chars, 0, depth, |p| p.program())
}

/// Parses text that a shell evaluates as arithmetic, e.g. the value in `let 'a[$(id)]'`.
pub(crate) fn parse_arith_text(text: &str, depth: usize) -> R<Arith> {
    if text.len() > MAX_INPUT {
        return Err(ParseError::TooLong);
    }
    let chars: Vec<char> = text.chars().collect();
    two_pass(&chars, 0, depth, |p| p.arith_until(None))
}

/// Parses text the shell expands like an unquoted here-document body (`$x`, `$(...)`,
/// backquotes), e.g. the word list of `compgen -W`.
pub(crate) fn parse_expanded(text: &str, depth: usize) -> R<Word> {
    if text.len() > MAX_INPUT {
        return Err(ParseError::TooLong);
    }
    let chars: Vec<char> = text.chars().collect();
    two_pass(&chars, 0, depth, |p| {
        let parts = p.dq_parts(crate::word::Mode::Heredoc)?;
        Ok(Word {
            parts: vec![WordPart::DoubleQuoted(parts)],
        })
    })
}

/// Runs `run` over `chars`, twice when here-documents need their bodies handed back.
pub(crate) fn two_pass<T>(
    chars: &[char],
    base: usize,
    depth: usize,
    run: impl Fn(&mut Parser<'_>) -> R<T>,
) -> R<T> {
    if depth > MAX_DEPTH {
        return Err(ParseError::TooDeep);
    }
    let mut first = Parser::new(chars, base, depth, None);
    let out = run(&mut first)?;
    if let Some(e) = first.deferred.take() {
        return Err(e);
    }
    if first.bodies.is_empty() {
        return Ok(out);
    }
    let mut second = Parser::new(chars, base, depth, Some(first.bodies));
    let out = run(&mut second)?;
    match second.deferred.take() {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

struct Pending {
    delimiter: String,
    strip_tabs: bool,
    quoted: bool,
    index: usize,
}

#[derive(Clone)]
pub(crate) struct Body {
    doc: HereDoc,
    end: usize,
}

pub(crate) struct Parser<'a> {
    pub(crate) s: &'a [char],
    pub(crate) pos: usize,
    /// Offset of `s` in the text messages count commands in.
    pub(crate) base: usize,
    pub(crate) depth: usize,
    pending: Vec<Pending>,
    bodies: Vec<Body>,
    known: Option<Vec<Body>>,
    heredocs_seen: usize,
    /// An error found where the parser cannot stop (e.g. while skipping blanks), reported
    /// when the parse ends.
    deferred: Option<ParseError>,
    /// How many `$(...)`, `<(...)` or `>(...)` bodies the cursor is in.
    pub(crate) in_substitution: usize,
}

pub(crate) fn is_meta(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>'
    )
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl<'a> Parser<'a> {
    fn new(s: &'a [char], base: usize, depth: usize, known: Option<Vec<Body>>) -> Self {
        Parser {
            s,
            pos: 0,
            base,
            depth,
            pending: Vec::new(),
            bodies: Vec::new(),
            known,
            heredocs_seen: 0,
            deferred: None,
            in_substitution: 0,
        }
    }

    // ---- character helpers ----

    pub(crate) fn peek(&self) -> Option<char> {
        self.s.get(self.pos).copied()
    }

    pub(crate) fn peek_at(&self, n: usize) -> Option<char> {
        self.s.get(self.pos + n).copied()
    }

    pub(crate) fn starts_with(&self, text: &str) -> bool {
        (self.pos..)
            .zip(text.chars())
            .all(|(i, c)| self.s.get(i) == Some(&c))
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::TooDeep);
        }
        Ok(())
    }

    pub(crate) fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// Spaces, tabs and backslash-newline line continuations.
    pub(crate) fn skip_blanks(&mut self) {
        loop {
            match self.peek() {
                Some(' ' | '\t') => self.pos += 1,
                Some('\\') if self.peek_at(1) == Some('\n') => {
                    self.continuation(true);
                    self.pos += 2;
                }
                _ => return,
            }
        }
    }

    /// Checks the backslash-newline at the cursor. bash removes these before it splits the
    /// input into tokens, so one can join what is around it into a different token: `$\⏎(cmd)`
    /// is a command substitution, `<<\⏎-` is `<<-`, `X\⏎=1 cmd` is an assignment, `(\⏎(x))`
    /// is arithmetic. Accepted only after a blank or at the start of a line, inside a word
    /// between two plain word characters (`r\⏎m`), and between commands after `|`, `&` or `;`
    /// when no operator character follows.
    pub(crate) fn continuation(&mut self, between_commands: bool) {
        let before = self.pos.checked_sub(1).and_then(|i| self.s.get(i)).copied();
        let mut i = self.pos;
        while self.s.get(i) == Some(&'\\') && self.s.get(i + 1) == Some(&'\n') {
            i += 2;
        }
        let after = self.s.get(i).copied();
        let plain = |c: Option<char>| {
            c.is_some_and(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ',' | ':')
            })
        };
        let fine = match before {
            None | Some(' ' | '\t' | '\n') => true,
            Some('|' | '&' | ';') if between_commands => {
                !matches!(after, Some('|' | '&' | ';' | '<' | '>' | '(' | ')'))
            }
            b => !between_commands && plain(b) && plain(after),
        };
        if !fine && self.deferred.is_none() {
            self.deferred = Some(ParseError::Unsupported(
                "a line continuation (backslash-newline) that joins operator characters",
            ));
        }
    }

    /// The unquoted text of the word at `i` as bash reads it, with line continuations
    /// removed, and whether it had any. Stops at a metacharacter or a quoting character.
    pub(crate) fn logical_word(&self, mut i: usize) -> (String, bool) {
        let mut text = String::new();
        let mut joined = false;
        while let Some(&c) = self.s.get(i) {
            if c == '\\' && self.s.get(i + 1) == Some(&'\n') {
                joined = true;
                i += 2;
                continue;
            }
            if is_meta(c) || matches!(c, '\'' | '"' | '\\' | '`') || text.len() > 256 {
                break;
            }
            text.push(c);
            i += 1;
        }
        (text, joined)
    }

    fn skip_comment(&mut self) {
        if self.peek() == Some('#') {
            let start = self.pos;
            while !matches!(self.peek(), None | Some('\n')) {
                self.pos += 1;
            }
            self.check_old_substitution_end(start, self.pos);
        }
    }

    /// Inside `$(...)`, text the parser skips (a comment, a here-document body) must not
    /// hold a `)` that closes the substitution for shells that find its end by counting
    /// parentheses and quotes rather than by parsing (bash before 4.0, still `/bin/bash` and
    /// `/bin/sh` on macOS): `$(true # )` then `; rm x` would run there.
    fn check_old_substitution_end(&mut self, start: usize, end: usize) {
        if self.in_substitution == 0 {
            return;
        }
        let text = &self.s[start..end.min(self.s.len())];
        let mut depth = 0usize;
        let mut i = 0;
        while i < text.len() {
            match text[i] {
                '\\' => i += 1,
                q @ ('\'' | '"') => {
                    i += 1;
                    while i < text.len() && text[i] != q {
                        if text[i] == '\\' && q == '"' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                '(' => depth += 1,
                ')' if depth == 0 => {
                    if self.deferred.is_none() {
                        self.deferred = Some(ParseError::Unsupported(
                            "a `)` in a comment or here-document inside `$(...)`",
                        ));
                    }
                    return;
                }
                ')' => depth -= 1,
                _ => {}
            }
            i += 1;
        }
    }

    /// Blanks, comments and newlines (reading any here-document bodies that follow them).
    pub(crate) fn linebreak(&mut self) -> R<()> {
        loop {
            self.skip_blanks();
            self.skip_comment();
            if self.peek() == Some('\n') {
                self.newline()?;
            } else {
                return Ok(());
            }
        }
    }

    /// The token at the cursor, for error messages.
    pub(crate) fn unexpected(&self) -> ParseError {
        if self.pos >= self.s.len() {
            return ParseError::UnexpectedEnd("more input");
        }
        let token: String = match self.s[self.pos] {
            '\n' => "newline".into(),
            c if is_meta(c) => self.s[self.pos..]
                .iter()
                .take_while(|&&c| matches!(c, ';' | '&' | '|' | '(' | ')' | '<' | '>'))
                .take(3)
                .collect(),
            _ => self.s[self.pos..]
                .iter()
                .take_while(|&&c| !is_meta(c))
                .take(16)
                .collect(),
        };
        ParseError::Unexpected(token)
    }

    /// The unquoted, plain word at the cursor, if it is followed by a delimiter.
    fn peek_plain(&self) -> Option<String> {
        let mut i = self.pos;
        let mut word = String::new();
        while let Some(&c) = self.s.get(i) {
            if is_meta(c) || matches!(c, '\'' | '"' | '\\' | '$' | '`') {
                break;
            }
            word.push(c);
            i += 1;
            if word.len() > 64 {
                return None;
            }
        }
        match self.s.get(i) {
            _ if word.is_empty() => None,
            None => Some(word),
            Some(&c) if is_meta(c) => Some(word),
            _ => None,
        }
    }

    fn peek_reserved(&self) -> Option<&'static str> {
        let word = self.peek_plain()?;
        RESERVED.iter().find(|k| **k == word).copied()
    }

    fn eat_reserved(&mut self, kw: &str) -> bool {
        if self.peek_reserved() == Some(kw) {
            self.pos += kw.chars().count();
            true
        } else {
            false
        }
    }

    fn expect_reserved(&mut self, kw: &'static str) -> R<()> {
        self.linebreak()?;
        if self.eat_reserved(kw) {
            return Ok(());
        }
        if self.pos >= self.s.len() {
            Err(ParseError::UnexpectedEnd(kw))
        } else {
            Err(self.unexpected())
        }
    }

    fn expect_char(&mut self, c: char, what: &'static str) -> R<()> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else if self.pos >= self.s.len() {
            Err(ParseError::UnexpectedEnd(what))
        } else {
            Err(self.unexpected())
        }
    }

    fn at_stop(&self, stops: &[&str]) -> bool {
        stops.iter().any(|&stop| match stop {
            ")" => self.peek() == Some(')'),
            ";;" => self.starts_with(";;") || self.starts_with(";&"),
            kw => self.peek_reserved() == Some(kw),
        })
    }

    // ---- here-documents ----

    /// Consumes a newline token and the bodies of the here-documents started on its line.
    fn newline(&mut self) -> R<()> {
        self.pos += 1;
        for p in std::mem::take(&mut self.pending) {
            if let Some(known) = &self.known {
                match known.get(p.index) {
                    Some(body) => self.pos = body.end,
                    None => return Err(ParseError::Unsupported("this here-document")),
                }
                continue;
            }
            let start = self.pos;
            let mut text = String::new();
            loop {
                if self.pos >= self.s.len() {
                    return Err(ParseError::UnterminatedHeredoc(p.delimiter));
                }
                // In an unquoted body bash joins a line ending in an unescaped backslash with
                // the next one before comparing it with the delimiter: `x\⏎EOF` is not the end.
                // The text keeps the backslash-newline; reading the body removes it.
                let mut logical: Vec<char> = Vec::new();
                let mut raw: Vec<char> = Vec::new();
                let mut first_line = true;
                loop {
                    let end = self.s[self.pos..]
                        .iter()
                        .position(|&c| c == '\n')
                        .map_or(self.s.len(), |n| self.pos + n);
                    let mut line = &self.s[self.pos..end];
                    if p.strip_tabs && first_line {
                        while let [first, rest @ ..] = line {
                            if *first != '\t' {
                                break;
                            }
                            line = rest;
                        }
                    }
                    first_line = false;
                    self.pos = (end + 1).min(self.s.len());
                    let backslashes = line.iter().rev().take_while(|&&c| c == '\\').count();
                    raw.extend(line);
                    if !p.quoted && backslashes % 2 == 1 && end < self.s.len() {
                        logical.extend(&line[..line.len() - 1]);
                        raw.push('\n');
                        continue;
                    }
                    logical.extend(line);
                    break;
                }
                if logical.iter().copied().eq(p.delimiter.chars()) {
                    break;
                }
                text.extend(raw);
                text.push('\n');
            }
            self.check_old_substitution_end(start, self.pos);
            let body = if p.quoted {
                Word {
                    parts: vec![WordPart::Quoted(text)],
                }
            } else {
                let chars: Vec<char> = text.chars().collect();
                two_pass(&chars, self.base + start, self.depth + 1, |q| {
                    let parts = q.dq_parts(crate::word::Mode::Heredoc)?;
                    Ok(Word {
                        parts: vec![WordPart::DoubleQuoted(parts)],
                    })
                })?
            };
            if self.bodies.len() != p.index {
                return Err(ParseError::Unsupported("this here-document"));
            }
            self.bodies.push(Body {
                doc: HereDoc {
                    delimiter: p.delimiter,
                    quoted: p.quoted,
                    body,
                },
                end: self.pos,
            });
        }
        Ok(())
    }

    fn register_heredoc(&mut self, word: &Word, strip_tabs: bool) -> R<HereDoc> {
        let mut quoted = false;
        let mut delimiter = String::new();
        for part in &word.parts {
            match part {
                WordPart::Literal(t) => delimiter.push_str(t),
                WordPart::Quoted(t) => {
                    quoted = true;
                    delimiter.push_str(t);
                }
                WordPart::DoubleQuoted(inner) => {
                    quoted = true;
                    for p in inner {
                        match p {
                            WordPart::Literal(t) | WordPart::Quoted(t) => delimiter.push_str(t),
                            _ => {
                                return Err(ParseError::Unsupported(
                                    "an expansion in a here-document delimiter",
                                ));
                            }
                        }
                    }
                }
                _ => {
                    return Err(ParseError::Unsupported(
                        "an expansion in a here-document delimiter",
                    ));
                }
            }
        }
        let index = self.heredocs_seen;
        self.heredocs_seen += 1;
        self.pending.push(Pending {
            delimiter: delimiter.clone(),
            strip_tabs,
            quoted,
            index,
        });
        match &self.known {
            Some(known) => known
                .get(index)
                .map(|b| b.doc.clone())
                .ok_or(ParseError::Unsupported("this here-document")),
            None => Ok(HereDoc {
                delimiter,
                quoted,
                body: Word::default(),
            }),
        }
    }

    /// Whether the `((` or `$((` just before `start` is arithmetic: its balanced content is
    /// closed by `))`. Otherwise it is a subshell inside a subshell or substitution, as in bash.
    pub(crate) fn arith_ahead(&self, start: usize) -> bool {
        let mut i = start;
        let mut level = 0usize;
        while let Some(&c) = self.s.get(i) {
            match c {
                '\\' => i += 1,
                '\'' | '"' => {
                    i += 1;
                    while let Some(&d) = self.s.get(i) {
                        if d == c {
                            break;
                        }
                        if d == '\\' && c == '"' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                '(' => level += 1,
                ')' => {
                    if level == 0 {
                        return self.s.get(i + 1) == Some(&')');
                    }
                    level -= 1;
                }
                _ => {}
            }
            i += 1;
        }
        false
    }
}
