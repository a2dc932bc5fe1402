//! The admin HTTP API, on its own listener (`[listen] admin`), for operators and the web UI.
//!
//! Every request carries an admin token (`Authorization: Bearer`), stored in the config as
//! SHA-256 and compared in constant time, or the cookie of a web UI session (`web.rs`: a
//! login with such a token, or the one-time link printed at start); the role decides what it
//! may do. Host and Origin are checked as on the MCP listener; a cookie-borne change must also
//! carry the session's CSRF token, so another site cannot drive the API through a browser.
//!
//! The web UI's pages (`/login`, `/approvals`) are server-rendered shells with a little
//! JavaScript (`ui/`, embedded in the binary) over the same API.
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

mod web;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
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
    web: web::WebSessions,
}

type Shared = State<Arc<Admin>>;

/// The admin API's router for the listener bound to `local`.
pub fn router(gateway: Arc<Gateway>, local: SocketAddr) -> Router {
    router_with(new_state(gateway, local))
}

fn new_state(gateway: Arc<Gateway>, local: SocketAddr) -> Arc<Admin> {
    let access = HostCheck::for_listener(&gateway.config, local.port());
    Arc::new(Admin {
        gateway,
        access,
        web: web::WebSessions::default(),
    })
}

fn router_with(state: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/approvals") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/approvals", get(approvals_page))
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css", include_str!("ui/app.css")) }),
        )
        .route(
            "/ui/approvals.js",
            get(|| async { asset("text/javascript", include_str!("ui/approvals.js")) }),
        )
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
    let state = new_state(gateway, local);
    let code = state.web.one_time_code();
    tracing::info!(address = %local, "admin API and web UI listening");
    tracing::warn!(
        "admin web UI: log in at http://{local}/login?once={code} (one use, within 15 minutes)"
    );
    axum::serve(listener, router_with(state))
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

/// Host, Origin, credentials (a bearer token, or a web session whose changes carry its CSRF
/// token) and role, in that order; who it is, for the log.
fn authorize(
    state: &Admin,
    method: &Method,
    headers: &HeaderMap,
    needs: AdminRole,
) -> Result<String, Response> {
    if let Some((status, message)) = state.access.refusal(headers) {
        return Err(error(status, &message));
    }
    let (name, role) = match bearer(headers) {
        Some(token) => {
            let found = find(&state.gateway.config.admin_tokens, token)
                .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "unknown admin token"))?;
            (found.name.clone(), found.role)
        }
        None => {
            let Some((_, session)) = state.web.of_request(headers) else {
                return Err(error(
                    StatusCode::UNAUTHORIZED,
                    "an admin token (Authorization: Bearer ...) or a web UI login is required",
                ));
            };
            if !matches!(*method, Method::GET | Method::HEAD) && !web::csrf_ok(headers, &session) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "missing or wrong X-CSRF-Token for this session",
                ));
            }
            (session.name, session.role)
        }
    };
    if role < needs {
        return Err(error(
            StatusCode::FORBIDDEN,
            &format!("this needs the {needs:?} role; {name:?} has {role:?}"),
        ));
    }
    Ok(name)
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

