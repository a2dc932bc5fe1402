//! `ssh_exec` and `ssh_exec_raw`.
//!
//! ```text
//! ssh_exec     {credentialName, command: "ls -l /srv", timeout?: ms, stdin?, cwd?, env?, sudo?}
//! ssh_exec_raw {credentialName, command: ["grep", "-r", "a b", "/etc"], timeout?, stdin?, cwd?, env?, sudo?}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ProgressNotificationParam};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use serde::{Deserialize, Serialize};

use super::{failure, structured};
use crate::exec::{self, Ending, ExecOptions, ExecRequest, Exit};
use crate::output::{StoredOutput, Stream};
use crate::quote::join_argv;
use crate::server::SshMcp;

/// Arguments of `ssh_exec`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecParams {
    /// Credential (host) to run on, as listed by list_credentials.
    pub credential_name: String,
    /// Shell command line, run by the remote user's login shell (pipes, `&&`, globs work).
    pub command: String,
    /// Milliseconds before the command is stopped (TERM, then KILL). Default 60000.
    pub timeout: Option<u64>,
    /// Text sent to the command's stdin, followed by end-of-input. Without it stdin is closed at once.
    pub stdin: Option<String>,
    /// Directory to run in (the command does not run if it does not exist).
    pub cwd: Option<String>,
    /// Environment variables to set for the command.
    pub env: Option<BTreeMap<String, String>>,
    /// Run as root through `sudo -S`; the password comes from the credential's configuration,
    /// never from the call.
    #[serde(default)]
    pub sudo: bool,
}

/// Arguments of `ssh_exec_raw`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecRawParams {
    /// Credential (host) to run on, as listed by list_credentials.
    pub credential_name: String,
    /// Program and arguments. Each word is quoted, so nothing in it is shell syntax
    /// (`;`, `$(...)`, quotes, globs and newlines arrive as literal text).
    pub command: Vec<String>,
    /// Milliseconds before the command is stopped (TERM, then KILL). Default 60000.
    pub timeout: Option<u64>,
    /// Text sent to the command's stdin, followed by end-of-input.
    pub stdin: Option<String>,
    /// Directory to run in.
    pub cwd: Option<String>,
    /// Environment variables to set for the command.
    pub env: Option<BTreeMap<String, String>>,
    /// Run as root through `sudo -S` (password from the credential's configuration).
    #[serde(default)]
    pub sudo: bool,
}

/// The result of `ssh_exec` and `ssh_exec_raw`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    /// Credential the command ran on.
    pub credential_name: String,
    /// `exited`, `timed-out`, `cancelled`, `connection-lost` or `sudo-failed`.
    pub status: String,
    /// Exit status, when the command exited.
    pub exit_code: Option<u32>,
    /// Signal (e.g. `TERM`), when a signal ended it.
    pub signal: Option<String>,
    /// After a timeout or cancellation: whether the server reported that the command ended.
    pub stopped: Option<bool>,
    /// Standard output (head and tail with a marker when longer than the cap).
    pub stdout: String,
    /// Standard error (same cap).
    pub stderr: String,
    /// Whether `stdout` was cut.
    pub stdout_truncated: bool,
    /// Whether `stderr` was cut.
    pub stderr_truncated: bool,
    /// Bytes written to stdout in all.
    pub stdout_bytes: u64,
    /// Bytes written to stderr in all.
    pub stderr_bytes: u64,
    /// Id for `ssh_output_read` when something was cut.
    pub output_id: Option<String>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Explanation for anything other than a normal exit.
    pub message: Option<String>,
}

/// Everything both exec tools take, after their command is turned into a line.
struct Call {
    credential_name: String,
    command: String,
    timeout: Option<u64>,
    stdin: Option<String>,
    cwd: Option<String>,
    env: Option<BTreeMap<String, String>>,
    sudo: bool,
}

