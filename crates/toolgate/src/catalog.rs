//! `toolgate inventory`, `toolgate recommend` and `toolgate pins`: what the upstreams offer,
//! how risky it is, a starting policy, and review of changed tool definitions.

use std::process::ExitCode;
use std::sync::Arc;

use serde_json::{Value, json};
use toolgate_catalog::{ServerRef, Subject, ToolDef};
use toolgate_gateway::Config;
use toolgate_gateway::config::Pinning;
use toolgate_gateway::guard::{load_policy, now_ms};
use toolgate_gateway::inventory::Inventory;
use toolgate_gateway::survey::{self, ServerView};
use toolgate_policy::{Policy, utc_rfc3339};

use toolgate_gateway::stores::{Purpose, Stores};
use toolgate_state::{AuditRecord, PinRecord};

use crate::BAD_CONFIG;

/// Exit code when the servers could not all be listed, or a review target does not exist.
const INCOMPLETE: u8 = 1;

/// Opens the inventory over the configured pin store.
async fn open(config: &Config) -> anyhow::Result<Inventory> {
    let stores = Stores::open(config, Purpose::Command)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the pin store: {e}"))?;
    Inventory::open(config, stores.pins)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the pin store: {e}"))
}

/// The grants' policies (a grant whose policy cannot be read is reported without one, and
/// the problem printed).
fn policies(config: &Config, only: Option<&str>) -> Vec<(String, Option<Arc<Policy>>)> {
    config
        .grants
        .iter()
        .filter(|g| only.is_none_or(|o| o == g.name))
        .map(|g| {
            let policy = g.policy.as_ref().and_then(|p| match load_policy(p) {
                Ok((policy, _)) => Some(Arc::new(policy)),
                Err(e) => {
                    eprintln!("toolgate: grant {}: {}: {e}", g.name, p.display());
                    None
                }
            });
            (g.name.clone(), policy)
        })
        .collect()
}

