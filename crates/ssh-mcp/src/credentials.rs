//! Credentials: which host, as whom, and how to authenticate. They hold *where* secrets are
//! (key file paths, environment variable names), never the secrets themselves, and
//! [`CredentialView`] (what `list_credentials` shows) holds even less.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::host_keys::HostKeyPolicy;

/// Where a credential came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// A `[hosts.NAME]` table of the config file.
    Config,
    /// A `Host` entry of an OpenSSH client config (`import_ssh_config = true`).
    SshConfig,
    /// `add_credential` at run time (kept in memory only).
    Runtime,
}

/// One host and the way to log in to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The name tools use (`credentialName`).
    pub name: String,
    /// Host name or address to connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Remote user.
    pub user: String,
    /// Private key files to try, in order (OpenSSH or PEM format).
    pub keys: Vec<PathBuf>,
    /// Environment variable holding the passphrase of encrypted keys.
    pub passphrase_env: Option<String>,
    /// Try the keys of the ssh-agent at `SSH_AUTH_SOCK`.
    pub agent: bool,
    /// Environment variable holding the login password.
    pub password_env: Option<String>,
    /// Environment variable holding the password fed to `sudo -S` (falls back to `password_env`).
    pub sudo_password_env: Option<String>,
    /// Credential whose connection carries this one (`direct-tcpip`, like `ssh -J`).
    pub jump: Option<String>,
    /// Host-key policy.
    pub host_key: HostKeyPolicy,
    /// Limit on TCP connect + handshake + authentication.
    pub connect_timeout: Duration,
    /// Addresses other than loopback that remote tunnels may ask the server to bind
    /// (`remote_bind_addresses`; empty: 127.0.0.1, ::1 and localhost only).
    pub remote_bind: Vec<String>,
    /// Where it came from.
    pub origin: Origin,
}

impl Credential {
    /// The auth methods configured, as words for messages and listings (no secrets).
    pub fn auth_methods(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("key {}", k.display()))
            .collect();
        if self.agent {
            out.push("agent".into());
        }
        if self.password_env.is_some() {
            out.push("password".into());
        }
        out
    }
}

/// What `list_credentials` shows of a credential: no key contents, passwords or environment values.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialView {
    /// Name to pass as `credentialName`.
    pub name: String,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Remote user.
    pub username: String,
    /// Authentication methods: `key <path>`, `agent`, `password` (the password itself is never shown).
    pub auth: Vec<String>,
    /// Jump credential, if any.
    pub jump: Option<String>,
    /// `strict`, `accept-new` or the pinned fingerprint.
    pub host_key_policy: String,
    /// Whether `sudo: true` has a password to feed.
    pub sudo_password: bool,
    /// Where it was defined.
    pub origin: Origin,
    /// Whether a pooled connection is open now.
    pub connected: bool,
}

impl CredentialView {
    /// The listing of `credential`; `connected` comes from the pool.
    pub fn of(credential: &Credential, connected: bool) -> Self {
        Self {
            name: credential.name.clone(),
            host: credential.host.clone(),
            port: credential.port,
            username: credential.user.clone(),
            auth: credential.auth_methods(),
            jump: credential.jump.clone(),
            host_key_policy: credential.host_key.to_string(),
            sudo_password: credential.sudo_password_env.is_some()
                || credential.password_env.is_some(),
            origin: credential.origin,
            connected,
        }
    }
}

/// Errors of credential lookups and changes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// No credential of that name.
    #[error("no credential named \"{name}\"; known: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names there are, comma-separated (or "none").
        known: String,
    },
    /// `add_credential` with a name in use.
    #[error("a credential named \"{0}\" exists already; remove it first")]
    Exists(String),
    /// A name clients or logs would mangle.
    #[error("credential name \"{0}\" is not allowed: use 1 to 64 of A-Z a-z 0-9 _ . - @ :")]
    BadName(String),
    /// `jump` names nothing.
    #[error("credential \"{name}\": jump credential \"{jump}\" does not exist")]
    UnknownJump {
        /// The credential.
        name: String,
        /// Its jump.
        jump: String,
    },
    /// Jumps that loop.
    #[error("credential \"{0}\": its jump hosts form a loop")]
    JumpLoop(String),
    /// Removing a jump host others still use.
    #[error("credential \"{name}\" is the jump host of {users}; remove those first")]
    InUse {
        /// The credential.
        name: String,
        /// Credentials that jump through it.
        users: String,
    },
}

/// Checks a credential name: short, and made of characters every client and log keeps intact.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-@:".contains(c))
}

/// Checks that every jump exists and no chain of jumps loops.
pub fn check_jumps(all: &BTreeMap<String, Arc<Credential>>) -> Result<(), CredentialError> {
    for credential in all.values() {
        let mut seen = vec![credential.name.as_str()];
        let mut current = credential;
        while let Some(jump) = &current.jump {
            let next = all.get(jump).ok_or_else(|| CredentialError::UnknownJump {
                name: current.name.clone(),
                jump: jump.clone(),
            })?;
            if seen.contains(&next.name.as_str()) {
                return Err(CredentialError::JumpLoop(credential.name.clone()));
            }
            seen.push(&next.name);
            current = next;
        }
    }
    Ok(())
}

/// The credentials in use, shared by all tools.
#[derive(Debug, Default)]
pub struct CredentialStore {
    inner: RwLock<BTreeMap<String, Arc<Credential>>>,
}

impl CredentialStore {
    /// A store holding `credentials` (already validated by the config loader).
    pub fn new(credentials: impl IntoIterator<Item = Credential>) -> Self {
        let map = credentials
            .into_iter()
            .map(|c| (c.name.clone(), Arc::new(c)))
            .collect();
        Self {
            inner: RwLock::new(map),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Credential>>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The credential called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Credential>, CredentialError> {
        let map = self.read();
        map.get(name)
            .cloned()
            .ok_or_else(|| CredentialError::Unknown {
                name: name.to_owned(),
                known: if map.is_empty() {
                    "none".into()
                } else {
                    map.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            })
    }

    /// All credentials, by name.
    pub fn list(&self) -> Vec<Arc<Credential>> {
        self.read().values().cloned().collect()
    }

    /// Adds a credential whose name is free and whose jump exists.
    pub fn add(&self, credential: Credential) -> Result<Arc<Credential>, CredentialError> {
        if !valid_name(&credential.name) {
            return Err(CredentialError::BadName(credential.name));
        }
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(&credential.name) {
            return Err(CredentialError::Exists(credential.name));
        }
        let credential = Arc::new(credential);
        map.insert(credential.name.clone(), credential.clone());
        if let Err(e) = check_jumps(&map) {
            map.remove(&credential.name);
            return Err(e);
        }
        Ok(credential)
    }

    /// Removes a credential no other credential jumps through.
    pub fn remove(&self, name: &str) -> Result<Arc<Credential>, CredentialError> {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let users: Vec<String> = map
            .values()
            .filter(|c| c.jump.as_deref() == Some(name))
            .map(|c| c.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(CredentialError::InUse {
                name: name.to_owned(),
                users: users.join(", "),
            });
        }
        map.remove(name).ok_or_else(|| CredentialError::Unknown {
            name: name.to_owned(),
            known: map.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }
}
