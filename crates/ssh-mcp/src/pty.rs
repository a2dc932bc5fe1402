//! The terminal side of interactive sessions, free of SSH: a `vt100` screen fed with the bytes a
//! PTY printed, the keys a caller can name, escape stripping for "what was printed since the last
//! read", and the waits (`until quiet`, `until a regex shows`, capped).
//!
//! Everything here is synchronous except [`wait`], and everything is testable by feeding bytes:
//! the SSH layer ([`crate::sessions`]) only moves bytes between a channel and a [`SharedTerm`].

use std::num::NonZeroU16;
use std::time::Duration;

use regex::Regex;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;

/// Smallest and largest terminal sizes accepted (columns and rows alike).
pub const MIN_SIZE: u16 = 2;
/// See [`MIN_SIZE`].
pub const MAX_SIZE: u16 = 1000;

/// A key name that is not known.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("unknown key \"{0}\"; known keys: {KEY_NAMES}")]
pub struct KeyError(pub String);

/// The key names [`encode_key`] accepts, for messages and docs.
pub const KEY_NAMES: &str = "enter, tab, shift-tab, esc, backspace, delete, insert, space, \
up, down, left, right, home, end, pgup, pgdn, f1..f12, ctrl-a..ctrl-z, ctrl-@, ctrl-[, ctrl-\\, \
ctrl-], ctrl-^, ctrl-_, alt-<char>";

/// The bytes an xterm sends for the key called `name`.
///
/// Names are case-insensitive and accept the usual spellings (`Enter`/`return`, `esc`/`escape`,
/// `ctrl-c`/`ctrl+c`/`C-c`/`^C`, `pgup`/`pageup`, `arrow-up`/`up`). With `application_cursor`
/// (DECCKM, set by full-screen programs such as vim and less) the arrows, home and end send the
/// `ESC O x` forms, as xterm does.
pub fn encode_key(name: &str, application_cursor: bool) -> Result<Vec<u8>, KeyError> {
    let unknown = || KeyError(name.to_owned());
    let lower = name.trim().to_ascii_lowercase().replace(['_', ' '], "-");
    let key = lower.as_str();
    // Modifier prefixes.
    let ctrl = key
        .strip_prefix("ctrl-")
        .or_else(|| key.strip_prefix("ctrl+"))
        .or_else(|| key.strip_prefix("control-"))
        .or_else(|| key.strip_prefix("c-"))
        .or_else(|| key.strip_prefix('^').filter(|r| r.len() == 1));
    if let Some(rest) = ctrl {
        let mut chars = rest.chars();
        let (Some(c), None) = (chars.next(), chars.next()) else {
            return Err(unknown());
        };
        return match c {
            'a'..='z' => Ok(vec![c as u8 - b'a' + 1]),
            '@' | ' ' | '2' => Ok(vec![0]),
            '[' | '3' => Ok(vec![0x1b]),
            '\\' | '4' => Ok(vec![0x1c]),
            ']' | '5' => Ok(vec![0x1d]),
            '^' | '6' => Ok(vec![0x1e]),
            '_' | '7' | '/' => Ok(vec![0x1f]),
            '?' | '8' => Ok(vec![0x7f]),
            _ => Err(unknown()),
        };
    }
    let alt = key
        .strip_prefix("alt-")
        .or_else(|| key.strip_prefix("alt+"))
        .or_else(|| key.strip_prefix("meta-"))
        .or_else(|| key.strip_prefix("m-"));
    if let Some(rest) = alt {
        // Keep the case of the original character (alt-X differs from alt-x).
        let original = &name.trim()[name.trim().len() - rest.len()..];
        let mut chars = original.chars();
        return match (chars.next(), chars.next()) {
            (Some(c), None) => {
                let mut out = vec![0x1b];
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                Ok(out)
            }
            _ => Err(unknown()),
        };
    }
    let csi_or_ss3 = |c: u8| {
        if application_cursor {
            vec![0x1b, b'O', c]
        } else {
            vec![0x1b, b'[', c]
        }
    };
    let tilde = |n: &str| format!("\x1b[{n}~").into_bytes();
    let bytes = match key {
        "enter" | "return" | "cr" => vec![b'\r'],
        "lf" | "newline" => vec![b'\n'],
        "tab" => vec![b'\t'],
        "shift-tab" | "backtab" => b"\x1b[Z".to_vec(),
        "esc" | "escape" => vec![0x1b],
        "backspace" | "bs" => vec![0x7f],
        "delete" | "del" => tilde("3"),
        "insert" | "ins" => tilde("2"),
        "space" => vec![b' '],
        "up" | "arrow-up" | "uparrow" => csi_or_ss3(b'A'),
        "down" | "arrow-down" | "downarrow" => csi_or_ss3(b'B'),
        "right" | "arrow-right" | "rightarrow" => csi_or_ss3(b'C'),
        "left" | "arrow-left" | "leftarrow" => csi_or_ss3(b'D'),
        "home" => csi_or_ss3(b'H'),
        "end" => csi_or_ss3(b'F'),
        "pgup" | "pageup" | "page-up" | "prior" => tilde("5"),
        "pgdn" | "pagedown" | "page-down" | "next" => tilde("6"),
        "f1" => b"\x1bOP".to_vec(),
        "f2" => b"\x1bOQ".to_vec(),
        "f3" => b"\x1bOR".to_vec(),
        "f4" => b"\x1bOS".to_vec(),
        "f5" => tilde("15"),
        "f6" => tilde("17"),
        "f7" => tilde("18"),
        "f8" => tilde("19"),
        "f9" => tilde("20"),
        "f10" => tilde("21"),
        "f11" => tilde("23"),
        "f12" => tilde("24"),
        _ => return Err(unknown()),
    };
    Ok(bytes)
}