#[tool_router(router = exec_router, vis = "pub(crate)")]
impl SshMcp {
    /// Runs a shell command line on a host.
    #[tool(
        name = "ssh_exec",
        description = "Run a shell command on an SSH host and return stdout, stderr and the exit code. \
The command line is interpreted by the remote shell. Stdin gets `stdin` (if given) and then end-of-input. \
`timeout` (ms, default 60000) stops the remote command for real. Long output is cut to head and tail; \
page through the rest with ssh_output_read.",
        output_schema = schema_for_output::<ExecResult>(),
        annotations(destructive_hint = true, open_world_hint = true, idempotent_hint = false)
    )]
    async fn ssh_exec(
        &self,
        Parameters(p): Parameters<ExecParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let call = Call {
            credential_name: p.credential_name,
            command: p.command,
            timeout: p.timeout,
            stdin: p.stdin,
            cwd: p.cwd,
            env: p.env,
            sudo: p.sudo,
        };
        Ok(self.run_exec(call, context).await)
    }

    /// Runs an argument vector on a host, every word quoted.
    #[tool(
        name = "ssh_exec_raw",
        description = "Run a program with an argument array on an SSH host. Every word is quoted for the remote \
shell, so arguments are passed literally (no globbing, variables, `;`, `$(...)` or redirection). \
Same options and result as ssh_exec.",
        output_schema = schema_for_output::<ExecResult>(),
        annotations(destructive_hint = true, open_world_hint = true, idempotent_hint = false)
    )]
    async fn ssh_exec_raw(
        &self,
        Parameters(p): Parameters<ExecRawParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let command = match join_argv(&p.command) {
            Ok(c) => c,
            Err(e) => return Ok(failure(e.to_string())),
        };
        let call = Call {
            credential_name: p.credential_name,
            command,
            timeout: p.timeout,
            stdin: p.stdin,
            cwd: p.cwd,
            env: p.env,
            sudo: p.sudo,
        };
        Ok(self.run_exec(call, context).await)
    }
}

fn status_name(ending: &Ending) -> &'static str {
    match ending {
        Ending::Exited => "exited",
        Ending::TimedOut => "timed-out",
        Ending::Cancelled => "cancelled",
        Ending::ConnectionLost => "connection-lost",
        Ending::SudoFailed(_) => "sudo-failed",
    }
}

