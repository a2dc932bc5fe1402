//! User authentication on a fresh connection: key files, then the ssh-agent, then a password,
//! in the order OpenSSH tries them. Secrets are read from files and the environment at the moment
//! they are needed and are never logged or returned.

use std::sync::Arc;

use russh::client::Handle;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, PrivateKeyWithHashAlg, load_secret_key};
use russh::{MethodKind, client::AuthResult};
use thiserror::Error;

use crate::connection::ClientHandler;
use crate::credentials::Credential;

/// Authentication did not succeed. The message lists what was tried (paths and method names,
/// no secrets) and what the server would accept.
#[derive(Debug, Error, Clone)]
#[error(
    "authentication failed for {user}@{host}:{port}: tried {tried}; the server accepts: {accepts}"
)]
pub struct AuthError {
    /// Remote user.
    pub user: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// What was tried and how each attempt ended.
    pub tried: String,
    /// Methods the server listed in its last failure.
    pub accepts: String,
}

fn env_secret(var: &str) -> Result<String, String> {
    std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
}

fn accepts(result: &AuthResult) -> Option<String> {
    match result {
        AuthResult::Success => None,
        AuthResult::Failure {
            remaining_methods, ..
        } => Some(
            remaining_methods
                .iter()
                .map(|m: &MethodKind| <&str>::from(m))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    }
}

/// Authenticates `handle` as `credential.user`. Returns `Ok(())` on success.
pub(crate) async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    credential: &Credential,
) -> Result<(), AuthError> {
    let mut tried: Vec<String> = Vec::new();
    let mut server_accepts = String::from("(unknown)");
    let user = credential.user.as_str();

    for path in &credential.keys {
        let passphrase = match &credential.passphrase_env {
            Some(var) => match env_secret(var) {
                Ok(p) => Some(p),
                Err(e) => {
                    tried.push(format!("key {} (passphrase: {e})", path.display()));
                    continue;
                }
            },
            None => None,
        };
        let key = match load_secret_key(path, passphrase.as_deref()) {
            Ok(k) => k,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                tried.push(format!(
                    "key {} (encrypted: set passphrase_env to the variable holding its passphrase)",
                    path.display()
                ));
                continue;
            }
            Err(e) => {
                tried.push(format!("key {} (cannot load: {e})", path.display()));
                continue;
            }
        };
        let hash = if matches!(key.algorithm(), Algorithm::Rsa { .. }) {
            handle
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten()
        } else {
            None
        };
        match handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
        {
            Ok(AuthResult::Success) => return Ok(()),
            Ok(result) => {
                server_accepts = accepts(&result).unwrap_or_default();
                tried.push(format!("key {} (rejected)", path.display()));
            }
            Err(e) => tried.push(format!("key {} ({e})", path.display())),
        }
    }

    if credential.agent {
        match AgentClient::connect_env().await {
            Err(e) => tried.push(format!("ssh-agent ({e})")),
            Ok(mut agent) => match agent.request_identities().await {
                Err(e) => tried.push(format!("ssh-agent ({e})")),
                Ok(ids) if ids.is_empty() => tried.push("ssh-agent (holds no keys)".into()),
                Ok(ids) => {
                    let count = ids.len();
                    for id in ids {
                        let key = id.public_key().into_owned();
                        let hash = if matches!(key.algorithm(), Algorithm::Rsa { .. }) {
                            handle
                                .best_supported_rsa_hash()
                                .await
                                .ok()
                                .flatten()
                                .flatten()
                        } else {
                            None
                        };
                        match handle
                            .authenticate_publickey_with(user, key, hash, &mut agent)
                            .await
                        {
                            Ok(AuthResult::Success) => return Ok(()),
                            Ok(result) => server_accepts = accepts(&result).unwrap_or_default(),
                            Err(e) => tracing::debug!("agent key refused: {e}"),
                        }
                    }
                    tried.push(format!("ssh-agent ({count} keys, all rejected)"));
                }
            },
        }
    }

    if let Some(var) = &credential.password_env {
        match env_secret(var) {
            Err(e) => tried.push(format!("password ({e})")),
            Ok(password) => match handle.authenticate_password(user, password).await {
                Ok(AuthResult::Success) => return Ok(()),
                Ok(result) => {
                    server_accepts = accepts(&result).unwrap_or_default();
                    tried.push("password (rejected)".into());
                }
                Err(e) => tried.push(format!("password ({e})")),
            },
        }
    }

    Err(AuthError {
        user: credential.user.clone(),
        host: credential.host.clone(),
        port: credential.port,
        tried: if tried.is_empty() {
            "nothing (no key, agent or password configured)".into()
        } else {
            tried.join(", ")
        },
        accepts: server_accepts,
    })
}
