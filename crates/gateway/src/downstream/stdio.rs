//! The stdio transport for clients that spawn a command: one session for the life of the
//! process, newline-delimited JSON-RPC on stdin and stdout, and nothing else on stdout.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use toolgate_wire::line::{Line, LineReader};
use toolgate_wire::{ErrorCode, Kind, Limits, Message, raw};

use crate::gateway::Gateway;
use crate::grant::Grant;
use crate::session::{Mode, Session};

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
    let (out_tx, out_rx) = mpsc::channel::<Message>(1024);
    let writer = tokio::spawn(write_messages(output, out_rx));
    let mut session: Option<Arc<Session>> = None;
    let mut relay: Option<tokio::task::JoinHandle<()>> = None;

    loop {
        let line = match reader.next_line().await? {
            Line::Data(line) => line,
            Line::TooLong(n) => {
                let msg = format!(
                    "message of {n} bytes exceeds the limit of {} bytes",
                    limits.max_line_bytes
                );
                let _ = out_tx
                    .send(Message::error(None, ErrorCode::InvalidRequest.code(), &msg))
                    .await;
                continue;
            }
            Line::Eof => break,
        };
        let message = match Message::parse(&line, &wire_limits) {
            Ok(m) => m,
            Err(e) => {
                let _ = out_tx.send(Message::from_wire_error(&e)).await;
                continue;
            }
        };
        let current = match &session {
            Some(s) => s.clone(),
            None => match first_message(&gateway, &grant, &message, &out_tx).await {
                Some(s) => {
                    session = Some(s.clone());
                    if let Some(mut rx) = s.take_outbound() {
                        let tx = out_tx.clone();
                        relay = Some(tokio::spawn(async move {
                            while let Some(m) = rx.recv().await {
                                if tx.send(m).await.is_err() {
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
                let mut replies = current.handle_request(message);
                let tx = out_tx.clone();
                tokio::spawn(async move {
                    while let Some(m) = replies.recv().await {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Kind::Notification => current.handle_notification(message),
            Kind::Response => current.handle_response(message),
        }
    }
    // The client is gone: end its session (its upstreams stop) and the stream of unsolicited
    // messages, so the writer drains and returns.
    if let Some(s) = session.take() {
        gateway.close_session(&s.id);
    }
    if let Some(relay) = relay {
        relay.abort();
    }
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

/// Before a session exists: `initialize` opens one, a 2026-07-28 request opens a stateless one,
/// `ping` is answered, anything else is refused.
async fn first_message(
    gateway: &Arc<Gateway>,
    grant: &Arc<Grant>,
    message: &Message,
    out: &mpsc::Sender<Message>,
) -> Option<Arc<Session>> {
    let id = message.id().cloned();
    let params = message.params().unwrap_or_default();
    let modern = params
        .get_object("_meta")
        .and_then(|m| m.get_str("io.modelcontextprotocol/protocolVersion"))
        .is_some();
    let reply = |m: Message| async move {
        let _ = out.send(m).await;
    };
    match (message.kind(), message.method()) {
        (Kind::Request, Some("initialize")) => {
            let empty = raw(&serde_json::json!({}));
            let caps = params
                .get("capabilities")
                .map(|c| c.to_owned())
                .unwrap_or_else(|| empty.clone());
            let info = params
                .get("clientInfo")
                .map(|c| c.to_owned())
                .unwrap_or(empty);
            match gateway
                .open_session(grant.clone(), None, Mode::Handshake, &caps, &info)
                .await
            {
                Ok(s) => {
                    let result = s.initialize_result(params.get_str("protocolVersion").as_deref());
                    reply(Message::response(id?, result)).await;
                    Some(s)
                }
                Err(e) => {
                    reply(Message::error(
                        id,
                        ErrorCode::Internal.code(),
                        &e.to_string(),
                    ))
                    .await;
                    None
                }
            }
        }
        (Kind::Request, _) if modern => {
            match gateway.stateless_session(grant.clone(), None).await {
                Ok(s) => Some(s),
                Err(e) => {
                    reply(Message::error(
                        id,
                        ErrorCode::Internal.code(),
                        &e.to_string(),
                    ))
                    .await;
                    None
                }
            }
        }
        (Kind::Request, Some("ping")) => {
            reply(Message::response(id?, raw(&serde_json::json!({})))).await;
            None
        }
        (Kind::Request, _) => {
            reply(Message::error(
                id,
                ErrorCode::InvalidRequest.code(),
                "the session is not initialized: send initialize first",
            ))
            .await;
            None
        }
        _ => None,
    }
}

async fn write_messages<W: AsyncWrite + Unpin>(mut output: W, mut rx: mpsc::Receiver<Message>) {
    while let Some(m) = rx.recv().await {
        if output.write_all(m.to_line().as_bytes()).await.is_err() {
            return;
        }
        if rx.is_empty() && output.flush().await.is_err() {
            return;
        }
    }
    let _ = output.flush().await;
}
