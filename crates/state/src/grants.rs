//! Grants kept in the state store, besides those in the configuration: created, rotated,
//! attached to a policy and revoked while gateways run (`toolgate grants`, the admin UI), and
//! seen by every instance sharing the store.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::counters::{BoxFuture, StoreError};

/// One stored grant. Its token is never stored: only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGrant {
    /// The grant's name.
    pub name: String,
    /// SHA-256 of its token, hex.
    pub token_sha256: String,
    /// Its policy file (absolute); `None` denies everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// When it was created, UTC milliseconds.
    pub created_ms: u64,
    /// When its token or policy last changed, UTC milliseconds.
    pub updated_ms: u64,
}

/// What to change in a stored grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantChange {
    /// A new token's SHA-256 (a rotation: the old token stops working).
    pub token_sha256: Option<String>,
    /// A new policy (`Some(None)` detaches it: the grant may then do nothing).
    pub policy: Option<Option<String>>,
}

/// A store of grants, shared by every gateway process that uses it.
pub trait GrantStore: Send + Sync {
    /// Every stored grant, by name.
    fn list(&self) -> BoxFuture<'_, Result<Vec<StoredGrant>, StoreError>>;
    /// A number that changes whenever a grant changes (to notice other processes' writes).
    fn generation(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Adds a grant; `false` when one of that name exists.
    fn create(&self, grant: StoredGrant) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Changes a grant; the changed grant, or `None` when there is none of that name.
    fn update<'a>(
        &'a self,
        name: &'a str,
        change: GrantChange,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<StoredGrant>, StoreError>>;
    /// Removes a grant (its token stops working at once); whether there was one.
    fn revoke<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;
}

/// Applies a change to a grant.
pub(crate) fn apply(grant: &mut StoredGrant, change: GrantChange, now_ms: u64) {
    if let Some(hash) = change.token_sha256 {
        grant.token_sha256 = hash;
    }
    if let Some(policy) = change.policy {
        grant.policy = policy;
    }
    grant.updated_ms = now_ms;
}

/// Grants in this process's memory (tests).
#[derive(Debug, Default)]
pub struct MemoryGrants {
    inner: Mutex<(u64, BTreeMap<String, StoredGrant>)>,
}

impl MemoryGrants {
    fn with<T>(&self, f: impl FnOnce(&mut (u64, BTreeMap<String, StoredGrant>)) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl GrantStore for MemoryGrants {
    fn list(&self) -> BoxFuture<'_, Result<Vec<StoredGrant>, StoreError>> {
        let all = self.with(|(_, m)| m.values().cloned().collect());
        Box::pin(std::future::ready(Ok(all)))
    }

    fn generation(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        let g = self.with(|(g, _)| *g);
        Box::pin(std::future::ready(Ok(g)))
    }

    fn create(&self, grant: StoredGrant) -> BoxFuture<'_, Result<bool, StoreError>> {
        let created = self.with(|(g, m)| {
            if m.contains_key(&grant.name) {
                return false;
            }
            m.insert(grant.name.clone(), grant);
            *g += 1;
            true
        });
        Box::pin(std::future::ready(Ok(created)))
    }

    fn update<'a>(
        &'a self,
        name: &'a str,
        change: GrantChange,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<StoredGrant>, StoreError>> {
        let changed = self.with(|(g, m)| {
            let grant = m.get_mut(name)?;
            apply(grant, change, now_ms);
            *g += 1;
            Some(grant.clone())
        });
        Box::pin(std::future::ready(Ok(changed)))
    }

    fn revoke<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let gone = self.with(|(g, m)| {
            let gone = m.remove(name).is_some();
            *g += u64::from(gone);
            gone
        });
        Box::pin(std::future::ready(Ok(gone)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn grant(name: &str, hash: &str) -> StoredGrant {
        StoredGrant {
            name: name.into(),
            token_sha256: hash.into(),
            policy: Some("/etc/toolgate/alice.json".into()),
            created_ms: 1_000,
            updated_ms: 1_000,
        }
    }

    /// What every grant store must do.
    pub async fn contract(store: &dyn GrantStore) {
        let g0 = store.generation().await.unwrap();
        assert!(store.create(grant("alice", "aa")).await.unwrap());
        assert!(
            !store.create(grant("alice", "bb")).await.unwrap(),
            "names are unique"
        );
        assert!(store.create(grant("bob", "cc")).await.unwrap());
        let g1 = store.generation().await.unwrap();
        assert!(g1 > g0);
        let all = store.list().await.unwrap();
        assert_eq!(
            all.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        assert_eq!(all[0], grant("alice", "aa"));
        // Rotation keeps the policy; detaching keeps the token.
        let rotated = store
            .update(
                "alice",
                GrantChange {
                    token_sha256: Some("dd".into()),
                    policy: None,
                },
                2_000,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rotated.token_sha256, "dd");
        assert_eq!(rotated.policy.as_deref(), Some("/etc/toolgate/alice.json"));
        assert_eq!((rotated.created_ms, rotated.updated_ms), (1_000, 2_000));
        let detached = store
            .update(
                "alice",
                GrantChange {
                    token_sha256: None,
                    policy: Some(None),
                },
                3_000,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (detached.token_sha256.as_str(), detached.policy.clone()),
            ("dd", None)
        );
        assert_eq!(store.list().await.unwrap()[0], detached);
        assert!(
            store
                .update("nobody", GrantChange::default(), 1)
                .await
                .unwrap()
                .is_none()
        );
        let g2 = store.generation().await.unwrap();
        assert!(g2 > g1);
        assert!(store.revoke("bob").await.unwrap());
        assert!(!store.revoke("bob").await.unwrap());
        assert!(store.generation().await.unwrap() > g2);
        assert_eq!(store.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn memory_grants_keep_the_contract() {
        contract(&MemoryGrants::default()).await;
    }
}
