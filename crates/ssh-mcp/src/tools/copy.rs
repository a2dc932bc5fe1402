//! `scp_copy` (one file over SFTP) and `rsync_copy` (a file or tree through the local rsync).
//!
//! ```text
//! scp_copy   {credentialName, localPath, remotePath, direction: "toRemote" | "fromRemote"}
//! rsync_copy {credentialName, localPath, remotePath, direction, timeout?: ms}
//! ```

use std::time::Duration;

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::Deserialize;

use super::{failure, structured};
use crate::copy::{self, CopyLimits, CopyOutcome, Direction};
use crate::server::SshMcp;

/// Arguments of `scp_copy` and `rsync_copy`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyParams {
    /// Credential (host) to copy to or from.
    pub credential_name: String,
    /// Path on the machine running ssh-mcp.
    pub local_path: String,
    /// Path on the host (relative paths and `~/` are under the login directory).
    pub remote_path: String,
    /// `toRemote` (upload) or `fromRemote` (download).
    pub direction: Direction,
    /// rsync_copy only: milliseconds before rsync is stopped (default 600000).
    pub timeout: Option<u64>,
}

fn summary(o: &CopyOutcome) -> String {
    let arrow = match o.direction {
        Direction::ToRemote => format!(
            "{} -> {}:{}",
            o.local_path, o.credential_name, o.remote_path
        ),
        Direction::FromRemote => format!(
            "{}:{} -> {}",
            o.credential_name, o.remote_path, o.local_path
        ),
    };
    let mut text = format!(
        "copied {} bytes over {} ({arrow}) in {} ms",
        o.bytes, o.method, o.duration_ms
    );
    if let Some(files) = o.files.filter(|_| o.method == "rsync") {
        text.push_str(&format!(", {files} files transferred"));
    }
    if let Some(sum) = &o.sha256 {
        text.push_str(&format!("\nsha256 {sum}"));
    }
    text
}

impl SshMcp {
    fn copy_limits(&self) -> CopyLimits {
        let settings = &self.state().settings;
        CopyLimits {
            max_bytes: settings.limits.copy_max_bytes,
            local_dirs: settings.copy_local_dirs.clone(),
        }
    }
}

#[tool_router(router = copy_router, vis = "pub(crate)")]
impl SshMcp {
    /// Copies one file over SFTP.
    #[tool(
        name = "scp_copy",
        description = "Copy one file between this machine and an SSH host over SFTP (on the pooled, host-key-checked \
connection). direction toRemote uploads localPath to remotePath, fromRemote downloads. A remotePath (toRemote) or \
localPath (fromRemote) that is a directory receives the file under its own name. Returns the bytes copied and their \
SHA-256. Size-capped by the operator (limits.copy_max_bytes).",
        output_schema = schema_for_output::<CopyOutcome>(),
        annotations(destructive_hint = true, open_world_hint = true, idempotent_hint = false)
    )]
    async fn scp_copy(
        &self,
        Parameters(p): Parameters<CopyParams>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let state = self.state();
        let credential = match state.credentials.get(&p.credential_name) {
            Ok(c) => c,
            Err(e) => return Ok(failure(e.to_string())),
        };
        match copy::sftp_copy(
            &state.pool,
            &credential,
            &p.local_path,
            &p.remote_path,
            p.direction,
            &self.copy_limits(),
        )
        .await
        {
            Ok(outcome) => Ok(structured(summary(&outcome), &outcome, false)),
            Err(e) => Ok(failure(format!("scp_copy: {e}"))),
        }
    }

    /// Copies a file or tree with rsync.
    #[tool(
        name = "rsync_copy",
        description = "Copy a file or directory tree between this machine and an SSH host with rsync (recursive, keeps \
links, permissions and times; a trailing / on a source means its contents, as in rsync). rsync runs from an argument \
list, never a shell, and its ssh trusts only the host key ssh-mcp verified. Works with key files and ssh-agent \
credentials (not passwords, encrypted keys without the agent, or jump hosts: use scp_copy for those). Size-capped.",
        output_schema = schema_for_output::<CopyOutcome>(),
        annotations(destructive_hint = true, open_world_hint = true, idempotent_hint = false)
    )]
    async fn rsync_copy(
        &self,
        Parameters(p): Parameters<CopyParams>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let state = self.state();
        let credential = match state.credentials.get(&p.credential_name) {
            Ok(c) => c,
            Err(e) => return Ok(failure(e.to_string())),
        };
        if let Some(why) = copy::rsync_unsupported(&credential) {
            return Ok(failure(format!("rsync_copy: {why}")));
        }
        let max = state.settings.limits.max_timeout;
        let timeout = match p.timeout {
            None => Duration::from_secs(600).min(max),
            Some(0) => return Ok(failure("timeout must be greater than 0 (milliseconds)")),
            Some(ms) if Duration::from_millis(ms) > max => {
                return Ok(failure(format!(
                    "timeout {ms} ms is above the limit of {} ms set by the operator",
                    max.as_millis()
                )));
            }
            Some(ms) => Duration::from_millis(ms),
        };
        // The pooled connection checks the host key under the credential's policy; rsync's ssh
        // is then pinned to the key it accepted.
        let connection = match state.pool.connection(&credential.name).await {
            Ok(c) => c,
            Err(e) => return Ok(failure(format!("rsync_copy: {e}"))),
        };
        match copy::rsync_copy(
            connection,
            &credential,
            &p.local_path,
            &p.remote_path,
            p.direction,
            &self.copy_limits(),
            timeout,
        )
        .await
        {
            Ok(outcome) => Ok(structured(summary(&outcome), &outcome, false)),
            Err(e) => Ok(failure(format!("rsync_copy: {e}"))),
        }
    }
}
