//! The MCP listener's connections. Every call of a tool is a `POST` to `/mcp` or
//! `/mcp/{server}` with a `Content-Length` body: those requests are read off the socket with
//! `httparse` and answered here, which costs a fraction of hyper's server (its dispatcher,
//! header map, body channel and response encoder were about a sixth of the gateway's
//! instructions per call). A connection whose next request is anything else (a `GET` stream,
//! a `DELETE`, `/healthz`, a chunked body, `Expect`, HTTP/1.0, a head that does not parse)
//! is handed to hyper for the rest of its life, with what was read of it in front.
//!
//! The behaviour is hyper's where a client can tell: keep-alive and pipelining, the deadline
//! on request heads (see [`crate::listener`]), the body's deadline, a client that goes away
//! mid-call drops the call (so the upstream is told), a graceful stop finishes the request
//! in flight, `Date` on every answer.

use std::cell::RefCell;
use std::io::{self, Write};
use std::ops::Range;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::response::Response;
use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::downstream::access::Headers;
use crate::downstream::http::{self, Front};
use crate::listener::{Stop, serve_hyper};

/// Heads longer than this go to hyper (which allows more, and answers 431 past its limit).
const MAX_HEAD: usize = 16 * 1024;
/// Header fields parsed here; a head with more goes to hyper.
const MAX_FIELDS: usize = 48;
/// What a connection reads ahead while a call runs (a pipelined request) before it stops
/// reading until the answer is out.
const MAX_READ_AHEAD: usize = 64 * 1024;
/// What a connection's buffer holds room for before it reads a head.
const READ_SIZE: usize = 8 * 1024;

/// The fields the message handler reads, found once when the head is parsed.
const KNOWN: [&str; 9] = [
    "host",
    "origin",
    "authorization",
    "content-type",
    "content-length",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
];

fn known(name: &[u8]) -> Option<usize> {
    KNOWN.iter().position(|k| k.as_bytes() == name)
}

/// The head of a request served here: its bytes and where its fields are.
#[derive(Default)]
struct Head {
    text: Vec<u8>,
    path: Range<usize>,
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// Where the first field of each [`KNOWN`] name is in `fields`.
    known: [Option<u8>; KNOWN.len()],
    content_length: usize,
    close: bool,
}

impl Headers for Head {
    fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        // Names were lowercased when parsed.
        let at = match known(name.as_bytes()) {
            Some(k) => usize::from(self.known[k]?),
            None => self
                .fields
                .iter()
                .position(|(n, _)| &self.text[n.clone()] == name.as_bytes())?,
        };
        Some(&self.text[self.fields[at].1.clone()])
    }

    fn get_str(&self, name: &str) -> Option<&str> {
        // httparse let no control character into a value: ASCII is visible ASCII here.
        let value = self.get_bytes(name).filter(|v| v.is_ascii())?;
        std::str::from_utf8(value).ok()
    }
}

impl Head {
    fn path(&self) -> &str {
        // Checked as UTF-8 when parsed (httparse's path is a `&str`).
        std::str::from_utf8(&self.text[self.path.clone()]).unwrap_or_default()
    }
}

/// What the bytes at the front of a connection's buffer are.
enum Next {
    /// Not a whole head yet.
    Partial,
    /// A message `POST` served here, whose head is this many bytes.
    Post(usize),
    /// Anything else: hyper's.
    Other,
}

