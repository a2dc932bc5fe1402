//! One live MCP client connection to an upstream, after (or during) its handshake.
//!
//! The connection mints its own request ids, so requests of many downstream sessions can share
//! one upstream without colliding, and progress tokens are minted equal to the request id so a
//! progress notification finds its request. Each request gets an [`Exchange`]: the messages the
//! upstream sends about it (progress, logs, server-to-client requests) and then its response.

use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::watch;
use toolgate_wire::{Id, Kind, Message, RawObject, raw};

use super::{UPSTREAM_VERSIONS, Upstream, UpstreamError};
use crate::channel::{self, TrySendError};
use crate::config::ServerConfig;
use crate::inventory::ToolIndex;

/// Messages an upstream may send about one request before its response. Beyond this many
/// unread, notifications are dropped (a progress storm must not grow memory).
const EVENT_BUFFER: usize = 256;

/// What the upstream said in its handshake.
#[derive(Debug, Clone, Default)]
pub struct InitInfo {
    /// The negotiated protocol version.
    pub protocol_version: String,
    /// The server's capabilities object.
    pub capabilities: RawObject,
    /// The raw `serverInfo`.
    pub server_info: Option<Box<RawValue>>,
    /// The server's `instructions`.
    pub instructions: Option<String>,
}

/// Transport work an exchange needs polled until it completes.
pub type Io = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What comes back about one request, in order: messages about it, then its response.
pub enum Answer {
    /// A notification or server-to-client request about the request.
    Event(Message),
    /// The response, or why there will be none.
    Response(Result<Message, UpstreamError>),
}

/// One request in flight upstream.
pub struct Exchange {
    /// The upstream-side id (also its progress token).
    pub id: u64,
    /// What the upstream says about the request, then its response. The channel ends without
    /// a response when the request is forgotten (cancelled).
    pub answers: channel::Receiver<Answer>,
    /// Transport work to poll alongside `answers` (see [`Exchange::wait`]).
    pub io: Option<Io>,
}

impl Exchange {
    /// Waits for the response while driving the transport work, passing over the messages
    /// about the request; `None` if the request was forgotten.
    pub async fn wait(&mut self) -> Option<Result<Message, UpstreamError>> {
        loop {
            tokio::select! {
                biased;
                answer = self.answers.recv() => match answer? {
                    Answer::Response(r) => return Some(r),
                    Answer::Event(_) => {}
                },
                () = poll_io(&mut self.io) => self.io = None,
            }
        }
    }
}

/// Polls an exchange's transport work; pending forever when there is none (or no more).
pub async fn poll_io(io: &mut Option<Io>) {
    match io {
        Some(io) => io.await,
        None => std::future::pending().await,
    }
}

struct Pending {
    owner: u64,
    answers: channel::Sender<Answer>,
}

impl Pending {
    /// Queues a message about the request; gives it back when the queue is full (a storm of
    /// notifications) or nobody waits any more.
    fn offer(&self, message: Message) -> Result<(), Message> {
        match self.answers.try_send(Answer::Event(message)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Answer::Event(m)) | TrySendError::Closed(Answer::Event(m))) => {
                Err(m)
            }
            // What was offered is an event, so it comes back as one.
            Err(_) => Ok(()),
        }
    }

    fn respond(&self, response: Result<Message, UpstreamError>) {
        let _ = self.answers.send_last(Answer::Response(response));
    }
}

/// How messages leave for the upstream.
pub(crate) trait Outbound: Send + Sync {
    /// Sends a request whose answer (and related messages) will come back through
    /// [`Connection::dispatch`].
    ///
    /// A transport whose exchange needs driving (an HTTP request and its response stream)
    /// returns that work: whoever waits for the response polls it, which saves a task hand-off
    /// per request.
    fn send_request(
        &self,
        conn: &Arc<Connection>,
        message: Message,
    ) -> Result<Option<Io>, UpstreamError>;
    /// Sends a notification or a response.
    fn send(&self, conn: &Arc<Connection>, message: Message) -> Result<(), UpstreamError>;
    /// The handshake is done (HTTP opens its standalone event stream here).
    fn initialized(&self, _conn: &Arc<Connection>) {}
    /// The server's own session id (Streamable HTTP), for another instance to take over.
    fn remote_session(&self) -> Option<String> {
        None
    }
    /// Leave the server's session open when this connection ends (another instance may
    /// serve it), or end it politely (the default).
    fn keep_remote_session(&self, _keep: bool) {}
}

