//! Interactive sessions: a PTY shell on a pooled connection, its output fed into a
//! [`crate::pty::SharedTerm`] by one task per session, and the rules around them.
//!
//! - **Ownership.** Every session records the [`OwnerId`] of the MCP client that opened it; any
//!   lookup by another owner answers "unknown session", exactly as for an id that never existed,
//!   so one client cannot even learn that another's session exists. Over stdio there is one
//!   client per process; a transport that serves several clients gives each its own
//!   [`crate::SshMcp::for_new_client`] and so its own owner, and the sessions of an owner that
//!   goes away are ended (see [`Owner`]).
//! - **Caps.** At most `pty_sessions_per_credential` live sessions per credential; each also
//!   holds one of the pool's `sessions_per_credential` channel permits while it lives.
//! - **Idle timeout.** A session no call touched for `session_idle_secs` is closed by its task.
//!   An ended session stays readable (its last screen and why it ended) until
//!   `ssh_session_end`, or for another idle period.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use crate::config::Limits;
use crate::pool::{Lease, Pool, PoolError};
use crate::pty::{SharedTerm, Term};

/// Who opened a session: one MCP client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwnerId(pub u64);

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client-{}", self.0)
    }
}

/// Errors of the session tools.
#[derive(Debug, Error)]
pub enum SessionError {
    /// No session of that id for this client (also what another client's id gives).
    #[error("unknown session \"{0}\" (ssh_session_list shows this client's sessions)")]
    Unknown(String),
    /// The cap on live sessions per credential.
    #[error(
        "credential \"{credential}\" has {limit} interactive sessions open already (limits.pty_sessions_per_credential); end one with ssh_session_end first"
    )]
    Cap {
        /// Credential.
        credential: String,
        /// The cap.
        limit: usize,
    },
    /// Connecting or opening the channel failed.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The server refused the PTY or the shell.
    #[error("the server refused {what} for credential \"{credential}\"")]
    Refused {
        /// Credential.
        credential: String,
        /// `a PTY` or `a shell`.
        what: &'static str,
    },
    /// The session's program has ended; input cannot reach it.
    #[error("session \"{id}\" has ended ({why}); read it for its last screen, or end it")]
    Ended {
        /// Session id.
        id: String,
        /// Why.
        why: String,
    },
    /// The channel failed while writing.
    #[error("session \"{id}\": {message}")]
    Channel {
        /// Session id.
        id: String,
        /// russh's message.
        message: String,
    },
}

enum Control {
    End(String),
}

/// One interactive session.
pub struct Session {
    /// Its id (`sessionId`).
    pub id: String,
    /// The client that opened it.
    pub owner: OwnerId,
    /// The credential it runs on.
    pub credential: String,
    /// `TERM` it announced.
    pub term_name: String,
    /// When it started (wall clock, for listings).
    pub started_at: SystemTime,
    /// The screen.
    pub term: Arc<SharedTerm>,
    writer: Arc<ChannelWriteHalf<Msg>>,
    control: mpsc::UnboundedSender<Control>,
    last_used: Mutex<Instant>,
    ended_at: Mutex<Option<Instant>>,
}

impl Session {
    /// Marks the session as used now (postpones the idle timeout).
    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn last_used(&self) -> Instant {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why it ended, once it has.
    pub fn ended(&self) -> Option<String> {
        self.term.with(|t| t.closed().map(str::to_owned))
    }

    fn check_live(&self) -> Result<(), SessionError> {
        match self.ended() {
            Some(why) => Err(SessionError::Ended {
                id: self.id.clone(),
                why,
            }),
            None => Ok(()),
        }
    }

    /// Types `bytes` into the session.
    pub async fn send(&self, bytes: Vec<u8>) -> Result<(), SessionError> {
        self.touch();
        self.check_live()?;
        if bytes.is_empty() {
            return Ok(());
        }
        self.writer
            .data_bytes(bytes)
            .await
            .map_err(|e| SessionError::Channel {
                id: self.id.clone(),
                message: e.to_string(),
            })
    }

    /// Changes the terminal size on both sides.
    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), SessionError> {
        self.touch();
        self.check_live()?;
        self.writer
            .window_change(u32::from(cols), u32::from(rows), 0, 0)
            .await
            .map_err(|e| SessionError::Channel {
                id: self.id.clone(),
                message: e.to_string(),
            })?;
        self.term.with(|t| t.resize(cols, rows));
        Ok(())
    }

