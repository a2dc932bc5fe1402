//! A downstream session: one MCP client as the gateway sees it, and the life of its requests.
//!
//! A request arrives from a transport (HTTP or stdio) as a parsed [`Message`]; the session
//! answers it itself (`ping`, lists it aggregates, `server/discover`) or routes it to one
//! upstream, mapping ids and progress tokens on the way out and back. Whatever the upstream
//! sends about the request flows back on the same reply channel, ending with the response.

use foldhash::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use toolgate_state::AuditRecord;
use toolgate_wire::{ErrorCode, Id, Kind, Message, RawObject, raw};

use crate::audit::{AuditLog, PendingRecord};
use crate::channel;
use crate::config::Config;
use crate::config::Pinning;
use crate::grant::Grant;
use crate::guard::{self, Admission, CallInfo, ClientInput, Guard, Refusal};
use crate::inventory::{IndexedTool, Inventory, ToolIndex};
use crate::metrics::Metrics;
use crate::names;
use crate::upstream::{Answer, Connection, Io, Subscriber, Upstream, UpstreamError, poll_io};

/// Protocol versions offered to downstream clients that use the handshake, newest first.
pub const HANDSHAKE_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The stateless protocol revision.
pub const STATELESS_VERSION: &str = "2026-07-28";
/// `_meta` keys of the stateless revision, which handshake-era upstreams must not see.
const MODERN_META_PREFIX: &str = "io.modelcontextprotocol/";

/// How the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Handshake-era protocol (2025-11-25 and before), with a session.
    Handshake,
    /// 2026-07-28: every request stands alone; no server-to-client requests.
    Stateless,
}

/// Messages queued for a client's standalone stream (list changes, server requests) while it
/// has none open; beyond this they are dropped.
const OUTBOUND_QUEUE: usize = 256;
/// Messages about one request that may wait for a slow client; beyond this, notifications
/// are dropped and server-to-client requests wait for room.
const REPLY_QUEUE: usize = 64;

