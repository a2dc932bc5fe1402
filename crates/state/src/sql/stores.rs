//! Pins, grants, approvals, browser sessions and the audit log's writes in either SQL
//! database, written once: the statements are the same (SQLite reads `$n` as the n-th
//! parameter too; only a statement of thousands of parameters is written with SQLite's `?`),
//! and what differs is in [`SqlStore`]. Each store repeats the same `where` clause: bounds on
//! other types than `Self` are not implied by a trait, so they cannot be written once.

use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Transaction, Type,
};

use super::{
    GRANT_COLUMNS, PIN_COLUMNS, approval_of, audit_row_text, encode, pin_record, stored_grant,
};
use crate::approvals::{Approval, ApprovalStatus, ApprovalStore};
use crate::audit::AuditRecord;
use crate::counters::{BoxFuture, StoreError};
use crate::grants::{GrantChange, GrantStore, StoredGrant, apply};
use crate::pins::{PinRecord, PinStore, Pinned};
use crate::web_sessions::{StoredWebSession, WebSessionStore};

/// A store on one of the SQL databases: its pool and what its dialect does differently.
pub(crate) trait SqlStore: Send + Sync {
    type Db: Database;

    /// The pool that writes.
    fn pool(&self) -> &Pool<Self::Db>;

    /// A transaction that will write. SQLite takes its write lock at once (`BEGIN
    /// IMMEDIATE`): two transactions that both read first could not both upgrade.
    fn begin(&self) -> BoxFuture<'_, Result<Transaction<'static, Self::Db>, sqlx::Error>>;

    /// How many rows a statement changed (the databases' results share no trait for it).
    fn rows_affected(result: &<Self::Db as Database>::QueryResult) -> u64;

    /// The error callers see when the database fails.
    fn unavailable(e: sqlx::Error) -> StoreError;

    /// Ends a `SELECT` of a row that the transaction then updates: `FOR UPDATE` where the
    /// database locks rows; SQLite's write lock covers the whole database already.
    const LOCK_ROW: &'static str;

    /// An expression: the approval's `record` (JSON text) with its status set to `"used"`.
    const RECORD_USED: &'static str;

    /// Writes the `n`-th (from 1) parameter of a long statement: SQLite's plain `?`, bound
    /// in order (its `$n` is a name, and a statement of thousands of names is slow to
    /// prepare), PostgreSQL's `$n`.
    fn push_param(sql: &mut String, n: usize);

    /// Whether audit rows keep the records' unique ids (and skip one stored before): where
    /// a batch may arrive twice (a retry after a lost answer, a replay of the disk spool).
    const AUDIT_UIDS: bool;
}

/// Commits after `result` succeeded, rolls back otherwise.
pub(crate) async fn end<T: SqlStore, V>(
    tx: Transaction<'static, T::Db>,
    result: Result<V, sqlx::Error>,
) -> Result<V, StoreError> {
    match result {
        Ok(v) => {
            tx.commit().await.map_err(T::unavailable)?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(T::unavailable(e))
        }
    }
}

/// Audit records per `INSERT`, at most: 1,792 parameters (SQLite allows 32,766, PostgreSQL
/// 65,535).
const AUDIT_ROWS_PER_INSERT: usize = 256;

/// How a batch of `len` records is cut into `INSERT`s: the largest power of two that fits,
/// then the next. The writer's batches vary in size from one to the next, and a statement of
/// every size would be prepared anew each time (SQLite parses it row by row); these nine
/// sizes stay in the connection's statement cache.
fn audit_chunks(mut records: &[AuditRecord]) -> impl Iterator<Item = &[AuditRecord]> {
    std::iter::from_fn(move || {
        if records.is_empty() {
            return None;
        }
        let size = AUDIT_ROWS_PER_INSERT.min(1 << records.len().ilog2());
        let (chunk, rest) = records.split_at(size);
        records = rest;
        Some(chunk)
    })
}

