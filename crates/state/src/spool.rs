//! A disk spool in front of a remote audit sink: when the database cannot take a batch, the
//! batch is written to a local file (bounded) and replayed, in order, once the database is
//! back. Records are not lost while PostgreSQL is down, and the gateway goes on serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::audit::{AuditFilter, AuditRecord, AuditSink, AuditTally};
use crate::counters::{BoxFuture, StoreError};

/// How often a non-empty spool tries the database again.
const REPLAY_INTERVAL: Duration = Duration::from_millis(500);
/// How long a batch may wait for the database before it goes to disk instead.
const DIRECT_TIMEOUT: Duration = Duration::from_secs(1);

/// An audit sink that spools to disk while its inner sink fails.
pub struct SpooledAudit {
    inner: Arc<dyn AuditSink>,
    dir: PathBuf,
    max_bytes: u64,
    /// Held while deciding between the database and the spool, so that records reach the
    /// database in the order they were written (a batch goes to disk while older ones wait
    /// there). Never held while the database is waited for on behalf of the spool.
    lock: Mutex<()>,
    /// The name of the last spool file made by this process (names sort by time).
    last_name: std::sync::Mutex<u128>,
}

impl std::fmt::Debug for SpooledAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpooledAudit")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

fn io(context: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("audit spool: {context} {}: {e}", path.display()))
}

impl SpooledAudit {
    /// Spools into `dir` (created if needed), at most `max_bytes` of records. With `replay`,
    /// starts moving what waits there (an earlier run's too) into the database; one process
    /// per directory should (the gateway; not a CLI command sharing its directory).
    pub fn start(
        inner: Arc<dyn AuditSink>,
        dir: &Path,
        max_bytes: u64,
        replay: bool,
    ) -> Result<Arc<SpooledAudit>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        let spool = Arc::new(SpooledAudit {
            inner,
            dir: dir.to_owned(),
            max_bytes,
            lock: Mutex::new(()),
            last_name: std::sync::Mutex::new(0),
        });
        if !replay {
            return Ok(spool);
        }
        let weak = Arc::downgrade(&spool);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REPLAY_INTERVAL).await;
                let Some(spool) = weak.upgrade() else { return };
                spool.replay().await;
            }
        });
        Ok(spool)
    }

    /// Spool files, oldest first, with their sizes.
    fn files(&self) -> Result<Vec<(PathBuf, u64)>, StoreError> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io("cannot read", &self.dir, e))? {
            let entry = entry.map_err(|e| io("cannot read", &self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with("audit-") && name.ends_with(".jsonl") {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                files.push((entry.path(), size));
            }
        }
        files.sort();
        Ok(files)
    }

    /// How many bytes wait in the spool.
    pub fn pending_bytes(&self) -> u64 {
        self.files()
            .map(|f| f.iter().map(|(_, s)| s).sum())
            .unwrap_or(0)
    }

    /// Writes a batch to a new spool file, durably (written, synced, then renamed in).
    /// The file is written on the blocking pool: a sync to disk takes milliseconds, which
    /// would stall every call on a gateway serving on one thread.
    async fn spill(
        &self,
        records: &[AuditRecord],
        files: &[(PathBuf, u64)],
    ) -> Result<(), StoreError> {
        let mut text = String::new();
        for r in records {
            let line = serde_json::to_string(r)
                .map_err(|e| StoreError::Unavailable(format!("audit spool: {e}")))?;
            text.push_str(&line);
            text.push('\n');
        }
        let used: u64 = files.iter().map(|(_, s)| s).sum();
        if used + text.len() as u64 > self.max_bytes {
            return Err(StoreError::Unavailable(format!(
                "the audit database is unreachable and the spool in {} is full ({used} bytes)",
                self.dir.display()
            )));
        }
        // Named by time (then process and chance), so that files of processes sharing the
        // directory sort in the order they were written and never collide.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seq = {
            let mut last = self.last_name.lock().unwrap_or_else(|e| e.into_inner());
            *last = now.max(*last + 1);
            *last
        };
        let tag = format!(
            "{seq:030}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let path = self.dir.join(format!("audit-{tag}.jsonl"));
        let temp = self.dir.join(format!(".audit-{tag}.tmp"));
        let (dir, shown) = (self.dir.clone(), path.clone());
        let write = move || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            std::fs::File::open(&dir)?.sync_all()
        };
        tokio::task::spawn_blocking(write)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| io("cannot write", &shown, e))
    }

    /// Moves spooled batches into the database, oldest first, until one fails. A file is
    /// deleted only once the database has it, so new batches keep going to disk (behind it)
    /// meanwhile, without waiting for the database.
    async fn replay(&self) {
        let Ok(files) = self.files() else { return };
        for (path, _) in files {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                // Another process sharing the directory replayed it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read an audit spool file");
                    return;
                }
            };
            let records: Result<Vec<AuditRecord>, String> = Ok(text).and_then(|text: String| {
                text.lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| serde_json::from_str(l).map_err(|e| e.to_string()))
                    .collect()
            });
            let records = match records {
                Ok(r) => r,
                Err(e) => {
                    // A damaged file must not block the ones behind it forever; keep it aside.
                    tracing::error!(file = %path.display(), error = %e, "unreadable audit spool file set aside");
                    let _ = std::fs::rename(&path, path.with_extension("damaged"));
                    continue;
                }
            };
            let count = records.len();
            match self.inner.append(&records).await {
                Ok(()) => {
                    let _ = std::fs::remove_file(&path);
                    tracing::info!(
                        records = count,
                        "spooled audit records written to the database"
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the audit database is still unreachable");
                    return;
                }
            }
        }
    }
}