/// One downstream session.
pub struct Session {
    /// The id the client sends as `Mcp-Session-Id`.
    pub id: String,
    /// The grant that opened it.
    pub grant: Arc<Grant>,
    /// How the client speaks.
    pub mode: Mode,
    /// The one server a `/mcp/{server}` session is limited to.
    pub scope: Option<String>,
    key: u64,
    protocol_version: Mutex<String>,
    client_capabilities: RawObject,
    upstreams: Vec<Arc<Upstream>>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    guard: Arc<Guard>,
    inventory: Arc<Inventory>,
    audit: Arc<AuditLog>,
    outbound: channel::Sender<Message>,
    outbound_rx: Mutex<Option<channel::Receiver<Message>>>,
    server_requests: Mutex<HashMap<Id, (Arc<Connection>, Id)>>,
    /// The gateway's own requests to the client (approval questions), by id.
    own_requests: Mutex<HashMap<Id, oneshot::Sender<Message>>>,
    inflight: Mutex<HashMap<Id, (Arc<Connection>, u64)>>,
    /// Calls not yet forwarded (being routed, checked, or held for a human's approval), by
    /// the client's id, and whether the client has cancelled them since; `unforwarded_cancelled`
    /// wakes their waits.
    unforwarded: Mutex<HashMap<Id, bool>>,
    unforwarded_cancelled: Notify,
    next_server_request: AtomicU64,
    parked: Mutex<HashMap<String, Flight>>,
    last_used: Mutex<Instant>,
    active: AtomicUsize,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: String,
        scope: Option<String>,
        key: u64,
        grant: Arc<Grant>,
        mode: Mode,
        client_capabilities: &RawValue,
        upstreams: Vec<Arc<Upstream>>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        guard: Arc<Guard>,
        inventory: Arc<Inventory>,
        audit: Arc<AuditLog>,
    ) -> Arc<Session> {
        let (outbound, outbound_rx) = channel::channel(OUTBOUND_QUEUE);
        let session = Arc::new(Session {
            id,
            scope,
            grant,
            mode,
            key,
            protocol_version: Mutex::new(STATELESS_VERSION.to_owned()),
            client_capabilities: RawObject::from_raw(client_capabilities).unwrap_or_default(),
            upstreams,
            config,
            metrics,
            guard,
            inventory,
            audit,
            outbound,
            outbound_rx: Mutex::new(Some(outbound_rx)),
            server_requests: Mutex::new(HashMap::default()),
            own_requests: Mutex::new(HashMap::default()),
            inflight: Mutex::new(HashMap::default()),
            unforwarded: Mutex::new(HashMap::default()),
            unforwarded_cancelled: Notify::new(),
            next_server_request: AtomicU64::new(1),
            parked: Mutex::new(HashMap::default()),
            last_used: Mutex::new(Instant::now()),
            active: AtomicUsize::new(0),
        });
        let weak = Arc::downgrade(&session) as std::sync::Weak<dyn Subscriber>;
        for up in &session.upstreams {
            up.subscribe(weak.clone());
        }
        session
    }

    /// The upstreams in this session's scope.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Names are unchanged when the session sees one server.
    fn single(&self) -> bool {
        self.upstreams.len() == 1
    }

    /// Marks the session as used now (idle expiry).
    pub fn touch(&self) {
        *self.last_used.lock().unwrap() = Instant::now();
    }

    /// When the session was last used.
    pub fn last_used(&self) -> Instant {
        *self.last_used.lock().unwrap()
    }

    /// Whether a request is in flight (a busy session never expires).
    pub fn busy(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// The negotiated protocol version.
    pub fn protocol_version(&self) -> String {
        self.protocol_version.lock().unwrap().clone()
    }

    /// Takes the receiver of messages for the client's standalone stream (GET, or stdout).
    /// Only one holder at a time; give it back with [`Session::return_outbound`].
    pub fn take_outbound(&self) -> Option<channel::Receiver<Message>> {
        self.outbound_rx.lock().unwrap().take()
    }

    /// Gives back the standalone stream's receiver when that stream closes.
    pub fn return_outbound(&self, rx: channel::Receiver<Message>) {
        *self.outbound_rx.lock().unwrap() = Some(rx);
    }

    /// Answers the client's `initialize`: negotiates the version and describes the gateway, or,
    /// when the session sees one server, that server as it described itself.
    pub fn initialize_result(&self, requested: Option<&str>) -> Box<RawValue> {
        let version = requested
            .filter(|v| HANDSHAKE_VERSIONS.contains(v))
            .unwrap_or(HANDSHAKE_VERSIONS[0]);
        *self.protocol_version.lock().unwrap() = version.to_owned();
        let mut result = RawObject::new();
        result.set_value("protocolVersion", version);
        self.describe(&mut result);
        result.to_raw()
    }

    fn describe(&self, result: &mut RawObject) {
        let single = self
            .single()
            .then(|| self.upstreams[0].connection().ok())
            .flatten()
            .map(|c| c.info());
        match single {
            Some(info) => {
                // The server's own capabilities, except that the gateway itself announces list
                // changes (an upstream restarting, a grant's policy reloaded), so it says so.
                let mut capabilities = info.capabilities.clone();
                for list in ["tools", "prompts", "resources"] {
                    if let Some(mut cap) = capabilities.get_object(list) {
                        cap.set_value("listChanged", &true);
                        capabilities.set(list, cap.to_raw());
                    }
                }
                result.set("capabilities", capabilities.to_raw());
                if let Some(server_info) = &info.server_info {
                    result.set("serverInfo", server_info.clone());
                }
                // The identity is pinned whether or not the server gives instructions.
                let trusted = self
                    .inventory
                    .instructions_allowed(&self.upstreams[0].name, &info);
                if let Some(text) = &info.instructions
                    && trusted
                {
                    result.set_value("instructions", &self.inventory.served_instructions(text));
                }
            }
            None => {
                let infos: Vec<_> = self
                    .upstreams
                    .iter()
                    .filter_map(|u| u.connection().ok().map(|c| (u.name.clone(), c.info())))
                    .collect();
                let has = |cap: &str| infos.iter().any(|(_, i)| i.capabilities.contains(cap));
                let subscribe = infos.iter().any(|(_, i)| {
                    i.capabilities
                        .get_object("resources")
                        .and_then(|r| r.get("subscribe").map(|v| v.get() == "true"))
                        .unwrap_or(false)
                });
                let mut caps = RawObject::new();
                caps.set_value("tools", &json!({"listChanged": true}));
                caps.set_value("prompts", &json!({"listChanged": true}));
                caps.set_value(
                    "resources",
                    &json!({"listChanged": true, "subscribe": subscribe}),
                );
                if has("logging") {
                    caps.set_value("logging", &json!({}));
                }
                if has("completions") {
                    caps.set_value("completions", &json!({}));
                }
                result.set("capabilities", caps.to_raw());
                result.set_value(
                    "serverInfo",
                    &json!({"name": "toolgate", "version": env!("CARGO_PKG_VERSION")}),
                );
                let text: Vec<String> = infos
                    .iter()
                    .filter_map(|(name, i)| {
                        let trusted = self.inventory.instructions_allowed(name, i);
                        let t = i.instructions.as_ref()?;
                        trusted.then(|| {
                            format!(
                                "## Server {name}\n{}",
                                self.inventory.served_instructions(t)
                            )
                        })
                    })
                    .collect();
                if !text.is_empty() {
                    result.set_value("instructions", &text.join("\n\n"));
                }
            }
        }
    }

    /// The work of serving one request, for the caller to drive (or spawn), and the reply
    /// channel it feeds: any messages about the request, then its response. A transport that
    /// can wait drives the work in place: most requests are answered without a message
    /// before the response, and then no task hand-off is needed. The work is boxed here, so
    /// that its state (a few KiB) is not moved again on its way to where it runs.
    pub fn request(
        self: &Arc<Self>,
        request: Message,
    ) -> (
        Pin<Box<impl Future<Output = ()> + Send + 'static>>,
        channel::Receiver<Message>,
    ) {
        let (tx, rx) = channel::channel(REPLY_QUEUE);
        let this = self.clone();
        this.active.fetch_add(1, Ordering::Relaxed);
        let work = Box::pin(async move {
            let id = request.id().cloned().expect("a request has an id");
            let reply = this.serve(request, &tx).await;
            if let Some(mut reply) = reply {
                reply.set_id(id);
                let _ = tx.send_last(this.finish_reply(reply));
            }
            this.active.fetch_sub(1, Ordering::Relaxed);
            this.touch();
        });
        (work, rx)
    }

    /// Stateless clients expect `resultType` on every result.
    fn finish_reply(&self, mut reply: Message) -> Message {
        if self.mode == Mode::Stateless
            && let Some(mut result) = reply.result()
            && !result.contains("resultType")
        {
            result.set_value("resultType", "complete");
            reply.set_result(&result);
        }
        reply
    }

    async fn serve(
        self: &Arc<Self>,
        request: Message,
        tx: &channel::Sender<Message>,
    ) -> Option<Message> {
        let id = request.id().cloned();
        let method = request.method().unwrap_or_default().to_owned();
        let params = match request.params() {
            Ok(p) => p,
            Err(e) => return Some(Message::from_wire_error(&e)),
        };
        let error = |code: ErrorCode, message: String| {
            Some(Message::error(id.clone(), code.code(), &message))
        };
        if self.mode == Mode::Stateless
            && let Some(state) = params
                .get_str("requestState")
                .filter(|s| s.starts_with(REQUEST_STATE_PREFIX))
        {
            return self.resume(&state, &request, tx).await;
        }
        match method.as_str() {
            "initialize" => match self.mode {
                Mode::Handshake => error(
                    ErrorCode::InvalidRequest,
                    "the session is already initialized".into(),
                ),
                Mode::Stateless => error(
                    ErrorCode::MethodNotFound,
                    "initialize is not part of 2026-07-28".into(),
                ),
            },
            "ping" => Some(Message::response(id?, raw(&json!({})))),
            "server/discover" => Some(Message::response(id?, self.discover())),
            "tools/list" => Some(self.list(id?, "tools/list", "tools", &params, true).await),
            "prompts/list" => Some(
                self.list(id?, "prompts/list", "prompts", &params, true)
                    .await,
            ),
            "resources/list" => Some(
                self.list(id?, "resources/list", "resources", &params, false)
                    .await,
            ),
            "resources/templates/list" => Some(
                self.list(
                    id?,
                    "resources/templates/list",
                    "resourceTemplates",
                    &params,
                    false,
                )
                .await,
            ),
            "tools/call" => {
                let args = guard::parse_arguments(params.get("arguments"));
                let mut record = self.call_record(id.as_ref(), &params, &args);
                let reply = self
                    .call_tool(request, params, &args, tx, record.get())
                    .await;
                record.finish().await;
                reply
            }
            "prompts/get" => {
                let Some(name) = params.get_str("name") else {
                    return error(
                        ErrorCode::InvalidParams,
                        "params.name must be a string".into(),
                    );
                };
                let unknown = || error(ErrorCode::InvalidParams, format!("Unknown prompt: {name}"));
                let Some((up, original)) = self.route_name("prompts/list", "prompts", &name).await
                else {
                    return unknown();
                };
                if !self.prompt_allowed(&up.name, &original) {
                    return unknown();
                }
                let mut request = request;
                if original != name {
                    let mut params = params;
                    params.set_value("name", &original);
                    request.set_params(&params);
                }
                self.forward(&up, request, tx).await
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let Some(uri) = params.get_str("uri") else {
                    return error(
                        ErrorCode::InvalidParams,
                        "params.uri must be a string".into(),
                    );
                };
                match self.route_uri(&uri).await {
                    Some(up) if self.resource_allowed(&up.name, &uri) => {
                        self.forward(&up, request, tx).await
                    }
                    _ => error(
                        ErrorCode::ResourceNotFound,
                        format!("Resource not found: {uri}"),
                    ),
                }
            }
            "completion/complete" => {
                let reference = params.get_object("ref").unwrap_or_default();
                let target = match reference.get_str("type").as_deref() {
                    Some("ref/prompt") => {
                        let name = reference.get_str("name").unwrap_or_default();
                        match self
                            .route_name("prompts/list", "prompts", &name)
                            .await
                            .filter(|(up, original)| self.prompt_allowed(&up.name, original))
                        {
                            Some((up, original)) if original != name => {
                                let mut reference = reference;
                                reference.set_value("name", &original);
                                let mut params = params;
                                params.set("ref", reference.to_raw());
                                let mut request = request.clone();
                                request.set_params(&params);
                                return self.forward(&up, request, tx).await;
                            }
                            Some((up, _)) => Some(up),
                            None => None,
                        }
                    }
                    Some("ref/resource") => {
                        let uri = reference.get_str("uri").unwrap_or_default();
                        self.route_uri(&uri)
                            .await
                            .filter(|up| self.resource_allowed(&up.name, &uri))
                    }
                    _ => None,
                };
                match target {
                    Some(up) => self.forward(&up, request, tx).await,
                    None => error(
                        ErrorCode::InvalidParams,
                        "completion/complete: unknown prompt or resource".into(),
                    ),
                }
            }
            "logging/setLevel" => {
                for up in &self.upstreams {
                    if let Ok(conn) = up.connection()
                        && conn.info().capabilities.contains("logging")
                        && let Ok(ex) = conn.start(request.clone(), self.key, false)
                    {
                        let _ = conn.finish(ex, conn.config.request_timeout).await;
                    }
                }
                Some(Message::response(id?, raw(&json!({}))))
            }
            _ if self.single() => self.forward(&self.upstreams[0].clone(), request, tx).await,
            _ => error(
                ErrorCode::MethodNotFound,
                format!("Method not found: {method}"),
            ),
        }
    }

    /// Whether a tool may not be called whatever the policy says: `Some(None)` to answer as
    /// for an unknown tool (the policy hides it), `Some(Some(refusal))` when it is
    /// quarantined, or unlisted under strict pinning. Checked before the policy so that no
    /// counter is taken and no human is asked about a call that cannot go through.
    fn unusable(
        &self,
        server: &str,
        name: &str,
        exposed: &str,
        tool: Option<&IndexedTool>,
    ) -> Option<Option<Refusal>> {
        let policy = self.guard.policy(&self.grant)?;
        let refusal = |message: String| Refusal {
            decision: "quarantined",
            rule: "(quarantine)".into(),
            message,
            policy_version: policy.version.clone(),
        };
        match tool {
            Some(tool) => {
                if !policy.visible(&target(server, tool, exposed)) {
                    return Some(None);
                }
                let q = self.inventory.quarantine(server, tool)?;
                Some(Some(refusal(q.reason)))
            }
            None if self.config.catalog.pinning == Pinning::Strict => Some(Some(refusal(format!(
                "tool {name:?} is not in server {server:?}'s tool list; under strict pinning only listed, approved tools may be called"
            )))),
            None => None,
        }
    }

    /// A `tools/call`: route, quarantine, policy, counters and approval, then the upstream.
    /// Fills in `record` (its audit record) as it goes.
    async fn call_tool(
        self: &Arc<Self>,
        request: Message,
        params: RawObject,
        args: &Value,
        tx: &channel::Sender<Message>,
        record: &mut AuditRecord,
    ) -> Option<Message> {
        let id = request.id().cloned();
        // From here until it is forwarded the client may cancel the call
        // (`notifications/cancelled`): then nothing reaches the upstream and no answer is sent.
        let cancellable = Cancellable::new(self, id.as_ref());
        let error = |code: ErrorCode, message: String| {
            Some(Message::error(id.clone(), code.code(), &message))
        };
        let Some(name) = params.get_str("name") else {
            record.decision = "invalid".into();
            return error(
                ErrorCode::InvalidParams,
                "params.name must be a string".into(),
            );
        };
        record.tool = Some(name.clone());
        let unknown = |record: &mut AuditRecord| {
            record.decision = "hidden".into();
            error(ErrorCode::InvalidParams, format!("Unknown tool: {name}"))
        };
        let Some((up, original)) = self.route_name("tools/list", "tools", &name).await else {
            return unknown(record);
        };
        record.server = Some(up.name.to_string());
        record.tool = Some(original.clone());
        let exposed = names::exposed(&up.name, &original);
        let tool = match self.tool_index(&up).await {
            Ok(index) => index.get(&original).cloned(),
            Err(_) => None,
        };
        let refused = |record: &mut AuditRecord, refusal: &Refusal| {
            record.decision = refusal.decision.into();
            record.rule = Some(refusal.rule.clone());
            record.message = Some(refusal.message.clone());
            record.policy_version = Some(refusal.policy_version.clone());
            record.is_error = Some(true);
            id.clone().map(|id| Message::response(id, refusal.result()))
        };
        if let Some(refusal) = self.unusable(&up.name, &original, &exposed, tool.as_deref()) {
            let Some(refusal) = refusal else {
                return unknown(record);
            };
            tracing::warn!(grant = %self.grant.name, server = %up.name, tool = %original, decision = refusal.decision, "call refused: {}", refusal.message);
            return refused(record, &refusal);
        }
        // While a human decides, a client that asked for progress hears why it waits (and
        // its stream stays alive).
        let progress = request.progress_token();
        let hold_tx = tx.clone();
        let on_hold = |approval: &str| {
            cancellable.held.store(true, Ordering::Relaxed);
            if let Some(token) = &progress {
                let params = json!({"progressToken": token, "progress": 0,
                    "message": format!("waiting for a human's approval ({approval})")});
                let _ = hold_tx.try_send(Message::notification(
                    "notifications/progress",
                    Some(&raw(&params)),
                ));
            }
        };
        let asker = self.clone();
        let ask_tx = tx.clone();
        let ask_client = move |approval: toolgate_state::Approval,
                               how: toolgate_policy::AskClient|
              -> toolgate_state::BoxFuture<
            'static,
            Option<(bool, Option<String>)>,
        > {
            let asker = asker.clone();
            let tx = ask_tx.clone();
            Box::pin(async move { asker.ask_client_approval(&tx, &approval, how).await })
        };
        let client_input = match self.mode {
            Mode::Handshake => None,
            Mode::Stateless => match params
                .get_str("requestState")
                .filter(|s| s.starts_with(guard::APPROVAL_STATE_PREFIX))
            {
                Some(state) => {
                    let Some(approval) = self.guard.approval_in_state(&self.grant.name, &state)
                    else {
                        record.decision = "invalid".into();
                        return error(
                            ErrorCode::InvalidParams,
                            "unknown or expired requestState".into(),
                        );
                    };
                    let answer = params
                        .get_object("inputResponses")
                        .and_then(|r| r.get_object("approval"))
                        .and_then(|r| approval_answer(&r));
                    Some(ClientInput::Answer { approval, answer })
                }
                None if request_capabilities(&request).contains("elicitation") => {
                    Some(ClientInput::CanAsk)
                }
                None => None,
            },
        };
        // The answer to our approval question is for the gateway, not the upstream.
        let answered = matches!(client_input, Some(ClientInput::Answer { .. }));
        let call = CallInfo {
            grant: &self.grant,
            session: &self.id,
            server: &up.name,
            tool: &original,
            exposed: &exposed,
            categories: tool.as_ref().map_or(&[], |t| &t.categories[..]),
            severity: tool.as_ref().map(|t| t.class.severity.as_str()),
            arguments: params.get("arguments"),
            args,
            on_hold: Some(&on_hold),
            ask_client: Some(&ask_client),
            client_input,
        };
        let admission = tokio::select! {
            biased;
            admission = self.guard.admit(&call) => Some(admission),
            () = self.cancelled_before_forwarding(id.as_ref()) => None,
        };
        let (cancelled, held) = (
            cancellable.cancelled(),
            cancellable.held.load(Ordering::Relaxed),
        );
        // Nothing is awaited from here until the call is registered as in flight upstream
        // (`drive`), where a cancellation is relayed: on the runtime's one thread (the
        // default) no cancellation is handled in between.
        drop(cancellable);
        let admission = match admission {
            Some(admission) if !cancelled => admission,
            admission => {
                // No answer is owed for a cancelled request, and the call never reached the
                // upstream: a pass gives its counters back. A held call's approval stays in
                // the queue: a retry of the same call may use it.
                if let Some(Admission::Pass(pass)) = admission {
                    pass.settle(guard::Outcome::Failed).await;
                }
                record.message = Some(
                    match held {
                        true => "the client cancelled the call while it was held",
                        false => "the client cancelled the call before it was forwarded",
                    }
                    .into(),
                );
                return None;
            }
        };
        let pass = match admission {
            Admission::Pass(p) => p,
            Admission::Unknown => return unknown(record),
            Admission::Invalid(why) => {
                record.decision = "invalid".into();
                record.message = Some(why.into());
                return error(ErrorCode::InvalidParams, why.into());
            }
            Admission::AskClient {
                approval,
                request_state,
            } => {
                record.decision = "input_required".into();
                record.message = Some(format!(
                    "the client's user was asked to approve (approval {})",
                    approval.id
                ));
                let mut question = RawObject::new();
                question.set_value("method", "elicitation/create");
                question.set("params", raw(&approval_question(&approval)));
                let mut requests = RawObject::new();
                requests.set("approval", question.to_raw());
                let mut result = RawObject::new();
                result.set_value("resultType", "input_required");
                result.set("inputRequests", requests.to_raw());
                result.set_value("requestState", &request_state);
                return id.clone().map(|id| Message::response(id, result.to_raw()));
            }
            Admission::Refuse(refusal) => {
                tracing::info!(grant = %self.grant.name, server = %up.name, tool = %original, decision = refusal.decision, rule = %refusal.rule, "call refused");
                self.metrics
                    .record_call(&up.name, &original, Duration::ZERO, true);
                return refused(record, &refusal);
            }
        };
        record.decision = if pass.approved {
            "approval_granted"
        } else {
            "allowed"
        }
        .into();
        record.rule = Some(pass.decision.rule.clone());
        record.policy_version = Some(pass.policy_version.clone());
        let mut request = request;
        if original != name || answered {
            let mut params = params;
            params.set_value("name", &original);
            if answered {
                params.remove("requestState");
                params.remove("inputResponses");
            }
            request.set_params(&params);
        }
        let started = Instant::now();
        let reply = self.forward(&up, request, tx).await;
        let failed = reply
            .as_ref()
            .is_none_or(|r| r.is_error() || result_is_error(r));
        self.metrics
            .record_call(&up.name, &original, started.elapsed(), failed);
        // No reply (the client cancelled the call or went away) keeps the counters: the
        // upstream has the call and may act on it.
        let settle = match &reply {
            Some(r) if r.is_error() || is_gateway_failure(r) => guard::Outcome::Failed,
            _ => guard::Outcome::Answered,
        };
        pass.settle(settle).await;
        record.upstream_status = Some(match &reply {
            None => "no answer".into(),
            Some(r) if r.is_error() => format!(
                "error {}",
                r.error_raw()
                    .and_then(|e| RawObject::from_raw(e).ok())
                    .and_then(|e| e.get("code").map(|c| c.get().to_owned()))
                    .unwrap_or_default()
            ),
            Some(r) if is_gateway_failure(r) => "unavailable".into(),
            Some(_) => "result".into(),
        });
        if settle == guard::Outcome::Failed {
            record.decision = "upstream_error".into();
        }
        record.is_error = reply.as_ref().map(result_is_error);
        reply
    }

    /// Asks the client's user to approve a held call (MCP elicitation), when the client
    /// speaks the handshake protocol and declared elicitation: a yes/no form, or (the policy's
    /// `ask_client: "url"`, or a client with URL mode only) a link to the web UI's page for
    /// this approval, where the decision is made outside the client. `None` when it cannot be
    /// asked, the user dismissed the question, or the answer comes through the page.
    async fn ask_client_approval(
        &self,
        tx: &channel::Sender<Message>,
        approval: &toolgate_state::Approval,
        how: toolgate_policy::AskClient,
    ) -> Option<(bool, Option<String>)> {
        if self.mode != Mode::Handshake {
            return None;
        }
        let modes = self.client_capabilities.get_object("elicitation")?;
        // `elicitation: {}` is the form mode of clients older than URL mode.
        let form = modes.is_empty() || modes.contains("form");
        let link = match (how, form, modes.contains("url")) {
            (toolgate_policy::AskClient::Url, _, true) | (_, false, true) => {
                self.guard.approval_link(&approval.id)
            }
            _ => None,
        };
        if link.is_none() && !form {
            return None;
        }
        let id = Id::number(self.next_server_request.fetch_add(1, Ordering::Relaxed));
        let (answer_tx, answer) = oneshot::channel();
        self.own_requests
            .lock()
            .unwrap()
            .insert(id.clone(), answer_tx);
        let params = match &link {
            Some(url) => approval_link_question(approval, url),
            None => approval_question(approval),
        };
        let request = Message::request(id.clone(), "elicitation/create", Some(&raw(&params)));
        // Decided elsewhere first (the question is dropped): forget it and tell the client.
        let question = OwnRequest {
            pending: &self.own_requests,
            id,
            tx,
        };
        if tx.send(request).await.is_err() {
            return None;
        }
        let response = answer.await.ok()?;
        drop(question);
        let result = response.result()?;
        if link.is_none() {
            return approval_answer(&result);
        }
        match result.get_str("action").as_deref() {
            Some("accept") => {
                // The user went to the page; the decision arrives through the store, and this
                // future is dropped then: tell the client the interaction is over.
                let _done = ElicitationDone {
                    id: approval.id.clone(),
                    tx,
                };
                std::future::pending().await
            }
            Some("decline") => Some((
                false,
                Some("the user declined to open the approval page".into()),
            )),
            _ => None,
        }
    }

    /// A call's audit record, started before anything is decided: if the work is dropped
    /// (the client went away), it is still written with what was known.
    fn call_record(&self, id: Option<&Id>, params: &RawObject, parsed: &Value) -> PendingRecord {
        let policy = self.guard.policy(&self.grant);
        let (arg_keys, args_sha256, args) = crate::audit::describe_args(
            params.get("arguments"),
            parsed,
            policy.as_deref().map(|p| p.audit()),
        );
        PendingRecord::new(
            self.audit.clone(),
            AuditRecord {
                at_ms: guard::now_ms(),
                kind: "call".into(),
                decision: "cancelled".into(),
                request_id: id.map(|i| i.to_string()),
                grant: Some(self.grant.name.to_string()),
                session: Some(self.id.clone()),
                method: Some("tools/call".into()),
                policy_version: policy.map(|p| p.version.clone()),
                arg_keys,
                args_sha256,
                args,
                ..AuditRecord::default()
            },
        )
    }

    /// The 2026-07-28 `server/discover` result.
    fn discover(&self) -> Box<RawValue> {
        let mut result = RawObject::new();
        let mut versions = vec![STATELESS_VERSION];
        versions.extend_from_slice(HANDSHAKE_VERSIONS);
        result.set_value("supportedVersions", &versions);
        self.describe(&mut result);
        if let Some(info) = result.remove("serverInfo") {
            let mut meta = RawObject::new();
            meta.set("io.modelcontextprotocol/serverInfo", info);
            result.set("_meta", meta.to_raw());
        }
        result.set_value("ttlMs", &0);
        result.set_value("cacheScope", "private");
        result.to_raw()
    }

    /// Aggregates a list over every live upstream, renames tools and prompts when several
    /// servers are seen, and pages the result with the gateway's own cursors.
    async fn list(
        &self,
        id: Id,
        method: &'static str,
        field: &str,
        params: &RawObject,
        named: bool,
    ) -> Message {
        let offset = match params.get_str("cursor") {
            None => 0,
            Some(cursor) => match parse_cursor(&cursor) {
                Some(offset) => offset,
                None => {
                    return Message::error(
                        Some(id),
                        ErrorCode::InvalidParams.code(),
                        "Invalid cursor",
                    );
                }
            },
        };
        if method == "tools/list" {
            return self.list_tools(id, offset).await;
        }
        let fetches = self.upstreams.iter().map(|up| async move {
            let conn = up.connection().ok()?;
            match conn.list(method, field).await {
                Ok(items) => Some((up.clone(), items)),
                Err(e) => {
                    tracing::warn!(server = %up.name, error = %e, "{method} failed; its items are left out");
                    None
                }
            }
        });
        let lists = futures_util::future::join_all(fetches).await;
        let mut items: Vec<Box<RawValue>> = Vec::new();
        let Some(policy) = self.guard.policy(&self.grant) else {
            // A grant without a policy sees nothing.
            return self.page(id, field, &items, offset);
        };
        let rename = named && !self.single();
        for (up, list) in lists.into_iter().flatten() {
            for item in list.iter() {
                let Ok(mut obj) = RawObject::from_raw(item) else {
                    continue;
                };
                let key = if named {
                    "name"
                } else if field == "resources" {
                    "uri"
                } else {
                    "uriTemplate"
                };
                let Some(name) = obj.get_str(key) else {
                    continue;
                };
                // Policies match the aggregated name whichever endpoint the client uses
                // (`/mcp` or `/mcp/{server}`), so that no endpoint escapes a rule.
                let aggregated = if named {
                    names::exposed(&up.name, &name)
                } else {
                    String::new()
                };
                let visible = match field {
                    "prompts" => policy.prompt_allowed(&up.name, &name, &aggregated),
                    _ => policy.resource_allowed(&up.name, &name),
                };
                if !visible {
                    continue;
                }
                if rename {
                    obj.set_value("name", &aggregated);
                    items.push(obj.to_raw());
                } else {
                    items.push(item.clone());
                }
            }
        }
        self.page(id, field, &items, offset)
    }

    /// `tools/list`: every live upstream's tools that are neither quarantined nor hidden by
    /// the grant's policy (which sees each tool's class), renamed when several servers are seen.
    async fn list_tools(&self, id: Id, offset: usize) -> Message {
        let fetches = self.upstreams.iter().map(|up| async move {
            match self.tool_index(up).await {
                Ok(index) => Some((up.clone(), index)),
                Err(e) => {
                    tracing::warn!(server = %up.name, error = %e, "tools/list failed; its tools are left out");
                    None
                }
            }
        });
        let indexes = futures_util::future::join_all(fetches).await;
        let mut items: Vec<Box<RawValue>> = Vec::new();
        let Some(policy) = self.guard.policy(&self.grant) else {
            return self.page(id, "tools", &items, offset);
        };
        let rename = !self.single();
        for (up, index) in indexes.into_iter().flatten() {
            for tool in &index.tools {
                let exposed = names::exposed(&up.name, &tool.name);
                if !policy.visible(&target(&up.name, tool, &exposed))
                    || self.inventory.quarantine(&up.name, tool).is_some()
                {
                    continue;
                }
                if rename {
                    match RawObject::from_raw(&tool.raw) {
                        Ok(mut obj) => {
                            obj.set_value("name", &exposed);
                            items.push(obj.to_raw());
                        }
                        Err(_) => continue,
                    }
                } else {
                    items.push(tool.raw.clone());
                }
            }
        }
        self.page(id, "tools", &items, offset)
    }

    /// The index of an upstream's tools on its current connection: built when the list was
    /// fetched, fetched again once older than `relist_interval` (some servers never say their
    /// list changed). A newly quarantined tool makes the upstream's sessions list again.
    async fn tool_index(&self, up: &Arc<Upstream>) -> Result<Arc<ToolIndex>, UpstreamError> {
        let conn = up.connection()?;
        let current = conn.tool_index();
        if current
            .as_ref()
            .is_some_and(|i| i.built.elapsed() >= self.config.catalog.relist_interval)
        {
            conn.expire_list("tools/list");
        }
        let items = conn.list("tools/list", "tools").await?;
        if let Some(index) = current.filter(|i| {
            Arc::ptr_eq(&i.source, &items) && i.names_version == self.inventory.names_version()
        }) {
            return Ok(index);
        }
        // The shadowing checks compare with the other servers' tool names: learn them first.
        for other in self.upstreams.iter().filter(|o| o.name != up.name) {
            if !self.inventory.knows(&other.name)
                && let Ok(c) = other.connection()
                && let Ok(other_items) = c.list("tools/list", "tools").await
            {
                self.inventory.note_names(&other.name, &other_items);
            }
        }
        let (index, quarantined) = self.inventory.index(&up.name, &conn.info(), &items).await;
        conn.set_tool_index(index.clone());
        if quarantined {
            up.announce_lists_changed();
        }
        Ok(index)
    }

    /// One page of an aggregated list, with the gateway's own cursor.
    fn page(&self, id: Id, field: &str, items: &[Box<RawValue>], offset: usize) -> Message {
        let page = self.config.limits.page_size;
        let mut result = RawObject::new();
        let end = (offset + page).min(items.len());
        let slice = items.get(offset.min(items.len())..end).unwrap_or_default();
        result.set_value(field, slice);
        if end < items.len() {
            result.set_value("nextCursor", &format!("tg1.{end}"));
        }
        if self.mode == Mode::Stateless {
            result.set_value("ttlMs", &0);
            result.set_value("cacheScope", "private");
        }
        Message::response(id, result.to_raw())
    }

    /// Whether the grant's policy serves this resource (or resource template) URI.
    fn resource_allowed(&self, server: &str, uri: &str) -> bool {
        self.guard
            .policy(&self.grant)
            .is_some_and(|p| p.resource_allowed(server, uri))
    }

    /// Whether the grant's policy serves this prompt.
    fn prompt_allowed(&self, server: &str, name: &str) -> bool {
        self.guard
            .policy(&self.grant)
            .is_some_and(|p| p.prompt_allowed(server, name, &names::exposed(server, name)))
    }

    /// Finds the upstream and original name behind an exposed tool or prompt name.
    async fn route_name(
        &self,
        list: &'static str,
        field: &str,
        exposed: &str,
    ) -> Option<(Arc<Upstream>, String)> {
        if self.single() {
            return Some((self.upstreams[0].clone(), exposed.to_owned()));
        }
        for up in &self.upstreams {
            let Some(rest) = exposed
                .strip_prefix(&*up.name)
                .and_then(|r| r.strip_prefix(names::SEPARATOR))
            else {
                continue;
            };
            if names::exposed(&up.name, rest) == exposed {
                return Some((up.clone(), rest.to_owned()));
            }
            // A shortened name: find the tool it stands for. While the server is down its list
            // is unknown; route there anyway so the caller hears that it is down.
            let Ok(conn) = up.connection() else {
                return Some((up.clone(), rest.to_owned()));
            };
            let items = conn.list(list, field).await.ok()?;
            for item in items.iter() {
                let name = RawObject::from_raw(item)
                    .ok()
                    .and_then(|o| o.get_str("name"));
                if let Some(name) = name.filter(|n| names::exposed(&up.name, n) == exposed) {
                    return Some((up.clone(), name));
                }
            }
        }
        None
    }

    /// Finds the upstream serving a resource URI: the one that listed it, else the one whose
    /// template's fixed prefix matches, else the only one.
    async fn route_uri(&self, uri: &str) -> Option<Arc<Upstream>> {
        if self.single() {
            return Some(self.upstreams[0].clone());
        }
        let mut by_template = None;
        for up in &self.upstreams {
            let Ok(conn) = up.connection() else { continue };
            if let Ok(items) = conn.list("resources/list", "resources").await
                && items.iter().any(|i| {
                    RawObject::from_raw(i)
                        .ok()
                        .and_then(|o| o.get_str("uri"))
                        .as_deref()
                        == Some(uri)
                })
            {
                return Some(up.clone());
            }
            if by_template.is_none()
                && let Ok(items) = conn
                    .list("resources/templates/list", "resourceTemplates")
                    .await
                && items.iter().any(|i| {
                    let template = RawObject::from_raw(i)
                        .ok()
                        .and_then(|o| o.get_str("uriTemplate"))
                        .unwrap_or_default();
                    let prefix = template.split('{').next().unwrap_or_default();
                    !prefix.is_empty() && uri.starts_with(prefix)
                })
            {
                by_template = Some(up.clone());
            }
        }
        by_template
    }

    /// Relays one request to an upstream and everything the upstream says about it back.
    async fn forward(
        self: &Arc<Self>,
        up: &Arc<Upstream>,
        mut request: Message,
        tx: &channel::Sender<Message>,
    ) -> Option<Message> {
        let client_id = request.id().cloned()?;
        let is_call = request.method() == Some("tools/call");
        let conn = match up.connection() {
            Ok(c) => c,
            Err(e) => return Some(upstream_failure(client_id, is_call, &e)),
        };
        let client_token = request.progress_token();
        let mut capabilities = RawObject::new();
        let mut log_level = Some(0);
        if self.mode == Mode::Stateless {
            capabilities = request_capabilities(&request);
            log_level = request_log_level(&request);
            strip_modern_meta(&mut request);
        }
        let exchange = match conn.start(request, self.key, client_token.is_some()) {
            Ok(ex) => ex,
            Err(e) => return Some(upstream_failure(client_id, is_call, &e)),
        };
        let flight = Flight {
            deadline: tokio::time::Instant::now() + conn.config.request_timeout,
            conn,
            upstream_id: exchange.id,
            answers: exchange.answers,
            io: exchange.io,
            client_token,
            capabilities,
            log_level,
            is_call,
            asked: Vec::new(),
        };
        self.drive(flight, client_id, tx).await
    }

    /// Follows a request in flight until its response, relaying what the upstream says about
    /// it. A stateless client cannot be sent a request, so when the upstream asks for input
    /// the flight is parked and the client gets an `input_required` result; its retry with
    /// `inputResponses` and the `requestState` resumes the flight (see [`Session::resume`]).
    async fn drive(
        self: &Arc<Self>,
        mut flight: Flight,
        client_id: Id,
        tx: &channel::Sender<Message>,
    ) -> Option<Message> {
        self.inflight
            .lock()
            .unwrap()
            .insert(client_id.clone(), (flight.conn.clone(), flight.upstream_id));
        // If the transport drops this future (the client went away), the upstream is told.
        let mut abandoned = Abandoned {
            conn: Some(flight.conn.clone()),
            upstream_id: flight.upstream_id,
            session: self.clone(),
            client_id: client_id.clone(),
        };
        let token = flight.client_token.clone();
        let outcome = loop {
            tokio::select! {
                biased;
                answer = flight.answers.recv() => match answer {
                    Some(Answer::Event(event)) => {
                        if event.method() == Some("notifications/message") && !flight.wants_log(&event) {
                            continue;
                        }
                        if self.mode == Mode::Stateless && event.kind() == Kind::Request {
                            if let Some(input) = self.ask_client(&mut flight, event) {
                                break Outcome::NeedsInput(input);
                            }
                            continue;
                        }
                        self.relay(&flight.conn, event, token.as_deref(), tx).await
                    }
                    Some(Answer::Response(r)) => break Outcome::Done(Some(r)),
                    // Forgotten (cancelled) without a response.
                    None => break Outcome::Done(None),
                },
                () = poll_io(&mut flight.io) => flight.io = None,
                // A 2026-07-28 client cancels by going away (`abandoned` tells the upstream).
                _ = tx.closed(), if self.mode == Mode::Stateless => return None,
                _ = tokio::time::sleep_until(flight.deadline) => {
                    flight.conn.cancel(flight.upstream_id, "timed out in the gateway");
                    let after = flight.conn.config.request_timeout;
                    break Outcome::Done(Some(Err(UpstreamError::Timeout { server: flight.conn.server.clone(), after })));
                }
            }
        };
        abandoned.conn = None;
        let cancelled = self.inflight.lock().unwrap().remove(&client_id).is_none();
        let outcome = match outcome {
            Outcome::NeedsInput(input) => return Some(self.park(flight, client_id, input)),
            Outcome::Done(outcome) => outcome,
        };
        // Messages that came before a deadline ran out.
        while let Some(Answer::Event(event)) = flight.answers.try_recv() {
            self.relay(&flight.conn, event, token.as_deref(), tx).await;
        }
        match outcome {
            Some(Ok(response)) => Some(response),
            Some(Err(e)) => Some(upstream_failure(client_id, flight.is_call, &e)),
            // The client cancelled it: no answer is owed (MCP: a cancelled request is not
            // answered), as for a call cancelled while held.
            None if cancelled => None,
            None => Some(Message::error(
                Some(client_id),
                ErrorCode::Internal.code(),
                "the upstream connection dropped",
            )),
        }
    }

    /// Turns a server-to-client request into an input request for a stateless client, or
    /// refuses it (answered to the upstream) and returns `None`.
    fn ask_client(&self, flight: &mut Flight, request: Message) -> Option<(String, Box<RawValue>)> {
        let upstream_id = request.id().cloned()?;
        let method = request.method().unwrap_or_default();
        if let Some(reason) = refusal(method, &flight.conn, &flight.capabilities) {
            flight.conn.refuse(upstream_id, reason);
            return None;
        }
        let key = format!(
            "r{}",
            self.next_server_request.fetch_add(1, Ordering::Relaxed)
        );
        let mut input = RawObject::new();
        input.set_value("method", method);
        if let Some(params) = request.params_raw() {
            input.set("params", params.to_owned());
        }
        flight.asked.push((key.clone(), upstream_id));
        Some((key, input.to_raw()))
    }

    /// Parks a flight that waits for the client's input and answers with `input_required`.
    fn park(
        self: &Arc<Self>,
        mut flight: Flight,
        client_id: Id,
        (key, input): (String, Box<RawValue>),
    ) -> Message {
        let mut bytes = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let state = format!("{REQUEST_STATE_PREFIX}{}", crate::to_hex(&bytes));
        let deadline = flight.deadline;
        // Nobody polls a parked flight: its transport work goes on by itself.
        if let Some(io) = flight.io.take() {
            tokio::spawn(io);
        }
        self.parked.lock().unwrap().insert(state.clone(), flight);
        // A client that never comes back must not hold the upstream request forever.
        let this = Arc::downgrade(self);
        let expiring = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            let flight = this
                .upgrade()
                .and_then(|s| s.parked.lock().unwrap().remove(&expiring));
            if let Some(flight) = flight {
                flight.conn.cancel(
                    flight.upstream_id,
                    "the client did not provide the requested input in time",
                );
            }
        });
        let mut requests = RawObject::new();
        requests.set(&key, input);
        let mut result = RawObject::new();
        result.set_value("resultType", "input_required");
        result.set("inputRequests", requests.to_raw());
        result.set_value("requestState", &state);
        Message::response(client_id, result.to_raw())
    }

    /// A stateless client's retry carrying `inputResponses` for a parked flight: the answers go
    /// to the upstream's pending requests and the flight goes on.
    async fn resume(
        self: &Arc<Self>,
        state: &str,
        request: &Message,
        tx: &channel::Sender<Message>,
    ) -> Option<Message> {
        let client_id = request.id().cloned()?;
        let Some(mut flight) = self.parked.lock().unwrap().remove(state) else {
            return Some(Message::error(
                Some(client_id),
                ErrorCode::InvalidParams.code(),
                "unknown or expired requestState",
            ));
        };
        let responses = request
            .params()
            .ok()
            .and_then(|p| p.get_object("inputResponses"))
            .unwrap_or_default();
        for (key, upstream_id) in flight.asked.drain(..) {
            match responses.get(&key) {
                Some(result) => flight
                    .conn
                    .send(Message::response(upstream_id, result.to_owned())),
                None => flight.conn.send(Message::error(
                    Some(upstream_id),
                    ErrorCode::InvalidRequest.code(),
                    "the client gave no response to this request",
                )),
            }
        }
        flight.client_token = request.progress_token();
        self.drive(flight, client_id, tx).await
    }

    /// Passes one message an upstream sent about a request to the client, mapping progress
    /// tokens and server-request ids into the client's space.
    async fn relay(
        &self,
        conn: &Arc<Connection>,
        mut event: Message,
        client_token: Option<&RawValue>,
        tx: &channel::Sender<Message>,
    ) {
        match event.kind() {
            Kind::Notification if event.method() == Some("notifications/progress") => {
                let Some(token) = client_token else { return };
                let Ok(mut params) = event.params() else {
                    return;
                };
                params.set("progressToken", token.to_owned());
                event.set_params(&params);
                let _ = tx.try_send(event);
            }
            Kind::Request => {
                if let Some(event) = self.admit_server_request(conn, event) {
                    let _ = tx.send(event).await;
                }
            }
            _ => {
                if let Some(event) = self.map_server_cancel(event) {
                    let _ = tx.try_send(event);
                }
            }
        }
    }

    /// Checks a server-to-client request against what the client declared and the operator
    /// allowed, and gives it an id in the client's space. Refused requests are answered here.
    fn admit_server_request(
        &self,
        conn: &Arc<Connection>,
        mut request: Message,
    ) -> Option<Message> {
        let upstream_id = request.id().cloned()?;
        let method = request.method().unwrap_or_default();
        let refusal = match self.mode {
            Mode::Stateless => {
                Some("the client uses 2026-07-28 and cannot receive server requests")
            }
            Mode::Handshake => refusal(method, conn, &self.client_capabilities),
        };
        if let Some(reason) = refusal {
            conn.refuse(upstream_id, reason);
            return None;
        }
        let client_id = Id::number(self.next_server_request.fetch_add(1, Ordering::Relaxed));
        self.server_requests
            .lock()
            .unwrap()
            .insert(client_id.clone(), (conn.clone(), upstream_id));
        request.set_id(client_id);
        Some(request)
    }

    /// A server cancelling its own server-to-client request names it by its id: map it.
    fn map_server_cancel(&self, mut event: Message) -> Option<Message> {
        if event.method() != Some("notifications/cancelled") {
            return Some(event);
        }
        let mut params = event.params().ok()?;
        let upstream_id = params.get("requestId")?.get().to_owned();
        let requests = self.server_requests.lock().unwrap();
        let client_id = requests
            .iter()
            .find(|(_, (_, u))| u.as_str() == upstream_id)
            .map(|(c, _)| c.clone())?;
        params.set("requestId", client_id.as_raw().to_owned());
        event.set_params(&params);
        Some(event)
    }

    /// A client's answer to a server-to-client request: back to the upstream that asked.
    pub fn handle_response(&self, mut response: Message) {
        let Some(id) = response.id().cloned() else {
            return;
        };
        if let Some(waiter) = self.own_requests.lock().unwrap().remove(&id) {
            let _ = waiter.send(response);
            return;
        }
        let Some((conn, upstream_id)) = self.server_requests.lock().unwrap().remove(&id) else {
            tracing::debug!(session = %self.id, %id, "response to an unknown server request; dropped");
            return;
        };
        response.set_id(upstream_id);
        conn.send(response);
    }

    /// Cancels a request of this client in flight, as `notifications/cancelled` would.
    pub fn cancel_request(&self, id: &Id, reason: &str) {
        if let Some(cancelled) = self.unforwarded.lock().unwrap().get_mut(id) {
            *cancelled = true;
            self.unforwarded_cancelled.notify_waiters();
            return;
        }
        let Some((conn, upstream_id)) = self.inflight.lock().unwrap().remove(id) else {
            return;
        };
        conn.cancel(upstream_id, reason);
    }

    /// Resolves once the client cancels call `id` before it is forwarded (never for a call
    /// that has no id).
    async fn cancelled_before_forwarding(&self, id: Option<&Id>) {
        let Some(id) = id else {
            return std::future::pending().await;
        };
        loop {
            let cancelled = self.unforwarded_cancelled.notified();
            tokio::pin!(cancelled);
            cancelled.as_mut().enable();
            if self.unforwarded.lock().unwrap().get(id) == Some(&true) {
                return;
            }
            cancelled.await;
        }
    }

    /// A client notification.
    pub fn handle_notification(&self, notification: Message) {
        match notification.method().unwrap_or_default() {
            "notifications/initialized" => {}
            "notifications/cancelled" => {
                let Ok(params) = notification.params() else {
                    return;
                };
                if let Some(id) = params.get("requestId").and_then(Id::from_raw) {
                    self.cancel_request(&id, &params.get_str("reason").unwrap_or_default());
                }
            }
            "notifications/roots/list_changed" => {
                for up in self.upstreams.iter().filter(|u| u.config.allow_roots) {
                    if let Ok(conn) = up.connection() {
                        conn.send(notification.clone());
                    }
                }
            }
            _ if self.single() => {
                if let Ok(conn) = self.upstreams[0].connection() {
                    conn.send(notification);
                }
            }
            other => tracing::debug!(session = %self.id, method = other, "notification dropped"),
        }
    }

    fn push_outbound(&self, message: Message) {
        if self.outbound.try_send(message).is_err() {
            tracing::debug!(session = %self.id, "client's standalone stream is full; message dropped");
        }
    }
}

