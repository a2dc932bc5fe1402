//! The accept loop of toolgate's HTTP listeners (MCP and admin): hyper's HTTP/1 server with a
//! deadline on request heads, no Nagle, and a graceful stop. The MCP listener serves its
//! message `POST`s itself and hands every other connection to hyper (`downstream::h1`).
//!
//! The deadline is what `axum::serve` lacks: without it a client holds a connection, its task
//! and a file descriptor for as long as it likes by connecting and sending nothing, or a head
//! a byte at a time (slowloris). With it, the whole head of each request must arrive within
//! `header_timeout` of the connection's start or of the previous answer, so a keep-alive
//! connection left idle that long is closed too (clients open a new one). A request whose head
//! arrived is not bound by it: a held call or an SSE stream lasts as long as it needs.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use bytes::{Buf, Bytes};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What hyper serves on a connection: an axum router, or the MCP listener's front.
pub trait HttpService:
    tower_service::Service<Request, Response = Response, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S> HttpService for S where
    S: tower_service::Service<Request, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static
{
}

/// Serves `service` with hyper on every connection `listener` accepts until `shutdown`
/// resolves; then stops accepting, lets every connection finish the request in flight (idle
/// ones close at once) and returns when all are done.
pub async fn serve(
    listener: TcpListener,
    service: impl HttpService,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    accept(listener, shutdown, move |tcp, stop| {
        serve_hyper(tcp, Bytes::new(), service.clone(), header_timeout, stop)
    })
    .await;
}

/// The accept loop: runs `connection` on a task of its own for every connection until
/// `shutdown` resolves; then stops accepting, tells the connections through their [`Stop`]
/// and returns when every one has ended.
pub async fn accept<F, C>(listener: TcpListener, shutdown: impl Future<Output = ()>, connection: F)
where
    F: Fn(TcpStream, Stop) -> C,
    C: Future<Output = ()> + Send + 'static,
{
    let (stopping, stop) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a moment rather than spin, and go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are written whole: send them at once rather than wait for Nagle.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(tcp, Stop(stop.clone())));
    }
    drop(listener);
    drop(stop);
    let _ = stopping.send(true);
    // Every connection holds a receiver until it ends.
    stopping.closed().await;
}

/// A connection's view of its listener stopping: it ends once idle, and finishes the request
/// in flight first.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Whether the listener is stopping.
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when the listener stops.
    pub async fn wait(&mut self) {
        // An error means the accept loop is gone: stopping all the same.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }

    /// [`Stop::wait`] as a future that owns its receiver, for a connection to keep for its
    /// whole life (waiting anew for each request costs a registration each time).
    pub async fn stopped(mut self) {
        self.wait().await
    }
}

/// Serves one connection with hyper. `read_ahead` is what was read from it already (a head
/// the caller looked at and left to hyper); hyper reads it first.
pub async fn serve_hyper(
    tcp: TcpStream,
    read_ahead: Bytes,
    service: impl HttpService,
    header_timeout: Duration,
    mut stop: Stop,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        tower_service::Service::call(&mut service.clone(), request.map(axum::body::Body::new))
    });
    let io = TokioIo::new(ReadAhead {
        ahead: read_ahead,
        io: tcp,
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = stop.wait() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A connection with bytes already read from it in front.
struct ReadAhead {
    ahead: Bytes,
    io: TcpStream,
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.ahead.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.ahead.len().min(buf.remaining());
        buf.put_slice(&self.ahead[..n]);
        self.ahead.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ReadAhead {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    const TIMEOUT: Duration = Duration::from_millis(300);

    /// A server with a quick answer at `/`, one that takes a second at `/slow` and a body that
    /// streams for a second at `/stream` (as SSE does).
    async fn start() -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let app = Router::new()
            .route("/", get(|| async { "hello" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "slow"
                }),
            )
            .route(
                "/stream",
                get(|| async {
                    let ticks = futures_util::stream::unfold(0, |n| async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let chunk = if n < 4 { "tick " } else { "slow" };
                        (n < 5).then_some((Ok::<_, Infallible>(chunk), n + 1))
                    });
                    axum::body::Body::from_stream(ticks)
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, TIMEOUT, async {
            let _ = stopped.await;
        }));
        (addr, stop, server)
    }

    async fn get_on(stream: &mut TcpStream, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        let done = |a: &[u8]| a.windows(4).any(|w| w == b"slow") || a.ends_with(b"hello");
        while !done(&answer) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the answer: {answer:?}");
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(answer).unwrap()
    }

    /// Reads until the server closes the connection; fails if it is still open after `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
        let mut rest = Vec::new();
        tokio::time::timeout(within, stream.read_to_end(&mut rest))
            .await
            .expect("the server kept the connection open")
            .ok();
        rest
    }

    #[tokio::test]
    async fn a_head_that_does_not_arrive_in_time_closes_the_connection_and_others_are_served() {
        let (addr, _stop, _server) = start().await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            .await
            .unwrap();
        let mut good = TcpStream::connect(addr).await.unwrap();
        assert!(get_on(&mut good, "/").await.starts_with("HTTP/1.1 200"));
        for stream in [&mut silent, &mut partial] {
            let rest = closed_within(stream, TIMEOUT * 5).await;
            assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
        }
        let mut fresh = TcpStream::connect(addr).await.unwrap();
        assert!(get_on(&mut fresh, "/").await.ends_with("hello"));
    }

    #[tokio::test]
    async fn keep_alive_serves_requests_within_the_deadline_and_closes_when_idle() {
        let (addr, _stop, _server) = start().await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        for _ in 0..3 {
            assert!(get_on(&mut stream, "/").await.ends_with("hello"));
            tokio::time::sleep(TIMEOUT / 3).await;
        }
        closed_within(&mut stream, TIMEOUT * 5).await;
    }

    #[tokio::test]
    async fn an_answer_that_takes_longer_than_the_deadline_is_not_cut() {
        let (addr, _stop, _server) = start().await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert!(get_on(&mut stream, "/slow").await.ends_with("slow"));
        let streamed = get_on(&mut stream, "/stream").await;
        assert!(streamed.contains("tick"), "{streamed}");
    }

    #[tokio::test]
    async fn shutdown_lets_the_request_in_flight_finish_and_stops_accepting() {
        let (addr, stop, server) = start().await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        assert!(get_on(&mut idle, "/").await.ends_with("hello"));
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        let answer = closed_within(&mut busy, Duration::from_secs(5)).await;
        assert!(String::from_utf8_lossy(&answer).ends_with("slow"));
        closed_within(&mut idle, Duration::from_secs(1)).await;
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returned")
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }
}
