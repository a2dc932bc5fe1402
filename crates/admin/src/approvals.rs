//! The approvals queue: calls held for a human, and their decisions.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use toolgate_gateway::audit::approval_decision;
use toolgate_gateway::guard::now_ms;

use crate::{AdminOnly, Authorized, Params, Shared, Viewer, body, error, reply, unavailable};

#[derive(serde::Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    all: bool,
}

pub(crate) async fn list(
    State(state): Shared,
    _: Viewer,
    Params(query): Params<ListQuery>,
) -> Response {
    match state
        .gateway
        .guard
        .approvals()
        .list(query.all, now_ms())
        .await
    {
        Ok(all) => reply(StatusCode::OK, &json!({ "approvals": all })),
        Err(e) => unavailable(e),
    }
}

pub(crate) async fn show(State(state): Shared, _: Viewer, Path(id): Path<String>) -> Response {
    match state.gateway.guard.approvals().get(&id, now_ms()).await {
        Ok(Some(a)) => reply(StatusCode::OK, &json!(a)),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such approval"),
        Err(e) => unavailable(e),
    }
}

#[derive(serde::Deserialize)]
struct Decision {
    reason: Option<String>,
}

pub(crate) async fn decide(
    State(state): Shared,
    Authorized(caller): AdminOnly,
    Path((id, verdict)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let approve = match verdict.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return error(StatusCode::NOT_FOUND, "POST .../approve or .../deny"),
    };
    let reason = if bytes.is_empty() {
        None
    } else {
        match body::<Decision>(&bytes, r#"{"reason": "..."}"#) {
            Ok(d) => d.reason,
            Err(r) => return r,
        }
    };
    if !approve && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return error(
            StatusCode::BAD_REQUEST,
            "a denial needs a `reason` (the agent is told it)",
        );
    }
    let by = caller.by();
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
        Err(e) => unavailable(e),
    }
}