impl Subscriber for Session {
    fn unsolicited(&self, _upstream: &Arc<Upstream>, message: Message) {
        if self.mode == Mode::Stateless {
            return;
        }
        match message.kind() {
            Kind::Request => {
                let Some(conn) = _upstream.connection().ok() else {
                    return;
                };
                if let Some(request) = self.admit_server_request(&conn, message) {
                    self.push_outbound(request);
                }
            }
            _ => {
                if let Some(message) = self.map_server_cancel(message) {
                    self.push_outbound(message);
                }
            }
        }
    }

    fn health_changed(&self, _upstream: &Arc<Upstream>) {
        self.lists_changed();
    }
}

impl Session {
    /// Tells the client that its tool, prompt and resource lists may have changed (an upstream
    /// came or went, or its grant's policy was reloaded). Stateless clients have no stream to
    /// tell; their lists carry a TTL instead.
    pub fn lists_changed(&self) {
        if self.mode == Mode::Stateless {
            return;
        }
        for method in [
            "notifications/tools/list_changed",
            "notifications/prompts/list_changed",
            "notifications/resources/list_changed",
        ] {
            self.push_outbound(Message::notification(method, None));
        }
    }
}

/// A question the gateway asked the client, forgotten (and cancelled towards the client)
/// unless answered.
struct OwnRequest<'a> {
    pending: &'a Mutex<HashMap<Id, oneshot::Sender<Message>>>,
    id: Id,
    tx: &'a channel::Sender<Message>,
}

