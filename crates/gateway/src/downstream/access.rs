//! Who may talk to an HTTP listener: the Host and Origin checks (against DNS rebinding and
//! cross-site requests from browsers) and the bearer token, shared by the MCP listener and
//! the admin API.

use axum::http::{HeaderMap, StatusCode};

use crate::config::Config;

/// Read access to a request's header fields, by lowercase name: hyper's [`HeaderMap`] or the
/// head the MCP listener parses itself for a `POST` (see `downstream::h1`).
pub trait Headers {
    /// The value of the first field called `name` (lowercase).
    fn get_bytes(&self, name: &str) -> Option<&[u8]>;

    /// The same, if the value is visible ASCII (what [`axum::http::HeaderValue::to_str`]
    /// accepts).
    fn get_str(&self, name: &str) -> Option<&str>;
}

impl Headers for HeaderMap {
    fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }

    fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `value` as text if every byte is visible ASCII, a space or a tab.
pub fn visible_ascii(value: &[u8]) -> Option<&str> {
    let visible = value.iter().all(|&b| (32..127).contains(&b) || b == b'\t');
    visible.then(|| std::str::from_utf8(value).ok()).flatten()
}

/// The Host and Origin values a listener accepts.
#[derive(Debug, Clone)]
pub struct HostCheck {
    hosts: Vec<String>,
    origins: Vec<String>,
}

impl HostCheck {
    /// For a listener on `port`: the loopback names with the port (and without it on port
    /// 80), `listen.allowed_hosts`; as origins, `http://` plus each of those and
    /// `listen.allowed_origins`.
    pub fn for_listener(config: &Config, port: u16) -> HostCheck {
        let loopback = ["127.0.0.1", "localhost", "[::1]"];
        let mut hosts: Vec<String> = loopback.iter().map(|h| format!("{h}:{port}")).collect();
        if port == 80 {
            hosts.extend(loopback.map(String::from));
        }
        hosts.extend(config.listen.allowed_hosts.iter().cloned());
        let mut origins: Vec<String> = hosts.iter().map(|h| format!("http://{h}")).collect();
        origins.extend(config.listen.allowed_origins.iter().cloned());
        HostCheck { hosts, origins }
    }

    /// The status and message to refuse a request with, if its Host (421) or Origin (403)
    /// is not accepted. A request without Origin (not from a browser) passes.
    pub fn refusal(&self, headers: &impl Headers) -> Option<(StatusCode, String)> {
        let host = headers.get_str("host").unwrap_or_default();
        if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Some((
                StatusCode::MISDIRECTED_REQUEST,
                format!("Host {host:?} is not allowed"),
            ));
        }
        // Present but not text: refused like any origin not on the list.
        let origin = visible_ascii(headers.get_bytes("origin")?).unwrap_or_default();
        if self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return None;
        }
        Some((
            StatusCode::FORBIDDEN,
            format!("Origin {origin:?} is not allowed"),
        ))
    }
}

/// The token of an `Authorization: Bearer ...` header, if any.
pub fn bearer(headers: &impl Headers) -> Option<&str> {
    headers
        .get_str("authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}
