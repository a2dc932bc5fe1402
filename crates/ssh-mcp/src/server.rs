//! The MCP server: shared state plus the tool router, and rmcp's `ServerHandler`.
//!
//! Each family of tools lives in its own file under `tools/` as an `impl SshMcp` block marked
//! `#[tool_router(router = NAME)]`; [`SshMcp::router`] adds those routers together. See the crate
//! docs for how a new family is added.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::{ServerHandler, tool_handler};

use crate::config::Settings;
use crate::connection::ConnectOptions;
use crate::credentials::CredentialStore;
use crate::host_keys::KnownHosts;
use crate::output::OutputStore;
use crate::pool::Pool;

/// State shared by every tool call.
pub struct SshMcpState {
    /// The validated config.
    pub settings: Settings,
    /// Credentials (config, imported, runtime).
    pub credentials: Arc<CredentialStore>,
    /// Pooled connections.
    pub pool: Arc<Pool>,
    /// Outputs kept for `ssh_output_read`.
    pub outputs: Arc<OutputStore>,
}

/// The ssh-mcp server. Cheap to clone (the state is shared).
#[derive(Clone)]
pub struct SshMcp {
    state: Arc<SshMcpState>,
    tool_router: ToolRouter<SshMcp>,
}

impl SshMcp {
    /// Builds the server from validated settings.
    pub fn new(settings: Settings) -> Self {
        let credentials = Arc::new(CredentialStore::new(settings.credentials.clone()));
        let known_hosts = Arc::new(KnownHosts::new(settings.known_hosts.clone()));
        let pool = Arc::new(Pool::new(
            credentials.clone(),
            known_hosts,
            ConnectOptions {
                keepalive: settings.limits.keepalive,
            },
            settings.limits.sessions_per_credential,
        ));
        let limits = &settings.limits;
        let outputs = Arc::new(OutputStore::new(
            limits.kept_outputs,
            limits
                .kept_outputs
                .saturating_mul(limits.keep_output_bytes)
                .min(256 << 20),
        ));
        let state = Arc::new(SshMcpState {
            settings,
            credentials,
            pool,
            outputs,
        });
        Self {
            tool_router: Self::router(&state.settings),
            state,
        }
    }

    /// All tools: one router per family, added together. A new family adds its router here.
    pub fn router(settings: &Settings) -> ToolRouter<SshMcp> {
        let mut router = Self::exec_router() + Self::credential_router() + Self::output_router();
        if !settings.runtime_credentials {
            // `--no-runtime-credentials`: the tools are not offered at all, so a call to them is
            // answered like a call to any tool that does not exist.
            router.remove_route("add_credential");
            router.remove_route("remove_credential");
        }
        router
    }

    /// The shared state (pool, credentials, outputs, settings).
    pub fn state(&self) -> &Arc<SshMcpState> {
        &self.state
    }

    /// The tool router (for listing tools in tests).
    pub fn tool_router(&self) -> &ToolRouter<SshMcp> {
        &self.tool_router
    }
}

#[tool_handler(
    router = self.tool_router,
    name = "ssh-mcp",
    instructions = "Run commands on SSH hosts configured by the operator. list_credentials shows the hosts; \
ssh_exec runs a shell command line, ssh_exec_raw runs an argument array with every word quoted. \
Results carry stdout, stderr and the exit code; long output is cut to head and tail, and the rest \
can be read with ssh_output_read."
)]
impl ServerHandler for SshMcp {}