impl Drop for OwnRequest<'_> {
    fn drop(&mut self) {
        // Answered: the response took it out of the table already.
        if self.pending.lock().unwrap().remove(&self.id).is_some() {
            let mut params = RawObject::new();
            params.set("requestId", self.id.as_raw().to_owned());
            params.set_value("reason", "decided by another approver");
            let _ = self.tx.try_send(Message::notification(
                "notifications/cancelled",
                Some(&params.to_raw()),
            ));
        }
    }
}

/// A call not yet forwarded, known to [`Session::cancel_request`] from its arrival until it
/// is forwarded or refused (or its work is dropped).
struct Cancellable<'a> {
    session: &'a Session,
    id: Option<&'a Id>,
    /// Whether it has been held for a human's approval.
    held: AtomicBool,
}

impl<'a> Cancellable<'a> {
    fn new(session: &'a Session, id: Option<&'a Id>) -> Cancellable<'a> {
        if let Some(id) = id {
            session
                .unforwarded
                .lock()
                .unwrap()
                .insert(id.clone(), false);
        }
        Cancellable {
            session,
            id,
            held: AtomicBool::new(false),
        }
    }

    /// Whether the client has cancelled it.
    fn cancelled(&self) -> bool {
        self.id
            .is_some_and(|id| self.session.unforwarded.lock().unwrap().get(id) == Some(&true))
    }
}