async fn inventory(State(state): Shared, method: Method, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&state, &method, &headers, AdminRole::Viewer) {
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

async fn pins(State(state): Shared, method: Method, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&state, &method, &headers, AdminRole::Viewer) {
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

async fn approve_pin(
    State(state): Shared,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match authorize(&state, &method, &headers, AdminRole::Admin) {
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
    method: Method,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    if let Err(r) = authorize(&state, &method, &headers, AdminRole::Viewer) {
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
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorize(&state, &method, &headers, AdminRole::Viewer) {
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
    method: Method,
    headers: HeaderMap,
    Path((id, verdict)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let who = match authorize(&state, &method, &headers, AdminRole::Admin) {
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

// ---- web UI pages ------------------------------------------------------------------------

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A page: the shell every page shares (navigation, who is logged in, the CSRF token).
fn page(
    title: &str,
    session: Option<&web::WebSession>,
    main: &str,
    script: Option<&str>,
) -> Response {
    let (csrf, who) = match session {
        Some(s) => (
            escape(&s.csrf),
            format!(
                r#"<span class="who">{} ({:?})</span><form method="post" action="/logout" id="logout"><input type="hidden" name="csrf" value="{}"><button>Log out</button></form>"#,
                escape(&s.name),
                s.role,
                escape(&s.csrf)
            ),
        ),
        None => (String::new(), String::new()),
    };
    let script = script
        .map(|src| format!(r#"<script src="{src}" defer></script>"#))
        .unwrap_or_default();
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}"><title>{title} - toolgate</title>
<link rel="stylesheet" href="/ui/app.css">{script}</head>
<body><header><strong>toolgate</strong><nav aria-label="Main"><a href="/approvals">Approvals</a></nav>{who}</header>
<main>{main}</main></body></html>"#,
        title = escape(title),
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
            ),
        ],
        html,
    )
        .into_response()
}

fn login_form(message: Option<&str>) -> String {
    let message = message
        .map(|m| format!(r#"<p class="error" role="alert">{}</p>"#, escape(m)))
        .unwrap_or_default();
    format!(
        r#"<h1>Log in</h1>{message}
<form method="post" action="/login">
<label for="token">Admin token</label><br>
<input type="password" id="token" name="token" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button></form>
<p class="empty">Or use the one-time link toolgate prints when it starts.</p>"#
    )
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    once: Option<String>,
}

/// The login page; with `?once=CODE` (the link printed at start), logs in as admin at once.
async fn login_page(
    State(state): Shared,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if let Some((status, message)) = state.access.refusal(&headers) {
        return error(status, &message);
    }
    let Some(code) = q.once else {
        return page("Log in", None, &login_form(None), None);
    };
    if !state.web.redeem(&code) {
        return (
            StatusCode::UNAUTHORIZED,
            page(
                "Log in",
                None,
                &login_form(Some("That login link was used already or has expired.")),
                None,
            ),
        )
            .into_response();
    }
    tracing::warn!(target: "toolgate::audit", event = "admin_login", by = "one-time-link", "web UI login with the one-time link");
    logged_in(&state, "one-time-link", AdminRole::Admin)
}

fn logged_in(state: &Admin, name: &str, role: AdminRole) -> Response {
    let (value, _) = state.web.create(name, role);
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, web::set_cookie(&value)),
            (header::LOCATION, "/approvals".to_owned()),
        ],
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// Logs in with an admin token (a form post: Origin is checked, so another site cannot log a
/// browser in).
async fn login(State(state): Shared, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    if let Some((status, message)) = state.access.refusal(&headers) {
        return error(status, &message);
    }
    match find(&state.gateway.config.admin_tokens, form.token.trim()) {
        Some(t) => {
            tracing::info!(target: "toolgate::audit", event = "admin_login", by = %t.name, "web UI login");
            let (name, role) = (t.name.clone(), t.role);
            logged_in(&state, &name, role)
        }
        None => (
            StatusCode::UNAUTHORIZED,
            page(
                "Log in",
                None,
                &login_form(Some("Unknown admin token.")),
                None,
            ),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// Logs out (a form post from the page, carrying the session's CSRF token).
async fn logout(
    State(state): Shared,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Some((status, message)) = state.access.refusal(&headers) {
        return error(status, &message);
    }
    if let Some((value, session)) = state.web.of_request(&headers) {
        if !bool::from(form.csrf.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return error(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token for this session",
            );
        }
        state.web.end(&value);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, web::clear_cookie()),
            (header::LOCATION, "/login".to_owned()),
        ],
    )
        .into_response()
}

/// The approvals queue: pending calls with tool, grant, arguments and risk; approve or deny
/// with a reason; refreshed live.
async fn approvals_page(State(state): Shared, headers: HeaderMap) -> Response {
    if let Some((status, message)) = state.access.refusal(&headers) {
        return error(status, &message);
    }
    let Some((_, session)) = state.web.of_request(&headers) else {
        return Redirect::to("/login").into_response();
    };
    let main = r#"<h1>Approvals</h1>
<p id="status" role="status" aria-live="polite"></p>
<table><caption class="empty">Calls held for a human, newest first</caption>
<thead><tr><th scope="col">Tool</th><th scope="col">Grant</th><th scope="col">Arguments</th><th scope="col">Risk</th><th scope="col">Expires</th><th scope="col">Decision</th></tr></thead>
<tbody id="queue"></tbody></table>"#;
    page("Approvals", Some(&session), main, Some("/ui/approvals.js"))
}
