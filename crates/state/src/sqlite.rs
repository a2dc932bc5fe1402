//! The embedded SQLite state: one file in the state directory, WAL mode, migrations built in.
//!
//! Counters kept here survive restarts and are shared by every toolgate process on the host
//! that uses the same file. Each reservation is one `BEGIN IMMEDIATE` transaction, so
//! processes serialize on SQLite's write lock and a reservation is all-or-none.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool, Transaction};

use crate::audit::{AuditFilter, AuditRecord, AuditSink, AuditTally};
use crate::counters::{
    BoxFuture, CounterSpec, CounterStore, Reservation, Reserve, StoreError, Usage,
    new_reservation_id,
};
use crate::sql::stores::{SqlStore, audit_append, audit_prune, end};
use crate::sql::{audit_query, audit_records, audit_tally, bind_audit_filter};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran, so that
/// a database is migrated exactly once per step.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE counters (
        key TEXT PRIMARY KEY,
        window_start INTEGER NOT NULL,
        window_ms INTEGER NOT NULL,
        used INTEGER NOT NULL
    );
    CREATE TABLE counter_events (
        key TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        amount INTEGER NOT NULL,
        reservation INTEGER NOT NULL
    );
    CREATE INDEX counter_events_key ON counter_events (key, at_ms);",
    "CREATE TABLE pins (
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        fingerprint TEXT,
        definition TEXT,
        approved_ms INTEGER,
        pending_fingerprint TEXT,
        pending_definition TEXT,
        pending_ms INTEGER,
        first_seen_ms INTEGER NOT NULL,
        PRIMARY KEY (server, tool)
    );
    CREATE TABLE generations (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO generations (name, value) VALUES ('pins', 0);",
    "CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        grant_name TEXT,
        tool TEXT,
        decision TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX audit_at ON audit (at_ms);",
    "CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
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
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    INSERT INTO generations (name, value) VALUES ('grants', 0);",
    "CREATE TABLE web_sessions (
        digest TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        expires_ms INTEGER NOT NULL
    );",
    // Rows before this have NULL and the tally reads their text.
    "ALTER TABLE audit ADD COLUMN server TEXT;",
];