impl Drop for Cancellable<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.session.unforwarded.lock().unwrap().remove(id);
        }
    }
}

/// Sends `notifications/elicitation/complete` when a URL-mode approval question's wait ends.
struct ElicitationDone<'a> {
    id: String,
    tx: &'a channel::Sender<Message>,
}

impl Drop for ElicitationDone<'_> {
    fn drop(&mut self) {
        let params = json!({ "elicitationId": self.id });
        let _ = self.tx.try_send(Message::notification(
            "notifications/elicitation/complete",
            Some(&raw(&params)),
        ));
    }
}

/// What a policy matches a listed tool against.
fn target<'a>(
    server: &'a str,
    tool: &'a IndexedTool,
    exposed: &'a str,
) -> toolgate_policy::Target<'a> {
    toolgate_policy::Target {
        server,
        name: &tool.name,
        exposed,
        categories: &tool.categories,
        severity: Some(tool.class.severity.as_str()),
    }
}

/// Why a server-to-client request may not reach this client, if it may not: sampling and
/// roots need the operator's consent per server, and every kind needs the client's capability.
fn refusal(method: &str, conn: &Connection, capabilities: &RawObject) -> Option<&'static str> {
    match method {
        "sampling/createMessage" if !conn.config.allow_sampling => {
            Some("sampling is not enabled for this server")
        }
        "sampling/createMessage" if !capabilities.contains("sampling") => {
            Some("the client does not support sampling")
        }
        "roots/list" if !conn.config.allow_roots => Some("roots are not enabled for this server"),
        "roots/list" if !capabilities.contains("roots") => {
            Some("the client does not support roots")
        }
        "elicitation/create" if !capabilities.contains("elicitation") => {
            Some("the client does not support elicitation")
        }
        _ => None,
    }
}

