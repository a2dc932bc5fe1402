//! The relay floor: the least any HTTP -> stdio relay must do, measured in the same run as
//! toolgate. Per connection it spawns one `demo-mcp-server` (like per-session isolation),
//! and per POST it reads the HTTP request, writes the body as one line to the child, reads
//! one line back and writes it as the HTTP answer: one process hop, no parsing of the JSON,
//! no grant, policy, audit or id remapping. What toolgate adds beyond this floor is its own;
//! what the floor adds over direct is the price of any relay on this machine.
//!
//! It knows only what the bench sends: a body with `"id"` is a request (one line answers
//! it), any other body a notification (202), and DELETE ends nothing but the exchange.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::http::contains;

/// Serves on a loopback port it reports on stderr, on one thread, until killed.
pub fn serve(demo: &Path) -> anyhow::Result<()> {
    crate::serve_loopback("relay floor", |stream| {
        let demo = demo.to_owned();
        async move {
            if let Err(e) = relay(stream, demo).await {
                eprintln!("relay floor: {e:#}");
            }
        }
    })
}

async fn relay(mut stream: TcpStream, demo: PathBuf) -> anyhow::Result<()> {
    let mut child = Command::new(&demo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", demo.display()))?;
    let mut stdin = child.stdin.take().context("piped stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("piped stdout")?);
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    let mut line = Vec::with_capacity(1024);
    let mut answer = Vec::with_capacity(1024);
    loop {
        // The head, then Content-Length bytes of body.
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&buf[..head_end]).context("head is not UTF-8")?;
        let delete = head.starts_with("DELETE ");
        let length = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the client closed the connection mid-request");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = &buf[head_end..head_end + length];
        answer.clear();
        if delete {
            answer.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        } else {
            line.clear();
            line.extend_from_slice(body);
            line.push(b'\n');
            stdin.write_all(&line).await?;
            if contains(body, b"\"id\"") {
                line.clear();
                if stdout.read_until(b'\n', &mut line).await? == 0 {
                    bail!("the upstream closed its stdout");
                }
                answer.extend_from_slice(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: floor\r\nContent-Length: {}\r\n\r\n",
                        line.len()
                    )
                    .as_bytes(),
                );
                answer.extend_from_slice(&line);
            } else {
                answer.extend_from_slice(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
            }
        }
        stream.write_all(&answer).await?;
        buf.drain(..head_end + length);
    }
}