/// vt100 callbacks: the window title (OSC 0/2), which the screen itself does not keep.
#[derive(Default)]
pub struct Callbacks {
    title: String,
}

impl vt100::Callbacks for Callbacks {
    fn set_window_title(&mut self, _: &mut vt100::Screen, title: &[u8]) {
        self.title = String::from_utf8_lossy(title).chars().take(256).collect();
    }
    fn set_window_icon_name(&mut self, _: &mut vt100::Screen, _: &[u8]) {}
}

/// Turns terminal output into plain text: escape sequences dropped, `\r\n` as `\n`, a bare `\r`
/// rewrites the line (progress bars keep their last state), backspace erases.
#[derive(Default)]
pub struct Stripper {
    done: String,
    line: String,
    cr: bool,
}

impl vte::Perform for Stripper {
    fn print(&mut self, c: char) {
        if self.cr {
            self.line.clear();
            self.cr = false;
        }
        self.line.push(c);
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' => {
                self.done.push_str(&self.line);
                self.done.push('\n');
                self.line.clear();
                self.cr = false;
            }
            b'\r' => self.cr = true,
            b'\t' => self.print('\t'),
            0x08 => {
                self.line.pop();
            }
            _ => {}
        }
    }
}

impl Stripper {
    /// Everything stripped so far: finished lines and the line being written.
    pub fn text(&self) -> String {
        let mut s = self.done.clone();
        s.push_str(&self.line);
        s
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.done.len() + self.line.len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the text, keeping the unfinished line's state for what follows.
    pub fn take(&mut self) -> String {
        let mut s = std::mem::take(&mut self.done);
        s.push_str(&self.line);
        self.line.clear();
        self.cr = false;
        s
    }

    /// Drops finished text from the front until at most `max` bytes are held; returns how many
    /// bytes were dropped.
    fn trim_front(&mut self, max: usize) -> usize {
        if self.done.len() + self.line.len() <= max {
            return 0;
        }
        let excess = self.done.len() + self.line.len() - max;
        let mut cut = excess.min(self.done.len());
        while !self.done.is_char_boundary(cut) {
            cut += 1;
        }
        self.done.drain(..cut);
        cut
    }
}

/// Stripped output kept for waits (so a regex still sees text that scrolled off the screen).
pub const RECENT_MAX: usize = 256 * 1024;

/// Feeds one parse to two strippers.
struct Both<'a>(&'a mut Stripper, &'a mut Stripper);

impl vte::Perform for Both<'_> {
    fn print(&mut self, c: char) {
        self.0.print(c);
        self.1.print(c);
    }
    fn execute(&mut self, byte: u8) {
        self.0.execute(byte);
        self.1.execute(byte);
    }
}

