//! A Streamable HTTP upstream: each request is a POST whose answer is one JSON message or an
//! SSE stream of messages about that request ending with its response; a standalone GET stream
//! carries the rest.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use toolgate_wire::sse::Decoder;
use toolgate_wire::{Id, Limits, Message};

use super::connection::{Connection, Io, Outbound};
use super::http_client::{Body, HttpClient, HttpError, Request, ResponseHead};
use super::{Upstream, UpstreamError};
use crate::config::{ServerConfig, Transport};

const MAX_MESSAGE: usize = 16 * 1024 * 1024;
const ACCEPT_BOTH: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

struct Shared {
    server: Arc<str>,
    client: Arc<HttpClient>,
    headers: HeaderMap,
    session_id: Mutex<Option<HeaderValue>>,
    protocol_version: Mutex<Option<HeaderValue>>,
    /// Leave the server's session open when the connection is dropped.
    keep_session: std::sync::atomic::AtomicBool,
}

struct HttpOutbound(Arc<Shared>);

/// Prepares a connection; nothing is sent until the handshake.
pub(super) fn open(
    config: Arc<ServerConfig>,
    upstream: Weak<Upstream>,
    resume: Option<&super::Resume>,
) -> Result<Arc<Connection>, UpstreamError> {
    let Transport::Http {
        url,
        headers,
        ca_file,
    } = &config.transport
    else {
        unreachable!("http::open is only called for HTTP servers")
    };
    let server: Arc<str> = Arc::from(config.name.as_str());
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let bad = |what: &str| UpstreamError::Unavailable {
            server: server.clone(),
            reason: format!("invalid header {what} {k:?}"),
        };
        map.insert(
            HeaderName::try_from(k.as_str()).map_err(|_| bad("name"))?,
            HeaderValue::try_from(v.as_str()).map_err(|_| bad("value for"))?,
        );
    }
    let client = HttpClient::shared(url, ca_file.as_deref()).map_err(|reason| {
        UpstreamError::Unavailable {
            server: server.clone(),
            reason,
        }
    })?;
    let shared = Arc::new(Shared {
        server,
        client,
        headers: map,
        session_id: Mutex::new(resume.and_then(|r| HeaderValue::try_from(r.session.as_str()).ok())),
        protocol_version: Mutex::new(None),
        keep_session: std::sync::atomic::AtomicBool::new(false),
    });
    Ok(Connection::new(
        config,
        upstream,
        Box::new(HttpOutbound(shared)),
    ))
}

impl Outbound for HttpOutbound {
    fn send_request(
        &self,
        conn: &Arc<Connection>,
        message: Message,
    ) -> Result<Option<Io>, UpstreamError> {
        let related = message.id().and_then(Id::as_u64);
        Ok(Some(Box::pin(post(
            self.0.clone(),
            conn.clone(),
            message,
            related,
        ))))
    }

    fn send(&self, conn: &Arc<Connection>, message: Message) -> Result<(), UpstreamError> {
        tokio::spawn(post(self.0.clone(), conn.clone(), message, None));
        Ok(())
    }

    fn initialized(&self, conn: &Arc<Connection>) {
        *self.0.protocol_version.lock().unwrap() =
            HeaderValue::try_from(conn.info().protocol_version.as_str()).ok();
        tokio::spawn(listen(self.0.clone(), Arc::downgrade(conn)));
    }

    fn remote_session(&self) -> Option<String> {
        let id = self.0.session_id.lock().unwrap().clone()?;
        id.to_str().ok().map(str::to_owned)
    }

    fn keep_remote_session(&self, keep: bool) {
        self.0
            .keep_session
            .store(keep, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for HttpOutbound {
    /// Ends the upstream session, as a client leaving politely does.
    fn drop(&mut self) {
        if self
            .0
            .keep_session
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let Some(session) = self.0.session_id.lock().unwrap().clone() else {
            return;
        };
        let shared = self.0.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let request = shared
                    .request(Method::DELETE)
                    .header("mcp-session-id", &session);
                // Bounded: a server that never answers does not keep this task (and its
                // socket) for the gateway's life.
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    if let Ok((_, body)) = shared.client.send(request).await {
                        let _ = body.collect(MAX_MESSAGE).await;
                    }
                })
                .await;
            });
        }
    }
}

