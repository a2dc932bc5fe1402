//! PostgreSQL: pins, the audit log and approvals shared by many gateway instances.
//!
//! The schema is migrated at start-up under an advisory lock, so instances starting together
//! migrate once. Audit records carry a unique id of their own (`uid`) so that a batch written
//! twice (a retry after a lost answer, a replay from the disk spool) is stored once.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::approvals::{Approval, ApprovalStatus, ApprovalStore};
use crate::audit::{AuditFilter, AuditRecord, AuditSink, AuditTally};
use crate::counters::{BoxFuture, StoreError};
use crate::grants::{GrantChange, GrantStore, StoredGrant, apply};
use crate::pins::{PinRecord, PinStore, Pinned};
use crate::sql::{
    GRANT_COLUMNS, PIN_COLUMNS, approval_of, audit_query, audit_records, audit_row_text,
    audit_tally, bind_audit_filter, encode, pin_record, stored_grant, web_sessions,
};

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
        Self::end(tx, result).await
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(unavailable)
    }

    /// Commits after `result` succeeded, rolls back otherwise.
    async fn end<T>(
        tx: Transaction<'static, Postgres>,
        result: Result<T, sqlx::Error>,
    ) -> Result<T, StoreError> {
        match result {
            Ok(v) => {
                tx.commit().await.map_err(unavailable)?;
                Ok(v)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(unavailable(e))
            }
        }
    }
}

async fn pin_of(
    conn: &mut PgConnection,
    server: &str,
    tool: &str,
) -> Result<Option<PinRecord>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {PIN_COLUMNS} FROM pins WHERE server = $1 AND tool = $2"
    ));
    let row = sqlx::query(sql)
        .bind(server)
        .bind(tool)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(pin_record).transpose()
}

/// Notes a change of the records that generation `name` counts (`pins`, `grants`).
async fn bump(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE generations SET value = value + 1 WHERE name = $1")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl PostgresState {
    /// The value of generation `name`.
    async fn generation_of(&self, name: &str) -> Result<u64, StoreError> {
        let value: i64 = sqlx::query_scalar("SELECT value FROM generations WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(value.max(0) as u64)
    }
}

impl PinStore for PostgresState {
    fn load(&self) -> BoxFuture<'_, Result<Vec<PinRecord>, StoreError>> {
        Box::pin(async move {
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT {PIN_COLUMNS} FROM pins ORDER BY server, tool"
            ));
            let rows = sqlx::query(sql)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(pin_record)
                .collect::<Result<_, _>>()
                .map_err(unavailable)
        })
    }

    fn generation(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.generation_of("pins"))
    }

    fn first_sight<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
        seen: Pinned,
        trust: bool,
    ) -> BoxFuture<'a, Result<PinRecord, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let result = async {
                let column = if trust {
                    "fingerprint, definition, approved_ms"
                } else {
                    "pending_fingerprint, pending_definition, pending_ms"
                };
                let sql = sqlx::AssertSqlSafe(format!(
                    "INSERT INTO pins (server, tool, {column}, first_seen_ms) VALUES ($1, $2, $3, $4, $5, $5)
                     ON CONFLICT (server, tool) DO NOTHING"
                ));
                let inserted = sqlx::query(sql)
                    .bind(server)
                    .bind(tool)
                    .bind(&seen.fingerprint)
                    .bind(&seen.definition)
                    .bind(seen.at_ms as i64)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if inserted > 0 {
                    bump(&mut tx, "pins").await?;
                }
                pin_of(&mut tx, server, tool)
                    .await?
                    .ok_or(sqlx::Error::RowNotFound)
            }
            .await;
            Self::end(tx, result).await
        })
    }

    fn record_change<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
        seen: Pinned,
    ) -> BoxFuture<'a, Result<PinRecord, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let result = async {
                let changed = sqlx::query(
                    "INSERT INTO pins (server, tool, pending_fingerprint, pending_definition, pending_ms, first_seen_ms)
                     VALUES ($1, $2, $3, $4, $5, $5)
                     ON CONFLICT (server, tool) DO UPDATE SET
                       pending_fingerprint = $3, pending_definition = $4, pending_ms = $5
                     WHERE pins.pending_fingerprint IS DISTINCT FROM $3",
                )
                .bind(server)
                .bind(tool)
                .bind(&seen.fingerprint)
                .bind(&seen.definition)
                .bind(seen.at_ms as i64)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if changed > 0 {
                    bump(&mut tx, "pins").await?;
                }
                pin_of(&mut tx, server, tool)
                    .await?
                    .ok_or(sqlx::Error::RowNotFound)
            }
            .await;
            Self::end(tx, result).await
        })
    }

    fn approve<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
        fingerprint: Option<&'a str>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<PinRecord>, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let result = async {
                let changed = sqlx::query(
                    "UPDATE pins SET fingerprint = pending_fingerprint, definition = pending_definition,
                       approved_ms = $1, pending_fingerprint = NULL, pending_definition = NULL, pending_ms = NULL
                     WHERE server = $2 AND tool = $3 AND pending_fingerprint IS NOT NULL
                       AND ($4::TEXT IS NULL OR pending_fingerprint = $4)",
                )
                .bind(now_ms as i64)
                .bind(server)
                .bind(tool)
                .bind(fingerprint)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if changed == 0 {
                    return Ok(None);
                }
                bump(&mut tx, "pins").await?;
                pin_of(&mut tx, server, tool).await
            }
            .await;
            Self::end(tx, result).await
        })
    }

    fn forget<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let result = async {
                let n = sqlx::query("DELETE FROM pins WHERE server = $1 AND tool = $2")
                    .bind(server)
                    .bind(tool)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n > 0 {
                    bump(&mut tx, "pins").await?;
                }
                Ok(n > 0)
            }
            .await;
            Self::end(tx, result).await
        })
    }
}

