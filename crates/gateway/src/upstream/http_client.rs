//! A small HTTP/1.1 client for Streamable HTTP upstreams (and the approvals webhook): requests
//! written and responses read with `httparse` in the caller's task, TLS by rustls for
//! `https://`, and a pool of idle keep-alive connections per upstream.
//!
//! It does what the relay needs and no more: a request is a head and a whole body; a response
//! body is read as it arrives (`Content-Length`, chunked, or to the end of the connection), so
//! that an event stream is relayed event by event. Written here rather than taken from hyper's
//! client because that costs a connection task per upstream connection, a hand-off to it and
//! back per request, and its header map and body channel: about a sixth of the gateway's
//! instructions per call relayed to an HTTP upstream.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept per upstream; more are closed when returned.
const MAX_IDLE: usize = 64;
/// A connection idle this long is closed rather than reused: common servers (Node's, uvicorn)
/// close theirs after 5 s, and a request written just as the server closes is lost (it gets
/// no response, and cannot safely be sent again: the upstream may have acted on it).
const REUSE_WITHIN: Duration = Duration::from_secs(4);
/// The longest response head (status line and fields) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a response head may have.
const MAX_FIELDS: usize = 64;
/// The longest line of chunked framing (a chunk's size with its extensions, a trailer field).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Room made in a connection's buffer before each read (a session's standing event stream
/// keeps its connection, and so this much, for as long as it lasts).
const READ_SIZE: usize = 8 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum HttpError {
    /// No connection could be made: the upstream is down.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// The request or its response failed.
    #[error("HTTP request failed: {0}")]
    Request(String),
}

/// One upstream endpoint and its idle connections.
pub(super) struct HttpClient {
    authority: String,
    host: String,
    path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Idle connections, each with when it went idle.
    idle: Mutex<Vec<(Conn, Instant)>>,
    reuse_within: Duration,
}

/// A request to the endpoint, its head written as it is built.
pub(super) struct Request {
    head: Vec<u8>,
    body: Bytes,
    /// Whether the method carries content (then `Content-Length` goes even when it is 0; a
    /// `GET` or `DELETE` without a body has none, as RFC 9110 asks).
    has_content: bool,
}

impl Request {
    /// Adds a header field (the value is a `HeaderValue`, so it holds no line break).
    pub(super) fn header(mut self, name: &str, value: &HeaderValue) -> Request {
        self.head.extend_from_slice(name.as_bytes());
        self.head.extend_from_slice(b": ");
        self.head.extend_from_slice(value.as_bytes());
        self.head.extend_from_slice(b"\r\n");
        self
    }

    /// Sets the body (sent with its `Content-Length`).
    pub(super) fn body(mut self, body: impl Into<Bytes>) -> Request {
        self.body = body.into();
        self
    }
}

/// What the relay reads of a response head.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub(super) status: StatusCode,
    /// Whether the body is an event stream (`Content-Type: text/event-stream`).
    pub(super) event_stream: bool,
    /// `Mcp-Session-Id`, when it is a valid header value (it is sent back as one).
    pub(super) session_id: Option<HeaderValue>,
}

