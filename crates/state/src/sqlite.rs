//! The embedded SQLite state: one file in the state directory, WAL mode, migrations built in.
//!
//! Counters kept here survive restarts and are shared by every toolgate process on the host
//! that uses the same file. Each reservation is one `BEGIN IMMEDIATE` transaction, so
//! processes serialize on SQLite's write lock and a reservation is all-or-none.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool};

use crate::approvals::{Approval, ApprovalStatus, ApprovalStore};
use crate::audit::{AuditFilter, AuditRecord, AuditSink, AuditTally};
use crate::counters::{
    BoxFuture, CounterSpec, CounterStore, Reservation, Reserve, StoreError, Usage,
    new_reservation_id,
};
use crate::grants::{GrantChange, GrantStore, StoredGrant, apply};
use crate::pins::{PinRecord, PinStore, Pinned};
use crate::sql::{
    GRANT_COLUMNS, PIN_COLUMNS, approval_of, audit_query, audit_records, audit_row_text,
    audit_tally, bind_audit_filter, encode, pin_record, stored_grant, web_sessions,
};

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

    /// Takes the connection and SQLite's write lock (`BEGIN IMMEDIATE`).
    async fn begin(&self) -> Result<PoolConnection<Sqlite>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
        Ok(conn)
    }

    /// Commits after `result` succeeded, rolls back otherwise.
    async fn end<T>(
        mut conn: PoolConnection<Sqlite>,
        result: Result<T, sqlx::Error>,
    ) -> Result<T, StoreError> {
        match result {
            Ok(v) => {
                sqlx::query("COMMIT")
                    .execute(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                Ok(v)
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(unavailable(e))
            }
        }
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
            let mut conn = self.begin().await?;
            let result = reserve_in(&mut conn, specs, now_ms).await;
            Self::end(conn, result).await
        })
    }

    fn commit(&self, _reservation: Reservation) -> BoxFuture<'_, Result<(), StoreError>> {
        // Reserving already wrote the counts; nothing is left pending.
        Box::pin(std::future::ready(Ok(())))
    }

    fn rollback(&self, reservation: Reservation) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.begin().await?;
            let result = rollback_in(&mut conn, &reservation).await;
            Self::end(conn, result).await
        })
    }

    fn usage<'a>(
        &'a self,
        specs: &'a [CounterSpec],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Usage>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.begin().await?;
            let mut result = Ok(Vec::with_capacity(specs.len()));
            for spec in specs {
                match usage_of(&mut conn, spec, now_ms).await {
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
            Self::end(conn, result).await
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

async fn pin_of(
    conn: &mut SqliteConnection,
    server: &str,
    tool: &str,
) -> Result<Option<PinRecord>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {PIN_COLUMNS} FROM pins WHERE server = ? AND tool = ?"
    ));
    let row = sqlx::query(sql)
        .bind(server)
        .bind(tool)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(pin_record).transpose()
}

/// Notes a change of the records that generation `name` counts (`pins`, `grants`).
async fn bump(conn: &mut SqliteConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE generations SET value = value + 1 WHERE name = ?")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl SqliteState {
    /// The value of generation `name`.
    async fn generation_of(&self, name: &str) -> Result<u64, StoreError> {
        let value: i64 = sqlx::query_scalar("SELECT value FROM generations WHERE name = ?")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(value.max(0) as u64)
    }
}

