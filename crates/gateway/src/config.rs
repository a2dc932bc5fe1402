//! The gateway's configuration file (TOML), documented in `docs/config.md`.
//!
//! Raw TOML is deserialized with unknown keys refused, then validated into [`Config`]; every
//! error names the key and, where TOML tells, the line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration error, ready to print: it names the file, the key and the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown or mistyped key.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// TOML's message, which shows the line and the key.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("{path}: {key}{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key, e.g. `servers.ssh.url`.
        key: String,
        /// The line of the table that holds it, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

/// How a stdio upstream's child processes are shared among downstream sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// One child (or upstream HTTP session) per downstream session: safe for stateful servers.
    #[default]
    PerSession,
    /// One child multiplexed for all sessions, with remapped ids: for stateless servers.
    Shared,
}

/// How to reach one upstream MCP server.
#[derive(Debug, Clone)]
pub enum Transport {
    /// A child process speaking newline-delimited JSON-RPC on stdin/stdout.
    Stdio {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Extra environment variables.
        env: BTreeMap<String, String>,
        /// The working directory.
        cwd: Option<PathBuf>,
    },
    /// A Streamable HTTP endpoint.
    Http {
        /// The endpoint URL.
        url: String,
        /// Headers sent with every request (for example the upstream's own credentials).
        headers: BTreeMap<String, String>,
        /// For `https://`: the PEM file of the CA certificates to trust instead of the system's.
        ca_file: Option<PathBuf>,
    },
}

/// One upstream server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The name used in exposed tool names (`name__tool`) and in `/mcp/{name}`.
    pub name: String,
    /// How to reach it.
    pub transport: Transport,
    /// Per-session children, or one shared child.
    pub isolation: Isolation,
    /// Relay `sampling/createMessage` requests from this server to clients.
    pub allow_sampling: bool,
    /// Relay `roots/list` requests from this server to clients.
    pub allow_roots: bool,
    /// How long connecting and the initialize handshake may take.
    pub startup_timeout: Duration,
    /// How long one request may wait for its response.
    pub request_timeout: Duration,
}

/// One grant: a bearer token, stored as its SHA-256, bound to a policy.
#[derive(Debug, Clone)]
pub struct GrantConfig {
    /// The grant's name, e.g. `alice-laptop`.
    pub name: String,
    /// SHA-256 of the token, 32 bytes.
    pub token_sha256: [u8; 32],
    /// The policy file, resolved against the config's directory.
    pub policy: Option<PathBuf>,
}

/// Where the gateway listens and whom it believes.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// The Streamable HTTP listener (endpoint `/mcp`).
    pub mcp: SocketAddr,
    /// `Host` header values accepted besides the loopback names of the listener's port.
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted besides loopback origins.
    pub allowed_origins: Vec<String>,
    /// The grant given to requests without a token (for local clients that cannot send
    /// headers). Off by default: then every request needs a token.
    pub anonymous_grant: Option<String>,
    /// The admin API's listener; off when not configured.
    pub admin: Option<SocketAddr>,
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// Reads the inventory, pins, audit and approvals.
    Viewer,
    /// Also edits policies (never sees tokens).
    PolicyManager,
    /// Everything: approves pins and calls, manages grants.
    Admin,
}

impl AdminRole {
    /// Every role, least power first.
    pub const ALL: [AdminRole; 3] = [
        AdminRole::Viewer,
        AdminRole::PolicyManager,
        AdminRole::Admin,
    ];

    /// The role's name, as in the config (`role = "policy_manager"`) and in stored web sessions.
    pub fn name(self) -> &'static str {
        match self {
            AdminRole::Viewer => "viewer",
            AdminRole::PolicyManager => "policy_manager",
            AdminRole::Admin => "admin",
        }
    }

    /// The role called `name`.
    pub fn from_name(name: &str) -> Option<AdminRole> {
        AdminRole::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// One admin API token.
#[derive(Debug, Clone)]
pub struct AdminToken {
    /// Its name, for the audit log.
    pub name: String,
    /// SHA-256 of the token.
    pub token_sha256: [u8; 32],
    /// What it may do.
    pub role: AdminRole,
}

/// Where rate-limit counters are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CounterBackend {
    /// In this process's memory: fastest; counts start from zero on restart.
    #[default]
    Memory,
    /// In `state.db` in the state directory: counts survive restarts and are shared by the
    /// processes on this host that use the same directory.
    Sqlite,
    /// In Redis (`[state] redis`): exact across every instance that shares it; the default
    /// when Redis is configured.
    Redis,
}