impl HttpClient {
    /// The client for a URL, shared by every connection to it: upstream sessions are told apart
    /// by a header, not by the TCP connection, so all sessions draw on one pool.
    pub(super) fn shared(url: &str, ca_file: Option<&Path>) -> Result<Arc<HttpClient>, String> {
        type Clients = Mutex<HashMap<(String, Option<PathBuf>), Arc<HttpClient>>>;
        static CLIENTS: OnceLock<Clients> = OnceLock::new();
        let key = (url.to_owned(), ca_file.map(Path::to_path_buf));
        let mut clients = CLIENTS.get_or_init(Default::default).lock().unwrap();
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = Arc::new(HttpClient::new(url, ca_file)?);
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// A client for an `http://` or `https://` URL; `https://` trusts the system's CA
    /// certificates, or those in `ca_file`.
    pub(super) fn new(url: &str, ca_file: Option<&Path>) -> Result<HttpClient, String> {
        let (rest, secure) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url:?} has no usable host"));
        }
        // Both go into the request line and `Host` as they are.
        if HeaderValue::from_str(authority).is_err() || path.bytes().any(|b| b <= b' ' || b == 0x7f)
        {
            return Err(format!("{url:?} has an invalid host or path"));
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port))
                if !authority.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (host, Some(port))
            }
            _ => (authority, None),
        };
        let default_port = if secure { "443" } else { "80" };
        let tls = match secure {
            true => {
                let name = host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(name.to_owned())
                    .map_err(|_| format!("{url:?} has an invalid host name"))?;
                Some((tls_connector(ca_file)?, name))
            }
            false => None,
        };
        Ok(HttpClient {
            host: authority.to_owned(),
            authority: format!("{host}:{}", port.unwrap_or(default_port)),
            path,
            tls,
            idle: Mutex::new(Vec::new()),
            reuse_within: REUSE_WITHIN,
        })
    }

    /// A request to this endpoint (`Host` set, target the endpoint's path).
    pub(super) fn request(&self, method: Method) -> Request {
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(self.path.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        head.extend_from_slice(self.host.as_bytes());
        head.extend_from_slice(b"\r\n");
        Request {
            head,
            body: Bytes::new(),
            has_content: method == Method::POST || method == Method::PUT || method == Method::PATCH,
        }
    }

    /// Sends a request on an idle connection, or a new one, and reads the response's head.
    pub(super) async fn send(
        self: &Arc<Self>,
        request: Request,
    ) -> Result<(ResponseHead, Body), HttpError> {
        let Request {
            mut head,
            body,
            has_content,
        } = request;
        if has_content || !body.is_empty() {
            let _ = write!(head, "content-length: {}\r\n", body.len());
        }
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(&body);
        let reused = match self.idle_connection() {
            // A write that fails there means it was closed while idle, and nothing of the
            // request reached the server: once more on a new connection.
            Some(mut conn) => conn.write(&head).await.is_ok().then_some(conn),
            None => None,
        };
        let mut conn = match reused {
            Some(conn) => conn,
            None => {
                let mut conn = self.connect().await?;
                let written = conn.write(&head).await;
                written.map_err(|e| HttpError::Request(e.to_string()))?;
                conn
            }
        };
        let (head, framing, reusable) = conn.read_head().await?;
        Ok((
            head,
            Body {
                conn: Some(conn),
                framing,
                reusable,
                client: self.clone(),
            },
        ))
    }

    /// An idle connection that is still open and was used recently. The others are closed
    /// (the newest is taken first, so all those below a stale one are stale too).
    fn idle_connection(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap();
        while let Some((mut conn, since)) = idle.pop() {
            if since.elapsed() >= self.reuse_within {
                idle.clear();
                return None;
            }
            if conn.is_idle_and_open() {
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, HttpError> {
        let connect_error = |e: String| HttpError::Connect(self.authority.clone(), e);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| connect_error("timed out".into()))?
            .map_err(|e| connect_error(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let io = match &self.tls {
            None => Stream::Plain(stream),
            Some((connector, name)) => {
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), stream))
                        .await
                        .map_err(|_| connect_error("TLS handshake timed out".into()))?
                        .map_err(|e| connect_error(format!("TLS: {e}")))?;
                Stream::Tls(Box::new(stream))
            }
        };
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_SIZE),
        })
    }

    fn give_back(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE && conn.buf.is_empty() {
            idle.push((conn, Instant::now()));
        }
    }
}

/// A connection to the upstream, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A connection and what was read of it beyond what has been used.
struct Conn {
    io: Stream,
    buf: BytesMut,
}