/// The SQLite state store.
#[derive(Debug, Clone)]
pub struct SqliteState {
    /// One connection: writes take turns anyway (one writer at a time in SQLite).
    pool: SqlitePool,
    /// Read-only connections for the audit log's queries: in WAL mode they read while the
    /// writer writes, so that an overview of a busy hour never holds up the audit writer, an
    /// approval or a pin.
    reader: SqlitePool,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteState {
    /// Opens (creating if needed) the database at `path` and migrates it. `busy_timeout`
    /// bounds how long a call waits for another process's write lock before failing.
    pub async fn open(path: &Path, busy_timeout: Duration) -> Result<SqliteState, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(unavailable)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(busy_timeout + Duration::from_secs(1))
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        let mut state = SqliteState {
            reader: pool.clone(),
            pool,
        };
        state.migrate().await?;
        // Connected on first use (most stores never query the audit log), after the schema.
        state.reader = SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(busy_timeout + Duration::from_secs(1))
            .connect_lazy_with(options.read_only(true));
        Ok(state)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let done: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .map_err(unavailable)?;
            let version = sqlx::AssertSqlSafe(format!("PRAGMA user_version = {}", i + 1));
            let step = async {
                sqlx::raw_sql(*sql).execute(&mut *conn).await?;
                sqlx::query(version).execute(&mut *conn).await
            };
            if let Err(e) = step.await {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(unavailable(e));
            }
            sqlx::query("COMMIT")
                .execute(&mut *conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}

async fn usage_of(
    conn: &mut SqliteConnection,
    spec: &CounterSpec,
    now: u64,
) -> Result<Usage, sqlx::Error> {
    if spec.sliding {
        let since = now.saturating_sub(spec.window_ms) as i64;
        sqlx::query("DELETE FROM counter_events WHERE key = ? AND at_ms <= ?")
            .bind(&spec.key)
            .bind(since)
            .execute(&mut *conn)
            .await?;
        let row = sqlx::query(
            "SELECT COALESCE(SUM(amount), 0), MIN(at_ms) FROM counter_events WHERE key = ?",
        )
        .bind(&spec.key)
        .fetch_one(&mut *conn)
        .await?;
        let used: i64 = row.try_get(0)?;
        let oldest: Option<i64> = row.try_get(1)?;
        Ok(Usage {
            used: used.max(0) as u64,
            reset_at_ms: oldest.map_or(now, |at| at as u64 + spec.window_ms),
        })
    } else {
        let row = sqlx::query("SELECT window_start, window_ms, used FROM counters WHERE key = ?")
            .bind(&spec.key)
            .fetch_optional(&mut *conn)
            .await?;
        let used = match row {
            Some(r)
                if r.try_get::<i64, _>(0)? == spec.window_start_ms as i64
                    && r.try_get::<i64, _>(1)? == spec.window_ms as i64 =>
            {
                r.try_get::<i64, _>(2)?.max(0) as u64
            }
            _ => 0,
        };
        Ok(Usage {
            used,
            reset_at_ms: spec.window_start_ms + spec.window_ms,
        })
    }
}

impl CounterStore for SqliteState {
    fn reserve<'a>(
        &'a self,
        specs: &'a [CounterSpec],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Reserve, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await.map_err(unavailable)?;
            let result = reserve_in(&mut tx, specs, now_ms).await;
            end::<Self, _>(tx, result).await
        })
    }

    fn commit(&self, _reservation: Reservation) -> BoxFuture<'_, Result<(), StoreError>> {
        // Reserving already wrote the counts; nothing is left pending.
        Box::pin(std::future::ready(Ok(())))
    }

    fn rollback(&self, reservation: Reservation) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await.map_err(unavailable)?;
            let result = rollback_in(&mut tx, &reservation).await;
            end::<Self, _>(tx, result).await
        })
    }

    fn usage<'a>(
        &'a self,
        specs: &'a [CounterSpec],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Usage>, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await.map_err(unavailable)?;
            let mut result = Ok(Vec::with_capacity(specs.len()));
            for spec in specs {
                match usage_of(&mut tx, spec, now_ms).await {
                    Ok(u) => result
                        .as_mut()
                        .map(|v: &mut Vec<Usage>| v.push(u))
                        .unwrap_or(()),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            end::<Self, _>(tx, result).await
        })
    }
}

async fn reserve_in(
    conn: &mut SqliteConnection,
    specs: &[CounterSpec],
    now_ms: u64,
) -> Result<Reserve, sqlx::Error> {
    for (index, spec) in specs.iter().enumerate() {
        let usage = usage_of(conn, spec, now_ms).await?;
        if usage.used.saturating_add(spec.amount) > spec.max {
            return Ok(Reserve::Exceeded { index, usage });
        }
    }
    let id = new_reservation_id();
    let mut taken = Vec::with_capacity(specs.len());
    for spec in specs {
        if spec.sliding {
            sqlx::query(
                "INSERT INTO counter_events (key, at_ms, amount, reservation) VALUES (?, ?, ?, ?)",
            )
            .bind(&spec.key)
            .bind(now_ms as i64)
            .bind(spec.amount as i64)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            taken.push((spec.key.clone(), now_ms, spec.amount, true));
        } else {
            sqlx::query(
                        "INSERT INTO counters (key, window_start, window_ms, used) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (key) DO UPDATE SET
                           used = CASE WHEN window_start = ?2 AND window_ms = ?3 THEN used + ?4 ELSE ?4 END,
                           window_start = ?2, window_ms = ?3",
                    )
                    .bind(&spec.key)
                    .bind(spec.window_start_ms as i64)
                    .bind(spec.window_ms as i64)
                    .bind(spec.amount as i64)
                    .execute(&mut *conn)
                    .await?;
            taken.push((spec.key.clone(), spec.window_start_ms, spec.amount, false));
        }
    }
    Ok(Reserve::Granted(Reservation { id, taken }))
}

