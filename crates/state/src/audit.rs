//! The audit log: one record per decision the gateway makes, and per operator action.
//!
//! Records are appended in batches by one writer (the gateway's `AuditLog`), queried by
//! `toolgate audit` and the admin API, and pruned by age and count.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::counters::{BoxFuture, StoreError};

/// One audited event. Fields that do not apply are `None` (an admin event has no tool).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Assigned by the store, increasing.
    #[serde(default)]
    pub id: i64,
    /// Unique per record, given by the writer: a record written twice (a retry after a lost
    /// answer, a replay from the disk spool) is stored once where the store can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// When it was decided or done (a call: when it was answered), UTC milliseconds.
    pub at_ms: u64,
    /// `call` for a client's request, `admin` for an operator's or the gateway's own action.
    pub kind: String,
    /// What was decided or done: `allowed`, `denied`, `hidden`, `limited`,
    /// `approval_pending`, `approval_granted`, `approval_denied`, `approval_expired`,
    /// `quarantined`, `upstream_error`; for admin events the action (`policy_reloaded`,
    /// `pin_approved`, `tool_quarantined`, ...).
    pub decision: String,
    /// The JSON-RPC id of the client's request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The grant (or, for admin events, who acted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The downstream session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The upstream server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The MCP method (`tools/call`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The tool's name on its server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The rule's JSON pointer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What the agent (or operator) was told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The policy version that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// The top-level argument names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arg_keys: Vec<String>,
    /// SHA-256 of the arguments as sent (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_sha256: Option<String>,
    /// The argument values, only when the policy says `audit.values` (redacted paths replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// How the upstream answered: `result`, `error <code>`, `timeout`, `unavailable`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<String>,
    /// From the request's arrival to its answer, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// Whether the result said `isError`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// Details of admin events (old and new versions, fingerprints, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// Which records a query returns.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this grant.
    pub grant: Option<String>,
    /// Only this tool (its name on its server).
    pub tool: Option<String>,
    /// Only this decision.
    pub decision: Option<String>,
    /// Only records at or after this time (UTC ms).
    pub since_ms: Option<u64>,
    /// Only records with an id above this (for following).
    pub after_id: Option<i64>,
    /// At most this many: the newest, or with `after_id` the first after it (so that a
    /// follower reading in pages never skips one); returned oldest first either way.
    pub limit: usize,
}

/// How many call records one minute holds with one decision, server and tool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditTally {
    /// The minute's start, UTC milliseconds.
    pub minute_ms: u64,
    /// The records' decision.
    pub decision: String,
    /// The upstream server, if the records name one.
    pub server: Option<String>,
    /// The tool, if the records name one.
    pub tool: Option<String>,
    /// How many records.
    pub count: u64,
}

/// Where audit records go.
pub trait AuditSink: Send + Sync {
    /// Appends records, all or none, assigning their ids. Borrowed: a writer keeps its batch
    /// to retry it without copying.
    fn append<'a>(&'a self, records: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Records matching a filter, oldest first.
    fn query<'a>(
        &'a self,
        filter: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>>;
    /// Deletes records older than `before_ms`, then the oldest beyond `keep` records.
    /// Returns how many went.
    fn prune(&self, before_ms: u64, keep: u64) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// The call records (`kind = "call"`) at or after `since_ms`, counted per minute, decision,
    /// server and tool where they are stored: an hour of a busy gateway is millions of
    /// records, too many to move for an overview. In no particular order.
    fn tally(&self, since_ms: u64) -> BoxFuture<'_, Result<Vec<AuditTally>, StoreError>>;
    /// Whether records need their unique id (`uid`) before [`AuditSink::append`]: a store
    /// that may be handed a record twice (a retry after a lost answer, a replay) and tells
    /// them apart by it. An in-process store whose append is all or nothing does not.
    fn needs_uids(&self) -> bool {
        true
    }
}

/// Audit records in this process's memory (tests; a gateway without a state directory).
#[derive(Debug, Default)]
pub struct MemoryAudit {
    records: Mutex<Vec<AuditRecord>>,
}

