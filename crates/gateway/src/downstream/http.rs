//! Streamable HTTP for downstream clients: `POST`, `GET` and `DELETE` on `/mcp` (every server)
//! and `/mcp/{server}` (one server, names unchanged), plus `/healthz` and `/metrics`.
//!
//! Every request passes, in order: the Host check (421), the Origin check (403), the grant
//! (401), the body limit (413), strict parsing (400). Only then does a message reach a session.

// Checks return the ready HTTP response as their error: that is what the handler sends.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use serde_json::json;
use toolgate_wire::{ErrorCode, Id, Kind, Limits, Message, sse};

use crate::channel;
use crate::downstream::access::{Headers, HostCheck, bearer};
use crate::gateway::{Gateway, OpenError, StreamPermit};
use crate::grant::Grant;
use crate::session::{HANDSHAKE_VERSIONS, Mode, STATELESS_VERSION, Session};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const KEEPALIVE: Duration = Duration::from_secs(15);

pub(crate) struct AppState {
    pub(crate) gateway: Arc<Gateway>,
    access: HostCheck,
    anonymous: Option<Arc<Grant>>,
}

type Shared = State<Arc<AppState>>;

/// The service for the MCP listener bound to `local`: a message `POST` (the hot path) goes
/// straight to its handler; everything else through the router.
pub fn service(gateway: Arc<Gateway>, local: SocketAddr) -> Front {
    let access = HostCheck::for_listener(&gateway.config, local.port());
    let anonymous = gateway
        .config
        .listen
        .anonymous_grant
        .as_deref()
        .and_then(|name| gateway.grants.by_name(name));
    let state = Arc::new(AppState {
        gateway,
        access,
        anonymous,
    });
    let router = Router::new()
        .route(
            "/mcp",
            get(get_stream).post(post_message).delete(delete_session),
        )
        .route(
            "/mcp/{server}",
            get(get_stream_scoped)
                .post(post_message_scoped)
                .delete(delete_session_scoped),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            count_status,
        ))
        .with_state(state.clone());
    Front { state, router }
}

/// The MCP listener's service. Every call of a tool is a `POST` to `/mcp` or
/// `/mcp/{server}`: those skip the router's matching, extractors (which copy the headers)
/// and response middleware, about 8% of the gateway's instructions per call. The router
/// serves the rest (and the `POST`s whose path it must decode).
#[derive(Clone)]
pub struct Front {
    state: Arc<AppState>,
    router: Router,
}

type Direct = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl tower_service::Service<axum::extract::Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = futures_util::future::Either<
        Direct,
        <Router as tower_service::Service<axum::extract::Request>>::Future,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        use futures_util::future::Either;
        if request.method() != axum::http::Method::POST {
            return Either::Right(self.router.call(request));
        }
        let Some(scope) = message_path(request.uri().path()) else {
            return Either::Right(self.router.call(request));
        };
        let scope = scope.map(str::to_owned);
        let state = self.state.clone();
        Either::Left(Box::pin(async move {
            let (parts, body) = request.into_parts();
            let response = post(State(state.clone()), scope, parts.headers, body).await;
            state
                .gateway
                .metrics
                .record_status(response.status().as_u16());
            Ok(response)
        }))
    }
}

impl Front {
    pub(crate) fn state(&self) -> &Arc<AppState> {
        &self.state
    }
}

/// Where a message `POST` to `target` goes: `Some(None)` for `/mcp` (every server),
/// `Some(Some(server))` for `/mcp/{server}` with a plain name (no `/`, no `%`: the router
/// decodes the others), `None` for any other path. A query is ignored.
pub(crate) fn message_path(target: &str) -> Option<Option<&str>> {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    match path.strip_prefix("/mcp")? {
        "" => Some(None),
        rest => {
            let server = rest.strip_prefix('/')?;
            (!server.is_empty() && !server.contains(['/', '%'])).then_some(Some(server))
        }
    }
}

async fn count_status(State(state): Shared, response: Response) -> Response {
    state
        .gateway
        .metrics
        .record_status(response.status().as_u16());
    response
}

async fn healthz(State(state): Shared) -> Response {
    let servers: Vec<_> = state
        .gateway
        .config
        .servers
        .iter()
        .map(|s| &s.name)
        .collect();
    let body =
        json!({"status": "ok", "sessions": state.gateway.session_count(), "servers": servers});
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(state): Shared, headers: HeaderMap) -> Response {
    if let Err(r) = check_host_origin(&state, &headers) {
        return r;
    }
    let text = state.gateway.metrics.render(state.gateway.session_count());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// A JSON-RPC error as an HTTP response.
fn rpc_error(status: StatusCode, id: Option<Id>, code: ErrorCode, message: &str) -> Response {
    json_response(status, &Message::error(id, code.code(), message))
}

fn json_response(status: StatusCode, message: &Message) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        message.to_json(),
    )
        .into_response()
}