async fn rollback_in(
    conn: &mut SqliteConnection,
    reservation: &Reservation,
) -> Result<(), sqlx::Error> {
    for (key, at, amount, sliding) in &reservation.taken {
        if *sliding {
            sqlx::query("DELETE FROM counter_events WHERE key = ? AND reservation = ?")
                .bind(key)
                .bind(reservation.id)
                .execute(&mut *conn)
                .await?;
        } else {
            sqlx::query(
                "UPDATE counters SET used = MAX(used - ?, 0) WHERE key = ? AND window_start = ?",
            )
            .bind(*amount as i64)
            .bind(key)
            .bind(*at as i64)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

impl SqlStore for SqliteState {
    type Db = Sqlite;
    fn pool(&self) -> &SqlitePool {
        &self.pool
    }
    fn begin(&self) -> BoxFuture<'_, Result<Transaction<'static, Sqlite>, sqlx::Error>> {
        Box::pin(self.pool.begin_with("BEGIN IMMEDIATE"))
    }
    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
    fn unavailable(e: sqlx::Error) -> StoreError {
        unavailable(e)
    }
    fn push_param(sql: &mut String, _: usize) {
        sql.push('?');
    }
    const LOCK_ROW: &'static str = "";
    const RECORD_USED: &'static str = "json_set(record, '$.status', 'used')";
    /// A failed append rolls back, and nothing retries one that succeeded.
    const AUDIT_UIDS: bool = false;
}

impl AuditSink for SqliteState {
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
                .fetch_all(&self.reader)
                .await
                .map_err(unavailable)?;
            audit_records(&rows, filter)
        })
    }

    fn prune(&self, before_ms: u64, keep: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(audit_prune(self, before_ms, keep))
    }

    fn tally(&self, since_ms: u64) -> BoxFuture<'_, Result<Vec<AuditTally>, StoreError>> {
        Box::pin(audit_tally(
            &self.reader,
            since_ms,
            |text, index, member| {
                format!(
                    "CASE WHEN substr({text}, 1, 1) = '[' THEN {text} ->> '$[{index}]' ELSE {text} ->> '$.{member}' END"
                )
            },
        ))
    }

    fn needs_uids(&self) -> bool {
        Self::AUDIT_UIDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::tests::contract;
    use crate::pins::PinStore;

    #[tokio::test]
    async fn sqlite_store_keeps_the_contract_and_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("toolgate-state-{}", new_reservation_id()));
        let path = dir.join("state.db");
        let store = SqliteState::open(&path, Duration::from_secs(2))
            .await
            .unwrap();
        contract(&store).await;
        drop(store);
        let now = 1_795_631_502_500;
        let later = now + 60_000;
        let a = crate::counters::tests::spec("a|grant|alice", 2, 60_000, false, later);
        let reopened = SqliteState::open(&path, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(reopened.usage(&[a], later).await.unwrap()[0].used, 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn sqlite_approvals_keep_the_contract() {
        let dir = std::env::temp_dir().join(format!("toolgate-approvals-{}", new_reservation_id()));
        let store = SqliteState::open(&dir.join("state.db"), Duration::from_secs(2))
            .await
            .unwrap();
        crate::approvals::tests::contract(&store).await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn sqlite_grants_keep_the_contract() {
        let dir = std::env::temp_dir().join(format!("toolgate-grants-{}", new_reservation_id()));
        let store = SqliteState::open(&dir.join("state.db"), Duration::from_secs(2))
            .await
            .unwrap();
        crate::grants::tests::contract(&store).await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn sqlite_web_sessions_keep_the_contract() {
        let dir = std::env::temp_dir().join(format!("toolgate-web-{}", new_reservation_id()));
        let store = SqliteState::open(&dir.join("state.db"), Duration::from_secs(2))
            .await
            .unwrap();
        crate::web_sessions::tests::contract(&store).await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn sqlite_audit_keeps_the_contract() {
        let dir = std::env::temp_dir().join(format!("toolgate-audit-{}", new_reservation_id()));
        let store = SqliteState::open(&dir.join("state.db"), Duration::from_secs(2))
            .await
            .unwrap();
        crate::audit::tests::contract(&store).await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn audit_queries_do_not_wait_for_a_write_in_progress() {
        let dir = std::env::temp_dir().join(format!("toolgate-audit-{}", new_reservation_id()));
        let store = SqliteState::open(&dir.join("state.db"), Duration::from_secs(2))
            .await
            .unwrap();
        let record = crate::audit::tests::full_record();
        store.append(std::slice::from_ref(&record)).await.unwrap();
        // The writer's one connection, busy in a transaction that is not committed yet.
        let mut writing = store.begin().await.unwrap();
        sqlx::query("INSERT INTO audit (at_ms, decision, record) VALUES (1, 'allowed', ?)")
            .bind(crate::sql::audit_row_text(&record).unwrap())
            .execute(&mut *writing)
            .await
            .unwrap();
        let filter = AuditFilter {
            limit: 10,
            ..AuditFilter::default()
        };
        let read = tokio::time::timeout(Duration::from_secs(1), store.query(&filter)).await;
        assert_eq!(read.expect("the query waited").unwrap().len(), 1);
        let tally = tokio::time::timeout(Duration::from_secs(1), store.tally(0)).await;
        assert_eq!(tally.expect("the tally waited").unwrap()[0].count, 1);
        end::<SqliteState, _>(writing, Ok(())).await.unwrap();
        assert_eq!(store.query(&filter).await.unwrap().len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn audit_rows_written_as_json_objects_by_earlier_versions_still_read() {
        let dir = std::env::temp_dir().join(format!("toolgate-audit-{}", new_reservation_id()));
        let store = SqliteState::open(&dir.join("state.db"), Duration::from_secs(2))
            .await
            .unwrap();
        let old = AuditRecord {
            id: 0,
            ..crate::audit::tests::full_record()
        };
        sqlx::query(
            "INSERT INTO audit (at_ms, grant_name, tool, decision, record) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(old.at_ms as i64)
        .bind(old.grant.as_deref())
        .bind(old.tool.as_deref())
        .bind(old.decision.as_str())
        .bind(serde_json::to_string(&old).unwrap())
        .execute(&store.pool)
        .await
        .unwrap();
        store.append(std::slice::from_ref(&old)).await.unwrap();
        let rows = store
            .query(&AuditFilter {
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        for row in rows {
            assert_eq!(
                AuditRecord {
                    id: 0,
                    uid: old.uid.clone(),
                    ..row
                },
                old
            );
        }
        let text: String = sqlx::query_scalar("SELECT record FROM audit ORDER BY id DESC LIMIT 1")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert!(text.starts_with("[1,\"call\""), "{text}");
        // Counted alike, whichever encoding.
        assert_eq!(
            store.tally(0).await.unwrap(),
            [crate::AuditTally {
                minute_ms: 0,
                decision: "approval_denied".into(),
                server: Some("ssh".into()),
                tool: Some("ssh_exec".into()),
                count: 2,
            }]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn sqlite_pins_keep_the_contract_across_processes_sharing_the_file() {
        let dir = std::env::temp_dir().join(format!("toolgate-pins-{}", new_reservation_id()));
        let path = dir.join("state.db");
        let store = SqliteState::open(&path, Duration::from_secs(2))
            .await
            .unwrap();
        crate::pins::tests::contract(&store).await;
        // A second handle (another process) sees the records and the generation.
        let other = SqliteState::open(&path, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(
            PinStore::generation(&other).await.unwrap(),
            PinStore::generation(&store).await.unwrap()
        );
        assert_eq!(other.load().await.unwrap(), store.load().await.unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
