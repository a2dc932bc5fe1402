//! `toolgate approvals`: the queue of calls held for a human, and the human's answer.

use std::process::ExitCode;

use serde_json::json;
use toolgate_gateway::Config;
use toolgate_gateway::audit::approval_decision;
use toolgate_gateway::guard::now_ms;
use toolgate_gateway::stores::{Purpose, Stores};
use toolgate_policy::utc_rfc3339;
use toolgate_state::Approval;

use crate::BAD_CONFIG;

/// Exit code when the approval does not exist or is no longer pending.
const NOT_PENDING: u8 = 1;

async fn open(config: &Config) -> anyhow::Result<Stores> {
    Stores::open(config, Purpose::Command)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the approvals store: {e}"))
}

/// `toolgate approvals list`.
pub async fn list(config: &Config, all: bool, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = open(config).await?;
    let approvals = store.approvals.list(all, now_ms()).await?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "approvals": approvals }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if approvals.is_empty() {
        println!(
            "{}",
            if all {
                "no approvals yet"
            } else {
                "nothing waits for approval"
            }
        );
    }
    let now = now_ms();
    for a in &approvals {
        let when = if a.status == toolgate_state::ApprovalStatus::Pending {
            format!("expires in {}s", a.expires_ms.saturating_sub(now) / 1000)
        } else {
            a.status.as_str().to_owned()
        };
        println!(
            "{}  {:<8} {}/{}  grant={}  severity={}  {}  args={}",
            a.id,
            a.status.as_str(),
            a.server,
            a.tool,
            a.grant,
            a.severity.as_deref().unwrap_or("?"),
            when,
            truncate(&a.arguments.to_string(), 120)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `toolgate approvals show ID`.
pub async fn show(config: &Config, id: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = open(config).await?;
    let Some(a) = store.approvals.get(id, now_ms()).await? else {
        eprintln!("toolgate approvals: no approval {id:?}");
        return Ok(ExitCode::from(NOT_PENDING));
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&a)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("approval {}: {}", a.id, a.status.as_str());
    println!(
        "  call:     {}/{} by grant {} (session {})",
        a.server, a.tool, a.grant, a.session
    );
    println!("  severity: {}", a.severity.as_deref().unwrap_or("unknown"));
    println!("  rule:     {} (policy {})", a.rule, a.policy_version);
    println!("  asked:    {}", utc_rfc3339(a.created_ms));
    println!("  expires:  {}", utc_rfc3339(a.expires_ms));
    if !a.approvers.is_empty() {
        println!("  approvers: {}", a.approvers.join(", "));
    }
    if let Some(by) = &a.decided_by {
        println!(
            "  decided:  by {by} at {}{}",
            a.decided_ms.map(utc_rfc3339).unwrap_or_default(),
            a.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    println!("  arguments (sha256 {}):", a.args_sha256);
    println!("{}", serde_json::to_string_pretty(&a.arguments)?);
    Ok(ExitCode::SUCCESS)
}

/// `toolgate approvals approve|deny ID`.
pub async fn decide(
    config: &Config,
    id: &str,
    approve: bool,
    reason: Option<&str>,
) -> anyhow::Result<ExitCode> {
    if !approve && reason.is_none_or(|r| r.trim().is_empty()) {
        eprintln!("toolgate approvals deny: give --reason (the agent is told it)");
        return Ok(ExitCode::from(BAD_CONFIG));
    }
    let store = open(config).await?;
    let who = format!("cli:{}", crate::operator());
    let Some(a) = store
        .approvals
        .decide(id, approve, &who, reason, now_ms())
        .await?
    else {
        let state = store
            .approvals
            .get(id, now_ms())
            .await?
            .map(|a| a.status.as_str().to_owned());
        match state {
            Some(s) => eprintln!("toolgate approvals: {id} is {s}, not pending"),
            None => eprintln!("toolgate approvals: no approval {id:?}"),
        }
        return Ok(ExitCode::from(NOT_PENDING));
    };
    println!(
        "{} {}: {}/{} for grant {}",
        if approve { "approved" } else { "denied" },
        a.id,
        a.server,
        a.tool,
        a.grant
    );
    record(&store, &a, approve, &who).await;
    Ok(ExitCode::SUCCESS)
}

async fn record(stores: &Stores, a: &Approval, approve: bool, who: &str) {
    stores.announce_decision(&a.id).await;
    if let Err(e) = stores
        .audit
        .append(&[approval_decision(a, approve, who)])
        .await
    {
        eprintln!("toolgate approvals: the decision is not in the audit log: {e}");
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}
