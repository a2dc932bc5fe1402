//! A small Redis client: RESP2 over one TCP connection, pipelined, driven by the calling tasks.
//!
//! A rate-limited call makes one Redis round trip on its way to the upstream, so that round
//! trip is on every such call's latency. Clients built around a connection task (a caller
//! hands its command to the task, the task writes it, reads the reply and hands it back) add
//! two task wake-ups to each round trip, which on a small machine cost more than Redis's own
//! work. Here the caller writes its command itself, then either takes the reading turn (and
//! hands out the replies of the commands queued before its own) or receives its reply from the
//! task that has the turn. One caller alone touches no other task; many callers share one
//! connection, and Redis sees their commands pipelined.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

/// What went wrong talking to Redis.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RespError {
    /// The URL cannot be used.
    #[error("bad Redis URL: {0}")]
    Url(String),
    /// Connecting, reading or writing failed, or Redis did not answer in time; the connection
    /// is dropped and the next command makes a new one.
    #[error("{0}")]
    Io(String),
    /// Redis answered with an error (`-ERR ...`).
    #[error("redis said: {0}")]
    Server(String),
    /// Redis sent something that is not RESP.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// A RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A null bulk string or array.
    Nil,
    /// `:n`
    Int(i64),
    /// `+OK` and bulk strings.
    Bytes(Vec<u8>),
    /// `*n`
    Array(Vec<Value>),
    /// `-ERR ...`
    Error(String),
}

impl Value {
    /// The value, or the error Redis answered with.
    pub fn ok(self) -> Result<Value, RespError> {
        match self {
            Value::Error(e) => Err(RespError::Server(e)),
            v => Ok(v),
        }
    }

    /// An integer array (script answers), or an error naming what came instead.
    pub fn into_ints(self) -> Result<Vec<i64>, RespError> {
        match self.ok()? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::Int(n) => Ok(n),
                    other => Err(RespError::Protocol(format!(
                        "expected integers, got {other:?}"
                    ))),
                })
                .collect(),
            other => Err(RespError::Protocol(format!(
                "expected an array, got {other:?}"
            ))),
        }
    }
}

/// A command, encoded as it goes out: a RESP array of bulk strings.
#[derive(Debug, Clone)]
pub struct Cmd {
    args: usize,
    body: Vec<u8>,
}

impl Cmd {
    /// A command named `name` (`"EVALSHA"`, `"PUBLISH"`, ...).
    pub fn new(name: &str) -> Cmd {
        let mut cmd = Cmd {
            args: 0,
            body: Vec::with_capacity(256),
        };
        cmd.arg(name);
        cmd
    }

    /// Appends one argument.
    pub fn arg(&mut self, arg: impl Arg) -> &mut Cmd {
        arg.write(self);
        self
    }

    fn bulk(&mut self, bytes: &[u8]) {
        self.args += 1;
        self.body.push(b'$');
        self.body
            .extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
    }

    /// The bytes to send.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 16);
        out.push(b'*');
        out.extend_from_slice(itoa::Buffer::new().format(self.args).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// What can be a command argument.
pub trait Arg {
    /// Appends itself to `cmd` as one bulk string.
    fn write(self, cmd: &mut Cmd);
}

impl Arg for &str {
    fn write(self, cmd: &mut Cmd) {
        cmd.bulk(self.as_bytes());
    }
}

impl Arg for &String {
    fn write(self, cmd: &mut Cmd) {
        cmd.bulk(self.as_bytes());
    }
}

impl Arg for &[u8] {
    fn write(self, cmd: &mut Cmd) {
        cmd.bulk(self);
    }
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            fn write(self, cmd: &mut Cmd) {
                cmd.bulk(itoa::Buffer::new().format(self).as_bytes());
            }
        }
    )*};
}
int_arg!(u8, u64, i64, usize);

/// Replies are shallow (scripts answer flat arrays); anything deeper is not Redis talking.
const MAX_DEPTH: usize = 8;
/// The largest bulk string or array accepted, so that a wrong peer cannot make us allocate
/// without bound.
const MAX_LEN: usize = 64 << 20;