/// The client capabilities a 2026-07-28 request declares in its `_meta`.
fn request_capabilities(request: &Message) -> RawObject {
    request
        .params()
        .ok()
        .and_then(|p| p.get_object("_meta"))
        .and_then(|m| m.get_object("io.modelcontextprotocol/clientCapabilities"))
        .unwrap_or_default()
}

/// A request in flight upstream, followed by [`Session::drive`].
struct Flight {
    conn: Arc<Connection>,
    upstream_id: u64,
    /// What the upstream says about the request, then its response.
    answers: channel::Receiver<Answer>,
    /// Transport work to poll while waiting (HTTP upstreams).
    io: Option<Io>,
    deadline: tokio::time::Instant,
    client_token: Option<Box<RawValue>>,
    /// What a stateless client declared it can answer.
    capabilities: RawObject,
    /// The least severe log level the client wants (`None`: no logs; stateless clients opt in
    /// per request).
    log_level: Option<u8>,
    is_call: bool,
    /// Input requests handed to a stateless client: its key and the upstream request's id.
    asked: Vec<(String, Id)>,
}

impl Flight {
    fn wants_log(&self, notification: &Message) -> bool {
        let Some(min) = self.log_level else {
            return false;
        };
        let level = notification.params().ok().and_then(|p| p.get_str("level"));
        level.as_deref().and_then(severity).is_none_or(|l| l >= min)
    }
}

