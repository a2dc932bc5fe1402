//! Grants: bearer tokens given to agents, stored only as SHA-256 and compared in constant time.

use std::path::PathBuf;
use std::sync::Arc;

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

/// The grants the gateway accepts.
#[derive(Debug, Default)]
pub struct Grants {
    entries: Vec<([u8; 32], Arc<Grant>)>,
}

impl Grants {
    /// Builds the table from the configuration.
    pub fn new(configs: &[GrantConfig]) -> Grants {
        Grants {
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
        let mut found = None;
        for (hash, grant) in &self.entries {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(grant.clone());
            }
        }
        found
    }

    /// The grant with this name (for `toolgate stdio --grant NAME`, where whoever can start the
    /// process can read the config anyway).
    pub fn by_name(&self, name: &str) -> Option<Arc<Grant>> {
        self.entries
            .iter()
            .find(|(_, g)| &*g.name == name)
            .map(|(_, g)| g.clone())
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
    format!("tg_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
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
}
