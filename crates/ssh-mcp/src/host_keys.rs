//! Host-key checking: OpenSSH `known_hosts` (plain, hashed `|1|...` and `[host]:port` entries,
//! through `russh::keys::known_hosts`), trust on first use, and pinned fingerprints.
//!
//! The SSH MCP server this replaces accepted any host key, so anyone on the path could read the
//! agent's commands and answer them. Here a key is trusted only when it is recorded (or pinned),
//! and a key that differs from the recorded one is refused under every policy: a changed key is a
//! human's call, never the agent's.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use russh::keys::known_hosts::known_host_keys_path;
use russh::keys::{Algorithm, HashAlg, PublicKey};
use thiserror::Error;

/// What to do with a server's host key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Only keys recorded in known_hosts are accepted (the default).
    Strict,
    /// An unknown host's key is recorded on first use; from then on as `Strict`.
    AcceptNew,
    /// Only the key with this SHA-256 fingerprint (`SHA256:` + 43 base64 characters) is accepted.
    Pinned(String),
}

impl HostKeyPolicy {
    /// Parses `strict`, `accept-new` or a `SHA256:...` fingerprint.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "strict" => Ok(Self::Strict),
            "accept-new" => Ok(Self::AcceptNew),
            fp if fp.starts_with("SHA256:") => {
                let b64 = &fp["SHA256:".len()..];
                let ok = b64.len() == 43
                    && b64
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/');
                if ok {
                    Ok(Self::Pinned(fp.to_owned()))
                } else {
                    Err(format!(
                        "`{fp}` is not a SHA-256 fingerprint (expected SHA256: and 43 base64 characters, as `ssh-keygen -lf` prints)"
                    ))
                }
            }
            other => Err(format!(
                "unknown host-key policy `{other}`: use \"strict\", \"accept-new\" or a pinned \"SHA256:...\" fingerprint"
            )),
        }
    }
}

impl fmt::Display for HostKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Strict => f.write_str("strict"),
            Self::AcceptNew => f.write_str("accept-new"),
            Self::Pinned(fp) => f.write_str(fp),
        }
    }
}

/// Why a host key was refused. Every message names the host and the fingerprint the server showed,
/// and says what a human can do about it.
#[derive(Debug, Error, Clone)]
pub enum HostKeyError {
    /// Strict policy and no record of the host.
    #[error(
        "host key of {host_port} is not known: the server presented {presented}. Nothing was sent to it. {advice}"
    )]
    Unknown {
        /// `host` or `[host]:port`, as known_hosts writes it.
        host_port: String,
        /// e.g. `ssh-ed25519 key SHA256:...`.
        presented: String,
        /// `SHA256:...` of the presented key.
        fingerprint: String,
        /// How a human trusts it: the known_hosts line, an ssh-keyscan command, a pin.
        advice: String,
    },
    /// The recorded key differs: someone may be in the middle, or the host was reinstalled.
    #[error(
        "HOST KEY CHANGED for {host_port}: the server presented {presented}, but {known_hosts} line {line} records \
         a different key{recorded}. The connection was refused and nothing was sent. This can mean someone is intercepting the \
         connection. If the host was really re-keyed, a human must remove the old entry (`ssh-keygen -R '{host_port}' -f {known_hosts}`) \
         and trust the new one"
    )]
    Changed {
        /// `host` or `[host]:port`.
        host_port: String,
        /// e.g. `ssh-ed25519 key SHA256:...`.
        presented: String,
        /// Line of the conflicting entry.
        line: usize,
        /// `" (SHA256:...)"` of the recorded key, or empty.
        recorded: String,
        /// The known_hosts file consulted.
        known_hosts: String,
    },
    /// A pinned credential met another key.
    #[error(
        "host key of {host_port} does not match the pinned fingerprint: expected {expected}, the server presented {presented}. \
         The connection was refused and nothing was sent"
    )]
    PinMismatch {
        /// `host` or `[host]:port`.
        host_port: String,
        /// The pinned fingerprint.
        expected: String,
        /// e.g. `ssh-ed25519 key SHA256:...`.
        presented: String,
    },
    /// known_hosts could not be read or written.
    #[error("cannot use known_hosts file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// How a host key came to be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// It was in known_hosts.
    Known,
    /// It matched the credential's pinned fingerprint.
    Pinned,
    /// `accept-new` recorded it just now.
    Learned,
}