/// Parses one value from the front of `buf`: `Ok(None)` when more bytes are needed, else the
/// value and how many bytes it used.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, RespError> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Value, usize)>, RespError> {
    let Some(line_end) = find_crlf(buf, at + 1) else {
        return Ok(None);
    };
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let line = &buf[at + 1..line_end];
    let next = line_end + 2;
    let text = |line: &[u8]| String::from_utf8_lossy(line).into_owned();
    match kind {
        b'+' => Ok(Some((Value::Bytes(line.to_vec()), next))),
        b'-' => Ok(Some((Value::Error(text(line)), next))),
        b':' => Ok(Some((Value::Int(int(line)?), next))),
        b'$' => {
            let len = int(line)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            let len = length(len)?;
            if buf.len() < next + len + 2 {
                return Ok(None);
            }
            if &buf[next + len..next + len + 2] != b"\r\n" {
                return Err(RespError::Protocol("bulk string not ended by CRLF".into()));
            }
            Ok(Some((
                Value::Bytes(buf[next..next + len].to_vec()),
                next + len + 2,
            )))
        }
        b'*' => {
            let len = int(line)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            if depth >= MAX_DEPTH {
                return Err(RespError::Protocol("arrays nested too deep".into()));
            }
            let len = length(len)?;
            let mut items = Vec::with_capacity(len.min(64));
            let mut at = next;
            for _ in 0..len {
                let Some((item, after)) = parse_at(buf, at, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at = after;
            }
            Ok(Some((Value::Array(items), at)))
        }
        other => Err(RespError::Protocol(format!(
            "unexpected type byte {:?}",
            char::from(other)
        ))),
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    rest.windows(2).position(|w| w == b"\r\n").map(|i| from + i)
}

fn int(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RespError::Protocol(format!("bad integer {:?}", text_of(line))))
}

fn length(len: i64) -> Result<usize, RespError> {
    usize::try_from(len)
        .ok()
        .filter(|&n| n <= MAX_LEN)
        .ok_or_else(|| RespError::Protocol(format!("length {len} out of range")))
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned()
}