/// What a call gets when the counter store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreFailure {
    /// Refuse the call (fail closed; the default).
    #[default]
    Deny,
    /// Let it through uncounted (fail open), logging a warning.
    Allow,
}

/// Rate-limit counters.
#[derive(Debug, Clone, Default)]
pub struct CountersConfig {
    /// Where they live.
    pub backend: CounterBackend,
    /// What a call gets when they cannot be reached.
    pub on_store_error: StoreFailure,
    /// How long a call waits for the store (SQLite: another process's write lock).
    pub store_timeout: Duration,
}

/// State shared by many instances: `[state] postgres` and `redis`.
#[derive(Debug, Clone, Default)]
pub struct SharedStateConfig {
    /// PostgreSQL URL: pins, the audit log and approvals live there instead of `state.db`.
    pub postgres: Option<String>,
    /// Redis URL: rate-limit counters and approval wake-ups.
    pub redis: Option<String>,
    /// Prefix of every Redis key and channel (several deployments can share one Redis).
    pub redis_prefix: String,
    /// Most bytes of audit records kept on disk while PostgreSQL is unreachable.
    pub audit_spool_max_bytes: u64,
    /// The key instances share to trust what another instance handed a client (a
    /// `requestState`); random per process when not configured.
    pub session_key: Option<[u8; 32]>,
}

/// Who answers calls that a policy holds for approval.
#[derive(Debug, Clone, Default)]
pub struct ApprovalsConfig {
    /// A program (argv) asked about each held call: the call as JSON on its stdin; exit 0
    /// approves, any other exit denies, its first line of output is the reason. Without
    /// one, calls that need approval are denied.
    pub command: Vec<String>,
    /// An `http://` or `https://` URL POSTed a JSON notice of each new pending approval.
    pub webhook: Option<String>,
}

/// When an audit record is on disk relative to the answer it describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Written by a batching writer shortly after (the default; a crash may lose the last
    /// moment's records).
    #[default]
    Batched,
    /// Committed before the answer is released: no delivered call lacks its record.
    Strict,
}

/// The audit log.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Record at all (off only for measuring what the audit costs: nothing is recorded).
    pub enabled: bool,
    /// Batched or strict.
    pub durability: Durability,
    /// Records older than this are deleted.
    pub retention: Duration,
    /// At most this many records are kept (the oldest go first).
    pub max_records: u64,
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            enabled: true,
            durability: Durability::Batched,
            retention: Duration::from_secs(90 * 86_400),
            max_records: 10_000_000,
        }
    }
}

/// How tool definitions are pinned against rug pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pinning {
    /// A tool is trusted as first seen (trust on first use); any later change to its
    /// definition quarantines it until approved.
    #[default]
    FirstUse,
    /// Nothing is trusted until approved (`toolgate pins approve`): new tools start
    /// quarantined too.
    Strict,
    /// No pinning.
    Off,
}

/// The tool catalog: pinning, sanitizing, and the operator's classifications.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// How definitions are pinned.
    pub pinning: Pinning,
    /// Remove invisible characters from the definitions and instructions agents see.
    pub sanitize: bool,
    /// A tool list older than this is fetched again before use, for servers that never say
    /// their list changed.
    pub relist_interval: Duration,
    /// Use the built-in entries for known servers (matched by the `serverInfo.name` a
    /// server reports about itself); off, every tool is classified by heuristics.
    pub builtin_entries: bool,
    /// The operator's classifications, final over the built-in ones and the heuristics.
    pub overrides: Vec<toolgate_catalog::Override>,
}

impl Default for CatalogConfig {
    fn default() -> CatalogConfig {
        CatalogConfig {
            pinning: Pinning::default(),
            sanitize: false,
            relist_interval: Duration::from_secs(300),
            builtin_entries: true,
            overrides: Vec::new(),
        }
    }
}

