//! `ssh_tunnel_start`, `ssh_tunnel_list`, `ssh_tunnel_stop`.
//!
//! ```text
//! ssh_tunnel_start {credentialName, type: "local" | "remote", localPort, remoteHost, remotePort}
//! ssh_tunnel_list  {}
//! ssh_tunnel_stop  {tunnelId}
//! ```

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::{Deserialize, Serialize};

use super::{failure, structured};
use crate::server::SshMcp;
use crate::tunnels::{TunnelKind, TunnelRequest, TunnelView};

/// Arguments of `ssh_tunnel_start`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartParams {
    /// Credential (host) whose connection carries the tunnel.
    pub credential_name: String,
    /// `local`: listen on 127.0.0.1:localPort here and connect to remoteHost:remotePort from the
    /// host. `remote`: the host listens on remoteHost:remotePort and connects to 127.0.0.1:localPort here.
    #[serde(rename = "type")]
    pub kind: TunnelKind,
    /// Port here (local: where to listen, 0 picks a free one; remote: where connections go).
    pub local_port: u16,
    /// local: host to reach from the server (e.g. 127.0.0.1 for a service on the host itself).
    /// remote: address the server listens on (loopback unless the operator allows others).
    pub remote_host: String,
    /// local: port to reach from the server. remote: port the server listens on (0: it picks).
    pub remote_port: u16,
}

/// Arguments of `ssh_tunnel_stop`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StopParams {
    /// Tunnel id from ssh_tunnel_start or ssh_tunnel_list.
    pub tunnel_id: String,
}

/// Result of `ssh_tunnel_list`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelList {
    /// This client's tunnels, oldest first.
    pub tunnels: Vec<TunnelView>,
}

fn line(t: &TunnelView) -> String {
    let route = match t.kind {
        TunnelKind::Local => format!(
            "127.0.0.1:{} here -> {}:{} from {}",
            t.local_port, t.remote_host, t.remote_port, t.credential_name
        ),
        TunnelKind::Remote => format!(
            "{}:{} on {} -> 127.0.0.1:{} here",
            t.remote_host, t.remote_port, t.credential_name, t.local_port
        ),
    };
    format!(
        "{} ({}) {route}, {} connections, {}{}",
        t.tunnel_id,
        t.kind,
        t.connections,
        t.status,
        t.ended
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    )
}

#[tool_router(router = tunnel_router, vis = "pub(crate)")]
impl SshMcp {
    /// Starts a port forward.
    #[tool(
        name = "ssh_tunnel_start",
        description = "Forward a port over an SSH connection. type local: listen on 127.0.0.1:localPort on this machine \
(only loopback; 0 picks a free port) and carry each connection to remoteHost:remotePort as seen from the host. type \
remote: the host listens on remoteHost:remotePort (loopback only unless the operator allows another address) and \
carries each connection to 127.0.0.1:localPort here. The tunnel lasts until ssh_tunnel_stop or until its connection \
closes.",
        output_schema = schema_for_output::<TunnelView>(),
        annotations(destructive_hint = true, open_world_hint = true, idempotent_hint = false)
    )]
    async fn ssh_tunnel_start(
        &self,
        Parameters(p): Parameters<StartParams>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let state = self.state();
        let credential = match state.credentials.get(&p.credential_name) {
            Ok(c) => c,
            Err(e) => return Ok(failure(e.to_string())),
        };
        if p.remote_host.is_empty() || p.remote_host.len() > 255 {
            return Ok(failure("remoteHost must be a host name or address"));
        }
        if p.kind == TunnelKind::Local && p.remote_port == 0 {
            return Ok(failure("remotePort must be 1 to 65535 for a local tunnel"));
        }
        if p.kind == TunnelKind::Remote && p.local_port == 0 {
            return Ok(failure("localPort must be 1 to 65535 for a remote tunnel"));
        }
        match state
            .tunnels
            .start(
                self.owner_id(),
                TunnelRequest {
                    credential,
                    kind: p.kind,
                    local_port: p.local_port,
                    remote_host: p.remote_host,
                    remote_port: p.remote_port,
                },
            )
            .await
        {
            Ok(t) => {
                let view = t.view();
                Ok(structured(format!("started {}", line(&view)), &view, false))
            }
            Err(e) => Ok(failure(e.to_string())),
        }
    }

    /// Lists this client's tunnels.
    #[tool(
        name = "ssh_tunnel_list",
        description = "List this client's tunnels: id, type, ports, connections carried, and whether each is still active.",
        output_schema = schema_for_output::<TunnelList>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn ssh_tunnel_list(&self) -> Result<CallToolResult, rmcp::ErrorData> {
        let tunnels: Vec<TunnelView> = self
            .state()
            .tunnels
            .list(self.owner_id())
            .iter()
            .map(|t| t.view())
            .collect();
        let text = if tunnels.is_empty() {
            "no tunnels".to_owned()
        } else {
            tunnels.iter().map(line).collect::<Vec<_>>().join("\n")
        };
        Ok(structured(text, &TunnelList { tunnels }, false))
    }

    /// Stops a tunnel.
    #[tool(
        name = "ssh_tunnel_stop",
        description = "Stop a tunnel: its listener closes and the connections it carries end.",
        output_schema = schema_for_output::<TunnelView>(),
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = true, idempotent_hint = false)
    )]
    async fn ssh_tunnel_stop(
        &self,
        Parameters(p): Parameters<StopParams>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        match self
            .state()
            .tunnels
            .stop(self.owner_id(), &p.tunnel_id)
            .await
        {
            Ok(t) => {
                let view = t.view();
                Ok(structured(format!("stopped {}", line(&view)), &view, false))
            }
            Err(e) => Ok(failure(e.to_string())),
        }
    }
}
