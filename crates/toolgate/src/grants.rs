//! `toolgate grant create|rotate|attach|revoke|list`: grants kept in the state store, which
//! running gateways (every instance sharing the store) pick up within
//! `policy_reload_interval`, without a restart. The changes themselves are
//! `toolgate_gateway::manage`'s, shared with the admin API.

use std::process::ExitCode;

use serde_json::json;
use toolgate_gateway::Config;
use toolgate_gateway::manage::{GrantAdmin, GrantError, grant_rows};
use toolgate_gateway::stores::{Purpose, Stores};

use crate::BAD_CONFIG;

/// Exit code when the grant does not exist (or, for `create`, already does).
const NOT_FOUND: u8 = 1;

async fn open(config: &Config) -> anyhow::Result<Stores> {
    Stores::open(config, Purpose::Command)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the grant store: {e}"))
}

/// Runs one grant change, reporting a refusal as `toolgate grant <verb>: ...` with its exit code.
async fn with_admin<T>(
    config: &Config,
    verb: &str,
    change: impl AsyncFnOnce(&GrantAdmin<'_>) -> Result<T, GrantError>,
) -> anyhow::Result<Result<T, ExitCode>> {
    let stores = open(config).await?;
    let admin = GrantAdmin {
        config,
        stores: &stores,
        by: format!("cli:{}", crate::operator()),
    };
    match change(&admin).await {
        Ok(v) => Ok(Ok(v)),
        Err(GrantError::Store(e)) => Err(e.into()),
        Err(e) => {
            eprintln!("toolgate grant {verb}: {e}");
            let code = match e {
                GrantError::BadName | GrantError::BadPolicy(_) => BAD_CONFIG,
                _ => NOT_FOUND,
            };
            Ok(Err(ExitCode::from(code)))
        }
    }
}

fn print_token(name: &str, token: &str) {
    println!(
        "Token for grant {name:?} (shown once; give it to the agent and keep it secret):\n\n  {token}\n"
    );
    println!("Running gateways accept it within their policy_reload_interval.");
}

/// `toolgate grant create NAME [--policy P]`.
pub async fn create(config: &Config, name: &str, policy: Option<&str>) -> anyhow::Result<ExitCode> {
    Ok(
        match with_admin(config, "create", async |a| a.create(name, policy).await).await? {
            Ok(token) => {
                print_token(name, &token);
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    )
}

/// `toolgate grant rotate NAME`: a new token; the old one stops working.
pub async fn rotate(config: &Config, name: &str) -> anyhow::Result<ExitCode> {
    Ok(
        match with_admin(config, "rotate", async |a| a.rotate(name).await).await? {
            Ok(token) => {
                print_token(name, &token);
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    )
}

/// `toolgate grant attach NAME --policy P | --none`.
pub async fn attach(config: &Config, name: &str, policy: Option<&str>) -> anyhow::Result<ExitCode> {
    Ok(
        match with_admin(config, "attach", async |a| a.attach(name, policy).await).await? {
            Ok(Some(p)) => {
                println!("grant {name:?} now follows {p}; its open sessions end");
                ExitCode::SUCCESS
            }
            Ok(None) => {
                println!("grant {name:?} has no policy now: it may do nothing");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    )
}

/// `toolgate grant revoke NAME`: its token stops working and its sessions end.
pub async fn revoke(config: &Config, name: &str) -> anyhow::Result<ExitCode> {
    Ok(
        match with_admin(config, "revoke", async |a| a.revoke(name).await).await? {
            Ok(()) => {
                println!("revoked grant {name:?}");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    )
}

/// `toolgate grant list [--json]`: configured and stored grants (never a token).
pub async fn list(config: &Config, as_json: bool) -> anyhow::Result<ExitCode> {
    let stores = open(config).await?;
    let rows = grant_rows(config, &stores.grants.list().await?);
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "grants": rows }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    for r in &rows {
        println!(
            "{:<24} {:<7} {}",
            r["name"].as_str().unwrap_or_default(),
            r["source"].as_str().unwrap_or_default(),
            r["policy"]
                .as_str()
                .unwrap_or("(no policy: may do nothing)")
        );
    }
    Ok(ExitCode::SUCCESS)
}
