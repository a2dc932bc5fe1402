//! `toolgate`: the command line of the MCP policy gateway.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use toolgate_gateway::audit::AuditLog;
use toolgate_gateway::inventory::Inventory;
use toolgate_gateway::stores::{Purpose, Stores};
use toolgate_gateway::{Config, Gateway, Guard, grant};

mod approvals;
mod audit;
mod catalog;
mod check;
mod explain;
mod grants;

#[derive(Parser)]
#[command(name = "toolgate", version, about = "A policy gateway for MCP tools")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Threads serving requests. 1, the default, runs them on one thread (the cheapest per
    /// call: a second worker mostly adds wake-ups); N uses N; 0 uses one per core.
    #[arg(long, global = true, default_value_t = 1, env = "TOOLGATE_THREADS")]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP over Streamable HTTP (endpoint /mcp) to clients holding a grant.
    Serve {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// Override `[listen] mcp`.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Serve one MCP client on stdin/stdout (for clients that spawn a command).
    Stdio {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// The grant this client acts under.
        #[arg(long)]
        grant: String,
    },
    /// Validate policy files, or a configuration and every policy its grants name.
    Check {
        /// The configuration file (default toolgate.toml when no policy file is given).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Policy files.
        policies: Vec<PathBuf>,
    },
    /// Show what a grant's policy decides for one call, every rule that fired and the
    /// counters it would take.
    Explain {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// The grant making the call.
        #[arg(long)]
        grant: String,
        /// The tool: `server/tool`, or a tool name with --server (or when one server is configured).
        #[arg(long)]
        tool: String,
        /// The server, when --tool does not say.
        #[arg(long)]
        server: Option<String>,
        /// The call's arguments as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List every server's tools with their category, severity and the evidence, their pin
    /// state, and what each grant's policy does with them. Starts the servers to ask them.
    Inventory {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// Only this grant's treatment.
        #[arg(long)]
        grant: Option<String>,
        /// Print JSON (the admin API's format).
        #[arg(long)]
        json: bool,
    },
    /// Print a starting policy for the configured servers' tools (review it, then attach it
    /// to a grant): default deny, reads allowed, writes limited, execution limited and
    /// argument-checked, destructive and critical tools held for approval.
    Recommend {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// Only this server's tools.
        #[arg(long)]
        server: Option<String>,
    },
    /// Review pinned tool definitions: list them, show changes, approve changes.
    Pins {
        #[command(subcommand)]
        command: PinsCommand,
    },
    /// Show the audit log: one record per decision and per operator action, newest last.
    Audit {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// Only this grant.
        #[arg(long)]
        grant: Option<String>,
        /// Only this tool (its name on its server).
        #[arg(long)]
        tool: Option<String>,
        /// Only this decision (allowed, denied, hidden, limited, quarantined, approval_pending,
        /// approval_granted, approval_denied, approval_expired, upstream_error, ...).
        #[arg(long)]
        decision: Option<String>,
        /// Only records this recent (`10m`, `2h`, `7d`) or since this UTC time
        /// (`2026-12-01T10:00:00Z`).
        #[arg(long)]
        since: Option<String>,
        /// At most this many records (the newest).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON lines (one record per line: an export format).
        #[arg(long)]
        json: bool,
        /// Keep printing new records as they are written.
        #[arg(long)]
        follow: bool,
    },
    /// The queue of calls held for a human's approval.
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Manage grants.
    Grant {
        #[command(subcommand)]
        command: GrantCommand,
    },
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// Calls waiting for approval (with --all, every approval and how it ended).
    List {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// Also decided, expired and used approvals.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One approval: the call, its arguments, its rule and what became of it.
    Show {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// The approval's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Let a held call through (that call only, once).
    Approve {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// The approval's id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Refuse a held call; the agent is told the reason.
    Deny {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// The approval's id.
        id: String,
        /// Why (the agent reads it).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum PinsCommand {
    /// Every pin: pinned, changed (quarantined until approved) or new (strict pinning).
    List {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what changed in definitions waiting for approval.
    Diff {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// `SERVER/TOOL` (or `SERVER` for the server's identity); all pending when none.
        targets: Vec<String>,
    },
    /// Trust the pending definition of tools (running gateways notice within a second).
    Approve {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// `SERVER/TOOL` (or `SERVER` for the server's identity).
        targets: Vec<String>,
        /// Approve everything pending.
        #[arg(long)]
        all: bool,
        /// Approve only if the pending definition has this fingerprint (the one reviewed).
        #[arg(long)]
        fingerprint: Option<String>,
    },
}

#[derive(Subcommand)]
enum GrantCommand {
    /// Create a token for a new grant: the token is printed once, with the lines for the config.
    New {
        /// The grant's name, e.g. alice-laptop.
        name: String,
        /// The policy file to attach.
        #[arg(long)]
        policy: Option<String>,
    },
    /// Create a grant in the state store: running gateways accept its token within their
    /// policy_reload_interval (the token is printed once).
    Create {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// The grant's name.
        name: String,
        /// The policy file (checked now; stored as an absolute path).
        #[arg(long)]
        policy: Option<String>,
    },
    /// Give a stored grant a new token; the old one stops working.
    Rotate {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// The grant's name.
        name: String,
    },
    /// Attach another policy file to a stored grant (its open sessions end).
    Attach {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// The grant's name.
        name: String,
        /// The policy file.
        #[arg(long, required_unless_present = "none")]
        policy: Option<String>,
        /// Detach the policy: the grant may do nothing.
        #[arg(long, conflicts_with = "policy")]
        none: bool,
    },
    /// Remove a stored grant: its token stops working and its sessions end.
    Revoke {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// The grant's name.
        name: String,
    },
    /// The configured and stored grants, with their policies (never a token).
    List {
        /// The configuration file.
        #[arg(long, short, default_value = "toolgate.toml")]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The relay allocates many small short-lived buffers per message; glibc's allocator took
/// about 15% of the gateway's CPU under load in `perf`, mimalloc much less (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration error.
pub(crate) const BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let runtime = match cli.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .expect("a Tokio runtime starts");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("toolgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config, listen } => {
            let Some(mut config) = load(&config) else {
                return Ok(ExitCode::from(BAD_CONFIG));
            };
            if let Some(addr) = listen {
                config.listen.mcp = addr
                    .parse()
                    .with_context(|| format!("--listen {addr:?} is not an address"))?;
            }
            let addr = config.listen.mcp;
            let Some(gateway) = start(config).await else {
                return Ok(ExitCode::from(BAD_CONFIG));
            };
            let shutdown = shutdown_signal();
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let local = listener.local_addr()?;
            if let Some(admin) = gateway.config.listen.admin {
                let admin = tokio::net::TcpListener::bind(admin)
                    .await
                    .with_context(|| format!("cannot listen on {admin} (listen.admin)"))?;
                let mut stopping = gateway.shutting_down();
                let stop = async move {
                    let _ = stopping.wait_for(|s| *s).await;
                };
                let gateway = gateway.clone();
                tokio::spawn(async move {
                    if let Err(e) = toolgate_admin::serve(gateway, admin, stop).await {
                        tracing::error!(error = %e, "the admin API stopped");
                    }
                });
            }
            tracing::info!(listen = %local, servers = gateway.config.servers.len(), grants = gateway.config.grants.len(), "toolgate serving MCP at http://{local}/mcp");
            toolgate_gateway::serve_http(
                gateway.clone(),
                listener,
                shutdown,
                Duration::from_secs(30),
            )
            .await?;
            flush_audit(&gateway).await;
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Stdio { config, grant } => {
            let Some(config) = load(&config) else {
                return Ok(ExitCode::from(BAD_CONFIG));
            };
            let Some(gateway) = start(config).await else {
                return Ok(ExitCode::from(BAD_CONFIG));
            };
            let Some(grant) = gateway.grants.by_name(&grant) else {
                eprintln!("toolgate: no grant named {grant:?} in the configuration");
                return Ok(ExitCode::from(BAD_CONFIG));
            };
            let (stdin, stdout) = toolgate_wire::line::stdio();
            toolgate_gateway::downstream::stdio::serve(gateway.clone(), grant, stdin, stdout)
                .await?;
            gateway.close_all();
            tokio::time::sleep(Duration::from_millis(200)).await;
            flush_audit(&gateway).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config, policies } => Ok(check::run(config, &policies)),
        Command::Explain {
            config,
            grant,
            tool,
            server,
            args,
            json,
        } => {
            let Some(config) = load(&config) else {
                return Ok(ExitCode::from(BAD_CONFIG));
            };
            explain::run(&config, &grant, &tool, server.as_deref(), &args, json).await
        }
        Command::Audit {
            config,
            grant,
            tool,
            decision,
            since,
            limit,
            json,
            follow,
        } => {
            let Some(config) = load(&config) else {
                return Ok(ExitCode::from(BAD_CONFIG));
            };
            let query = audit::Query {
                grant,
                tool,
                decision,
                since,
                limit,
                json,
                follow,
            };
            audit::run(&config, query).await
        }
        Command::Approvals { command } => {
            let path = match &command {
                ApprovalsCommand::List { config, .. }
                | ApprovalsCommand::Show { config, .. }
                | ApprovalsCommand::Approve { config, .. }
                | ApprovalsCommand::Deny { config, .. } => config.clone(),
            };
            let Some(config) = load(&path) else {
                return Ok(ExitCode::from(BAD_CONFIG));
            };
            match command {
                ApprovalsCommand::List { all, json, .. } => {
                    approvals::list(&config, all, json).await
                }
                ApprovalsCommand::Show { id, json, .. } => {
                    approvals::show(&config, &id, json).await
                }
                ApprovalsCommand::Approve { id, reason, .. } => {
                    approvals::decide(&config, &id, true, reason.as_deref()).await
                }
                ApprovalsCommand::Deny { id, reason, .. } => {
                    approvals::decide(&config, &id, false, reason.as_deref()).await
                }
            }
        }
        Command::Inventory {
            config,
            grant,
            json,
        } => {
            let Some(config) = load(&config) else {
                return Ok(ExitCode::from(BAD_CONFIG));
            };
            catalog::inventory(&config, grant.as_deref(), json).await
        }
        Command::Recommend { config, server } => {
            let Some(config) = load(&config) else {
                return Ok(ExitCode::from(BAD_CONFIG));
            };
            catalog::recommend(&config, server.as_deref()).await
        }
        Command::Pins { command } => {
            let path = match &command {
                PinsCommand::List { config, .. }
                | PinsCommand::Diff { config, .. }
                | PinsCommand::Approve { config, .. } => config.clone(),
            };
            let Some(config) = load(&path) else {
                return Ok(ExitCode::from(BAD_CONFIG));
            };
            match command {
                PinsCommand::List { json, .. } => catalog::pins_list(&config, json).await,
                PinsCommand::Diff { targets, .. } => catalog::pins_diff(&config, &targets).await,
                PinsCommand::Approve {
                    targets,
                    all,
                    fingerprint,
                    ..
                } => catalog::pins_approve(&config, &targets, all, fingerprint.as_deref()).await,
            }
        }
        Command::Grant {
            command: GrantCommand::New { name, policy },
        } => {
            let token = grant::new_token();
            let hash = hex::encode(grant::token_digest(&token));
            println!(
                "Token for grant {name:?} (shown once; give it to the agent and keep it secret):\n\n  {token}\n"
            );
            println!("Add to the configuration:\n\n[grants.{name}]\ntoken_sha256 = \"{hash}\"");
            if let Some(p) = policy {
                println!("policy = {p:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Grant { command } => {
            let path = match &command {
                GrantCommand::New { .. } => unreachable!("handled above"),
                GrantCommand::Create { config, .. }
                | GrantCommand::Rotate { config, .. }
                | GrantCommand::Attach { config, .. }
                | GrantCommand::Revoke { config, .. }
                | GrantCommand::List { config, .. } => config.clone(),
            };
            let Some(config) = load(&path) else {
                return Ok(ExitCode::from(BAD_CONFIG));
            };
            match command {
                GrantCommand::New { .. } => unreachable!("handled above"),
                GrantCommand::Create { name, policy, .. } => {
                    grants::create(&config, &name, policy.as_deref()).await
                }
                GrantCommand::Rotate { name, .. } => grants::rotate(&config, &name).await,
                GrantCommand::Attach { name, policy, .. } => {
                    grants::attach(&config, &name, policy.as_deref()).await
                }
                GrantCommand::Revoke { name, .. } => grants::revoke(&config, &name).await,
                GrantCommand::List { json, .. } => grants::list(&config, json).await,
            }
        }
    }
}

/// Builds the gateway: loads every grant's policy, opens the state, starts the policy
/// reloader and the SIGHUP handler. `None` (after saying why) when a policy is invalid.
async fn start(config: Config) -> Option<Arc<Gateway>> {
    let stores = match Stores::open(&config, Purpose::Serve).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("toolgate: cannot open the state: {e}");
            return None;
        }
    };
    let audit = AuditLog::start(stores.audit.clone(), &config.audit);
    let guard = match Guard::new(&config, stores.clone()).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("toolgate: {e}");
            return None;
        }
    };
    let inventory = match Inventory::open(&config, stores.pins.clone()).await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("toolgate: cannot open the pin store: {e}");
            return None;
        }
    };
    let interval = config.policy_reload_interval;
    let gateway = Gateway::new(config, guard, inventory, audit);
    gateway.refresh_grants().await;
    toolgate_gateway::spawn_policy_reloader(&gateway, interval);
    use tokio::signal::unix::{SignalKind, signal};
    if let Ok(mut hup) = signal(SignalKind::hangup()) {
        let gateway = Arc::downgrade(&gateway);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let Some(gateway) = gateway.upgrade() else {
                    return;
                };
                tracing::info!("SIGHUP: reloading policies");
                gateway.reload_policies().await;
            }
        });
    }
    Some(gateway)
}

/// Writes the audit records still queued before the process exits (bounded: a store that
/// cannot be written is not waited for forever).
async fn flush_audit(gateway: &Gateway) {
    if tokio::time::timeout(Duration::from_secs(10), gateway.audit.flush())
        .await
        .is_err()
    {
        tracing::error!("audit records still queued at exit could not be written within 10 s");
    }
}

/// Who runs this command, for the audit log: `$USER`, else `$LOGNAME`, else the user id.
pub(crate) fn operator() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .or_else(|| {
            let status = std::fs::read_to_string("/proc/self/status").ok()?;
            let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            Some(format!("uid {}", uid.split_whitespace().next()?))
        })
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn load(path: &Path) -> Option<Config> {
    match Config::load(path) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("toolgate: bad configuration: {e}");
            None
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOOLGATE_LOG")
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed now, not when the future is
/// first polled, so that a signal right after start-up already means a graceful stop.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}