/// Bounds that protect the gateway and its upstreams.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Largest HTTP body (413 beyond).
    pub max_body_bytes: usize,
    /// Longest stdio line, downstream and upstream.
    pub max_line_bytes: usize,
    /// Deepest JSON nesting.
    pub max_json_depth: usize,
    /// Open sessions per grant.
    pub sessions_per_grant: usize,
    /// Open SSE streams (GET streams and streamed POST responses) per grant.
    pub streams_per_grant: usize,
    /// A session unused this long is closed.
    pub session_idle_timeout: Duration,
    /// How long an HTTP client has to send a request's head, from connecting or from the
    /// previous answer (slowloris; idle keep-alive connections close after it).
    pub header_timeout: Duration,
    /// How long a `POST /mcp` body may take to arrive once its head has (408 beyond).
    pub body_timeout: Duration,
    /// Items per page of the gateway's own list results.
    pub page_size: usize,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (relative paths in it resolve against its directory).
    pub path: PathBuf,
    /// Listeners.
    pub listen: ListenConfig,
    /// The embedded state directory.
    pub state_dir: PathBuf,
    /// Where rate-limit counters live and what happens when they cannot be reached.
    pub counters: CountersConfig,
    /// PostgreSQL and Redis, when the state is shared by many instances.
    pub shared: SharedStateConfig,
    /// Who answers `action: "approve"`.
    pub approvals: ApprovalsConfig,
    /// How often policy files are checked for changes (SIGHUP reloads at once).
    pub policy_reload_interval: Duration,
    /// Limits.
    pub limits: LimitsConfig,
    /// Classification overrides and pinning.
    pub catalog: CatalogConfig,
    /// Tokens of the admin API.
    pub admin_tokens: Vec<AdminToken>,
    /// The web UI's address as a browser reaches it (`[admin] public_url`, else the admin
    /// listener's): the base of the approval links sent to clients. `None` without a web UI.
    pub admin_url: Option<String>,
    /// The audit log.
    pub audit: AuditConfig,
    /// Upstream servers in a stable order (by name).
    pub servers: Vec<ServerConfig>,
    /// Grants by name.
    pub grants: Vec<GrantConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    approvals: RawApprovals,
    #[serde(default)]
    catalog: RawCatalog,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    audit: RawAudit,
    servers_from: Option<String>,
    #[serde(default)]
    servers: BTreeMap<String, toml::Spanned<RawServer>>,
    #[serde(default)]
    grants: BTreeMap<String, toml::Spanned<RawGrant>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawListen {
    mcp: Option<String>,
    admin: Option<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    anonymous_grant: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<String>,
    counters: Option<CounterBackend>,
    postgres: Option<String>,
    redis: Option<String>,
    redis_prefix: Option<String>,
    audit_spool_max_mb: Option<u64>,
    session_key: Option<String>,
    #[serde(default)]
    on_store_error: StoreFailure,
    store_timeout: Option<String>,
    policy_reload_interval: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApprovals {
    #[serde(default)]
    command: Vec<String>,
    webhook: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    enabled: Option<bool>,
    #[serde(default)]
    durability: Durability,
    retention: Option<String>,
    max_records: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default)]
    tokens: BTreeMap<String, RawAdminToken>,
    public_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdminToken {
    token_sha256: String,
    role: AdminRole,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    pinning: Pinning,
    #[serde(default)]
    sanitize: bool,
    relist_interval: Option<String>,
    builtin_entries: Option<bool>,
    #[serde(default)]
    overrides: BTreeMap<String, RawOverride>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    category: Option<Vec<String>>,
    severity: Option<String>,
    why: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<usize>,
    max_line_bytes: Option<usize>,
    max_json_depth: Option<usize>,
    sessions_per_grant: Option<usize>,
    streams_per_grant: Option<usize>,
    session_idle_timeout: Option<String>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    page_size: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    ca_file: Option<String>,
    #[serde(default)]
    isolation: Isolation,
    #[serde(default)]
    allow_sampling: bool,
    #[serde(default)]
    allow_roots: bool,
    startup_timeout: Option<String>,
    request_timeout: Option<String>,
    /// Claude Desktop files say `"type": "stdio" | "http" | "streamable-http"`; accepted and checked.
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    token_sha256: String,
    policy: Option<String>,
}

#[derive(Deserialize)]
struct ClaudeDesktopFile {
    #[serde(rename = "mcpServers")]
    mcp_servers: BTreeMap<String, RawServer>,
}

