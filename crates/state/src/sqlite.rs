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

use crate::counters::{
    BoxFuture, CounterSpec, CounterStore, Reservation, Reserve, StoreError, Usage,
    new_reservation_id,
};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran, so that
/// a database is migrated exactly once per step.
const MIGRATIONS: &[&str] = &["CREATE TABLE counters (
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
    CREATE INDEX counter_events_key ON counter_events (key, at_ms);"];

/// The SQLite state store.
#[derive(Debug, Clone)]
pub struct SqliteState {
    pool: SqlitePool,
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
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        let state = SqliteState { pool };
        state.migrate().await?;
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
}
