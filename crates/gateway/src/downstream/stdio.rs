//! The stdio transport for clients that spawn a command: one session for the life of the
//! process, newline-delimited JSON-RPC on stdin and stdout, and nothing else on stdout.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use toolgate_wire::line::{Line, LineReader};
use toolgate_wire::{ErrorCode, Kind, Limits, Message, raw};

use crate::gateway::Gateway;
use crate::grant::Grant;
use crate::session::{Mode, Session};

/// Stdout, written whole line by whole line by whoever has a message: a request's own task
/// writes its reply directly, with no writer task in between.
#[derive(Clone)]
struct Output(Arc<tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>>);

impl Output {
    async fn send(&self, message: &Message) -> std::io::Result<()> {
        let line = message.to_line();
        let mut out = self.0.lock().await;
        out.write_all(line.as_bytes()).await?;
        out.flush().await
    }
}

/// Serves one client on `input`/`output` until the input ends.
pub async fn serve<R, W>(
    gateway: Arc<Gateway>,
    grant: Arc<Grant>,
    input: R,
    output: W,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let limits = &gateway.config.limits;
    let wire_limits = Limits {
        max_bytes: limits.max_line_bytes,
        max_depth: limits.max_json_depth,
    };
    let mut reader = LineReader::new(
        BufReader::with_capacity(64 * 1024, input),
        limits.max_line_bytes,
    );
    let out = Output(Arc::new(tokio::sync::Mutex::new(Box::new(output))));
    let mut session: Option<Arc<Session>> = None;
    let mut relay: Option<tokio::task::JoinHandle<()>> = None;
    let mut requests = tokio::task::JoinSet::new();

    loop {
        let line = match reader.next_line().await? {
            Line::Data(line) => line,
            Line::TooLong(n) => {
                let msg = format!(
                    "message of {n} bytes exceeds the limit of {} bytes",
                    limits.max_line_bytes
                );
                out.send(&Message::error(
                    None,
                    ErrorCode::InvalidRequest.code(),
                    &msg,
                ))
                .await?;
                continue;
            }
            Line::Eof => break,
        };
        let message = match Message::parse(&line, &wire_limits) {
            Ok(m) => m,
            Err(e) => {
                out.send(&Message::from_wire_error(&e)).await?;
                continue;
            }
        };
        let current = match &session {
            Some(s) => s.clone(),
            None => match first_message(&gateway, &grant, &message, &out).await? {
                Some(s) => {
                    session = Some(s.clone());
                    if let Some(mut rx) = s.take_outbound() {
                        let out = out.clone();
                        relay = Some(tokio::spawn(async move {
                            while let Some(m) = rx.recv().await {
                                if out.send(&m).await.is_err() {
                                    return;
                                }
                            }
                        }));
                    }
                    if message.method() == Some("initialize") {
                        continue;
                    }
                    s
                }
                None => continue,
            },
        };
        match message.kind() {
            Kind::Request => {
                // One task per request drives its work and writes what it produces.
                let (work, mut replies) = current.request(message);
                let out = out.clone();
                requests.spawn(async move {
                    let forward = async {
                        while let Some(m) = replies.recv().await {
                            if out.send(&m).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::join!(work, forward);
                });
                while requests.try_join_next().is_some() {}
            }
            Kind::Notification => current.handle_notification(message),
            Kind::Response => current.handle_response(message),
        }
    }
    // The input is over: answer what is in flight (a client may pipe requests in and close),
    // then end the session (its upstreams stop) and the stream of unsolicited messages.
    while requests.join_next().await.is_some() {}
    if let Some(s) = session.take() {
        gateway.close_session(&s.id);
    }
    if let Some(relay) = relay {
        relay.abort();
    }
    Ok(())
}

/// Before a session exists: `initialize` opens one, a 2026-07-28 request opens a stateless one,
/// `ping` is answered, anything else is refused.
async fn first_message(
    gateway: &Arc<Gateway>,
    grant: &Arc<Grant>,
    message: &Message,
    out: &Output,
) -> std::io::Result<Option<Arc<Session>>> {
    let id = message.id().cloned();
    let params = message.params().unwrap_or_default();
    let modern = params
        .get_object("_meta")
        .and_then(|m| m.get_str("io.modelcontextprotocol/protocolVersion"))
        .is_some();
    let (reply, session) = match (message.kind(), message.method(), id) {
        (Kind::Request, Some("initialize"), Some(id)) => {
            match gateway.initialize(grant.clone(), None, &params).await {
                Ok((s, result)) => (Some(Message::response(id, result)), Some(s)),
                Err(e) => (
                    Some(Message::error(
                        Some(id),
                        ErrorCode::Internal.code(),
                        &e.to_string(),
                    )),
                    None,
                ),
            }
        }
        // A stateless client on stdio is still one process: it gets a session of its own rather
        // than the grant's shared one, so that its request ids cannot meet another client's.
        (Kind::Request, _, id) if modern => {
            let caps = raw(&serde_json::json!({}));
            let info = raw(
                &serde_json::json!({"name": "toolgate-stateless", "version": env!("CARGO_PKG_VERSION")}),
            );
            match gateway
                .open_session(grant.clone(), None, Mode::Stateless, &caps, &info)
                .await
            {
                Ok(s) => (None, Some(s)),
                Err(e) => (
                    Some(Message::error(
                        id,
                        ErrorCode::Internal.code(),
                        &e.to_string(),
                    )),
                    None,
                ),
            }
        }
        (Kind::Request, Some("ping"), Some(id)) => (
            Some(Message::response(id, raw(&serde_json::json!({})))),
            None,
        ),
        (Kind::Request, _, id) => (
            Some(Message::error(
                id,
                ErrorCode::InvalidRequest.code(),
                "the session is not initialized: send initialize first",
            )),
            None,
        ),
        _ => (None, None),
    };
    if let Some(reply) = reply {
        out.send(&reply).await?;
    }
    Ok(session)
}
