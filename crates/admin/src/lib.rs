//! The admin HTTP API and web UI, on their own listener (`[listen] admin`), for operators.
//!
//! Every request carries an admin token (`Authorization: Bearer`), stored in the config as
//! SHA-256 and compared in constant time, or the cookie of a web UI session (`web.rs`: a
//! login with such a token, or the one-time link printed at start); the role decides what it
//! may do. Host and Origin are checked as on the MCP listener; a cookie-borne change must also
//! carry the session's CSRF token, so another site cannot drive the API through a browser. No
//! CORS header is ever sent: only pages of this listener may call it.
//!
//! The web UI's pages (`pages.rs`) are server-rendered shells with a little JavaScript (`ui/`,
//! embedded in the binary) over the same API. `/approve/{id}?key=...` (`approve_link.rs`) is
//! the one page without a login: the approval link sent to a client's user in URL-mode
//! elicitation, good for that one approval.
//!
//! | endpoint | role | does |
//! |---|---|---|
//! | `GET /api/overview` | viewer | calls and denials per minute over the last hour, totals, top tools, pending approvals, server health |
//! | `GET /api/inventory` | viewer | every server's tools: class, evidence, pin state, each grant's treatment |
//! | `GET /api/pins` | viewer | every pin record, with the approved and pending definitions |
//! | `POST /api/pins/approve` | admin | `{"server", "tool", "fingerprint"}`: trust a pending definition |
//! | `GET /api/policies` | viewer | the grants and the policy files they follow |
//! | `GET /api/policy?grant=NAME` | viewer | a grant's policy file: text, SHA-256, version, the tools it applies to |
//! | `POST /api/policy/check` | viewer | `{"text"}`: the diagnostics `toolgate check` would print |
//! | `POST /api/policy/explain` | viewer | `{"grant", "tool", "args", "text"?}`: what the saved (or draft) policy decides for a call |
//! | `POST /api/policy/save` | policy_manager | `{"grant", "text", "base_sha256"}`: validate, back up, write atomically, reload |
//! | `GET /api/grants` | viewer | configured and stored grants (never a token) |
//! | `POST /api/grants` | admin | `{"name", "policy"?}`: a stored grant; its token, shown once |
//! | `POST /api/grants/{name}/rotate` | admin | a new token, shown once; the old one stops working |
//! | `POST /api/grants/{name}/revoke` | admin | the token stops working, its sessions end |
//! | `POST /api/grants/{name}/policy` | policy_manager | `{"policy": path or null}`: attach a policy file |
//! | `GET /api/audit` | viewer | records, filtered by `grant`, `tool`, `decision`, `since` (10m, 2h), `after_id`, `limit` |
//! | `GET /api/audit/stream` | viewer | the same filters, live: server-sent events, one `record` per event, resumable with `Last-Event-ID` |
//! | `GET /api/approvals` | viewer | calls waiting for a human (`?all=true`: every approval) |
//! | `GET /api/approvals/{id}` | viewer | one approval: the call, its arguments, its state |
//! | `POST /api/approvals/{id}/approve`, `.../deny` | admin | `{"reason"}`: let the held call through once, or refuse it |
#![forbid(unsafe_code)]
// Handlers return their refusal as the `Err` of a `Result<_, Response>`; a response is large,
// and returned once per request.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;

mod activity;
mod approvals;
mod approve_link;
mod grants;
mod inventory;
mod pages;
mod policies;
mod web;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use toolgate_gateway::Gateway;
use toolgate_gateway::config::{AdminRole, AdminToken};
use toolgate_gateway::downstream::access::{HostCheck, bearer};
use toolgate_gateway::grant::token_digest;
use toolgate_gateway::guard::now_ms;
use toolgate_state::AuditRecord;

struct Admin {
    gateway: Arc<Gateway>,
    access: HostCheck,
    web: web::WebSessions,
    surveyed: inventory::Surveyed,
}

/// Who made a request, and with what role.
struct Caller {
    name: String,
    role: AdminRole,
}

impl Caller {
    /// A 403 unless the caller holds at least role `needs`.
    fn require(&self, needs: AdminRole) -> Result<(), Response> {
        if self.role >= needs {
            return Ok(());
        }
        Err(error(
            StatusCode::FORBIDDEN,
            &format!(
                "this needs the {} role; {:?} has {}",
                needs.name(),
                self.name,
                self.role.name()
            ),
        ))
    }

    /// How the audit log names them.
    fn by(&self) -> String {
        format!("admin:{}", self.name)
    }
}

type Shared = axum::extract::State<Arc<Admin>>;

/// The admin API's router for the listener bound to `local`.
pub fn router(gateway: Arc<Gateway>, local: SocketAddr) -> Router {
    router_with(new_state(gateway, local))
}