/// Syslog severities as MCP names them, least severe first.
fn severity(level: &str) -> Option<u8> {
    const LEVELS: [&str; 8] = [
        "debug",
        "info",
        "notice",
        "warning",
        "error",
        "critical",
        "alert",
        "emergency",
    ];
    LEVELS.iter().position(|l| *l == level).map(|i| i as u8)
}

/// The log level a 2026-07-28 request opts into with `_meta`, if any.
fn request_log_level(request: &Message) -> Option<u8> {
    let meta = request.params().ok()?.get_object("_meta")?;
    severity(&meta.get_str("io.modelcontextprotocol/logLevel")?)
}

/// Cancels an upstream request whose caller was dropped midway.
struct Abandoned {
    conn: Option<Arc<Connection>>,
    upstream_id: u64,
    session: Arc<Session>,
    client_id: Id,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.session
                .inflight
                .lock()
                .unwrap()
                .remove(&self.client_id);
            conn.cancel(self.upstream_id, "the client went away");
        }
    }
}

enum Outcome {
    Done(Option<Result<Message, UpstreamError>>),
    NeedsInput((String, Box<RawValue>)),
}

/// Prefix of the `requestState` the gateway mints for parked flights.
const REQUEST_STATE_PREFIX: &str = "toolgate.";