/// A live connection to one upstream.
pub struct Connection {
    pub(crate) server: Arc<str>,
    pub(crate) config: Arc<ServerConfig>,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    outbound: Box<dyn Outbound>,
    info: Mutex<Arc<InitInfo>>,
    closed: watch::Sender<Option<String>>,
    upstream: Weak<Upstream>,
    lists: Mutex<HashMap<&'static str, Arc<Vec<Box<RawValue>>>>>,
    tool_index: Mutex<Option<Arc<ToolIndex>>>,
}

impl Connection {
    pub(crate) fn new(
        config: Arc<ServerConfig>,
        upstream: Weak<Upstream>,
        outbound: Box<dyn Outbound>,
    ) -> Arc<Connection> {
        Arc::new(Connection {
            server: Arc::from(config.name.as_str()),
            config,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::default()),
            outbound,
            info: Mutex::new(Arc::new(InitInfo::default())),
            closed: watch::channel(None).0,
            upstream,
            lists: Mutex::new(HashMap::default()),
            tool_index: Mutex::new(None),
        })
    }

    /// Takes over a server session that another instance opened: the handshake it made is
    /// `info`. Request ids start at a random point, so that both instances' requests in the
    /// one server session do not collide.
    pub(crate) fn resume(self: &Arc<Self>, info: InitInfo) {
        self.next_id.store(
            u64::from(rand::random::<u32>()) << 20 | 1,
            Ordering::Relaxed,
        );
        *self.info.lock().unwrap() = Arc::new(info);
        self.outbound.initialized(self);
    }

    /// The server's own session id, when it has one (Streamable HTTP).
    pub fn remote_session(&self) -> Option<String> {
        self.outbound.remote_session()
    }

    /// See [`Outbound::keep_remote_session`].
    pub fn keep_remote_session(&self, keep: bool) {
        self.outbound.keep_remote_session(keep)
    }

    /// What the upstream declared in its handshake.
    pub fn info(&self) -> Arc<InitInfo> {
        self.info.lock().unwrap().clone()
    }

    /// Resolves when the connection ends, with the reason.
    pub fn closed(&self) -> watch::Receiver<Option<String>> {
        self.closed.subscribe()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    /// Ends the connection: every request in flight fails with `reason`.
    pub(crate) fn close(&self, reason: &str) {
        let first = self.closed.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason.to_owned());
                true
            } else {
                false
            }
        });
        if !first {
            return;
        }
        let pending: Vec<Pending> = self
            .pending
            .lock()
            .unwrap()
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in pending {
            p.respond(Err(UpstreamError::Closed {
                server: self.server.clone(),
                reason: reason.to_owned(),
            }));
        }
    }

    /// Sends a request on behalf of `owner` (a downstream session; 0 for the gateway itself).
    /// Its id is replaced by a fresh one and, when `progress` is set, its progress token too.
    pub fn start(
        self: &Arc<Self>,
        mut message: Message,
        owner: u64,
        progress: bool,
    ) -> Result<Exchange, UpstreamError> {
        if let Some(reason) = self.closed.borrow().clone() {
            return Err(UpstreamError::Closed {
                server: self.server.clone(),
                reason,
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        message.set_id(Id::number(id));
        if progress {
            message.set_progress_token(raw(&id));
        }
        let (answers_tx, answers) = channel::channel(EVENT_BUFFER);
        self.pending.lock().unwrap().insert(
            id,
            Pending {
                owner,
                answers: answers_tx,
            },
        );
        let io = match self.outbound.send_request(self, message) {
            Ok(io) => io,
            Err(e) => {
                self.pending.lock().unwrap().remove(&id);
                return Err(e);
            }
        };
        Ok(Exchange { id, answers, io })
    }

    /// Fails one request in flight (its transport failed, not the whole connection).
    pub(crate) fn fail(&self, id: u64, error: UpstreamError) {
        if let Some(p) = self.pending.lock().unwrap().remove(&id) {
            p.respond(Err(error));
        }
    }

    /// Sends a request and waits for its response (for the gateway's own requests).
    pub async fn request(
        self: &Arc<Self>,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<Message, UpstreamError> {
        let message = Message::request(Id::number(0), method, params);
        let exchange = self.start(message, 0, false)?;
        self.finish(exchange, self.config.request_timeout).await
    }

    /// Waits for an exchange's response within `timeout`; on timeout the upstream is told to
    /// cancel.
    pub async fn finish(
        self: &Arc<Self>,
        mut exchange: Exchange,
        timeout: Duration,
    ) -> Result<Message, UpstreamError> {
        match tokio::time::timeout(timeout, exchange.wait()).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(UpstreamError::Closed {
                server: self.server.clone(),
                reason: "connection dropped".into(),
            }),
            Err(_) => {
                self.cancel(exchange.id, "timed out in the gateway");
                Err(UpstreamError::Timeout {
                    server: self.server.clone(),
                    after: timeout,
                })
            }
        }
    }

    /// Tells the upstream to stop working on a request and forgets it.
    pub fn cancel(self: &Arc<Self>, id: u64, reason: &str) {
        if self.pending.lock().unwrap().remove(&id).is_none() {
            return;
        }
        let params = serde_json::json!({ "requestId": id, "reason": reason });
        self.send(Message::notification(
            "notifications/cancelled",
            Some(&raw(&params)),
        ));
    }

    /// Sends a notification or a response to a server-to-client request.
    pub fn send(self: &Arc<Self>, message: Message) {
        if let Err(e) = self.outbound.send(self, message) {
            tracing::debug!(server = %self.server, error = %e, "could not send to upstream");
        }
    }

    /// Answers a server-to-client request with an error.
    pub fn refuse(self: &Arc<Self>, id: Id, reason: &str) {
        self.send(Message::error(Some(id), -32601, reason));
    }

    /// Routes a message from the upstream. `related` is the request whose HTTP response stream
    /// carried it, when the transport tells.
    pub(crate) fn dispatch(self: &Arc<Self>, message: Message, related: Option<u64>) {
        match message.kind() {
            Kind::Response => {
                let Some(id) = message.id().and_then(Id::as_u64) else {
                    tracing::debug!(server = %self.server, "response with an id the gateway never sent");
                    return;
                };
                let pending = self.pending.lock().unwrap().remove(&id);
                if let Some(p) = pending {
                    p.respond(Ok(message));
                }
            }
            Kind::Notification if message.method() == Some("notifications/progress") => {
                let token = message.params().ok().and_then(|p| {
                    p.get("progressToken")
                        .and_then(|t| t.get().parse::<u64>().ok())
                });
                if let Some(token) = token
                    && let Some(p) = self.pending.lock().unwrap().get(&token)
                {
                    let _ = p.offer(message);
                }
            }
            kind => {
                if let Some(method) = message.method().filter(|m| m.ends_with("/list_changed")) {
                    self.invalidate(method);
                }
                let target = related.or_else(|| match message.method() {
                    Some(m)
                        if m.ends_with("/list_changed")
                            || m == "notifications/resources/updated" =>
                    {
                        None
                    }
                    _ => self.attribute(),
                });
                let message = match target {
                    Some(id) => match self.pending.lock().unwrap().get(&id) {
                        Some(p) => match p.offer(message) {
                            Ok(()) => return,
                            Err(m) => m,
                        },
                        None => message,
                    },
                    None => message,
                };
                match self.upstream.upgrade() {
                    Some(up) => up.deliver_unsolicited(self, message),
                    None if kind == Kind::Request => {
                        if let Some(id) = message.id().cloned() {
                            self.refuse(id, "no client is connected");
                        }
                    }
                    None => {}
                }
            }
        }
    }

    /// The request a message from a stdio upstream most likely belongs to: the latest one in
    /// flight, provided every request in flight comes from the same downstream session.
    fn attribute(&self) -> Option<u64> {
        let pending = self.pending.lock().unwrap();
        let mut owner = None;
        let mut latest = None;
        for (&id, p) in pending.iter().filter(|(_, p)| p.owner != 0) {
            match owner {
                None => owner = Some(p.owner),
                Some(o) if o != p.owner => return None,
                _ => {}
            }
            latest = latest.max(Some(id));
        }
        latest
    }

    /// Performs the initialize handshake.
    pub(crate) async fn initialize(
        self: &Arc<Self>,
        capabilities: &RawValue,
        client_info: &RawValue,
    ) -> Result<(), UpstreamError> {
        let mut params = RawObject::new();
        params.set_value("protocolVersion", UPSTREAM_VERSIONS[0]);
        params.set("capabilities", capabilities.to_owned());
        params.set("clientInfo", client_info.to_owned());
        let response = self.request("initialize", Some(&params.to_raw())).await?;
        let protocol = |message: String| UpstreamError::Protocol {
            server: self.server.clone(),
            message,
        };
        let Some(result) = response.result() else {
            let error = response
                .error_raw()
                .map(|e| e.get().to_owned())
                .unwrap_or_default();
            return Err(protocol(format!("initialize failed: {error}")));
        };
        let version = result.get_str("protocolVersion").unwrap_or_default();
        if !UPSTREAM_VERSIONS.contains(&version.as_str()) {
            return Err(protocol(format!(
                "unsupported protocol version {version:?}"
            )));
        }
        *self.info.lock().unwrap() = Arc::new(InitInfo {
            protocol_version: version,
            capabilities: result.get_object("capabilities").unwrap_or_default(),
            server_info: result.get("serverInfo").map(|v| v.to_owned()),
            instructions: result.get_str("instructions"),
        });
        self.send(Message::notification("notifications/initialized", None));
        self.outbound.initialized(self);
        Ok(())
    }

    /// All items of a list method (`tools/list` -> `tools`, ...), following the upstream's
    /// cursors, cached until the upstream says the list changed.
    pub async fn list(
        self: &Arc<Self>,
        method: &'static str,
        field: &str,
    ) -> Result<Arc<Vec<Box<RawValue>>>, UpstreamError> {
        if let Some(items) = self.lists.lock().unwrap().get(method) {
            return Ok(items.clone());
        }
        const MAX_PAGES: usize = 100;
        const MAX_ITEMS: usize = 10_000;
        let mut items: Vec<Box<RawValue>> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = cursor
                .as_ref()
                .map(|c| raw(&serde_json::json!({ "cursor": c })));
            let response = self.request(method, params.as_deref()).await?;
            let Some(result) = response.result() else {
                let error = response
                    .error_raw()
                    .map(|e| e.get().to_owned())
                    .unwrap_or_default();
                return Err(UpstreamError::Protocol {
                    server: self.server.clone(),
                    message: format!("{method} failed: {error}"),
                });
            };
            if let Some(page) = result.get(field) {
                let page: Vec<Box<RawValue>> =
                    serde_json::from_str(page.get()).map_err(|e| UpstreamError::Protocol {
                        server: self.server.clone(),
                        message: format!("{method}: {field} is not a list: {e}"),
                    })?;
                items.extend(page);
            }
            cursor = result.get_str("nextCursor").filter(|c| !c.is_empty());
            if cursor.is_none() || items.len() >= MAX_ITEMS {
                break;
            }
        }
        items.truncate(MAX_ITEMS);
        let items = Arc::new(items);
        self.lists.lock().unwrap().insert(method, items.clone());
        Ok(items)
    }

    /// The index of this connection's tools, as last built.
    pub(crate) fn tool_index(&self) -> Option<Arc<ToolIndex>> {
        self.tool_index.lock().unwrap().clone()
    }

    /// Keeps the index built from this connection's tool list.
    pub(crate) fn set_tool_index(&self, index: Arc<ToolIndex>) {
        *self.tool_index.lock().unwrap() = Some(index);
    }

    /// Drops a cached list so that the next use fetches it again.
    pub(crate) fn expire_list(&self, method: &str) {
        self.lists.lock().unwrap().remove(method);
    }

    fn invalidate(&self, notification: &str) {
        let method = match notification {
            "notifications/tools/list_changed" => "tools/list",
            "notifications/prompts/list_changed" => "prompts/list",
            "notifications/resources/list_changed" => {
                self.lists
                    .lock()
                    .unwrap()
                    .remove("resources/templates/list");
                "resources/list"
            }
            _ => return,
        };
        self.lists.lock().unwrap().remove(method);
    }
}
