//! What the SQL stores (SQLite, PostgreSQL) share: row shapes, record encodings and the audit
//! query, written once.

use sqlx::{ColumnIndex, Decode, Row, Type};
use toolgate_wire::push_json_str;

use crate::approvals::{Approval, expire};
use crate::audit::{AuditFilter, AuditRecord, AuditTally};
use crate::counters::StoreError;
use crate::grants::StoredGrant;
use crate::pins::{PinRecord, Pinned};

pub(crate) mod stores;

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

/// The columns [`audit_records`] reads, in order.
const AUDIT_COLUMNS: &str = "id, at_ms, grant_name, tool, decision, record";

/// Format tag of [`AuditRow`]: the first element of the stored array.
const AUDIT_ROW_V1: u8 = 1;

/// What an audit row stores as text beside its columns (`id`, `at_ms`, `grant_name`, `tool`,
/// `decision`): the rest of the record as a JSON array by position, [`AUDIT_ROW_V1`] first,
/// in the order of [`audit_row_text`]. Half the size of the record as a JSON object, and what
/// SQLite spends on a record grows with its bytes (the WAL and the checkpoint each write it
/// once). Rows written before hold the whole record as an object and still read.
type AuditRow = (
    u8,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Vec<String>,
    Option<String>,
    Option<serde_json::Value>,
    Option<String>,
    Option<u64>,
    Option<bool>,
    Option<serde_json::Value>,
);

/// The text column of an audit record's row: the [`AuditRow`] tuple as `serde_json` writes
/// it, written by hand because it is written once per call on the relay's path: most of its
/// strings (ids, digests, names) need no escapes and are copied as they are.
pub(crate) fn audit_row_text(r: &AuditRecord) -> Result<String, sqlx::Error> {
    let strings = [
        Some(&r.kind),
        r.request_id.as_ref(),
        r.session.as_ref(),
        r.server.as_ref(),
        r.method.as_ref(),
        r.rule.as_ref(),
        r.message.as_ref(),
        r.policy_version.as_ref(),
    ];
    let size = strings.iter().flatten().map(|s| s.len() + 3).sum::<usize>()
        + r.arg_keys.iter().map(|k| k.len() + 3).sum::<usize>()
        + 128;
    let mut out = String::with_capacity(size);
    out.push('[');
    out.push_str(itoa::Buffer::new().format(AUDIT_ROW_V1));
    for s in strings {
        out.push(',');
        push_json_opt(&mut out, s.map(String::as_str));
    }
    out.push_str(",[");
    for (i, key) in r.arg_keys.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, key);
    }
    out.push_str("],");
    push_json_opt(&mut out, r.args_sha256.as_deref());
    out.push(',');
    push_json_value(&mut out, r.args.as_ref())?;
    out.push(',');
    push_json_opt(&mut out, r.upstream_status.as_deref());
    out.push(',');
    match r.latency_us {
        Some(us) => out.push_str(itoa::Buffer::new().format(us)),
        None => out.push_str("null"),
    }
    out.push_str(match r.is_error {
        Some(true) => ",true,",
        Some(false) => ",false,",
        None => ",null,",
    });
    push_json_value(&mut out, r.detail.as_ref())?;
    out.push(']');
    Ok(out)
}

fn push_json_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_json_str(out, s),
        None => out.push_str("null"),
    }
}

fn push_json_value(out: &mut String, v: Option<&serde_json::Value>) -> Result<(), sqlx::Error> {
    match v {
        Some(v) => {
            let text = serde_json::to_string(v).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            out.push_str(&text);
        }
        None => out.push_str("null"),
    }
    Ok(())
}

/// An audit record from its row's columns and text (either encoding).
fn audit_record(
    id: i64,
    columns: (i64, Option<String>, Option<String>, String),
    text: &str,
) -> Result<AuditRecord, StoreError> {
    let bad = |e: serde_json::Error| StoreError::Unavailable(format!("audit record {id}: {e}"));
    if !text.starts_with('[') {
        let mut record: AuditRecord = serde_json::from_str(text).map_err(bad)?;
        record.id = id;
        return Ok(record);
    }
    let row: AuditRow = serde_json::from_str(text).map_err(bad)?;
    if row.0 != AUDIT_ROW_V1 {
        return Err(StoreError::Unavailable(format!(
            "audit record {id}: unknown row format {} (written by a newer toolgate?)",
            row.0
        )));
    }
    let (at_ms, grant, tool, decision) = columns;
    Ok(AuditRecord {
        id,
        uid: None,
        at_ms: at_ms.max(0) as u64,
        kind: row.1,
        decision,
        request_id: row.2,
        grant,
        session: row.3,
        server: row.4,
        method: row.5,
        tool,
        rule: row.6,
        message: row.7,
        policy_version: row.8,
        arg_keys: row.9,
        args_sha256: row.10,
        args: row.11,
        upstream_status: row.12,
        latency_us: row.13,
        is_error: row.14,
        detail: row.15,
    })
}

