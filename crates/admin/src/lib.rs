//! The admin HTTP API, on its own listener (`[listen] admin`), for operators and the web UI.
//!
//! Every request carries an admin token (`Authorization: Bearer`), stored in the config as
//! SHA-256 and compared in constant time; its role decides what it may do. Host and Origin
//! are checked as on the MCP listener, so a web page cannot drive the API from a browser.
//! Bearer tokens are never sent by browsers on their own, so there is no cookie to forge a
//! request with (the web UI's cookie login will add CSRF checks with it).
//!
//! | endpoint | role | does |
//! |---|---|---|
//! | `GET /api/inventory` | viewer | every server's tools: class, evidence, pin state, each grant's treatment |
//! | `GET /api/pins` | viewer | every pin record |
//! | `POST /api/pins/approve` | admin | `{"server", "tool", "fingerprint"}`: trust a pending definition |
//! | `GET /api/approvals` | viewer | calls waiting for a human (`?all=true`: every approval) |
//! | `GET /api/approvals/{id}` | viewer | one approval: the call, its arguments, its state |
//! | `POST /api/approvals/{id}/approve`, `.../deny` | admin | `{"reason"}`: let the held call through once, or refuse it |
#![forbid(unsafe_code)]
// Handlers return their refusal as the `Err` of a `Result<_, Response>`; a response is large,
// and returned once per request.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use toolgate_gateway::Gateway;
use toolgate_gateway::audit::approval_decision;
use toolgate_gateway::config::{AdminRole, AdminToken};
use toolgate_gateway::downstream::access::{HostCheck, bearer};
use toolgate_gateway::grant::token_digest;
use toolgate_gateway::guard::{load_policy, now_ms};
use toolgate_gateway::survey;

struct Admin {
    gateway: Arc<Gateway>,
    access: HostCheck,
}

type Shared = State<Arc<Admin>>;

/// The admin API's router for the listener bound to `local`.
pub fn router(gateway: Arc<Gateway>, local: SocketAddr) -> Router {
    let access = HostCheck::for_listener(&gateway.config, local.port());
    let state = Arc::new(Admin { gateway, access });
    Router::new()
        .route("/api/inventory", get(inventory))
        .route("/api/pins", get(pins))
        .route("/api/pins/approve", post(approve_pin))
        .route("/api/approvals", get(list_approvals))
        .route("/api/approvals/{id}", get(show_approval))
        .route("/api/approvals/{id}/{verdict}", post(decide_approval))
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "admin API listening");
    axum::serve(listener, router(gateway, local))
        .with_graceful_shutdown(shutdown)
        .await
}

fn reply(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    reply(status, &json!({"error": message}))
}

/// Host, Origin, token and role, in that order; the token's name for the log.
fn authorize(state: &Admin, headers: &HeaderMap, needs: AdminRole) -> Result<String, Response> {
    if let Some((status, message)) = state.access.refusal(headers) {
        return Err(error(status, &message));
    }
    let token = bearer(headers);
    let Some(token) = token else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "an admin token is required (Authorization: Bearer ...)",
        ));
    };
    let found = find(&state.gateway.config.admin_tokens, token)
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "unknown admin token"))?;
    if found.role < needs {
        return Err(error(
            StatusCode::FORBIDDEN,
            &format!(
                "this needs the {needs:?} role; token {:?} has {:?}",
                found.name, found.role
            ),
        ));
    }
    Ok(found.name.clone())
}

/// The admin token a bearer token is, comparing every entry in constant time.
fn find<'a>(tokens: &'a [AdminToken], token: &str) -> Option<&'a AdminToken> {
    let digest = token_digest(token);
    let mut found = None;
    for t in tokens {
        if bool::from(t.token_sha256.ct_eq(&digest)) {
            found = Some(t);
        }
    }
    found
}

async fn inventory(State(state): Shared, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&state, &headers, AdminRole::Viewer) {
        return r;
    }
    let gateway = &state.gateway;
    let grants: Vec<_> = gateway
        .config
        .grants
        .iter()
        .map(|g| {
            let policy = g
                .policy
                .as_ref()
                .and_then(|p| load_policy(p).ok())
                .map(|(p, _)| Arc::new(p));
            (g.name.clone(), policy)
        })
        .collect();
    let servers = survey::live(&gateway.config, &gateway.inventory);
    let report = survey::report(&gateway.config, &gateway.inventory, &servers, &grants);
    reply(StatusCode::OK, &report)
}

