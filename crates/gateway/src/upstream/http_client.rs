//! A small HTTP/1.1 client for Streamable HTTP upstreams: hyper's connection API and a pool of
//! idle keep-alive connections per upstream. It does what the relay needs and no more, which
//! keeps a relayed request to one task hand-off (the connection's) instead of a client stack's
//! several.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept per upstream; more are closed when returned.
const MAX_IDLE: usize = 64;

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
    host: HeaderValue,
    path: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl HttpClient {
    /// The client for a URL, shared by every connection to it: upstream sessions are told apart
    /// by a header, not by the TCP connection, so all sessions draw on one pool.
    pub(super) fn shared(url: &str) -> Result<Arc<HttpClient>, String> {
        static CLIENTS: OnceLock<Mutex<HashMap<String, Arc<HttpClient>>>> = OnceLock::new();
        let mut clients = CLIENTS.get_or_init(Default::default).lock().unwrap();
        if let Some(client) = clients.get(url) {
            return Ok(client.clone());
        }
        let client = Arc::new(HttpClient::new(url)?);
        clients.insert(url.to_owned(), client.clone());
        Ok(client)
    }

    /// A client for an `http://host[:port]/path` URL.
    pub(super) fn new(url: &str) -> Result<HttpClient, String> {
        let rest = match url.strip_prefix("http://") {
            Some(rest) => rest,
            None if url.starts_with("https://") => {
                return Err("https:// upstreams are not supported yet".into());
            }
            None => return Err(format!("{url:?} is not an http:// URL")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url:?} has no usable host"));
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            && !authority.ends_with(']');
        Ok(HttpClient {
            host: HeaderValue::from_str(authority)
                .map_err(|_| format!("{url:?} has an invalid host"))?,
            authority: if has_port {
                authority.to_owned()
            } else {
                format!("{authority}:80")
            },
            path,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A request builder for this endpoint (`Host` set, URI the endpoint's path).
    pub(super) fn request(&self, method: http::Method) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(self.path.as_str())
            .header(http::header::HOST, self.host.clone())
    }

    /// Sends a request on an idle connection, or a new one.
    pub(super) async fn send(
        self: &Arc<Self>,
        request: Request<Full<Bytes>>,
    ) -> Result<(http::response::Parts, Body), HttpError> {
        let mut sender = self.connection().await?;
        let response: Response<Incoming> = sender
            .send_request(request)
            .await
            .map_err(|e| HttpError::Request(e.to_string()))?;
        let (parts, incoming) = response.into_parts();
        Ok((
            parts,
            Body {
                incoming,
                reuse: Some((self.clone(), sender)),
            },
        ))
    }

    async fn connection(&self) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        loop {
            let Some(mut sender) = self.idle.lock().unwrap().pop() else {
                break;
            };
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let connect_error = |e: String| HttpError::Connect(self.authority.clone(), e);
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(&self.authority),
        )
        .await
        .map_err(|_| connect_error("timed out".into()))?
        .map_err(|e| connect_error(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream HTTP connection ended");
            }
        });
        Ok(sender)
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE && !sender.is_closed() {
            idle.push(sender);
        }
    }
}

/// A response body; its connection goes back to the pool once the body has been read to the end.
pub(super) struct Body {
    incoming: Incoming,
    reuse: Option<(Arc<HttpClient>, SendRequest<Full<Bytes>>)>,
}

impl Body {
    /// The next chunk of data, `None` at the end.
    pub(super) async fn chunk(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            match self.incoming.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Some(Err(e)) => {
                    self.reuse = None;
                    return Some(Err(e.to_string()));
                }
                None => {
                    if let Some((client, sender)) = self.reuse.take() {
                        client.give_back(sender);
                    }
                    return None;
                }
            }
        }
    }

    /// The whole body, refused beyond `max` bytes.
    pub(super) async fn collect(mut self, max: usize) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk().await {
            let chunk = chunk?;
            if body.len() + chunk.len() > max {
                return Err(format!("response larger than {max} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        let c = HttpClient::new("http://127.0.0.1:9000/mcp").unwrap();
        assert_eq!(
            (c.authority.as_str(), c.path.as_str()),
            ("127.0.0.1:9000", "/mcp")
        );
        let c = HttpClient::new("http://docs.internal").unwrap();
        assert_eq!(
            (c.authority.as_str(), c.path.as_str()),
            ("docs.internal:80", "/")
        );
        let c = HttpClient::new("http://[::1]:8080/a/mcp?x=1").unwrap();
        assert_eq!(
            (c.authority.as_str(), c.path.as_str()),
            ("[::1]:8080", "/a/mcp?x=1")
        );
        assert!(
            HttpClient::new("https://example.org/mcp")
                .err()
                .unwrap()
                .contains("not supported")
        );
        assert!(HttpClient::new("http://user@host/mcp").is_err());
    }
}