impl AuditSink for SpooledAudit {
    fn append<'a>(&'a self, records: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let _order = self.lock.lock().await;
            let files = self.files()?;
            if files.is_empty() {
                match tokio::time::timeout(DIRECT_TIMEOUT, self.inner.append(records)).await {
                    Ok(Ok(())) => return Ok(()),
                    // If it went in after all, the replay is stored once (records' uids).
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, records = records.len(), "audit database unreachable; spooling to disk")
                    }
                    Err(_) => {
                        tracing::warn!(
                            records = records.len(),
                            "audit database slow to answer; spooling to disk"
                        )
                    }
                }
            }
            // Behind older spooled records, or the database failed: keep the order.
            self.spill(records, &files).await
        })
    }

    fn query<'a>(
        &'a self,
        filter: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>> {
        self.inner.query(filter)
    }

    fn prune(&self, before_ms: u64, keep: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.prune(before_ms, keep)
    }

    fn tally(&self, since_ms: u64) -> BoxFuture<'_, Result<Vec<AuditTally>, StoreError>> {
        self.inner.tally(since_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::MemoryAudit;

    /// A sink that can be switched off, like a database going down.
    struct Flaky {
        up: AtomicBool,
        inner: MemoryAudit,
    }

    impl AuditSink for Flaky {
        fn append<'a>(
            &'a self,
            records: &'a [AuditRecord],
        ) -> BoxFuture<'a, Result<(), StoreError>> {
            if self.up.load(Ordering::SeqCst) {
                self.inner.append(records)
            } else {
                Box::pin(std::future::ready(Err(StoreError::Unavailable(
                    "down".into(),
                ))))
            }
        }
        fn query<'a>(
            &'a self,
            filter: &'a AuditFilter,
        ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>> {
            self.inner.query(filter)
        }
        fn prune(&self, before_ms: u64, keep: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
            self.inner.prune(before_ms, keep)
        }

        fn tally(&self, since_ms: u64) -> BoxFuture<'_, Result<Vec<AuditTally>, StoreError>> {
            self.inner.tally(since_ms)
        }
    }

    fn record(n: u64) -> AuditRecord {
        AuditRecord {
            at_ms: n,
            kind: "call".into(),
            decision: "allowed".into(),
            ..AuditRecord::default()
        }
    }

    #[tokio::test]
    async fn records_wait_on_disk_while_the_database_is_down_and_arrive_in_order() {
        let dir = std::env::temp_dir().join(format!("toolgate-spool-{}", rand::random::<u64>()));
        let flaky = Arc::new(Flaky {
            up: AtomicBool::new(false),
            inner: MemoryAudit::default(),
        });
        let spool = SpooledAudit::start(flaky.clone(), &dir, 1 << 20, true).unwrap();
        spool.append(&[record(1), record(2)]).await.unwrap();
        spool.append(&[record(3)]).await.unwrap();
        assert!(spool.pending_bytes() > 0);
        // Bounded: a batch beyond the limit is refused, not dropped silently.
        let small = SpooledAudit::start(flaky.clone(), &dir.join("small"), 10, true).unwrap();
        assert!(small.append(&[record(9)]).await.is_err());
        flaky.up.store(true, Ordering::SeqCst);
        // Records keep their order even when new ones arrive before the replay.
        spool.append(&[record(4)]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while spool.pending_bytes() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap();
        let all = flaky
            .query(&AuditFilter {
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let times: Vec<u64> = all.iter().map(|r| r.at_ms).collect();
        assert_eq!(times, [1, 2, 3, 4]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_spool_left_by_a_killed_process_is_replayed_at_start() {
        let dir = std::env::temp_dir().join(format!("toolgate-spool-{}", rand::random::<u64>()));
        let down = Arc::new(Flaky {
            up: AtomicBool::new(false),
            inner: MemoryAudit::default(),
        });
        let spool = SpooledAudit::start(down, &dir, 1 << 20, true).unwrap();
        spool.append(&[record(7)]).await.unwrap();
        drop(spool);
        let up = Arc::new(Flaky {
            up: AtomicBool::new(true),
            inner: MemoryAudit::default(),
        });
        let again = SpooledAudit::start(up.clone(), &dir, 1 << 20, true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while again.pending_bytes() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap();
        let all = up
            .query(&AuditFilter {
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