/// The known_hosts file shared by all credentials.
#[derive(Debug)]
pub struct KnownHosts {
    path: PathBuf,
    /// Serialises check-then-append under `accept-new`, so two first connections to one host
    /// cannot both append.
    write_lock: Mutex<()>,
}

/// `host` for port 22, else `[host]:port`: the host field OpenSSH writes and matches.
pub fn host_port(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// `SHA256:...` of a key, as OpenSSH prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn short_name(algorithm: &Algorithm) -> &'static str {
    match algorithm {
        Algorithm::Ed25519 => "ed25519",
        Algorithm::Ecdsa { .. } => "ecdsa",
        Algorithm::Rsa { .. } => "rsa",
        _ => "ed25519",
    }
}

impl KnownHosts {
    /// Uses the known_hosts file at `path` (it need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            write_lock: Mutex::new(()),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file_error(&self, e: impl fmt::Display) -> HostKeyError {
        HostKeyError::File {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// Appends `[host]:port key` (russh's `learn_known_hosts_path` starts a new file with an
    /// empty line, which shifts the line numbers that messages quote).
    fn append(&self, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let existing = std::fs::read(&self.path).unwrap_or_default();
        let openssh = key.to_openssh().map_err(std::io::Error::other)?;
        let mut line = String::new();
        if !existing.is_empty() && !existing.ends_with(b"\n") {
            line.push('\n');
        }
        line.push_str(&format!("{} {openssh}\n", host_port(host, port)));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(line.as_bytes())
    }

    /// Key algorithms recorded for a host, so that the key exchange can ask for those first (as
    /// OpenSSH does) and a host known by its ECDSA key is not refused for offering Ed25519.
    pub fn known_algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let mut algs: Vec<Algorithm> = Vec::new();
        for (_, key) in known_host_keys_path(host, port, &self.path).unwrap_or_default() {
            let alg = key.algorithm();
            if !algs.contains(&alg) {
                algs.push(alg);
            }
        }
        algs
    }

    /// Decides whether `key`, presented by `host:port`, is trusted under `policy`.
    pub fn verify(
        &self,
        host: &str,
        port: u16,
        key: &PublicKey,
        policy: &HostKeyPolicy,
    ) -> Result<Trust, HostKeyError> {
        let fingerprint = fingerprint(key);
        let algorithm = key.algorithm();
        let presented = format!("{algorithm} key {fingerprint}");
        if let HostKeyPolicy::Pinned(expected) = policy {
            return if *expected == fingerprint {
                Ok(Trust::Pinned)
            } else {
                Err(HostKeyError::PinMismatch {
                    host_port: host_port(host, port),
                    expected: expected.clone(),
                    presented,
                })
            };
        }
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let recorded =
            known_host_keys_path(host, port, &self.path).map_err(|e| self.file_error(e))?;
        if recorded.iter().any(|(_, k)| k.key_data() == key.key_data()) {
            return Ok(Trust::Known);
        }
        // A recorded key of the same type that differs is a changed key. A host recorded only
        // with other key types is refused as well: accepting a new type silently would let an
        // attacker who lacks the real key pick a type the client has no record of.
        if let Some((line, old)) = recorded
            .iter()
            .find(|(_, k)| k.algorithm() == algorithm)
            .or_else(|| recorded.first())
        {
            return Err(HostKeyError::Changed {
                host_port: host_port(host, port),
                presented,
                line: *line,
                recorded: format!(" ({} {})", old.algorithm(), self::fingerprint(old)),
                known_hosts: self.path.display().to_string(),
            });
        }
        match policy {
            HostKeyPolicy::AcceptNew => {
                self.append(host, port, key)
                    .map_err(|e| self.file_error(e))?;
                Ok(Trust::Learned)
            }
            _ => {
                let short = short_name(&algorithm);
                let known_hosts = self.path.display();
                let advice = format!(
                    "If that fingerprint is right (compare it with `ssh-keygen -lf /etc/ssh/ssh_host_{short}_key.pub` on the host), \
                     trust it by adding this line to {known_hosts}:\n{} {}\n\
                     (or run `ssh-keyscan -p {port} -t {short} {host} >> {known_hosts}` and compare the fingerprint), \
                     or pin it with host_key = \"{fingerprint}\" for this credential",
                    host_port(host, port),
                    key.to_openssh().unwrap_or_default(),
                );
                Err(HostKeyError::Unknown {
                    host_port: host_port(host, port),
                    presented,
                    fingerprint,
                    advice,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