/// [`AuditSink::append`](crate::AuditSink::append) in either database: one transaction,
/// multi-row `INSERT`s.
pub(crate) async fn audit_append<T>(store: &T, records: &[AuditRecord]) -> Result<(), StoreError>
where
    T: SqlStore,
    for<'c> &'c mut <T::Db as Database>::Connection: Executor<'c, Database = T::Db>,
    <T::Db as Database>::Arguments: IntoArguments<T::Db>,
    for<'q> &'q str: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> Option<&'q str>: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> String: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> i64: Encode<'q, T::Db> + Type<T::Db>,
{
    if records.is_empty() {
        return Ok(());
    }
    let (uid, skip) = match T::AUDIT_UIDS {
        true => ("uid, ", " ON CONFLICT (uid) DO NOTHING"),
        false => ("", ""),
    };
    let columns = if T::AUDIT_UIDS { 7 } else { 6 };
    let mut tx = store.begin().await.map_err(T::unavailable)?;
    let result = async {
        for chunk in audit_chunks(records) {
            let mut sql = format!(
                "INSERT INTO audit ({uid}at_ms, grant_name, server, tool, decision, record) VALUES "
            );
            for row in 0..chunk.len() {
                sql.push_str(if row == 0 { "(" } else { ", (" });
                for column in 0..columns {
                    if column > 0 {
                        sql.push_str(", ");
                    }
                    T::push_param(&mut sql, row * columns + column + 1);
                }
                sql.push(')');
            }
            sql.push_str(skip);
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                if T::AUDIT_UIDS {
                    query = query.bind(r.uid.as_deref());
                }
                query = query
                    .bind(r.at_ms.min(i64::MAX as u64) as i64)
                    .bind(r.grant.as_deref())
                    .bind(r.server.as_deref())
                    .bind(r.tool.as_deref())
                    .bind(r.decision.as_str())
                    .bind(audit_row_text(r)?);
            }
            query.execute(&mut *tx).await?;
        }
        Ok(())
    }
    .await;
    end::<T, _>(tx, result).await
}

/// [`AuditSink::prune`](crate::AuditSink::prune) in either database: records older than
/// `before_ms`, then all but the newest `keep`.
pub(crate) async fn audit_prune<T>(store: &T, before_ms: u64, keep: u64) -> Result<u64, StoreError>
where
    T: SqlStore,
    for<'c> &'c mut <T::Db as Database>::Connection: Executor<'c, Database = T::Db>,
    <T::Db as Database>::Arguments: IntoArguments<T::Db>,
    for<'q> i64: Encode<'q, T::Db> + Type<T::Db>,
{
    let mut tx = store.begin().await.map_err(T::unavailable)?;
    let result = async {
        let old = sqlx::query("DELETE FROM audit WHERE at_ms < $1")
            .bind(before_ms.min(i64::MAX as u64) as i64)
            .execute(&mut *tx)
            .await?;
        let over = sqlx::query(
            "DELETE FROM audit WHERE id <= (SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET $1)",
        )
        .bind(keep.min(i64::MAX as u64) as i64)
        .execute(&mut *tx)
        .await?;
        Ok(T::rows_affected(&old) + T::rows_affected(&over))
    }
    .await;
    end::<T, _>(tx, result).await
}

/// Notes a change of the records that a generation counts (`pins`, `grants`), so that other
/// processes sharing the database notice it.
const BUMP: &str = "UPDATE generations SET value = value + 1 WHERE name = $1";
/// A generation's value.
const GENERATION: &str = "SELECT value FROM generations WHERE name = $1";

