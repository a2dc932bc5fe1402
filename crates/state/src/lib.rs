//! toolgate's state: the stores behind the gateway's promises, each behind a trait so that a
//! single instance runs on memory or SQLite and many instances share Redis and PostgreSQL.
#![forbid(unsafe_code)]

pub mod counters;
pub mod sqlite;

pub use counters::{
    BoxFuture, CounterSpec, CounterStore, MemoryCounters, Reservation, Reserve, StoreError, Usage,
};
pub use sqlite::SqliteState;
