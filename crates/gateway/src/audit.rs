//! The audit log's writer: records are queued by the request path and written in batches by
//! one task, so a call never waits for the disk, unless `durability = "strict"`, where the
//! answer waits until its record is committed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use toolgate_policy::AuditSpec;
use toolgate_state::{AuditRecord, AuditSink};

use crate::config::{AuditConfig, Durability};
use crate::guard::now_ms;

/// Records waiting for the writer before callers wait for room (a slow disk slows calls
/// rather than losing records).
const QUEUE: usize = 65_536;
/// Most records written in one transaction.
const BATCH: usize = 4_096;
/// How long the batched writer gathers records after the first before writing them: one
/// transaction (and one trip to SQLite's thread) per window instead of one per call. A
/// record reaches the disk at most this much later; strict durability does not wait.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// How often old records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A record (boxed: the queue's slots, and every future that carries a record to it, stay
/// small) or a flush marker, with what to tell once it is written.
type Queued = (Option<Box<AuditRecord>>, Option<oneshot::Sender<()>>);

/// The audit log of a running gateway.
pub struct AuditLog {
    tx: mpsc::Sender<Queued>,
    enabled: bool,
    durability: Durability,
    sink: Arc<dyn AuditSink>,
}

impl AuditLog {
    /// Starts the writer (and the pruner) over a sink.
    pub fn start(sink: Arc<dyn AuditSink>, config: &AuditConfig) -> Arc<AuditLog> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let window = match config.durability {
            Durability::Batched => BATCH_WINDOW,
            Durability::Strict => Duration::ZERO,
        };
        tokio::spawn(write(rx, sink.clone(), window));
        let pruner = Arc::downgrade(&sink);
        let (retention, keep) = (config.retention, config.max_records);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tick.tick().await;
                let Some(sink) = pruner.upgrade() else { return };
                let before = now_ms().saturating_sub(retention.as_millis() as u64);
                match sink.prune(before, keep).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(records = n, "pruned old audit records"),
                    Err(e) => tracing::warn!(error = %e, "pruning the audit log failed"),
                }
            }
        });
        if !config.enabled {
            tracing::warn!(
                "the audit log is off ([audit] enabled = false): no decision is recorded"
            );
        }
        Arc::new(AuditLog {
            tx,
            enabled: config.enabled,
            durability: config.durability,
            sink,
        })
    }

    /// Queues a record; with strict durability, returns once it is committed.
    pub async fn record(&self, record: AuditRecord) {
        self.queue(Box::new(record)).await;
    }

    async fn queue(&self, record: Box<AuditRecord>) {
        if !self.enabled {
            return;
        }
        if self.durability == Durability::Strict {
            let (ack, done) = oneshot::channel();
            if self.tx.send((Some(record), Some(ack))).await.is_ok() {
                let _ = done.await;
            }
        } else {
            let _ = self.tx.send((Some(record), None)).await;
        }
    }

    /// Returns once every record queued before the call is written (for a graceful stop).
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send((None, Some(ack))).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Queues a record from code that cannot wait (admin events); never blocks.
    pub fn record_later(self: &Arc<Self>, record: AuditRecord) {
        self.queue_later(Box::new(record));
    }

    fn queue_later(self: &Arc<Self>, record: Box<AuditRecord>) {
        if !self.enabled {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full((Some(record), _))) =
            self.tx.try_send((Some(record), None))
        {
            let this = self.clone();
            tokio::spawn(async move { this.queue(record).await });
        }
    }

    /// The sink, for queries.
    pub fn sink(&self) -> &Arc<dyn AuditSink> {
        &self.sink
    }
}

