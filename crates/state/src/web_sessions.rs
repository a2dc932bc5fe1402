//! Browser sessions of the web UI, kept with the other records: a login on one instance is good
//! on every instance sharing the database (behind a load balancer), and survives a restart.
//! A session is found by the SHA-256 of its cookie's secret; the secret itself is never stored.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::counters::{BoxFuture, StoreError};

/// A logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWebSession {
    /// Who logged in (an admin token's name, or `one-time-link`).
    pub name: String,
    /// What it may do (`viewer`, `policy_manager`, `admin`).
    pub role: String,
    /// When it ends, UTC milliseconds.
    pub expires_ms: u64,
}

/// Where browser sessions live.
pub trait WebSessionStore: Send + Sync {
    /// Keeps a session under the digest (hex) of its secret, and forgets those that ended.
    fn put<'a>(
        &'a self,
        digest: &'a str,
        session: &'a StoredWebSession,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The session under a digest, unless it has ended.
    fn get<'a>(
        &'a self,
        digest: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<StoredWebSession>, StoreError>>;
    /// Ends a session (logging out).
    fn remove<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// Browser sessions in this process's memory (tests).
#[derive(Debug, Default)]
pub struct MemoryWebSessions {
    sessions: Mutex<HashMap<String, StoredWebSession>>,
}

impl MemoryWebSessions {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, StoredWebSession>) -> T) -> T {
        f(&mut self.sessions.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl WebSessionStore for MemoryWebSessions {
    fn put<'a>(
        &'a self,
        digest: &'a str,
        session: &'a StoredWebSession,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|all| {
            all.retain(|_, s| s.expires_ms > now_ms);
            all.insert(digest.to_owned(), session.clone());
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn get<'a>(
        &'a self,
        digest: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<StoredWebSession>, StoreError>> {
        let found = self.with(|all| all.get(digest).filter(|s| s.expires_ms > now_ms).cloned());
        Box::pin(std::future::ready(Ok(found)))
    }

    fn remove<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|all| all.remove(digest));
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_web_sessions_keep_the_contract() {
        contract(&MemoryWebSessions::default()).await;
    }

    /// What every store of browser sessions must do.
    pub async fn contract(store: &dyn WebSessionStore) {
        let now = 1_795_631_502_000;
        let session = |name: &str, expires_ms| StoredWebSession {
            name: name.into(),
            role: "viewer".into(),
            expires_ms,
        };
        let alice = session("alice", now + 1_000);
        store.put("aa", &alice, now).await.unwrap();
        store
            .put("bb", &session("bob", now + 10), now)
            .await
            .unwrap();
        assert_eq!(store.get("aa", now).await.unwrap(), Some(alice.clone()));
        assert_eq!(store.get("cc", now).await.unwrap(), None);
        // Ended sessions are not found, and are forgotten at the next login.
        assert_eq!(store.get("bb", now + 10).await.unwrap(), None);
        let carol = StoredWebSession {
            role: "admin".into(),
            ..session("carol", now + 2_000)
        };
        store.put("cc", &carol, now + 20).await.unwrap();
        assert_eq!(store.get("bb", now).await.unwrap(), None, "forgotten");
        assert_eq!(store.get("cc", now + 20).await.unwrap(), Some(carol));
        // Logging out ends one session only.
        store.remove("aa").await.unwrap();
        store.remove("nothing").await.unwrap();
        assert_eq!(store.get("aa", now).await.unwrap(), None);
        assert!(store.get("cc", now).await.unwrap().is_some());
    }
}