impl PinStore for SqliteState {
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
            let mut conn = self.begin().await?;
            let result = async {
                if let Some(existing) = pin_of(&mut conn, server, tool).await? {
                    return Ok(existing);
                }
                let column = if trust { "fingerprint, definition, approved_ms" } else { "pending_fingerprint, pending_definition, pending_ms" };
                let sql = sqlx::AssertSqlSafe(format!(
                    "INSERT INTO pins (server, tool, {column}, first_seen_ms) VALUES (?, ?, ?, ?, ?, ?)"
                ));
                sqlx::query(sql)
                    .bind(server)
                    .bind(tool)
                    .bind(&seen.fingerprint)
                    .bind(&seen.definition)
                    .bind(seen.at_ms as i64)
                    .bind(seen.at_ms as i64)
                    .execute(&mut *conn)
                    .await?;
                bump(&mut conn, "pins").await?;
                Ok(PinRecord {
                    server: server.to_owned(),
                    tool: tool.to_owned(),
                    first_seen_ms: seen.at_ms,
                    approved: trust.then(|| seen.clone()),
                    pending: (!trust).then_some(seen),
                })
            }
            .await;
            Self::end(conn, result).await
        })
    }

    fn record_change<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
        seen: Pinned,
    ) -> BoxFuture<'a, Result<PinRecord, StoreError>> {
        Box::pin(async move {
            let mut conn = self.begin().await?;
            let result = async {
                let changed = sqlx::query(
                    "INSERT INTO pins (server, tool, pending_fingerprint, pending_definition, pending_ms, first_seen_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                     ON CONFLICT (server, tool) DO UPDATE SET
                       pending_fingerprint = ?3, pending_definition = ?4, pending_ms = ?5
                     WHERE pending_fingerprint IS NOT ?3",
                )
                .bind(server)
                .bind(tool)
                .bind(&seen.fingerprint)
                .bind(&seen.definition)
                .bind(seen.at_ms as i64)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if changed > 0 {
                    bump(&mut conn, "pins").await?;
                }
                pin_of(&mut conn, server, tool)
                    .await?
                    .ok_or(sqlx::Error::RowNotFound)
            }
            .await;
            Self::end(conn, result).await
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
            let mut conn = self.begin().await?;
            let result = async {
                let changed = sqlx::query(
                    "UPDATE pins SET fingerprint = pending_fingerprint, definition = pending_definition,
                       approved_ms = ?1, pending_fingerprint = NULL, pending_definition = NULL, pending_ms = NULL
                     WHERE server = ?2 AND tool = ?3 AND pending_fingerprint IS NOT NULL
                       AND (?4 IS NULL OR pending_fingerprint = ?4)",
                )
                .bind(now_ms as i64)
                .bind(server)
                .bind(tool)
                .bind(fingerprint)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if changed == 0 {
                    return Ok(None);
                }
                bump(&mut conn, "pins").await?;
                pin_of(&mut conn, server, tool).await
            }
            .await;
            Self::end(conn, result).await
        })
    }

    fn forget<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut conn = self.begin().await?;
            let result = async {
                let n = sqlx::query("DELETE FROM pins WHERE server = ? AND tool = ?")
                    .bind(server)
                    .bind(tool)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if n > 0 {
                    bump(&mut conn, "pins").await?;
                }
                Ok(n > 0)
            }
            .await;
            Self::end(conn, result).await
        })
    }
}

async fn grant_of(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<Option<StoredGrant>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {GRANT_COLUMNS} FROM grants WHERE name = ?"));
    let row = sqlx::query(sql)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(stored_grant).transpose()
}

impl web_sessions::SqlPool for SqliteState {
    type Db = sqlx::Sqlite;
    fn pool(&self) -> &sqlx::Pool<sqlx::Sqlite> {
        &self.pool
    }
}

impl GrantStore for SqliteState {
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
            let mut conn = self.begin().await?;
            let result = async {
                let n = sqlx::query(
                    "INSERT INTO grants (name, token_sha256, policy, created_ms, updated_ms)
                     VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                )
                .bind(&g.name)
                .bind(&g.token_sha256)
                .bind(&g.policy)
                .bind(g.created_ms as i64)
                .bind(g.updated_ms as i64)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if n > 0 {
                    bump(&mut conn, "grants").await?;
                }
                Ok(n > 0)
            }
            .await;
            Self::end(conn, result).await
        })
    }

    fn update<'a>(
        &'a self,
        name: &'a str,
        change: GrantChange,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<StoredGrant>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.begin().await?;
            let result = async {
                let Some(mut grant) = grant_of(&mut conn, name).await? else {
                    return Ok(None);
                };
                apply(&mut grant, change, now_ms);
                sqlx::query(
                    "UPDATE grants SET token_sha256 = ?, policy = ?, updated_ms = ? WHERE name = ?",
                )
                .bind(&grant.token_sha256)
                .bind(&grant.policy)
                .bind(grant.updated_ms as i64)
                .bind(name)
                .execute(&mut *conn)
                .await?;
                bump(&mut conn, "grants").await?;
                Ok(Some(grant))
            }
            .await;
            Self::end(conn, result).await
        })
    }

    fn revoke<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut conn = self.begin().await?;
            let result = async {
                let n = sqlx::query("DELETE FROM grants WHERE name = ?")
                    .bind(name)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if n > 0 {
                    bump(&mut conn, "grants").await?;
                }
                Ok(n > 0)
            }
            .await;
            Self::end(conn, result).await
        })
    }
}

/// Rows per `INSERT` statement when appending audit records (6 parameters each, well under
/// SQLite's limit): one statement per chunk instead of one per record.
const AUDIT_ROWS_PER_INSERT: usize = 200;