fn new_state(gateway: Arc<Gateway>, local: SocketAddr) -> Arc<Admin> {
    let access = HostCheck::for_listener(&gateway.config, local.port());
    let web = web::WebSessions::new(gateway.guard.stores().web_sessions.clone());
    Arc::new(Admin {
        gateway,
        access,
        web,
        surveyed: Default::default(),
    })
}

fn router_with(state: Arc<Admin>) -> Router {
    pages::routes()
        .route("/api/overview", get(activity::overview))
        .route("/api/inventory", get(inventory::inventory))
        .route("/api/pins", get(inventory::pins))
        .route("/api/pins/approve", post(inventory::approve_pin))
        .route("/api/policies", get(policies::list))
        .route("/api/policy", get(policies::show))
        .route("/api/policy/check", post(policies::check))
        .route("/api/policy/explain", post(policies::explain))
        .route("/api/policy/save", post(policies::save))
        .route("/api/grants", get(grants::list).post(grants::create))
        .route("/api/grants/{name}/{action}", post(grants::change))
        .route("/api/audit", get(activity::audit))
        .route("/api/audit/stream", get(activity::stream))
        .route("/api/approvals", get(approvals::list))
        .route("/api/approvals/{id}", get(approvals::show))
        .route("/api/approvals/{id}/{verdict}", post(approvals::decide))
        .route(
            "/approve/{id}",
            get(approve_link::show).post(approve_link::decide),
        )
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let header_timeout = gateway.config.limits.header_timeout;
    let state = new_state(gateway, local);
    let code = state.web.one_time_code();
    tracing::info!(address = %local, "admin API and web UI listening");
    tracing::warn!(
        "admin web UI: log in at http://{local}/login?once={code} (one use, within 15 minutes)"
    );
    toolgate_gateway::listener::serve(listener, router_with(state), header_timeout, shutdown).await;
    Ok(())
}

fn reply(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    reply(status, &json!({"error": message}))
}

/// A store failure, as the API reports it.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
}

/// A JSON request body, or a 400 saying what shape was expected.
fn body<T: DeserializeOwned>(bytes: &Bytes, shape: &str) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("the body must be JSON {shape}: {e}"),
        )
    })
}

/// Host, Origin, credentials (a bearer token, or a web session whose changes carry its CSRF
/// token) and role, in that order.
async fn authorize(
    state: &Admin,
    method: &Method,
    headers: &HeaderMap,
    needs: AdminRole,
) -> Result<Caller, Response> {
    if let Some((status, message)) = state.access.refusal(headers) {
        return Err(error(status, &message));
    }
    let caller = match bearer(headers) {
        Some(token) => {
            let found = find(&state.gateway.config.admin_tokens, token)
                .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "unknown admin token"))?;
            Caller {
                name: found.name.clone(),
                role: found.role,
            }
        }
        None => {
            let found = state.web.of_request(headers).await.map_err(unavailable)?;
            let Some((_, session)) = found else {
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
            Caller {
                name: session.name,
                role: session.role,
            }
        }
    };
    caller.require(needs)?;
    Ok(caller)
}

/// A request whose caller holds at least role `R` (0 viewer, 1 policy_manager, 2 admin):
/// taking one as a handler's argument is the handler's access check.
pub(crate) struct Authorized<const R: u8>(pub Caller);

/// Any logged-in operator.
pub(crate) type Viewer = Authorized<0>;
/// An operator who may edit policies.
pub(crate) type PolicyManager = Authorized<1>;
/// An operator who may do everything.
pub(crate) type AdminOnly = Authorized<2>;

impl<const R: u8> axum::extract::FromRequestParts<Arc<Admin>> for Authorized<R> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<Admin>,
    ) -> Result<Self, Response> {
        let needs = match R {
            0 => AdminRole::Viewer,
            1 => AdminRole::PolicyManager,
            _ => AdminRole::Admin,
        };
        authorize(state, &parts.method, &parts.headers, needs)
            .await
            .map(Authorized)
    }
}

/// A query string, or a JSON 400 saying what is wrong with it (axum's own `Query` answers in
/// plain text, unlike the rest of the API).
pub(crate) struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(params)| Params(params))
            .map_err(|e| error(StatusCode::BAD_REQUEST, &e.body_text()))
    }
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

/// An operator's action, for the audit log (written off the request path): `record` with
/// its time, kind and actor filled in.
fn audit_admin(state: &Admin, by: &Caller, record: AuditRecord) {
    state.gateway.audit.record_later(AuditRecord {
        at_ms: now_ms(),
        kind: "admin".into(),
        grant: Some(by.by()),
        ..record
    });
}