    /// Asks the session's task to close the channel (no wait).
    pub fn end(&self, why: &str) {
        let _ = self.control.send(Control::End(why.to_owned()));
    }
}

/// What to open.
#[derive(Clone, Debug)]
pub struct StartRequest {
    /// Credential.
    pub credential: String,
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
    /// `TERM`.
    pub term: String,
}

/// All sessions of this process.
pub struct SessionManager {
    pool: Arc<Pool>,
    limits: Limits,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    caps: Mutex<HashMap<String, Arc<Semaphore>>>,
    next: AtomicU64,
}

impl SessionManager {
    /// A manager opening channels from `pool` under `limits`.
    pub fn new(pool: Arc<Pool>, limits: Limits) -> Self {
        Self {
            pool,
            limits,
            sessions: Mutex::new(HashMap::new()),
            caps: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cap(&self, credential: &str) -> Arc<Semaphore> {
        self.caps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(credential.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limits.pty_sessions_per_credential)))
            .clone()
    }

    /// Drops sessions that ended more than one idle period ago.
    fn purge(&self) {
        let idle = self.limits.session_idle;
        self.map().retain(|_, s| {
            s.ended_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none_or(|at| at.elapsed() < idle)
        });
    }

    /// Opens a PTY shell for `owner`.
    pub async fn start(
        &self,
        owner: OwnerId,
        request: StartRequest,
    ) -> Result<Arc<Session>, SessionError> {
        self.purge();
        let permit = self
            .cap(&request.credential)
            .try_acquire_owned()
            .map_err(|_| SessionError::Cap {
                credential: request.credential.clone(),
                limit: self.limits.pty_sessions_per_credential,
            })?;
        let (lease, mut channel) = self.pool.open_session(&request.credential).await?;
        let refused = |what| SessionError::Refused {
            credential: request.credential.clone(),
            what,
        };
        let lost = |e: russh::Error| {
            SessionError::Pool(PoolError::Connect(crate::connection::ConnectError::Lost {
                name: request.credential.clone(),
                message: e.to_string(),
            }))
        };
        channel
            .request_pty(
                true,
                &request.term,
                u32::from(request.cols),
                u32::from(request.rows),
                0,
                0,
                &[],
            )
            .await
            .map_err(lost)?;
        if !reply(&mut channel).await {
            return Err(refused("a PTY"));
        }
        channel.request_shell(true).await.map_err(lost)?;
        if !reply(&mut channel).await {
            return Err(refused("a shell"));
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("s-{n}");
        let (read, writer) = channel.split();
        let writer = Arc::new(writer);
        let (control, control_rx) = mpsc::unbounded_channel();
        let term = Arc::new(SharedTerm::new(Term::new(
            request.cols,
            request.rows,
            self.limits.session_scrollback_lines,
            self.limits.keep_output_bytes.min(4 << 20),
        )));
        let session = Arc::new(Session {
            id: id.clone(),
            owner,
            credential: request.credential.clone(),
            term_name: request.term.clone(),
            started_at: SystemTime::now(),
            term,
            writer: writer.clone(),
            control,
            last_used: Mutex::new(Instant::now()),
            ended_at: Mutex::new(None),
        });
        self.map().insert(id.clone(), session.clone());
        tokio::spawn(pump(
            read,
            writer,
            Arc::downgrade(&session),
            session.term.clone(),
            control_rx,
            self.limits.session_idle,
            (lease, permit),
        ));
        tracing::info!(session = %id, %owner, credential = %request.credential, "interactive session started");
        Ok(session)
    }

    /// The session `id` if `owner` opened it.
    pub fn get(&self, owner: OwnerId, id: &str) -> Result<Arc<Session>, SessionError> {
        match self.map().get(id) {
            Some(s) if s.owner == owner => Ok(s.clone()),
            _ => Err(SessionError::Unknown(id.to_owned())),
        }
    }

    /// `owner`'s sessions, oldest first.
    pub fn list(&self, owner: OwnerId) -> Vec<Arc<Session>> {
        self.purge();
        let mut out: Vec<Arc<Session>> = self
            .map()
            .values()
            .filter(|s| s.owner == owner)
            .cloned()
            .collect();
        out.sort_by_key(|s| s.started_at);
        out
    }

    /// Ends and forgets `owner`'s session `id`; waits briefly for the channel to close.
    pub async fn end(&self, owner: OwnerId, id: &str) -> Result<Arc<Session>, SessionError> {
        let session = self.get(owner, id)?;
        session.end("ended by ssh_session_end");
        let deadline = Instant::now() + Duration::from_secs(2);
        while session.ended().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.map().remove(id);
        Ok(session)
    }

    /// Ends every session of `owner` (its client went away).
    pub fn end_owner(&self, owner: OwnerId) {
        let gone: Vec<Arc<Session>> = {
            let mut map = self.map();
            let ids: Vec<String> = map
                .values()
                .filter(|s| s.owner == owner)
                .map(|s| s.id.clone())
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        for s in gone {
            s.end("its MCP client disconnected");
        }
    }
}

/// Waits (at most 30 s) for the reply to a `want_reply` request: true for success.
pub(crate) async fn reply(channel: &mut russh::Channel<Msg>) -> bool {
    let wait = async {
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Success) => return true,
                Some(ChannelMsg::Failure) | Some(ChannelMsg::Close) | None => return false,
                Some(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or(false)
}

/// The task of one session: feeds output to the screen, ends the session on request, on idle
/// timeout, or when the shell or the connection ends; holds the channel permits until then.
async fn pump(
    mut read: ChannelReadHalf,
    writer: Arc<ChannelWriteHalf<Msg>>,
    session: Weak<Session>,
    term: Arc<SharedTerm>,
    mut control: mpsc::UnboundedReceiver<Control>,
    idle: Duration,
    held: (Lease, OwnedSemaphorePermit),
) {
    let mut exit_note: Option<String> = None;
    let why = loop {
        let idle_at = match session.upgrade() {
            Some(s) => s.last_used() + idle,
            None => {
                close_channel(&writer).await;
                break "its MCP client disconnected".to_owned();
            }
        };
        tokio::select! {
            msg = read.wait() => match msg {
                Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                    term.process(&data);
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    term.with(|t| t.set_exit_status(exit_status));
                    exit_note = Some(format!("the shell exited with status {exit_status}"));
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    exit_note = Some(format!("the shell was killed by signal {signal_name:?}"));
                }
                Some(ChannelMsg::Close) => {
                    break exit_note.take().unwrap_or_else(|| "the server closed the session".into());
                }
                None => {
                    break exit_note.take().unwrap_or_else(|| "the connection was lost".into());
                }
                Some(_) => {}
            },
            c = control.recv() => {
                let why = match c {
                    Some(Control::End(why)) => why,
                    None => "its MCP client disconnected".to_owned(),
                };
                close_channel(&writer).await;
                break why;
            }
            _ = tokio::time::sleep_until(idle_at) => {
                let still_idle = session.upgrade().is_none_or(|s| s.last_used() + idle <= Instant::now());
                if still_idle {
                    close_channel(&writer).await;
                    break format!("closed after {} s without use (limits.session_idle_secs)", idle.as_secs());
                }
            }
        }
    };
    term.close(why.clone());
    if let Some(s) = session.upgrade() {
        *s.ended_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        tracing::info!(session = %s.id, credential = %s.credential, %why, "interactive session ended");
    }
    drop(held);
}

async fn close_channel(writer: &ChannelWriteHalf<Msg>) {
    let _ = writer.eof().await;
    let _ = writer.close().await;
}

/// An MCP client's identity; when the last clone of the server value holding it is dropped (the
/// client went away), its sessions and tunnels are ended.
pub struct Owner {
    /// The id.
    pub id: OwnerId,
    sessions: Weak<SessionManager>,
    tunnels: Weak<crate::tunnels::TunnelManager>,
}

impl Owner {
    /// A new owner of sessions in `sessions` and tunnels in `tunnels`.
    pub fn new(
        id: OwnerId,
        sessions: &Arc<SessionManager>,
        tunnels: &Arc<crate::tunnels::TunnelManager>,
    ) -> Self {
        Self {
            id,
            sessions: Arc::downgrade(sessions),
            tunnels: Arc::downgrade(tunnels),
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(m) = self.sessions.upgrade() {
            m.end_owner(self.id);
        }
        if let Some(t) = self.tunnels.upgrade() {
            t.stop_owner(self.id);
        }
    }
}