/// The default Streamable HTTP listener: loopback only.
pub const DEFAULT_MCP_LISTEN: &str = "127.0.0.1:8787";

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text, &|name| std::env::var(name).ok())
    }

    /// Validates configuration text; `env` looks up `${VAR}` references.
    pub fn parse(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        // Absolute, so that a path resolved against it means the same from a child's `cwd`.
        let base = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let line_of = |span: std::ops::Range<usize>| {
            Some(
                text.as_bytes()[..span.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1,
            )
        };
        let invalid = |key: String, line: Option<usize>, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            line,
            message,
        };

        let mcp = raw.listen.mcp.as_deref().unwrap_or(DEFAULT_MCP_LISTEN);
        let mcp: SocketAddr = mcp.parse().map_err(|_| {
            invalid(
                "listen.mcp".into(),
                None,
                format!("{mcp:?} is not an address like 127.0.0.1:8787"),
            )
        })?;

        let positive_duration = |key: &str, value: Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(s) => parse_duration(&s)
                .ok()
                .filter(|t| !t.is_zero())
                .ok_or_else(|| {
                    invalid(
                        key.into(),
                        None,
                        format!("{s:?} is not a duration above zero like \"30s\""),
                    )
                }),
        };
        let d = LimitsConfig::default();
        let l = raw.limits;
        let limits = LimitsConfig {
            max_body_bytes: l.max_body_bytes.unwrap_or(d.max_body_bytes),
            max_line_bytes: l.max_line_bytes.unwrap_or(d.max_line_bytes),
            max_json_depth: l.max_json_depth.unwrap_or(d.max_json_depth),
            sessions_per_grant: l.sessions_per_grant.unwrap_or(d.sessions_per_grant),
            streams_per_grant: l.streams_per_grant.unwrap_or(d.streams_per_grant),
            session_idle_timeout: positive_duration(
                "limits.session_idle_timeout",
                l.session_idle_timeout,
                d.session_idle_timeout,
            )?,
            header_timeout: positive_duration(
                "limits.header_timeout",
                l.header_timeout,
                d.header_timeout,
            )?,
            body_timeout: positive_duration("limits.body_timeout", l.body_timeout, d.body_timeout)?,
            page_size: l.page_size.unwrap_or(d.page_size).max(1),
        };
        let state_duration = |key: &str, value: &Option<String>, default: Duration| match value {
            Some(s) => parse_duration(s).map_err(|m| invalid(format!("state.{key}"), None, m)),
            None => Ok(default),
        };
        let store_timeout = state_duration(
            "store_timeout",
            &raw.state.store_timeout,
            Duration::from_millis(500),
        )?;
        let policy_reload_interval = state_duration(
            "policy_reload_interval",
            &raw.state.policy_reload_interval,
            Duration::from_secs(1),
        )?;
        let state_url = |key: &str, value: &Option<String>, schemes: &[&str]| {
            let Some(value) = value else { return Ok(None) };
            let url = expand(value, env).map_err(|m| invalid(format!("state.{key}"), None, m))?;
            if !schemes.iter().any(|s| url.starts_with(&format!("{s}://"))) {
                return Err(invalid(
                    format!("state.{key}"),
                    None,
                    format!("expected a {} URL", schemes.join(":// or ") + "://"),
                ));
            }
            Ok(Some(url))
        };
        let shared = SharedStateConfig {
            postgres: state_url("postgres", &raw.state.postgres, &["postgres", "postgresql"])?,
            redis: match state_url("redis", &raw.state.redis, &["redis", "rediss"])? {
                Some(url) => {
                    toolgate_state::redis::RedisUrl::parse(&url)
                        .map_err(|e| invalid("state.redis".into(), None, e.to_string()))?;
                    Some(url)
                }
                None => None,
            },
            redis_prefix: raw
                .state
                .redis_prefix
                .clone()
                .unwrap_or_else(|| "toolgate:".into()),
            audit_spool_max_bytes: raw.state.audit_spool_max_mb.unwrap_or(256) << 20,
            session_key: match &raw.state.session_key {
                None => None,
                Some(value) => {
                    let text = expand(value, env)
                        .map_err(|m| invalid("state.session_key".into(), None, m))?;
                    let key = hex::decode(text.trim())
                        .ok()
                        .and_then(|k| <[u8; 32]>::try_from(k).ok())
                        .ok_or_else(|| {
                            invalid(
                                "state.session_key".into(),
                                None,
                                "expected 64 hex digits (32 random bytes: `openssl rand -hex 32`)"
                                    .into(),
                            )
                        })?;
                    Some(key)
                }
            },
        };
        let counter_backend = match raw.state.counters {
            Some(CounterBackend::Redis) if shared.redis.is_none() => {
                return Err(invalid(
                    "state.counters".into(),
                    None,
                    "\"redis\" needs the Redis URL in state.redis".into(),
                ));
            }
            Some(backend) => backend,
            None if shared.redis.is_some() => CounterBackend::Redis,
            None => CounterBackend::Memory,
        };
        if let Some(url) = &raw.approvals.webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "approvals.webhook".into(),
                None,
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        if let Some(program) = raw.approvals.command.first()
            && program.trim().is_empty()
        {
            return Err(invalid(
                "approvals.command".into(),
                None,
                "the first word must name a program".into(),
            ));
        }

        let mut servers = Vec::new();
        for (name, spanned) in &raw.servers {
            let line = line_of(spanned.span());
            servers.push(
                server(name, spanned.get_ref(), &base, env)
                    .map_err(|(k, m)| invalid(format!("servers.{name}{k}"), line, m))?,
            );
        }
        if let Some(file) = &raw.servers_from {
            let file_path = base.join(file);
            let json = std::fs::read_to_string(&file_path).map_err(|e| {
                invalid(
                    "servers_from".into(),
                    None,
                    format!("cannot read {}: {e}", file_path.display()),
                )
            })?;
            let desktop: ClaudeDesktopFile = serde_json::from_str(&json).map_err(|e| {
                invalid(
                    "servers_from".into(),
                    None,
                    format!("{}: {e}", file_path.display()),
                )
            })?;
            for (name, raw_server) in &desktop.mcp_servers {
                if raw.servers.contains_key(name) {
                    return Err(invalid(
                        format!("servers.{name}"),
                        None,
                        format!("defined both here and in {}", file_path.display()),
                    ));
                }
                let dir = file_path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                servers.push(
                    server(name, raw_server, &dir, env).map_err(|(k, m)| {
                        invalid(format!("{file}: mcpServers.{name}{k}"), None, m)
                    })?,
                );
            }
            servers.sort_by(|a, b| a.name.cmp(&b.name));
        }

        let mut grants = Vec::new();
        for (name, spanned) in &raw.grants {
            let line = line_of(spanned.span());
            let g = spanned.get_ref();
            if !valid_name(name, 64, b"_-.") {
                return Err(invalid(
                    format!("grants.{name}"),
                    line,
                    "a grant name is 1-64 of A-Z a-z 0-9 _ - .".into(),
                ));
            }
            let mut hash = [0u8; 32];
            hex::decode_to_slice(g.token_sha256.trim(), &mut hash).map_err(|_| {
                invalid(
                    format!("grants.{name}.token_sha256"),
                    line,
                    "expected 64 hex digits (as printed by `toolgate grant new`)".into(),
                )
            })?;
            grants.push(GrantConfig {
                name: name.clone(),
                token_sha256: hash,
                policy: g.policy.as_ref().map(|p| base.join(p)),
            });
        }

        if let Some(name) = &raw.listen.anonymous_grant
            && !grants.iter().any(|g| &g.name == name)
        {
            return Err(invalid(
                "listen.anonymous_grant".into(),
                None,
                format!("no grant named {name:?}"),
            ));
        }
        let catalog = catalog(raw.catalog, &servers).map_err(|(k, m)| invalid(k, None, m))?;
        let admin = match &raw.listen.admin {
            None => None,
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "listen.admin".into(),
                    None,
                    format!("{a:?} is not an address like 127.0.0.1:8788"),
                )
            })?),
        };
        let defaults = AuditConfig::default();
        let audit = AuditConfig {
            enabled: raw.audit.enabled.unwrap_or(true),
            durability: raw.audit.durability,
            retention: match &raw.audit.retention {
                Some(s) => {
                    parse_duration(s).map_err(|m| invalid("audit.retention".into(), None, m))?
                }
                None => defaults.retention,
            },
            max_records: raw.audit.max_records.unwrap_or(defaults.max_records).max(1),
        };
        let mut admin_tokens = Vec::new();
        for (name, t) in &raw.admin.tokens {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(t.token_sha256.trim(), &mut hash).map_err(|_| {
                invalid(
                    format!("admin.tokens.{name}.token_sha256"),
                    None,
                    "expected 64 hex digits (as printed by `toolgate grant new`)".into(),
                )
            })?;
            admin_tokens.push(AdminToken {
                name: name.clone(),
                token_sha256: hash,
                role: t.role,
            });
        }
        let admin_url = match (&raw.admin.public_url, admin) {
            (Some(url), _) => {
                let url =
                    expand(url, env).map_err(|m| invalid("admin.public_url".into(), None, m))?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(
                        "admin.public_url".into(),
                        None,
                        "expected an http:// or https:// URL".into(),
                    ));
                }
                Some(url.trim_end_matches('/').to_owned())
            }
            (None, Some(addr)) => Some(format!("http://{addr}")),
            (None, None) => None,
        };

        Ok(Config {
            path: path.to_owned(),
            listen: ListenConfig {
                mcp,
                allowed_hosts: raw.listen.allowed_hosts,
                allowed_origins: raw.listen.allowed_origins,
                anonymous_grant: raw.listen.anonymous_grant,
                admin,
            },
            state_dir: base.join(raw.state.dir.as_deref().unwrap_or(".toolgate")),
            counters: CountersConfig {
                backend: counter_backend,
                on_store_error: raw.state.on_store_error,
                store_timeout,
            },
            shared,
            approvals: ApprovalsConfig {
                command: resolve_program(&base, raw.approvals.command),
                webhook: raw.approvals.webhook,
            },
            policy_reload_interval,
            limits,
            catalog,
            admin_tokens,
            admin_url,
            audit,
            servers,
            grants,
        })
    }

    /// The server with this name.
    pub fn server(&self, name: &str) -> Option<&ServerConfig> {
        self.servers.iter().find(|s| s.name == name)
    }
}

