//! One authenticated SSH connection to one credential's host, directly over TCP or through a jump
//! host's connection (`direct-tcpip`, what `ssh -J` does), with its host key checked before any
//! secret is sent.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client::{self, Handle, Msg};
use russh::keys::{Algorithm, PublicKey};
use russh::{Channel, Preferred};
use thiserror::Error;

use crate::auth::{AuthError, authenticate};
use crate::credentials::Credential;
use crate::host_keys::{HostKeyError, HostKeyPolicy, KnownHosts, Trust, fingerprint};

/// Why a connection could not be made or used.
#[derive(Debug, Error, Clone)]
pub enum ConnectError {
    /// TCP connect failed.
    #[error("cannot reach {host}:{port} for credential \"{name}\": {message}")]
    Unreachable {
        /// Credential.
        name: String,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The OS error.
        message: String,
    },
    /// Connect + handshake + authentication took longer than `connect_timeout`.
    #[error(
        "connecting to {host}:{port} for credential \"{name}\" timed out after {secs:.1}s (connect_timeout)"
    )]
    Timeout {
        /// Credential.
        name: String,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The limit.
        secs: f64,
    },
    /// The host key was refused.
    #[error("{0}")]
    HostKey(#[from] HostKeyError),
    /// The server refused every configured way to log in.
    #[error("{0}")]
    Auth(#[from] AuthError),
    /// The SSH protocol failed (handshake, no common algorithm, ...).
    #[error("SSH error with {host}:{port} for credential \"{name}\": {message}")]
    Protocol {
        /// Credential.
        name: String,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// russh's message.
        message: String,
    },
    /// The jump host could not be reached or refused to forward.
    #[error("through jump host \"{jump}\" for credential \"{name}\": {message}")]
    Jump {
        /// Credential.
        name: String,
        /// Jump credential.
        jump: String,
        /// What failed.
        message: String,
    },
    /// The pooled connection died and a new one could not be opened for a channel.
    #[error("the connection for credential \"{name}\" was lost: {message}")]
    Lost {
        /// Credential.
        name: String,
        /// What failed.
        message: String,
    },
}

/// Where `forwarded-tcpip` channels (remote tunnels) go: one route per port the server bound
/// for this connection.
#[derive(Default)]
pub struct Forwards {
    routes: Mutex<HashMap<u32, tokio::sync::mpsc::UnboundedSender<Channel<Msg>>>>,
}

impl Forwards {
    /// Sends the channels the server opens for `port` to `to`.
    pub fn register(&self, port: u32, to: tokio::sync::mpsc::UnboundedSender<Channel<Msg>>) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port, to);
    }

    /// Stops routing `port`.
    pub fn unregister(&self, port: u32) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&port);
    }

    fn route(&self, port: u32) -> Option<tokio::sync::mpsc::UnboundedSender<Channel<Msg>>> {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&port)
            .cloned()
    }
}

/// The russh client handler: checks the host key, and routes remote-forwarded channels to the
/// tunnel that asked for them (any other channel the server opens is refused).
pub struct ClientHandler {
    host: String,
    port: u16,
    policy: HostKeyPolicy,
    known_hosts: Arc<KnownHosts>,
    seen: Arc<Mutex<Option<(String, Trust, PublicKey)>>>,
    forwards: Arc<Forwards>,
}

/// Handler errors: russh's own, or a refused host key (kept typed so the caller can say why).
#[derive(Debug, Error)]
pub enum HandlerError {
    /// From russh.
    #[error(transparent)]
    Ssh(#[from] russh::Error),
    /// From the host-key check.
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
}

impl client::Handler for ClientHandler {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        server_public_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Host certificates are not requested (Preferred::host_key_certificates stays empty), so a
        // certificate here is checked by the key inside it, like a plain key.
        let key: PublicKey = match server_public_key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            russh::keys::PublicKeyOrCertificate::Certificate(cert) => {
                PublicKey::new(cert.public_key().clone(), "")
            }
        };
        let trust = self
            .known_hosts
            .verify(&self.host, self.port, &key, &self.policy)?;
        if trust == Trust::Learned {
            tracing::warn!(
                host = %self.host, port = self.port, fingerprint = %fingerprint(&key),
                "accept-new: recorded the host key of a host seen for the first time"
            );
        }
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((fingerprint(&key), trust, key.clone()));
        Ok(true)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        match self.forwards.route(connected_port) {
            Some(to) => {
                reply.accept().await;
                tracing::debug!(
                    connected_address,
                    connected_port,
                    originator_address,
                    originator_port,
                    "remote tunnel connection"
                );
                let _ = to.send(channel);
            }
            None => {
                tracing::warn!(
                    connected_address,
                    connected_port,
                    "the server opened a forwarded channel no tunnel asked for; refused"
                );
                drop(reply);
            }
        }
        Ok(())
    }
}

/// An authenticated connection. Channels are opened on it concurrently; it is shared through
/// `Arc` by the pool.
pub struct Connection {
    name: String,
    handle: Handle<ClientHandler>,
    /// The jump connection this one runs through: kept alive as long as this one is.
    via: Option<Arc<Connection>>,
    host_key: String,
    host_public_key: Option<PublicKey>,
    forwards: Arc<Forwards>,
    opened: Instant,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("host_key", &self.host_key)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// The credential this connection is for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `SHA256:...` of the host key that was accepted.
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// The host key that was accepted.
    pub fn host_public_key(&self) -> Option<&PublicKey> {
        self.host_public_key.as_ref()
    }