async fn grant_of(conn: &mut PgConnection, name: &str) -> Result<Option<StoredGrant>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {GRANT_COLUMNS} FROM grants WHERE name = $1"
    ));
    let row = sqlx::query(sql)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(stored_grant).transpose()
}

impl web_sessions::SqlPool for PostgresState {
    type Db = sqlx::Postgres;
    fn pool(&self) -> &sqlx::Pool<sqlx::Postgres> {
        &self.pool
    }
}

impl GrantStore for PostgresState {
    fn list(&self) -> BoxFuture<'_, Result<Vec<StoredGrant>, StoreError>> {
        Box::pin(async move {
            let sql =
                sqlx::AssertSqlSafe(format!("SELECT {GRANT_COLUMNS} FROM grants ORDER BY name"));
            let rows = sqlx::query(sql)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(stored_grant)
                .collect::<Result<_, _>>()
                .map_err(unavailable)
        })
    }

    fn generation(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.generation_of("grants"))
    }

    fn create(&self, g: StoredGrant) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let result = async {
                let n = sqlx::query(
                    "INSERT INTO grants (name, token_sha256, policy, created_ms, updated_ms)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
                )
                .bind(&g.name)
                .bind(&g.token_sha256)
                .bind(&g.policy)
                .bind(g.created_ms as i64)
                .bind(g.updated_ms as i64)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n > 0 {
                    bump(&mut tx, "grants").await?;
                }
                Ok(n > 0)
            }
            .await;
            Self::end(tx, result).await
        })
    }

    fn update<'a>(
        &'a self,
        name: &'a str,
        change: GrantChange,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<StoredGrant>, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let result = async {
                let Some(mut grant) = grant_of(&mut tx, name).await? else {
                    return Ok(None);
                };
                apply(&mut grant, change, now_ms);
                sqlx::query("UPDATE grants SET token_sha256 = $1, policy = $2, updated_ms = $3 WHERE name = $4")
                    .bind(&grant.token_sha256)
                    .bind(&grant.policy)
                    .bind(grant.updated_ms as i64)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                bump(&mut tx, "grants").await?;
                Ok(Some(grant))
            }
            .await;
            Self::end(tx, result).await
        })
    }

    fn revoke<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let result = async {
                let n = sqlx::query("DELETE FROM grants WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n > 0 {
                    bump(&mut tx, "grants").await?;
                }
                Ok(n > 0)
            }
            .await;
            Self::end(tx, result).await
        })
    }
}

/// Rows per `INSERT` statement when appending audit records (7 parameters each).
const AUDIT_ROWS_PER_INSERT: usize = 500;

impl AuditSink for PostgresState {
    fn append<'a>(&'a self, records: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(());
            }
            let mut tx = self.begin().await?;
            let result = async {
                for chunk in records.chunks(AUDIT_ROWS_PER_INSERT) {
                    let rows = (0..chunk.len())
                        .map(|i| {
                            let p = i * 7;
                            let params: Vec<String> =
                                (p + 1..=p + 7).map(|n| format!("${n}")).collect();
                            format!("({})", params.join(", "))
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    let sql = sqlx::AssertSqlSafe(format!(
                        "INSERT INTO audit (uid, at_ms, grant_name, server, tool, decision, record) VALUES {rows}
                         ON CONFLICT (uid) DO NOTHING"
                    ));
                    let mut query = sqlx::query(sql);
                    for r in chunk {
                        let text = audit_row_text(r)?;
                        query = query
                            .bind(r.uid.as_deref())
                            .bind(r.at_ms as i64)
                            .bind(r.grant.as_deref())
                            .bind(r.server.as_deref())
                            .bind(r.tool.as_deref())
                            .bind(r.decision.as_str())
                            .bind(text);
                    }
                    query.execute(&mut *tx).await?;
                }
                Ok(())
            }
            .await;
            Self::end(tx, result).await
        })
    }

    fn query<'a>(
        &'a self,
        filter: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(async move {
            let sql = sqlx::AssertSqlSafe(audit_query(filter, |n| format!("${n}")));
            let rows = bind_audit_filter(sqlx::query(sql), filter)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
            audit_records(&rows, filter)
        })
    }

    fn prune(&self, before_ms: u64, keep: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let result = async {
                let old = sqlx::query("DELETE FROM audit WHERE at_ms < $1")
                    .bind(before_ms as i64)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let over = sqlx::query(
                    "DELETE FROM audit WHERE id <= (SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET $1)",
                )
                .bind(keep.min(i64::MAX as u64) as i64)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                Ok(old + over)
            }
            .await;
            Self::end(tx, result).await
        })
    }

    fn tally(&self, since_ms: u64) -> BoxFuture<'_, Result<Vec<AuditTally>, StoreError>> {
        Box::pin(audit_tally(&self.pool, since_ms, |text, index, member| {
            format!(
                "CASE WHEN substr({text}, 1, 1) = '[' THEN {text}::json ->> {index} ELSE {text}::json ->> '{member}' END"
            )
        }))
    }
}