impl<T> PinStore for T
where
    T: SqlStore,
    for<'c> &'c Pool<T::Db>: Executor<'c, Database = T::Db>,
    for<'c> &'c mut <T::Db as Database>::Connection: Executor<'c, Database = T::Db>,
    <T::Db as Database>::Arguments: IntoArguments<T::Db>,
    for<'q> &'q str: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> Option<&'q str>: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> i64: Encode<'q, T::Db> + Decode<'q, T::Db> + Type<T::Db>,
    for<'r> String: Decode<'r, T::Db> + Type<T::Db>,
    usize: ColumnIndex<<T::Db as Database>::Row>,
{
    fn load(&self) -> BoxFuture<'_, Result<Vec<PinRecord>, StoreError>> {
        Box::pin(async move {
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT {PIN_COLUMNS} FROM pins ORDER BY server, tool"
            ));
            let rows = sqlx::query(sql)
                .fetch_all(self.pool())
                .await
                .map_err(T::unavailable)?;
            rows.iter()
                .map(pin_record)
                .collect::<Result<_, _>>()
                .map_err(T::unavailable)
        })
    }

    fn generation(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let value: i64 = sqlx::query_scalar(GENERATION)
                .bind("pins")
                .fetch_one(self.pool())
                .await
                .map_err(T::unavailable)?;
            Ok(value.max(0) as u64)
        })
    }

    fn first_sight<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
        seen: Pinned,
        trust: bool,
    ) -> BoxFuture<'a, Result<PinRecord, StoreError>> {
        let column = if trust {
            "fingerprint, definition, approved_ms"
        } else {
            "pending_fingerprint, pending_definition, pending_ms"
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO pins (server, tool, {column}, first_seen_ms) VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (server, tool) DO NOTHING"
        ));
        Box::pin(write_pin(self, sql, server, tool, seen))
    }

    fn record_change<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
        seen: Pinned,
    ) -> BoxFuture<'a, Result<PinRecord, StoreError>> {
        let sql = "INSERT INTO pins (server, tool, pending_fingerprint, pending_definition, pending_ms, first_seen_ms)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (server, tool) DO UPDATE SET
               pending_fingerprint = $3, pending_definition = $4, pending_ms = $5
             WHERE pins.pending_fingerprint IS DISTINCT FROM $3";
        Box::pin(write_pin(self, sql, server, tool, seen))
    }

    fn approve<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
        fingerprint: Option<&'a str>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<PinRecord>, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await.map_err(T::unavailable)?;
            let result = async {
                let changed = sqlx::query(
                    "UPDATE pins SET fingerprint = pending_fingerprint, definition = pending_definition,
                       approved_ms = $1, pending_fingerprint = NULL, pending_definition = NULL, pending_ms = NULL
                     WHERE server = $2 AND tool = $3 AND pending_fingerprint IS NOT NULL
                       AND (CAST($4 AS TEXT) IS NULL OR pending_fingerprint = $4)",
                )
                .bind(now_ms as i64)
                .bind(server)
                .bind(tool)
                .bind(fingerprint)
                .execute(&mut *tx)
                .await?;
                if T::rows_affected(&changed) == 0 {
                    return Ok(None);
                }
                sqlx::query(BUMP).bind("pins").execute(&mut *tx).await?;
                pin_of::<T>(&mut tx, server, tool).await
            }
            .await;
            end::<T, _>(tx, result).await
        })
    }

    fn forget<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await.map_err(T::unavailable)?;
            let result = async {
                let deleted = sqlx::query("DELETE FROM pins WHERE server = $1 AND tool = $2")
                    .bind(server)
                    .bind(tool)
                    .execute(&mut *tx)
                    .await?;
                let deleted = T::rows_affected(&deleted) > 0;
                if deleted {
                    sqlx::query(BUMP).bind("pins").execute(&mut *tx).await?;
                }
                Ok(deleted)
            }
            .await;
            end::<T, _>(tx, result).await
        })
    }
}