/// Where and how to connect: `redis://[[user]:password@]host[:port][/db]`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// `host:port`, for connecting.
    pub addr: String,
    /// `AUTH` arguments: user (if any) and password.
    pub auth: Option<(Option<String>, String)>,
    /// `SELECT` argument.
    pub db: u32,
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("RedisUrl")
            .field("addr", &self.addr)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl RedisUrl {
    /// Parses a `redis://` URL. TLS (`rediss://`) and Unix sockets are refused by name, so
    /// that a configuration asking for them fails at start instead of talking in clear.
    pub fn parse(url: &str) -> Result<RedisUrl, RespError> {
        let bad = |m: &str| RespError::Url(m.to_owned());
        let rest = match url.split_once("://") {
            Some(("redis", rest)) => rest,
            Some(("rediss", _)) => {
                return Err(bad(
                    "rediss:// (TLS) is not supported; reach a TLS Redis through a local tunnel (e.g. stunnel) with redis://",
                ));
            }
            Some((scheme, _)) => {
                return Err(RespError::Url(format!(
                    "unsupported scheme {scheme:?}; expected redis://host:port/db"
                )));
            }
            None => return Err(bad("expected redis://host:port/db")),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let path = path.split(['?', '#']).next().unwrap_or("");
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let auth = match userinfo {
            None => None,
            Some(u) => {
                let (user, password) = u.split_once(':').unwrap_or(("", u));
                let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in the user"))?;
                let password =
                    percent_decode(password).ok_or_else(|| bad("bad %-escape in the password"))?;
                (!password.is_empty()).then(|| ((!user.is_empty()).then_some(user), password))
            }
        };
        let host_end = if host.starts_with('[') {
            host.find(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?
                + 1
        } else {
            host.find(':').unwrap_or(host.len())
        };
        let (name, port) = host.split_at(host_end);
        if name.is_empty() || name == "[]" {
            return Err(bad("the URL names no host"));
        }
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => 6379,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| RespError::Url(format!("bad port {p:?}")))?,
            None => return Err(bad("expected host:port")),
        };
        let db = if path.is_empty() {
            0
        } else {
            path.parse()
                .map_err(|_| RespError::Url(format!("bad database number {path:?}")))?
        };
        Ok(RedisUrl {
            addr: format!("{name}:{port}"),
            auth,
            db,
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Opens a connection, authenticates and selects the database: the plain, unpipelined
/// start of every connection (also the subscriber's).
async fn connect(url: &RedisUrl, timeout: Duration) -> Result<TcpStream, RespError> {
    let io =
        |what: &str, e: &dyn std::fmt::Display| RespError::Io(format!("{what} {}: {e}", url.addr));
    let start = async {
        let mut stream = TcpStream::connect(&url.addr)
            .await
            .map_err(|e| io("cannot connect to", &e))?;
        stream.set_nodelay(true).map_err(|e| io("socket", &e))?;
        let mut hello = Vec::new();
        if let Some((user, password)) = &url.auth {
            let mut auth = Cmd::new("AUTH");
            if let Some(user) = user {
                auth.arg(user);
            }
            auth.arg(password);
            hello.push(auth);
        }
        if url.db != 0 {
            hello.push(Cmd::new("SELECT").arg(u64::from(url.db)).clone());
        }
        let mut buf = Vec::new();
        for cmd in &hello {
            stream
                .write_all(&cmd.encode())
                .await
                .map_err(|e| io("cannot write to", &e))?;
            read_value(&mut stream, &mut buf).await?.ok()?;
        }
        Ok(stream)
    };
    tokio::time::timeout(timeout, start)
        .await
        .map_err(|_| RespError::Io(format!("no answer from {} within {timeout:?}", url.addr)))?
}

/// Reads one whole value from an unshared stream (connection set-up, subscriptions).
pub async fn read_value(
    stream: &mut (impl AsyncReadExt + Unpin),
    buf: &mut Vec<u8>,
) -> Result<Value, RespError> {
    loop {
        if let Some((value, used)) = parse(buf)? {
            buf.drain(..used);
            return Ok(value);
        }
        if stream
            .read_buf(buf)
            .await
            .map_err(|e| RespError::Io(format!("reading from redis: {e}")))?
            == 0
        {
            return Err(RespError::Io("redis closed the connection".into()));
        }
    }
}

/// One pipelined connection shared by all callers.
struct Link {
    /// Held while a caller queues its reply slot and writes its command, so that the queue's
    /// order is the order of the commands on the wire.
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// The reading turn: its holder reads replies and hands them out in order.
    reader: tokio::sync::Mutex<Reader>,
    queue: Mutex<Queue>,
    /// When a command last went out, to look for a connection closed while idle.
    last_used: Mutex<Instant>,
}

struct Reader {
    half: OwnedReadHalf,
    buf: Vec<u8>,
}

#[derive(Default)]
struct Queue {
    next_seq: u64,
    /// Reply slots of the commands written and not yet answered, oldest first.
    waiting: VecDeque<(u64, oneshot::Sender<Value>)>,
    /// Why the connection can no longer be used.
    broken: Option<RespError>,
}

impl Link {
    fn new(stream: TcpStream) -> Link {
        let (read, write) = stream.into_split();
        Link {
            writer: tokio::sync::Mutex::new(write),
            reader: tokio::sync::Mutex::new(Reader {
                half: read,
                buf: Vec::with_capacity(4096),
            }),
            queue: Mutex::new(Queue::default()),
            last_used: Mutex::new(Instant::now()),
        }
    }

    /// Whether Redis closed the connection while nothing was asked (its `timeout` setting, a
    /// restart): then the next command would only find out after sending, and fail. Looked at
    /// only after `IDLE_CHECK_AFTER` without commands, and only when no command is in flight,
    /// so that whatever can be read is not a reply.
    fn closed_while_idle(&self) -> bool {
        let idle = self
            .last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        if idle < IDLE_CHECK_AFTER {
            return false;
        }
        // Holding the writer keeps new commands out while we look.
        let (Ok(_writer), Ok(reader)) = (self.writer.try_lock(), self.reader.try_lock()) else {
            return false;
        };
        if !self.queue().waiting.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        match reader.half.try_read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            // End of stream, an error, or bytes nobody asked for.
            _ => true,
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn broken(&self) -> Option<RespError> {
        self.queue().broken.clone()
    }

    /// Gives up on the connection: every caller still waiting gets `why`.
    fn fail(&self, why: RespError) {
        let mut queue = self.queue();
        if queue.broken.is_none() {
            queue.broken = Some(why);
        }
        // Dropping the reply slots wakes their callers, who read `broken`.
        queue.waiting.clear();
    }

    fn failure(&self) -> RespError {
        self.broken()
            .unwrap_or_else(|| RespError::Io("the redis connection was reset".into()))
    }

    async fn call(&self, bytes: &[u8]) -> Result<Value, RespError> {
        let (tx, mut rx) = oneshot::channel();
        let seq;
        {
            let mut writer = self.writer.lock().await;
            {
                let mut queue = self.queue();
                if let Some(why) = &queue.broken {
                    return Err(why.clone());
                }
                seq = queue.next_seq;
                queue.next_seq += 1;
                queue.waiting.push_back((seq, tx));
            }
            *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            // A write cut short (the caller gave up) leaves half a command on the wire.
            let unfinished = FailOnDrop(Some(self));
            if let Err(e) = writer.write_all(bytes).await {
                self.fail(RespError::Io(format!("writing to redis: {e}")));
            }
            unfinished.disarm();
        }
        tokio::select! {
            biased;
            reply = &mut rx => reply.map_err(|_| self.failure()),
            mut reader = self.reader.lock() => {
                // The reply may have been handed over while this caller waited for the turn.
                match rx.try_recv() {
                    Ok(value) => Ok(value),
                    Err(oneshot::error::TryRecvError::Closed) => Err(self.failure()),
                    Err(oneshot::error::TryRecvError::Empty) => self.read_until(&mut reader, seq).await,
                }
            }
        }
    }

    /// Reads replies, handing each to its caller, until the one for `seq`; then hands out
    /// the replies already read and gives up the turn. Cancel-safe: a read either fills the
    /// buffer or does nothing, and replies are handed out synchronously.
    async fn read_until(&self, reader: &mut Reader, seq: u64) -> Result<Value, RespError> {
        let mut mine = None;
        loop {
            let mut used = 0;
            loop {
                let parsed = match parse(&reader.buf[used..]) {
                    Ok(parsed) => parsed,
                    Err(e) => {
                        self.fail(e.clone());
                        return Err(e);
                    }
                };
                let Some((value, len)) = parsed else { break };
                used += len;
                let Some((s, tx)) = self.queue().waiting.pop_front() else {
                    let e = RespError::Protocol("a reply to no command".into());
                    self.fail(e.clone());
                    return Err(e);
                };
                if s == seq {
                    mine = Some(value);
                } else {
                    // The caller may have given up; its reply is dropped.
                    let _ = tx.send(value);
                }
            }
            reader.buf.drain(..used);
            if let Some(value) = mine {
                return Ok(value);
            }
            if let Some(why) = self.broken() {
                return Err(why);
            }
            match reader.half.read_buf(&mut reader.buf).await {
                Ok(0) => self.fail(RespError::Io("redis closed the connection".into())),
                Ok(_) => {}
                Err(e) => self.fail(RespError::Io(format!("reading from redis: {e}"))),
            }
        }
    }
}

struct FailOnDrop<'a>(Option<&'a Link>);

impl FailOnDrop<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for FailOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(link) = self.0 {
            link.fail(RespError::Io(
                "a command to redis was cut off mid-write".into(),
            ));
        }
    }
}

/// A Redis client: one pipelined connection, made on first use and again after it fails.
/// Commands wait at most `timeout`; one that times out drops the connection (Redis is stuck
/// or gone) and fails the commands queued behind it. After a failed connect, commands fail at
/// once for a short while instead of each waiting for its own attempt.
pub struct Client {
    url: RedisUrl,
    timeout: Duration,
    link: Mutex<Option<Arc<Link>>>,
    connecting: tokio::sync::Mutex<Option<(Instant, RespError)>>,
}

/// How long a failed connect is remembered before the next attempt.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// How long a connection is idle before it is checked for having been closed.
const IDLE_CHECK_AFTER: Duration = Duration::from_millis(500);

impl Client {
    /// A client of `url`; nothing is connected yet.
    pub fn new(url: RedisUrl, timeout: Duration) -> Client {
        Client {
            url,
            timeout,
            link: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(None),
        }
    }

    /// The URL's address and options.
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// A connection of its own, outside the pipeline (a subscription holds its connection).
    pub async fn dedicated_connection(&self) -> Result<TcpStream, RespError> {
        connect(&self.url, self.timeout).await
    }

    fn current(&self) -> Option<Arc<Link>> {
        let link = self.link.lock().unwrap_or_else(|e| e.into_inner());
        let link = link.as_ref().filter(|l| l.queue().broken.is_none())?;
        if link.closed_while_idle() {
            link.fail(RespError::Io("redis closed the idle connection".into()));
            return None;
        }
        Some(link.clone())
    }

    async fn link(&self) -> Result<Arc<Link>, RespError> {
        if let Some(link) = self.current() {
            return Ok(link);
        }
        let mut last_failure = self.connecting.lock().await;
        if let Some(link) = self.current() {
            return Ok(link);
        }
        if let Some((at, why)) = &*last_failure
            && at.elapsed() < RETRY_AFTER
        {
            return Err(why.clone());
        }
        match connect(&self.url, self.timeout).await {
            Ok(stream) => {
                let link = Arc::new(Link::new(stream));
                *self.link.lock().unwrap_or_else(|e| e.into_inner()) = Some(link.clone());
                *last_failure = None;
                Ok(link)
            }
            Err(e) => {
                *last_failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Sends `cmd` and waits for its reply (which may be a `Value::Error`).
    pub async fn query(&self, cmd: &Cmd) -> Result<Value, RespError> {
        let bytes = cmd.encode();
        let link = self.link().await?;
        match tokio::time::timeout(self.timeout, link.call(&bytes)).await {
            Ok(reply) => reply,
            Err(_) => {
                let e = RespError::Io(format!(
                    "no answer from redis at {} within {:?}",
                    self.url.addr, self.timeout
                ));
                link.fail(e.clone());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut cmd = Cmd::new("EVALSHA");
        cmd.arg("ab").arg(2usize).arg(-5i64);
        assert_eq!(
            cmd.encode(),
            b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n2\r\n$2\r\n-5\r\n"
        );
    }

    #[test]
    fn values_parse_whole_or_not_at_all() {
        let reply = b"*3\r\n:0\r\n$3\r\nabc\r\n*2\r\n+OK\r\n$-1\r\n-ERR x\r\n";
        let (value, used) = parse(reply).unwrap().unwrap();
        assert_eq!(
            value,
            Value::Array(vec![
                Value::Int(0),
                Value::Bytes(b"abc".to_vec()),
                Value::Array(vec![Value::Bytes(b"OK".to_vec()), Value::Nil]),
            ])
        );
        assert_eq!(&reply[used..], b"-ERR x\r\n");
        assert_eq!(
            parse(&reply[used..]).unwrap().unwrap().0,
            Value::Error("ERR x".into())
        );
        // Every strict prefix is incomplete, never an error or a wrong value.
        for end in 0..used {
            assert_eq!(parse(&reply[..end]).unwrap(), None, "prefix of {end} bytes");
        }
    }

    #[test]
    fn garbage_is_a_protocol_error_not_a_panic() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$3\r\nabcd\r\n",
            b"$99999999999\r\n",
            b"*-7x\r\n",
            &b"*1\r\n".repeat(20),
        ] {
            assert!(
                matches!(parse(bad), Err(RespError::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn urls_give_address_credentials_and_database() {
        let u = RedisUrl::parse("redis://127.0.0.1:6390/3").unwrap();
        assert_eq!(
            (u.addr.as_str(), &u.auth, u.db),
            ("127.0.0.1:6390", &None, 3)
        );
        let u = RedisUrl::parse("redis://:s%40cret@cache").unwrap();
        assert_eq!(u.addr, "cache:6379");
        assert_eq!(u.auth, Some((None, "s@cret".to_owned())));
        let u = RedisUrl::parse("redis://app:pw@[::1]:7000/").unwrap();
        assert_eq!(u.addr, "[::1]:7000");
        assert_eq!(u.auth, Some((Some("app".to_owned()), "pw".to_owned())));
        assert!(!format!("{u:?}").contains("pw"));
        for (bad, says) in [
            ("rediss://h", "TLS"),
            ("http://h", "unsupported scheme"),
            ("redis://h:port", "bad port"),
            ("redis://h/x", "database"),
            ("redis:///0", "no host"),
            ("localhost:6379", "expected redis://"),
        ] {
            let e = RedisUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    fn echo(text: &str) -> Cmd {
        let mut cmd = Cmd::new("ECHO");
        cmd.arg(text);
        cmd
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_caller_gets_its_own_reply_even_when_others_give_up() {
        let url = RedisUrl::parse(&crate::testing::services().redis).unwrap();
        let client = Arc::new(Client::new(url, Duration::from_secs(5)));
        let mut tasks = Vec::new();
        for t in 0..200 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut answered = 0;
                for n in 0..25 {
                    let text = format!("{t}-{n}");
                    let cmd = echo(&text);
                    let query = client.query(&cmd);
                    if (t + n) % 7 == 0 {
                        // Callers that give up mid-way, whether writing, reading for others
                        // or waiting: the rest must not get their replies.
                        let _ = tokio::time::timeout(Duration::from_micros(20), query).await;
                        continue;
                    }
                    assert_eq!(query.await.unwrap(), Value::Bytes(text.into_bytes()));
                    answered += 1;
                }
                answered
            }));
        }
        let mut answered = 0;
        for task in tasks {
            answered += task.await.unwrap();
        }
        assert!(answered > 4000, "{answered}");
        // Commands cut off mid-write may have reset the connection; it is made again.
        assert_eq!(
            client.query(&echo("after")).await.unwrap(),
            Value::Bytes(b"after".to_vec())
        );
    }

    /// A fake Redis on loopback: `serve(n, stream)` handles the n-th connection.
    async fn fake_redis<F, Fut>(serve: F) -> RedisUrl
    where
        F: Fn(usize, TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for n in 0.. {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(n, stream));
            }
        });
        RedisUrl::parse(&format!("redis://{addr}")).unwrap()
    }

    #[tokio::test]
    async fn a_stuck_redis_times_out_and_the_next_command_connects_again() {
        let url = fake_redis(|n, mut stream| async move {
            let mut buf = Vec::new();
            let _ = read_value(&mut stream, &mut buf).await;
            if n == 0 {
                // Never answers.
                tokio::time::sleep(Duration::from_secs(30)).await;
            } else {
                stream.write_all(b"+PONG\r\n").await.unwrap();
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        })
        .await;
        let client = Client::new(url, Duration::from_millis(200));
        let ping = Cmd::new("PING");
        let stuck = tokio::join!(client.query(&ping), client.query(&ping));
        for answer in [stuck.0, stuck.1] {
            let e = answer.unwrap_err().to_string();
            assert!(e.contains("no answer from redis"), "{e}");
        }
        assert_eq!(
            client.query(&Cmd::new("PING")).await.unwrap(),
            Value::Bytes(b"PONG".to_vec())
        );
    }

    #[tokio::test]
    async fn a_closed_connection_is_an_error_and_then_made_again() {
        let url = fake_redis(|n, mut stream| async move {
            let mut buf = Vec::new();
            let _ = read_value(&mut stream, &mut buf).await;
            if n > 0 {
                stream.write_all(b":7\r\n").await.unwrap();
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        })
        .await;
        let client = Client::new(url, Duration::from_secs(5));
        let e = client
            .query(&Cmd::new("INCR"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("closed the connection"), "{e}");
        assert_eq!(
            client.query(&Cmd::new("INCR")).await.unwrap(),
            Value::Int(7)
        );
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_before_the_next_command() {
        let url = fake_redis(|n, mut stream| async move {
            let mut buf = Vec::new();
            let _ = read_value(&mut stream, &mut buf).await;
            stream
                .write_all(format!(":{n}\r\n").as_bytes())
                .await
                .unwrap();
            if n > 0 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            // The first connection closes after its answer, as Redis's `timeout` would.
        })
        .await;
        let client = Client::new(url, Duration::from_secs(5));
        assert_eq!(
            client.query(&Cmd::new("INCR")).await.unwrap(),
            Value::Int(0)
        );
        tokio::time::sleep(IDLE_CHECK_AFTER + Duration::from_millis(100)).await;
        // Not an error: the closed connection is seen before the command goes out.
        assert_eq!(
            client.query(&Cmd::new("INCR")).await.unwrap(),
            Value::Int(1)
        );
    }

    #[tokio::test]
    async fn a_refused_connect_fails_fast_and_is_retried_later() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = RedisUrl::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
        let client = Client::new(url, Duration::from_secs(5));
        let first = client.query(&Cmd::new("PING")).await.unwrap_err();
        assert!(first.to_string().contains("cannot connect"), "{first}");
        // Within RETRY_AFTER the same error comes back without a new attempt.
        let again = client.query(&Cmd::new("PING")).await.unwrap_err();
        assert_eq!(again.to_string(), first.to_string());
    }
}
