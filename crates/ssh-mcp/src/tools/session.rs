//! Interactive sessions: `ssh_session_start`, `ssh_session_send`, `ssh_session_read`,
//! `ssh_session_resize`, `ssh_session_end`, `ssh_session_list`.
//!
//! ```text
//! ssh_session_start  {credentialName, cols?: 120, rows?: 40, term?: "xterm-256color"}
//! ssh_session_send   {sessionId, input?, keys?: ["esc", ":wq", ...names], waitForQuietMs?, waitForRegex?, maxWaitMs?}
//! ssh_session_read   {sessionId, mode?: "screen" | "new" | "scrollback", clear?, maxLines?}
//! ssh_session_resize {sessionId, cols, rows}
//! ssh_session_end    {sessionId}
//! ssh_session_list   {}
//! ```

use std::time::{Duration, SystemTime};

use regex::RegexBuilder;
use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::{Deserialize, Serialize};

use super::{failure, structured};
use crate::pty::{self, Snapshot, WaitEnd, WaitOutcome, WaitSpec};
use crate::server::SshMcp;
use crate::sessions::{Session, StartRequest};

/// Default terminal size and type.
pub const DEFAULT_COLS: u16 = 120;
/// See [`DEFAULT_COLS`].
pub const DEFAULT_ROWS: u16 = 40;
/// See [`DEFAULT_COLS`].
pub const DEFAULT_TERM: &str = "xterm-256color";
/// Without any wait argument, `ssh_session_send` waits until output is quiet this long...
pub const DEFAULT_QUIET: Duration = Duration::from_millis(300);
/// ... but at most this long.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(3);
/// Longest `input` accepted in one call.
pub const MAX_INPUT: usize = 256 * 1024;

/// Arguments of `ssh_session_start`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartParams {
    /// Credential (host) to open the shell on.
    pub credential_name: String,
    /// Terminal columns (default 120).
    pub cols: Option<u16>,
    /// Terminal rows (default 40).
    pub rows: Option<u16>,
    /// TERM to announce (default xterm-256color).
    pub term: Option<String>,
}

/// Arguments of `ssh_session_send`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendParams {
    /// Session id from ssh_session_start.
    pub session_id: String,
    /// Text to type, sent as is (include "\n" or the key "enter" to run a command line).
    pub input: Option<String>,
    /// Named keys, sent in order after `input`: enter, tab, shift-tab, esc, backspace, delete,
    /// insert, space, up, down, left, right, home, end, pgup, pgdn, f1..f12, ctrl-a..ctrl-z,
    /// `alt-<char>`.
    pub keys: Option<Vec<String>>,
    /// Wait until no output arrived for this many ms.
    pub wait_for_quiet_ms: Option<u64>,
    /// Wait until this regex matches the screen or the output since the send (Rust regex syntax;
    /// `$` is the end of the text unless `(?m)` is given; the echo of what you typed is output too).
    pub wait_for_regex: Option<String>,
    /// Upper bound of the wait in ms (default 10000 with a wait condition; alone: wait this long).
    pub max_wait_ms: Option<u64>,
}

/// What `ssh_session_read` returns.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// The rendered screen (default).
    #[default]
    Screen,
    /// The output since the last read of new output, escape sequences stripped.
    New,
    /// Lines that scrolled off the top, then the screen.
    Scrollback,
}

/// Arguments of `ssh_session_read`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadParams {
    /// Session id from ssh_session_start.
    pub session_id: String,
    /// `screen` (default), `new` or `scrollback`.
    pub mode: Option<ReadMode>,
    /// Mark the output so far as read (default: true for mode `new`, false otherwise; `new` with
    /// clear=false peeks without consuming).
    pub clear: Option<bool>,
    /// For `scrollback`: at most this many of the newest lines.
    pub max_lines: Option<usize>,
}

/// Arguments of `ssh_session_resize`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResizeParams {
    /// Session id.
    pub session_id: String,
    /// New columns.
    pub cols: u16,
    /// New rows.
    pub rows: u16,
}

/// Arguments of `ssh_session_end`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndParams {
    /// Session id.
    pub session_id: String,
}

/// A session's state as results carry it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionState {
    /// Session id.
    pub session_id: String,
    /// Credential it runs on.
    pub credential_name: String,
    /// The rendered screen.
    pub screen: Snapshot,
    /// Why it ended, once it has (the shell exited, idle timeout, connection lost).
    pub ended: Option<String>,
    /// Exit status of the shell, when it exited.
    pub exit_status: Option<u32>,
}

