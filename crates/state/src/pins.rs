//! Pinned tool definitions: what an operator (or first sight) trusted, and changes waiting
//! for review.
//!
//! One record per `(server, tool)`; the server's own identity (`serverInfo` and
//! `instructions`) is the record with the empty tool name. A record holds the approved
//! fingerprint and definition, and at most one pending one: a changed definition (the tool is
//! quarantined until it is approved) or, under strict pinning, a first sight.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::counters::{BoxFuture, StoreError};

/// A definition: its fingerprint and the canonical JSON it was computed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// `sha256:` + hex.
    pub fingerprint: String,
    /// The pinned fields, canonical JSON.
    pub definition: String,
    /// When it was seen (approved: when it was approved), UTC milliseconds.
    pub at_ms: u64,
}

/// What the store knows of one tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRecord {
    /// The configured server name.
    pub server: String,
    /// The tool's name on the server; empty for the server's identity.
    pub tool: String,
    /// The trusted definition, if any.
    pub approved: Option<Pinned>,
    /// A definition seen and not trusted yet.
    pub pending: Option<Pinned>,
    /// When the tool was first seen, UTC milliseconds.
    pub first_seen_ms: u64,
}

impl PinRecord {
    /// Whether the definition with this fingerprint may be used.
    pub fn trusts(&self, fingerprint: &str) -> bool {
        self.approved
            .as_ref()
            .is_some_and(|a| a.fingerprint == fingerprint)
    }

    /// `pinned`, `changed` (approved, with a different definition pending) or `new`
    /// (nothing approved yet).
    pub fn status(&self) -> &'static str {
        match (&self.approved, &self.pending) {
            (Some(_), None) => "pinned",
            (Some(_), Some(_)) => "changed",
            (None, _) => "new",
        }
    }
}

/// A store of pins, shared by every gateway process that uses it.
pub trait PinStore: Send + Sync {
    /// Every record.
    fn load(&self) -> BoxFuture<'_, Result<Vec<PinRecord>, StoreError>>;
    /// A number that changes whenever any record changes (to notice other processes' writes).
    fn generation(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Records a first sight: `seen` becomes approved (`trust = true`, trust on first use) or
    /// pending. A record that already exists is left as it is. Returns the stored record.
    fn first_sight<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
        seen: Pinned,
        trust: bool,
    ) -> BoxFuture<'a, Result<PinRecord, StoreError>>;
    /// Records a definition that differs from the approved one as pending (replacing an older
    /// pending one). Returns the stored record.
    fn record_change<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
        seen: Pinned,
    ) -> BoxFuture<'a, Result<PinRecord, StoreError>>;
    /// Approves the pending definition, if its fingerprint is `fingerprint` (when given: so
    /// that a reviewer approves what they reviewed). `None` when there was nothing to approve.
    fn approve<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
        fingerprint: Option<&'a str>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<PinRecord>, StoreError>>;
    /// Forgets a record (the tool is pinned afresh at its next sight). Whether one existed.
    fn forget<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
}

/// Records by `(server, tool)`.
type Records = BTreeMap<(String, String), PinRecord>;

/// Pins in memory, for tests and `pinning` without a state directory.
#[derive(Debug, Default)]
pub struct MemoryPins {
    /// The generation and the records.
    inner: Mutex<(u64, Records)>,
}

impl MemoryPins {
    /// An empty store.
    pub fn new() -> MemoryPins {
        MemoryPins::default()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<(String, String), PinRecord>) -> (T, bool),
    ) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (value, changed) = f(&mut inner.1);
        if changed {
            inner.0 += 1;
        }
        value
    }
}

fn ready<T: Send + 'static>(v: T) -> BoxFuture<'static, T> {
    Box::pin(std::future::ready(v))
}