/// The records of an audit query's rows ([`AUDIT_COLUMNS`]), oldest first.
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
        let get = |e: sqlx::Error| StoreError::Unavailable(e.to_string());
        let columns = (
            row.try_get::<i64, _>(1).map_err(get)?,
            row.try_get::<Option<String>, _>(2).map_err(get)?,
            row.try_get::<Option<String>, _>(3).map_err(get)?,
            row.try_get::<String, _>(4).map_err(get)?,
        );
        let text: String = row.try_get(5).map_err(get)?;
        audit_record(row.try_get(0).map_err(get)?, columns, &text)
    };
    // Without `after_id` the query took the newest, newest first.
    match filter.after_id {
        Some(_) => rows.iter().map(decode).collect(),
        None => rows.iter().rev().map(decode).collect(),
    }
}

/// [`AuditSink::tally`](crate::AuditSink::tally) on `pool`, in its dialect's words: `element`
/// reads the record text's server or kind (element 4 or 1 of a row in the array encoding,
/// members of one in the object encoding of earlier versions). The server is the `server`
/// column's; only rows written before that column have their text parsed for it. A row is a
/// call when its text starts `[1,"call",` (no parse needed).
pub(crate) async fn audit_tally<DB>(
    pool: &sqlx::Pool<DB>,
    since_ms: u64,
    element: fn(&str, usize, &str) -> String,
) -> Result<Vec<AuditTally>, StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    let server = element("record", 4, "server");
    let kind = element("record", 1, "kind");
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT at_ms / 60000 * 60000 AS minute, decision, COALESCE(server, {server}), tool, COUNT(*)
         FROM audit
         WHERE at_ms >= $1
           AND CASE WHEN substr(record, 1, 1) = '[' THEN substr(record, 1, 10) = '[1,\"call\",'
                    ELSE {kind} = 'call' END
         GROUP BY 1, 2, 3, 4"
    ));
    let get = |e: sqlx::Error| StoreError::Unavailable(e.to_string());
    let rows = sqlx::query(sql)
        .bind(since_ms.min(i64::MAX as u64) as i64)
        .fetch_all(pool)
        .await
        .map_err(get)?;
    rows.iter()
        .map(|row| {
            Ok(AuditTally {
                minute_ms: row.try_get::<i64, _>(0).map_err(get)?.max(0) as u64,
                decision: row.try_get(1).map_err(get)?,
                server: row.try_get(2).map_err(get)?,
                tool: row.try_get(3).map_err(get)?,
                count: row.try_get::<i64, _>(4).map_err(get)?.max(0) as u64,
            })
        })
        .collect()
}

/// The query for a filter: `SELECT <AUDIT_COLUMNS> ... ORDER BY id DESC LIMIT` (the newest), or
/// with `after_id`, `ORDER BY id ASC` (the first after it, so that a follower never skips),
/// with `$n` parameters (SQLite reads them in order too). Bind, in order: grant, tool,
/// decision (those that are set), since, after, then the limit ([`bind_audit_filter`]).
pub(crate) fn audit_query(filter: &AuditFilter) -> String {
    let mut conditions = Vec::new();
    let columns = [
        ("grant_name =", filter.grant.is_some()),
        ("tool =", filter.tool.is_some()),
        ("decision =", filter.decision.is_some()),
        ("at_ms >=", filter.since_ms.is_some()),
        ("id >", filter.after_id.is_some()),
    ];
    for (column, _) in columns.iter().filter(|(_, set)| *set) {
        conditions.push(format!("{column} ${}", conditions.len() + 1));
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
        "SELECT {AUDIT_COLUMNS} FROM audit {clause} ORDER BY id {order} LIMIT ${}",
        conditions.len() + 1
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The row text as `serde_json` writes the [`AuditRow`] tuple: what rows always held.
    fn serde_row_text(r: &AuditRecord) -> String {
        serde_json::to_string(&(
            AUDIT_ROW_V1,
            &r.kind,
            &r.request_id,
            &r.session,
            &r.server,
            &r.method,
            &r.rule,
            &r.message,
            &r.policy_version,
            &r.arg_keys,
            &r.args_sha256,
            &r.args,
            &r.upstream_status,
            r.latency_us,
            r.is_error,
            &r.detail,
        ))
        .unwrap()
    }

    #[test]
    fn row_text_is_what_serde_json_writes_and_reads_back() {
        let full = crate::audit::tests::full_record();
        let odd = AuditRecord {
            kind: "a\\b\u{7}\u{1f}\"".into(),
            request_id: Some("\u{0}".into()),
            session: Some("\u{7f}\u{2028}é".into()),
            arg_keys: vec!["quo\"te".into(), String::new(), "tab\t".into()],
            latency_us: Some(u64::MAX),
            is_error: Some(false),
            ..full.clone()
        };
        let empty = AuditRecord {
            kind: "admin".into(),
            decision: "policy_reloaded".into(),
            ..AuditRecord::default()
        };
        for record in [full, odd, empty] {
            let text = audit_row_text(&record).unwrap();
            assert_eq!(text, serde_row_text(&record));
            let back = audit_record(
                7,
                (
                    record.at_ms as i64,
                    record.grant.clone(),
                    record.tool.clone(),
                    record.decision.clone(),
                ),
                &text,
            )
            .unwrap();
            assert_eq!(back.kind, record.kind);
            assert_eq!(back.arg_keys, record.arg_keys);
            assert_eq!(back.message, record.message);
            assert_eq!(back.latency_us, record.latency_us);
            assert_eq!(back.detail, record.detail);
        }
    }
}
