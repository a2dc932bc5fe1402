//! One pooled connection per credential, reused by every call, reopened when it died.
//!
//! Opening an SSH connection costs a TCP handshake, a key exchange and an authentication (tens to
//! hundreds of milliseconds, more through a jump host); a channel on an open connection costs one
//! round trip. So each credential has one slot holding its live connection; a call takes the
//! connection and a permit (`sessions_per_credential`, because servers cap channels per
//! connection: OpenSSH's MaxSessions is 10), and a dead connection is replaced on next use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use russh::Channel;
use russh::client::Msg;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::connection::{ConnectError, ConnectOptions, Connection, connect};
use crate::credentials::{CredentialError, CredentialStore};
use crate::host_keys::KnownHosts;

/// Errors of getting a connection.
#[derive(Debug, Error, Clone)]
pub enum PoolError {
    /// The credential does not exist.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

struct Slot {
    /// Held while connecting, so concurrent first calls open one connection, not several.
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
    permits: Arc<Semaphore>,
}

/// A connection plus the right to run one channel on it; the permit is returned on drop.
pub struct Lease {
    /// The connection.
    pub connection: Arc<Connection>,
    _permit: OwnedSemaphorePermit,
}

/// The pool, shared by all tools.
pub struct Pool {
    credentials: Arc<CredentialStore>,
    known_hosts: Arc<KnownHosts>,
    options: ConnectOptions,
    sessions_per_credential: usize,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Pool {
    /// A pool connecting with `credentials`, checking host keys against `known_hosts`.
    pub fn new(
        credentials: Arc<CredentialStore>,
        known_hosts: Arc<KnownHosts>,
        options: ConnectOptions,
        sessions_per_credential: usize,
    ) -> Self {
        Self {
            credentials,
            known_hosts,
            options,
            sessions_per_credential: sessions_per_credential.max(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The credentials this pool connects with.
    pub fn credentials(&self) -> &Arc<CredentialStore> {
        &self.credentials
    }

    /// The known_hosts file in use.
    pub fn known_hosts(&self) -> &Arc<KnownHosts> {
        &self.known_hosts
    }

    fn slot(&self, name: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Slot {
                    conn: tokio::sync::Mutex::new(None),
                    permits: Arc::new(Semaphore::new(self.sessions_per_credential)),
                })
            })
            .clone()
    }

    /// Whether `name` has a live pooled connection now (no I/O).
    pub fn is_connected(&self, name: &str) -> bool {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        slot.and_then(|s| {
            s.conn
                .try_lock()
                .ok()
                .and_then(|c| c.as_ref().map(|c| !c.is_closed()))
        })
        .unwrap_or(false)
    }

    /// The live connection for `name`, opening it (and its jump hosts) when there is none or the
    /// last one died.
    pub async fn connection(&self, name: &str) -> Result<Arc<Connection>, PoolError> {
        self.connection_depth(name, 0).await
    }

    fn connection_depth<'a>(
        &'a self,
        name: &'a str,
        depth: usize,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Arc<Connection>, PoolError>> + Send + 'a>,
    > {
        Box::pin(async move {
            let credential = self.credentials.get(name)?;
            if depth > 8 {
                return Err(CredentialError::JumpLoop(name.to_owned()).into());
            }
            let slot = self.slot(name);
            let mut conn = slot.conn.lock().await;
            if let Some(c) = conn.as_ref()
                && !c.is_closed()
            {
                return Ok(c.clone());
            }
            if conn.take().is_some() {
                tracing::info!(credential = name, "pooled connection died; reconnecting");
            }
            let via = match &credential.jump {
                Some(jump) => Some(self.connection_depth(jump, depth + 1).await?),
                None => None,
            };
            let fresh =
                Arc::new(connect(&credential, via, self.known_hosts.clone(), &self.options).await?);
            *conn = Some(fresh.clone());
            Ok(fresh)
        })
    }

    /// A connection for `name` and a permit to run one channel on it (waits while
    /// `sessions_per_credential` channels are busy).
    pub async fn lease(&self, name: &str) -> Result<Lease, PoolError> {
        let permits = self.slot(name).permits.clone();
        let permit = permits
            .acquire_owned()
            .await
            .expect("pool semaphores are never closed");
        let connection = self.connection(name).await?;
        Ok(Lease {
            connection,
            _permit: permit,
        })
    }

    /// Opens a session channel for `name`; when the pooled connection turns out to be dead (the
    /// server dropped it since the last call), reconnects once and retries.
    pub async fn open_session(&self, name: &str) -> Result<(Lease, Channel<Msg>), PoolError> {
        let lease = self.lease(name).await?;
        match lease.connection.open_session().await {
            Ok(channel) => Ok((lease, channel)),
            Err(first) => {
                tracing::info!(credential = name, error = %first, "channel open failed; reconnecting once");
                self.forget(name, &lease.connection).await;
                let Lease { _permit, .. } = lease;
                let connection = self.connection(name).await?;
                let channel = connection.open_session().await?;
                Ok((
                    Lease {
                        connection,
                        _permit,
                    },
                    channel,
                ))
            }
        }
    }

    /// Drops `dead` from the pool if it is still the pooled connection of `name`.
    pub async fn forget(&self, name: &str, dead: &Arc<Connection>) {
        let slot = self.slot(name);
        let mut conn = slot.conn.lock().await;
        if conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, dead)) {
            *conn = None;
        }
    }

    /// Closes and drops the pooled connection of `name` (after `remove_credential`).
    pub async fn disconnect(&self, name: &str) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(slot) = slot
            && let Some(conn) = slot.conn.lock().await.take()
        {
            conn.close().await;
        }
    }
}
