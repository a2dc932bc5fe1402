//! A minimal MCP server: `echo`, `add` and `countdown` (with progress), over stdio or
//! Streamable HTTP. It stands in front of nothing: it exists so that the quick start has an
//! upstream before `ssh-mcp`, and so that benchmarks measure the gateway, not a heavy server.
//!
//! Usage: `demo-mcp-server` (stdio) or `demo-mcp-server --http 127.0.0.1:9000` (endpoint `/mcp`).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use toolgate_wire::line::{Line, LineReader};
use toolgate_wire::{Kind, Limits, Message, raw};

fn tools() -> Value {
    json!([
        {
            "name": "echo",
            "title": "Echo",
            "description": "Returns its text argument.",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        },
        {
            "name": "add",
            "description": "Adds two numbers.",
            "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]},
            "outputSchema": {"type": "object", "properties": {"sum": {"type": "number"}}, "required": ["sum"]},
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        },
        {
            "name": "countdown",
            "description": "Counts down from n, sending a progress notification per step.",
            "inputSchema": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 100}}},
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        }
    ])
}

/// Answers one message; progress notifications go to `notify` before the response.
async fn answer(message: &Message, notify: &mpsc::UnboundedSender<Message>) -> Option<Message> {
    if message.kind() != Kind::Request {
        return None;
    }
    let id = message.id()?.clone();
    let params: Value = message
        .params_raw()
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or(json!({}));
    let result = match message.method()? {
        "initialize" => {
            let asked = params["protocolVersion"].as_str().unwrap_or("2025-11-25");
            let version =
                if ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"].contains(&asked) {
                    asked
                } else {
                    "2025-11-25"
                };
            json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {"name": "demo-mcp-server", "version": env!("CARGO_PKG_VERSION")},
                "instructions": "A demo server: echo, add, countdown."
            })
        }
        "ping" => json!({}),
        "tools/list" => json!({"tools": tools()}),
        "tools/call" => {
            let args = &params["arguments"];
            match params["name"].as_str().unwrap_or_default() {
                "echo" => {
                    json!({"content": [{"type": "text", "text": args["text"].as_str().unwrap_or_default()}]})
                }
                "add" => {
                    let sum = args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0);
                    json!({"content": [{"type": "text", "text": sum.to_string()}], "structuredContent": {"sum": sum}})
                }
                "countdown" => {
                    let n = args["n"].as_u64().unwrap_or(3).min(100);
                    let token = params["_meta"]["progressToken"].clone();
                    for i in 0..n {
                        if !token.is_null() {
                            let p = json!({"progressToken": token, "progress": i + 1, "total": n});
                            let _ = notify.send(Message::notification(
                                "notifications/progress",
                                Some(&raw(&p)),
                            ));
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    json!({"content": [{"type": "text", "text": "liftoff"}]})
                }
                other => {
                    return Some(Message::error(
                        Some(id),
                        -32602,
                        &format!("Unknown tool: {other}"),
                    ));
                }
            }
        }
        other => {
            return Some(Message::error(
                Some(id),
                -32601,
                &format!("Method not found: {other}"),
            ));
        }
    };
    Some(Message::response(id, raw(&result)))
}

async fn serve_stdio() {
    let (stdin, stdout) = toolgate_wire::line::stdio();
    let out = Arc::new(tokio::sync::Mutex::new(stdout));
    // Slow calls (countdown) run on tasks of their own and write through this channel, so that
    // their progress notifications precede their response.
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = {
        let out = out.clone();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if out
                    .lock()
                    .await
                    .write_all(m.to_line().as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    let mut lines = LineReader::new(BufReader::new(stdin), 4 << 20);
    loop {
        let line = match lines.next_line().await {
            Ok(Line::Data(line)) => line,
            Ok(Line::TooLong(_)) => continue,
            Ok(Line::Eof) | Err(_) => break,
        };
        let Ok(message) = Message::parse(&line, &Limits::default()) else {
            continue;
        };
        let slow = message
            .params()
            .ok()
            .and_then(|p| p.get_str("name"))
            .as_deref()
            == Some("countdown");
        if slow {
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(reply) = answer(&message, &tx).await {
                    let _ = tx.send(reply);
                }
            });
        } else if let Some(reply) = answer(&message, &tx).await
            && out
                .lock()
                .await
                .write_all(reply.to_line().as_bytes())
                .await
                .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

async fn serve_http(addr: &str) {
    let sessions = Arc::new(AtomicU64::new(1));
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let sessions = sessions.clone();
            async move { post(headers, body, &sessions).await }
        })
        .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
        .delete(|| async { StatusCode::OK }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind the demo server's address");
    eprintln!(
        "demo-mcp-server listening on http://{}/mcp",
        listener.local_addr().expect("bound")
    );
    axum::serve(listener, app).await.expect("serve");
}

async fn post(_headers: HeaderMap, body: axum::body::Bytes, sessions: &AtomicU64) -> Response {
    let Ok(message) = Message::parse(&body, &Limits::default()) else {
        return (StatusCode::BAD_REQUEST, "invalid JSON-RPC").into_response();
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let Some(reply) = answer(&message, &tx).await else {
        return StatusCode::ACCEPTED.into_response();
    };
    drop(tx);
    let mut notes = Vec::new();
    while let Ok(m) = rx.try_recv() {
        notes.push(m);
    }
    let mut response = if notes.is_empty() {
        (
            [(header::CONTENT_TYPE, "application/json")],
            reply.to_json(),
        )
            .into_response()
    } else {
        let mut body = String::new();
        for m in notes.iter().chain(std::iter::once(&reply)) {
            body.push_str(&toolgate_wire::sse::encode(&m.to_json(), None));
        }
        ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
    };
    if message.method() == Some("initialize") {
        let id = format!("demo-{}", sessions.fetch_add(1, Ordering::Relaxed));
        response
            .headers_mut()
            .insert("mcp-session-id", id.parse().expect("ascii"));
    }
    response
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().position(|a| a == "--http") {
        Some(i) => {
            serve_http(
                args.get(i + 1)
                    .map(String::as_str)
                    .unwrap_or("127.0.0.1:9000"),
            )
            .await
        }
        None => serve_stdio().await,
    }
}
