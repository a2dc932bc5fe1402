//! toolgate's state: the stores behind the gateway's promises (rate-limit counters, pinned
//! tool definitions, the audit log, approvals), each behind a trait so that a single instance runs on memory or SQLite
//! and many instances share Redis and PostgreSQL.
#![forbid(unsafe_code)]

pub mod approvals;
pub mod audit;
pub mod counters;
pub mod grants;
pub mod pins;
pub mod postgres;
pub mod redis;
pub mod spool;
mod sql;
pub mod sqlite;
#[cfg(test)]
mod testing;
pub mod web_sessions;

pub use approvals::{Approval, ApprovalStatus, ApprovalStore, MemoryApprovals};
pub use audit::{AuditFilter, AuditRecord, AuditSink, AuditTally, MemoryAudit};
pub use counters::{
    BoxFuture, CounterSpec, CounterStore, MemoryCounters, Reservation, Reserve, StoreError, Usage,
};
pub use grants::{GrantChange, GrantStore, MemoryGrants, StoredGrant};
pub use pins::{MemoryPins, PinRecord, PinStore, Pinned};
pub use postgres::PostgresState;
pub use redis::RedisState;
pub use spool::SpooledAudit;
pub use sqlite::SqliteState;
pub use web_sessions::{MemoryWebSessions, StoredWebSession, WebSessionStore};
