//! Running one command on a session channel: stdin then end-of-input, output captured per stream,
//! a timeout or cancellation that really stops the remote command, and `sudo` fed its password on
//! stdin.
//!
//! ## Stopping a command
//! Closing an SSH channel does not stop a command run without a PTY: OpenSSH only closes the
//! pipes, and `sleep 600` never notices. Two things do, and both are used:
//! 1. the `signal` channel request (RFC 4254 6.9), which OpenSSH answers with `killpg(2)` on the
//!    session's process group. But OpenSSH refuses it for sessions it runs without privilege
//!    separation, which is every root login (its log says "session signalling requires privilege
//!    separation"), and some servers ignore it;
//! 2. so every command line starts by printing its process group id to stderr as a marker
//!    (`[ssh-mcp:pgid=1234]`, removed from the output): OpenSSH starts the login shell under
//!    `setsid`, so `$$` is the group of everything the command starts. On a timeout or an MCP
//!    cancellation a second channel on the same connection runs `kill -s TERM -- -1234`.
//!
//! TERM goes both ways, then KILL after `kill_grace`, then the channel is closed; the result says
//! whether the server reported the command's end (`stopped`).
//!
//! ## stdin
//! The command's stdin is always closed (EOF) after the given `stdin` bytes, or at once when there
//! are none, so a command that reads stdin (`cat`, `read`, a password prompt) ends instead of
//! hanging until the timeout. stdin is written concurrently with reading output, so a command
//! that writes a lot before it reads cannot deadlock against us.
//!
//! ## sudo
//! `sudo: true` runs `sudo -S -p <prompt marker> -- sh -c '<ready marker>; exec sh -c "$1"' sh
//! '<script>'`. The password goes down the channel as stdin only when sudo's prompt marker shows
//! on stderr, never on a command line (where `ps` would show it) and never into the command's
//! own stdin when sudo did not ask (NOPASSWD, cached credentials). The user's stdin is sent once
//! the ready marker shows, that is once the command itself runs. Both markers are removed from
//! stderr. A second prompt means the password was wrong: the call ends with `sudo-failed`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::client::Msg;
use russh::{Channel, ChannelMsg, Sig};
use thiserror::Error;
use tokio::sync::oneshot;

use crate::connection::Connection;
use crate::output::StreamCapture;
use crate::quote::quote;

/// Errors that prevent a command from running at all.
#[derive(Debug, Error)]
pub enum ExecError {
    /// The server answered the exec request with failure.
    #[error("the server refused to run the command (exec request failed)")]
    Refused,
    /// The channel failed before the command started.
    #[error("SSH channel error: {0}")]
    Channel(#[from] russh::Error),
    /// An `env` name that is not a shell variable name.
    #[error("env name \"{0}\" is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)")]
    BadEnvName(String),
    /// A value with NUL, which no shell can carry.
    #[error("{0} contains a NUL character, which no remote shell can receive")]
    Nul(&'static str),
}

/// What to run and how long to let it run.
#[derive(Debug)]
pub struct ExecRequest {
    /// The remote command line (see [`script`] and [`sudo_wrap`]).
    pub command: String,
    /// Bytes for the command's stdin; EOF follows them (or comes at once when `None`).
    pub stdin: Option<Vec<u8>>,
    /// When to stop the command.
    pub timeout: Duration,
    /// Whether `command` was wrapped by [`sudo_wrap`] (enables the marker protocol).
    pub sudo: bool,
    /// The password to answer sudo's prompt with, if one is configured.
    pub sudo_password: Option<String>,
}

/// Capture and stop settings.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Bytes per stream kept from the start.
    pub keep_bytes: usize,
    /// Bytes per stream kept from the end.
    pub tail_bytes: usize,
    /// Wait after TERM before KILL, after KILL before giving up, and after the exit status for
    /// the last output.
    pub kill_grace: Duration,
    /// Interval of progress callbacks.
    pub progress_interval: Duration,
}

/// How the command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(u32),
    /// It was killed by a signal.
    Signal {
        /// Signal name without `SIG` (e.g. `TERM`).
        name: String,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

/// Why the call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The command ended on its own.
    Exited,
    /// The timeout expired and the command was signalled.
    TimedOut,
    /// The MCP request was cancelled and the command was signalled.
    Cancelled,
    /// The connection died while the command ran.
    ConnectionLost,
    /// sudo asked again (wrong password) or asked with no password configured.
    SudoFailed(String),
}

/// A progress report while the command runs.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Time since start.
    pub elapsed: Duration,
    /// The timeout.
    pub timeout: Duration,
    /// Output bytes so far.
    pub stdout_bytes: u64,
    /// Error output bytes so far.
    pub stderr_bytes: u64,
}