/// Writes a pin with `sql` (bound: server, tool, fingerprint, definition, time), notes the
/// change in the generation if a row changed, and reads the pin back, in one transaction.
async fn write_pin<T>(
    store: &T,
    sql: impl sqlx::SqlSafeStr,
    server: &str,
    tool: &str,
    seen: Pinned,
) -> Result<PinRecord, StoreError>
where
    T: SqlStore,
    for<'c> &'c mut <T::Db as Database>::Connection: Executor<'c, Database = T::Db>,
    <T::Db as Database>::Arguments: IntoArguments<T::Db>,
    for<'q> &'q str: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> i64: Encode<'q, T::Db> + Decode<'q, T::Db> + Type<T::Db>,
    for<'r> String: Decode<'r, T::Db> + Type<T::Db>,
    usize: ColumnIndex<<T::Db as Database>::Row>,
{
    let mut tx = store.begin().await.map_err(T::unavailable)?;
    let result = async {
        let written = sqlx::query(sql)
            .bind(server)
            .bind(tool)
            .bind(seen.fingerprint.as_str())
            .bind(seen.definition.as_str())
            .bind(seen.at_ms as i64)
            .execute(&mut *tx)
            .await?;
        if T::rows_affected(&written) > 0 {
            sqlx::query(BUMP).bind("pins").execute(&mut *tx).await?;
        }
        pin_of::<T>(&mut tx, server, tool)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
    .await;
    end::<T, _>(tx, result).await
}

/// One tool's pin, read inside a transaction.
async fn pin_of<T>(
    tx: &mut Transaction<'static, T::Db>,
    server: &str,
    tool: &str,
) -> Result<Option<PinRecord>, sqlx::Error>
where
    T: SqlStore,
    for<'c> &'c mut <T::Db as Database>::Connection: Executor<'c, Database = T::Db>,
    <T::Db as Database>::Arguments: IntoArguments<T::Db>,
    for<'q> &'q str: Encode<'q, T::Db> + Type<T::Db>,
    for<'r> i64: Decode<'r, T::Db> + Type<T::Db>,
    for<'r> String: Decode<'r, T::Db> + Type<T::Db>,
    usize: ColumnIndex<<T::Db as Database>::Row>,
{
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {PIN_COLUMNS} FROM pins WHERE server = $1 AND tool = $2"
    ));
    let row = sqlx::query(sql)
        .bind(server)
        .bind(tool)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(pin_record).transpose()
}