/// Validates `[catalog]`; the error names the key.
fn catalog(raw: RawCatalog, servers: &[ServerConfig]) -> Result<CatalogConfig, (String, String)> {
    use toolgate_catalog::{Category, Severity};
    let relist_interval = match &raw.relist_interval {
        Some(s) => parse_duration(s).map_err(|m| ("catalog.relist_interval".to_owned(), m))?,
        None => CatalogConfig::default().relist_interval,
    };
    let mut overrides = Vec::new();
    for (key, o) in raw.overrides {
        let at = |field: &str| format!("catalog.overrides.\"{key}\"{field}");
        let Some((server, tool)) = key
            .split_once('/')
            .filter(|(s, t)| !s.is_empty() && !t.is_empty())
        else {
            return Err((at(""), "the key is `server/tool` (or `server/*`)".into()));
        };
        if !servers.iter().any(|s| s.name == server) {
            return Err((at(""), format!("no server named {server:?}")));
        }
        let categories = match o.category {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| {
                        Category::parse(n).ok_or_else(|| {
                            let all: Vec<_> = Category::ALL.iter().map(|c| c.as_str()).collect();
                            (
                                at(".category"),
                                format!("unknown category {n:?} (one of {})", all.join(", ")),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let severity = match o.severity {
            None => None,
            Some(n) => Some(Severity::parse(&n).ok_or_else(|| {
                (
                    at(".severity"),
                    format!("unknown severity {n:?} (one of low, medium, high, critical)"),
                )
            })?),
        };
        if categories.is_none() && severity.is_none() {
            return Err((at(""), "give `category`, `severity` or both".into()));
        }
        overrides.push(toolgate_catalog::Override {
            server: server.to_owned(),
            tool: tool.to_owned(),
            categories,
            severity,
            why: o.why,
        });
    }
    Ok(CatalogConfig {
        pinning: raw.pinning,
        sanitize: raw.sanitize,
        relist_interval,
        builtin_entries: raw.builtin_entries.unwrap_or(true),
        overrides,
    })
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_body_bytes: 4 * 1024 * 1024,
            max_line_bytes: 4 * 1024 * 1024,
            max_json_depth: 64,
            sessions_per_grant: 256,
            streams_per_grant: 256,
            session_idle_timeout: Duration::from_secs(30 * 60),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            page_size: 500,
        }
    }
}

type FieldError = (String, String);

fn server(
    name: &str,
    raw: &RawServer,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServerConfig, FieldError> {
    if !valid_name(name, 32, b"_-")
        || name.contains("__")
        || name.starts_with('_')
        || name.ends_with('_')
    {
        return Err((
            String::new(),
            "a server name is 1-32 of A-Z a-z 0-9 _ -, without \"__\" and not starting or ending with \"_\"".into(),
        ));
    }
    let expand_map = |key: &str,
                      map: &BTreeMap<String, String>|
     -> Result<BTreeMap<String, String>, FieldError> {
        map.iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    expand(v, env).map_err(|m| (format!(".{key}.{k}"), m))?,
                ))
            })
            .collect()
    };
    let transport = match (&raw.command, &raw.url) {
        (Some(command), None) => {
            if let Some(kind) = raw.kind.as_deref().filter(|k| *k != "stdio") {
                return Err((
                    ".type".into(),
                    format!("{kind:?} does not go with \"command\""),
                ));
            }
            let command = expand(command, env).map_err(|m| (".command".into(), m))?;
            // A relative path (not a bare program name looked up in PATH) is relative to the
            // config file, like every other path in it.
            let command = resolve_program_path(base, command);
            Transport::Stdio {
                command,
                args: raw
                    .args
                    .iter()
                    .map(|a| expand(a, env))
                    .collect::<Result<_, _>>()
                    .map_err(|m| (".args".to_string(), m))?,
                env: expand_map("env", &raw.env)?,
                cwd: raw.cwd.as_ref().map(|c| base.join(c)),
            }
        }
        (None, Some(url)) => {
            if let Some(kind) = raw
                .kind
                .as_deref()
                .filter(|k| !matches!(*k, "http" | "streamable-http" | "streamableHttp"))
            {
                return Err((
                    ".type".into(),
                    format!("{kind:?} is not supported; use Streamable HTTP (\"http\")"),
                ));
            }
            let url = expand(url, env).map_err(|m| (".url".into(), m))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err((
                    ".url".into(),
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            Transport::Http {
                url,
                headers: expand_map("headers", &raw.headers)?,
                ca_file: raw.ca_file.as_ref().map(|f| base.join(f)),
            }
        }
        (Some(_), Some(_)) => {
            return Err((
                String::new(),
                "give either \"command\" or \"url\", not both".into(),
            ));
        }
        (None, None) => {
            return Err((
                String::new(),
                "needs \"command\" (stdio) or \"url\" (Streamable HTTP)".into(),
            ));
        }
    };
    let duration = |key: &str, value: &Option<String>, default: u64| match value {
        Some(v) => parse_duration(v).map_err(|m| (format!(".{key}"), m)),
        None => Ok(Duration::from_secs(default)),
    };
    Ok(ServerConfig {
        name: name.to_owned(),
        transport,
        isolation: raw.isolation,
        allow_sampling: raw.allow_sampling,
        allow_roots: raw.allow_roots,
        startup_timeout: duration("startup_timeout", &raw.startup_timeout, 60)?,
        request_timeout: duration("request_timeout", &raw.request_timeout, 600)?,
    })
}

fn valid_name(name: &str, max: usize, extra: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// Expands `${VAR}` from the environment; a missing variable is an error, `$$` is a literal `$`.
fn expand(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated ${{ in {value:?}"))?;
            let name = &after[..end];
            out.push_str(
                &env(name).ok_or_else(|| format!("environment variable {name} is not set"))?,
            );
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `500ms`, `30s`, `10m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 10m or 2h"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?} is not a duration like 30s, 10m or 2h")),
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

/// A program named by a relative path (not a bare name looked up in `PATH`) is relative to
/// the config file, like every other path in it.
fn resolve_program_path(base: &Path, program: String) -> String {
    if program.contains('/') && Path::new(&program).is_relative() {
        base.join(&program).to_string_lossy().into_owned()
    } else {
        program
    }
}

/// An argv whose program is resolved as [`resolve_program_path`] says.
fn resolve_program(base: &Path, mut argv: Vec<String>) -> Vec<String> {
    if let Some(first) = argv.first_mut() {
        *first = resolve_program_path(base, std::mem::take(first));
    }
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/toolgate/toolgate.toml"), text, &|k| {
            (k == "TOKEN").then(|| "s3cret".to_string())
        })
    }

    #[test]
    fn the_web_ui_url_defaults_to_the_admin_listener() {
        assert_eq!(parse("").unwrap().admin_url, None);
        let listener = parse("[listen]\nadmin = \"127.0.0.1:8788\"\n").unwrap();
        assert_eq!(listener.admin_url.as_deref(), Some("http://127.0.0.1:8788"));
        let public = parse(
            "[listen]\nadmin = \"127.0.0.1:8788\"\n[admin]\npublic_url = \"https://tg.example/${TOKEN}/\"\n",
        )
        .unwrap();
        assert_eq!(
            public.admin_url.as_deref(),
            Some("https://tg.example/s3cret")
        );
        let bad = parse("[admin]\npublic_url = \"ftp://x\"\n").unwrap_err();
        assert!(bad.to_string().contains("admin.public_url"), "{bad}");
    }

    #[test]
    fn shared_state_keys_are_checked() {
        let key = "ab".repeat(32);
        let c = parse(&format!(
            "[state]\npostgres = \"postgres://tg:${{TOKEN}}@db:5432/tg\"\nredis = \"redis://r:6379/0\"\nsession_key = \"{key}\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.shared.postgres.as_deref(),
            Some("postgres://tg:s3cret@db:5432/tg")
        );
        assert_eq!(
            c.counters.backend,
            CounterBackend::Redis,
            "Redis counts when it is there"
        );
        assert_eq!(c.shared.session_key, Some([0xab; 32]));
        assert_eq!(c.shared.redis_prefix, "toolgate:");
        assert_eq!(c.shared.audit_spool_max_bytes, 256 << 20);
        let explicit = parse("[state]\nredis = \"redis://r/\"\ncounters = \"memory\"\n").unwrap();
        assert_eq!(explicit.counters.backend, CounterBackend::Memory);
        for (text, key, says) in [
            (
                "[state]\ncounters = \"redis\"\n",
                "state.counters",
                "needs the Redis URL",
            ),
            (
                "[state]\npostgres = \"mysql://x\"\n",
                "state.postgres",
                "expected a postgres://",
            ),
            (
                "[state]\nredis = \"http://x\"\n",
                "state.redis",
                "expected a redis://",
            ),
            (
                "[state]\nredis = \"rediss://cache:6380\"\n",
                "state.redis",
                "TLS) is not supported",
            ),
            (
                "[state]\nredis = \"redis://cache:63a/0\"\n",
                "state.redis",
                "bad port",
            ),
            (
                "[state]\nsession_key = \"abcd\"\n",
                "state.session_key",
                "64 hex digits",
            ),
            (
                "[state]\nsession_key = \"${NOPE}\"\n",
                "state.session_key",
                "NOPE",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn the_documented_shape_loads() {
        let c = parse(
            r#"
[listen]
mcp = "127.0.0.1:8787"
[state]
dir = ".toolgate"
[servers.ssh]
command = "ssh-mcp"
args = ["--config", "ssh-hosts.toml"]
env = { RUST_LOG = "warn" }
isolation = "per-session"
[servers.docs]
url = "http://127.0.0.1:9000/mcp"
headers = { Authorization = "Bearer ${TOKEN}" }
[grants.alice-laptop]
token_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
policy = "policies/alice.json"
"#,
        )
        .unwrap();
        assert_eq!(c.servers.len(), 2);
        let Transport::Http { headers, .. } = &c.server("docs").unwrap().transport else {
            panic!("docs is http")
        };
        assert_eq!(headers["Authorization"], "Bearer s3cret");
        assert_eq!(
            c.grants[0].policy.as_deref(),
            Some(Path::new("/etc/toolgate/policies/alice.json"))
        );
        assert_eq!(c.state_dir, Path::new("/etc/toolgate/.toolgate"));
    }

    #[test]
    fn paths_in_a_config_given_by_a_relative_path_are_absolute() {
        let c = Config::parse(
            Path::new(".toolgate/quickstart.toml"),
            "[servers.ssh]\ncommand = \"../target/release/ssh-mcp\"\ncwd = \".\"\n",
            &|_| None,
        )
        .unwrap();
        let here = std::env::current_dir().unwrap().join(".toolgate");
        let Transport::Stdio { command, cwd, .. } = &c.server("ssh").unwrap().transport else {
            panic!("ssh is stdio")
        };
        // Started in `cwd`, the program must still be the one next to the config.
        assert_eq!(Path::new(command), here.join("../target/release/ssh-mcp"));
        assert_eq!(cwd.as_deref(), Some(here.join(".").as_path()));
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = parse("[servers.a]\ncommand = \"x\"\ncomand = \"y\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("comand") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn a_server_with_neither_command_nor_url_is_named_with_its_line() {
        let err = parse("[listen]\nmcp = \"127.0.0.1:1\"\n\n[servers.broken]\nargs = []\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("servers.broken") && err.contains("line 4") && err.contains("command"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_environment_variable_is_an_error() {
        let err = parse("[servers.a]\nurl = \"http://h/${NOPE}\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("servers.a.url") && err.contains("NOPE"),
            "{err}"
        );
    }

    #[test]
    fn deadlines_default_and_must_be_above_zero() {
        let c = parse("[limits]\nbody_timeout = \"5s\"\n").unwrap();
        assert_eq!(c.limits.header_timeout, Duration::from_secs(30));
        assert_eq!(c.limits.body_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.session_idle_timeout, Duration::from_secs(30 * 60));
        for key in ["header_timeout", "body_timeout", "session_idle_timeout"] {
            let err = parse(&format!("[limits]\n{key} = \"0s\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("limits.{key}")) && err.contains("above zero"),
                "{err}"
            );
        }
    }

    #[test]
    fn admin_role_names_are_the_config_names() {
        for role in AdminRole::ALL {
            let parsed: AdminRole = serde_json::from_value(serde_json::json!(role.name())).unwrap();
            assert_eq!(parsed, role);
            assert_eq!(AdminRole::from_name(role.name()), Some(role));
        }
        assert_eq!(AdminRole::from_name("root"), None);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