/// Escape-stripped text of `bytes` (a convenience over [`Stripper`]).
pub fn strip(bytes: &[u8]) -> String {
    let mut parser = vte::Parser::new();
    let mut s = Stripper::default();
    parser.advance(&mut s, bytes);
    s.text()
}

/// What a screen shows, as a read returns it.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The screen's rows, trailing spaces trimmed, trailing empty rows dropped.
    pub lines: Vec<String>,
    /// Terminal rows.
    pub rows: u16,
    /// Terminal columns.
    pub cols: u16,
    /// Cursor row, 0-based from the top of the screen.
    pub cursor_row: u16,
    /// Cursor column, 0-based.
    pub cursor_col: u16,
    /// Whether a full-screen program (vim, top, less) holds the alternate screen.
    pub alternate_screen: bool,
    /// The window title a program set (OSC 0/2), if any.
    pub title: String,
}

impl Snapshot {
    /// The lines joined with `\n`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// A terminal: the vt100 screen with scrollback, the escape-stripped output not read yet, and
/// when output last arrived.
pub struct Term {
    parser: vt100::Parser<Callbacks>,
    stripper_parser: vte::Parser,
    pending: Stripper,
    pending_max: usize,
    dropped: u64,
    /// The last [`RECENT_MAX`] bytes of stripped output, for waits; `recent_dropped` bytes were
    /// cut from its front so far.
    recent: Stripper,
    recent_dropped: u64,
    total_bytes: u64,
    last_output: Instant,
    closed: Option<String>,
    exit_status: Option<u32>,
}

fn nz(v: u16) -> NonZeroU16 {
    NonZeroU16::new(v.clamp(MIN_SIZE, MAX_SIZE)).expect("clamped above 0")
}

impl Term {
    /// A `cols` x `rows` terminal keeping `scrollback` lines and at most `pending_max` bytes of
    /// unread stripped output.
    pub fn new(cols: u16, rows: u16, scrollback: usize, pending_max: usize) -> Self {
        Self {
            parser: vt100::Parser::new_with_callbacks(
                nz(rows),
                nz(cols),
                scrollback,
                Callbacks::default(),
            ),
            stripper_parser: vte::Parser::new(),
            pending: Stripper::default(),
            pending_max: pending_max.max(1024),
            dropped: 0,
            recent: Stripper::default(),
            recent_dropped: 0,
            total_bytes: 0,
            last_output: Instant::now(),
            closed: None,
            exit_status: None,
        }
    }

    /// Feeds what the program printed.
    pub fn process(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.parser.process(bytes);
        let mut both = Both(&mut self.pending, &mut self.recent);
        self.stripper_parser.advance(&mut both, bytes);
        self.dropped += self.pending.trim_front(self.pending_max) as u64;
        self.recent_dropped += self.recent.trim_front(RECENT_MAX) as u64;
        self.total_bytes += bytes.len() as u64;
        self.last_output = Instant::now();
    }

    /// A mark for [`Self::stripped_since`]: the position of the start of the current line in
    /// the stripped output.
    pub fn stripped_mark(&self) -> u64 {
        self.recent_dropped + self.recent.done.len() as u64
    }

    /// Stripped output from `mark` on (as much as is still kept).
    pub fn stripped_since(&self, mark: u64) -> String {
        let text = self.recent.text();
        let mut from = mark.saturating_sub(self.recent_dropped) as usize;
        from = from.min(text.len());
        while !text.is_char_boundary(from) {
            from += 1;
        }
        text[from..].to_owned()
    }

    /// Bytes fed in all.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// When output last arrived (or when the terminal was made).
    pub fn last_output(&self) -> Instant {
        self.last_output
    }

    /// Marks the program as gone (`why`: e.g. "the shell exited with status 0").
    pub fn close(&mut self, why: impl Into<String>) {
        if self.closed.is_none() {
            self.closed = Some(why.into());
        }
    }

    /// Why it closed, once it has.
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// Records the exit status the server reported.
    pub fn set_exit_status(&mut self, status: u32) {
        self.exit_status = Some(status);
    }

    /// The exit status, if the server reported one.
    pub fn exit_status(&self) -> Option<u32> {
        self.exit_status
    }