fn check_host_origin(state: &AppState, headers: &impl Headers) -> Result<(), Response> {
    match state.access.refusal(headers) {
        None => Ok(()),
        Some((status, message)) => {
            Err(rpc_error(status, None, ErrorCode::InvalidRequest, &message))
        }
    }
}

/// Host, Origin and grant, in that order.
fn admit(state: &AppState, headers: &impl Headers) -> Result<Arc<Grant>, Response> {
    check_host_origin(state, headers)?;
    let grant = match bearer(headers) {
        Some(token) => state.gateway.grants.authenticate(token),
        None => state.anonymous.clone(),
    };
    grant.ok_or_else(|| {
        let mut r = rpc_error(
            StatusCode::UNAUTHORIZED,
            None,
            ErrorCode::InvalidRequest,
            "a valid grant token is required (Authorization: Bearer ...)",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"toolgate\""),
        );
        r
    })
}

async fn post_message(state: Shared, headers: HeaderMap, body: Body) -> Response {
    post(state, None, headers, body).await
}

async fn post_message_scoped(
    state: Shared,
    Path(server): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    post(state, Some(server), headers, body).await
}

/// Whether a body read stopped at `max_body_bytes` (rather than on a broken connection).
fn is_length_limit(error: &axum::Error) -> bool {
    std::error::Error::source(error).is_some_and(|e| e.is::<http_body_util::LengthLimitError>())
}

/// What a message `POST` must pass before its body is read: Host, Origin, grant, media type
/// and declared length. Returns the grant.
pub(crate) fn admit_post(state: &AppState, headers: &impl Headers) -> Result<Arc<Grant>, Response> {
    let grant = admit(state, headers)?;
    let content_type = headers.get_str("content-type").unwrap_or_default();
    if !content_type.starts_with("application/json") {
        return Err(rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            ErrorCode::InvalidRequest,
            "Content-Type must be application/json",
        ));
    }
    if headers
        .get_str("content-length")
        .and_then(|l| l.parse::<usize>().ok())
        .is_some_and(|l| l > state.gateway.config.limits.max_body_bytes)
    {
        return Err(too_large(state));
    }
    Ok(grant)
}

/// The body is (or says it is) over `limits.max_body_bytes`.
pub(crate) fn too_large(state: &AppState) -> Response {
    rpc_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
        ErrorCode::InvalidRequest,
        &format!(
            "request body exceeds {} bytes",
            state.gateway.config.limits.max_body_bytes
        ),
    )
}

/// The body did not arrive within `limits.body_timeout`.
pub(crate) fn body_timed_out(state: &AppState) -> Response {
    rpc_error(
        StatusCode::REQUEST_TIMEOUT,
        None,
        ErrorCode::InvalidRequest,
        &format!(
            "the request body did not arrive within {} s",
            state.gateway.config.limits.body_timeout.as_secs_f64()
        ),
    )
}

async fn post(
    State(state): Shared,
    scope: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let grant = match admit_post(&state, &headers) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let limits = &state.gateway.config.limits;
    // A small body is usually in hyper's buffer already: no timer unless it is not.
    let mut read = std::pin::pin!(axum::body::to_bytes(body, limits.max_body_bytes));
    let read = match futures_util::FutureExt::now_or_never(&mut read) {
        Some(read) => Ok(read),
        None => tokio::time::timeout(limits.body_timeout, read).await,
    };
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(e)) if is_length_limit(&e) => return too_large(&state),
        Ok(Err(e)) => {
            // The client went away or broke the body's framing: it rarely reads this answer,
            // but the log and a proxy in between should not call it an oversized body.
            return rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                ErrorCode::InvalidRequest,
                &format!("the request body could not be read: {e}"),
            );
        }
        Err(_) => return body_timed_out(&state),
    };
    post_message_body(&state, scope.as_deref(), &grant, &headers, &bytes).await
}