/// Parses the head at the front of `buf` into `head` if it is a request served here.
fn parse(buf: &[u8], head: &mut Head) -> Next {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Next::Partial,
        _ => return Next::Other,
    };
    if request.method != Some("POST") || request.version != Some(1) {
        return Next::Other;
    }
    let Some(path) = request.path.filter(|p| http::message_path(p).is_some()) else {
        return Next::Other;
    };
    let offset = |part: &[u8]| part.as_ptr() as usize - buf.as_ptr() as usize;
    let span = |part: &[u8]| offset(part)..offset(part) + part.len();
    head.text.clear();
    head.text.extend_from_slice(&buf[..len]);
    head.path = span(path.as_bytes());
    head.fields.clear();
    head.close = false;
    let mut content_length = None;
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let valid = !field.value.is_empty() && field.value.iter().all(u8::is_ascii_digit);
            let length = std::str::from_utf8(field.value).ok().filter(|_| valid);
            match (content_length, length.and_then(|l| l.parse::<usize>().ok())) {
                (None, Some(length)) => content_length = Some(length),
                // Repeated or not a number: hyper decides what to answer.
                _ => return Next::Other,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Next::Other;
        } else if name.eq_ignore_ascii_case(b"connection") {
            head.close |= field
                .value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
        head.fields.push((span(name), span(field.value)));
    }
    head.known = Default::default();
    for (at, (name, _)) in head.fields.iter().enumerate() {
        let name = &mut head.text[name.clone()];
        name.make_ascii_lowercase();
        if let Some(k) = known(name) {
            // At most MAX_FIELDS (48) fields: the index fits.
            head.known[k].get_or_insert(at as u8);
        }
    }
    match content_length {
        Some(length) => {
            head.content_length = length;
            Next::Post(len)
        }
        None => Next::Other,
    }
}

/// Serves one connection of the MCP listener until it closes, the listener stops, or its
/// next request is one for hyper.
pub async fn connection(front: Front, mut tcp: TcpStream, header_timeout: Duration, stop: Stop) {
    let state = front.state().clone();
    let limits = &state.gateway.config.limits;
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut head = Head::default();
    let mut out = Vec::with_capacity(1024);
    // One wait for the listener's stop and one timer for the connection's life, rather than
    // one of each per request: the timer is armed with an earlier deadline and, when it
    // fires, moves to the current one (at most once per `header_timeout`).
    let stopped = stop.clone().stopped();
    tokio::pin!(stopped);
    let head_timer = tokio::time::sleep(header_timeout);
    tokio::pin!(head_timer);
    loop {
        // The next head, within the deadline.
        let deadline = Instant::now() + header_timeout;
        let head_len = loop {
            match parse(&buf, &mut head) {
                Next::Post(len) => break len,
                Next::Other => {
                    let read_ahead = buf.freeze();
                    return serve_hyper(tcp, read_ahead, front, header_timeout, stop).await;
                }
                Next::Partial => {}
            }
            // Room for a whole head in one read (the space after the last body is reclaimed
            // when nothing holds it any more).
            if buf.capacity() - buf.len() < READ_SIZE / 2 {
                buf.reserve(READ_SIZE);
            }
            tokio::select! {
                biased;
                () = &mut stopped => return,
                read = tcp.read_buf(&mut buf) => match read {
                    Ok(n) if n > 0 => {}
                    // Closed or broken: nothing to answer.
                    _ => return,
                },
                () = &mut head_timer => {
                    // Too slow: nothing to answer.
                    if Instant::now() >= deadline {
                        return;
                    }
                    head_timer.as_mut().reset(deadline);
                }
            }
        };
        buf.advance(head_len);

        let grant = http::admit_post(&state, &head);
        let body_len = head.content_length;
        let response = match grant {
            Err(refused) => {
                // The body stays unread: skip it if it is here, else end the connection.
                head.close |= buf.len() < body_len;
                if !head.close {
                    buf.advance(body_len);
                }
                refused
            }
            Ok(grant) => match read_body(&mut tcp, &mut buf, body_len, limits.body_timeout).await {
                Err(BodyError::Gone) => return,
                Err(BodyError::Late) => {
                    head.close = true;
                    http::body_timed_out(&state)
                }
                Ok(body) => {
                    let scope = http::message_path(head.path()).flatten();
                    let call = http::post_message_body(&state, scope, &grant, &head, &body);
                    tokio::pin!(call);
                    // A client that goes away mid-call drops the call, as with hyper: the session
                    // tells the upstream. A pipelined request waits in `buf`.
                    loop {
                        tokio::select! {
                            biased;
                            response = &mut call => break response,
                            read = tcp.read_buf(&mut buf), if buf.len() < MAX_READ_AHEAD => match read {
                                Ok(n) if n > 0 => {}
                                _ => return,
                            },
                        }
                    }
                }
            },
        };
        state
            .gateway
            .metrics
            .record_status(response.status().as_u16());
        let close = head.close || stop.requested();
        if write_response(&mut tcp, &mut buf, &mut out, response, close)
            .await
            .is_err()
            || close
            || stop.requested()
        {
            let _ = tcp.shutdown().await;
            return;
        }
    }
}

