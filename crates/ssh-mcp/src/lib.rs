//! # ssh-mcp: an SSH MCP server
//!
//! The 15 tools users know from the common TypeScript SSH MCP server (`ssh_exec`, `ssh_exec_raw`,
//! `add_credential`, `list_credentials`, `remove_credential`, `ssh_session_*`, `scp_copy`,
//! `rsync_copy`, `ssh_tunnel_*`) plus `ssh_output_read` and `ssh_session_resize`, without its
//! weaknesses: host keys are checked against known_hosts, a timeout stops the remote command,
//! stdin always ends, argument arrays are quoted, output is capped and pageable, sessions have a
//! rendered screen and waits, remote tunnels bind loopback, no local shell sees an argument,
//! secrets never leave the process, and nothing but MCP is written to stdout. User docs:
//! `docs/ssh-mcp.md`.
//!
//! ## Layers (one module, one job)
//! | module | job |
//! |---|---|
//! | [`config`] | TOML text -> validated [`config::Settings`] (errors name the key) |
//! | [`ssh_config`] | hosts imported from `~/.ssh/config` |
//! | [`credentials`] | [`credentials::Credential`] (where secrets are, never the secrets) and the store |
//! | [`host_keys`] | known_hosts / accept-new / pinned fingerprint decisions |
//! | [`auth`] | key files, agent, password, in OpenSSH's order |
//! | [`connection`] | one authenticated connection, direct or through a jump host |
//! | [`pool`] | one live connection per credential, reused, reopened when it died |
//! | [`exec`] | one command on one channel: stdin, capture, timeout and kill, sudo |
//! | [`output`] | head/tail capping and the store behind `ssh_output_read` |
//! | [`quote`] | POSIX quoting for `ssh_exec_raw` |
//! | [`pty`] | terminal screen (vt100), key names, escape stripping, waits; no SSH |
//! | [`sessions`] | PTY shells on pooled connections, owned by MCP clients, capped, idle-closed |
//! | [`copy`] | SFTP copies and rsync runs (argv, host key pinned) |
//! | [`tunnels`] | local (`direct-tcpip`) and remote (`tcpip-forward`) port forwards |
//! | [`server`], [`tools`] | the MCP surface (rmcp) |
//!
//! ## Extension point: adding a family of tools
//! Each family (exec, credentials, output, session, copy, tunnel) is a file under `src/tools/`;
//! a new one is added the same way:
//!
//! 1. a new file `src/tools/<family>.rs` (declared in `src/tools/mod.rs`) with
//!    ```text
//!    #[tool_router(router = session_router, vis = "pub(crate)")]
//!    impl SshMcp {
//!        #[tool(name = "ssh_session_start", output_schema = schema_for_output::<Started>(),
//!               annotations(destructive_hint = true, open_world_hint = true))]
//!        async fn ssh_session_start(&self, Parameters(p): Parameters<StartParams>,
//!                                   context: RequestContext<RoleServer>)
//!            -> Result<CallToolResult, rmcp::ErrorData> { ... }
//!    }
//!    ```
//! 2. one more term in [`SshMcp::router`]: `... + Self::output_router() + Self::session_router()`.
//!
//! Inside a tool, [`SshMcp::state`] gives the shared [`SshMcpState`]:
//! - `state.pool.connection(name).await` -> `Arc<`[`connection::Connection`]`>`: the pooled,
//!   authenticated connection (host key checked, jump hosts handled, reconnected when dead).
//!   `Connection::open_session()` gives a russh channel (for `request_pty` + `request_shell`, or
//!   `request_subsystem("sftp")` for russh-sftp), `Connection::open_direct_tcpip()` a forwarding
//!   channel, `Connection::handle()` the russh handle (`tcpip_forward` for remote tunnels).
//! - `state.pool.lease(name).await` -> [`pool::Lease`]: the same plus a permit of the
//!   credential's `sessions_per_credential`; hold it as long as the channel is open.
//! - `state.pool.open_session(name).await` -> `(Lease, Channel)`, retrying once on a connection
//!   that died since its last use.
//! - `state.credentials` for lookups, `state.settings.limits` for caps, [`quote::quote`] for any
//!   word put on a remote command line, [`tools::structured`]-style results (text plus
//!   `structuredContent` matching the tool's `outputSchema`).
//!
//! Per-client ownership: [`SshMcp::owner_id`] identifies the MCP client a value serves (one per
//! stdio process; [`SshMcp::for_new_client`] for transports serving several). Sessions and
//! tunnels are keyed by it, and end when the last clone of that client's value is dropped.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod connection;
pub mod copy;
pub mod credentials;
pub mod exec;
pub mod host_keys;
pub mod output;
pub mod pool;
pub mod pty;
pub mod quote;
pub mod server;
pub mod sessions;
pub mod ssh_config;
pub mod tools;
pub mod tunnels;

pub use server::{SshMcp, SshMcpState};