impl<T> GrantStore for T
where
    T: SqlStore,
    for<'c> &'c Pool<T::Db>: Executor<'c, Database = T::Db>,
    for<'c> &'c mut <T::Db as Database>::Connection: Executor<'c, Database = T::Db>,
    <T::Db as Database>::Arguments: IntoArguments<T::Db>,
    for<'q> &'q str: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> Option<&'q str>: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> i64: Encode<'q, T::Db> + Decode<'q, T::Db> + Type<T::Db>,
    for<'r> String: Decode<'r, T::Db> + Type<T::Db>,
    usize: ColumnIndex<<T::Db as Database>::Row>,
{
    fn list(&self) -> BoxFuture<'_, Result<Vec<StoredGrant>, StoreError>> {
        Box::pin(async move {
            let sql =
                sqlx::AssertSqlSafe(format!("SELECT {GRANT_COLUMNS} FROM grants ORDER BY name"));
            let rows = sqlx::query(sql)
                .fetch_all(self.pool())
                .await
                .map_err(T::unavailable)?;
            rows.iter()
                .map(stored_grant)
                .collect::<Result<_, _>>()
                .map_err(T::unavailable)
        })
    }

    fn generation(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let value: i64 = sqlx::query_scalar(GENERATION)
                .bind("grants")
                .fetch_one(self.pool())
                .await
                .map_err(T::unavailable)?;
            Ok(value.max(0) as u64)
        })
    }

    fn create(&self, g: StoredGrant) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await.map_err(T::unavailable)?;
            let result = async {
                let inserted = sqlx::query(
                    "INSERT INTO grants (name, token_sha256, policy, created_ms, updated_ms)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
                )
                .bind(g.name.as_str())
                .bind(g.token_sha256.as_str())
                .bind(g.policy.as_deref())
                .bind(g.created_ms as i64)
                .bind(g.updated_ms as i64)
                .execute(&mut *tx)
                .await?;
                let inserted = T::rows_affected(&inserted) > 0;
                if inserted {
                    sqlx::query(BUMP).bind("grants").execute(&mut *tx).await?;
                }
                Ok(inserted)
            }
            .await;
            end::<T, _>(tx, result).await
        })
    }

    fn update<'a>(
        &'a self,
        name: &'a str,
        change: GrantChange,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<StoredGrant>, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await.map_err(T::unavailable)?;
            let result = async {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {GRANT_COLUMNS} FROM grants WHERE name = $1{}",
                    T::LOCK_ROW
                ));
                let row = sqlx::query(sql)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(mut grant) = row.as_ref().map(stored_grant).transpose()? else {
                    return Ok(None);
                };
                apply(&mut grant, change, now_ms);
                sqlx::query(
                    "UPDATE grants SET token_sha256 = $1, policy = $2, updated_ms = $3 WHERE name = $4",
                )
                .bind(grant.token_sha256.as_str())
                .bind(grant.policy.as_deref())
                .bind(grant.updated_ms as i64)
                .bind(name)
                .execute(&mut *tx)
                .await?;
                sqlx::query(BUMP).bind("grants").execute(&mut *tx).await?;
                Ok(Some(grant))
            }
            .await;
            end::<T, _>(tx, result).await
        })
    }

    fn revoke<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await.map_err(T::unavailable)?;
            let result = async {
                let deleted = sqlx::query("DELETE FROM grants WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                let deleted = T::rows_affected(&deleted) > 0;
                if deleted {
                    sqlx::query(BUMP).bind("grants").execute(&mut *tx).await?;
                }
                Ok(deleted)
            }
            .await;
            end::<T, _>(tx, result).await
        })
    }
}

impl<T> ApprovalStore for T
where
    T: SqlStore,
    for<'c> &'c Pool<T::Db>: Executor<'c, Database = T::Db>,
    for<'c> &'c mut <T::Db as Database>::Connection: Executor<'c, Database = T::Db>,
    <T::Db as Database>::Arguments: IntoArguments<T::Db>,
    for<'q> &'q str: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> i64: Encode<'q, T::Db> + Type<T::Db>,
    for<'r> String: Decode<'r, T::Db> + Type<T::Db>,
    usize: ColumnIndex<<T::Db as Database>::Row>,
{
    fn create(&self, a: Approval) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let text = encode(&a).map_err(T::unavailable)?;
            sqlx::query(
                "INSERT INTO approvals (id, status, created_ms, expires_ms, grant_name, session, server, tool, args_sha256, policy_version, record)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(a.id.as_str())
            .bind(a.status.as_str())
            .bind(a.created_ms as i64)
            .bind(a.expires_ms as i64)
            .bind(a.grant.as_str())
            .bind(a.session.as_str())
            .bind(a.server.as_str())
            .bind(a.tool.as_str())
            .bind(a.args_sha256.as_str())
            .bind(a.policy_version.as_str())
            .bind(text.as_str())
            .execute(self.pool())
            .await
            .map_err(T::unavailable)?;
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
                    .fetch_optional(self.pool())
                    .await
                    .map_err(T::unavailable)?;
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
            let rows = query.fetch_all(self.pool()).await.map_err(T::unavailable)?;
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
            let mut tx = self.begin().await.map_err(T::unavailable)?;
            let result = async {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT record FROM approvals WHERE id = $1 AND status = 'pending' AND expires_ms > $2{}",
                    T::LOCK_ROW
                ));
                let text: Option<String> = sqlx::query_scalar(sql)
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
                    .bind(encode(&a)?.as_str())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                Ok(Some(a))
            }
            .await;
            end::<T, _>(tx, result).await
        })
    }

    fn consume<'a>(&'a self, id: &'a str, now_ms: u64) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            // One statement: two instances consuming the same approval cannot both succeed.
            let sql = sqlx::AssertSqlSafe(format!(
                "UPDATE approvals SET status = 'used', record = {}
                 WHERE id = $1 AND status = 'approved' AND expires_ms > $2",
                T::RECORD_USED
            ));
            let used = sqlx::query(sql)
                .bind(id)
                .bind(now_ms as i64)
                .execute(self.pool())
                .await
                .map_err(T::unavailable)?;
            Ok(T::rows_affected(&used) == 1)
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
            .bind(call.grant.as_str())
            .bind(call.session.as_str())
            .bind(call.server.as_str())
            .bind(call.tool.as_str())
            .bind(call.args_sha256.as_str())
            .bind(call.policy_version.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(T::unavailable)?;
            text.map(|t| approval_of(&t, now_ms)).transpose()
        })
    }
}