impl Shared {
    /// A request to the endpoint with the configured headers and the session's.
    fn request(&self, method: Method) -> Request {
        let mut request = self.client.request(method);
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value);
        }
        if let Some(v) = &*self.session_id.lock().unwrap() {
            request = request.header("mcp-session-id", v);
        }
        if let Some(v) = &*self.protocol_version.lock().unwrap() {
            request = request.header("mcp-protocol-version", v);
        }
        request
    }
}

async fn post(shared: Arc<Shared>, conn: Arc<Connection>, message: Message, related: Option<u64>) {
    let fail = |message: String| {
        if let Some(id) = related {
            conn.fail(
                id,
                UpstreamError::Protocol {
                    server: shared.server.clone(),
                    message,
                },
            );
        } else {
            tracing::debug!(server = %shared.server, "{message}");
        }
    };
    let request = shared
        .request(Method::POST)
        .header("accept", &ACCEPT_BOTH)
        .header("content-type", &JSON)
        .body(message.to_json());
    let (response, body) = match shared.client.send(request).await {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, HttpError::Connect(..)) {
                conn.close(&e.to_string());
            }
            return fail(e.to_string());
        }
    };
    let ResponseHead {
        status,
        event_stream,
        session_id,
    } = response;
    if let Some(session) = session_id {
        let mut current = shared.session_id.lock().unwrap();
        if current.is_none() {
            *current = Some(session);
        }
    }
    if status == StatusCode::NOT_FOUND && shared.session_id.lock().unwrap().is_some() {
        conn.close("the upstream session expired (HTTP 404)");
        return;
    }
    if status == StatusCode::ACCEPTED {
        if related.is_some() {
            fail("the server answered a request with 202 Accepted".into());
        }
        // Read the (empty) body to its end so that the connection can be reused.
        let _ = body.collect(MAX_MESSAGE).await;
        return;
    }
    if event_stream && status.is_success() {
        return follow_events(&shared, &conn, body, related).await;
    }
    let body = match body.collect(MAX_MESSAGE).await {
        Ok(b) => b,
        Err(e) => return fail(format!("reading the response failed: {e}")),
    };
    match Message::parse(
        &body,
        &Limits {
            max_bytes: MAX_MESSAGE,
            ..Limits::default()
        },
    ) {
        Ok(mut m) => {
            // An error answered with an HTTP error status may carry a null id: it is ours.
            if m.kind() == toolgate_wire::Kind::Response
                && m.id().is_none()
                && let Some(id) = related
            {
                m.set_id(Id::number(id));
            }
            conn.dispatch(m, related)
        }
        Err(_) if !status.is_success() => fail(format!("HTTP {status}")),
        Err(e) => fail(format!("invalid JSON-RPC from the server: {e}")),
    }
}

/// How an event stream ended.
struct StreamEnd {
    /// The response to the related request came through.
    answered: bool,
    /// The last event id, to resume from.
    last_event_id: Option<String>,
    /// The delay the server asked for before reconnecting.
    retry: Option<Duration>,
}

