//! Port forwarding over pooled connections.
//!
//! - **local**: listens on `127.0.0.1:localPort` on this machine (never another address) and
//!   carries each accepted connection to `remoteHost:remotePort` as seen from the server
//!   (`direct-tcpip`, what `ssh -L` does).
//! - **remote**: asks the server to listen on `remoteHost:remotePort` (`tcpip-forward`, what
//!   `ssh -R` does) and carries each connection it reports to `127.0.0.1:localPort` here. The
//!   server-side address must be loopback (`127.0.0.1`, `::1`, `localhost`) unless the
//!   credential lists it in `remote_bind_addresses`.
//!
//! A tunnel belongs to the MCP client that opened it (like sessions), ends on
//! `ssh_tunnel_stop`, when its client goes away, or when its connection dies.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::connection::Connection;
use crate::credentials::Credential;
use crate::pool::{Pool, PoolError};
use crate::sessions::OwnerId;

/// Local or remote forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TunnelKind {
    /// Listen here, connect from the server (`ssh -L`).
    Local,
    /// Listen on the server, connect from here (`ssh -R`).
    Remote,
}

impl fmt::Display for TunnelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Local => "local",
            Self::Remote => "remote",
        })
    }
}

/// Errors of the tunnel tools.
#[derive(Debug, Error)]
pub enum TunnelError {
    /// No tunnel of that id for this client.
    #[error("unknown tunnel \"{0}\" (ssh_tunnel_list shows this client's tunnels)")]
    Unknown(String),
    /// Too many tunnels.
    #[error("{0} tunnels are open already (limits.tunnels_max); stop one first")]
    Cap(usize),
    /// Connecting failed.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The local listener could not be made.
    #[error("cannot listen on 127.0.0.1:{port}: {message}")]
    Listen {
        /// Port.
        port: u16,
        /// OS error.
        message: String,
    },
    /// A remote bind address the credential does not allow.
    #[error(
        "remote tunnels on credential \"{credential}\" may only listen on loopback (127.0.0.1, ::1, localhost){extra}; \
         \"{address}\" would expose the port to the server's network. An operator can allow it with \
         remote_bind_addresses = [\"{address}\"] in [hosts.{credential}]"
    )]
    BindRefused {
        /// Credential.
        credential: String,
        /// Address asked for.
        address: String,
        /// `, or ...` listing configured ones.
        extra: String,
    },
    /// The server refused the forwarding request.
    #[error(
        "the server refused to listen on {address}:{port} for credential \"{credential}\" ({message})"
    )]
    ForwardRefused {
        /// Credential.
        credential: String,
        /// Address.
        address: String,
        /// Port.
        port: u16,
        /// russh's message.
        message: String,
    },
}

/// One tunnel, as listings show it.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelView {
    /// Id for ssh_tunnel_stop.
    pub tunnel_id: String,
    /// Credential it runs on.
    pub credential_name: String,
    /// `local` or `remote`.
    #[serde(rename = "type")]
    pub kind: TunnelKind,
    /// Local port (the one bound, for local tunnels asked with 0).
    pub local_port: u16,
    /// Remote host: the target (local) or the server-side listen address (remote).
    pub remote_host: String,
    /// Remote port (the one the server bound, for remote tunnels asked with 0).
    pub remote_port: u16,
    /// Where it listens, e.g. `127.0.0.1:8080 (here)` or `127.0.0.1:9000 (on the server)`.
    pub listening: String,
    /// Connections carried so far.
    pub connections: u64,
    /// `active` or `ended`.
    pub status: String,
    /// Why it ended.
    pub ended: Option<String>,
    /// Seconds since it started.
    pub age_secs: u64,
}

/// A running tunnel.
pub struct Tunnel {
    id: String,
    owner: OwnerId,
    credential: String,
    kind: TunnelKind,
    local_port: u16,
    remote_host: String,
    remote_port: u16,
    started: SystemTime,
    connections: AtomicU64,
    ended: Mutex<Option<String>>,
    stop: CancellationToken,
}

impl Tunnel {
    /// Its listing.
    pub fn view(&self) -> TunnelView {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone();
        TunnelView {
            tunnel_id: self.id.clone(),
            credential_name: self.credential.clone(),
            kind: self.kind,
            local_port: self.local_port,
            remote_host: self.remote_host.clone(),
            remote_port: self.remote_port,
            listening: match self.kind {
                TunnelKind::Local => format!("127.0.0.1:{} (here)", self.local_port),
                TunnelKind::Remote => {
                    format!("{}:{} (on the server)", self.remote_host, self.remote_port)
                }
            },
            connections: self.connections.load(Ordering::Relaxed),
            status: if ended.is_some() { "ended" } else { "active" }.to_owned(),
            ended,
            age_secs: self.started.elapsed().unwrap_or_default().as_secs(),
        }
    }