impl PinStore for MemoryPins {
    fn load(&self) -> BoxFuture<'_, Result<Vec<PinRecord>, StoreError>> {
        ready(Ok(self.with(|m| (m.values().cloned().collect(), false))))
    }

    fn generation(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        ready(Ok(self.inner.lock().unwrap_or_else(|e| e.into_inner()).0))
    }

    fn first_sight<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
        seen: Pinned,
        trust: bool,
    ) -> BoxFuture<'a, Result<PinRecord, StoreError>> {
        ready(Ok(self.with(|m| {
            let key = (server.to_owned(), tool.to_owned());
            if let Some(r) = m.get(&key) {
                return (r.clone(), false);
            }
            let record = PinRecord {
                server: server.to_owned(),
                tool: tool.to_owned(),
                first_seen_ms: seen.at_ms,
                approved: trust.then(|| seen.clone()),
                pending: (!trust).then_some(seen),
            };
            m.insert(key, record.clone());
            (record, true)
        })))
    }

    fn record_change<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
        seen: Pinned,
    ) -> BoxFuture<'a, Result<PinRecord, StoreError>> {
        ready(Ok(self.with(|m| {
            let record = m
                .entry((server.to_owned(), tool.to_owned()))
                .or_insert_with(|| PinRecord {
                    server: server.to_owned(),
                    tool: tool.to_owned(),
                    approved: None,
                    pending: None,
                    first_seen_ms: seen.at_ms,
                });
            let same = record
                .pending
                .as_ref()
                .is_some_and(|p| p.fingerprint == seen.fingerprint);
            if !same {
                record.pending = Some(seen);
            }
            (record.clone(), !same)
        })))
    }

    fn approve<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
        fingerprint: Option<&'a str>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<PinRecord>, StoreError>> {
        ready(Ok(self.with(|m| {
            let Some(record) = m.get_mut(&(server.to_owned(), tool.to_owned())) else {
                return (None, false);
            };
            let Some(pending) = record
                .pending
                .take_if(|p| fingerprint.is_none_or(|f| f == p.fingerprint))
            else {
                return (None, false);
            };
            record.approved = Some(Pinned {
                at_ms: now_ms,
                ..pending
            });
            (Some(record.clone()), true)
        })))
    }

    fn forget<'a>(
        &'a self,
        server: &'a str,
        tool: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(Ok(self.with(|m| {
            let removed = m.remove(&(server.to_owned(), tool.to_owned())).is_some();
            (removed, removed)
        })))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn seen(fp: &str, at: u64) -> Pinned {
        Pinned {
            fingerprint: fp.into(),
            definition: format!("{{\"fp\":\"{fp}\"}}"),
            at_ms: at,
        }
    }

    /// What every pin store must do.
    pub async fn contract(store: &dyn PinStore) {
        let g0 = store.generation().await.unwrap();
        // Trust on first use; a second first sight changes nothing.
        let r = store
            .first_sight("s", "t", seen("a", 1), true)
            .await
            .unwrap();
        assert_eq!(r.status(), "pinned");
        assert!(r.trusts("a"));
        let g1 = store.generation().await.unwrap();
        assert_ne!(g0, g1);
        let r = store
            .first_sight("s", "t", seen("b", 2), true)
            .await
            .unwrap();
        assert!(r.trusts("a") && !r.trusts("b"));
        assert_eq!(store.generation().await.unwrap(), g1);
        // A change is pending until approved; approval checks the fingerprint reviewed.
        let r = store.record_change("s", "t", seen("b", 3)).await.unwrap();
        assert_eq!(r.status(), "changed");
        assert!(r.trusts("a"));
        assert_eq!(r.pending.as_ref().unwrap().definition, "{\"fp\":\"b\"}");
        // The same change seen again is no news: the pending record and the generation stay.
        let g2 = store.generation().await.unwrap();
        let r = store.record_change("s", "t", seen("b", 4)).await.unwrap();
        assert_eq!(r.pending.as_ref().unwrap().at_ms, 3);
        assert_eq!(store.generation().await.unwrap(), g2);
        assert_eq!(store.approve("s", "t", Some("c"), 4).await.unwrap(), None);
        let r = store
            .approve("s", "t", Some("b"), 5)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status(), "pinned");
        assert!(r.trusts("b"));
        assert_eq!(r.approved.as_ref().unwrap().at_ms, 5);
        assert_eq!(store.approve("s", "t", None, 6).await.unwrap(), None);
        // Strict: a first sight is pending, trusted only once approved.
        let r = store
            .first_sight("s", "u", seen("x", 7), false)
            .await
            .unwrap();
        assert_eq!(r.status(), "new");
        assert!(!r.trusts("x"));
        let r = store.approve("s", "u", None, 8).await.unwrap().unwrap();
        assert!(r.trusts("x"));
        // The server's identity is a record like the others.
        store
            .first_sight("s", "", seen("srv", 9), true)
            .await
            .unwrap();
        let mut all = store.load().await.unwrap();
        all.sort_by(|a, b| a.tool.cmp(&b.tool));
        let names: Vec<_> = all.iter().map(|r| r.tool.as_str()).collect();
        assert_eq!(names, ["", "t", "u"]);
        assert!(store.forget("s", "u").await.unwrap());
        assert!(!store.forget("s", "u").await.unwrap());
        assert_eq!(store.load().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn memory_pins_keep_the_contract() {
        contract(&MemoryPins::new()).await;
    }
}