/// Why a request's body was not read.
enum BodyError {
    /// The client closed the connection or it broke.
    Gone,
    /// The body did not arrive within its deadline.
    Late,
}

/// Reads a body of `len` bytes (some may be in `buf` already) within `timeout`.
///
/// A body that is not all in `buf` is read into an allocation of its own, exactly its
/// size, that goes when the body does: grown to fit, the connection's buffer would keep the
/// largest body it ever carried (up to the body limit) for as long as the connection lives.
async fn read_body<S: AsyncRead + Unpin>(
    tcp: &mut S,
    buf: &mut BytesMut,
    len: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, BodyError> {
    if buf.len() >= len {
        return Ok(buf.split_to(len).freeze());
    }
    let mut body = BytesMut::with_capacity(len);
    body.extend_from_slice(buf);
    buf.clear();
    let deadline = Instant::now() + timeout;
    while body.len() < len {
        // Never past the body: what follows it (a pipelined request) is read into `buf` later.
        let rest = (len - body.len()) as u64;
        match tokio::time::timeout_at(deadline, (&mut *tcp).take(rest).read_buf(&mut body)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Err(BodyError::Gone),
            Err(_) => return Err(BodyError::Late),
        }
    }
    Ok(body.freeze())
}

/// Writes `response`: whole with `Content-Length` when its body's size is known, else (an SSE
/// stream) chunk by chunk as the body yields them, until it ends or the client goes away.
async fn write_response(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    response: Response,
    close: bool,
) -> io::Result<()> {
    let (parts, mut body) = response.into_parts();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or_default()
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    push_date(out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if let Some(length) = hyper::body::Body::size_hint(&body).exact() {
        write!(out, "content-length: {length}\r\n\r\n")?;
        // A body of known size is in memory: its frames are ready.
        while let Some(frame) = next_frame(&mut body).await? {
            out.extend_from_slice(&frame);
        }
        return tcp.write_all(out).await;
    }
    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    tcp.write_all(out).await?;
    loop {
        let frame = tokio::select! {
            biased;
            frame = next_frame(&mut body) => frame?,
            read = tcp.read_buf(buf), if buf.len() < MAX_READ_AHEAD => match read {
                Ok(n) if n > 0 => continue,
                _ => return Err(io::ErrorKind::ConnectionAborted.into()),
            },
        };
        out.clear();
        match frame {
            Some(data) if data.is_empty() => continue,
            Some(data) => {
                write!(out, "{:x}\r\n", data.len())?;
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
                tcp.write_all(out).await?;
            }
            None => return tcp.write_all(b"0\r\n\r\n").await,
        }
    }
}

/// The body's next data frame (trailers are skipped: HTTP/1.1 answers here carry none).
async fn next_frame(body: &mut Body) -> io::Result<Option<bytes::Bytes>> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
            Some(Err(e)) => return Err(io::Error::other(e)),
        }
    }
}

