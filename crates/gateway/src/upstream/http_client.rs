//! A small HTTP/1.1 client for Streamable HTTP upstreams: hyper's connection API, TLS by rustls
//! for `https://`, and a pool of idle keep-alive connections per upstream. It does what the relay needs and no more, which
//! keeps a relayed request to one task hand-off (the connection's) instead of a client stack's
//! several.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

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
    tls: Option<(TlsConnector, ServerName<'static>)>,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
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
            host: HeaderValue::from_str(authority)
                .map_err(|_| format!("{url:?} has an invalid host"))?,
            authority: format!("{host}:{}", port.unwrap_or(default_port)),
            path,
            tls,
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
        match &self.tls {
            None => handshake(TokioIo::new(stream)).await,
            Some((connector, name)) => {
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), stream))
                        .await
                        .map_err(|_| connect_error("TLS handshake timed out".into()))?
                        .map_err(|e| connect_error(format!("TLS: {e}")))?;
                handshake(TokioIo::new(stream)).await
            }
        }
        .map_err(connect_error)
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE && !sender.is_closed() {
            idle.push(sender);
        }
    }
}

/// Performs the HTTP/1.1 handshake on a connected stream and drives the connection on a task.
async fn handshake<T>(io: TokioIo<T>) -> Result<SendRequest<Full<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream HTTP connection ended");
        }
    });
    Ok(sender)
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
    }
}