/// Serves an admitted message `POST` whose body has been read.
pub(crate) async fn post_message_body(
    state: &AppState,
    scope: Option<&str>,
    grant: &Arc<Grant>,
    headers: &impl Headers,
    bytes: &[u8],
) -> Response {
    let gateway = &state.gateway;
    let limits = &gateway.config.limits;
    let wire_limits = Limits {
        max_bytes: limits.max_body_bytes,
        max_depth: limits.max_json_depth,
    };
    let message = match Message::parse(bytes, &wire_limits) {
        Ok(m) => m,
        Err(e) => return rpc_error(StatusCode::BAD_REQUEST, e.id.clone(), e.code, &e.message),
    };

    let session = match headers.get_str(SESSION_HEADER) {
        Some(id) => match gateway.find_session(id, grant, scope).await {
            Some(s) => {
                if let Some(v) = headers
                    .get_str(VERSION_HEADER)
                    .filter(|v| !HANDSHAKE_VERSIONS.contains(v))
                {
                    return rpc_error(
                        StatusCode::BAD_REQUEST,
                        message.id().cloned(),
                        ErrorCode::InvalidRequest,
                        &format!("unsupported MCP-Protocol-Version {v:?}"),
                    );
                }
                s
            }
            None => {
                return rpc_error(
                    StatusCode::NOT_FOUND,
                    message.id().cloned(),
                    ErrorCode::InvalidRequest,
                    "Session not found",
                );
            }
        },
        None if message.method() == Some("initialize") && message.kind() == Kind::Request => {
            return initialize(state, grant.clone(), scope, message).await;
        }
        None => match stateless_version(headers, &message) {
            Some(version) => {
                if let Err(r) = check_stateless(headers, &message, &version) {
                    return r;
                }
                match gateway.stateless_session(grant.clone(), scope).await {
                    Ok(s) => s,
                    Err(e) => return open_failed(message.id().cloned(), e),
                }
            }
            None => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    message.id().cloned(),
                    ErrorCode::InvalidRequest,
                    "Bad Request: missing Mcp-Session-Id (send initialize first)",
                );
            }
        },
    };

    match message.kind() {
        Kind::Request => reply(gateway, grant, &session, message).await,
        Kind::Notification => {
            session.handle_notification(message);
            StatusCode::ACCEPTED.into_response()
        }
        Kind::Response if session.mode == Mode::Stateless => rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            ErrorCode::InvalidRequest,
            "2026-07-28 clients send no responses",
        ),
        Kind::Response => {
            session.handle_response(message);
            StatusCode::ACCEPTED.into_response()
        }
    }
}

async fn initialize(
    state: &AppState,
    grant: Arc<Grant>,
    scope: Option<&str>,
    message: Message,
) -> Response {
    let id = message.id().cloned();
    let params = match message.params() {
        Ok(p) => p,
        Err(e) => return rpc_error(StatusCode::BAD_REQUEST, id, e.code, &e.message),
    };
    let (session, result) = match state.gateway.initialize(grant, scope, &params).await {
        Ok(opened) => opened,
        Err(e) => return open_failed(id, e),
    };
    let mut response = json_response(
        StatusCode::OK,
        &Message::response(id.expect("initialize is a request"), result),
    );
    response.headers_mut().insert(
        SESSION_HEADER,
        HeaderValue::from_str(&session.id).expect("hex is a valid header"),
    );
    response
}

fn open_failed(id: Option<Id>, error: OpenError) -> Response {
    let status = match error {
        OpenError::UnknownServer(_) => StatusCode::NOT_FOUND,
        OpenError::TooManySessions(..) => StatusCode::TOO_MANY_REQUESTS,
    };
    rpc_error(status, id, ErrorCode::InvalidRequest, &error.to_string())
}

/// The stateless revision a session-less request asks for, from its header or its `_meta`.
fn stateless_version(headers: &impl Headers, message: &Message) -> Option<String> {
    if let Some(v) = headers
        .get_str(VERSION_HEADER)
        .filter(|v| !HANDSHAKE_VERSIONS.contains(v))
    {
        return Some(v.to_owned());
    }
    let meta = message.params().ok()?.get_object("_meta")?;
    meta.get_str("io.modelcontextprotocol/protocolVersion")
}