impl SshMcp {
    async fn run_exec(&self, call: Call, context: RequestContext<RoleServer>) -> CallToolResult {
        let state = self.state();
        let limits = &state.settings.limits;
        let timeout = match call.timeout {
            None => limits.default_timeout,
            Some(0) => return failure("timeout must be greater than 0 (milliseconds)"),
            Some(ms) if Duration::from_millis(ms) > limits.max_timeout => {
                return failure(format!(
                    "timeout {ms} ms is above the limit of {} ms set by the operator",
                    limits.max_timeout.as_millis()
                ));
            }
            Some(ms) => Duration::from_millis(ms),
        };
        if call
            .stdin
            .as_ref()
            .is_some_and(|s| s.len() > limits.max_stdin_bytes)
        {
            return failure(format!(
                "stdin is larger than the limit of {} bytes",
                limits.max_stdin_bytes
            ));
        }
        let credential = match state.credentials.get(&call.credential_name) {
            Ok(c) => c,
            Err(e) => return failure(e.to_string()),
        };
        let script = match exec::script(
            &call.command,
            call.cwd.as_deref(),
            &call.env.unwrap_or_default(),
        ) {
            Ok(s) => s,
            Err(e) => return failure(e.to_string()),
        };
        let (command, sudo_password) = if call.sudo {
            let var = credential
                .sudo_password_env
                .as_ref()
                .or(credential.password_env.as_ref());
            (
                exec::sudo_wrap(&script),
                var.and_then(|v| std::env::var(v).ok()),
            )
        } else {
            (script, None)
        };

        let (lease, channel) = match state.pool.open_session(&credential.name).await {
            Ok(x) => x,
            Err(e) => return failure(e.to_string()),
        };

        // Progress notifications go through one task so they reach the client in order.
        let progress_token = context.meta.get_progress_token();
        let (progress_tx, mut progress_rx) =
            tokio::sync::mpsc::unbounded_channel::<exec::Progress>();
        let forwarder = progress_token.map(|token| {
            let peer = context.peer.clone();
            tokio::spawn(async move {
                while let Some(p) = progress_rx.recv().await {
                    let message = format!(
                        "running for {:.0}s; {} bytes of stdout, {} of stderr so far",
                        p.elapsed.as_secs_f64(),
                        p.stdout_bytes,
                        p.stderr_bytes
                    );
                    let param =
                        ProgressNotificationParam::new(token.clone(), p.elapsed.as_millis() as f64)
                            .with_total(p.timeout.as_millis() as f64)
                            .with_message(message);
                    if peer.notify_progress(param).await.is_err() {
                        break;
                    }
                }
            })
        });

        let options = ExecOptions {
            keep_bytes: limits.keep_output_bytes,
            tail_bytes: limits.output_bytes / 2 + 4,
            kill_grace: limits.kill_grace,
            progress_interval: limits.progress_interval,
        };
        let request = ExecRequest {
            command,
            stdin: call.stdin.map(String::into_bytes),
            timeout,
            sudo: call.sudo,
            sudo_password,
        };
        let outcome = exec::run(
            channel,
            Some(lease.connection.clone()),
            request,
            &options,
            context.ct.cancelled(),
            |p| {
                let _ = progress_tx.send(p);
            },
        )
        .await;
        drop(progress_tx);
        if let Some(f) = forwarder {
            let _ = f.await;
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => return failure(format!("{} on \"{}\": {e}", "ssh_exec", credential.name)),
        };
        if outcome.ending == Ending::ConnectionLost {
            state.pool.forget(&credential.name, &lease.connection).await;
        }
        drop(lease);

        // Keep the full (bounded) output only when the result had to cut something.
        let cap = limits.output_bytes;
        let cut = outcome.stdout.total() > cap as u64 || outcome.stderr.total() > cap as u64;
        let output_id = cut.then(|| state.outputs.next_id());
        let (stdout, stdout_truncated) =
            outcome
                .stdout
                .render(cap, Stream::Stdout, output_id.as_deref());
        let (stderr, stderr_truncated) =
            outcome
                .stderr
                .render(cap, Stream::Stderr, output_id.as_deref());
        let (exit_code, signal) = match &outcome.exit {
            Some(Exit::Code(c)) => (Some(*c), None),
            Some(Exit::Signal { name, .. }) => (None, Some(name.clone())),
            None => (None, None),
        };
        let ms = outcome.duration.as_millis() as u64;
        let stop_note = |what: &str| match outcome.stopped {
            Some(true) => format!(
                "{what}: the remote command was sent TERM (then KILL after {} ms if needed) and the server reported it ended{}",
                limits.kill_grace.as_millis(),
                signal
                    .as_deref()
                    .map(|s| format!(" (signal {s})"))
                    .unwrap_or_default()
            ),
            _ => format!(
                "{what}: the remote command was sent TERM and KILL, but the server did not report that it ended; it may still be running on the host"
            ),
        };
        let message = match &outcome.ending {
            Ending::Exited => None,
            Ending::TimedOut => Some(stop_note(&format!(
                "timed out after {} ms",
                timeout.as_millis()
            ))),
            Ending::Cancelled => Some(stop_note("cancelled by the client")),
            Ending::ConnectionLost => Some(format!(
                "the connection to \"{}\" was lost after {ms} ms while the command ran; it may or may not have finished on the host. \
                 The next call reconnects",
                credential.name
            )),
            Ending::SudoFailed(why) => Some(format!("{why}; the command did not run")),
        };
        let result = ExecResult {
            credential_name: credential.name.clone(),
            status: status_name(&outcome.ending).to_owned(),
            exit_code,
            signal: signal.clone(),
            stopped: outcome.stopped,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            stdout_bytes: outcome.stdout.total(),
            stderr_bytes: outcome.stderr.total(),
            output_id: output_id.clone(),
            duration_ms: ms,
            message,
        };
        let text = summary(&result);
        if let Some(id) = output_id {
            let (out_total, err_total) = (outcome.stdout.total(), outcome.stderr.total());
            state.outputs.insert(
                id,
                StoredOutput {
                    stdout: outcome.stdout.into_kept(),
                    stderr: outcome.stderr.into_kept(),
                    stdout_total: out_total,
                    stderr_total: err_total,
                },
            );
        }
        let is_error = outcome.ending != Ending::Exited;
        structured(text, &result, is_error)
    }
}

/// The text content: status line, then each non-empty stream.
fn summary(r: &ExecResult) -> String {
    let mut text = match (&r.exit_code, &r.signal) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "no exit status".to_owned(),
    };
    text.push_str(&format!(" ({} ms on {})", r.duration_ms, r.credential_name));
    if let Some(m) = &r.message {
        text.push_str(&format!("\n{m}"));
    }
    if let Some(id) = &r.output_id {
        text.push_str(&format!("\noutput cut; full output kept as outputId {id}"));
    }
    if !r.stdout.is_empty() {
        text.push_str("\n--- stdout ---\n");
        text.push_str(&r.stdout);
    }
    if !r.stderr.is_empty() {
        text.push_str("\n--- stderr ---\n");
        text.push_str(&r.stderr);
    }
    text
}
