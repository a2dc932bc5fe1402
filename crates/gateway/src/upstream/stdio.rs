//! A stdio upstream: a child process speaking newline-delimited JSON-RPC.

use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use std::collections::VecDeque;

use tokio::io::BufReader;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use toolgate_wire::line::{Line, LineReader};
use toolgate_wire::{Limits, Message};

use super::connection::{Connection, Io, Outbound};
use super::{Upstream, UpstreamError};
use crate::config::{ServerConfig, Transport};

/// Lines queued for a child that does not read its stdin; beyond this, sends fail.
const WRITE_QUEUE: usize = 1024;

/// Writes lines to a child's stdin: straight from the caller while the pipe has room (no task
/// hand-off on the hot path), through a background task once it has not.
struct StdinWriter {
    pipe: pipe::Sender,
    backlog: Mutex<Backlog>,
    wake: Notify,
}

#[derive(Default)]
struct Backlog {
    lines: VecDeque<Vec<u8>>,
    closed: bool,
}

impl StdinWriter {
    fn write(&self, line: String) -> Result<(), &'static str> {
        let mut backlog = self.backlog.lock().unwrap();
        if backlog.closed {
            return Err("the server's input is closed");
        }
        if !backlog.lines.is_empty() {
            // Earlier lines wait: keep the order.
            if backlog.lines.len() >= WRITE_QUEUE {
                return Err("the server is not reading its input");
            }
            backlog.lines.push_back(line.into_bytes());
            return Ok(());
        }
        let bytes = line.into_bytes();
        let written = match self.pipe.try_write(&bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(_) => {
                backlog.closed = true;
                return Err("the server's input is closed");
            }
        };
        if written < bytes.len() {
            backlog.lines.push_back(bytes[written..].to_vec());
            self.wake.notify_one();
        }
        Ok(())
    }

    fn close(&self) {
        self.backlog.lock().unwrap().closed = true;
        self.wake.notify_one();
    }

    /// Drains the backlog whenever there is one; ends (closing the pipe when the last
    /// reference goes) once closed.
    async fn drain(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            loop {
                let front = {
                    let backlog = self.backlog.lock().unwrap();
                    if backlog.closed {
                        return;
                    }
                    match backlog.lines.front() {
                        Some(line) => line.clone(),
                        None => break,
                    }
                };
                match self.pipe.try_write(&front) {
                    Ok(n) => {
                        let mut backlog = self.backlog.lock().unwrap();
                        if n == front.len() {
                            backlog.lines.pop_front();
                        } else if let Some(line) = backlog.lines.front_mut() {
                            line.drain(..n);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if self.pipe.writable().await.is_err() {
                            self.backlog.lock().unwrap().closed = true;
                            return;
                        }
                    }
                    Err(_) => {
                        self.backlog.lock().unwrap().closed = true;
                        return;
                    }
                }
            }
        }
    }
}

struct StdioOutbound {
    server: Arc<str>,
    stdin: Arc<StdinWriter>,
    child: Mutex<Option<Child>>,
}

impl StdioOutbound {
    fn push(&self, message: Message) -> Result<(), UpstreamError> {
        self.stdin
            .write(message.to_line())
            .map_err(|reason| UpstreamError::Unavailable {
                server: self.server.clone(),
                reason: reason.into(),
            })
    }
}

impl Outbound for StdioOutbound {
    fn send_request(
        &self,
        _: &Arc<Connection>,
        message: Message,
    ) -> Result<Option<Io>, UpstreamError> {
        self.push(message).map(|()| None)
    }
    fn send(&self, _: &Arc<Connection>, message: Message) -> Result<(), UpstreamError> {
        self.push(message)
    }
}

impl Drop for StdioOutbound {
    /// Stops the child as MCP's stdio transport prescribes: close its input, give it time to
    /// exit, then kill it.
    fn drop(&mut self) {
        self.stdin.close();
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return;
        };
        let server = self.server.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if tokio::time::timeout(Duration::from_secs(2), child.wait()).await.is_err() {
                    tracing::debug!(%server, "upstream did not exit after its input closed; killing it");
                    let _ = child.kill().await;
                }
            });
        }
    }
}

/// Starts the child process and its reader and writer tasks.
pub(super) fn spawn(
    config: Arc<ServerConfig>,
    upstream: Weak<Upstream>,
    max_line: usize,
) -> Result<Arc<Connection>, UpstreamError> {
    let Transport::Stdio {
        command,
        args,
        env,
        cwd,
    } = &config.transport
    else {
        unreachable!("stdio::spawn is only called for stdio servers")
    };
    let server: Arc<str> = Arc::from(config.name.as_str());
    let mut cmd = Command::new(command);
    cmd.args(args)
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|e| UpstreamError::Unavailable {
        server: server.clone(),
        reason: format!("cannot start {command:?}: {e}"),
    })?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let pipe = stdin
        .into_owned_fd()
        .and_then(pipe::Sender::from_owned_fd)
        .map_err(|e| UpstreamError::Unavailable {
            server: server.clone(),
            reason: format!("cannot use the server's input: {e}"),
        })?;
    let stdin = Arc::new(StdinWriter {
        pipe,
        backlog: Mutex::new(Backlog::default()),
        wake: Notify::new(),
    });
    tokio::spawn(stdin.clone().drain());
    let outbound = StdioOutbound {
        server: server.clone(),
        stdin,
        child: Mutex::new(Some(child)),
    };
    let conn = Connection::new(config.clone(), upstream, Box::new(outbound));

    tokio::spawn(read_messages(Arc::downgrade(&conn), stdout, max_line));
    tokio::spawn(log_stderr(server, stderr));
    Ok(conn)
}

async fn read_messages(
    conn: Weak<Connection>,
    stdout: tokio::process::ChildStdout,
    max_line: usize,
) {
    let mut reader = LineReader::new(BufReader::with_capacity(64 * 1024, stdout), max_line);
    let limits = Limits {
        max_bytes: max_line,
        ..Limits::default()
    };
    let reason = loop {
        let line = match reader.next_line().await {
            Ok(Line::Data(line)) => line,
            Ok(Line::TooLong(n)) => {
                if let Some(c) = conn.upgrade() {
                    tracing::warn!(server = %c.server, bytes = n, "upstream sent a line over the limit; dropped");
                }
                continue;
            }
            Ok(Line::Eof) => break "the server closed its output (exited)".to_string(),
            Err(e) => break format!("reading the server's output failed: {e}"),
        };
        let Some(c) = conn.upgrade() else { return };
        match Message::parse(&line, &limits) {
            Ok(message) => c.dispatch(message, None),
            Err(e) => {
                tracing::warn!(server = %c.server, error = %e, "upstream sent an invalid message; dropped")
            }
        }
    };
    if let Some(c) = conn.upgrade() {
        c.close(&reason);
    }
}

async fn log_stderr(server: Arc<str>, stderr: tokio::process::ChildStderr) {
    let mut lines = LineReader::new(BufReader::new(stderr), 8 * 1024);
    while let Ok(line) = lines.next_line().await {
        match line {
            Line::Data(line) => {
                tracing::info!(target: "toolgate::upstream::stderr", %server, "{}", String::from_utf8_lossy(&line))
            }
            Line::TooLong(n) => {
                tracing::info!(target: "toolgate::upstream::stderr", %server, "({n} bytes of output skipped)")
            }
            Line::Eof => return,
        }
    }
}
