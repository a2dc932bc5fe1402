//! The policy builder's API: read a grant's policy, validate a draft with `toolgate check`'s
//! messages, explain a call against it, and save it (validated, backed up, written atomically,
//! reloaded at once).
//!
//! Only files that a grant follows are read or written: the API never opens a path a request
//! names.

use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use toolgate_gateway::config::CounterBackend;
use toolgate_gateway::manage::{self, SaveError};
use toolgate_gateway::names;
use toolgate_policy::PolicyError;
use toolgate_state::AuditRecord;

use crate::{
    Admin, Authorized, Params, PolicyManager, Shared, Viewer, audit_admin, body, error, inventory,
    reply, unavailable,
};

/// `toolgate check`'s diagnostics as JSON: each with its `text` as the command prints it
/// (after the file name).
fn diagnostics(e: &PolicyError) -> Value {
    e.diagnostics
        .iter()
        .map(|d| {
            json!({"pointer": d.pointer, "line": d.line, "column": d.column,
                "message": d.message, "hint": d.hint, "text": d.to_string()})
        })
        .collect()
}

fn invalid(e: &PolicyError) -> Response {
    reply(
        StatusCode::BAD_REQUEST,
        &json!({"error": format!("the policy is not valid: {} problem(s)", e.diagnostics.len()),
            "diagnostics": diagnostics(e)}),
    )
}

/// The policy file a grant follows.
fn policy_of(state: &Admin, grant: &str) -> Result<PathBuf, Response> {
    let Some(g) = state.gateway.grants.by_name(grant) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            &format!("no grant named {grant:?}"),
        ));
    };
    g.policy.clone().ok_or_else(|| {
        error(
            StatusCode::CONFLICT,
            &format!("grant {grant:?} has no policy file (it may do nothing); attach one on the Grants page"),
        )
    })
}

/// The text of the policy file a grant follows, and its path.
fn text_of(state: &Admin, grant: &str) -> Result<(PathBuf, String), Response> {
    let path = policy_of(state, grant)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((path, text)),
        Err(e) => Err(unavailable(format!("{}: {e}", path.display()))),
    }
}

pub(crate) async fn list(State(state): Shared, _: Viewer) -> Response {
    let grants = state.gateway.grants.all();
    let mut files: Vec<(PathBuf, Vec<String>)> = Vec::new();
    for g in &grants {
        if let Some(p) = &g.policy {
            match files.iter_mut().find(|(f, _)| f == p) {
                Some((_, names)) => names.push(g.name.to_string()),
                None => files.push((p.clone(), vec![g.name.to_string()])),
            }
        }
    }
    let files: Vec<Value> = files
        .iter()
        .map(|(path, names)| {
            let mut entry = json!({"path": path.display().to_string(), "grants": names});
            match toolgate_gateway::guard::load_policy(path) {
                Ok((p, _)) => entry["version"] = json!(p.version),
                Err(e) => entry["error"] = json!(e.to_string()),
            }
            entry
        })
        .collect();
    let grants: Vec<Value> = grants
        .iter()
        .map(|g| {
            json!({"name": &*g.name,
                "source": if state.gateway.grants.configured(&g.name) { "config" } else { "store" },
                "policy": g.policy.as_ref().map(|p| p.display().to_string())})
        })
        .collect();
    reply(StatusCode::OK, &json!({"grants": grants, "files": files}))
}

#[derive(serde::Deserialize)]
pub(crate) struct GrantQuery {
    grant: String,
}

pub(crate) async fn show(
    State(state): Shared,
    _: Viewer,
    Params(q): Params<GrantQuery>,
) -> Response {
    let (path, text) = match text_of(&state, &q.grant) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let (version, problems) = match toolgate_policy::parse(&text) {
        Ok(p) => (json!(p.version), Value::Null),
        Err(e) => (Value::Null, diagnostics(&e)),
    };
    let several = state.gateway.config.servers.len() > 1;
    let mut tools = Vec::new();
    for (server, _) in inventory::servers(&state).await {
        for t in &server.tools {
            let def: Value = serde_json::from_str(t.raw.get()).unwrap_or_default();
            tools.push(json!({
                "server": server.name,
                "name": t.name,
                "exposed": if several { names::exposed(&server.name, &t.name) } else { t.name.clone() },
                "title": def.get("title").or_else(|| def.pointer("/annotations/title")),
                "categories": t.class.categories,
                "severity": t.class.severity,
            }));
        }
    }
    reply(
        StatusCode::OK,
        &json!({"grant": q.grant, "path": path.display().to_string(), "text": text,
            "sha256": manage::text_sha256(&text), "version": version,
            "diagnostics": problems, "tools": tools}),
    )
}