/// Result of `ssh_session_start`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// TERM announced.
    pub term: String,
    /// The session (the screen after the shell's first output settled).
    #[serde(flatten)]
    pub state: SessionState,
}

/// Result of `ssh_session_send`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    /// Bytes typed.
    pub bytes_sent: usize,
    /// How the wait went.
    pub wait: WaitOutcome,
    /// The session after the wait.
    #[serde(flatten)]
    pub state: SessionState,
}

/// Result of `ssh_session_read`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Read {
    /// Session id.
    pub session_id: String,
    /// The mode read.
    pub mode: ReadMode,
    /// The screen (mode `screen`; also given with the others, for the cursor and title).
    pub screen: Snapshot,
    /// The text (modes `new` and `scrollback`).
    pub text: Option<String>,
    /// `new`: bytes of output dropped because they were not read in time.
    pub dropped_bytes: Option<u64>,
    /// Whether `text` was cut to fit a result (the newest part is kept).
    pub truncated: bool,
    /// `scrollback`: lines there are in all.
    pub total_lines: Option<usize>,
    /// Why it ended, once it has.
    pub ended: Option<String>,
    /// Exit status of the shell, when it exited.
    pub exit_status: Option<u32>,
}

/// One line of `ssh_session_list`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// Session id.
    pub session_id: String,
    /// Credential.
    pub credential_name: String,
    /// TERM.
    pub term: String,
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
    /// Whether a full-screen program holds the alternate screen.
    pub alternate_screen: bool,
    /// Window title.
    pub title: String,
    /// Seconds since start.
    pub age_secs: u64,
    /// Why it ended, if it has.
    pub ended: Option<String>,
}

/// Result of `ssh_session_list`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionList {
    /// This client's sessions, oldest first.
    pub sessions: Vec<SessionInfo>,
}

/// Result of `ssh_session_resize`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resized {
    /// The session after the resize (and a short wait for the program to redraw).
    #[serde(flatten)]
    pub state: SessionState,
}

/// Result of `ssh_session_end`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ended {
    /// The session as it was last (its final screen).
    #[serde(flatten)]
    pub state: SessionState,
}

fn state_of(session: &Session) -> SessionState {
    let (screen, ended, exit_status) = session
        .term
        .with(|t| (t.snapshot(), t.closed().map(str::to_owned), t.exit_status()));
    SessionState {
        session_id: session.id.clone(),
        credential_name: session.credential.clone(),
        screen,
        ended,
        exit_status,
    }
}

fn header(state: &SessionState) -> String {
    let s = &state.screen;
    let mut h = format!(
        "session {} on {} ({}x{}, cursor row {} col {}",
        state.session_id, state.credential_name, s.cols, s.rows, s.cursor_row, s.cursor_col
    );
    if s.alternate_screen {
        h.push_str(", alternate screen");
    }
    if !s.title.is_empty() {
        h.push_str(&format!(", title {:?}", s.title));
    }
    h.push(')');
    if let Some(why) = &state.ended {
        h.push_str(&format!("\nENDED: {why}"));
    }
    h
}

fn screen_text(state: &SessionState) -> String {
    format!(
        "{}\n--- screen ---\n{}",
        header(state),
        state.screen.lines.join("\n")
    )
}

/// Keeps the newest part of `text` within `cap` bytes.
fn tail(text: String, cap: usize) -> (String, bool) {
    if text.len() <= cap {
        return (text, false);
    }
    let mut from = text.len() - cap;
    while !text.is_char_boundary(from) {
        from += 1;
    }
    (text[from..].to_owned(), true)
}

fn wait_name(w: &WaitEnd) -> &'static str {
    match w {
        WaitEnd::None => "no wait",
        WaitEnd::Quiet => "output quiet",
        WaitEnd::Matched => "regex matched",
        WaitEnd::Timeout => "maximum wait reached",
        WaitEnd::Closed => "session ended",
    }
}

