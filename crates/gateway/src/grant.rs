//! Grants: bearer tokens given to agents, stored only as SHA-256 and compared in constant time.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::GrantConfig;

/// An authenticated grant, shared by the sessions it opens.
#[derive(Debug)]
pub struct Grant {
    /// The grant's name, as in the config and the audit log.
    pub name: Arc<str>,
    /// Its policy file; `None` denies everything.
    pub policy: Option<PathBuf>,
}

/// A token's hash and its grant.
type Entry = ([u8; 32], Arc<Grant>);

/// The grants the gateway accepts: those of the configuration, and those in the state store
/// (`toolgate grants`), which change while it runs.
#[derive(Debug, Default)]
pub struct Grants {
    entries: Vec<Entry>,
    stored: RwLock<Vec<Entry>>,
}

impl Grants {
    /// Builds the table from the configuration.
    pub fn new(configs: &[GrantConfig]) -> Grants {
        Grants {
            stored: RwLock::new(Vec::new()),
            entries: configs
                .iter()
                .map(|g| {
                    (
                        g.token_sha256,
                        Arc::new(Grant {
                            name: Arc::from(g.name.as_str()),
                            policy: g.policy.clone(),
                        }),
                    )
                })
                .collect(),
        }
    }

    /// Finds the grant a bearer token belongs to. Every entry is compared, in constant time,
    /// so the answer's timing tells nothing about which hash came close.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Grant>> {
        let digest = token_digest(token);
        let stored = self.stored.read().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        for (hash, grant) in self.entries.iter().chain(stored.iter()) {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(grant.clone());
            }
        }
        found
    }

    /// The grant with this name (for `toolgate stdio --grant NAME`, where whoever can start the
    /// process can read the config anyway).
    pub fn by_name(&self, name: &str) -> Option<Arc<Grant>> {
        let stored = self.stored.read().unwrap_or_else(|e| e.into_inner());
        self.entries
            .iter()
            .chain(stored.iter())
            .find(|(_, g)| &*g.name == name)
            .map(|(_, g)| g.clone())
    }

    /// Whether a grant of this name is in the configuration (stored grants cannot take it).
    pub fn configured(&self, name: &str) -> bool {
        self.entries.iter().any(|(_, g)| &*g.name == name)
    }

    /// Replaces the stored grants with `stored` (a configured name wins; a hash that is not 64
    /// hex digits is skipped). Returns the names whose grants went away or changed policy:
    /// their open sessions must end.
    pub fn set_stored(&self, stored: &[toolgate_state::StoredGrant]) -> Vec<Arc<str>> {
        let mut table = self.stored.write().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::with_capacity(stored.len());
        for s in stored {
            if self.configured(&s.name) {
                tracing::warn!(grant = %s.name, "a stored grant has the name of a configured one; the configured one is used");
                continue;
            }
            let Some(hash) = hex::decode(&s.token_sha256)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
            else {
                tracing::error!(grant = %s.name, "a stored grant's token_sha256 is not 64 hex digits; skipped");
                continue;
            };
            let policy = s.policy.as_ref().map(PathBuf::from);
            // The same grant (same policy) keeps its identity: its sessions go on.
            let grant = table
                .iter()
                .find(|(_, g)| *g.name == *s.name && g.policy == policy)
                .map(|(_, g)| g.clone())
                .unwrap_or_else(|| {
                    Arc::new(Grant {
                        name: Arc::from(s.name.as_str()),
                        policy,
                    })
                });
            next.push((hash, grant));
        }
        let ended = table
            .iter()
            .filter(|(_, old)| !next.iter().any(|(_, new)| Arc::ptr_eq(old, new)))
            .map(|(_, g)| g.name.clone())
            .collect();
        *table = next;
        ended
    }

    /// Every grant, configured ones first (for the admin API).
    pub fn all(&self) -> Vec<Arc<Grant>> {
        let stored = self.stored.read().unwrap_or_else(|e| e.into_inner());
        self.entries
            .iter()
            .chain(stored.iter())
            .map(|(_, g)| g.clone())
            .collect()
    }

    /// Every policy file a grant names.
    pub fn policy_paths(&self) -> Vec<PathBuf> {
        let stored = self.stored.read().unwrap_or_else(|e| e.into_inner());
        self.entries
            .iter()
            .chain(stored.iter())
            .filter_map(|(_, g)| g.policy.clone())
            .collect()
    }
}

/// SHA-256 of a token, as stored in the config.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token: 256 bits, hex-encoded, prefixed so that secret scanners recognize it.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("tg_{}", crate::to_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_token_authenticates_only_its_own_grant() {
        let token = new_token();
        let grants = Grants::new(&[
            GrantConfig {
                name: "a".into(),
                token_sha256: token_digest("other"),
                policy: None,
            },
            GrantConfig {
                name: "b".into(),
                token_sha256: token_digest(&token),
                policy: None,
            },
        ]);
        assert_eq!(&*grants.authenticate(&token).unwrap().name, "b");
        assert!(grants.authenticate("tg_guess").is_none());
        assert_eq!(token.len(), 3 + 64);
    }

    fn stored(name: &str, token: &str, policy: &str) -> toolgate_state::StoredGrant {
        toolgate_state::StoredGrant {
            name: name.into(),
            token_sha256: crate::to_hex(&token_digest(token)),
            policy: Some(policy.into()),
            created_ms: 1,
            updated_ms: 1,
        }
    }

    #[test]
    fn stored_grants_join_the_configured_ones_and_changes_end_their_sessions() {
        let grants = Grants::new(&[GrantConfig {
            name: "alice".into(),
            token_sha256: token_digest("alice-token"),
            policy: None,
        }]);
        let ended = grants.set_stored(&[
            stored("carol", "carol-token", "/p/carol.json"),
            stored("alice", "impostor", "/p/any.json"),
        ]);
        assert!(ended.is_empty());
        let carol = grants.authenticate("carol-token").unwrap();
        assert_eq!(carol.policy.as_deref(), Some(Path::new("/p/carol.json")));
        assert!(
            grants.authenticate("impostor").is_none(),
            "a configured name wins"
        );
        assert_eq!(&*grants.authenticate("alice-token").unwrap().name, "alice");
        // A rotation keeps the grant (its sessions go on); the old token stops working.
        let ended = grants.set_stored(&[stored("carol", "carol-2", "/p/carol.json")]);
        assert!(ended.is_empty());
        assert!(grants.authenticate("carol-token").is_none());
        assert!(Arc::ptr_eq(
            &grants.authenticate("carol-2").unwrap(),
            &carol
        ));
        // Another policy, or a revocation, ends its sessions.
        let ended = grants.set_stored(&[stored("carol", "carol-2", "/p/other.json")]);
        assert_eq!(ended, [Arc::from("carol")]);
        let ended = grants.set_stored(&[]);
        assert_eq!(ended, [Arc::from("carol")]);
        assert!(grants.by_name("carol").is_none());
    }
}
