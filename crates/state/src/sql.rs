//! What the SQL stores (SQLite, PostgreSQL) share: row shapes, record encodings and the audit
//! query, written once.

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::approvals::{Approval, expire};
use crate::audit::{AuditFilter, AuditRecord};
use crate::counters::StoreError;
use crate::grants::StoredGrant;
use crate::pins::{PinRecord, Pinned};

/// The columns [`pin_record`] reads, in order.
pub(crate) const PIN_COLUMNS: &str = "server, tool, fingerprint, definition, approved_ms, pending_fingerprint, pending_definition, pending_ms, first_seen_ms";

/// A `pins` row selected with [`PIN_COLUMNS`].
pub(crate) fn pin_record<'r, R>(row: &'r R) -> Result<PinRecord, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let pinned = |fp: usize, def: usize, at: usize| -> Result<Option<Pinned>, sqlx::Error> {
        let fingerprint: Option<String> = row.try_get(fp)?;
        Ok(match fingerprint {
            Some(fingerprint) => Some(Pinned {
                fingerprint,
                definition: row.try_get::<Option<String>, _>(def)?.unwrap_or_default(),
                at_ms: row.try_get::<Option<i64>, _>(at)?.unwrap_or(0).max(0) as u64,
            }),
            None => None,
        })
    };
    Ok(PinRecord {
        server: row.try_get(0)?,
        tool: row.try_get(1)?,
        approved: pinned(2, 3, 4)?,
        pending: pinned(5, 6, 7)?,
        first_seen_ms: row.try_get::<i64, _>(8)?.max(0) as u64,
    })
}

/// The columns [`stored_grant`] reads, in order.
pub(crate) const GRANT_COLUMNS: &str = "name, token_sha256, policy, created_ms, updated_ms";

/// A `grants` row selected with [`GRANT_COLUMNS`].
pub(crate) fn stored_grant<'r, R>(row: &'r R) -> Result<StoredGrant, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(StoredGrant {
        name: row.try_get(0)?,
        token_sha256: row.try_get(1)?,
        policy: row.try_get(2)?,
        created_ms: row.try_get::<i64, _>(3)?.max(0) as u64,
        updated_ms: row.try_get::<i64, _>(4)?.max(0) as u64,
    })
}

/// An approval as stored (JSON), with expiry applied.
pub(crate) fn approval_of(text: &str, now_ms: u64) -> Result<Approval, StoreError> {
    let mut a: Approval = serde_json::from_str(text)
        .map_err(|e| StoreError::Unavailable(format!("approval record: {e}")))?;
    expire(&mut a, now_ms);
    Ok(a)
}

/// An approval as stored.
pub(crate) fn encode(a: &Approval) -> Result<String, sqlx::Error> {
    serde_json::to_string(a).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// An audit record as stored (JSON), with the id the store gave it.
pub(crate) fn audit_record(id: i64, text: &str) -> Result<AuditRecord, StoreError> {
    let mut record: AuditRecord = serde_json::from_str(text)
        .map_err(|e| StoreError::Unavailable(format!("audit record {id}: {e}")))?;
    record.id = id;
    Ok(record)
}

/// The records of an audit query's rows, oldest first.
pub(crate) fn audit_records<R>(
    rows: &[R],
    filter: &AuditFilter,
) -> Result<Vec<AuditRecord>, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let decode = |row: &R| {
        let id: i64 = row
            .try_get(0)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let text: String = row
            .try_get(1)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        audit_record(id, &text)
    };
    // Without `after_id` the query took the newest, newest first.
    match filter.after_id {
        Some(_) => rows.iter().map(decode).collect(),
        None => rows.iter().rev().map(decode).collect(),
    }
}

/// The query for a filter: `SELECT id, record ... ORDER BY id DESC LIMIT` (the newest), or
/// with `after_id`, `ORDER BY id ASC` (the first after it, so that a follower never skips),
/// with the database's placeholder for parameter `n` (1-based). Bind, in order: grant, tool, decision
/// (those that are set), since, after, then the limit ([`bind_audit_filter`]).
pub(crate) fn audit_query(filter: &AuditFilter, placeholder: fn(usize) -> String) -> String {
    let mut conditions = Vec::new();
    let columns = [
        ("grant_name =", filter.grant.is_some()),
        ("tool =", filter.tool.is_some()),
        ("decision =", filter.decision.is_some()),
        ("at_ms >=", filter.since_ms.is_some()),
        ("id >", filter.after_id.is_some()),
    ];
    for (column, _) in columns.iter().filter(|(_, set)| *set) {
        conditions.push(format!("{column} {}", placeholder(conditions.len() + 1)));
    }
    let clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let order = if filter.after_id.is_some() {
        "ASC"
    } else {
        "DESC"
    };
    format!(
        "SELECT id, record FROM audit {clause} ORDER BY id {order} LIMIT {}",
        placeholder(conditions.len() + 1)
    )
}

/// Binds what [`audit_query`] asks for.
pub(crate) fn bind_audit_filter<'q, DB>(
    mut query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    filter: &AuditFilter,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + Type<DB>,
    i64: sqlx::Encode<'q, DB> + Type<DB>,
{
    for value in [&filter.grant, &filter.tool, &filter.decision]
        .into_iter()
        .flatten()
    {
        query = query.bind(value.clone());
    }
    if let Some(since) = filter.since_ms {
        query = query.bind(since.min(i64::MAX as u64) as i64);
    }
    if let Some(after) = filter.after_id {
        query = query.bind(after);
    }
    query.bind(filter.limit.min(i64::MAX as usize) as i64)
}