    /// Whether the program asked for application cursor keys (DECCKM).
    pub fn application_cursor(&self) -> bool {
        self.parser.screen().application_cursor()
    }

    /// Resizes the screen (the caller tells the remote side).
    pub fn resize(&mut self, cols: u16, rows: u16) {
        self.parser.set_size(nz(rows), nz(cols));
    }

    /// `(cols, rows)`.
    pub fn size(&self) -> (u16, u16) {
        let (rows, cols) = self.parser.screen().size();
        (cols.get(), rows.get())
    }

    /// The screen as text rows (trailing spaces trimmed, trailing empty rows dropped).
    pub fn screen_lines(&self) -> Vec<String> {
        let screen = self.parser.screen();
        let (_, cols) = screen.size();
        let mut lines: Vec<String> = screen
            .rows(0, cols.get())
            .map(|r| r.trim_end().to_owned())
            .collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }

    /// The screen's text: [`Self::screen_lines`] joined with `\n`.
    pub fn screen_text(&self) -> String {
        self.screen_lines().join("\n")
    }

    /// The screen as waits match it: like [`Self::screen_text`], but the cursor's row keeps its
    /// spaces up to the cursor (so a prompt `$ ` waiting for input ends in a space) and rows
    /// below the cursor that are empty are dropped.
    pub fn match_text(&self) -> String {
        let screen = self.parser.screen();
        let (_, cols) = screen.size();
        let (cursor_row, cursor_col) = screen.cursor_position();
        let mut lines: Vec<String> = screen
            .rows(0, cols.get())
            .enumerate()
            .map(|(i, r)| {
                let mut line = r.trim_end().to_owned();
                if i == usize::from(cursor_row) {
                    let width = line.chars().count();
                    let want = usize::from(cursor_col);
                    if width < want {
                        line.extend(std::iter::repeat_n(' ', want - width));
                    }
                }
                line
            })
            .collect();
        while lines.len() > usize::from(cursor_row) + 1
            && lines.last().is_some_and(|l| l.is_empty())
        {
            lines.pop();
        }
        lines.join("\n")
    }

    /// What a read returns.
    pub fn snapshot(&self) -> Snapshot {
        let screen = self.parser.screen();
        let (rows, cols) = screen.size();
        let (cursor_row, cursor_col) = screen.cursor_position();
        Snapshot {
            lines: self.screen_lines(),
            rows: rows.get(),
            cols: cols.get(),
            cursor_row,
            cursor_col,
            alternate_screen: screen.alternate_screen(),
            title: self.parser.callbacks().title.clone(),
        }
    }

    /// Lines that scrolled off the top (oldest first) followed by the screen's rows, trailing
    /// spaces trimmed and trailing empty rows dropped.
    pub fn transcript(&mut self) -> Vec<String> {
        let screen = self.parser.screen_mut();
        let (rows, cols) = screen.size();
        let (rows, cols) = (usize::from(rows.get()), cols.get());
        // The history is read a screenful at a time: with offset `o`, the visible rows are the
        // last `o` history lines followed by the screen.
        screen.set_scrollback(usize::MAX);
        let history = screen.scrollback();
        let mut lines = Vec::with_capacity(history + rows);
        let mut start = 0;
        while start < history {
            screen.set_scrollback(history - start);
            let take = rows.min(history - start);
            lines.extend(
                screen
                    .rows(0, cols)
                    .take(take)
                    .map(|r| r.trim_end().to_owned()),
            );
            start += take;
        }
        screen.set_scrollback(0);
        lines.extend(screen.rows(0, cols).map(|r| r.trim_end().to_owned()));
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }

    /// Escape-stripped output since the last [`Self::take_new`] (`consume`: mark it read), and
    /// how many bytes were dropped because nobody read them in time.
    pub fn take_new(&mut self, consume: bool) -> (String, u64) {
        let dropped = self.dropped;
        if consume {
            self.dropped = 0;
            (self.pending.take(), dropped)
        } else {
            (self.pending.text(), dropped)
        }
    }