    /// Routes for remote tunnels on this connection.
    pub fn forwards(&self) -> &Arc<Forwards> {
        &self.forwards
    }

    /// How long ago it was opened.
    pub fn age(&self) -> Duration {
        self.opened.elapsed()
    }

    /// True once the connection (or the jump connection under it) has ended.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed() || self.via.as_ref().is_some_and(|v| v.is_closed())
    }

    /// The russh handle, for what this crate does not wrap (SFTP subsystem, forwarding, ...).
    pub fn handle(&self) -> &Handle<ClientHandler> {
        &self.handle
    }

    fn lost(&self, e: russh::Error) -> ConnectError {
        ConnectError::Lost {
            name: self.name.clone(),
            message: e.to_string(),
        }
    }

    /// Opens a session channel (for exec, a shell, or a subsystem such as SFTP).
    pub async fn open_session(&self) -> Result<Channel<Msg>, ConnectError> {
        self.handle
            .channel_open_session()
            .await
            .map_err(|e| self.lost(e))
    }

    /// Opens a `direct-tcpip` channel to `host:port` as seen from the server.
    pub async fn open_direct_tcpip(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Channel<Msg>, ConnectError> {
        self.handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|e| self.lost(e))
    }

    /// Says goodbye to the server (best effort).
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// Settings shared by all connections.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// SSH keepalive interval (three unanswered keepalives end the connection).
    pub keepalive: Duration,
}

fn client_config(options: &ConnectOptions, known: &[Algorithm]) -> client::Config {
    // Ask first for the key types known_hosts already holds for this host, as OpenSSH does.
    let mut keys: Vec<Algorithm> = known.to_vec();
    for alg in Preferred::DEFAULT.key.iter() {
        if !keys.contains(alg) {
            keys.push(alg.clone());
        }
    }
    client::Config {
        keepalive_interval: Some(options.keepalive),
        keepalive_max: 3,
        nodelay: true,
        preferred: Preferred {
            key: Cow::Owned(keys),
            ..Preferred::DEFAULT
        },
        ..client::Config::default()
    }
}

/// Connects to `credential` (through `via` when it has a jump host), checks the host key and
/// authenticates, all within `credential.connect_timeout`.
pub async fn connect(
    credential: &Credential,
    via: Option<Arc<Connection>>,
    known_hosts: Arc<KnownHosts>,
    options: &ConnectOptions,
) -> Result<Connection, ConnectError> {
    let limit = credential.connect_timeout;
    match tokio::time::timeout(limit, connect_inner(credential, via, known_hosts, options)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout {
            name: credential.name.clone(),
            host: credential.host.clone(),
            port: credential.port,
            secs: limit.as_secs_f64(),
        }),
    }
}

async fn connect_inner(
    credential: &Credential,
    via: Option<Arc<Connection>>,
    known_hosts: Arc<KnownHosts>,
    options: &ConnectOptions,
) -> Result<Connection, ConnectError> {
    let config = Arc::new(client_config(
        options,
        &known_hosts.known_algorithms(&credential.host, credential.port),
    ));
    let seen = Arc::new(Mutex::new(None));
    let forwards = Arc::new(Forwards::default());
    let handler = ClientHandler {
        host: credential.host.clone(),
        port: credential.port,
        policy: credential.host_key.clone(),
        known_hosts,
        seen: seen.clone(),
        forwards: forwards.clone(),
    };
    let protocol = |e: HandlerError| match e {
        HandlerError::HostKey(e) => ConnectError::HostKey(e),
        HandlerError::Ssh(e) => ConnectError::Protocol {
            name: credential.name.clone(),
            host: credential.host.clone(),
            port: credential.port,
            message: e.to_string(),
        },
    };
    let mut handle = match &via {
        Some(jump) => {
            let channel = jump
                .open_direct_tcpip(&credential.host, credential.port)
                .await
                .map_err(|e| ConnectError::Jump {
                    name: credential.name.clone(),
                    jump: jump.name().to_owned(),
                    message: e.to_string(),
                })?;
            client::connect_stream(config, channel.into_stream(), handler)
                .await
                .map_err(protocol)?
        }
        None => {
            let stream =
                tokio::net::TcpStream::connect((credential.host.as_str(), credential.port))
                    .await
                    .map_err(|e| ConnectError::Unreachable {
                        name: credential.name.clone(),
                        host: credential.host.clone(),
                        port: credential.port,
                        message: e.to_string(),
                    })?;
            let _ = stream.set_nodelay(true);
            client::connect_stream(config, stream, handler)
                .await
                .map_err(protocol)?
        }
    };
    authenticate(&mut handle, credential).await?;
    let (host_key, host_public_key) = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|(fp, _, key)| (fp.clone(), Some(key.clone())))
        .unwrap_or_default();
    tracing::info!(credential = %credential.name, host = %credential.host, port = credential.port, %host_key, "connected");
    Ok(Connection {
        name: credential.name.clone(),
        handle,
        via,
        host_key,
        host_public_key,
        forwards,
        opened: Instant::now(),
    })
}
