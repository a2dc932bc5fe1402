//! The gateway: configuration, grants, shared upstreams and the table of live sessions.

use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use rand::RngCore;
use serde_json::value::RawValue;
use toolgate_wire::{RawObject, raw};

use crate::audit::AuditLog;
use crate::config::{Config, Isolation};
use crate::grant::{Grant, Grants};
use crate::guard::Guard;
use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::seal::{SEALED_PREFIX, Sealer};
use crate::session::{Mode, Session};
use crate::upstream::{Resume, Upstream};

/// What a sealed session id holds: enough for any instance sharing the `session_key` to
/// serve the session (its HTTP upstreams' server sessions are taken over; stdio upstreams
/// start afresh there).
#[derive(serde::Serialize, serde::Deserialize)]
struct Ticket {
    grant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// The protocol version the client asked for in `initialize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    capabilities: Box<RawValue>,
    client_info: Box<RawValue>,
    /// Server sessions by server name.
    upstreams: Vec<(String, Resume)>,
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `/mcp/{server}` named a server that is not configured.
    #[error("no server named {0:?}")]
    UnknownServer(String),
    /// The grant holds as many sessions as it may.
    #[error("grant {0:?} has reached its limit of {1} sessions")]
    TooManySessions(String, usize),
}

/// What opening a session adds to a plain one.
#[derive(Default)]
struct Opening {
    /// The protocol version a handshake client asked for: its session id is sealed (with it)
    /// when instances share a key.
    version: Option<String>,
    /// Server sessions another instance opened, to take over, by server name.
    resume: Vec<(String, Resume)>,
    /// The id the session is known by already (a takeover).
    id: Option<String>,
}

/// A grant's implicit stateless session per scope.
type StatelessKey = (Arc<str>, Option<String>);

/// Everything the transports share.
pub struct Gateway {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// The accepted grants.
    pub grants: Grants,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Policies, rate limits and approvals.
    pub guard: Arc<Guard>,
    /// Classification and pins of every tool seen.
    pub inventory: Arc<Inventory>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    shared: Mutex<HashMap<String, Arc<Upstream>>>,
    sessions: RwLock<HashMap<String, Arc<Session>>>,
    stateless: Mutex<HashMap<StatelessKey, Arc<Session>>>,
    next_key: AtomicU64,
    streams: Mutex<HashMap<Arc<str>, usize>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Seals session ids when instances share a `session_key`.
    sealer: Option<Sealer>,
    /// The stored grants' generation last applied.
    grants_generation: AtomicU64,
}