    fn finish(&self, why: &str) {
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if ended.is_none() {
            *ended = Some(why.to_owned());
            tracing::info!(tunnel = %self.id, credential = %self.credential, why, "tunnel ended");
        }
    }
}

/// What to open.
#[derive(Clone, Debug)]
pub struct TunnelRequest {
    /// Credential.
    pub credential: Arc<Credential>,
    /// Kind.
    pub kind: TunnelKind,
    /// Local port (0: any free one, for local tunnels).
    pub local_port: u16,
    /// Target host (local) or server-side listen address (remote).
    pub remote_host: String,
    /// Target port (local) or server-side listen port (remote; 0: the server picks).
    pub remote_port: u16,
}

/// All tunnels of this process.
pub struct TunnelManager {
    pool: Arc<Pool>,
    max: usize,
    tunnels: Mutex<HashMap<String, Arc<Tunnel>>>,
    next: AtomicU64,
}

fn is_loopback(address: &str) -> bool {
    matches!(address, "127.0.0.1" | "::1" | "localhost" | "[::1]")
}

impl TunnelManager {
    /// A manager on `pool` allowing `max` tunnels.
    pub fn new(pool: Arc<Pool>, max: usize) -> Self {
        Self {
            pool,
            max,
            tunnels: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Tunnel>>> {
        self.tunnels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a tunnel for `owner`.
    pub async fn start(
        &self,
        owner: OwnerId,
        request: TunnelRequest,
    ) -> Result<Arc<Tunnel>, TunnelError> {
        {
            let mut map = self.map();
            map.retain(|_, t| t.ended.lock().unwrap_or_else(|e| e.into_inner()).is_none());
            if map.len() >= self.max {
                return Err(TunnelError::Cap(self.max));
            }
        }
        let credential = &request.credential;
        if request.kind == TunnelKind::Remote
            && !is_loopback(&request.remote_host)
            && !credential.remote_bind.contains(&request.remote_host)
        {
            return Err(TunnelError::BindRefused {
                credential: credential.name.clone(),
                address: request.remote_host.clone(),
                extra: if credential.remote_bind.is_empty() {
                    String::new()
                } else {
                    format!(" or {}", credential.remote_bind.join(", "))
                },
            });
        }
        let connection = self.pool.connection(&credential.name).await?;
        let id = format!("t-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let stop = CancellationToken::new();
        let tunnel = match request.kind {
            TunnelKind::Local => {
                let listener = TcpListener::bind(("127.0.0.1", request.local_port))
                    .await
                    .map_err(|e| TunnelError::Listen {
                        port: request.local_port,
                        message: e.to_string(),
                    })?;
                let local_port = listener
                    .local_addr()
                    .map(|a| a.port())
                    .unwrap_or(request.local_port);
                let tunnel = Arc::new(Tunnel {
                    id: id.clone(),
                    owner,
                    credential: credential.name.clone(),
                    kind: TunnelKind::Local,
                    local_port,
                    remote_host: request.remote_host.clone(),
                    remote_port: request.remote_port,
                    started: SystemTime::now(),
                    connections: AtomicU64::new(0),
                    ended: Mutex::new(None),
                    stop: stop.clone(),
                });
                tokio::spawn(run_local(listener, connection, tunnel.clone()));
                tunnel
            }
            TunnelKind::Remote => {
                let bind = request.remote_host.clone();
                let granted = connection
                    .handle()
                    .tcpip_forward(bind.clone(), u32::from(request.remote_port))
                    .await
                    .map_err(|e| TunnelError::ForwardRefused {
                        credential: credential.name.clone(),
                        address: bind.clone(),
                        port: request.remote_port,
                        message: e.to_string(),
                    })?;
                let remote_port = if request.remote_port == 0 {
                    u16::try_from(granted).unwrap_or(0)
                } else {
                    request.remote_port
                };
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                connection.forwards().register(u32::from(remote_port), tx);
                let tunnel = Arc::new(Tunnel {
                    id: id.clone(),
                    owner,
                    credential: credential.name.clone(),
                    kind: TunnelKind::Remote,
                    local_port: request.local_port,
                    remote_host: bind,
                    remote_port,
                    started: SystemTime::now(),
                    connections: AtomicU64::new(0),
                    ended: Mutex::new(None),
                    stop: stop.clone(),
                });
                tokio::spawn(run_remote(rx, connection, tunnel.clone()));
                tunnel
            }
        };
        tracing::info!(tunnel = %id, %owner, credential = %credential.name, kind = %request.kind, "tunnel started");
        self.map().insert(id, tunnel.clone());
        Ok(tunnel)
    }

    /// `owner`'s tunnels, oldest first.
    pub fn list(&self, owner: OwnerId) -> Vec<Arc<Tunnel>> {
        let mut out: Vec<Arc<Tunnel>> = self
            .map()
            .values()
            .filter(|t| t.owner == owner)
            .cloned()
            .collect();
        out.sort_by_key(|t| t.started);
        out
    }

    /// Stops and forgets `owner`'s tunnel `id`.
    pub async fn stop(&self, owner: OwnerId, id: &str) -> Result<Arc<Tunnel>, TunnelError> {
        let tunnel = match self.map().get(id) {
            Some(t) if t.owner == owner => t.clone(),
            _ => return Err(TunnelError::Unknown(id.to_owned())),
        };
        tunnel.stop.cancel();
        // Let the task release the port (and cancel the server-side listener) before answering.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while tunnel
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.map().remove(id);
        Ok(tunnel)
    }

    /// Stops every tunnel of `owner`.
    pub fn stop_owner(&self, owner: OwnerId) {
        let mut map = self.map();
        map.retain(|_, t| {
            if t.owner == owner {
                t.stop.cancel();
                false
            } else {
                true
            }
        });
    }
}

/// How often a tunnel looks whether its connection died.
const CONNECTION_CHECK: Duration = Duration::from_millis(500);

async fn run_local(listener: TcpListener, connection: Arc<Connection>, tunnel: Arc<Tunnel>) {
    let why = loop {
        tokio::select! {
            _ = tunnel.stop.cancelled() => break "stopped".to_owned(),
            _ = tokio::time::sleep(CONNECTION_CHECK) => {
                if connection.is_closed() {
                    break "its SSH connection closed".to_owned();
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((mut socket, peer)) => {
                    tunnel.connections.fetch_add(1, Ordering::Relaxed);
                    let connection = connection.clone();
                    let tunnel = tunnel.clone();
                    tokio::spawn(async move {
                        let _ = socket.set_nodelay(true);
                        match connection.open_direct_tcpip(&tunnel.remote_host, tunnel.remote_port).await {
                            Ok(channel) => {
                                let mut stream = channel.into_stream();
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut socket, &mut stream) => {}
                                    _ = tunnel.stop.cancelled() => {}
                                }
                            }
                            Err(e) => tracing::warn!(
                                tunnel = %tunnel.id, %peer, error = %e,
                                "the server did not open the forwarded connection"
                            ),
                        }
                    });
                }
                Err(e) => tracing::warn!(tunnel = %tunnel.id, error = %e, "accept failed"),
            }
        }
    };
    drop(listener);
    tunnel.finish(&why);
}

async fn run_remote(
    mut channels: tokio::sync::mpsc::UnboundedReceiver<russh::Channel<russh::client::Msg>>,
    connection: Arc<Connection>,
    tunnel: Arc<Tunnel>,
) {
    let why = loop {
        tokio::select! {
            _ = tunnel.stop.cancelled() => break "stopped".to_owned(),
            _ = tokio::time::sleep(CONNECTION_CHECK) => {
                if connection.is_closed() {
                    break "its SSH connection closed".to_owned();
                }
            }
            channel = channels.recv() => match channel {
                Some(channel) => {
                    tunnel.connections.fetch_add(1, Ordering::Relaxed);
                    let tunnel = tunnel.clone();
                    tokio::spawn(async move {
                        match TcpStream::connect(("127.0.0.1", tunnel.local_port)).await {
                            Ok(mut socket) => {
                                let _ = socket.set_nodelay(true);
                                let mut stream = channel.into_stream();
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut stream, &mut socket) => {}
                                    _ = tunnel.stop.cancelled() => {}
                                }
                            }
                            Err(e) => {
                                tracing::warn!(tunnel = %tunnel.id, error = %e, "cannot reach 127.0.0.1:{}", tunnel.local_port);
                                let _ = channel.close().await;
                            }
                        }
                    });
                }
                None => break "its SSH connection closed".to_owned(),
            }
        }
    };
    connection
        .forwards()
        .unregister(u32::from(tunnel.remote_port));
    if !connection.is_closed() {
        let _ = connection
            .handle()
            .cancel_tcpip_forward(tunnel.remote_host.clone(), u32::from(tunnel.remote_port))
            .await;
    }
    tunnel.finish(&why);
}
