//! A deliberately tiny HTTP/1.1 client over one keep-alive `TcpStream`: just enough to speak
//! MCP's Streamable HTTP (POST and DELETE, `Content-Length` or chunked answers) without putting
//! an HTTP library's cost into the numbers.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The protocol version the bench negotiates.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

/// One answer.
pub struct Response {
    pub status: u16,
    pub session: Option<String>,
    pub body: Vec<u8>,
}

/// One persistent connection.
pub struct Conn {
    stream: TcpStream,
    host: String,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            host: addr.to_string(),
            buf: Vec::with_capacity(16 * 1024),
            out: Vec::with_capacity(1024),
        })
    }

    /// Sends one request (`headers` is a block of `Name: value\r\n` lines) and reads the answer.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: &[u8],
    ) -> anyhow::Result<Response> {
        self.out.clear();
        write!(
            self.out,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )?;
        self.out.extend_from_slice(body);
        self.stream.write_all(&self.out).await?;
        self.read_response().await
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Position just past the first `\r\n` (or `\r\n\r\n` when `double`) in the buffer.
    async fn find(&mut self, double: bool) -> anyhow::Result<usize> {
        let needle: &[u8] = if double { b"\r\n\r\n" } else { b"\r\n" };
        loop {
            if let Some(at) = self.buf.windows(needle.len()).position(|w| w == needle) {
                return Ok(at + needle.len());
            }
            self.fill().await?;
        }
    }

    async fn take(&mut self, n: usize) -> anyhow::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn read_response(&mut self) -> anyhow::Result<Response> {
        let end = self.find(true).await?;
        let head = std::str::from_utf8(&self.buf[..end])
            .context("response head is not UTF-8")?
            .to_owned();
        self.buf.drain(..end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        let mut session = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().context("bad Content-Length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("mcp-session-id") {
                session = Some(value.to_owned());
            }
        }
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let end = self.find(false).await?;
                let size_line = std::str::from_utf8(&self.buf[..end - 2])?.to_owned();
                self.buf.drain(..end);
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .with_context(|| format!("bad chunk size {size_line:?}"))?;
                if size == 0 {
                    // Trailers, then the final empty line.
                    loop {
                        let end = self.find(false).await?;
                        self.buf.drain(..end);
                        if end == 2 {
                            break;
                        }
                    }
                    break;
                }
                let mut chunk = self.take(size + 2).await?;
                chunk.truncate(size);
                body.extend_from_slice(&chunk);
            }
            body
        } else if let Some(n) = length {
            self.take(n).await?
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else {
            bail!("response with neither Content-Length nor chunked encoding (status {status})");
        };
        Ok(Response {
            status,
            session,
            body,
        })
    }
}

/// One MCP session over Streamable HTTP, on its own connection.
pub struct Session {
    conn: Conn,
    path: String,
    /// Every header a request in the session carries, preformatted.
    headers: String,
    next_id: u64,
}

fn base_headers(token: Option<&str>) -> String {
    let mut h = String::from(
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n",
    );
    if let Some(t) = token {
        h.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    h
}

/// `initialize`, then `notifications/initialized`, on `conn`; returns the headers every later
/// request of the session carries.
pub async fn handshake(conn: &mut Conn, path: &str, token: Option<&str>) -> anyhow::Result<String> {
    let headers = base_headers(token);
    let init = format!(
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{{}},"clientInfo":{{"name":"toolgate-bench","version":"{}"}}}}}}"#,
        env!("CARGO_PKG_VERSION")
    );
    let r = conn
        .request("POST", path, &headers, init.as_bytes())
        .await?;
    if r.status != 200 || !contains(&r.body, b"\"result\"") {
        bail!(
            "initialize at {}{path} answered {}: {}",
            conn.host,
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    let id = r
        .session
        .with_context(|| format!("initialize at {}{path} gave no Mcp-Session-Id", conn.host))?;
    let headers =
        format!("{headers}Mcp-Session-Id: {id}\r\nMcp-Protocol-Version: {PROTOCOL_VERSION}\r\n");
    let r = conn
        .request(
            "POST",
            path,
            &headers,
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        )
        .await?;
    if !(200..300).contains(&r.status) {
        bail!("notifications/initialized answered {}", r.status);
    }
    Ok(headers)
}

impl Session {
    /// Connects and opens a session.
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Session> {
        let mut conn = Conn::connect(addr).await?;
        let headers = handshake(&mut conn, path, token).await?;
        Ok(Session {
            conn,
            path: path.to_owned(),
            headers,
            next_id: 1,
        })
    }

    /// One `tools/call` of `echo`; an error answer is an error.
    pub async fn call(&mut self) -> anyhow::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let body = call_body(id);
        let r = self
            .conn
            .request("POST", &self.path, &self.headers, body.as_bytes())
            .await?;
        if r.status != 200
            || !contains(&r.body, b"\"result\"")
            || contains(&r.body, b"\"isError\":true")
        {
            bail!(
                "tools/call answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        Ok(())
    }

    /// `DELETE`: ends the session (and, behind the gateway, its per-session upstream).
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.conn
            .request("DELETE", &self.path, &self.headers, b"")
            .await?;
        Ok(())
    }
}

/// The request every mode times: `echo` with a short text.
pub fn call_body(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"hello from toolgate-bench"}}}}}}"#
    )
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