fn result_is_error(reply: &Message) -> bool {
    // Parse the (possibly large) result only when the flag can be in it.
    if !reply
        .result_raw()
        .is_some_and(|r| r.get().contains("isError"))
    {
        return false;
    }
    reply
        .result()
        .and_then(|r| r.get("isError").map(|v| v.get() == "true"))
        .unwrap_or(false)
}

/// `_meta` key marking a result the gateway made because the upstream failed.
const GATEWAY_ERROR_META: &str = "toolgate/error";

/// Whether a result is the gateway's report of an upstream that failed before or while
/// running the call (its counters are given back). A timeout is not one: the call reached the
/// upstream and may have run, so it stays counted.
fn is_gateway_failure(reply: &Message) -> bool {
    reply
        .result_raw()
        .is_some_and(|r| r.get().contains(GATEWAY_ERROR_META))
        && reply
            .result()
            .and_then(|r| r.get_object("_meta"))
            .and_then(|m| m.get_str(GATEWAY_ERROR_META))
            .is_some_and(|kind| kind == "upstream")
}

/// A failed upstream: a tool call gets a tool result the model can read; anything else a
/// JSON-RPC error.
fn upstream_failure(id: Id, is_call: bool, error: &UpstreamError) -> Message {
    if is_call {
        let result = json!({
            "content": [{"type": "text", "text": error.to_string()}],
            "isError": true,
            "_meta": {GATEWAY_ERROR_META: match error {
                UpstreamError::Timeout { .. } => "timeout",
                _ => "upstream",
            }},
        });
        Message::response(id, raw(&result))
    } else {
        Message::error(Some(id), ErrorCode::Internal.code(), &error.to_string())
    }
}

/// Removes the stateless revision's `_meta` keys, which a handshake-era upstream refuses.
fn strip_modern_meta(request: &mut Message) {
    let Ok(mut params) = request.params() else {
        return;
    };
    let Some(meta) = params.get_object("_meta") else {
        return;
    };
    let mut kept = RawObject::new();
    for (k, v) in meta
        .iter()
        .filter(|(k, _)| !k.starts_with(MODERN_META_PREFIX))
    {
        kept.set(k, v.to_owned());
    }
    if kept.is_empty() {
        params.remove("_meta");
    } else {
        params.set("_meta", kept.to_raw());
    }
    request.set_params(&params);
}

fn parse_cursor(cursor: &str) -> Option<usize> {
    cursor.strip_prefix("tg1.")?.parse().ok()
}

/// The form that asks a client's user to approve a held call (MCP elicitation, form mode).
fn approval_question(approval: &toolgate_state::Approval) -> serde_json::Value {
    json!({
        "message": format!(
            "toolgate: approve this call of {}/{} (risk: {})?\nArguments: {}\nRule: {} (approval {})",
            approval.server,
            approval.tool,
            approval.severity.as_deref().unwrap_or("unknown"),
            approval.arguments,
            approval.rule,
            approval.id
        ),
        "requestedSchema": {
            "type": "object",
            "properties": {
                "approve": {"type": "boolean", "title": "Approve this call", "description": "Let this call run, once"},
                "reason": {"type": "string", "title": "Reason", "description": "Why (the agent is told when you refuse)"}
            },
            "required": ["approve"]
        }
    })
}

/// The link that asks a client's user to approve a held call on the web UI's page (MCP
/// elicitation, URL mode).
fn approval_link_question(approval: &toolgate_state::Approval, url: &str) -> serde_json::Value {
    json!({
        "mode": "url",
        "elicitationId": approval.id,
        "url": url,
        "message": format!(
            "toolgate: a call of {}/{} (risk: {}) waits for your approval. Open the page to see its arguments and approve or deny it.",
            approval.server,
            approval.tool,
            approval.severity.as_deref().unwrap_or("unknown"),
        ),
    })
}

/// The user's answer to [`approval_question`]: `(approved, reason)`, or `None` when the
/// question was dismissed.
fn approval_answer(result: &RawObject) -> Option<(bool, Option<String>)> {
    let content = result.get_object("content").unwrap_or_default();
    let reason = content.get_str("reason").filter(|r| !r.trim().is_empty());
    match result.get_str("action").as_deref() {
        Some("accept") if content.get("approve").is_some_and(|v| v.get() == "true") => {
            Some((true, reason))
        }
        Some("accept") | Some("decline") => Some((
            false,
            Some(reason.unwrap_or_else(|| "the user declined it".into())),
        )),
        _ => None,
    }
}