impl Conn {
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Reads more into the buffer; `Ok(false)` at the end of the connection.
    async fn fill(&mut self) -> io::Result<bool> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        Ok(self.io.read_buf(&mut self.buf).await? > 0)
    }

    /// Whether an idle connection can carry a request: anything to read on it (data, its end,
    /// an error) means the server closed it or broke the protocol.
    fn is_idle_and_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Reads the response's head (past any interim 1xx): what the relay needs of it, how its
    /// body is framed, and whether the connection can carry another request after it.
    async fn read_head(&mut self) -> Result<(ResponseHead, Framing, bool), HttpError> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
            let mut response = httparse::Response::new(&mut fields);
            let parsed = response
                .parse(&self.buf)
                .map_err(|e| HttpError::Request(format!("invalid response head: {e}")))?;
            let httparse::Status::Complete(len) = parsed else {
                if self.buf.len() > MAX_HEAD {
                    return Err(HttpError::Request(format!(
                        "response head longer than {MAX_HEAD} bytes"
                    )));
                }
                match self.fill().await {
                    Ok(true) => continue,
                    Ok(false) => {
                        return Err(HttpError::Request(
                            "the connection closed before a response".into(),
                        ));
                    }
                    Err(e) => return Err(HttpError::Request(e.to_string())),
                }
            };
            let status = response
                .code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| HttpError::Request("invalid response status".into()))?;
            let mut head = ResponseHead {
                status,
                event_stream: false,
                session_id: None,
            };
            let mut keep_alive = response.version == Some(1);
            let mut length: Option<u64> = None;
            let mut chunked = None;
            for field in response.headers.iter() {
                let name = field.name;
                let value = field.value;
                if name.eq_ignore_ascii_case("content-length") {
                    let n = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .filter(|n| length.is_none_or(|l| l == *n))
                        .ok_or_else(|| HttpError::Request("invalid Content-Length".into()))?;
                    length = Some(n);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    // Chunked when it is the last coding; any other ends with the connection.
                    let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                    chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                } else if name.eq_ignore_ascii_case("connection") {
                    for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                        if token.eq_ignore_ascii_case(b"close") {
                            keep_alive = false;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            keep_alive |= response.version == Some(0);
                        }
                    }
                } else if name.eq_ignore_ascii_case("content-type") {
                    const SSE: &[u8] = b"text/event-stream";
                    head.event_stream = value
                        .get(..SSE.len())
                        .is_some_and(|v| v.eq_ignore_ascii_case(SSE));
                } else if name.eq_ignore_ascii_case("mcp-session-id") {
                    head.session_id = HeaderValue::from_bytes(value).ok();
                }
            }
            self.buf.advance(len);
            let code = status.as_u16();
            if (100..200).contains(&code) && code != 101 {
                continue;
            }
            let framing = if code < 200 || code == 204 || code == 304 {
                Framing::Length(0)
            } else {
                match (chunked, length) {
                    (Some(true), _) => Framing::Chunked(Chunk::Size),
                    (Some(false), _) => Framing::ToEnd,
                    (None, Some(n)) => Framing::Length(n),
                    (None, None) => Framing::ToEnd,
                }
            };
            let reusable = keep_alive && !matches!(framing, Framing::ToEnd) && code != 101;
            return Ok((head, framing, reusable));
        }
    }
}

/// How a response body is delimited, and where its reading stands.
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked transfer coding.
    Chunked(Chunk),
    /// Until the connection ends.
    ToEnd,
}

/// Where a chunked body's reading stands.
#[derive(Clone, Copy)]
enum Chunk {
    /// At a chunk's size line.
    Size,
    /// In a chunk's data, with this many bytes left.
    Data(u64),
    /// At the line break after a chunk's data.
    DataEnd,
    /// In the trailer fields after the last chunk.
    Trailers,
}

/// What the buffer yields next.
enum Step {
    Data(Bytes),
    /// Nothing until more is read.
    More,
    /// The body ended.
    End,
}

/// The next piece of a body from `buf`, as `framing` delimits it.
fn step(framing: &mut Framing, buf: &mut BytesMut) -> Result<Step, String> {
    loop {
        match framing {
            Framing::Length(0) => return Ok(Step::End),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                return Ok(Step::Data(buf.split_to(n).freeze()));
            }
            Framing::ToEnd => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                return Ok(Step::Data(buf.split().freeze()));
            }
            Framing::Chunked(chunk) => match *chunk {
                Chunk::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::More);
                    };
                    let size = line.split(|&b| b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(size.trim_ascii())
                        .ok()
                        .filter(|s| !s.is_empty())
                        .and_then(|s| u64::from_str_radix(s, 16).ok())
                        .ok_or("invalid chunk size")?;
                    *chunk = match size {
                        0 => Chunk::Trailers,
                        n => Chunk::Data(n),
                    };
                }
                Chunk::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    *chunk = match left - n as u64 {
                        0 => Chunk::DataEnd,
                        left => Chunk::Data(left),
                    };
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("a chunk is longer than its size".into());
                    }
                    buf.advance(2);
                    *chunk = Chunk::Size;
                }
                Chunk::Trailers => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::More);
                    };
                    if line.is_empty() {
                        *framing = Framing::Length(0);
                    }
                }
            },
        }
    }
}

/// The next CRLF-ended line of chunked framing, taken off `buf`, without its line break.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, String> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(at) => {
            let line = buf.split_to(at).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_CHUNK_LINE => Err("a chunk's framing line is too long".into()),
        None => Ok(None),
    }
}