/// The writer: takes what is queued (after `window`, to gather more), writes it in one
/// transaction, acknowledges. A failed
/// write is retried (with backoff) with the same records, so none is lost; meanwhile the
/// queue fills and, once full, callers wait.
async fn write(mut rx: mpsc::Receiver<Queued>, sink: Arc<dyn AuditSink>, window: Duration) {
    let mut batch: Vec<Queued> = Vec::new();
    // Unique ids: this writer's random 64 bits, then a sequence number (no draw per record).
    let prefix: u64 = rand::random();
    let mut sequence: u64 = 0;
    let uids = sink.needs_uids();
    while let Some(first) = rx.recv().await {
        // A flush marker is written at once; a record waits for company.
        if first.0.is_some() && !window.is_zero() {
            tokio::time::sleep(window).await;
        }
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        // Each record gets its unique id before the first attempt, so that a retry after a
        // lost answer cannot store it twice (where the store can tell, and needs it).
        let mut acks = Vec::new();
        let records: Vec<AuditRecord> = batch
            .drain(..)
            .filter_map(|(record, ack)| {
                acks.extend(ack);
                record.map(|r| *r)
            })
            .map(|mut r| {
                if uids {
                    r.uid.get_or_insert_with(|| {
                        sequence += 1;
                        // As `format!("{prefix:016x}{sequence:016x}")`, without its machinery.
                        let mut id = [0u8; 16];
                        id[..8].copy_from_slice(&prefix.to_be_bytes());
                        id[8..].copy_from_slice(&sequence.to_be_bytes());
                        crate::to_hex(&id)
                    });
                }
                r
            })
            .collect();
        let mut backoff = Duration::from_millis(50);
        while !records.is_empty()
            && let Err(e) = sink.append(&records).await
        {
            tracing::error!(error = %e, records = records.len(), "writing audit records failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

/// A call's audit record in the making, stamped with the time it ends (its `latency_us` says
/// when it began): written by [`PendingRecord::finish`], or, if the
/// request's work is dropped first (the client went away while the call was held or
/// forwarded), by its `Drop`, so that a call that may have reached the upstream is never
/// missing from the log.
pub struct PendingRecord {
    audit: Arc<AuditLog>,
    record: Option<Box<AuditRecord>>,
    started: std::time::Instant,
}

impl PendingRecord {
    /// Starts a record; `decision` is what it says if the work is dropped before it ends.
    pub fn new(audit: Arc<AuditLog>, record: AuditRecord) -> PendingRecord {
        PendingRecord {
            audit,
            record: Some(Box::new(record)),
            started: std::time::Instant::now(),
        }
    }

    /// The record, to fill in as the call goes.
    pub fn get(&mut self) -> &mut AuditRecord {
        self.record.get_or_insert_with(Box::default)
    }

    /// Writes the record (with strict durability, waits until it is committed).
    pub async fn finish(mut self) {
        if let Some(mut record) = self.record.take() {
            record.at_ms = now_ms();
            record.latency_us = Some(self.started.elapsed().as_micros() as u64);
            self.audit.queue(record).await;
        }
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.at_ms = now_ms();
            record.latency_us = Some(self.started.elapsed().as_micros() as u64);
            if record.upstream_status.is_none() {
                record.upstream_status = Some("client went away".into());
            }
            self.audit.queue_later(record);
        }
    }
}

/// The admin record of a human's decision on an approval (the call's own record follows
/// when the held call ends).
pub fn approval_decision(a: &toolgate_state::Approval, approve: bool, by: &str) -> AuditRecord {
    AuditRecord {
        at_ms: now_ms(),
        kind: "admin".into(),
        decision: if approve {
            "approval_approved"
        } else {
            "approval_refused"
        }
        .into(),
        grant: Some(by.to_owned()),
        session: Some(a.session.clone()),
        server: Some(a.server.clone()),
        tool: Some(a.tool.clone()),
        rule: Some(a.rule.clone()),
        policy_version: Some(a.policy_version.clone()),
        message: a.reason.clone(),
        args_sha256: Some(a.args_sha256.clone()),
        detail: Some(serde_json::json!({"approval": a.id, "for_grant": a.grant})),
        ..AuditRecord::default()
    }
}

/// What the audit keeps of a call's arguments: the top-level keys, the SHA-256 of the
/// arguments as sent, and the values only when the policy says `audit.values` (with its
/// `redact` paths replaced).
pub fn describe_args(
    arguments: Option<&RawValue>,
    parsed: &Value,
    spec: Option<&AuditSpec>,
) -> (Vec<String>, Option<String>, Option<Value>) {
    let Some(arguments) = arguments else {
        return (Vec::new(), None, None);
    };
    let digest = crate::manage::text_sha256(arguments.get());
    let keys = parsed
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let values = match spec {
        Some(spec) if spec.values => Some(spec.redacted(parsed)),
        _ => None,
    };
    (keys, Some(digest), values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use toolgate_wire::raw;

    #[test]
    fn arguments_are_kept_as_keys_and_a_digest_unless_the_policy_says_values() {
        let args = raw(&serde_json::json!({"path": "/etc", "password": "hunter2"}));
        let parsed = crate::guard::parse_arguments(Some(&args));
        let (keys, digest, values) = describe_args(Some(&args), &parsed, None);
        assert_eq!(keys, ["path", "password"]);
        assert_eq!(
            digest.unwrap(),
            hex::encode(Sha256::digest(args.get().as_bytes()))
        );
        assert_eq!(values, None);

        let policy = toolgate_policy::parse(
            r#"{"version": "1", "default": "deny", "audit": {"values": true, "redact": ["args.password"]}}"#,
        )
        .unwrap();
        let (_, _, values) = describe_args(Some(&args), &parsed, Some(policy.audit()));
        assert_eq!(
            values.unwrap(),
            serde_json::json!({"path": "/etc", "password": "[REDACTED]"})
        );
    }

    #[tokio::test]
    async fn strict_records_are_committed_before_record_returns() {
        let dir =
            std::env::temp_dir().join(format!("toolgate-audit-log-{}", rand::random::<u64>()));
        let sink: Arc<dyn AuditSink> = Arc::new(
            toolgate_state::SqliteState::open(&dir.join("state.db"), Duration::from_secs(2))
                .await
                .unwrap(),
        );
        let config = AuditConfig {
            durability: Durability::Strict,
            ..AuditConfig::default()
        };
        let log = AuditLog::start(sink.clone(), &config);
        for i in 0..3 {
            log.record(AuditRecord {
                at_ms: now_ms(),
                kind: "call".into(),
                decision: "allowed".into(),
                ..AuditRecord::default()
            })
            .await;
            let all = sink
                .query(&toolgate_state::AuditFilter {
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(all.len() as u64, i + 1);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
