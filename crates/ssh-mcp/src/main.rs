//! `ssh-mcp`: the SSH MCP server over stdio. stdout carries MCP messages and nothing else; logs
//! go to stderr (`SSH_MCP_LOG`, e.g. `debug`, default `info`).
//!
//! Exit status: 0 after the client closed stdin, 1 on a runtime failure, 2 for a bad config or
//! bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use rmcp::ServiceExt;
use toolgate_ssh_mcp::SshMcp;
use toolgate_ssh_mcp::config::{self, Settings};

/// SSH MCP server: run commands on SSH hosts, with host-key checking and real timeouts.
#[derive(Debug, Parser)]
#[command(name = "ssh-mcp", version)]
struct Cli {
    /// TOML config file (hosts, known_hosts, limits). Without one, only runtime credentials exist.
    #[arg(long, short, env = "SSH_MCP_CONFIG")]
    config: Option<PathBuf>,
    /// Do not offer add_credential / remove_credential: only the operator's hosts can be used.
    #[arg(long)]
    no_runtime_credentials: bool,
    /// Check the config, print the credentials it defines, and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SSH_MCP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rmcp=warn")),
        )
        .init();

    let mut settings = match &cli.config {
        Some(path) => match config::load(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("ssh-mcp: {e}");
                return ExitCode::from(2);
            }
        },
        None => Settings::default(),
    };
    settings.runtime_credentials = !cli.no_runtime_credentials;

    if cli.check {
        for c in &settings.credentials {
            eprintln!(
                "{}: {}@{}:{} ({})",
                c.name,
                c.user,
                c.host,
                c.port,
                c.auth_methods().join(", ")
            );
        }
        eprintln!(
            "ssh-mcp: config OK ({} credentials)",
            settings.credentials.len()
        );
        return ExitCode::SUCCESS;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ssh-mcp: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssh-mcp: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    tracing::info!(
        credentials = settings.credentials.len(),
        known_hosts = %settings.known_hosts.display(),
        runtime_credentials = settings.runtime_credentials,
        "ssh-mcp serving MCP on stdio"
    );
    let service = SshMcp::new(settings)
        .serve(rmcp::transport::stdio())
        .await
        .context("MCP initialization failed")?;
    service.waiting().await.context("MCP service failed")?;
    Ok(())
}