/// `date: <IMF-fixdate>\r\n`, formatted once a second per thread.
fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            *cached = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: &str = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8787\r\nAuthorization: Bearer tg_x\r\n\
                        Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

    fn parsed(text: &str) -> (Next, Head) {
        let mut head = Head::default();
        let next = parse(text.as_bytes(), &mut head);
        (next, head)
    }

    fn with_field(field: &str) -> String {
        CALL.replacen("\r\n\r\n", &format!("\r\n{field}\r\n\r\n"), 1)
    }

    #[tokio::test]
    async fn a_large_body_is_read_whole_into_its_own_allocation_and_not_past_its_end() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        buf.extend_from_slice(&body[..100]);
        let sent = body[100..].to_vec();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.write_all(b"POST /next").await.unwrap();
            client
        });
        let got = read_body(&mut server, &mut buf, body.len(), Duration::from_secs(10))
            .await
            .ok()
            .expect("the body arrives");
        assert_eq!(got, body);
        drop(got);
        // The connection's buffer holds nothing of the body and, once the body is gone, did
        // not keep room for it (making room for the next head, as `connection` does, would
        // take the whole allocation back).
        assert!(buf.is_empty());
        buf.reserve(READ_SIZE);
        assert!(buf.capacity() < 64 * 1024, "{}", buf.capacity());
        // The next request is still on the connection.
        let _client = writer.await.unwrap();
        let mut next = [0u8; 10];
        server.read_exact(&mut next).await.unwrap();
        assert_eq!(&next, b"POST /next");
        // A body already buffered is split off without a read.
        buf.extend_from_slice(b"{}POST");
        let got = read_body(&mut server, &mut buf, 2, Duration::from_secs(1))
            .await
            .ok();
        assert_eq!(got.as_deref(), Some(&b"{}"[..]));
        assert_eq!(&buf[..], b"POST");
    }

    #[test]
    fn a_message_post_is_served_here_with_its_fields_by_lowercase_name() {
        let (next, head) = parsed(&with_field("MCP-Session-Id: abc"));
        let head_len = with_field("MCP-Session-Id: abc").len() - 2;
        assert!(matches!(next, Next::Post(len) if len == head_len));
        assert_eq!(head.content_length, 2);
        assert_eq!(head.path(), "/mcp");
        assert_eq!(head.get_str("mcp-session-id"), Some("abc"));
        assert_eq!(head.get_str("host"), Some("127.0.0.1:8787"));
        assert_eq!(head.get_str("origin"), None);
        assert!(!head.close);
        // The first of repeated fields, as hyper's header map gives; other names are found too.
        let (_, head) = parsed(&with_field("host: elsewhere\r\nX-Trace: 7"));
        assert_eq!(head.get_str("host"), Some("127.0.0.1:8787"));
        assert_eq!(head.get_str("x-trace"), Some("7"));
    }

    #[test]
    fn a_head_in_pieces_is_partial_until_its_blank_line() {
        for cut in [0, 4, 20, CALL.len() - 6] {
            assert!(
                matches!(parsed(&CALL[..cut]).0, Next::Partial),
                "cut at {cut}"
            );
        }
        // The body is not the head's business.
        assert!(matches!(parsed(&CALL[..CALL.len() - 2]).0, Next::Post(_)));
    }

    #[test]
    fn anything_but_a_plain_message_post_is_for_hyper() {
        let others = [
            CALL.replace("POST /mcp", "GET /mcp"),
            CALL.replace("POST /mcp", "POST /healthz"),
            CALL.replace("POST /mcp", "POST /mcp/a%2Fb"),
            CALL.replace("HTTP/1.1", "HTTP/1.0"),
            CALL.replace("Content-Length: 2", "Transfer-Encoding: chunked"),
            CALL.replace("Content-Length: 2", "Content-Length: +2"),
            CALL.replace("Content-Length: 2", "Content-Length: 2, 2"),
            CALL.replace("Content-Length: 2\r\n", ""),
            with_field("Content-Length: 2"),
            with_field("Expect: 100-continue"),
            with_field("Upgrade: websocket"),
            with_field("Bad Name: x"),
            format!("POST /mcp HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD)),
        ];
        for text in others {
            assert!(matches!(parsed(&text).0, Next::Other), "{text:?}");
        }
    }

    #[test]
    fn connection_close_and_the_server_path_are_read() {
        let text = with_field("Connection: keep-alive, Close").replace("/mcp ", "/mcp/ssh?x=1 ");
        let (next, head) = parsed(&text);
        assert!(matches!(next, Next::Post(_)));
        assert!(head.close);
        assert_eq!(http::message_path(head.path()), Some(Some("ssh")));
    }

    #[test]
    fn a_value_that_is_not_ascii_is_no_text() {
        let mut text = with_field("Origin: http://x").into_bytes();
        let at = text.windows(8).position(|w| w == b"http://x").unwrap();
        text[at + 7] = 0xE9;
        let mut head = Head::default();
        assert!(matches!(parse(&text, &mut head), Next::Post(_)));
        assert_eq!(head.get_str("origin"), None);
        assert_eq!(head.get_bytes("origin"), Some(&b"http://\xE9"[..]));
    }
}