impl<T> WebSessionStore for T
where
    T: SqlStore,
    for<'c> &'c Pool<T::Db>: Executor<'c, Database = T::Db>,
    <T::Db as Database>::Arguments: IntoArguments<T::Db>,
    for<'q> &'q str: Encode<'q, T::Db> + Type<T::Db>,
    for<'q> i64: Encode<'q, T::Db> + Type<T::Db>,
    for<'r> (String, String, i64): sqlx::FromRow<'r, <T::Db as Database>::Row>,
{
    fn put<'a>(
        &'a self,
        digest: &'a str,
        session: &'a StoredWebSession,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("DELETE FROM web_sessions WHERE expires_ms <= $1")
                .bind(clamp(now_ms))
                .execute(self.pool())
                .await
                .map_err(T::unavailable)?;
            sqlx::query(
                "INSERT INTO web_sessions (digest, name, role, expires_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (digest) DO UPDATE
                 SET name = excluded.name, role = excluded.role, expires_ms = excluded.expires_ms",
            )
            .bind(digest)
            .bind(session.name.as_str())
            .bind(session.role.as_str())
            .bind(clamp(session.expires_ms))
            .execute(self.pool())
            .await
            .map_err(T::unavailable)?;
            Ok(())
        })
    }

    fn get<'a>(
        &'a self,
        digest: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<StoredWebSession>, StoreError>> {
        Box::pin(async move {
            let row: Option<(String, String, i64)> = sqlx::query_as(
                "SELECT name, role, expires_ms FROM web_sessions WHERE digest = $1 AND expires_ms > $2",
            )
            .bind(digest)
            .bind(clamp(now_ms))
            .fetch_optional(self.pool())
            .await
            .map_err(T::unavailable)?;
            Ok(row.map(|(name, role, expires_ms)| StoredWebSession {
                name,
                role,
                expires_ms: expires_ms.max(0) as u64,
            }))
        })
    }

    fn remove<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("DELETE FROM web_sessions WHERE digest = $1")
                .bind(digest)
                .execute(self.pool())
                .await
                .map_err(T::unavailable)?;
            Ok(())
        })
    }
}

fn clamp(ms: u64) -> i64 {
    ms.min(i64::MAX as u64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_cut_into_power_of_two_inserts_in_order() {
        for (len, sizes) in [
            (0, vec![]),
            (1, vec![1]),
            (7, vec![4, 2, 1]),
            (300, vec![256, 32, 8, 4]),
            (1201, vec![256, 256, 256, 256, 128, 32, 16, 1]),
        ] {
            let records: Vec<AuditRecord> = (0..len)
                .map(|n| AuditRecord {
                    at_ms: n,
                    ..AuditRecord::default()
                })
                .collect();
            let chunks: Vec<&[AuditRecord]> = audit_chunks(&records).collect();
            assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), sizes);
            let order: Vec<u64> = chunks.concat().iter().map(|r| r.at_ms).collect();
            assert_eq!(order, (0..len).collect::<Vec<_>>());
        }
    }
}
