//! The inventory (servers, tools, classes, pins) and pin approvals.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use toolgate_gateway::guard::{load_policy, now_ms};
use toolgate_gateway::survey::{self, ServerView};
use toolgate_state::AuditRecord;

use crate::{
    Admin, AdminOnly, Authorized, Shared, Viewer, audit_admin, body, error, reply, unavailable,
};

/// How long servers listed on demand for the admin pages are reused.
const SURVEY_TTL: Duration = Duration::from_secs(30);

/// Servers no client has used yet, listed for the admin pages (without recording pins:
/// looking is not trusting), and when.
pub(crate) type Surveyed = tokio::sync::Mutex<Option<(Instant, Vec<ServerView>)>>;

/// Every configured server as the gateway sees it, with whether its tools come from a client
/// session (`live`), were listed for this page (`listed on demand`), or are unknown (`down`).
pub(crate) async fn servers(state: &Admin) -> Vec<(ServerView, &'static str)> {
    let gateway = &state.gateway;
    let live = survey::live(&gateway.config, &gateway.inventory);
    let missing: Vec<String> = live
        .iter()
        .filter(|s| s.info.is_none())
        .map(|s| s.name.clone())
        .collect();
    if missing.is_empty() {
        return live.into_iter().map(|s| (s, "live")).collect();
    }
    let mut cache = state.surveyed.lock().await;
    let stale = cache
        .as_ref()
        .is_none_or(|(at, views)| at.elapsed() > SURVEY_TTL || views.len() != missing.len());
    if stale {
        let views =
            futures_util::future::join_all(missing.iter().map(|name| {
                survey::survey(&gateway.config, &gateway.inventory, Some(name.as_str()))
            }))
            .await;
        *cache = Some((Instant::now(), views.into_iter().flatten().collect()));
    }
    let surveyed = cache.as_ref().map(|(_, v)| v.as_slice()).unwrap_or(&[]);
    live.into_iter()
        .map(|s| {
            if s.info.is_some() {
                return (s, "live");
            }
            match surveyed.iter().find(|v| v.name == s.name) {
                Some(v) if v.error.is_none() => (v.clone(), "listed on demand"),
                Some(v) => (v.clone(), "down"),
                None => (s, "down"),
            }
        })
        .collect()
}

/// The inventory report (as `toolgate inventory --json`) with each server's `state`.
pub(crate) async fn report(state: &Admin) -> Value {
    let gateway = &state.gateway;
    let grants: Vec<_> = gateway
        .grants
        .all()
        .iter()
        .map(|g| {
            let policy = g
                .policy
                .as_ref()
                // The policy in force; a file no grant had when the gateway last looked is read.
                .and_then(|p| {
                    gateway
                        .guard
                        .policy_at(p)
                        .or_else(|| load_policy(p).ok().map(|(p, _)| Arc::new(p)))
                });
            (g.name.to_string(), policy)
        })
        .collect();
    let (views, states): (Vec<ServerView>, Vec<&str>) = servers(state).await.into_iter().unzip();
    let mut report = survey::report(&gateway.config, &gateway.inventory, &views, &grants);
    if let Some(servers) = report["servers"].as_array_mut() {
        for (entry, s) in servers.iter_mut().zip(states) {
            entry["state"] = json!(s);
        }
    }
    report
}

pub(crate) async fn inventory(State(state): Shared, _: Viewer) -> Response {
    reply(StatusCode::OK, &report(&state).await)
}

pub(crate) async fn pins(State(state): Shared, _: Viewer) -> Response {
    let all: Vec<Value> = state
        .gateway
        .inventory
        .pins()
        .iter()
        .map(survey::pin_json)
        .collect();
    reply(StatusCode::OK, &json!({ "pins": all }))
}

#[derive(serde::Deserialize)]
struct PinApproval {
    server: String,
    #[serde(default)]
    tool: String,
    /// The definition reviewed: one that changed again since is not approved with it.
    fingerprint: String,
}

pub(crate) async fn approve_pin(
    State(state): Shared,
    Authorized(caller): AdminOnly,
    bytes: Bytes,
) -> Response {
    let request: PinApproval = match body(
        &bytes,
        r#"{"server", "tool" ("" for the server's identity), "fingerprint"}"#,
    ) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (server, tool) = (request.server.as_str(), request.tool.as_str());
    let inventory = &state.gateway.inventory;
    match inventory
        .store()
        .approve(server, tool, Some(&request.fingerprint), now_ms())
        .await
    {
        Ok(Some(record)) => {
            let fingerprint = record.approved.map(|a| a.fingerprint);
            tracing::warn!(target: "toolgate::audit", event = "pin_approved", by = %caller.name, server, tool, "pin approved through the admin API");
            audit_admin(
                &state,
                &caller,
                AuditRecord {
                    decision: "pin_approved".into(),
                    server: Some(server.to_owned()),
                    tool: (!tool.is_empty()).then(|| tool.to_owned()),
                    message: Some("pin approved through the admin API".into()),
                    detail: Some(json!({ "fingerprint": fingerprint })),
                    ..Default::default()
                },
            );
            // Applies at once here; other instances notice through the store.
            state.gateway.reload_policies().await;
            reply(
                StatusCode::OK,
                &json!({"approved": {"server": server, "tool": tool, "fingerprint": fingerprint}}),
            )
        }
        Ok(None) => error(
            StatusCode::CONFLICT,
            "nothing waits for approval (with that fingerprint)",
        ),
        Err(e) => unavailable(e),
    }
}
