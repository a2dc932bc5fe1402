//! What the gateway has been doing: the audit log (queried, or followed live as server-sent
//! events) and the overview's figures drawn from it.
//!
//! The live feed reads the store rather than this process's writer, so that with a shared
//! PostgreSQL it shows the calls of every instance.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use toolgate_gateway::guard::now_ms;
use toolgate_policy::{parse_duration, utc_rfc3339};
use toolgate_state::{AuditFilter, AuditRecord};

use crate::{Params, Shared, Viewer, error, inventory, reply, unavailable};

/// How often the live feed looks for new records.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// A comment line this often keeps proxies and the browser from closing an idle feed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Records a feed starts with.
const BACKLOG: usize = 100;

/// Decisions that refused a call.
const REFUSALS: &[&str] = &[
    "denied",
    "hidden",
    "limited",
    "quarantined",
    "approval_denied",
    "approval_expired",
];

#[derive(serde::Deserialize, Default)]
pub(crate) struct AuditQuery {
    grant: Option<String>,
    tool: Option<String>,
    decision: Option<String>,
    /// A duration back from now: `10m`, `2h`, `7d`.
    since: Option<String>,
    after_id: Option<i64>,
    limit: Option<usize>,
}

impl AuditQuery {
    fn filter(self) -> Result<AuditFilter, Response> {
        let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        let since_ms = match nonempty(self.since) {
            Some(s) => Some(
                now_ms().saturating_sub(
                    parse_duration(&s)
                        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("`since`: {e}")))?,
                ),
            ),
            None => None,
        };
        Ok(AuditFilter {
            grant: nonempty(self.grant),
            tool: nonempty(self.tool),
            decision: nonempty(self.decision),
            since_ms,
            after_id: self.after_id,
            limit: self.limit.unwrap_or(200).clamp(1, 10_000),
        })
    }
}

/// A record as the API shows it: its time also as UTC text.
fn record_json(r: &AuditRecord) -> Value {
    let mut v = json!(r);
    v["at"] = json!(utc_rfc3339(r.at_ms));
    v
}

pub(crate) async fn audit(
    State(state): Shared,
    _: Viewer,
    Params(query): Params<AuditQuery>,
) -> Response {
    let filter = match query.filter() {
        Ok(f) => f,
        Err(r) => return r,
    };
    match state.gateway.audit.sink().query(&filter).await {
        Ok(records) => reply(
            StatusCode::OK,
            &json!({"records": records.iter().map(record_json).collect::<Vec<_>>()}),
        ),
        Err(e) => unavailable(e),
    }
}

/// One server-sent event per record (`id:` its id, so a reconnecting browser resumes after
/// the last it saw), starting with the newest `BACKLOG` records.
pub(crate) async fn stream(
    State(state): Shared,
    _: Viewer,
    headers: HeaderMap,
    Params(query): Params<AuditQuery>,
) -> Response {
    let mut filter = match query.filter() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    filter.after_id = resume.or(filter.after_id);
    if filter.after_id.is_none() {
        filter.limit = BACKLOG;
    }
    let sink = state.gateway.audit.sink().clone();
    let shutdown = state.gateway.shutting_down();
    let events = futures_util::stream::unfold(
        (sink, filter, true, tokio::time::Instant::now()),
        move |(sink, mut filter, first, mut quiet_since)| {
            let mut shutdown = shutdown.clone();
            async move {
                loop {
                    if !first {
                        tokio::select! {
                            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                            _ = shutdown.wait_for(|s| *s) => return None,
                        }
                    }
                    let records = match sink.query(&filter).await {
                        Ok(r) => r,
                        Err(e) => {
                            let event = format!(
                                "event: error\ndata: {}\n\n",
                                json!({"error": e.to_string()})
                            );
                            return Some((
                                Ok::<_, std::convert::Infallible>(Bytes::from(event)),
                                (sink, filter, false, quiet_since),
                            ));
                        }
                    };
                    let mut out = String::new();
                    for r in &records {
                        out.push_str(&format!(
                            "id: {}\nevent: record\ndata: {}\n\n",
                            r.id,
                            record_json(r)
                        ));
                    }
                    if let Some(last) = records.last() {
                        filter.after_id = Some(last.id);
                    } else if filter.after_id.is_none() {
                        filter.after_id = Some(0);
                    }
                    filter.limit = 1000;
                    if first {
                        // Tells the page the backlog is complete, even when it is empty.
                        out.push_str("event: ready\ndata: {}\n\n");
                    } else if out.is_empty() {
                        if quiet_since.elapsed() < KEEP_ALIVE {
                            continue;
                        }
                        out.push_str(": keep-alive\n\n");
                    }
                    quiet_since = tokio::time::Instant::now();
                    return Some((Ok(Bytes::from(out)), (sink, filter, false, quiet_since)));
                }
            }
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

pub(crate) async fn overview(State(state): Shared, _: Viewer) -> Response {
    let now = now_ms();
    let start = (now / 60_000 - 59) * 60_000;
    let tallies = match state.gateway.audit.sink().tally(start).await {
        Ok(t) => t,
        Err(e) => return unavailable(e),
    };
    let mut minutes = vec![(0u64, 0u64); 60];
    let mut decisions: BTreeMap<&str, u64> = BTreeMap::new();
    let mut tools: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
    let mut upstream_errors: HashMap<&str, u64> = HashMap::new();
    // A held call is recorded when it is held and again when decided: count it once.
    for t in tallies.iter().filter(|t| t.decision != "approval_pending") {
        let refused = if REFUSALS.contains(&t.decision.as_str()) {
            t.count
        } else {
            0
        };
        let slot = ((t.minute_ms.saturating_sub(start)) / 60_000).min(59) as usize;
        minutes[slot].0 += t.count;
        minutes[slot].1 += refused;
        *decisions.entry(t.decision.as_str()).or_default() += t.count;
        let server = t.server.as_deref().unwrap_or("");
        if let Some(tool) = t.tool.as_deref() {
            let entry = tools.entry((server, tool)).or_default();
            entry.0 += t.count;
            entry.1 += refused;
        }
        if t.decision == "upstream_error" {
            *upstream_errors.entry(server).or_default() += t.count;
        }
    }
    let mut top: Vec<_> = tools.into_iter().collect();
    top.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    top.truncate(10);
    let pending = match state.gateway.guard.approvals().list(false, now).await {
        Ok(p) => p.len(),
        Err(e) => return unavailable(e),
    };
    let servers: Vec<Value> = inventory::servers(&state)
        .await
        .iter()
        .map(|(s, live)| {
            json!({"name": s.name, "transport": s.transport, "state": live,
                "tools": s.tools.len(), "error": s.error,
                "upstream_errors": upstream_errors.get(s.name.as_str()).copied().unwrap_or(0)})
        })
        .collect();
    let calls: u64 = minutes.iter().map(|m| m.0).sum();
    let refused: u64 = minutes.iter().map(|m| m.1).sum();
    reply(
        StatusCode::OK,
        &json!({
            "since": utc_rfc3339(start),
            "per_minute": minutes.iter().enumerate().map(|(i, (c, d))| json!({
                "minute": utc_rfc3339(start + i as u64 * 60_000), "calls": c, "refused": d,
            })).collect::<Vec<_>>(),
            "totals": {"calls": calls, "refused": refused, "decisions": decisions},
            "approvals_pending": pending,
            "top_tools": top.iter().map(|((server, tool), (calls, refused))| json!({
                "server": server, "tool": tool, "calls": calls, "refused": refused,
            })).collect::<Vec<_>>(),
            "sessions": state.gateway.session_count(),
            "servers": servers,
        }),
    )
}