    /// Marks all output so far as read.
    pub fn clear_new(&mut self) {
        self.pending.take();
        self.dropped = 0;
    }
}

/// A [`Term`] shared between the task that feeds it and the calls that read it; every change
/// bumps a generation that waiters watch.
pub struct SharedTerm {
    term: std::sync::Mutex<Term>,
    changed: watch::Sender<u64>,
}

impl SharedTerm {
    /// Wraps `term`.
    pub fn new(term: Term) -> Self {
        Self {
            term: std::sync::Mutex::new(term),
            changed: watch::Sender::new(0),
        }
    }

    /// Runs `f` on the terminal (briefly: the feeding task waits meanwhile).
    pub fn with<R>(&self, f: impl FnOnce(&mut Term) -> R) -> R {
        f(&mut self.term.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Feeds bytes and wakes the waiters.
    pub fn process(&self, bytes: &[u8]) {
        self.with(|t| t.process(bytes));
        self.changed.send_modify(|g| *g += 1);
    }

    /// Marks the program gone and wakes the waiters.
    pub fn close(&self, why: impl Into<String>) {
        self.with(|t| t.close(why));
        self.changed.send_modify(|g| *g += 1);
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// What to wait for after sending input.
#[derive(Clone, Debug, Default)]
pub struct WaitSpec {
    /// Done when no output arrived for this long (counted from the start of the wait at the
    /// earliest).
    pub quiet: Option<Duration>,
    /// Done when this matches the screen (after output arrived since the start when
    /// `after_output`) or the stripped output received since the start.
    pub regex: Option<Regex>,
    /// Give up after this long.
    pub max: Duration,
    /// Only let the screen match once new output arrived (set when input was just sent, so a
    /// pattern already on the screen, such as the old prompt, does not end the wait at once).
    pub after_output: bool,
}

/// Why a wait ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WaitEnd {
    /// Nothing to wait for.
    None,
    /// Output was quiet for the asked time.
    Quiet,
    /// The regex matched.
    Matched,
    /// The maximum passed first.
    Timeout,
    /// The program (or the connection) ended.
    Closed,
}

/// How a wait went.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WaitOutcome {
    /// Why it ended.
    pub reason: WaitEnd,
    /// Milliseconds waited.
    pub waited_ms: u64,
    /// The text the regex matched, when it did.
    pub matched: Option<String>,
}

fn regex_match(regex: &Regex, screen: &str, stream: &str) -> Option<String> {
    regex
        .find(screen)
        .or_else(|| regex.find(stream))
        .map(|m| m.as_str().chars().take(512).collect())
}

/// Waits on `shared` as `spec` says. Without a quiet time or a regex, waits `spec.max` (ending
/// early if the program ends).
pub async fn wait(shared: &SharedTerm, spec: &WaitSpec) -> WaitOutcome {
    let start = Instant::now();
    let deadline = start + spec.max;
    let mut rx = shared.subscribe();
    rx.mark_unchanged();
    let (start_bytes, mark) = shared.with(|t| (t.total_bytes(), t.stripped_mark()));
    let done = |reason: WaitEnd, matched: Option<String>| WaitOutcome {
        reason,
        waited_ms: start.elapsed().as_millis() as u64,
        matched,
    };
    loop {
        let now = Instant::now();
        let (closed, last_output, matched) = shared.with(|t| {
            let matched = spec.regex.as_ref().and_then(|re| {
                let fresh = t.total_bytes() > start_bytes;
                let screen = if fresh || !spec.after_output {
                    t.match_text()
                } else {
                    String::new()
                };
                let stream = if fresh {
                    t.stripped_since(mark)
                } else {
                    String::new()
                };
                regex_match(re, &screen, &stream)
            });
            (t.closed().is_some(), t.last_output(), matched)
        });
        if let Some(m) = matched {
            return done(WaitEnd::Matched, Some(m));
        }
        if closed {
            return done(WaitEnd::Closed, None);
        }
        let quiet_since = last_output.max(start);
        if let Some(q) = spec.quiet
            && now >= quiet_since + q
        {
            return done(WaitEnd::Quiet, None);
        }
        if now >= deadline {
            return done(WaitEnd::Timeout, None);
        }
        let next = match spec.quiet {
            Some(q) => deadline.min(quiet_since + q),
            None => deadline,
        };
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return done(WaitEnd::Closed, None);
                }
            }
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}

#[cfg(test)]
mod tests;
