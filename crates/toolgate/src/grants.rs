//! `toolgate grant create|rotate|revoke|attach|list`: grants kept in the state store, which
//! running gateways (every instance sharing the store) pick up within
//! `policy_reload_interval`, without a restart.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use toolgate_gateway::Config;
use toolgate_gateway::grant::{new_token, token_digest};
use toolgate_gateway::guard::{load_policy, now_ms};
use toolgate_gateway::stores::{Purpose, Stores};
use toolgate_policy::utc_rfc3339;
use toolgate_state::{AuditRecord, GrantChange, StoredGrant};

use crate::BAD_CONFIG;

/// Exit code when the grant does not exist (or, for `create`, already does).
const NOT_FOUND: u8 = 1;

async fn open(config: &Config) -> anyhow::Result<Stores> {
    Stores::open(config, Purpose::Command)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the grant store: {e}"))
}

/// A policy file for a grant: absolute (the gateway may run elsewhere), and valid now, so that
/// a typo is caught here rather than by an agent that may do nothing.
fn policy_path(policy: &str) -> Result<String, String> {
    let path = std::path::absolute(Path::new(policy)).map_err(|e| format!("{policy}: {e}"))?;
    load_policy(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{}: not UTF-8", path.display()))
}

async fn record(stores: &Stores, action: &str, grant: &str, detail: serde_json::Value) {
    let record = AuditRecord {
        at_ms: now_ms(),
        kind: "admin".into(),
        decision: action.into(),
        grant: Some(format!("cli:{}", crate::operator())),
        message: Some(format!("{action} {grant:?} with toolgate grant")),
        detail: Some(json!({"grant": grant, "change": detail})),
        ..AuditRecord::default()
    };
    if let Err(e) = stores.audit.append(&[record]).await {
        eprintln!("toolgate grant: the change is not in the audit log: {e}");
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
    if config.grants.iter().any(|g| g.name == name) {
        eprintln!("toolgate grant create: {name:?} is a grant of the configuration file");
        return Ok(ExitCode::from(NOT_FOUND));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        || name.is_empty()
    {
        eprintln!("toolgate grant create: a grant name is letters, digits and - _ . @");
        return Ok(ExitCode::from(BAD_CONFIG));
    }
    let policy = match policy.map(policy_path).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("toolgate grant create: invalid policy: {e}");
            return Ok(ExitCode::from(BAD_CONFIG));
        }
    };
    let stores = open(config).await?;
    let token = new_token();
    let now = now_ms();
    let grant = StoredGrant {
        name: name.to_owned(),
        token_sha256: hex::encode(token_digest(&token)),
        policy: policy.clone(),
        created_ms: now,
        updated_ms: now,
    };
    if !stores.grants.create(grant).await? {
        eprintln!("toolgate grant create: a grant named {name:?} exists (rotate or revoke it)");
        return Ok(ExitCode::from(NOT_FOUND));
    }
    record(&stores, "grant_created", name, json!({"policy": policy})).await;
    print_token(name, &token);
    Ok(ExitCode::SUCCESS)
}

/// `toolgate grant rotate NAME`: a new token; the old one stops working.
pub async fn rotate(config: &Config, name: &str) -> anyhow::Result<ExitCode> {
    let stores = open(config).await?;
    let token = new_token();
    let change = GrantChange {
        token_sha256: Some(hex::encode(token_digest(&token))),
        policy: None,
    };
    if stores
        .grants
        .update(name, change, now_ms())
        .await?
        .is_none()
    {
        eprintln!("toolgate grant rotate: no stored grant named {name:?}");
        return Ok(ExitCode::from(NOT_FOUND));
    }
    record(&stores, "grant_rotated", name, json!({})).await;
    print_token(name, &token);
    Ok(ExitCode::SUCCESS)
}

/// `toolgate grant attach NAME --policy P | --none`.
pub async fn attach(config: &Config, name: &str, policy: Option<&str>) -> anyhow::Result<ExitCode> {
    let policy = match policy.map(policy_path).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("toolgate grant attach: invalid policy: {e}");
            return Ok(ExitCode::from(BAD_CONFIG));
        }
    };
    let stores = open(config).await?;
    let change = GrantChange {
        token_sha256: None,
        policy: Some(policy.clone()),
    };
    if stores
        .grants
        .update(name, change, now_ms())
        .await?
        .is_none()
    {
        eprintln!("toolgate grant attach: no stored grant named {name:?}");
        return Ok(ExitCode::from(NOT_FOUND));
    }
    record(
        &stores,
        "grant_policy_attached",
        name,
        json!({"policy": policy}),
    )
    .await;
    match policy {
        Some(p) => println!("grant {name:?} now follows {p}; its open sessions end"),
        None => println!("grant {name:?} has no policy now: it may do nothing"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `toolgate grant revoke NAME`: its token stops working and its sessions end.
pub async fn revoke(config: &Config, name: &str) -> anyhow::Result<ExitCode> {
    let stores = open(config).await?;
    if !stores.grants.revoke(name).await? {
        eprintln!("toolgate grant revoke: no stored grant named {name:?}");
        return Ok(ExitCode::from(NOT_FOUND));
    }
    record(&stores, "grant_revoked", name, json!({})).await;
    println!("revoked grant {name:?}");
    Ok(ExitCode::SUCCESS)
}

/// `toolgate grant list [--json]`: configured and stored grants (never a token).
pub async fn list(config: &Config, as_json: bool) -> anyhow::Result<ExitCode> {
    let stores = open(config).await?;
    let stored = stores.grants.list().await?;
    let mut rows = Vec::new();
    for g in &config.grants {
        rows.push(json!({"name": g.name, "source": "config",
            "policy": g.policy.as_ref().map(|p| p.display().to_string())}));
    }
    for g in &stored {
        rows.push(
            json!({"name": g.name, "source": "store", "policy": g.policy,
            "created": utc_rfc3339(g.created_ms), "updated": utc_rfc3339(g.updated_ms)}),
        );
    }
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
