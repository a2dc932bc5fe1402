//! The web UI's pages: server-rendered shells (the header, the navigation, the session's CSRF
//! token) around a fragment from `ui/`, with one small script each over the admin API. Assets
//! are embedded in the binary; nothing is fetched from anywhere else (the CSP says so).

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq;
use toolgate_gateway::config::AdminRole;

use crate::{Admin, Shared, error, find, unavailable, web};
use std::sync::Arc;

/// A page: its path, title, navigation label, the fragment inside `<main>` and its script.
struct Page {
    path: &'static str,
    title: &'static str,
    main: &'static str,
    script: &'static str,
}

const PAGES: &[Page] = &[
    Page {
        path: "/overview",
        title: "Overview",
        main: include_str!("ui/overview.html"),
        script: "overview.js",
    },
    Page {
        path: "/tools",
        title: "Servers & tools",
        main: include_str!("ui/tools.html"),
        script: "tools.js",
    },
    Page {
        path: "/policies",
        title: "Policies",
        main: include_str!("ui/policy.html"),
        script: "policy.js",
    },
    Page {
        path: "/grants",
        title: "Grants",
        main: include_str!("ui/grants.html"),
        script: "grants.js",
    },
    Page {
        path: "/audit",
        title: "Audit",
        main: include_str!("ui/audit.html"),
        script: "audit.js",
    },
    Page {
        path: "/approvals",
        title: "Approvals",
        main: include_str!("ui/approvals.html"),
        script: "approvals.js",
    },
];

/// The embedded assets, by file name.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.css", "text/css", include_str!("ui/app.css")),
    ("common.js", "text/javascript", include_str!("ui/common.js")),
    (
        "overview.js",
        "text/javascript",
        include_str!("ui/overview.js"),
    ),
    ("tools.js", "text/javascript", include_str!("ui/tools.js")),
    ("policy.js", "text/javascript", include_str!("ui/policy.js")),
    ("grants.js", "text/javascript", include_str!("ui/grants.js")),
    ("audit.js", "text/javascript", include_str!("ui/audit.js")),
    (
        "approvals.js",
        "text/javascript",
        include_str!("ui/approvals.js"),
    ),
];

/// Where a login lands.
const HOME: &str = "/overview";

/// The pages, the login and the assets.
pub(crate) fn routes() -> Router<Arc<Admin>> {
    let mut router = Router::new()
        .route("/", get(|| async { Redirect::to(HOME) }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/ui/{file}", get(asset));
    for (i, p) in PAGES.iter().enumerate() {
        router = router.route(
            p.path,
            get(move |state: Shared, headers: HeaderMap| show(state, headers, i)),
        );
    }
    router
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "no such asset"),
    }
}

/// A page for a logged-in browser; others go to the login.
async fn show(State(state): Shared, headers: HeaderMap, index: usize) -> Response {
    if let Some((status, message)) = state.access.refusal(&headers) {
        return error(status, &message);
    }
    let session = match state.web.of_request(&headers).await {
        Ok(Some((_, session))) => session,
        Ok(None) => return Redirect::to("/login").into_response(),
        Err(e) => return unavailable(e),
    };
    let p = &PAGES[index];
    page(
        p.title,
        Some(&session),
        p.main,
        Some(p.script),
        Some(p.path),
    )
}

/// Escapes text for HTML.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A page: the shell every page shares (navigation, who is logged in, the CSRF token).
pub(crate) fn page(
    title: &str,
    session: Option<&web::WebSession>,
    main: &str,
    script: Option<&str>,
    current: Option<&str>,
) -> Response {
    let (csrf, who) = match session {
        Some(s) => (
            escape(&s.csrf),
            format!(
                r#"<span class="who">{} ({})</span><form method="post" action="/logout" id="logout"><input type="hidden" name="csrf" value="{}"><button>Log out</button></form>"#,
                escape(&s.name),
                s.role.name(),
                escape(&s.csrf)
            ),
        ),
        None => (String::new(), String::new()),
    };
    let script = script
        .map(|src| {
            format!(r#"<script src="/ui/common.js" defer></script><script src="/ui/{src}" defer></script>"#)
        })
        .unwrap_or_default();
    let nav: String = match session {
        Some(_) => PAGES
            .iter()
            .map(|p| {
                let here = if current == Some(p.path) {
                    r#" aria-current="page""#
                } else {
                    ""
                };
                format!(r#"<a href="{}"{here}>{}</a>"#, p.path, escape(p.title))
            })
            .collect(),
        None => String::new(),
    };
    let html = format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}"><title>{title} - toolgate</title>
<link rel="stylesheet" href="/ui/app.css">{script}</head>
<body><a class="skip" href="#main">Skip to content</a><header><strong>toolgate</strong><nav aria-label="Main">{nav}</nav>{who}</header>
<main id="main" tabindex="-1">{main}</main></body></html>"##,
        title = escape(title),
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // Approval links carry their key in the query: never pass it to another site.
            // (`no-referrer` would also make the browser send `Origin: null` on our own forms.)
            (header::REFERRER_POLICY, "same-origin"),
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
        return page("Log in", None, &login_form(None), None, None);
    };
    if !state.web.redeem(&code) {
        return (
            StatusCode::UNAUTHORIZED,
            page(
                "Log in",
                None,
                &login_form(Some("That login link was used already or has expired.")),
                None,
                None,
            ),
        )
            .into_response();
    }
    tracing::warn!(target: "toolgate::audit", event = "admin_login", by = "one-time-link", "web UI login with the one-time link");
    logged_in(&state, "one-time-link", AdminRole::Admin).await
}

async fn logged_in(state: &Admin, name: &str, role: AdminRole) -> Response {
    let value = match state.web.create(name, role).await {
        Ok((value, _)) => value,
        Err(e) => return unavailable(e),
    };
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, web::set_cookie(&value)),
            (header::LOCATION, HOME.to_owned()),
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
            logged_in(&state, &name, role).await
        }
        None => (
            StatusCode::UNAUTHORIZED,
            page(
                "Log in",
                None,
                &login_form(Some("Unknown admin token.")),
                None,
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
    if let Ok(Some((value, session))) = state.web.of_request(&headers).await {
        if !bool::from(form.csrf.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return error(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token for this session",
            );
        }
        if let Err(e) = state.web.end(&value).await {
            return unavailable(e);
        }
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
