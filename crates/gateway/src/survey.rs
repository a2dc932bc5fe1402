//! The inventory report: every server and tool with its class, evidence, pin state and what
//! each grant's policy does with it. `toolgate inventory` prints it; the admin API serves the
//! same JSON.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use toolgate_catalog::ToolDef;
use toolgate_policy::Policy;
use toolgate_wire::raw;

use crate::config::{Config, Pinning, Transport};
use crate::inventory::{IndexedTool, Inventory};
use crate::names;
use crate::upstream::{InitInfo, Upstream};

/// What one server offers, as far as the gateway could see.
#[derive(Clone)]
pub struct ServerView {
    /// The configured name.
    pub name: String,
    /// `stdio` or `http`.
    pub transport: &'static str,
    /// Why its tools are unknown, if they are.
    pub error: Option<String>,
    /// Its handshake.
    pub info: Option<Arc<InitInfo>>,
    /// Its tools, classified.
    pub tools: Vec<Arc<IndexedTool>>,
}

fn transport(config: &Config, server: &str) -> &'static str {
    match config.server(server).map(|s| &s.transport) {
        Some(Transport::Http { .. }) => "http",
        _ => "stdio",
    }
}

/// Starts every configured server (or only `only`), lists its tools and classifies them
/// without recording pins: looking is not trusting.
pub async fn survey(config: &Config, inventory: &Inventory, only: Option<&str>) -> Vec<ServerView> {
    let caps = raw(&json!({}));
    let client = raw(&json!({"name": "toolgate-inventory", "version": env!("CARGO_PKG_VERSION")}));
    let servers: Vec<_> = config
        .servers
        .iter()
        .filter(|s| only.is_none_or(|o| o == s.name))
        .map(|s| {
            Upstream::start(
                Arc::new(s.clone()),
                &caps,
                &client,
                config.limits.max_line_bytes,
            )
        })
        .collect();
    let lists = futures_util::future::join_all(servers.iter().map(|up| async move {
        up.settled().await;
        let conn = up.connection()?;
        let items = conn.list("tools/list", "tools").await?;
        Ok::<_, crate::upstream::UpstreamError>((conn.info(), items))
    }))
    .await;
    for (up, list) in servers.iter().zip(&lists) {
        if let Ok((_, items)) = list {
            inventory.note_names(&up.name, items);
        }
    }
    servers
        .iter()
        .zip(lists)
        .map(|(up, list)| match list {
            Ok((info, items)) => ServerView {
                name: up.name.to_string(),
                transport: transport(config, &up.name),
                error: None,
                tools: inventory.classify_list(&up.name, &info, &items),
                info: Some(info),
            },
            Err(e) => ServerView {
                name: up.name.to_string(),
                transport: transport(config, &up.name),
                error: Some(e.to_string()),
                info: None,
                tools: Vec::new(),
            },
        })
        .collect()
}

/// The servers as a running gateway last listed them (configured servers never listed are
/// reported as such).
pub fn live(config: &Config, inventory: &Inventory) -> Vec<ServerView> {
    let latest = inventory.latest();
    config
        .servers
        .iter()
        .map(|s| match latest.iter().find(|(n, _, _)| *n == s.name) {
            Some((_, info, index)) => ServerView {
                name: s.name.clone(),
                transport: transport(config, &s.name),
                error: None,
                info: Some(info.clone()),
                tools: index.tools.clone(),
            },
            None => ServerView {
                name: s.name.clone(),
                transport: transport(config, &s.name),
                error: Some(
                    "not listed yet: no client has used it since the gateway started".into(),
                ),
                info: None,
                tools: Vec::new(),
            },
        })
        .collect()
}