/// Reads one event stream, holding the connection only weakly so that a long-lived stream does
/// not keep a dropped connection alive.
async fn read_events(
    shared: &Shared,
    conn: &Weak<Connection>,
    mut body: Body,
    related: Option<u64>,
) -> StreamEnd {
    let mut decoder = Decoder::new(MAX_MESSAGE);
    let limits = Limits {
        max_bytes: MAX_MESSAGE,
        ..Limits::default()
    };
    let mut end = StreamEnd {
        answered: false,
        last_event_id: None,
        retry: None,
    };
    let Some(mut closed) = conn.upgrade().map(|c| c.closed()) else {
        return end;
    };
    loop {
        let chunk = tokio::select! {
            chunk = body.chunk() => chunk,
            _ = closed.wait_for(|r| r.is_some()) => return end,
        };
        let Some(chunk) = chunk else { break };
        let Some(conn) = conn.upgrade() else {
            return end;
        };
        let events = match chunk.and_then(|c| decoder.feed(&c).map_err(|e| e.to_string())) {
            Ok(events) => events,
            Err(e) => {
                tracing::debug!(server = %shared.server, error = %e, "event stream broke");
                break;
            }
        };
        for event in events
            .into_iter()
            .filter(|e| e.event == "message" && !e.data.is_empty())
        {
            match Message::parse(event.data.as_bytes(), &limits) {
                Ok(m) => {
                    if m.kind() == toolgate_wire::Kind::Response
                        && m.id().and_then(Id::as_u64) == related
                    {
                        end.answered = true;
                    }
                    conn.dispatch(m, related)
                }
                Err(e) => {
                    tracing::warn!(server = %shared.server, error = %e, "invalid message in event stream; dropped")
                }
            }
        }
        end.last_event_id = decoder.last_event_id().map(str::to_owned);
        end.retry = decoder.retry().map(Duration::from_millis);
    }
    end.last_event_id = decoder.last_event_id().map(str::to_owned);
    end.retry = decoder.retry().map(Duration::from_millis);
    end
}

/// Follows a request's event stream to its response, resuming with `Last-Event-ID` when the
/// server closes the stream early (servers may, to poll long calls), as a direct client would.
async fn follow_events(shared: &Shared, conn: &Arc<Connection>, body: Body, related: Option<u64>) {
    const MAX_RESUMES: u32 = 5;
    let weak = Arc::downgrade(conn);
    let mut end = read_events(shared, &weak, body, related).await;
    let mut resumes = 0;
    while let Some(id) = related.filter(|_| !end.answered) {
        let Some(last) = end
            .last_event_id
            .clone()
            .filter(|_| resumes < MAX_RESUMES && !conn.is_closed())
        else {
            conn.fail(
                id,
                UpstreamError::Protocol {
                    server: shared.server.clone(),
                    message: "event stream ended without a response".into(),
                },
            );
            return;
        };
        resumes += 1;
        tokio::time::sleep(
            end.retry
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(30)),
        )
        .await;
        let resumed = match HeaderValue::from_str(&last) {
            Ok(last) => {
                let request = shared
                    .request(Method::GET)
                    .header("accept", &EVENT_STREAM)
                    .header("last-event-id", &last);
                shared.client.send(request).await.map_err(|e| e.to_string())
            }
            Err(_) => Err(format!("unusable event id {last:?}")),
        };
        match resumed {
            Ok((r, body)) if r.status.is_success() => {
                let next = read_events(shared, &weak, body, related).await;
                end = StreamEnd {
                    answered: next.answered,
                    last_event_id: next.last_event_id.or(Some(last)),
                    retry: next.retry.or(end.retry),
                };
            }
            Ok((r, _)) => {
                tracing::debug!(server = %shared.server, status = %r.status, "resuming the event stream failed");
                end.last_event_id = None;
            }
            Err(e) => {
                tracing::debug!(server = %shared.server, error = %e, "resuming the event stream failed");
            }
        }
    }
}

/// Keeps the standalone GET stream open while the connection lives (servers that do not offer
/// one answer 405, which ends this task).
async fn listen(shared: Arc<Shared>, conn: Weak<Connection>) {
    let mut failures = 0u32;
    loop {
        if conn.upgrade().is_none_or(|c| c.is_closed()) {
            return;
        }
        let request = shared.request(Method::GET).header("accept", &EVENT_STREAM);
        let response = shared.client.send(request).await.ok();
        match response {
            Some((r, body)) if r.status.is_success() => {
                failures = 0;
                read_events(&shared, &conn, body, None).await;
            }
            Some((r, _)) if r.status == StatusCode::METHOD_NOT_ALLOWED => return,
            _ => failures += 1,
        }
        if failures > 5 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500 * u64::from(failures.max(1)))).await;
    }
}