/// What happened.
#[derive(Debug)]
pub struct ExecOutcome {
    /// Standard output.
    pub stdout: StreamCapture,
    /// Standard error (sudo markers removed).
    pub stderr: StreamCapture,
    /// Exit status or signal, when the server reported one.
    pub exit: Option<Exit>,
    /// Why the call ended.
    pub ending: Ending,
    /// After a timeout or cancellation: whether the server reported that the command ended.
    pub stopped: Option<bool>,
    /// Wall time.
    pub duration: Duration,
}

/// Builds the script run by the remote shell: optional `cd`, exported variables, the command.
///
/// ```text
/// cd -- '/srv/app' || exit 126
/// export RUST_LOG='debug'
/// <command>
/// ```
pub fn script(
    command: &str,
    cwd: Option<&str>,
    env: &BTreeMap<String, String>,
) -> Result<String, ExecError> {
    if command.contains('\0') {
        return Err(ExecError::Nul("command"));
    }
    let mut out = String::new();
    if let Some(dir) = cwd {
        if dir.contains('\0') {
            return Err(ExecError::Nul("cwd"));
        }
        // A failed cd must not run the command somewhere else.
        out.push_str(&format!("cd -- {} || exit 126\n", quote(dir)));
    }
    for (name, value) in env {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ExecError::BadEnvName(name.clone()));
        }
        if value.contains('\0') {
            return Err(ExecError::Nul("an env value"));
        }
        out.push_str(&format!("export {name}={}\n", quote(value)));
    }
    out.push_str(command);
    Ok(out)
}

/// sudo's prompt, set with `-p`; seeing it on stderr means "send the password now".
pub const SUDO_PROMPT: &str = "[ssh-mcp:sudo-password]";
/// Printed to stderr by the inner shell once sudo has let it run.
pub const SUDO_READY: &str = "[ssh-mcp:sudo-ok]";
/// Start of the process-group marker printed first by every command line.
pub const PGID_MARKER: &str = "[ssh-mcp:pgid=";

/// Wraps `script` to run as root through `sudo -S` with the marker protocol (see the module docs).
pub fn sudo_wrap(script: &str) -> String {
    let inner = format!("printf '%s' {} >&2; exec sh -c \"$1\"", quote(SUDO_READY));
    format!(
        "sudo -S -p {} -- sh -c {} sh {}",
        quote(SUDO_PROMPT),
        quote(&inner),
        quote(script)
    )
}

/// Prefixes a command line with the process-group marker (see the module docs).
pub fn with_pgid_marker(command: &str) -> String {
    format!("printf '%s' \"{PGID_MARKER}$$]\" >&2\n{command}")
}

/// Markers seen on stderr.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Marker {
    /// The process group of the remote command.
    Pgid(u32),
    /// sudo asks for the password.
    Prompt,
    /// The command runs now (after sudo).
    Ready,
}

/// Removes this crate's markers from the start of stderr and reports them, across packet
/// boundaries. Only the start is searched: once the command itself runs (after the pgid marker,
/// or after sudo's ready marker), stderr passes through untouched, so a command cannot fake one.
#[derive(Debug)]
pub(crate) struct MarkerFilter {
    pending: Vec<u8>,
    passthrough: bool,
    sudo: bool,
    pgid_seen: bool,
}

impl MarkerFilter {
    /// A filter for a command line made by [`with_pgid_marker`], around [`sudo_wrap`] when `sudo`.
    pub(crate) fn new(sudo: bool) -> Self {
        Self {
            pending: Vec::new(),
            passthrough: false,
            sudo,
            pgid_seen: false,
        }
    }