/// One open SSE stream counted against its grant; released on drop.
pub struct StreamPermit {
    gateway: Arc<Gateway>,
    grant: Arc<str>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if let Some(n) = self.gateway.streams.lock().unwrap().get_mut(&self.grant) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Gateway {
    /// A gateway for a validated configuration and the guard built from it.
    pub fn new(
        config: Config,
        guard: Guard,
        inventory: Inventory,
        audit: Arc<AuditLog>,
    ) -> Arc<Gateway> {
        guard.set_audit(audit.clone());
        inventory.set_audit(audit.clone());
        let sealer = config.shared.session_key.as_ref().map(Sealer::new);
        Arc::new(Gateway {
            guard: Arc::new(guard),
            inventory: Arc::new(inventory),
            audit,
            grants: Grants::new(&config.grants),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            shared: Mutex::new(HashMap::default()),
            sessions: RwLock::new(HashMap::default()),
            stateless: Mutex::new(HashMap::default()),
            next_key: AtomicU64::new(1),
            streams: Mutex::new(HashMap::default()),
            shutdown: tokio::sync::watch::channel(false).0,
            sealer,
            grants_generation: AtomicU64::new(u64::MAX),
        })
    }

    /// Counts an open stream against the grant's limit; `None` when the grant is at it.
    pub fn open_stream(self: &Arc<Self>, grant: &Grant) -> Option<StreamPermit> {
        let mut streams = self.streams.lock().unwrap();
        let n = streams.entry(grant.name.clone()).or_default();
        if *n >= self.config.limits.streams_per_grant {
            return None;
        }
        *n += 1;
        Some(StreamPermit {
            gateway: self.clone(),
            grant: grant.name.clone(),
        })
    }

    /// Tells long-lived streams to end (graceful shutdown).
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves when shutdown begins.
    pub fn shutting_down(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Opens a session for a client's `initialize` (or the stdio transport), starting its
    /// per-session upstreams and waiting until each has come up or failed.
    pub async fn open_session(
        self: &Arc<Self>,
        grant: Arc<Grant>,
        scope: Option<&str>,
        mode: Mode,
        client_capabilities: &RawValue,
        client_info: &RawValue,
    ) -> Result<Arc<Session>, OpenError> {
        let opening = Opening::default();
        self.open(
            grant,
            scope,
            mode,
            client_capabilities,
            client_info,
            opening,
        )
        .await
    }

    /// Opens a session (see [`Opening`] for what a handshake and a takeover add).
    async fn open(
        self: &Arc<Self>,
        grant: Arc<Grant>,
        scope: Option<&str>,
        mode: Mode,
        client_capabilities: &RawValue,
        client_info: &RawValue,
        opening: Opening,
    ) -> Result<Arc<Session>, OpenError> {
        let Opening {
            version,
            mut resume,
            id,
        } = opening;
        let servers: Vec<_> = match scope {
            Some(name) => {
                vec![
                    self.config
                        .server(name)
                        .ok_or_else(|| OpenError::UnknownServer(name.to_owned()))?
                        .clone(),
                ]
            }
            None => self.config.servers.clone(),
        };
        let limit = self.config.limits.sessions_per_grant;
        if self.sessions_of(&grant.name) >= limit {
            return Err(OpenError::TooManySessions(grant.name.to_string(), limit));
        }
        let upstreams: Vec<Arc<Upstream>> = servers
            .into_iter()
            .map(|server| match server.isolation {
                Isolation::Shared => self.shared_upstream(&server.name),
                Isolation::PerSession => {
                    let taken = resume
                        .iter()
                        .position(|(name, _)| *name == server.name)
                        .map(|i| resume.swap_remove(i).1);
                    Upstream::start_resuming(
                        Arc::new(server),
                        client_capabilities,
                        client_info,
                        self.config.limits.max_line_bytes,
                        taken,
                    )
                }
            })
            .collect();
        futures_util::future::join_all(upstreams.iter().map(|u| u.settled())).await;
        let sealer = self.sealer.as_ref().filter(|_| mode == Mode::Handshake);
        if sealer.is_some() {
            // Server sessions outlive this instance's use of them: another instance may serve
            // the session next. They end when the client ends the session.
            for up in &upstreams {
                up.keep_remote_session(true);
            }
        }
        let id = match (sealer, id) {
            (_, Some(id)) => id,
            (Some(sealer), None) => {
                let ticket = Ticket {
                    grant: grant.name.to_string(),
                    scope: scope.map(str::to_owned),
                    version,
                    capabilities: client_capabilities.to_owned(),
                    client_info: client_info.to_owned(),
                    upstreams: upstreams
                        .iter()
                        .filter_map(|u| Some((u.name.to_string(), u.resumable()?)))
                        .collect(),
                };
                sealer.seal(&serde_json::to_vec(&ticket).expect("a ticket serializes"))
            }
            (None, None) => {
                let mut id = [0u8; 16];
                rand::rng().fill_bytes(&mut id);
                crate::to_hex(&id)
            }
        };
        let session = Session::new(
            id,
            scope.map(str::to_owned),
            self.next_key.fetch_add(1, Ordering::Relaxed),
            grant,
            mode,
            client_capabilities,
            upstreams,
            self.config.clone(),
            self.metrics.clone(),
            self.guard.clone(),
            self.inventory.clone(),
            self.audit.clone(),
        );
        if mode == Mode::Stateless {
            return Ok(session);
        }
        // Two requests taking over one session at once: the first one in serves both.
        let mut sessions = self.sessions.write().unwrap();
        Ok(sessions
            .entry(session.id.clone())
            .or_insert(session)
            .clone())
    }

    /// Serves a session another instance opened (its id is sealed under the shared key and
    /// names this grant): the server sessions of its HTTP upstreams are taken over, its stdio
    /// upstreams start afresh. `None` when the id is not such a session.
    pub async fn resume_session(
        self: &Arc<Self>,
        id: &str,
        grant: &Arc<Grant>,
        scope: Option<&str>,
    ) -> Option<Arc<Session>> {
        let sealer = self
            .sealer
            .as_ref()
            .filter(|_| id.starts_with(SEALED_PREFIX))?;
        let ticket: Ticket = serde_json::from_slice(&sealer.open(id)?).ok()?;
        if ticket.grant != *grant.name || ticket.scope.as_deref() != scope {
            return None;
        }
        let session = self
            .open(
                grant.clone(),
                scope,
                Mode::Handshake,
                &ticket.capabilities,
                &ticket.client_info,
                Opening {
                    version: None,
                    resume: ticket.upstreams,
                    id: Some(id.to_owned()),
                },
            )
            .await
            .ok()?;
        session.initialize_result(ticket.version.as_deref());
        session.touch();
        tracing::info!(grant = %grant.name, "took over a session opened by another instance");
        Some(session)
    }

    /// Opens a session for a client's `initialize` and answers it: the capabilities and
    /// client info in `params` are what the session's upstreams are told.
    pub async fn initialize(
        self: &Arc<Self>,
        grant: Arc<Grant>,
        scope: Option<&str>,
        params: &RawObject,
    ) -> Result<(Arc<Session>, Box<RawValue>), OpenError> {
        let empty = raw(&serde_json::json!({}));
        let caps = params.get("capabilities").unwrap_or(&empty);
        let info = params.get("clientInfo").unwrap_or(&empty);
        let version = params.get_str("protocolVersion");
        let session = self
            .open(
                grant,
                scope,
                Mode::Handshake,
                caps,
                info,
                Opening {
                    version: version.clone(),
                    ..Opening::default()
                },
            )
            .await?;
        let result = session.initialize_result(version.as_deref());
        tracing::info!(session = %session.id, grant = %session.grant.name, version = %session.protocol_version(), "session opened");
        Ok((session, result))
    }

    /// Re-reads the grants' policy files (off the request threads: it reads files) and the
    /// pins, and tells the sessions whose lists may have changed: those of every grant whose
    /// policy changed, and all of them when a pin changed (a tool approved or quarantined).
    /// Applies changes to the stored grants (`toolgate grants`, another instance): new ones
    /// authenticate, rotated tokens stop working, and the sessions of a revoked grant, or of
    /// one whose policy was changed, end.
    pub async fn refresh_grants(&self) {
        let store = &self.guard.stores().grants;
        let generation = match store.generation().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "reading the stored grants failed; keeping those in force");
                return;
            }
        };
        if generation == self.grants_generation.load(Ordering::Relaxed) {
            return;
        }
        let stored = match store.list().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading the stored grants failed; keeping those in force");
                return;
            }
        };
        let ended = self.grants.set_stored(&stored);
        for s in &stored {
            if let Some(path) = &s.policy {
                self.guard.track(std::path::Path::new(path));
            }
        }
        if !ended.is_empty() {
            let mut sessions = self.sessions.write().unwrap();
            sessions.retain(|_, s| !ended.contains(&s.grant.name));
            self.stateless
                .lock()
                .unwrap()
                .retain(|(grant, _), _| !ended.contains(grant));
            tracing::info!(grants = ?ended, "sessions of revoked or changed grants ended");
        }
        self.grants_generation.store(generation, Ordering::Relaxed);
    }

    pub async fn reload_policies(&self) {
        match self.inventory.refresh().await {
            Ok(true) => {
                let all: Vec<Arc<Session>> =
                    self.sessions.read().unwrap().values().cloned().collect();
                for session in all {
                    session.lists_changed();
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "re-reading tool pins failed"),
        }
        let guard = self.guard.clone();
        let Ok(changed) = tokio::task::spawn_blocking(move || guard.reload()).await else {
            return;
        };
        if changed.is_empty() {
            return;
        }
        for path in &changed {
            let policy = self.guard.policy_at(path);
            self.audit.record_later(toolgate_state::AuditRecord {
                at_ms: crate::guard::now_ms(),
                kind: "admin".into(),
                decision: "policy_reloaded".into(),
                policy_version: policy.map(|p| p.version.clone()),
                message: Some(format!("policy file {} reloaded", path.display())),
                ..Default::default()
            });
        }
        let affected: Vec<Arc<Session>> = self
            .sessions
            .read()
            .unwrap()
            .values()
            .filter(|s| s.grant.policy.as_ref().is_some_and(|p| changed.contains(p)))
            .cloned()
            .collect();
        for session in affected {
            session.lists_changed();
        }
    }

    /// The session with this id, if it belongs to `grant`: a session id seen by another grant
    /// is answered as unknown.
    pub fn session(&self, id: &str, grant: &Grant) -> Option<Arc<Session>> {
        let session = self.sessions.read().unwrap().get(id).cloned()?;
        (session.grant.name == grant.name).then(|| {
            session.touch();
            session
        })
    }

    /// The session with this id for `grant` at this endpoint: one of this instance's, or one
    /// another instance sharing the session key opened (taken over).
    pub async fn find_session(
        self: &Arc<Self>,
        id: &str,
        grant: &Arc<Grant>,
        scope: Option<&str>,
    ) -> Option<Arc<Session>> {
        match self.session(id, grant) {
            Some(s) => (s.scope.as_deref() == scope).then_some(s),
            None => self.resume_session(id, grant, scope).await,
        }
    }

    /// The implicit session that serves a grant's stateless (2026-07-28) requests.
    pub async fn stateless_session(
        self: &Arc<Self>,
        grant: Arc<Grant>,
        scope: Option<&str>,
    ) -> Result<Arc<Session>, OpenError> {
        let key = (grant.name.clone(), scope.map(str::to_owned));
        if let Some(s) = self.stateless.lock().unwrap().get(&key) {
            s.touch();
            return Ok(s.clone());
        }
        let caps = raw(&serde_json::json!({}));
        let info = raw(
            &serde_json::json!({"name": "toolgate-stateless", "version": env!("CARGO_PKG_VERSION")}),
        );
        let session = self
            .open_session(grant, scope, Mode::Stateless, &caps, &info)
            .await?;
        let mut table = self.stateless.lock().unwrap();
        Ok(table.entry(key).or_insert(session).clone())
    }

    /// Ends a session: its per-session upstreams stop when the last request using them ends.
    pub fn close_session(&self, id: &str) -> bool {
        self.sessions.write().unwrap().remove(id).is_some()
    }

    /// Closes sessions idle for longer than the configured timeout. Returns how many.
    pub fn expire_idle(&self, now: Instant) -> usize {
        let idle = self.config.limits.session_idle_timeout;
        let mut expired = 0;
        self.sessions.write().unwrap().retain(|_, s| {
            let keep = now.duration_since(s.last_used()) < idle || s.busy();
            expired += usize::from(!keep);
            keep
        });
        self.stateless
            .lock()
            .unwrap()
            .retain(|_, s| now.duration_since(s.last_used()) < idle || s.busy());
        expired
    }

    /// Drops every session (on shutdown): their children are stopped.
    pub fn close_all(&self) {
        self.sessions.write().unwrap().clear();
        self.stateless.lock().unwrap().clear();
        self.shared.lock().unwrap().clear();
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        self.sessions.read().unwrap().len()
    }

    fn sessions_of(&self, grant: &str) -> usize {
        self.sessions
            .read()
            .unwrap()
            .values()
            .filter(|s| &*s.grant.name == grant)
            .count()
    }

    fn shared_upstream(&self, name: &str) -> Arc<Upstream> {
        let mut shared = self.shared.lock().unwrap();
        if let Some(u) = shared.get(name) {
            return u.clone();
        }
        let server = self
            .config
            .server(name)
            .expect("caller looked the server up")
            .clone();
        let mut caps = RawObject::new();
        caps.set_value("elicitation", &serde_json::json!({}));
        if server.allow_sampling {
            caps.set_value("sampling", &serde_json::json!({}));
        }
        if server.allow_roots {
            caps.set_value("roots", &serde_json::json!({"listChanged": true}));
        }
        let info =
            raw(&serde_json::json!({"name": "toolgate", "version": env!("CARGO_PKG_VERSION")}));
        let up = Upstream::start(
            Arc::new(server),
            &caps.to_raw(),
            &info,
            self.config.limits.max_line_bytes,
        );
        shared.insert(name.to_owned(), up.clone());
        up
    }
}
