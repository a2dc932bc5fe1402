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
use crate::sessions::{Owner, OwnerId, SessionManager};
use crate::tunnels::TunnelManager;

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
    /// Interactive sessions.
    pub sessions: Arc<SessionManager>,
    /// Tunnels.
    pub tunnels: Arc<TunnelManager>,
    next_owner: std::sync::atomic::AtomicU64,
}

impl SshMcpState {
    fn new_owner(&self) -> Arc<Owner> {
        let id = OwnerId(
            self.next_owner
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        Arc::new(Owner::new(id, &self.sessions, &self.tunnels))
    }
}

/// The ssh-mcp server. Cheap to clone (the state is shared). A clone is the same MCP client
/// (it owns the same sessions and tunnels); [`SshMcp::for_new_client`] makes a value for another
/// client.
#[derive(Clone)]
pub struct SshMcp {
    state: Arc<SshMcpState>,
    owner: Arc<Owner>,
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
        let sessions = Arc::new(SessionManager::new(pool.clone(), settings.limits.clone()));
        let tunnels = Arc::new(TunnelManager::new(
            pool.clone(),
            settings.limits.tunnels_max,
        ));
        let state = Arc::new(SshMcpState {
            settings,
            credentials,
            pool,
            outputs,
            sessions,
            tunnels,
            next_owner: std::sync::atomic::AtomicU64::new(1),
        });
        Self {
            tool_router: Self::router(&state.settings),
            owner: state.new_owner(),
            state,
        }
    }

    /// The server for another MCP client: the same hosts, pool and outputs, but its own
    /// sessions and tunnels, which no other client can see. A transport serving several clients
    /// (e.g. Streamable HTTP) calls this in its per-session factory. When the last clone of the
    /// returned value is dropped, the client's sessions and tunnels end.
    pub fn for_new_client(&self) -> Self {
        Self {
            state: self.state.clone(),
            owner: self.state.new_owner(),
            tool_router: self.tool_router.clone(),
        }
    }

    /// The MCP client this value serves (sessions and tunnels are keyed by it).
    pub fn owner_id(&self) -> OwnerId {
        self.owner.id
    }

    /// All tools: one router per family, added together. A new family adds its router here.
    pub fn router(settings: &Settings) -> ToolRouter<SshMcp> {
        let mut router = Self::exec_router()
            + Self::credential_router()
            + Self::output_router()
            + Self::session_router()
            + Self::copy_router()
            + Self::tunnel_router();
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
can be read with ssh_output_read. For interactive and full-screen programs open a terminal with \
ssh_session_start, type with ssh_session_send (text and named keys, with waits) and look at the \
screen with ssh_session_read. scp_copy and rsync_copy copy files; ssh_tunnel_start forwards ports."
)]
impl ServerHandler for SshMcp {}