/// 2026-07-28 routing headers must agree with the body, so that what an intermediary routed on
/// is what the gateway and the upstream read.
fn check_stateless(
    headers: &impl Headers,
    message: &Message,
    version: &str,
) -> Result<(), Response> {
    let id = message.id().cloned();
    let mismatch = |what: &str| {
        rpc_error(
            StatusCode::BAD_REQUEST,
            id.clone(),
            ErrorCode::HeaderMismatch,
            &format!("{what} header does not match the request body"),
        )
    };
    if version != STATELESS_VERSION {
        let body = json!({"jsonrpc": "2.0", "id": id.as_ref().map(|i| serde_json::from_str::<serde_json::Value>(i.as_str()).unwrap_or_default()),
            "error": {"code": -32022, "message": "Unsupported protocol version", "data": {"supported": [STATELESS_VERSION], "requested": version}}});
        return Err((
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response());
    }
    let params = message.params().unwrap_or_default();
    let meta = params.get_object("_meta").unwrap_or_default();
    let meta_ok = meta
        .get_str("io.modelcontextprotocol/protocolVersion")
        .as_deref()
        == Some(version)
        && meta.contains("io.modelcontextprotocol/clientCapabilities");
    if message.kind() == Kind::Request && !meta_ok {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            ErrorCode::InvalidParams,
            "params._meta must carry io.modelcontextprotocol/protocolVersion and io.modelcontextprotocol/clientCapabilities",
        ));
    }
    if headers.get_str(VERSION_HEADER) != Some(version) {
        return Err(mismatch("MCP-Protocol-Version"));
    }
    if message.kind() == Kind::Request {
        if headers.get_str("mcp-method") != message.method() {
            return Err(mismatch("Mcp-Method"));
        }
        let name = match message.method() {
            Some("tools/call" | "prompts/get") => params.get_str("name"),
            Some("resources/read") => params.get_str("uri"),
            _ => None,
        };
        if let Some(name) = name
            && headers
                .get_str("mcp-name")
                .map(decode_header_value)
                .as_deref()
                != Some(name.as_str())
        {
            return Err(mismatch("Mcp-Name"));
        }
    }
    Ok(())
}

/// Header values that are not plain ASCII travel as `=?base64?...?=`: Base64 of their UTF-8
/// bytes, standard alphabet (padding optional here).
fn decode_header_value(value: &str) -> String {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const BASE64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
        .and_then(|v| BASE64.decode(v).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| value.to_owned())
}

/// Sends a request into its session and answers with the response as JSON, or, when the
/// upstream says something first (progress, logs, a server request), as an SSE stream.
async fn reply(
    gateway: &Arc<Gateway>,
    grant: &Grant,
    session: &Arc<Session>,
    message: Message,
) -> Response {
    let id = message.id().cloned();
    let (mut work, mut rx) = session.request(message);
    let mut done = false;
    let first = tokio::select! {
        biased;
        m = rx.recv() => m,
        () = &mut work => {
            done = true;
            rx.recv().await
        }
    };
    let Some(first) = first else {
        // No answer is owed (the client cancelled the request): an event stream with no
        // events.
        return sse_response(Body::empty());
    };
    if first.kind() == Kind::Response {
        if !done {
            work.await;
        }
        return json_response(StatusCode::OK, &first);
    }
    if !done {
        tokio::spawn(work);
    }
    // The answer becomes a stream: it counts against the grant's open streams.
    let Some(permit) = gateway.open_stream(grant) else {
        if let Some(id) = &id {
            session.cancel_request(id, "too many open streams for this grant");
        }
        return rpc_error(
            StatusCode::TOO_MANY_REQUESTS,
            id,
            ErrorCode::InvalidRequest,
            "too many open streams for this grant",
        );
    };
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    let stream = EventStream {
        first: Some(first),
        rx: Some(rx),
        session: None,
        keepalive: Some(keepalive),
        shutdown: None,
        _permit: permit,
    };
    sse_response(Body::from_stream(stream))
}

fn sse_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .expect("static headers are valid")
}

