//! Upstreams: the MCP servers behind the gateway.
//!
//! An [`Upstream`] is one configured server as seen from one scope (a downstream session, or the
//! whole gateway for `isolation = "shared"`). It supervises a [`Connection`]: connects, performs
//! the initialize handshake on its own, and reconnects with backoff when the connection dies.
//! While it is down its tools vanish from listings and calls to it get a clear error.

mod connection;
mod http;
mod http_client;
mod stdio;

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::watch;
use toolgate_wire::Message;

pub use connection::{Answer, Connection, Exchange, InitInfo, Io, poll_io};

/// A server session (Streamable HTTP) opened by another instance, to take over without a new
/// handshake: what that handshake established.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Resume {
    /// The server's `Mcp-Session-Id`.
    pub session: String,
    /// The negotiated protocol version.
    pub version: String,
    /// The server's capabilities.
    pub capabilities: Box<RawValue>,
    /// The server's `serverInfo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_info: Option<Box<RawValue>>,
}

/// POSTs a JSON body to `url` (the approvals webhook) with the gateway's HTTP client; the
/// response status, or why there is none. `timeout` bounds the whole exchange.
pub async fn post_json(url: &str, body: String, timeout: Duration) -> Result<u16, String> {
    let client = Arc::new(http_client::HttpClient::new(url, None)?);
    let request = client
        .request(::http::Method::POST)
        .header(
            "content-type",
            &::http::HeaderValue::from_static("application/json"),
        )
        .body(body);
    let exchange = async {
        let (parts, body) = client.send(request).await.map_err(|e| e.to_string())?;
        let _ = body.collect(64 * 1024).await;
        Ok(parts.status.as_u16())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

use crate::config::{ServerConfig, Transport};

/// Protocol versions the gateway speaks with upstreams, newest first.
pub const UPSTREAM_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Why an upstream could not serve a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// Not connected (starting, crashed, or failed to start).
    #[error("upstream server '{server}' is unavailable: {reason}")]
    Unavailable {
        /// The server.
        server: Arc<str>,
        /// Why.
        reason: String,
    },
    /// The connection ended while the request was in flight.
    #[error("upstream server '{server}' closed the connection: {reason}")]
    Closed {
        /// The server.
        server: Arc<str>,
        /// Why.
        reason: String,
    },
    /// No response in time.
    #[error("upstream server '{server}' did not answer within {after:?}")]
    Timeout {
        /// The server.
        server: Arc<str>,
        /// The timeout.
        after: Duration,
    },
    /// The upstream broke the protocol.
    #[error("upstream server '{server}': {message}")]
    Protocol {
        /// The server.
        server: Arc<str>,
        /// What happened.
        message: String,
    },
}

/// Receives what an upstream sends outside of any request the receiver made: `list_changed`
/// notifications, server-to-client requests, and changes of the upstream's health.
pub trait Subscriber: Send + Sync {
    /// A message not tied to an in-flight request of this subscriber.
    fn unsolicited(&self, upstream: &Arc<Upstream>, message: Message);
    /// The upstream came up or went down.
    fn health_changed(&self, upstream: &Arc<Upstream>);
}

enum State {
    Connecting,
    Ready(Arc<Connection>),
    Down(String),
}

/// One supervised upstream server.
pub struct Upstream {
    /// Its configuration.
    pub config: Arc<ServerConfig>,
    /// Its name, shared with errors and metrics.
    pub name: Arc<str>,
    /// Client capabilities to declare in the handshake.
    client_capabilities: Box<RawValue>,
    client_info: Box<RawValue>,
    max_line: usize,
    state: Mutex<State>,
    /// A server session to take over at the first connection, instead of a handshake.
    resume: Mutex<Option<Resume>>,
    /// Leave server sessions open when a connection ends (see [`Upstream::keep_remote_session`]).
    keep_remote: std::sync::atomic::AtomicBool,
    settled: watch::Sender<u64>,
    subscribers: Mutex<Vec<Weak<dyn Subscriber>>>,
    /// Dropped with the upstream: tells the supervisor to stop.
    _stop: watch::Sender<()>,
}

impl Upstream {
    /// Starts supervising a server. `client_capabilities` is what the gateway declares to it:
    /// the downstream client's (per-session) or the gateway's own (shared), minus sampling and
    /// roots unless the server is allowed them.
    pub fn start(
        config: Arc<ServerConfig>,
        client_capabilities: &RawValue,
        client_info: &RawValue,
        max_line: usize,
    ) -> Arc<Upstream> {
        Upstream::start_resuming(config, client_capabilities, client_info, max_line, None)
    }

    /// [`Upstream::start`], taking over `resume` (a server session another instance opened)
    /// at the first connection; later connections make their own handshake.
    pub fn start_resuming(
        config: Arc<ServerConfig>,
        client_capabilities: &RawValue,
        client_info: &RawValue,
        max_line: usize,
        resume: Option<Resume>,
    ) -> Arc<Upstream> {
        let caps = filter_capabilities(&config, client_capabilities);
        let (stop, stop_rx) = watch::channel(());
        let up = Arc::new(Upstream {
            name: Arc::from(config.name.as_str()),
            config,
            client_capabilities: caps,
            client_info: client_info.to_owned(),
            max_line,
            state: Mutex::new(State::Connecting),
            resume: Mutex::new(resume),
            keep_remote: std::sync::atomic::AtomicBool::new(false),
            settled: watch::channel(0).0,
            subscribers: Mutex::new(Vec::new()),
            _stop: stop,
        });
        tokio::spawn(supervise(Arc::downgrade(&up), stop_rx));
        up
    }

    /// Registers a receiver of unsolicited messages and health changes.
    pub fn subscribe(&self, subscriber: Weak<dyn Subscriber>) {
        let mut subs = self.subscribers.lock().unwrap();
        subs.retain(|s| s.strong_count() > 0);
        subs.push(subscriber);
    }

    /// The live connection, or why there is none.
    pub fn connection(&self) -> Result<Arc<Connection>, UpstreamError> {
        match &*self.state.lock().unwrap() {
            State::Ready(c) => Ok(c.clone()),
            State::Connecting => Err(UpstreamError::Unavailable {
                server: self.name.clone(),
                reason: "still connecting".into(),
            }),
            State::Down(reason) => Err(UpstreamError::Unavailable {
                server: self.name.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// Waits until the first connection attempt has succeeded or failed (bounded by the
    /// server's startup timeout), so that a new session sees every server that can start.
    pub async fn settled(&self) {
        let mut rx = self.settled.subscribe();
        let wait = rx.wait_for(|n| *n > 0);
        let _ =
            tokio::time::timeout(self.config.startup_timeout + Duration::from_secs(1), wait).await;
    }

    fn set_state(self: &Arc<Self>, state: State) {
        *self.state.lock().unwrap() = state;
        let mut first = false;
        self.settled.send_modify(|n| {
            first = *n == 0;
            *n += 1
        });
        // Sessions wait for the first outcome before they answer `initialize`: only later
        // changes are news to them.
        if first {
            return;
        }
        for sub in self.live_subscribers() {
            sub.health_changed(self);
        }
    }

    /// Tells this upstream's sessions that their lists may have changed (a tool was
    /// quarantined or approved).
    pub fn announce_lists_changed(self: &Arc<Self>) {
        for sub in self.live_subscribers() {
            sub.health_changed(self);
        }
    }

    fn live_subscribers(&self) -> Vec<Arc<dyn Subscriber>> {
        self.subscribers
            .lock()
            .unwrap()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Delivers a message the connection could not tie to a request. A shared upstream may
    /// only broadcast change notifications: anything else could leak between sessions.
    pub(crate) fn deliver_unsolicited(self: &Arc<Self>, conn: &Arc<Connection>, message: Message) {
        let subs = self.live_subscribers();
        let broadcast = matches!(
            message.method(),
            Some(
                "notifications/tools/list_changed"
                    | "notifications/prompts/list_changed"
                    | "notifications/resources/list_changed"
            )
        );
        if broadcast || subs.len() == 1 {
            for sub in subs {
                sub.unsolicited(self, message.clone());
            }
        } else if let Some(id) = message
            .id()
            .cloned()
            .filter(|_| message.kind() == toolgate_wire::Kind::Request)
        {
            conn.refuse(
                id,
                "the gateway cannot tell which client this request is for (shared upstream)",
            );
        } else {
            tracing::debug!(server = %self.name, method = ?message.method(), "dropped an unattributable notification");
        }
    }

    /// What another instance needs to take over this upstream's server session: only for a
    /// per-session HTTP upstream that is up and has a server session.
    pub fn resumable(&self) -> Option<Resume> {
        if !matches!(self.config.transport, Transport::Http { .. })
            || self.config.isolation != crate::config::Isolation::PerSession
        {
            return None;
        }
        let conn = self.connection().ok()?;
        let info = conn.info();
        Some(Resume {
            session: conn.remote_session()?,
            version: info.protocol_version.clone(),
            capabilities: info.capabilities.to_raw(),
            server_info: info.server_info.clone(),
        })
    }

    /// Whether the server session outlives this gateway's use of it (sessions other
    /// instances may take over), or ends with it.
    pub fn keep_remote_session(&self, keep: bool) {
        if self.config.isolation != crate::config::Isolation::PerSession {
            return;
        }
        self.keep_remote
            .store(keep, std::sync::atomic::Ordering::Relaxed);
        if let Ok(conn) = self.connection() {
            conn.keep_remote_session(keep);
        }
    }

    async fn connect(self: &Arc<Self>) -> Result<Arc<Connection>, UpstreamError> {
        let weak = Arc::downgrade(self);
        let resume = self.resume.lock().unwrap().take();
        let conn = match &self.config.transport {
            Transport::Stdio { .. } => stdio::spawn(self.config.clone(), weak, self.max_line)?,
            Transport::Http { .. } => http::open(self.config.clone(), weak, resume.as_ref())?,
        };
        conn.keep_remote_session(self.keep_remote.load(std::sync::atomic::Ordering::Relaxed));
        if let Some(resume) =
            resume.filter(|_| matches!(self.config.transport, Transport::Http { .. }))
        {
            conn.resume(InitInfo {
                protocol_version: resume.version,
                capabilities: toolgate_wire::RawObject::from_raw(&resume.capabilities)
                    .unwrap_or_default(),
                server_info: resume.server_info,
                instructions: None,
            });
            return Ok(conn);
        }
        let timeout = self.config.startup_timeout;
        match tokio::time::timeout(
            timeout,
            conn.initialize(&self.client_capabilities, &self.client_info),
        )
        .await
        {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(UpstreamError::Timeout {
                server: self.name.clone(),
                after: timeout,
            }),
        }
    }
}

async fn supervise(up: Weak<Upstream>, mut stop: watch::Receiver<()>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let Some(strong) = up.upgrade() else { return };
        let attempt = tokio::select! {
            r = strong.connect() => r,
            _ = stop.changed() => return,
        };
        let mut closed = match attempt {
            Ok(conn) => {
                tracing::info!(server = %strong.name, version = %conn.info().protocol_version, "upstream ready");
                let closed = conn.closed();
                strong.set_state(State::Ready(conn));
                closed
            }
            Err(e) => {
                tracing::warn!(server = %strong.name, error = %e, "upstream failed to start");
                strong.set_state(State::Down(e.to_string()));
                drop(strong);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let started = Instant::now();
        drop(strong);
        let reason = tokio::select! {
            r = closed.wait_for(|r| r.is_some()) => r.map(|r| r.clone().unwrap_or_default()).unwrap_or_default(),
            _ = stop.changed() => return,
        };
        let Some(strong) = up.upgrade() else { return };
        tracing::warn!(server = %strong.name, %reason, "upstream connection lost; restarting");
        strong.set_state(State::Down(reason));
        drop(strong);
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(250);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Sampling and roots reach an upstream only when the operator allows them for that server.
fn filter_capabilities(config: &ServerConfig, caps: &RawValue) -> Box<RawValue> {
    let Ok(mut obj) = toolgate_wire::RawObject::from_raw(caps) else {
        return toolgate_wire::raw(&serde_json::json!({}));
    };
    if !config.allow_sampling {
        obj.remove("sampling");
    }
    if !config.allow_roots {
        obj.remove("roots");
    }
    obj.to_raw()
}
