//! Browser sessions of the web UI: a login (an admin token, or a one-time link printed at
//! start) sets an HttpOnly, Secure, SameSite=Strict cookie naming a session kept in the state
//! store (so a login holds on every instance sharing PostgreSQL, and across restarts); every
//! change the session makes carries its CSRF token (`X-CSRF-Token`), compared in constant time,
//! besides the Origin check every request gets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;
use toolgate_gateway::config::AdminRole;
use toolgate_gateway::grant::token_digest;
use toolgate_gateway::guard::now_ms;
use toolgate_state::{StoreError, StoredWebSession, WebSessionStore};

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
    /// The token its changes must carry: derived from the cookie's secret, so that every
    /// instance knows it without storing it.
    pub csrf: String,
}

/// Browser sessions (in the state store, shared by the instances that share it, found by the
/// SHA-256 of their cookie's secret), and this instance's one-time login codes.
pub struct WebSessions {
    store: Arc<dyn WebSessionStore>,
    once: Mutex<HashMap<[u8; 32], Instant>>,
}

fn secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The key a session is stored under: the digest of its secret (the secret stays with the
/// browser).
fn storage_key(value: &str) -> String {
    hex::encode(token_digest(value))
}

fn csrf_of(value: &str) -> String {
    hex::encode(token_digest(&format!("toolgate web csrf:{value}")))
}

impl WebSessions {
    /// Sessions kept in `store`.
    pub fn new(store: Arc<dyn WebSessionStore>) -> WebSessions {
        WebSessions {
            store,
            once: Mutex::default(),
        }
    }

    /// Starts a session: the cookie value and the session.
    pub async fn create(
        &self,
        name: &str,
        role: AdminRole,
    ) -> Result<(String, WebSession), StoreError> {
        let value = secret();
        let now = now_ms();
        let stored = StoredWebSession {
            name: name.to_owned(),
            role: role.name().to_owned(),
            expires_ms: now + SESSION_TTL.as_millis() as u64,
        };
        self.store.put(&storage_key(&value), &stored, now).await?;
        let session = WebSession {
            name: name.to_owned(),
            role,
            csrf: csrf_of(&value),
        };
        Ok((value, session))
    }

    /// The session a request's cookie names, if it is live.
    pub async fn of_request(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<(String, WebSession)>, StoreError> {
        let Some(value) = cookie(headers, COOKIE) else {
            return Ok(None);
        };
        let Some(stored) = self.store.get(&storage_key(&value), now_ms()).await? else {
            return Ok(None);
        };
        let Some(role) = AdminRole::from_name(&stored.role) else {
            return Ok(None);
        };
        let session = WebSession {
            name: stored.name,
            role,
            csrf: csrf_of(&value),
        };
        Ok(Some((value, session)))
    }

    /// Ends the session a cookie value names.
    pub async fn end(&self, value: &str) -> Result<(), StoreError> {
        self.store.remove(&storage_key(value)).await
    }

    /// A new one-time login code (admin role, single use, 15 minutes, this instance only: it
    /// is the one that printed it).
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

    #[tokio::test]
    async fn a_session_is_found_by_its_cookie_on_every_instance_and_ends() {
        let store = Arc::new(toolgate_state::MemoryWebSessions::default());
        let web = WebSessions::new(store.clone());
        let other = WebSessions::new(store);
        let (value, session) = web.create("ops", AdminRole::PolicyManager).await.unwrap();
        let (_, found) = other
            .of_request(&with_cookie(&value))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.name.as_str(), found.role),
            ("ops", AdminRole::PolicyManager)
        );
        assert_eq!(found.csrf, session.csrf);
        assert!(
            web.of_request(&with_cookie("guess"))
                .await
                .unwrap()
                .is_none()
        );
        let mut h = with_cookie(&value);
        assert!(!csrf_ok(&h, &session));
        h.insert("x-csrf-token", session.csrf.parse().unwrap());
        assert!(csrf_ok(&h, &found));
        other.end(&value).await.unwrap();
        assert!(
            web.of_request(&with_cookie(&value))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_one_time_code_works_once() {
        let web = WebSessions::new(Arc::new(toolgate_state::MemoryWebSessions::default()));
        let code = web.one_time_code();
        assert!(web.redeem(&code));
        assert!(!web.redeem(&code));
        assert!(!web.redeem("made-up"));
    }
}