/// The inventory as JSON: `{"servers": [{name, transport, error?, serverInfo?, identity,
/// tools: [{name, exposed, title, description, categories, severity, evidence, findings,
/// fingerprint, pin, grants: {grant: {treatment, rules}}}]}]}`.
pub fn report(
    config: &Config,
    inventory: &Inventory,
    servers: &[ServerView],
    grants: &[(String, Option<Arc<Policy>>)],
) -> Value {
    let several = config.servers.len() > 1;
    let mut out = Vec::new();
    for server in servers {
        let mut tools = Vec::new();
        for tool in &server.tools {
            let def = ToolDef::new(serde_json::from_str(tool.raw.get()).unwrap_or_default());
            let exposed = names::exposed(&server.name, &tool.name);
            let mut by_grant = Map::new();
            for (grant, policy) in grants {
                let treatment = match policy {
                    None => {
                        json!({"treatment": "hidden", "rules": [toolgate_policy::RULE_NO_POLICY]})
                    }
                    Some(p) => {
                        let t = p.treatment(&toolgate_policy::Target {
                            server: &server.name,
                            name: &tool.name,
                            exposed: &exposed,
                            categories: &tool.categories,
                            severity: Some(tool.class.severity.as_str()),
                        });
                        json!({"treatment": t.describe(), "rules": t.rules})
                    }
                };
                by_grant.insert(grant.clone(), treatment);
            }
            let pin = pin_state(inventory, &server.name, &tool.name, &tool.fingerprint);
            tools.push(json!({
                "name": tool.name,
                "exposed": if several { exposed.clone() } else { tool.name.clone() },
                "title": def.title(),
                "description": def.description(),
                "categories": tool.class.categories,
                "severity": tool.class.severity,
                "evidence": tool.class.evidence,
                "findings": tool.class.findings,
                "fingerprint": tool.fingerprint,
                "pin": pin,
                "grants": by_grant,
            }));
        }
        let mut entry = json!({
            "name": server.name,
            "transport": server.transport,
            "tools": tools,
        });
        if let Some(e) = &server.error {
            entry["error"] = json!(e);
        }
        if let Some(info) = &server.info {
            let server_info = info
                .server_info
                .as_ref()
                .and_then(|i| serde_json::from_str::<Value>(i.get()).ok());
            entry["serverInfo"] = server_info.clone().unwrap_or(Value::Null);
            let fingerprint = toolgate_catalog::server_fingerprint(
                server_info.as_ref(),
                info.instructions.as_deref(),
            );
            entry["identity"] = json!({
                "fingerprint": fingerprint,
                "pin": pin_state(inventory, &server.name, "", &fingerprint),
            });
            if let Some(text) = &info.instructions {
                let mut findings = Vec::new();
                toolgate_catalog::scan::scan_text("instructions", text, &mut findings);
                entry["instructions_findings"] = json!(findings);
            }
        }
        out.push(entry);
    }
    json!({ "servers": out })
}

/// `pinned`, `changed`, `new`, `unpinned` (never recorded), or `off`, with fingerprints.
fn pin_state(inventory: &Inventory, server: &str, tool: &str, fingerprint: &str) -> Value {
    if inventory.config().pinning == Pinning::Off {
        return json!({"state": "off"});
    }
    match inventory.pin(server, tool) {
        None => json!({"state": "unpinned"}),
        Some(r) => {
            let state = if r.trusts(fingerprint) {
                "pinned"
            } else if r.approved.is_some() {
                "changed"
            } else {
                "new"
            };
            json!({
                "state": state,
                "approved": r.approved.map(|a| a.fingerprint),
                "pending": r.pending.map(|p| p.fingerprint),
            })
        }
    }
}

/// A pin record as JSON (for `toolgate pins list --json` and the admin API): times as UTC
/// text, definitions as JSON.
pub fn pin_json(r: &toolgate_state::PinRecord) -> Value {
    let pinned = |p: &toolgate_state::Pinned| {
        json!({
            "fingerprint": p.fingerprint,
            "at": toolgate_policy::utc_rfc3339(p.at_ms),
            "definition": serde_json::from_str::<Value>(&p.definition).unwrap_or(Value::Null),
        })
    };
    json!({
        "server": r.server,
        "tool": r.tool,
        "status": r.status(),
        "first_seen": toolgate_policy::utc_rfc3339(r.first_seen_ms),
        "approved": r.approved.as_ref().map(pinned),
        "pending": r.pending.as_ref().map(pinned),
    })
}
