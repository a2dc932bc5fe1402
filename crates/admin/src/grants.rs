//! Grants from the web UI: list, create (the token shown once), rotate, revoke, attach a policy.
//! The changes are `toolgate grant`'s (`manage::GrantAdmin`); running gateways apply them on
//! their next reload tick, this one at once.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use toolgate_gateway::config::AdminRole;
use toolgate_gateway::manage::{GrantAdmin, GrantError, grant_rows};

use crate::{
    Admin, AdminOnly, Authorized, Caller, Shared, Viewer, body, error, reply, unavailable,
};

fn refusal(e: GrantError) -> Response {
    let status = match &e {
        GrantError::Configured(_) | GrantError::Exists(_) => StatusCode::CONFLICT,
        GrantError::NotFound(_) => StatusCode::NOT_FOUND,
        GrantError::BadName | GrantError::BadPolicy(_) => StatusCode::BAD_REQUEST,
        GrantError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &e.to_string())
}

fn admin<'a>(state: &'a Admin, caller: &Caller) -> GrantAdmin<'a> {
    GrantAdmin {
        config: &state.gateway.config,
        stores: state.gateway.guard.stores(),
        by: caller.by(),
    }
}

pub(crate) async fn list(State(state): Shared, _: Viewer) -> Response {
    match state.gateway.guard.stores().grants.list().await {
        Ok(stored) => reply(
            StatusCode::OK,
            &json!({"grants": grant_rows(&state.gateway.config, &stored)}),
        ),
        Err(e) => unavailable(e),
    }
}

#[derive(serde::Deserialize)]
struct NewGrant {
    name: String,
    policy: Option<String>,
}

pub(crate) async fn create(
    State(state): Shared,
    Authorized(caller): AdminOnly,
    bytes: Bytes,
) -> Response {
    let request: NewGrant = match body(&bytes, r#"{"name", "policy"?}"#) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let name = request.name.trim();
    match admin(&state, &caller)
        .create(name, request.policy.as_deref())
        .await
    {
        Ok(token) => {
            state.gateway.refresh_grants().await;
            reply(
                StatusCode::CREATED,
                &json!({"name": name, "token": token, "policy": state.gateway.grants.by_name(name)
                    .and_then(|g| g.policy.as_ref().map(|p| p.display().to_string()))}),
            )
        }
        Err(e) => refusal(e),
    }
}

#[derive(serde::Deserialize)]
struct Attach {
    policy: Option<String>,
}

/// `rotate`, `revoke` (admin) or `policy` (attach; policy_manager, who may choose only among
/// the policy files grants already follow, since the path is read on the server).
pub(crate) async fn change(
    State(state): Shared,
    Authorized(caller): Viewer,
    Path((name, action)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let needs = match action.as_str() {
        "rotate" | "revoke" => AdminRole::Admin,
        "policy" => AdminRole::PolicyManager,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "POST /api/grants/NAME/rotate, .../revoke or .../policy",
            );
        }
    };
    if let Err(r) = caller.require(needs) {
        return r;
    }
    let grants = admin(&state, &caller);
    let answer = match action.as_str() {
        "rotate" => grants
            .rotate(&name)
            .await
            .map(|token| json!({"name": name, "token": token})),
        "revoke" => grants
            .revoke(&name)
            .await
            .map(|()| json!({"revoked": name})),
        _ => {
            let request: Attach =
                match body(&bytes, r#"{"policy": "/path/to/policy.json" or null}"#) {
                    Ok(r) => r,
                    Err(r) => return r,
                };
            if let Some(p) = &request.policy
                && caller.role < AdminRole::Admin
                && !state
                    .gateway
                    .grants
                    .policy_paths()
                    .iter()
                    .any(|known| known.to_str() == Some(p.as_str()))
            {
                return error(
                    StatusCode::FORBIDDEN,
                    "a policy_manager may attach only a policy file another grant follows; an admin may name any",
                );
            }
            grants
                .attach(&name, request.policy.as_deref())
                .await
                .map(|policy| json!({"name": name, "policy": policy}))
        }
    };
    match answer {
        Ok(answer) => {
            state.gateway.refresh_grants().await;
            reply(StatusCode::OK, &answer)
        }
        Err(e) => refusal(e),
    }
}