    /// Feeds stderr bytes; the bytes to show go to `out`.
    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Vec<Marker> {
        if self.passthrough {
            out.extend_from_slice(data);
            return Vec::new();
        }
        self.pending.extend_from_slice(data);
        let mut events = Vec::new();
        loop {
            let candidates = [
                (!self.pgid_seen)
                    .then(|| find(&self.pending, PGID_MARKER.as_bytes()))
                    .flatten(),
                self.sudo
                    .then(|| find(&self.pending, SUDO_PROMPT.as_bytes()))
                    .flatten(),
                self.sudo
                    .then(|| find(&self.pending, SUDO_READY.as_bytes()))
                    .flatten(),
            ];
            let Some((which, at)) = candidates
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.map(|at| (i, at)))
                .min_by_key(|(_, at)| *at)
            else {
                break;
            };
            let (marker, len) = match which {
                0 => {
                    let rest = &self.pending[at + PGID_MARKER.len()..];
                    let Some(close) = rest.iter().position(|b| *b == b']') else {
                        break; // the rest of the marker is still on its way
                    };
                    let pgid = std::str::from_utf8(&rest[..close])
                        .ok()
                        .and_then(|d| d.parse::<u32>().ok());
                    self.pgid_seen = true;
                    match pgid {
                        // Never 0 or 1: `kill -- -1` would signal every process of the user.
                        Some(p) if p > 1 => (Some(Marker::Pgid(p)), PGID_MARKER.len() + close + 1),
                        _ => (None, PGID_MARKER.len() + close + 1),
                    }
                }
                1 => (Some(Marker::Prompt), SUDO_PROMPT.len()),
                _ => (Some(Marker::Ready), SUDO_READY.len()),
            };
            out.extend_from_slice(&self.pending[..at]);
            self.pending.drain(..at + len);
            let done = matches!(marker, Some(Marker::Ready)) || (which == 0 && !self.sudo);
            events.extend(marker);
            if done {
                out.append(&mut self.pending);
                self.passthrough = true;
                return events;
            }
        }
        // Keep only what could be the start of a marker split across packets.
        let keep = PGID_MARKER.len() + 12;
        if self.pending.len() > keep {
            let cut = self.pending.len() - keep;
            out.extend(self.pending.drain(..cut));
        }
        events
    }

    /// Whatever is still held back (at the end of the command).
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.pending);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn signal_name(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT".into(),
        Sig::ALRM => "ALRM".into(),
        Sig::FPE => "FPE".into(),
        Sig::HUP => "HUP".into(),
        Sig::ILL => "ILL".into(),
        Sig::INT => "INT".into(),
        Sig::KILL => "KILL".into(),
        Sig::PIPE => "PIPE".into(),
        Sig::QUIT => "QUIT".into(),
        Sig::SEGV => "SEGV".into(),
        Sig::TERM => "TERM".into(),
        Sig::USR1 => "USR1".into(),
        Sig::Custom(name) => name.clone(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// TERM sent; KILL at this instant.
    Terminating(Instant),
    /// KILL sent; give up waiting at this instant.
    Killing(Instant),
}

/// Sends `sig` to the command: the `signal` request on its channel, and `kill` of its process
/// group on a second channel of `via` when the group is known (see the module docs).
async fn stop<S>(
    tx: &russh::ChannelWriteHalf<S>,
    sig: Sig,
    pgid: Option<u32>,
    via: Option<&Arc<Connection>>,
) where
    S: From<(russh::ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    let name = signal_name(&sig);
    let _ = tx.signal(sig).await;
    if let (Some(pgid), Some(conn)) = (pgid, via) {
        let conn = conn.clone();
        // Spawned: the kill must not hold up reading the command's last output.
        tokio::spawn(async move {
            let line = format!(
                "kill -s {name} -- -{pgid} 2>/dev/null || kill -s {name} {pgid} 2>/dev/null"
            );
            match conn.open_session().await {
                Ok(mut ch) => {
                    if ch.exec(false, line).await.is_ok() {
                        let _ = ch.eof().await;
                        let _ = tokio::time::timeout(Duration::from_secs(10), async {
                            while ch.wait().await.is_some() {}
                        })
                        .await;
                    }
                }
                Err(e) => tracing::warn!("cannot open a channel to kill process group {pgid}: {e}"),
            }
        });
    }
}

/// Runs `request` on `channel` until the command ends, the timeout expires, or `cancel` resolves.
/// `via` is the connection the channel belongs to, used to kill the command's process group from
/// a second channel. `on_progress` is called every `progress_interval` while it runs.
pub async fn run(
    channel: Channel<Msg>,
    via: Option<Arc<Connection>>,
    request: ExecRequest,
    options: &ExecOptions,
    cancel: impl Future<Output = ()>,
    mut on_progress: impl FnMut(Progress),
) -> Result<ExecOutcome, ExecError> {
    let started = Instant::now();
    let (mut rx, tx) = channel.split();
    tx.exec(true, with_pgid_marker(&request.command).as_bytes())
        .await?;

    let mut stdout = StreamCapture::new(options.keep_bytes, options.tail_bytes);
    let mut stderr = StreamCapture::new(options.keep_bytes, options.tail_bytes);
    let mut markers = MarkerFilter::new(request.sudo);
    let mut pgid: Option<u32> = None;
    let mut sudo_password = request.sudo_password;
    let mut prompts = 0u32;

    // stdin is written when `go` fires: at once, or for sudo once the command itself runs.
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let mut go = Some(go_tx);
    if !request.sudo {
        let _ = go.take().map(|g| g.send(()));
    }
    let stdin = request.stdin.unwrap_or_default();
    // `data_bytes` hands the owned bytes to the channel without another copy.
    let writer = async {
        if go_rx.await.is_err() {
            return Ok(());
        }
        if !stdin.is_empty() {
            tx.data_bytes(stdin).await?;
        }
        tx.eof().await
    };
    tokio::pin!(writer);
    tokio::pin!(cancel);

    let deadline = started + request.timeout;
    let mut phase = Phase::Running;
    let mut next_tick = started + options.progress_interval;
    let mut exit: Option<Exit> = None;
    let mut ending: Option<Ending> = None;
    let mut exit_seen_at: Option<Instant> = None;
    let mut confirmed = false;
    let mut got_close = false;
    let mut writer_done = false;
    let mut cancel_seen = false;

    loop {
        let mut wake = next_tick;
        match phase {
            Phase::Running => wake = wake.min(deadline),
            Phase::Terminating(at) | Phase::Killing(at) => wake = wake.min(at),
        }
        if let Some(t) = exit_seen_at {
            wake = wake.min(t + options.kill_grace);
        }
        tokio::select! {
            msg = rx.wait() => match msg {
                None => break,
                Some(ChannelMsg::Success) => confirmed = true,
                Some(ChannelMsg::Failure) if !confirmed && exit.is_none() => return Err(ExecError::Refused),
                Some(ChannelMsg::Data { data }) => stdout.push(&data),
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    let mut shown = Vec::new();
                    let events = markers.feed(&data, &mut shown);
                    stderr.push(&shown);
                    for event in events {
                        match event {
                            Marker::Pgid(p) => pgid = Some(p),
                            Marker::Ready => {
                                let _ = go.take().map(|g| g.send(()));
                            }
                            Marker::Prompt => {
                                prompts += 1;
                                let answer = if prompts == 1 { sudo_password.take() } else { None };
                                match answer {
                                    Some(password) => {
                                        tx.data_bytes(format!("{password}\n").into_bytes()).await?;
                                    }
                                    None => {
                                        ending = Some(Ending::SudoFailed(if prompts == 1 {
                                            "sudo asked for a password and this credential has none (set sudo_password_env or password_env)".into()
                                        } else {
                                            "sudo rejected the password".into()
                                        }));
                                        // End of input makes sudo give up; the command never ran.
                                        go = None;
                                        let _ = tx.eof().await;
                                    }
                                }
                            }
                        }
                    }
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => stderr.push(&data),
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    exit = Some(Exit::Code(exit_status));
                    exit_seen_at.get_or_insert_with(Instant::now);
                }
                Some(ChannelMsg::ExitSignal { signal_name: sig, core_dumped, .. }) => {
                    exit = Some(Exit::Signal { name: signal_name(&sig), core_dumped });
                    exit_seen_at.get_or_insert_with(Instant::now);
                }
                Some(ChannelMsg::Close) => {
                    got_close = true;
                    break;
                }
                Some(_) => {}
            },
            result = &mut writer, if !writer_done => {
                writer_done = true;
                if let Err(e) = result {
                    tracing::debug!("writing stdin failed: {e}");
                }
            }
            _ = &mut cancel, if !cancel_seen && phase == Phase::Running && exit.is_none() => {
                cancel_seen = true;
                ending = Some(Ending::Cancelled);
                stop(&tx, Sig::TERM, pgid, via.as_ref()).await;
                phase = Phase::Terminating(Instant::now() + options.kill_grace);
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if exit_seen_at.is_some_and(|t| now >= t + options.kill_grace) {
                    // The command exited but something it started keeps the output open.
                    break;
                }
                match phase {
                    Phase::Running if now >= deadline && exit.is_none() => {
                        ending = Some(Ending::TimedOut);
                        stop(&tx, Sig::TERM, pgid, via.as_ref()).await;
                        phase = Phase::Terminating(now + options.kill_grace);
                    }
                    Phase::Terminating(at) if now >= at => {
                        stop(&tx, Sig::KILL, pgid, via.as_ref()).await;
                        phase = Phase::Killing(now + options.kill_grace);
                    }
                    Phase::Killing(at) if now >= at => break,
                    _ => {}
                }
                if now >= next_tick {
                    on_progress(Progress {
                        elapsed: now - started,
                        timeout: request.timeout,
                        stdout_bytes: stdout.total(),
                        stderr_bytes: stderr.total(),
                    });
                    next_tick = now + options.progress_interval;
                }
            }
        }
    }
    if !got_close {
        let _ = tx.close().await;
    }
    let mut rest = Vec::new();
    markers.finish(&mut rest);
    stderr.push(&rest);
    let ending = match ending {
        Some(e) => e,
        None if got_close || exit.is_some() => Ending::Exited,
        None => Ending::ConnectionLost,
    };
    let stopped = matches!(ending, Ending::TimedOut | Ending::Cancelled)
        .then_some(exit.is_some() || got_close);
    Ok(ExecOutcome {
        stdout,
        stderr,
        exit,
        ending,
        stopped,
        duration: started.elapsed(),
    })
}

#[cfg(test)]
mod tests;
