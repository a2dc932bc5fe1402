//! Browser sessions of the web UI: a login (an admin token, or a one-time link printed at
//! start) sets an HttpOnly, Secure, SameSite=Strict cookie naming a session kept here; every
//! change the session makes carries its CSRF token (`X-CSRF-Token`), compared in constant time,
//! besides the Origin check every request gets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;
use toolgate_gateway::config::AdminRole;
use toolgate_gateway::grant::token_digest;

/// The session cookie's name.
pub const COOKIE: &str = "tg_admin";
/// How long a browser session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a one-time login link is good for.
const ONCE_TTL: Duration = Duration::from_secs(15 * 60);

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct WebSession {
    /// Who (the admin token's name, or `one-time-link`).
    pub name: String,
    /// What it may do.
    pub role: AdminRole,
    /// The token its changes must carry.
    pub csrf: String,
    expires: Instant,
}

/// Browser sessions and one-time login codes, by the SHA-256 of their secret.
#[derive(Default)]
pub struct WebSessions {
    sessions: Mutex<HashMap<[u8; 32], WebSession>>,
    once: Mutex<HashMap<[u8; 32], Instant>>,
}

fn secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl WebSessions {
    /// Starts a session: the cookie value and the session.
    pub fn create(&self, name: &str, role: AdminRole) -> (String, WebSession) {
        let value = secret();
        let session = WebSession {
            name: name.to_owned(),
            role,
            csrf: secret(),
            expires: Instant::now() + SESSION_TTL,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(token_digest(&value), session.clone());
        (value, session)
    }

    /// The session a request's cookie names, if it is live.
    pub fn of_request(&self, headers: &HeaderMap) -> Option<(String, WebSession)> {
        let value = cookie(headers, COOKIE)?;
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let session = sessions
            .get(&token_digest(&value))
            .filter(|s| s.expires > Instant::now())?;
        Some((value, session.clone()))
    }

    /// Ends the session a cookie value names.
    pub fn end(&self, value: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token_digest(value));
    }

    /// A new one-time login code (admin role, single use, 15 minutes).
    pub fn one_time_code(&self) -> String {
        let code = secret();
        self.once
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token_digest(&code), Instant::now() + ONCE_TTL);
        code
    }

    /// Uses a one-time code: whether it was good (it is gone either way).
    pub fn redeem(&self, code: &str) -> bool {
        let mut once = self.once.lock().unwrap_or_else(|e| e.into_inner());
        once.remove(&token_digest(code))
            .is_some_and(|expires| expires > Instant::now())
    }
}

/// Whether a request carries the session's CSRF token.
pub fn csrf_ok(headers: &HeaderMap, session: &WebSession) -> bool {
    headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| bool::from(t.as_bytes().ct_eq(session.csrf.as_bytes())))
}

/// A cookie's value from the `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The `Set-Cookie` value that starts a session.
pub fn set_cookie(value: &str) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends it.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            format!("other=1; {COOKIE}={value}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends() {
        let web = WebSessions::default();
        let (value, session) = web.create("ops", AdminRole::Admin);
        let (_, found) = web.of_request(&with_cookie(&value)).unwrap();
        assert_eq!(found.name, "ops");
        assert!(web.of_request(&with_cookie("guess")).is_none());
        let mut h = with_cookie(&value);
        assert!(!csrf_ok(&h, &session));
        h.insert("x-csrf-token", session.csrf.parse().unwrap());
        assert!(csrf_ok(&h, &session));
        web.end(&value);
        assert!(web.of_request(&with_cookie(&value)).is_none());
    }

    #[test]
    fn a_one_time_code_works_once() {
        let web = WebSessions::default();
        let code = web.one_time_code();
        assert!(web.redeem(&code));
        assert!(!web.redeem(&code));
        assert!(!web.redeem("made-up"));
    }
}