async fn pins(State(state): Shared, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&state, &headers, AdminRole::Viewer) {
        return r;
    }
    let all: Vec<Value> = state
        .gateway
        .inventory
        .pins()
        .iter()
        .map(survey::pin_json)
        .collect();
    reply(StatusCode::OK, &json!({ "pins": all }))
}

async fn approve_pin(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let who = match authorize(&state, &headers, AdminRole::Admin) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be JSON: {\"server\", \"tool\", \"fingerprint\"}",
        );
    };
    let (Some(server), tool, fingerprint) = (
        request["server"].as_str(),
        request["tool"].as_str().unwrap_or(""),
        request["fingerprint"].as_str(),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "`server` is required (and `tool`: \"\" for the server's identity)",
        );
    };
    let inventory = &state.gateway.inventory;
    match inventory
        .store()
        .approve(server, tool, fingerprint, now_ms())
        .await
    {
        Ok(Some(record)) => {
            tracing::warn!(target: "toolgate::audit", event = "pin_approved", by = %who, server, tool, "pin approved through the admin API");
            state
                .gateway
                .audit
                .record_later(toolgate_state::AuditRecord {
                    at_ms: now_ms(),
                    kind: "admin".into(),
                    decision: "pin_approved".into(),
                    grant: Some(format!("admin:{who}")),
                    server: Some(server.to_owned()),
                    tool: (!tool.is_empty()).then(|| tool.to_owned()),
                    message: Some("pin approved through the admin API".into()),
                    detail: Some(
                        json!({"fingerprint": record.approved.as_ref().map(|a| &a.fingerprint)}),
                    ),
                    ..Default::default()
                });
            // Applies at once here; other instances notice through the store.
            state.gateway.reload_policies().await;
            let fingerprint = record.approved.map(|a| a.fingerprint);
            reply(
                StatusCode::OK,
                &json!({"approved": {"server": server, "tool": tool, "fingerprint": fingerprint}}),
            )
        }
        Ok(None) => error(
            StatusCode::CONFLICT,
            "nothing waits for approval (with that fingerprint)",
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

async fn list_approvals(
    State(state): Shared,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    if let Err(r) = authorize(&state, &headers, AdminRole::Viewer) {
        return r;
    }
    match state
        .gateway
        .guard
        .approvals()
        .list(query.all, now_ms())
        .await
    {
        Ok(all) => reply(StatusCode::OK, &json!({ "approvals": all })),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

async fn show_approval(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorize(&state, &headers, AdminRole::Viewer) {
        return r;
    }
    match state.gateway.guard.approvals().get(&id, now_ms()).await {
        Ok(Some(a)) => reply(StatusCode::OK, &json!(a)),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such approval"),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

async fn decide_approval(
    State(state): Shared,
    headers: HeaderMap,
    Path((id, verdict)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let who = match authorize(&state, &headers, AdminRole::Admin) {
        Ok(who) => who,
        Err(r) => return r,
    };
    let approve = match verdict.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return error(StatusCode::NOT_FOUND, "POST .../approve or .../deny"),
    };
    let reason = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => v["reason"].as_str().map(str::to_owned),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the body must be JSON: {\"reason\": \"...\"}",
                );
            }
        }
    };
    if !approve && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return error(
            StatusCode::BAD_REQUEST,
            "a denial needs a `reason` (the agent is told it)",
        );
    }
    let by = format!("admin:{who}");
    match state
        .gateway
        .guard
        .decide_approval(&id, approve, &by, reason.as_deref())
        .await
    {
        Ok(Some(a)) => {
            state
                .gateway
                .audit
                .record_later(approval_decision(&a, approve, &by));
            reply(StatusCode::OK, &json!(a))
        }
        Ok(None) => error(
            StatusCode::CONFLICT,
            "no pending approval with that id (decided, expired or unknown)",
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
