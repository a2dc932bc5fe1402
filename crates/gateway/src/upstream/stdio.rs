//! A stdio upstream: a child process speaking newline-delimited JSON-RPC.

use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use toolgate_wire::line::{Line, LineReader};
use toolgate_wire::{Limits, Message};

use super::connection::{Connection, Outbound};
use super::{Upstream, UpstreamError};
use crate::config::{ServerConfig, Transport};

/// Lines queued for a child that does not read its stdin; beyond this, sends fail.
const WRITE_QUEUE: usize = 1024;

struct StdioOutbound {
    server: Arc<str>,
    lines: mpsc::Sender<String>,
    child: Mutex<Option<Child>>,
}

impl StdioOutbound {
    fn push(&self, message: Message) -> Result<(), UpstreamError> {
        self.lines
            .try_send(message.to_line())
            .map_err(|e| UpstreamError::Unavailable {
                server: self.server.clone(),
                reason: match e {
                    mpsc::error::TrySendError::Full(_) => {
                        "the server is not reading its input".into()
                    }
                    mpsc::error::TrySendError::Closed(_) => "the server's input is closed".into(),
                },
            })
    }
}

impl Outbound for StdioOutbound {
    fn send_request(&self, _: &Arc<Connection>, message: Message) -> Result<(), UpstreamError> {
        self.push(message)
    }
    fn send(&self, _: &Arc<Connection>, message: Message) -> Result<(), UpstreamError> {
        self.push(message)
    }
}

impl Drop for StdioOutbound {
    /// Stops the child as MCP's stdio transport prescribes: close its input (the writer task
    /// ends when `lines` is dropped right after this), give it time to exit, then kill it.
    fn drop(&mut self) {
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

    let (lines, lines_rx) = mpsc::channel(WRITE_QUEUE);
    let outbound = StdioOutbound {
        server: server.clone(),
        lines,
        child: Mutex::new(Some(child)),
    };
    let conn = Connection::new(config.clone(), upstream, Box::new(outbound));

    tokio::spawn(write_lines(stdin, lines_rx));
    tokio::spawn(read_messages(Arc::downgrade(&conn), stdout, max_line));
    tokio::spawn(log_stderr(server, stderr));
    Ok(conn)
}

async fn write_lines(mut stdin: tokio::process::ChildStdin, mut lines: mpsc::Receiver<String>) {
    while let Some(line) = lines.recv().await {
        if stdin.write_all(line.as_bytes()).await.is_err() {
            return;
        }
        // Flush only when the queue is empty: batches writes under load, no delay when idle.
        if lines.is_empty() && stdin.flush().await.is_err() {
            return;
        }
    }
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