impl MemoryAudit {
    fn with<T>(&self, f: impl FnOnce(&mut Vec<AuditRecord>) -> T) -> T {
        f(&mut self.records.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl AuditFilter {
    /// Whether a record passes the filter (all but `limit`).
    pub fn matches(&self, r: &AuditRecord) -> bool {
        self.grant
            .as_ref()
            .is_none_or(|g| r.grant.as_ref() == Some(g))
            && self
                .tool
                .as_ref()
                .is_none_or(|t| r.tool.as_ref() == Some(t))
            && self.decision.as_ref().is_none_or(|d| &r.decision == d)
            && self.since_ms.is_none_or(|s| r.at_ms >= s)
            && self.after_id.is_none_or(|a| r.id > a)
    }
}

impl AuditSink for MemoryAudit {
    fn append<'a>(&'a self, records: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|all| {
            for r in records {
                if r.uid.is_some() && all.iter().any(|old| old.uid == r.uid) {
                    continue;
                }
                let mut r = r.clone();
                r.id = all.last().map_or(1, |last| last.id + 1);
                all.push(r);
            }
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn query<'a>(
        &'a self,
        filter: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>> {
        let found = self.with(|all| {
            let matching = |r: &&AuditRecord| filter.matches(r);
            if filter.after_id.is_some() {
                return all
                    .iter()
                    .filter(matching)
                    .take(filter.limit)
                    .cloned()
                    .collect();
            }
            let mut found: Vec<AuditRecord> = all
                .iter()
                .rev()
                .filter(matching)
                .take(filter.limit)
                .cloned()
                .collect();
            found.reverse();
            found
        });
        Box::pin(std::future::ready(Ok(found)))
    }

    fn prune(&self, before_ms: u64, keep: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        let gone = self.with(|all| {
            let before = all.len();
            all.retain(|r| r.at_ms >= before_ms);
            let over = all
                .len()
                .saturating_sub(keep.min(usize::MAX as u64) as usize);
            all.drain(..over);
            (before - all.len()) as u64
        });
        Box::pin(std::future::ready(Ok(gone)))
    }

    fn tally(&self, since_ms: u64) -> BoxFuture<'_, Result<Vec<AuditTally>, StoreError>> {
        let counts = self.with(|all| {
            let mut counts = std::collections::BTreeMap::new();
            for r in all
                .iter()
                .filter(|r| r.kind == "call" && r.at_ms >= since_ms)
            {
                let key = (
                    r.at_ms / 60_000 * 60_000,
                    r.decision.clone(),
                    r.server.clone(),
                    r.tool.clone(),
                );
                *counts.entry(key).or_insert(0u64) += 1;
            }
            counts
        });
        let tallies = counts
            .into_iter()
            .map(|((minute_ms, decision, server, tool), count)| AuditTally {
                minute_ms,
                decision,
                server,
                tool,
                count,
            })
            .collect();
        Box::pin(std::future::ready(Ok(tallies)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_audit_keeps_the_contract() {
        contract(&MemoryAudit::default()).await;
    }

    fn record(at: u64, grant: &str, tool: &str, decision: &str) -> AuditRecord {
        AuditRecord {
            at_ms: at,
            kind: "call".into(),
            decision: decision.into(),
            grant: Some(grant.into()),
            tool: Some(tool.into()),
            arg_keys: vec!["path".into()],
            args_sha256: Some("ab".repeat(32)),
            latency_us: Some(1200),
            ..AuditRecord::default()
        }
    }

    /// What every audit sink must do.
    pub async fn contract(sink: &dyn AuditSink) {
        sink.append(&[
            record(1_000, "alice", "read", "allowed"),
            record(2_000, "bob", "read", "denied"),
            record(3_000, "alice", "exec", "approval_expired"),
        ])
        .await
        .unwrap();
        let all = sink
            .query(&AuditFilter {
                limit: 100,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
        assert_eq!(all[0].arg_keys, ["path"]);
        assert_eq!(all[0].latency_us, Some(1200));
        let alice = sink
            .query(&AuditFilter {
                grant: Some("alice".into()),
                limit: 100,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(alice.len(), 2);
        let since = sink
            .query(&AuditFilter {
                since_ms: Some(2_000),
                decision: Some("denied".into()),
                limit: 100,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(since.len(), 1);
        assert_eq!(since[0].grant.as_deref(), Some("bob"));
        let after = sink
            .query(&AuditFilter {
                after_id: Some(all[1].id),
                limit: 100,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].tool.as_deref(), Some("exec"));
        // Following in pages: the first after the id, not the newest.
        let page = sink
            .query(&AuditFilter {
                after_id: Some(0),
                limit: 2,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            page.iter().map(|r| r.id).collect::<Vec<_>>(),
            [all[0].id, all[1].id]
        );
        let newest = sink
            .query(&AuditFilter {
                limit: 2,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[1].id, all[2].id, "the newest, oldest first");
        // By age, then by count.
        assert_eq!(sink.prune(1_500, 100).await.unwrap(), 1);
        assert_eq!(sink.prune(0, 1).await.unwrap(), 1);
        let left = sink
            .query(&AuditFilter {
                limit: 100,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].tool.as_deref(), Some("exec"));
        // Every field comes back as it went in.
        let full = full_record();
        sink.append(std::slice::from_ref(&full)).await.unwrap();
        let mut back = sink
            .query(&AuditFilter {
                limit: 1,
                ..AuditFilter::default()
            })
            .await
            .unwrap()
            .remove(0);
        back.uid = full.uid.clone();
        assert_eq!(
            back,
            AuditRecord {
                id: back.id,
                ..full
            }
        );
        tally_contract(sink).await;
        large_batch_contract(sink).await;
    }

    /// A batch larger than one statement's rows is stored whole, in its order.
    async fn large_batch_contract(sink: &dyn AuditSink) {
        let newest = |limit| AuditFilter {
            limit,
            ..AuditFilter::default()
        };
        let last = sink
            .query(&newest(1))
            .await
            .unwrap()
            .pop()
            .map_or(0, |r| r.id);
        let batch: Vec<AuditRecord> = (0..1_201)
            .map(|i| AuditRecord {
                uid: Some(format!("large-{i}")),
                ..record(5_000_000 + i, "erin", "read", "allowed")
            })
            .collect();
        sink.append(&batch).await.unwrap();
        let stored = sink
            .query(&AuditFilter {
                after_id: Some(last),
                ..newest(5_000)
            })
            .await
            .unwrap();
        assert_eq!(
            stored.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            batch.iter().map(|r| r.at_ms).collect::<Vec<_>>()
        );
    }

    /// Counting happens where the records are: per minute, decision, server and tool, calls
    /// only, from the given time on.
    async fn tally_contract(sink: &dyn AuditSink) {
        let minute = 60_000 * 29_000_000;
        let call = |at: u64, server: Option<&str>, tool: &str, decision: &str| AuditRecord {
            server: server.map(Into::into),
            ..record(at, "dave", tool, decision)
        };
        sink.append(&[
            call(minute - 1, Some("ssh"), "ssh_exec", "allowed"),
            call(minute, Some("ssh"), "ssh_exec", "allowed"),
            call(minute + 59_999, Some("ssh"), "ssh_exec", "allowed"),
            call(minute + 30_000, Some("ssh"), "ssh_exec", "denied"),
            call(minute + 60_000, Some("ssh"), "ssh_exec", "allowed"),
            call(minute + 61_000, Some("docs"), "ssh_exec", "allowed"),
            call(minute + 62_000, None, "search", "upstream_error"),
            AuditRecord {
                kind: "admin".into(),
                ..call(minute + 1_000, Some("ssh"), "ssh_exec", "pin_approved")
            },
        ])
        .await
        .unwrap();
        let mut tallies = sink.tally(minute).await.unwrap();
        tallies.sort();
        let tally = |m: u64, decision: &str, server: Option<&str>, tool: &str, count| AuditTally {
            minute_ms: minute + m * 60_000,
            decision: decision.into(),
            server: server.map(Into::into),
            tool: Some(tool.into()),
            count,
        };
        let mut expected = vec![
            tally(0, "allowed", Some("ssh"), "ssh_exec", 2),
            tally(0, "denied", Some("ssh"), "ssh_exec", 1),
            tally(1, "allowed", Some("ssh"), "ssh_exec", 1),
            tally(1, "allowed", Some("docs"), "ssh_exec", 1),
            tally(1, "upstream_error", None, "search", 1),
        ];
        expected.sort();
        assert_eq!(tallies, expected);
        assert!(sink.tally(minute + 120_000).await.unwrap().is_empty());
    }

    /// A record with every field set, odd characters included.
    pub(crate) fn full_record() -> AuditRecord {
        AuditRecord {
            id: 0,
            uid: Some("u1".into()),
            at_ms: 9_000,
            kind: "call".into(),
            decision: "approval_denied".into(),
            request_id: Some("\"7\"".into()),
            grant: Some("carol".into()),
            session: Some("s-1".into()),
            server: Some("ssh".into()),
            method: Some("tools/call".into()),
            tool: Some("ssh_exec".into()),
            rule: Some("/tools/ssh_exec/approve".into()),
            message: Some("refused by dave: \"no\" \u{1F6AB}\n".into()),
            policy_version: Some("sha256:0123".into()),
            arg_keys: vec!["command".into(), "host".into()],
            args_sha256: Some("cd".repeat(32)),
            args: Some(serde_json::json!({"command": "uptime", "password": "[redacted]"})),
            upstream_status: Some("error -32000".into()),
            latency_us: Some(42),
            is_error: Some(true),
            detail: Some(serde_json::json!({"approval": "a1", "nested": [1, null]})),
        }
    }
}