/// `toolgate inventory`.
pub async fn inventory(
    config: &Config,
    grant: Option<&str>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(g) = grant
        && !config.grants.iter().any(|x| x.name == g)
    {
        eprintln!("toolgate inventory: no grant named {g:?}");
        return Ok(ExitCode::from(BAD_CONFIG));
    }
    let inventory = open(config).await?;
    let servers = survey::survey(config, &inventory, None).await;
    let grants = policies(config, grant);
    let report = survey::report(config, &inventory, &servers, &grants);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_inventory(&report, &grants);
    }
    Ok(if servers.iter().any(|s| s.error.is_some()) {
        ExitCode::from(INCOMPLETE)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_inventory(report: &Value, grants: &[(String, Option<Arc<Policy>>)]) {
    let empty = Vec::new();
    for server in report["servers"].as_array().unwrap_or(&empty) {
        let name = server["name"].as_str().unwrap_or_default();
        let tools = server["tools"].as_array().unwrap_or(&empty);
        if let Some(e) = server["error"].as_str() {
            println!(
                "server {name} ({}): DOWN: {e}\n",
                server["transport"].as_str().unwrap_or_default()
            );
            continue;
        }
        let info = &server["serverInfo"];
        println!(
            "server {name} ({}, {} {}): {} tools, identity {}",
            server["transport"].as_str().unwrap_or_default(),
            info["name"].as_str().unwrap_or("?"),
            info["version"].as_str().unwrap_or(""),
            tools.len(),
            server["identity"]["pin"]["state"].as_str().unwrap_or("?"),
        );
        for f in server["instructions_findings"].as_array().unwrap_or(&empty) {
            println!(
                "  ! instructions: {}: {}",
                f["kind"].as_str().unwrap_or_default(),
                f["detail"].as_str().unwrap_or_default()
            );
        }
        for tool in tools {
            let categories: Vec<&str> = tool["categories"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .filter_map(Value::as_str)
                .collect();
            println!(
                "  {:<32} {:<8} {:<40} pin: {}",
                tool["exposed"].as_str().unwrap_or_default(),
                tool["severity"].as_str().unwrap_or_default(),
                if categories.is_empty() {
                    "unclassified".to_owned()
                } else {
                    categories.join(", ")
                },
                tool["pin"]["state"].as_str().unwrap_or_default(),
            );
            let why: Vec<&str> = tool["evidence"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .filter_map(|e| e["detail"].as_str())
                .collect();
            println!("      why: {}", why.join("; "));
            for (grant, _) in grants {
                let t = &tool["grants"][grant];
                let rules: Vec<&str> = t["rules"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                println!(
                    "      {grant}: {}  [{}]",
                    t["treatment"].as_str().unwrap_or_default(),
                    rules.join(", ")
                );
            }
        }
        println!();
    }
}

/// `toolgate recommend`.
pub async fn recommend(config: &Config, server: Option<&str>) -> anyhow::Result<ExitCode> {
    if let Some(s) = server
        && config.server(s).is_none()
    {
        eprintln!("toolgate recommend: no server named {s:?} in the configuration");
        return Ok(ExitCode::from(BAD_CONFIG));
    }
    let inventory = open(config).await?;
    let servers = survey::survey(config, &inventory, server).await;
    for s in &servers {
        if let Some(e) = &s.error {
            eprintln!("toolgate recommend: server {}: {e}", s.name);
            return Ok(ExitCode::from(INCOMPLETE));
        }
    }
    let defs: Vec<(&ServerView, Vec<ToolDef>, Option<String>)> = servers
        .iter()
        .map(|s| {
            let info_name = s
                .info
                .as_ref()
                .and_then(|i| i.server_info.as_ref())
                .and_then(|i| serde_json::from_str::<Value>(i.get()).ok())
                .and_then(|v| v["name"].as_str().map(str::to_owned));
            let defs = s
                .tools
                .iter()
                .map(|t| ToolDef::new(serde_json::from_str(t.raw.get()).unwrap_or_default()))
                .collect();
            (s, defs, info_name)
        })
        .collect();
    let mut shells: Vec<Option<String>> = Vec::new();
    for (s, defs, info_name) in &defs {
        let server_ref = ServerRef {
            name: &s.name,
            info_name: info_name.as_deref(),
        };
        for (tool, def) in s.tools.iter().zip(defs) {
            shells.push(
                inventory
                    .classifier()
                    .shell_argument(server_ref, def, &tool.class),
            );
        }
    }
    let mut subjects = Vec::new();
    let mut shell = shells.iter();
    for (s, _, _) in &defs {
        for tool in &s.tools {
            subjects.push(Subject {
                server: &s.name,
                tool: &tool.name,
                class: &tool.class,
                shell_argument: shell.next().and_then(|a| a.as_deref()),
            });
        }
    }
    let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    let from = format!(
        "the tools of {} as listed on {}",
        names.join(", "),
        &utc_rfc3339(now_ms())[..10]
    );
    let policy = toolgate_catalog::recommend(&subjects, &from);
    println!("{}", serde_json::to_string_pretty(&policy)?);
    Ok(ExitCode::SUCCESS)
}

/// `toolgate pins list`.
pub async fn pins_list(config: &Config, as_json: bool) -> anyhow::Result<ExitCode> {
    let Some(inventory) = pinned(config).await? else {
        return Ok(ExitCode::from(BAD_CONFIG));
    };
    let pins = inventory.pins();
    if as_json {
        let all: Vec<Value> = pins.iter().map(survey::pin_json).collect();
        println!("{}", serde_json::to_string_pretty(&json!({"pins": all}))?);
        return Ok(ExitCode::SUCCESS);
    }
    if pins.is_empty() {
        println!("no pins yet: tools are pinned when a client first lists them");
    }
    for r in &pins {
        let target = target_name(r);
        let approved = r.approved.as_ref().map_or("-", |a| short(&a.fingerprint));
        match &r.pending {
            Some(p) => println!(
                "{:<40} {:<8} approved {} pending {} (seen {})",
                target,
                r.status(),
                approved,
                short(&p.fingerprint),
                utc_rfc3339(p.at_ms)
            ),
            None => println!("{:<40} {:<8} approved {}", target, r.status(), approved),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `toolgate pins diff`: each pending change against what was approved.
pub async fn pins_diff(config: &Config, targets: &[String]) -> anyhow::Result<ExitCode> {
    let Some(inventory) = pinned(config).await? else {
        return Ok(ExitCode::from(BAD_CONFIG));
    };
    let pending: Vec<PinRecord> = inventory
        .pins()
        .into_iter()
        .filter(|r| r.pending.is_some())
        .filter(|r| targets.is_empty() || targets.contains(&target_name(r)))
        .collect();
    if pending.is_empty() {
        println!("nothing waits for review");
        return Ok(if targets.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(INCOMPLETE)
        });
    }
    for r in &pending {
        let p = r.pending.as_ref().expect("filtered on pending");
        println!(
            "--- {} approved {}",
            target_name(r),
            r.approved.as_ref().map_or("(nothing)", |a| &a.fingerprint)
        );
        println!(
            "+++ {} seen {} at {}",
            target_name(r),
            p.fingerprint,
            utc_rfc3339(p.at_ms)
        );
        let before = r
            .approved
            .as_ref()
            .map(|a| pretty(&a.definition))
            .unwrap_or_default();
        for line in diff_lines(&before, &pretty(&p.definition)) {
            println!("{line}");
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// `toolgate pins approve`.
pub async fn pins_approve(
    config: &Config,
    targets: &[String],
    all: bool,
    fingerprint: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let Some(inventory) = pinned(config).await? else {
        return Ok(ExitCode::from(BAD_CONFIG));
    };
    if targets.is_empty() && !all {
        eprintln!(
            "toolgate pins approve: name SERVER/TOOL (SERVER for a server's identity), or --all"
        );
        return Ok(ExitCode::from(BAD_CONFIG));
    }
    if fingerprint.is_some() && targets.len() != 1 {
        eprintln!("toolgate pins approve: --fingerprint goes with exactly one SERVER/TOOL");
        return Ok(ExitCode::from(BAD_CONFIG));
    }
    let chosen: Vec<(String, String)> = if all {
        inventory
            .pins()
            .into_iter()
            .filter(|r| r.pending.is_some())
            .map(|r| (r.server, r.tool))
            .collect()
    } else {
        targets
            .iter()
            .map(|t| match t.split_once('/') {
                Some((s, tool)) => (s.to_owned(), tool.to_owned()),
                None => (t.clone(), String::new()),
            })
            .collect()
    };
    let mut code = ExitCode::SUCCESS;
    for (server, tool) in chosen {
        let name = if tool.is_empty() {
            server.clone()
        } else {
            format!("{server}/{tool}")
        };
        match inventory
            .store()
            .approve(&server, &tool, fingerprint, now_ms())
            .await
        {
            Ok(Some(r)) => {
                let approved = r.approved.map(|a| a.fingerprint).unwrap_or_default();
                println!("approved {name}: {approved}");
                record_approval(config, &server, &tool, &approved).await;
            }
            Ok(None) => {
                eprintln!(
                    "toolgate pins approve: {name}: nothing waits for approval{}",
                    match fingerprint {
                        Some(f) => format!(" with fingerprint {f}"),
                        None => String::new(),
                    }
                );
                code = ExitCode::from(INCOMPLETE);
            }
            Err(e) => {
                eprintln!("toolgate pins approve: {name}: {e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}

/// Records a pin approval made from the command line in the audit log.
async fn record_approval(config: &Config, server: &str, tool: &str, fingerprint: &str) {
    let store = match Stores::open(config, Purpose::Command).await {
        Ok(s) => s.audit,
        Err(e) => {
            eprintln!("toolgate pins approve: the approval is not in the audit log: {e}");
            return;
        }
    };
    let who = crate::operator();
    let record = AuditRecord {
        at_ms: now_ms(),
        kind: "admin".into(),
        decision: "pin_approved".into(),
        grant: Some(format!("cli:{who}")),
        server: Some(server.to_owned()),
        tool: (!tool.is_empty()).then(|| tool.to_owned()),
        message: Some("pin approved with toolgate pins approve".into()),
        detail: Some(json!({"fingerprint": fingerprint})),
        ..AuditRecord::default()
    };
    if let Err(e) = store.append(&[record]).await {
        eprintln!("toolgate pins approve: the approval is not in the audit log: {e}");
    }
}

/// The inventory with its pins loaded; `None` (after saying why) when pinning is off.
async fn pinned(config: &Config) -> anyhow::Result<Option<Inventory>> {
    if config.catalog.pinning == Pinning::Off {
        eprintln!(
            "toolgate pins: pinning is off in this configuration ([catalog] pinning = \"off\")"
        );
        return Ok(None);
    }
    Ok(Some(open(config).await?))
}

fn target_name(r: &PinRecord) -> String {
    if r.tool.is_empty() {
        r.server.clone()
    } else {
        format!("{}/{}", r.server, r.tool)
    }
}

/// `sha256:` and the first 12 hex digits.
fn short(fingerprint: &str) -> &str {
    &fingerprint[..fingerprint.len().min(19)]
}

fn pretty(definition: &str) -> String {
    serde_json::from_str::<Value>(definition)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| definition.to_owned())
}

/// A line diff (longest common subsequence): unchanged lines start with ` `, removed with
/// `-`, added with `+`. Definitions are small; quadratic is fine.
fn diff_lines(before: &str, after: &str) -> Vec<String> {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+ {}", b[j]));
            j += 1;
        } else {
            out.push(format!("- {}", a[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::diff_lines;

    #[test]
    fn diff_marks_changed_lines() {
        let d = diff_lines("a\nb\nc", "a\nx\nc\nd");
        assert_eq!(d, ["  a", "+ x", "- b", "  c", "+ d"]);
    }
}