impl AuditSink for SqliteState {
    fn append<'a>(&'a self, records: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(());
            }
            let mut conn = self.begin().await?;
            let result = async {
                for chunk in records.chunks(AUDIT_ROWS_PER_INSERT) {
                    let rows = vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
                    let sql = sqlx::AssertSqlSafe(format!(
                        "INSERT INTO audit (at_ms, grant_name, server, tool, decision, record) VALUES {rows}"
                    ));
                    let mut query = sqlx::query(sql);
                    for r in chunk {
                        let text = audit_row_text(r)?;
                        query = query
                            .bind(r.at_ms as i64)
                            .bind(r.grant.as_deref())
                            .bind(r.server.as_deref())
                            .bind(r.tool.as_deref())
                            .bind(r.decision.as_str())
                            .bind(text);
                    }
                    query.execute(&mut *conn).await?;
                }
                Ok(())
            }
            .await;
            Self::end(conn, result).await
        })
    }

    fn query<'a>(
        &'a self,
        filter: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(async move {
            let sql = sqlx::AssertSqlSafe(audit_query(filter, |_| "?".to_owned()));
            let rows = bind_audit_filter(sqlx::query(sql), filter)
                .fetch_all(&self.reader)
                .await
                .map_err(unavailable)?;
            audit_records(&rows, filter)
        })
    }

    fn prune(&self, before_ms: u64, keep: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut conn = self.begin().await?;
            let result = async {
                let old = sqlx::query("DELETE FROM audit WHERE at_ms < ?")
                    .bind(before_ms as i64)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                let over = sqlx::query(
                    "DELETE FROM audit WHERE id <= (SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?)",
                )
                .bind(keep.min(i64::MAX as u64) as i64)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                Ok(old + over)
            }
            .await;
            Self::end(conn, result).await
        })
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
}

impl ApprovalStore for SqliteState {
    fn create(&self, a: Approval) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.begin().await?;
            let result = async {
                sqlx::query(
                    "INSERT INTO approvals (id, status, created_ms, expires_ms, grant_name, session, server, tool, args_sha256, policy_version, record)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                .bind(encode(&a)?)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }
            .await;
            Self::end(conn, result).await
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Approval>, StoreError>> {
        Box::pin(async move {
            let text: Option<String> =
                sqlx::query_scalar("SELECT record FROM approvals WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?;
            text.map(|t| approval_of(&t, now_ms)).transpose()
        })
    }

    fn list(&self, all: bool, now_ms: u64) -> BoxFuture<'_, Result<Vec<Approval>, StoreError>> {
        Box::pin(async move {
            let sql = if all {
                "SELECT record FROM approvals ORDER BY created_ms DESC LIMIT 1000"
            } else {
                "SELECT record FROM approvals WHERE status = 'pending' AND expires_ms > ? ORDER BY created_ms DESC LIMIT 1000"
            };
            let mut query = sqlx::query_scalar::<_, String>(sql);
            if !all {
                query = query.bind(now_ms as i64);
            }
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
            let mut conn = self.begin().await?;
            let result = async {
                let text: Option<String> = sqlx::query_scalar(
                    "SELECT record FROM approvals WHERE id = ? AND status = 'pending' AND expires_ms > ?",
                )
                .bind(id)
                .bind(now_ms as i64)
                .fetch_optional(&mut *conn)
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
                sqlx::query("UPDATE approvals SET status = ?, record = ? WHERE id = ?")
                    .bind(a.status.as_str())
                    .bind(encode(&a)?)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                Ok(Some(a))
            }
            .await;
            Self::end(conn, result).await
        })
    }

    fn consume<'a>(&'a self, id: &'a str, now_ms: u64) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut conn = self.begin().await?;
            let result = async {
                let n = sqlx::query(
                    "UPDATE approvals SET status = 'used', record = json_set(record, '$.status', 'used')
                     WHERE id = ? AND status = 'approved' AND expires_ms > ?",
                )
                .bind(id)
                .bind(now_ms as i64)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                Ok(n == 1)
            }
            .await;
            Self::end(conn, result).await
        })
    }

    fn find_approved<'a>(
        &'a self,
        call: &'a Approval,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Approval>, StoreError>> {
        Box::pin(async move {
            let text: Option<String> = sqlx::query_scalar(
                "SELECT record FROM approvals WHERE status = 'approved' AND expires_ms > ?
                   AND grant_name = ? AND session = ? AND server = ? AND tool = ? AND args_sha256 = ? AND policy_version = ?
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
mod tests {
    use super::*;
    use crate::counters::tests::contract;

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
            .bind(audit_row_text(&record).unwrap())
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
        SqliteState::end(writing, Ok(())).await.unwrap();
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
