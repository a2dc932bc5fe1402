//! PostgreSQL: pins, the audit log and approvals shared by many gateway instances.
//!
//! The schema is migrated at start-up under an advisory lock, so instances starting together
//! migrate once. Audit records carry a unique id of their own (`uid`) so that a batch written
//! twice (a retry after a lost answer, a replay from the disk spool) is stored once.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult};
use sqlx::{PgPool, Postgres, Transaction};

use crate::audit::{AuditFilter, AuditRecord, AuditSink, AuditTally};
use crate::counters::{BoxFuture, StoreError};
use crate::sql::stores::{SqlStore, audit_append, audit_prune, end};
use crate::sql::{audit_query, audit_records, audit_tally, bind_audit_filter};

/// Schema migrations, applied in order; `toolgate_migrations` records how many ran.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE pins (
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        fingerprint TEXT,
        definition TEXT,
        approved_ms BIGINT,
        pending_fingerprint TEXT,
        pending_definition TEXT,
        pending_ms BIGINT,
        first_seen_ms BIGINT NOT NULL,
        PRIMARY KEY (server, tool)
    );
    CREATE TABLE generations (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO generations (name, value) VALUES ('pins', 0);
    CREATE TABLE audit (
        id BIGSERIAL PRIMARY KEY,
        uid TEXT UNIQUE,
        at_ms BIGINT NOT NULL,
        grant_name TEXT,
        tool TEXT,
        decision TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX audit_at ON audit (at_ms);
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL,
        grant_name TEXT NOT NULL,
        session TEXT NOT NULL,
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        args_sha256 TEXT NOT NULL,
        policy_version TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX approvals_status ON approvals (status, created_ms);",
    "CREATE TABLE grants (
        name TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL,
        policy TEXT,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL
    );
    INSERT INTO generations (name, value) VALUES ('grants', 0);",
    "CREATE TABLE web_sessions (
        digest TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        expires_ms BIGINT NOT NULL
    );",
    // Rows before this have NULL and the tally reads their text.
    "ALTER TABLE audit ADD COLUMN server TEXT;",
];

/// Serializes migrations across instances (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x746f_6f6c_6761_7465; // "toolgate"

/// The PostgreSQL state store.
#[derive(Debug, Clone)]
pub struct PostgresState {
    pool: PgPool,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("postgres: {e}"))
}

impl PostgresState {
    /// Connects to `url` (`postgres://user:password@host:port/db`) and migrates the schema.
    /// Each operation waits at most `timeout` for a connection.
    pub async fn connect(url: &str, timeout: Duration) -> Result<PostgresState, StoreError> {
        // Notices (e.g. "relation already exists, skipping" at every start) are not news.
        let options = PgConnectOptions::from_str(url)
            .map_err(unavailable)?
            .options([("client_min_messages", "warning")]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(timeout)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        let state = PostgresState { pool };
        state.migrate().await?;
        Ok(state)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let result = async {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS toolgate_migrations (version BIGINT NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM toolgate_migrations")
                    .fetch_one(&mut *tx)
                    .await?;
            let done = done.unwrap_or(0).max(0) as usize;
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
                sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO toolgate_migrations (version) VALUES ($1)")
                    .bind(i as i64 + 1)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(())
        }
        .await;
        end::<Self, _>(tx, result).await
    }
}

impl SqlStore for PostgresState {
    type Db = Postgres;
    fn pool(&self) -> &PgPool {
        &self.pool
    }
    fn begin(&self) -> BoxFuture<'_, Result<Transaction<'static, Postgres>, sqlx::Error>> {
        Box::pin(self.pool.begin())
    }
    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
    fn unavailable(e: sqlx::Error) -> StoreError {
        unavailable(e)
    }
    fn push_param(sql: &mut String, n: usize) {
        sql.push('$');
        sql.push_str(itoa::Buffer::new().format(n));
    }
    const LOCK_ROW: &'static str = " FOR UPDATE";
    const RECORD_USED: &'static str = "jsonb_set(record::jsonb, '{status}', '\"used\"')::text";
    const AUDIT_UIDS: bool = true;
}

impl AuditSink for PostgresState {
    fn append<'a>(&'a self, records: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(audit_append(self, records))
    }

    fn query<'a>(
        &'a self,
        filter: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(async move {
            let sql = sqlx::AssertSqlSafe(audit_query(filter));
            let rows = bind_audit_filter(sqlx::query(sql), filter)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
            audit_records(&rows, filter)
        })
    }

    fn prune(&self, before_ms: u64, keep: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(audit_prune(self, before_ms, keep))
    }

    fn tally(&self, since_ms: u64) -> BoxFuture<'_, Result<Vec<AuditTally>, StoreError>> {
        Box::pin(audit_tally(&self.pool, since_ms, |text, index, member| {
            format!(
                "CASE WHEN substr({text}, 1, 1) = '[' THEN {text}::json ->> {index} ELSE {text}::json ->> '{member}' END"
            )
        }))
    }

    fn needs_uids(&self) -> bool {
        Self::AUDIT_UIDS
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::services;

    /// A fresh, empty store on the test server, for one test.
    pub async fn fresh() -> PostgresState {
        PostgresState::connect(&fresh_url().await, Duration::from_secs(5))
            .await
            .unwrap()
    }

    /// The URL of a fresh, empty database on the test server.
    pub async fn fresh_url() -> String {
        let base = &services().postgres;
        let admin = PostgresState {
            pool: PgPoolOptions::new()
                .max_connections(1)
                .connect(base)
                .await
                .expect("connect to the test PostgreSQL"),
        };
        let name = format!("t{:x}", rand::random::<u64>());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin.pool)
            .await
            .unwrap();
        admin.pool.close().await;
        match base.rfind('/') {
            Some(i) => format!("{}/{name}", &base[..i]),
            None => panic!("no database in {base}"),
        }
    }

    #[tokio::test]
    async fn postgres_pins_keep_the_contract() {
        crate::pins::tests::contract(&fresh().await).await;
    }

    #[tokio::test]
    async fn postgres_audit_keeps_the_contract() {
        crate::audit::tests::contract(&fresh().await).await;
    }

    #[tokio::test]
    async fn postgres_web_sessions_keep_the_contract() {
        crate::web_sessions::tests::contract(&fresh().await).await;
    }

    #[tokio::test]
    async fn postgres_grants_keep_the_contract() {
        crate::grants::tests::contract(&fresh().await).await;
    }

    #[tokio::test]
    async fn postgres_approvals_keep_the_contract() {
        crate::approvals::tests::contract(&fresh().await).await;
    }

    #[tokio::test]
    async fn an_audit_batch_written_twice_is_stored_once() {
        let store = fresh().await;
        let record = AuditRecord {
            uid: Some("u1".into()),
            at_ms: 1,
            kind: "call".into(),
            decision: "allowed".into(),
            ..AuditRecord::default()
        };
        store.append(std::slice::from_ref(&record)).await.unwrap();
        store.append(std::slice::from_ref(&record)).await.unwrap();
        let all = store
            .query(&AuditFilter {
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 1);
    }

    #[tokio::test]
    async fn instances_starting_together_migrate_once() {
        let url = fresh_url().await;
        let first = PostgresState::connect(&url, Duration::from_secs(5))
            .await
            .unwrap();
        let (a, b) = tokio::join!(
            PostgresState::connect(&url, Duration::from_secs(5)),
            PostgresState::connect(&url, Duration::from_secs(5))
        );
        a.unwrap();
        b.unwrap();
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM toolgate_migrations")
            .fetch_all(&first.pool)
            .await
            .unwrap();
        assert_eq!(versions, (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>());
    }
}