/// TLS settings for `https://` upstreams: rustls with the ring provider, trusting `ca_file`'s
/// certificates, or else the system's.
fn tls_connector(ca_file: Option<&Path>) -> Result<TlsConnector, String> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;

    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(file) => {
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("{}: {e}", file.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err("no CA certificates to trust (set ca_file)".into());
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A response body; its connection goes back to the pool once the body has been read to the
/// end (dropped before, the connection is closed).
pub(super) struct Body {
    conn: Option<Conn>,
    framing: Framing,
    reusable: bool,
    client: Arc<HttpClient>,
}

impl Body {
    /// The next chunk of data, `None` at the end.
    pub(super) async fn chunk(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            let conn = self.conn.as_mut()?;
            match step(&mut self.framing, &mut conn.buf) {
                Ok(Step::Data(data)) => return Some(Ok(data)),
                Ok(Step::End) => {
                    let conn = self.conn.take()?;
                    if self.reusable {
                        self.client.give_back(conn);
                    }
                    return None;
                }
                Ok(Step::More) => match conn.fill().await {
                    Ok(true) => {}
                    Ok(false) if matches!(self.framing, Framing::ToEnd) => {
                        self.conn = None;
                        return None;
                    }
                    Ok(false) => {
                        self.conn = None;
                        return Some(Err("the connection closed mid-body".into()));
                    }
                    Err(e) => {
                        self.conn = None;
                        return Some(Err(e.to_string()));
                    }
                },
                Err(e) => {
                    self.conn = None;
                    return Some(Err(e));
                }
            }
        }
    }

    /// The whole body, refused beyond `max` bytes.
    pub(super) async fn collect(mut self, max: usize) -> Result<Bytes, String> {
        // A body that comes in one piece (the usual case) is passed on without a copy.
        let mut first = Bytes::new();
        let mut joined = BytesMut::new();
        while let Some(chunk) = self.chunk().await {
            let chunk = chunk?;
            if first.len() + joined.len() + chunk.len() > max {
                return Err(format!("response larger than {max} bytes"));
            }
            if first.is_empty() && joined.is_empty() {
                first = chunk;
            } else {
                joined.extend_from_slice(&std::mem::take(&mut first));
                joined.extend_from_slice(&chunk);
            }
        }
        Ok(if joined.is_empty() {
            first
        } else {
            joined.freeze()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn urls_split_into_authority_and_path() {
        let c = HttpClient::new("http://127.0.0.1:9000/mcp", None).unwrap();
        assert_eq!(
            (c.authority.as_str(), c.path.as_str()),
            ("127.0.0.1:9000", "/mcp")
        );
        let c = HttpClient::new("http://docs.internal", None).unwrap();
        assert_eq!(
            (c.authority.as_str(), c.path.as_str()),
            ("docs.internal:80", "/")
        );
        let c = HttpClient::new("http://[::1]:8080/a/mcp?x=1", None).unwrap();
        assert_eq!(
            (c.authority.as_str(), c.path.as_str()),
            ("[::1]:8080", "/a/mcp?x=1")
        );
        let missing = HttpClient::new(
            "https://example.org/mcp",
            Some(Path::new("/nonexistent/ca.pem")),
        );
        assert!(
            missing
                .err()
                .unwrap()
                .contains("cannot read /nonexistent/ca.pem")
        );
        assert!(HttpClient::new("http://user@host/mcp", None).is_err());
        assert!(HttpClient::new("ftp://host/mcp", None).is_err());
        assert!(HttpClient::new("http://host/a b", None).is_err());
    }

    /// A server on loopback that answers each request read on a connection with the next of
    /// `answers` (raw bytes), counting connections, and reporting each request it read.
    async fn server(
        answers: Vec<&'static [u8]>,
    ) -> (
        String,
        Arc<std::sync::atomic::AtomicUsize>,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (seen, requests) = tokio::sync::mpsc::unbounded_channel();
        let count = accepted.clone();
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (answers, seen) = (answers.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // A request: its head, then Content-Length bytes.
                        let end = loop {
                            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break at + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match tcp.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.parse().unwrap());
                        while buf.len() < end + length {
                            let mut chunk = [0u8; 4096];
                            let n = tcp.read(&mut chunk).await.unwrap();
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        let body = String::from_utf8_lossy(&buf[end..end + length]).to_string();
                        buf.drain(..end + length);
                        let _ = seen.send(format!("{head}{body}"));
                        let Some(answer) = answers.lock().unwrap().next() else {
                            return;
                        };
                        if tcp.write_all(answer).await.is_err() {
                            return;
                        }
                        if answer.starts_with(b"HTTP/1.1 200 OK\r\nconnection: close") {
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted, requests)
    }

    async fn call(client: &Arc<HttpClient>, body: &'static str) -> (ResponseHead, Bytes) {
        let request = client
            .request(Method::POST)
            .header(
                "content-type",
                &HeaderValue::from_static("application/json"),
            )
            .body(body);
        let (head, body) = client.send(request).await.unwrap();
        (head, body.collect(1 << 20).await.unwrap())
    }

    #[tokio::test]
    async fn requests_carry_their_head_and_body_and_a_kept_alive_connection_is_reused() {
        let (url, accepted, mut seen) = server(vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: s-1\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"b\r\n4;ext=1\r\n\":2}\r\n0\r\nX-Trailer: t\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let client = Arc::new(HttpClient::new(&url, None).unwrap());
        let (head, body) = call(&client, "{\"jsonrpc\":\"2.0\"}").await;
        assert_eq!(head.status, StatusCode::OK);
        assert!(!head.event_stream);
        assert_eq!(head.session_id.unwrap(), "s-1");
        assert_eq!(&body[..], b"{\"a\":1}");
        let request = seen.recv().await.unwrap();
        assert!(
            request.starts_with("POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:"),
            "{request}"
        );
        assert!(
            request.ends_with(
                "content-type: application/json\r\ncontent-length: 17\r\n\r\n{\"jsonrpc\":\"2.0\"}"
            ),
            "{request}"
        );
        let (head, body) = call(&client, "{}").await;
        assert_eq!((head.status, &body[..]), (StatusCode::ACCEPTED, &b""[..]));
        let (_, body) = call(&client, "{}").await;
        assert_eq!(&body[..], b"{\"b\":2}");
        // A GET carries no body, and says no length.
        let (_, body) = client.send(client.request(Method::GET)).await.unwrap();
        assert_eq!(&body.collect(1024).await.unwrap()[..], b"");
        let mut get = String::new();
        while let Ok(request) = seen.try_recv() {
            get = request;
        }
        assert!(get.starts_with("GET /mcp HTTP/1.1\r\n"), "{get}");
        assert!(!get.contains("content-length"), "{get}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_event_stream_is_read_as_it_arrives() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let (next, mut go) = tokio::sync::mpsc::unbounded_channel::<&'static [u8]>();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = tcp.read(&mut request).await.unwrap();
            while let Some(part) = go.recv().await {
                tcp.write_all(part).await.unwrap();
            }
        });
        let client = Arc::new(HttpClient::new(&url, None).unwrap());
        next.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        let (head, mut body) = client
            .send(client.request(Method::POST).body("{}"))
            .await
            .unwrap();
        assert!(head.event_stream);
        // Each event is read before the next is sent: nothing waits for the end.
        for event in [&b"b\r\ndata: one\n\n\r\n"[..], b"b\r\ndata: two\n\n\r\n"] {
            next.send(event).unwrap();
            let mut got = Vec::new();
            while got.len() < 11 {
                got.extend_from_slice(&body.chunk().await.unwrap().unwrap());
            }
            assert_eq!(&got[..5], b"data:");
        }
        next.send(b"0\r\n\r\n").unwrap();
        assert!(body.chunk().await.is_none());
    }

    #[tokio::test]
    async fn a_closed_connection_is_not_reused_and_a_body_to_the_end_is_read_whole() {
        let (url, accepted, _seen) = server(vec![
            b"HTTP/1.1 200 OK\r\nconnection: close\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
        ])
        .await;
        let client = Arc::new(HttpClient::new(&url, None).unwrap());
        assert_eq!(&call(&client, "{}").await.1[..], b"ok");
        assert_eq!(&call(&client, "{}").await.1[..], b"until the end");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced() {
        // Each connection carries one answer, then the server closes it (as a server whose
        // keep-alive ran out does), though the answer did not say so.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        tokio::spawn(async move {
            for answer in [&b"1"[..], b"2"] {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 1024];
                let _ = tcp.read(&mut request).await.unwrap();
                let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n".to_vec();
                response.extend_from_slice(answer);
                tcp.write_all(&response).await.unwrap();
            }
        });
        let client = Arc::new(HttpClient::new(&url, None).unwrap());
        assert_eq!(&call(&client, "{}").await.1[..], b"1");
        assert_eq!(client.idle.lock().unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The pooled connection is seen closed and a new one carries the request.
        assert_eq!(&call(&client, "{}").await.1[..], b"2");
    }

    proptest::proptest! {
        /// However a chunked body is cut into chunks, and however its bytes arrive, the body
        /// read is the body sent, and what follows it stays on the connection.
        #[test]
        fn chunked_bodies_read_back_whatever_their_chunks_and_reads(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(1usize..600, 0..12),
            reads in proptest::collection::vec(1usize..700, 1..16),
            extension in proptest::prelude::any::<bool>(),
        ) {
            let mut wire = Vec::new();
            let mut rest = &body[..];
            let mut cuts = cuts.into_iter().cycle();
            while !rest.is_empty() {
                let n = cuts.next().unwrap_or(usize::MAX).min(rest.len());
                let ext = if extension { ";name=value" } else { "" };
                wire.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            wire.extend_from_slice(b"0\r\nTrailer: x\r\n\r\nNEXT");
            let mut framing = Framing::Chunked(Chunk::Size);
            let mut buf = BytesMut::new();
            let (mut fed, mut got, mut reads) = (0, Vec::new(), reads.into_iter().cycle());
            loop {
                match step(&mut framing, &mut buf).unwrap() {
                    Step::Data(data) => got.extend_from_slice(&data),
                    Step::End => break,
                    Step::More => {
                        proptest::prop_assert!(fed < wire.len(), "wanted more than was sent");
                        let n = reads.next().unwrap().min(wire.len() - fed);
                        buf.extend_from_slice(&wire[fed..fed + n]);
                        fed += n;
                    }
                }
            }
            proptest::prop_assert_eq!(got, body);
            buf.extend_from_slice(&wire[fed..]);
            proptest::prop_assert_eq!(&buf[..], b"NEXT");
        }
    }

    #[tokio::test]
    async fn a_connection_idle_too_long_is_not_reused() {
        let (url, accepted, _seen) = server(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n3",
        ])
        .await;
        let mut client = HttpClient::new(&url, None).unwrap();
        client.reuse_within = Duration::from_millis(200);
        let client = Arc::new(client);
        assert_eq!(&call(&client, "{}").await.1[..], b"1");
        assert_eq!(&call(&client, "{}").await.1[..], b"2");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Still open, but idle too long: a new connection carries the call.
        assert_eq!(&call(&client, "{}").await.1[..], b"3");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn bad_framing_is_an_error_not_a_guess() {
        let mut chunked = Framing::Chunked(Chunk::Size);
        let mut buf = BytesMut::from(&b"zz\r\n"[..]);
        assert_eq!(
            step(&mut chunked, &mut buf).err().as_deref(),
            Some("invalid chunk size")
        );
        let mut chunked = Framing::Chunked(Chunk::Size);
        let mut buf = BytesMut::from(&b"2\r\nabc\r\n"[..]);
        assert!(matches!(step(&mut chunked, &mut buf), Ok(Step::Data(d)) if &d[..] == b"ab"));
        assert_eq!(
            step(&mut chunked, &mut buf).err().as_deref(),
            Some("a chunk is longer than its size")
        );
        let mut chunked = Framing::Chunked(Chunk::Size);
        let mut buf = BytesMut::from(&[b'1'; MAX_CHUNK_LINE + 1][..]);
        assert!(step(&mut chunked, &mut buf).is_err());
        // A size that does not fit is refused, not wrapped.
        let mut chunked = Framing::Chunked(Chunk::Size);
        let mut buf = BytesMut::from(&b"1ffffffffffffffff\r\n"[..]);
        assert!(step(&mut chunked, &mut buf).is_err());
    }

    #[tokio::test]
    async fn a_response_head_that_does_not_parse_or_never_ends_fails_the_request() {
        let endless: &'static [u8] = {
            let mut head = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
            head.resize(MAX_HEAD + 4096, b'a');
            head.leak()
        };
        for (answer, why) in [
            (&b"HTTP/1.1 abc\r\n\r\n"[..], "invalid response head"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "invalid Content-Length",
            ),
            (endless, "response head longer than"),
        ] {
            let (url, _, _seen) = server(vec![answer]).await;
            let client = Arc::new(HttpClient::new(&url, None).unwrap());
            let failed = client.send(client.request(Method::POST)).await.err();
            let failed = failed.expect("the request fails").to_string();
            assert!(failed.contains(why), "{failed}");
        }
    }
}