/// An SSE body fed by a channel. For a GET stream it holds the session's standalone receiver
/// and gives it back when the client goes away.
struct EventStream {
    first: Option<Message>,
    rx: Option<channel::Receiver<Message>>,
    session: Option<Arc<Session>>,
    keepalive: Option<tokio::time::Interval>,
    shutdown: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    _permit: StreamPermit,
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(m) = self.first.take() {
            return Poll::Ready(Some(Ok(Bytes::from(sse::encode(&m.to_json(), None)))));
        }
        if let Some(shutdown) = self.shutdown.as_mut()
            && shutdown.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(m)) => {
                return Poll::Ready(Some(Ok(Bytes::from(sse::encode(&m.to_json(), None)))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if let Some(k) = self.keepalive.as_mut()
            && k.poll_tick(cx).is_ready()
        {
            return Poll::Ready(Some(Ok(Bytes::from_static(b": keepalive\n\n"))));
        }
        Poll::Pending
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let (Some(session), Some(rx)) = (self.session.take(), self.rx.take()) {
            session.return_outbound(rx);
        }
    }
}

async fn get_stream(state: Shared, headers: HeaderMap) -> Response {
    open_get_stream(state, None, headers).await
}

async fn get_stream_scoped(
    state: Shared,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Response {
    open_get_stream(state, Some(server), headers).await
}

/// The standalone stream: list changes and server requests not tied to a client request.
async fn open_get_stream(
    State(state): Shared,
    scope: Option<String>,
    headers: HeaderMap,
) -> Response {
    let grant = match admit(&state, &headers) {
        Ok(g) => g,
        Err(r) => return r,
    };
    if !headers
        .get_str("accept")
        .unwrap_or_default()
        .contains("text/event-stream")
    {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            None,
            ErrorCode::InvalidRequest,
            "Accept must include text/event-stream",
        );
    }
    let Some(id) = headers.get_str(SESSION_HEADER) else {
        if headers.get_str(VERSION_HEADER) == Some(STATELESS_VERSION) {
            let mut r = rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                ErrorCode::InvalidRequest,
                "2026-07-28 has no GET stream",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        return rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            ErrorCode::InvalidRequest,
            "Bad Request: missing Mcp-Session-Id",
        );
    };
    let Some(session) = state
        .gateway
        .find_session(id, &grant, scope.as_deref())
        .await
    else {
        return rpc_error(
            StatusCode::NOT_FOUND,
            None,
            ErrorCode::InvalidRequest,
            "Session not found",
        );
    };
    let Some(permit) = state.gateway.open_stream(&grant) else {
        return rpc_error(
            StatusCode::TOO_MANY_REQUESTS,
            None,
            ErrorCode::InvalidRequest,
            "too many open streams for this grant",
        );
    };
    let Some(rx) = session.take_outbound() else {
        return rpc_error(
            StatusCode::CONFLICT,
            None,
            ErrorCode::InvalidRequest,
            "this session already has an open GET stream",
        );
    };
    let mut shutdown = state.gateway.shutting_down();
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    let stream = EventStream {
        first: None,
        rx: Some(rx),
        session: Some(session),
        keepalive: Some(keepalive),
        shutdown: Some(Box::pin(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })),
        _permit: permit,
    };
    sse_response(Body::from_stream(stream))
}

async fn delete_session(state: Shared, headers: HeaderMap) -> Response {
    end_session(state, None, headers).await
}

async fn delete_session_scoped(
    state: Shared,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Response {
    end_session(state, Some(server), headers).await
}

async fn end_session(State(state): Shared, scope: Option<String>, headers: HeaderMap) -> Response {
    let grant = match admit(&state, &headers) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let Some(id) = headers.get_str(SESSION_HEADER) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            ErrorCode::InvalidRequest,
            "Bad Request: missing Mcp-Session-Id",
        );
    };
    match state
        .gateway
        .find_session(id, &grant, scope.as_deref())
        .await
    {
        Some(session) => {
            // The client ends the session for good: its server sessions end too.
            for up in session.upstreams() {
                up.keep_remote_session(false);
            }
            state.gateway.close_session(&session.id);
            tracing::info!(session = %session.id, "session closed by the client");
            StatusCode::OK.into_response()
        }
        None => rpc_error(
            StatusCode::NOT_FOUND,
            None,
            ErrorCode::InvalidRequest,
            "Session not found",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{decode_header_value, message_path};

    #[test]
    fn header_values_in_the_base64_form_are_decoded_and_others_kept() {
        // The spec's own example: a plain value that looks like the form is itself encoded.
        assert_eq!(
            decode_header_value("=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
            "=?base64?literal?="
        );
        assert_eq!(decode_header_value("=?base64?5pel5pys6Kqe?="), "日本語");
        assert_eq!(decode_header_value("=?base64?w6k?="), "é"); // padding left out
        assert_eq!(decode_header_value("get_weather"), "get_weather");
        // Not Base64, or not UTF-8: the value as it came (it then matches no name).
        for odd in ["=?base64?***?=", "=?base64?/w==?=", "=?base64?w6k"] {
            assert_eq!(decode_header_value(odd), odd);
        }
    }

    #[test]
    fn message_paths_name_their_server_and_ignore_the_query() {
        assert_eq!(message_path("/mcp"), Some(None));
        assert_eq!(message_path("/mcp?x=1"), Some(None));
        assert_eq!(message_path("/mcp/ssh"), Some(Some("ssh")));
        assert_eq!(message_path("/mcp/ssh?x=/"), Some(Some("ssh")));
        for other in [
            "/",
            "/mcpx",
            "/mcp/",
            "/mcp/a/b",
            "/mcp/a%20b",
            "/healthz",
            "mcp",
        ] {
            assert_eq!(message_path(other), None, "{other}");
        }
    }
}
