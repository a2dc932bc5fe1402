//! The state stores, opened once from `[state]`: embedded SQLite for one instance, or
//! PostgreSQL and Redis shared by many.

use std::sync::Arc;
use std::time::Duration;

use toolgate_state::{
    ApprovalStore, AuditSink, CounterStore, GrantStore, MemoryCounters, MemoryPins, PinStore,
    PostgresState, RedisState, SpooledAudit, SqliteState, StoreError, WebSessionStore,
};

use crate::Config;
use crate::config::{CounterBackend, Pinning};

/// How long opening the stores and each later operation on PostgreSQL may wait.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Every store a gateway (or a CLI command) works on.
#[derive(Clone)]
pub struct Stores {
    /// Rate-limit counters.
    pub counters: Arc<dyn CounterStore>,
    /// Pinned tool definitions.
    pub pins: Arc<dyn PinStore>,
    /// The audit log (behind a disk spool when it is remote).
    pub audit: Arc<dyn AuditSink>,
    /// Approvals.
    pub approvals: Arc<dyn ApprovalStore>,
    /// Grants made while gateways run (`toolgate grants`).
    pub grants: Arc<dyn GrantStore>,
    /// Browser sessions of the web UI (shared, so that a login holds on every instance).
    pub web_sessions: Arc<dyn WebSessionStore>,
    /// Redis, when configured: decisions on approvals are announced there.
    pub redis: Option<RedisState>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

/// The stores of records (everything but counters), which live together.
type Records = (
    Arc<dyn PinStore>,
    Arc<dyn AuditSink>,
    Arc<dyn ApprovalStore>,
    Arc<dyn GrantStore>,
    Arc<dyn WebSessionStore>,
);

/// Who opens the stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `toolgate serve`: Redis must answer at start, and this process replays the audit spool.
    Serve,
    /// A CLI command: Redis is only needed by what uses it (a command about approvals works
    /// while Redis is down), and the spool is left to the gateway.
    Command,
}

impl Stores {
    /// Opens what the configuration names. `state.db` is opened only when something lives
    /// there.
    pub async fn open(config: &Config, purpose: Purpose) -> Result<Stores, StoreError> {
        let shared = &config.shared;
        let path = config.state_dir.join("state.db");
        let needs_sqlite =
            shared.postgres.is_none() || config.counters.backend == CounterBackend::Sqlite;
        let sqlite = if needs_sqlite {
            Some(SqliteState::open(&path, DATABASE_TIMEOUT).await?)
        } else {
            None
        };
        let redis = match &shared.redis {
            Some(url) => Some(
                RedisState::connect(
                    url,
                    &shared.redis_prefix,
                    config.counters.store_timeout,
                    purpose == Purpose::Serve,
                )
                .await?,
            ),
            None => None,
        };
        let postgres = match &shared.postgres {
            Some(url) => Some(PostgresState::connect(url, DATABASE_TIMEOUT).await?),
            None => None,
        };
        let counters: Arc<dyn CounterStore> = match config.counters.backend {
            CounterBackend::Memory => Arc::new(MemoryCounters::new()),
            // Its own connection, so that calls wait for counters only within store_timeout.
            CounterBackend::Sqlite => {
                Arc::new(SqliteState::open(&path, config.counters.store_timeout).await?)
            }
            CounterBackend::Redis => Arc::new(redis.clone().ok_or_else(|| {
                StoreError::Unavailable("counters = \"redis\" needs [state] redis".into())
            })?),
        };
        let (pins, audit, approvals, grants, web_sessions): Records = match (postgres, sqlite) {
            (Some(pg), _) => {
                let pg = Arc::new(pg);
                let spool = SpooledAudit::start(
                    pg.clone(),
                    &config.state_dir.join("audit-spool"),
                    shared.audit_spool_max_bytes,
                    purpose == Purpose::Serve,
                )?;
                (pg.clone(), spool, pg.clone(), pg.clone(), pg)
            }
            (None, Some(db)) => {
                let db = Arc::new(db);
                (db.clone(), db.clone(), db.clone(), db.clone(), db)
            }
            (None, None) => unreachable!("state.db is opened when PostgreSQL is not"),
        };
        let pins = if config.catalog.pinning == Pinning::Off {
            Arc::new(MemoryPins::new())
        } else {
            pins
        };
        Ok(Stores {
            counters,
            pins,
            audit,
            approvals,
            grants,
            web_sessions,
            redis,
        })
    }

    /// Tells every instance that an approval was decided, so that a call held anywhere is
    /// released at once (without Redis, instances notice within their poll interval).
    pub async fn announce_decision(&self, id: &str) {
        if let Some(redis) = &self.redis
            && let Err(e) = redis.publish_decision(id).await
        {
            tracing::warn!(approval = id, error = %e, "cannot announce the decision on redis; other instances see it at their next poll");
        }
    }
}