#[tool_router(router = session_router, vis = "pub(crate)")]
impl SshMcp {
    /// Opens an interactive shell with a PTY.
    #[tool(
        name = "ssh_session_start",
        description = "Open an interactive shell on an SSH host with a real terminal (PTY, default 120x40 xterm-256color), \
for full-screen and interactive programs (vim, top, less, REPLs, prompts). Returns a sessionId and the first screen. \
Use ssh_session_send to type, ssh_session_read to look at the screen, ssh_session_end to close. For plain commands \
prefer ssh_exec.",
        output_schema = schema_for_output::<Started>(),
        annotations(destructive_hint = true, open_world_hint = true, idempotent_hint = false)
    )]
    async fn ssh_session_start(
        &self,
        Parameters(p): Parameters<StartParams>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let cols = p.cols.unwrap_or(DEFAULT_COLS);
        let rows = p.rows.unwrap_or(DEFAULT_ROWS);
        for (name, v) in [("cols", cols), ("rows", rows)] {
            if !(pty::MIN_SIZE..=pty::MAX_SIZE).contains(&v) {
                return Ok(failure(format!(
                    "{name} must be {} to {}",
                    pty::MIN_SIZE,
                    pty::MAX_SIZE
                )));
            }
        }
        let term = p.term.unwrap_or_else(|| DEFAULT_TERM.to_owned());
        if term.is_empty()
            || term.len() > 64
            || !term
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
        {
            return Ok(failure(
                "term must be a terminal type name such as xterm-256color",
            ));
        }
        let state = self.state();
        let credential = match state.credentials.get(&p.credential_name) {
            Ok(c) => c,
            Err(e) => return Ok(failure(e.to_string())),
        };
        let session = match state
            .sessions
            .start(
                self.owner_id(),
                StartRequest {
                    credential: credential.name.clone(),
                    cols,
                    rows,
                    term: term.clone(),
                },
            )
            .await
        {
            Ok(s) => s,
            Err(e) => return Ok(failure(e.to_string())),
        };
        // Let the login banner and the first prompt arrive.
        pty::wait(
            &session.term,
            &WaitSpec {
                quiet: Some(DEFAULT_QUIET),
                max: DEFAULT_MAX_WAIT,
                ..Default::default()
            },
        )
        .await;
        let result = Started {
            term,
            state: state_of(&session),
        };
        let text = format!(
            "started {}\n{}",
            result.state.session_id,
            screen_text(&result.state)
        );
        Ok(structured(text, &result, false))
    }

    /// Types into a session and waits.
    #[tool(
        name = "ssh_session_send",
        description = "Type into an interactive session: `input` text (sent as is; end it with \\n, or add the key \
\"enter\", to run a line) and/or named `keys` in order (enter, tab, esc, backspace, delete, up/down/left/right, \
home/end, pgup/pgdn, f1-f12, ctrl-a..ctrl-z, alt-<char>). Then waits: waitForQuietMs (until no output for that long), \
waitForRegex (until the pattern shows on the screen or in the new output), maxWaitMs (cap; alone: wait that long). \
Without wait arguments it waits until output is quiet for 300 ms, at most 3 s. Returns the screen after the wait.",
        output_schema = schema_for_output::<Sent>(),
        annotations(destructive_hint = true, open_world_hint = true, idempotent_hint = false)
    )]
    async fn ssh_session_send(
        &self,
        Parameters(p): Parameters<SendParams>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let state = self.state();
        let session = match state.sessions.get(self.owner_id(), &p.session_id) {
            Ok(s) => s,
            Err(e) => return Ok(failure(e.to_string())),
        };
        let input = p.input.unwrap_or_default();
        if input.len() > MAX_INPUT {
            return Ok(failure(format!("input is longer than {MAX_INPUT} bytes")));
        }
        let app_cursor = session.term.with(|t| t.application_cursor());
        let mut bytes = input.into_bytes();
        for key in p.keys.unwrap_or_default() {
            match pty::encode_key(&key, app_cursor) {
                Ok(b) => bytes.extend(b),
                Err(e) => return Ok(failure(format!("{e}; nothing was sent"))),
            }
        }
        let cap = state.settings.limits.session_max_wait;
        let regex = match &p.wait_for_regex {
            None => None,
            Some(r) if r.len() > 2000 => {
                return Ok(failure("waitForRegex is longer than 2000 characters"));
            }
            Some(r) => match RegexBuilder::new(r).size_limit(1 << 20).build() {
                Ok(re) => Some(re),
                Err(e) => return Ok(failure(format!("waitForRegex is not a valid regex: {e}"))),
            },
        };
        let max = match p.max_wait_ms {
            Some(ms) if Duration::from_millis(ms) > cap => {
                return Ok(failure(format!(
                    "maxWaitMs {ms} is above the limit of {} ms (limits.session_max_wait_ms)",
                    cap.as_millis()
                )));
            }
            Some(ms) => Some(Duration::from_millis(ms)),
            None => None,
        };
        let quiet = p.wait_for_quiet_ms.map(Duration::from_millis);
        let spec = match (quiet, &regex, max) {
            (None, None, None) => WaitSpec {
                quiet: Some(DEFAULT_QUIET),
                max: DEFAULT_MAX_WAIT,
                ..Default::default()
            },
            (None, None, Some(max)) => WaitSpec {
                max,
                ..Default::default()
            },
            (quiet, regex, max) => WaitSpec {
                quiet,
                regex: regex.clone(),
                max: max.unwrap_or(Duration::from_secs(10).min(cap)),
                after_output: !bytes.is_empty(),
            },
        };
        let sent = bytes.len();
        if let Err(e) = session.send(bytes).await {
            return Ok(failure(e.to_string()));
        }
        let wait = if spec.max.is_zero() {
            WaitOutcome {
                reason: WaitEnd::None,
                waited_ms: 0,
                matched: None,
            }
        } else {
            pty::wait(&session.term, &spec).await
        };
        session.touch();
        let result = Sent {
            bytes_sent: sent,
            wait,
            state: state_of(&session),
        };
        let mut text = format!(
            "sent {} bytes; waited {} ms ({})",
            sent,
            result.wait.waited_ms,
            wait_name(&result.wait.reason)
        );
        if let Some(m) = &result.wait.matched {
            text.push_str(&format!(", matched {m:?}"));
        }
        text.push('\n');
        text.push_str(&screen_text(&result.state));
        // A regex that never showed is worth flagging, but the call itself worked.
        Ok(structured(text, &result, false))
    }

    /// Reads a session's screen or output.
    #[tool(
        name = "ssh_session_read",
        description = "Read an interactive session. Default: the rendered screen (text lines, cursor position, \
alternateScreen true while a full-screen program such as vim or top runs, window title). mode \"new\": the output \
printed since the last read of new output, escape sequences stripped (clear=false peeks without consuming). \
mode \"scrollback\": the lines that scrolled off the top followed by the screen. clear=true marks all output so far \
as read.",
        output_schema = schema_for_output::<Read>(),
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = true, idempotent_hint = false)
    )]
    async fn ssh_session_read(
        &self,
        Parameters(p): Parameters<ReadParams>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let state = self.state();
        let session = match state.sessions.get(self.owner_id(), &p.session_id) {
            Ok(s) => s,
            Err(e) => return Ok(failure(e.to_string())),
        };
        session.touch();
        let mode = p.mode.unwrap_or_default();
        let cap = state.settings.limits.output_bytes;
        let (screen, ended, exit_status, text, dropped, truncated, total_lines) =
            session.term.with(|t| {
                let (text, dropped, truncated, total) = match mode {
                    ReadMode::Screen => {
                        if p.clear == Some(true) {
                            t.clear_new();
                        }
                        (None, None, false, None)
                    }
                    ReadMode::New => {
                        let (text, dropped) = t.take_new(p.clear.unwrap_or(true));
                        let (text, cut) = tail(text, cap);
                        (Some(text), Some(dropped), cut, None)
                    }
                    ReadMode::Scrollback => {
                        let lines = t.transcript();
                        let total = lines.len();
                        let keep = p.max_lines.unwrap_or(total).min(total);
                        let (text, cut) = tail(lines[total - keep..].join("\n"), cap);
                        if p.clear == Some(true) {
                            t.clear_new();
                        }
                        (Some(text), None, cut || keep < total, Some(total))
                    }
                };
                (
                    t.snapshot(),
                    t.closed().map(str::to_owned),
                    t.exit_status(),
                    text,
                    dropped,
                    truncated,
                    total,
                )
            });
        let result = Read {
            session_id: session.id.clone(),
            mode,
            screen,
            text,
            dropped_bytes: dropped,
            truncated,
            total_lines,
            ended,
            exit_status,
        };
        let st = SessionState {
            session_id: result.session_id.clone(),
            credential_name: session.credential.clone(),
            screen: result.screen.clone(),
            ended: result.ended.clone(),
            exit_status,
        };
        let body = match (&result.mode, &result.text) {
            (ReadMode::Screen, _) | (_, None) => screen_text(&st),
            (ReadMode::New, Some(t)) => format!(
                "{}\n--- new output{} ---\n{t}",
                header(&st),
                match result.dropped_bytes {
                    Some(d) if d > 0 => format!(" ({d} older bytes were dropped unread)"),
                    _ => String::new(),
                }
            ),
            (ReadMode::Scrollback, Some(t)) => format!(
                "{}\n--- scrollback and screen ({} lines{}) ---\n{t}",
                header(&st),
                result.total_lines.unwrap_or(0),
                if result.truncated {
                    ", newest shown"
                } else {
                    ""
                }
            ),
        };
        Ok(structured(body, &result, false))
    }

    /// Changes a session's terminal size.
    #[tool(
        name = "ssh_session_resize",
        description = "Resize an interactive session's terminal (the remote side gets a window-change, so `stty size` \
and full-screen programs follow). Returns the screen after the program redrew.",
        output_schema = schema_for_output::<Resized>(),
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = true, idempotent_hint = true)
    )]
    async fn ssh_session_resize(
        &self,
        Parameters(p): Parameters<ResizeParams>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        for (name, v) in [("cols", p.cols), ("rows", p.rows)] {
            if !(pty::MIN_SIZE..=pty::MAX_SIZE).contains(&v) {
                return Ok(failure(format!(
                    "{name} must be {} to {}",
                    pty::MIN_SIZE,
                    pty::MAX_SIZE
                )));
            }
        }
        let session = match self.state().sessions.get(self.owner_id(), &p.session_id) {
            Ok(s) => s,
            Err(e) => return Ok(failure(e.to_string())),
        };
        if let Err(e) = session.resize(p.cols, p.rows).await {
            return Ok(failure(e.to_string()));
        }
        pty::wait(
            &session.term,
            &WaitSpec {
                quiet: Some(Duration::from_millis(150)),
                max: Duration::from_secs(1),
                ..Default::default()
            },
        )
        .await;
        let result = Resized {
            state: state_of(&session),
        };
        let text = format!(
            "resized to {}x{}\n{}",
            p.cols,
            p.rows,
            screen_text(&result.state)
        );
        Ok(structured(text, &result, false))
    }

    /// Closes a session.
    #[tool(
        name = "ssh_session_end",
        description = "Close an interactive session (its shell gets end-of-input and the channel closes). Returns its \
last screen.",
        output_schema = schema_for_output::<Ended>(),
        annotations(destructive_hint = true, open_world_hint = true, idempotent_hint = false)
    )]
    async fn ssh_session_end(
        &self,
        Parameters(p): Parameters<EndParams>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        match self
            .state()
            .sessions
            .end(self.owner_id(), &p.session_id)
            .await
        {
            Ok(session) => {
                let result = Ended {
                    state: state_of(&session),
                };
                let text = format!("ended {}\n{}", session.id, screen_text(&result.state));
                Ok(structured(text, &result, false))
            }
            Err(e) => Ok(failure(e.to_string())),
        }
    }

    /// Lists this client's sessions.
    #[tool(
        name = "ssh_session_list",
        description = "List this client's interactive sessions: id, host, size, whether a full-screen program runs, \
and whether the session has ended.",
        output_schema = schema_for_output::<SessionList>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn ssh_session_list(&self) -> Result<CallToolResult, rmcp::ErrorData> {
        let sessions: Vec<SessionInfo> = self
            .state()
            .sessions
            .list(self.owner_id())
            .iter()
            .map(|s| {
                let (snap, ended) = s
                    .term
                    .with(|t| (t.snapshot(), t.closed().map(str::to_owned)));
                SessionInfo {
                    session_id: s.id.clone(),
                    credential_name: s.credential.clone(),
                    term: s.term_name.clone(),
                    cols: snap.cols,
                    rows: snap.rows,
                    alternate_screen: snap.alternate_screen,
                    title: snap.title,
                    age_secs: SystemTime::now()
                        .duration_since(s.started_at)
                        .unwrap_or_default()
                        .as_secs(),
                    ended,
                }
            })
            .collect();
        let text = if sessions.is_empty() {
            "no interactive sessions".to_owned()
        } else {
            sessions
                .iter()
                .map(|s| {
                    format!(
                        "{} on {} ({}x{}{}{}), {} s old{}",
                        s.session_id,
                        s.credential_name,
                        s.cols,
                        s.rows,
                        if s.alternate_screen {
                            ", full-screen program"
                        } else {
                            ""
                        },
                        if s.title.is_empty() {
                            String::new()
                        } else {
                            format!(", title {:?}", s.title)
                        },
                        s.age_secs,
                        s.ended
                            .as_deref()
                            .map(|e| format!(", ENDED: {e}"))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        Ok(structured(text, &SessionList { sessions }, false))
    }
}
