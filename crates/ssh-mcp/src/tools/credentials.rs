//! `list_credentials`, `add_credential`, `remove_credential`.
//!
//! ```text
//! list_credentials  {}
//! add_credential    {name, host, username, privateKeyPath, port?, jump?, hostKeyFingerprint?}
//! remove_credential {name}
//! ```
//! Runtime credentials live in memory only, get the config's `default_host_key` policy (or a
//! pinned fingerprint), and can use a key file only: a password from an environment variable
//! would let a caller send any of this process's environment to a host of its choosing.

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::{Deserialize, Serialize};

use super::{failure, structured};
use crate::config::{DEFAULT_CONNECT_TIMEOUT, expand_home};
use crate::credentials::{Credential, CredentialView, Origin};
use crate::host_keys::HostKeyPolicy;
use crate::server::SshMcp;

/// Arguments of `add_credential`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddParams {
    /// Name for the new credential (1 to 64 of A-Z a-z 0-9 _ . - @ :).
    pub name: String,
    /// Host name or address.
    pub host: String,
    /// Remote user.
    pub username: String,
    /// Path of a private key file on the machine running ssh-mcp (OpenSSH or PEM format).
    pub private_key_path: String,
    /// SSH port (default 22).
    pub port: Option<u16>,
    /// Existing credential to jump through.
    pub jump: Option<String>,
    /// Pin the host key to this fingerprint (`SHA256:...`, as `ssh-keygen -lf` prints it).
    pub host_key_fingerprint: Option<String>,
}

/// Arguments of `remove_credential`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoveParams {
    /// Credential to remove.
    pub name: String,
}

/// The result of `list_credentials`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialList {
    /// The credentials, by name. Never holds key contents, passwords or environment values.
    pub credentials: Vec<CredentialView>,
    /// Whether add_credential / remove_credential are enabled.
    pub runtime_credentials: bool,
}

/// The result of `add_credential`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialAdded {
    /// The new credential as list_credentials shows it.
    pub credential: CredentialView,
}

/// The result of `remove_credential`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRemoved {
    /// The name removed.
    pub removed: String,
}

fn line(v: &CredentialView) -> String {
    format!(
        "{}: {}@{}:{} via {}{} (host key: {}, from {:?}{})",
        v.name,
        v.username,
        v.host,
        v.port,
        if v.auth.is_empty() {
            "nothing".to_owned()
        } else {
            v.auth.join(", ")
        },
        v.jump
            .as_deref()
            .map(|j| format!(", jump {j}"))
            .unwrap_or_default(),
        v.host_key_policy,
        v.origin,
        if v.connected { ", connected" } else { "" }
    )
}

#[tool_router(router = credential_router, vis = "pub(crate)")]
impl SshMcp {
    /// Lists the configured hosts.
    #[tool(
        name = "list_credentials",
        description = "List the SSH credentials (hosts) that ssh_exec can use: name, host, port, user, \
authentication methods and host-key policy. Never shows keys, passwords or secrets.",
        output_schema = schema_for_output::<CredentialList>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_credentials(&self) -> Result<CallToolResult, rmcp::ErrorData> {
        let state = self.state();
        let views: Vec<CredentialView> = state
            .credentials
            .list()
            .iter()
            .map(|c| CredentialView::of(c, state.pool.is_connected(&c.name)))
            .collect();
        let text = if views.is_empty() {
            "no credentials configured".to_owned()
        } else {
            views.iter().map(line).collect::<Vec<_>>().join("\n")
        };
        let list = CredentialList {
            credentials: views,
            runtime_credentials: state.settings.runtime_credentials,
        };
        Ok(structured(text, &list, false))
    }

    /// Adds a host at run time.
    #[tool(
        name = "add_credential",
        description = "Add an SSH credential (host, user, private key file) for this ssh-mcp process. \
Kept in memory only. The host key must already be known (known_hosts), be pinned with hostKeyFingerprint, \
or the operator's default policy must allow recording it on first use.",
        output_schema = schema_for_output::<CredentialAdded>(),
        annotations(destructive_hint = true, open_world_hint = true, idempotent_hint = false)
    )]
    async fn add_credential(
        &self,
        Parameters(p): Parameters<AddParams>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let state = self.state();
        if p.host.trim().is_empty()
            || p.username.trim().is_empty()
            || p.private_key_path.trim().is_empty()
        {
            return Ok(failure(
                "host, username and privateKeyPath must not be empty",
            ));
        }
        if p.port == Some(0) {
            return Ok(failure("port must be 1 to 65535"));
        }
        let host_key = match &p.host_key_fingerprint {
            Some(fp) => match HostKeyPolicy::parse(fp) {
                Ok(policy @ HostKeyPolicy::Pinned(_)) => policy,
                Ok(_) => {
                    return Ok(failure(
                        "hostKeyFingerprint must be a SHA256:... fingerprint",
                    ));
                }
                Err(e) => return Ok(failure(e)),
            },
            None => state.settings.default_host_key.clone(),
        };
        let credential = Credential {
            name: p.name,
            host: p.host,
            port: p.port.unwrap_or(22),
            user: p.username,
            keys: vec![expand_home(&p.private_key_path)],
            passphrase_env: None,
            agent: false,
            password_env: None,
            sudo_password_env: None,
            jump: p.jump,
            host_key,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            remote_bind: Vec::new(),
            origin: Origin::Runtime,
        };
        match state.credentials.add(credential) {
            Ok(c) => {
                let view = CredentialView::of(&c, false);
                let text = format!("added {}", line(&view));
                Ok(structured(
                    text,
                    &CredentialAdded { credential: view },
                    false,
                ))
            }
            Err(e) => Ok(failure(e.to_string())),
        }
    }

    /// Removes a host.
    #[tool(
        name = "remove_credential",
        description = "Remove an SSH credential and close its pooled connection (until ssh-mcp restarts: \
the config file is not changed).",
        output_schema = schema_for_output::<CredentialRemoved>(),
        annotations(destructive_hint = true, open_world_hint = true, idempotent_hint = true)
    )]
    async fn remove_credential(
        &self,
        Parameters(p): Parameters<RemoveParams>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let state = self.state();
        match state.credentials.remove(&p.name) {
            Ok(c) => {
                state.pool.disconnect(&c.name).await;
                Ok(structured(
                    format!("removed {}", c.name),
                    &CredentialRemoved {
                        removed: c.name.clone(),
                    },
                    false,
                ))
            }
            Err(e) => Ok(failure(e.to_string())),
        }
    }
}