#[derive(serde::Deserialize)]
struct Draft {
    text: String,
}

pub(crate) async fn check(_: Viewer, bytes: Bytes) -> Response {
    let draft: Draft = match body(&bytes, r#"{"text": "<the policy's JSON text>"}"#) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let answer = match toolgate_policy::parse(&draft.text) {
        Ok(p) => json!({"ok": true, "version": p.version, "entries": p.len()}),
        Err(e) => json!({"ok": false, "diagnostics": diagnostics(&e)}),
    };
    reply(StatusCode::OK, &answer)
}

#[derive(serde::Deserialize)]
struct TryCall {
    grant: String,
    tool: String,
    #[serde(default)]
    args: Option<Value>,
    /// A draft to explain against instead of the saved file.
    text: Option<String>,
}

pub(crate) async fn explain(State(state): Shared, _: Viewer, bytes: Bytes) -> Response {
    let call: TryCall = match body(&bytes, r#"{"grant", "tool", "args": {...}, "text"?}"#) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let args = call.args.unwrap_or_else(|| json!({}));
    if !args.is_object() {
        return error(StatusCode::BAD_REQUEST, "`args` must be a JSON object");
    }
    let config = &state.gateway.config;
    let (server, tool) = match manage::resolve_tool(config, &call.tool) {
        Ok(found) => found,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let text = match call.text {
        Some(t) => t,
        None => match text_of(&state, &call.grant) {
            Ok((_, t)) => t,
            Err(r) => return r,
        },
    };
    let policy = match toolgate_policy::parse(&text) {
        Ok(p) => p,
        Err(e) => return invalid(&e),
    };
    let stores = state.gateway.guard.stores();
    match manage::explain(config, stores, &call.grant, &policy, &server, &tool, &args).await {
        Ok(mut out) => {
            if config.counters.backend == CounterBackend::Memory {
                // Unlike the CLI, this process is the gateway: the counts are its own.
                out["counter_store"] = json!("memory (this gateway's own counts)");
            }
            reply(StatusCode::OK, &out)
        }
        Err(e) => unavailable(e),
    }
}

#[derive(serde::Deserialize)]
struct Save {
    grant: String,
    text: String,
    base_sha256: Option<String>,
}

pub(crate) async fn save(
    State(state): Shared,
    Authorized(caller): PolicyManager,
    bytes: Bytes,
) -> Response {
    let request: Save = match body(&bytes, r#"{"grant", "text", "base_sha256"}"#) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let path = match policy_of(&state, &request.grant) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let written = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            manage::save_policy(&path, &request.text, request.base_sha256.as_deref())
        })
        .await
    };
    let saved = match written {
        Ok(Ok(saved)) => saved,
        Ok(Err(SaveError::Invalid(e))) => return invalid(&e),
        Ok(Err(e @ SaveError::Conflict(_))) => return error(StatusCode::CONFLICT, &e.to_string()),
        Ok(Err(e)) => return unavailable(e),
        Err(e) => return unavailable(e),
    };
    tracing::info!(target: "toolgate::audit", event = "policy_saved", by = %caller.name, path = %path.display(), version = %saved.version, "policy saved from the web UI");
    audit_admin(
        &state,
        &caller,
        AuditRecord {
            decision: "policy_saved".into(),
            policy_version: Some(saved.version.clone()),
            message: Some(format!("policy file {} saved", path.display())),
            detail: Some(
                json!({"path": path.display().to_string(), "grant": request.grant,
                "backup": saved.backup.as_ref().map(|b| b.display().to_string())}),
            ),
            ..Default::default()
        },
    );
    // Applies at once here; other instances notice the file on their reload tick.
    state.gateway.reload_policies().await;
    reply(
        StatusCode::OK,
        &json!({"saved": path.display().to_string(),
            "backup": saved.backup.map(|b| b.display().to_string()),
            "version": saved.version, "sha256": saved.sha256}),
    )
}
