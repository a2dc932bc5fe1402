//! The page an approval link opens (MCP elicitation in URL mode): the user of the client
//! whose call is held sees the call and approves or denies it, without an admin login. The
//! link's key (an HMAC of the approval's id under the gateway's key) lets its bearer decide
//! that one approval, and only one whose policy lists `client` among its approvers.

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use toolgate_gateway::audit::approval_decision;
use toolgate_gateway::guard::now_ms;
use toolgate_state::{Approval, ApprovalStatus};

use crate::pages::{escape, page};
use crate::{Admin, Shared, error};

#[derive(serde::Deserialize)]
pub(crate) struct Key {
    #[serde(default)]
    key: String,
}

#[derive(serde::Deserialize)]
pub(crate) struct Verdict {
    #[serde(default)]
    key: String,
    verdict: String,
    #[serde(default)]
    reason: String,
}

/// The approval a link names, if its key is right and the client may decide it.
async fn linked(
    state: &Admin,
    headers: &HeaderMap,
    id: &str,
    key: &str,
) -> Result<Approval, Response> {
    if let Some((status, message)) = state.access.refusal(headers) {
        return Err(error(status, &message));
    }
    let guard = &state.gateway.guard;
    if !guard.approval_link_ok(id, key) {
        return Err(shown(
            StatusCode::NOT_FOUND,
            "<p class=\"error\">This approval link is not valid.</p>",
        ));
    }
    match guard.approvals().get(id, now_ms()).await {
        Ok(Some(a)) if a.approvers.iter().any(|p| p == "client") => Ok(a),
        Ok(_) => Err(shown(
            StatusCode::NOT_FOUND,
            "<p class=\"error\">This approval does not exist, or is not yours to decide.</p>",
        )),
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
    }
}

fn shown(status: StatusCode, main: &str) -> Response {
    let body = format!("<h1>Approve a call</h1>{main}");
    (status, page("Approve a call", None, &body, None, None)).into_response()
}

fn call_details(a: &Approval) -> String {
    let arguments = serde_json::to_string_pretty(&a.arguments).unwrap_or_default();
    format!(
        r#"<dl class="call"><dt>Tool</dt><dd><code>{server}/{tool}</code></dd>
<dt>Risk</dt><dd><span class="badge {severity}">{severity}</span></dd>
<dt>Grant</dt><dd>{grant}</dd><dt>Rule</dt><dd><code>{rule}</code></dd>
<dt>Arguments</dt><dd><pre>{arguments}</pre></dd></dl>"#,
        server = escape(&a.server),
        tool = escape(&a.tool),
        severity = escape(a.severity.as_deref().unwrap_or("unknown")),
        grant = escape(&a.grant),
        rule = escape(&a.rule),
        arguments = escape(&arguments),
    )
}

fn outcome(a: &Approval) -> String {
    let by = a.decided_by.as_deref().unwrap_or("");
    match a.status {
        ApprovalStatus::Approved => format!(
            r#"<p role="status">Approved{}. The call runs once; you can close this page.</p>"#,
            if by.is_empty() {
                String::new()
            } else {
                format!(" by {}", escape(by))
            }
        ),
        ApprovalStatus::Denied => format!(
            r#"<p role="status" class="error">Denied{}{}. You can close this page.</p>"#,
            if by.is_empty() {
                String::new()
            } else {
                format!(" by {}", escape(by))
            },
            a.reason
                .as_deref()
                .map(|r| format!(": {}", escape(r)))
                .unwrap_or_default()
        ),
        _ => r#"<p role="status" class="error">This approval expired: the call was refused.</p>"#
            .into(),
    }
}

pub(crate) async fn show(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Key>,
) -> Response {
    let a = match linked(&state, &headers, &id, &q.key).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let details = call_details(&a);
    if a.status != ApprovalStatus::Pending {
        return shown(StatusCode::OK, &format!("{details}{}", outcome(&a)));
    }
    let form = format!(
        r#"{details}<form method="post" action="/approve/{id}" class="panel">
<input type="hidden" name="key" value="{key}">
<label for="reason">Reason (the agent is told it when you deny)</label>
<input type="text" id="reason" name="reason" autocomplete="off">
<button type="submit" name="verdict" value="approve" class="approve">Approve</button>
<button type="submit" name="verdict" value="deny" class="deny">Deny</button></form>"#,
        id = escape(&a.id),
        key = escape(&q.key),
    );
    shown(StatusCode::OK, &form)
}

pub(crate) async fn decide(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Verdict>,
) -> Response {
    let a = match linked(&state, &headers, &id, &form.key).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let approve = match form.verdict.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return error(StatusCode::BAD_REQUEST, "verdict is approve or deny"),
    };
    let reason = Some(form.reason.trim()).filter(|r| !r.is_empty());
    let reason = match (approve, reason) {
        (false, None) => Some("denied by the user"),
        (_, r) => r,
    };
    let by = "client";
    let guard = &state.gateway.guard;
    let decided = match guard.decide_approval(&a.id, approve, by, reason).await {
        Ok(d) => d,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let details = call_details(&a);
    match decided {
        Some(d) => {
            tracing::info!(approval = %d.id, approve, "approval decided through its link");
            state.gateway.audit.record_later(approval_decision(
                &d,
                approve,
                "client (approval link)",
            ));
            shown(StatusCode::OK, &format!("{details}{}", outcome(&d)))
        }
        // Decided or expired meanwhile: say how it ended.
        None => match guard.approvals().get(&a.id, now_ms()).await {
            Ok(Some(now)) => shown(StatusCode::CONFLICT, &format!("{details}{}", outcome(&now))),
            _ => shown(
                StatusCode::CONFLICT,
                "<p class=\"error\">This approval is gone.</p>",
            ),
        },
    }
}