impl ApprovalStore for PostgresState {
    fn create(&self, a: Approval) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let text = encode(&a).map_err(unavailable)?;
            sqlx::query(
                "INSERT INTO approvals (id, status, created_ms, expires_ms, grant_name, session, server, tool, args_sha256, policy_version, record)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&a.id)
            .bind(a.status.as_str())
            .bind(a.created_ms as i64)
            .bind(a.expires_ms as i64)
            .bind(&a.grant)
            .bind(&a.session)
            .bind(&a.server)
            .bind(&a.tool)
            .bind(&a.args_sha256)
            .bind(&a.policy_version)
            .bind(text)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
            Ok(())
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Approval>, StoreError>> {
        Box::pin(async move {
            let text: Option<String> =
                sqlx::query_scalar("SELECT record FROM approvals WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?;
            text.map(|t| approval_of(&t, now_ms)).transpose()
        })
    }

    fn list(&self, all: bool, now_ms: u64) -> BoxFuture<'_, Result<Vec<Approval>, StoreError>> {
        Box::pin(async move {
            let query = if all {
                sqlx::query_scalar::<_, String>(
                    "SELECT record FROM approvals ORDER BY created_ms DESC LIMIT 1000",
                )
            } else {
                sqlx::query_scalar::<_, String>(
                    "SELECT record FROM approvals WHERE status = 'pending' AND expires_ms > $1
                     ORDER BY created_ms DESC LIMIT 1000",
                )
                .bind(now_ms as i64)
            };
            let rows = query.fetch_all(&self.pool).await.map_err(unavailable)?;
            rows.iter().map(|t| approval_of(t, now_ms)).collect()
        })
    }

    fn decide<'a>(
        &'a self,
        id: &'a str,
        approve: bool,
        by: &'a str,
        reason: Option<&'a str>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Approval>, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let result = async {
                let text: Option<String> = sqlx::query_scalar(
                    "SELECT record FROM approvals WHERE id = $1 AND status = 'pending' AND expires_ms > $2
                     FOR UPDATE",
                )
                .bind(id)
                .bind(now_ms as i64)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(text) = text else { return Ok(None) };
                let mut a: Approval = serde_json::from_str(&text)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                a.status = if approve {
                    ApprovalStatus::Approved
                } else {
                    ApprovalStatus::Denied
                };
                a.decided_by = Some(by.to_owned());
                a.reason = reason.map(str::to_owned);
                a.decided_ms = Some(now_ms);
                sqlx::query("UPDATE approvals SET status = $1, record = $2 WHERE id = $3")
                    .bind(a.status.as_str())
                    .bind(encode(&a)?)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                Ok(Some(a))
            }
            .await;
            Self::end(tx, result).await
        })
    }

    fn consume<'a>(&'a self, id: &'a str, now_ms: u64) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let n = sqlx::query(
                "UPDATE approvals SET status = 'used',
                   record = jsonb_set(record::jsonb, '{status}', '\"used\"')::text
                 WHERE id = $1 AND status = 'approved' AND expires_ms > $2",
            )
            .bind(id)
            .bind(now_ms as i64)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?
            .rows_affected();
            Ok(n == 1)
        })
    }

    fn find_approved<'a>(
        &'a self,
        call: &'a Approval,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Approval>, StoreError>> {
        Box::pin(async move {
            let text: Option<String> = sqlx::query_scalar(
                "SELECT record FROM approvals WHERE status = 'approved' AND expires_ms > $1
                   AND grant_name = $2 AND session = $3 AND server = $4 AND tool = $5
                   AND args_sha256 = $6 AND policy_version = $7
                 ORDER BY created_ms LIMIT 1",
            )
            .bind(now_ms as i64)
            .bind(&call.grant)
            .bind(&call.session)
            .bind(&call.server)
            .bind(&call.tool)
            .bind(&call.args_sha256)
            .bind(&call.policy_version)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
            text.map(|t| approval_of(&t, now_ms)).transpose()
        })
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
