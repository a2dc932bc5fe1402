//! The TOML config: raw text -> [`RawConfig`] (serde, unknown keys refused) -> validated
//! [`Settings`] whose every error names the offending key.
//!
//! ```toml
//! known_hosts = "~/.ssh/known_hosts"   # default
//! import_ssh_config = true              # read Host entries from ~/.ssh/config
//! ssh_config = "~/.ssh/config"          # default
//! default_host_key = "strict"           # policy of imported and runtime credentials
//! copy_local_dirs = ["~/transfer"]      # optional: where copies may read/write locally
//!
//! [limits]
//! output_bytes = 65536                  # per stream in one result (head + tail)
//! keep_output_bytes = 8388608           # per stream kept for ssh_output_read
//! kept_outputs = 32                     # outputs kept (oldest dropped first)
//! sessions_per_credential = 8           # concurrent commands per host
//! default_timeout_ms = 60000
//! max_timeout_ms = 3600000
//! kill_grace_ms = 2000                  # TERM -> KILL -> close
//! keepalive_secs = 15
//! progress_interval_ms = 1000
//! max_stdin_bytes = 16777216
//! session_idle_secs = 1800              # interactive sessions untouched this long are closed
//! pty_sessions_per_credential = 4       # interactive sessions per host (< sessions_per_credential)
//! session_scrollback_lines = 2000
//! session_max_wait_ms = 120000          # longest wait ssh_session_send may ask for
//! copy_max_bytes = 268435456            # largest scp_copy / rsync_copy
//! tunnels_max = 16
//!
//! [hosts.web]
//! host = "10.0.0.5"
//! port = 22
//! user = "deploy"
//! key = "~/.ssh/id_ed25519"
//! passphrase_env = "WEB_KEY_PASSPHRASE"
//! agent = true
//! password_env = "WEB_PASSWORD"
//! sudo_password_env = "WEB_SUDO_PASSWORD"
//! jump = "bastion"
//! host_key = "strict"                   # or "accept-new" or "SHA256:..."
//! connect_timeout = 10                  # seconds
//! remote_bind_addresses = ["0.0.0.0"]   # remote tunnels may bind these too (default loopback only)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::credentials::{Credential, CredentialError, Origin, check_jumps, valid_name};
use crate::host_keys::HostKeyPolicy;
use crate::ssh_config;

/// A config that cannot be used. Every variant names the file and, where there is one, the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type (the message gives key and line).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message, with line, column and key.
        message: String,
    },
    /// A value of the right type that makes no sense.
    #[error("config file {path}: `{key}`: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Dotted key, e.g. `hosts.web.port`.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// The OpenSSH client config could not be imported.
    #[error("ssh config {path}: {message}")]
    SshConfig {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    known_hosts: Option<String>,
    #[serde(default)]
    import_ssh_config: bool,
    ssh_config: Option<String>,
    default_host_key: Option<String>,
    copy_local_dirs: Option<Vec<String>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    hosts: BTreeMap<String, RawHost>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    output_bytes: Option<usize>,
    keep_output_bytes: Option<usize>,
    kept_outputs: Option<usize>,
    sessions_per_credential: Option<usize>,
    default_timeout_ms: Option<u64>,
    max_timeout_ms: Option<u64>,
    kill_grace_ms: Option<u64>,
    keepalive_secs: Option<u64>,
    progress_interval_ms: Option<u64>,
    max_stdin_bytes: Option<usize>,
    session_idle_secs: Option<u64>,
    pty_sessions_per_credential: Option<usize>,
    session_scrollback_lines: Option<usize>,
    session_max_wait_ms: Option<u64>,
    copy_max_bytes: Option<u64>,
    tunnels_max: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    host: String,
    port: Option<u16>,
    user: String,
    key: Option<String>,
    #[serde(default)]
    agent: bool,
    password_env: Option<String>,
    passphrase_env: Option<String>,
    sudo_password_env: Option<String>,
    jump: Option<String>,
    host_key: Option<String>,
    connect_timeout: Option<f64>,
    remote_bind_addresses: Option<Vec<String>>,
}

/// Numeric limits, validated.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes per stream in one result.
    pub output_bytes: usize,
    /// Bytes per stream kept for paging.
    pub keep_output_bytes: usize,
    /// Outputs kept for paging.
    pub kept_outputs: usize,
    /// Concurrent commands (channels) per credential.
    pub sessions_per_credential: usize,
    /// Command timeout when a call gives none.
    pub default_timeout: Duration,
    /// Largest timeout a call may ask for.
    pub max_timeout: Duration,
    /// Wait after TERM before KILL, and after KILL before closing the channel.
    pub kill_grace: Duration,
    /// SSH keepalive interval on pooled connections.
    pub keepalive: Duration,
    /// Interval between progress notifications.
    pub progress_interval: Duration,
    /// Largest `stdin` accepted.
    pub max_stdin_bytes: usize,
    /// An interactive session nobody touched for this long is closed.
    pub session_idle: Duration,
    /// Interactive sessions open at once per credential (each holds one of the credential's
    /// `sessions_per_credential` channels, so this must be smaller).
    pub pty_sessions_per_credential: usize,
    /// Lines of scrollback each interactive session keeps.
    pub session_scrollback_lines: usize,
    /// Longest wait `ssh_session_send` may ask for.
    pub session_max_wait: Duration,
    /// Largest file or tree `scp_copy` / `rsync_copy` copies.
    pub copy_max_bytes: u64,
    /// Tunnels open at once (all credentials).
    pub tunnels_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            output_bytes: 64 * 1024,
            keep_output_bytes: 8 * 1024 * 1024,
            kept_outputs: 32,
            sessions_per_credential: 8,
            default_timeout: Duration::from_secs(60),
            max_timeout: Duration::from_secs(3600),
            kill_grace: Duration::from_secs(2),
            keepalive: Duration::from_secs(15),
            progress_interval: Duration::from_secs(1),
            max_stdin_bytes: 16 * 1024 * 1024,
            session_idle: Duration::from_secs(1800),
            pty_sessions_per_credential: 4,
            session_scrollback_lines: 2000,
            session_max_wait: Duration::from_secs(120),
            copy_max_bytes: 256 * 1024 * 1024,
            tunnels_max: 16,
        }
    }
}

/// The validated config.
#[derive(Clone, Debug)]
pub struct Settings {
    /// known_hosts file.
    pub known_hosts: PathBuf,
    /// Policy given to imported and runtime credentials.
    pub default_host_key: HostKeyPolicy,
    /// Limits.
    pub limits: Limits,
    /// Credentials from the config file and the imported OpenSSH config.
    pub credentials: Vec<Credential>,
    /// Whether `add_credential` / `remove_credential` are offered (`--no-runtime-credentials`).
    pub runtime_credentials: bool,
    /// Local directories `scp_copy` / `rsync_copy` may read and write under (`None`: anywhere
    /// this process may).
    pub copy_local_dirs: Option<Vec<PathBuf>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            known_hosts: expand_home("~/.ssh/known_hosts"),
            default_host_key: HostKeyPolicy::Strict,
            limits: Limits::default(),
            credentials: Vec::new(),
            runtime_credentials: true,
            copy_local_dirs: None,
        }
    }
}

/// The user's home directory (`$HOME`).
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Expands a leading `~/` to the home directory.
pub fn expand_home(path: &str) -> PathBuf {
    if path == "~" {
        home_dir()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home_dir().join(rest)
    } else {
        PathBuf::from(path)
    }
}

/// Default connect timeout (TCP + handshake + authentication).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, path)
}

/// Validates config text; `path` is only used in messages and to find nothing else.
pub fn parse(text: &str, path: &Path) -> Result<Settings, ConfigError> {
    let file = path.display().to_string();
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: file.clone(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    validate(raw, &file)
}

fn invalid(file: &str, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: file.to_owned(),
        key: key.into(),
        message: message.into(),
    }
}

fn positive(file: &str, key: &str, value: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    match value {
        Some(0) => Err(invalid(
            file,
            format!("limits.{key}"),
            "must be greater than 0",
        )),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

fn validate_limits(raw: RawLimits, file: &str) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let p = |key: &str, v: Option<usize>, def: usize| {
        positive(file, key, v.map(|v| v as u64), def as u64).map(|v| v as usize)
    };
    let ms = |key: &str, v: Option<u64>, def: Duration| {
        positive(file, key, v, def.as_millis() as u64).map(Duration::from_millis)
    };
    let limits = Limits {
        output_bytes: p("output_bytes", raw.output_bytes, d.output_bytes)?,
        keep_output_bytes: p(
            "keep_output_bytes",
            raw.keep_output_bytes,
            d.keep_output_bytes,
        )?,
        kept_outputs: p("kept_outputs", raw.kept_outputs, d.kept_outputs)?,
        sessions_per_credential: p(
            "sessions_per_credential",
            raw.sessions_per_credential,
            d.sessions_per_credential,
        )?,
        default_timeout: ms(
            "default_timeout_ms",
            raw.default_timeout_ms,
            d.default_timeout,
        )?,
        max_timeout: ms("max_timeout_ms", raw.max_timeout_ms, d.max_timeout)?,
        kill_grace: ms("kill_grace_ms", raw.kill_grace_ms, d.kill_grace)?,
        keepalive: Duration::from_secs(positive(
            file,
            "keepalive_secs",
            raw.keepalive_secs,
            d.keepalive.as_secs(),
        )?),
        progress_interval: ms(
            "progress_interval_ms",
            raw.progress_interval_ms,
            d.progress_interval,
        )?,
        max_stdin_bytes: p("max_stdin_bytes", raw.max_stdin_bytes, d.max_stdin_bytes)?,
        session_idle: Duration::from_secs(positive(
            file,
            "session_idle_secs",
            raw.session_idle_secs,
            d.session_idle.as_secs(),
        )?),
        pty_sessions_per_credential: p(
            "pty_sessions_per_credential",
            raw.pty_sessions_per_credential,
            d.pty_sessions_per_credential,
        )?,
        // 0 is allowed here: no scrollback.
        session_scrollback_lines: raw
            .session_scrollback_lines
            .unwrap_or(d.session_scrollback_lines),
        session_max_wait: ms(
            "session_max_wait_ms",
            raw.session_max_wait_ms,
            d.session_max_wait,
        )?,
        copy_max_bytes: positive(file, "copy_max_bytes", raw.copy_max_bytes, d.copy_max_bytes)?,
        tunnels_max: p("tunnels_max", raw.tunnels_max, d.tunnels_max)?,
    };
    if limits.session_scrollback_lines > 100_000 {
        return Err(invalid(
            file,
            "limits.session_scrollback_lines",
            "at most 100000",
        ));
    }
    if limits.pty_sessions_per_credential >= limits.sessions_per_credential {
        return Err(invalid(
            file,
            "limits.pty_sessions_per_credential",
            format!(
                "must be smaller than limits.sessions_per_credential ({}): each interactive session holds one of those channels, and commands need at least one",
                limits.sessions_per_credential
            ),
        ));
    }
    if limits.keep_output_bytes < limits.output_bytes {
        return Err(invalid(
            file,
            "limits.keep_output_bytes",
            format!(
                "must be at least limits.output_bytes ({})",
                limits.output_bytes
            ),
        ));
    }
    if limits.default_timeout > limits.max_timeout {
        return Err(invalid(
            file,
            "limits.default_timeout_ms",
            "must not exceed limits.max_timeout_ms",
        ));
    }
    Ok(limits)
}

fn env_name(file: &str, key: String, value: Option<String>) -> Result<Option<String>, ConfigError> {
    match value {
        Some(v) if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Err(invalid(
                file,
                key,
                format!(
                    "\"{v}\" is not an environment variable name (it names the variable, it is not the secret)"
                ),
            ))
        }
        other => Ok(other),
    }
}

fn validate_host(name: &str, raw: RawHost, file: &str) -> Result<Credential, ConfigError> {
    let key = |k: &str| format!("hosts.{name}.{k}");
    if !valid_name(name) {
        return Err(invalid(
            file,
            format!("hosts.{name}"),
            "credential names are 1 to 64 of A-Z a-z 0-9 _ . - @ :",
        ));
    }
    if raw.host.trim().is_empty() {
        return Err(invalid(file, key("host"), "must not be empty"));
    }
    if raw.user.trim().is_empty() {
        return Err(invalid(file, key("user"), "must not be empty"));
    }
    if raw.port == Some(0) {
        return Err(invalid(file, key("port"), "must be 1 to 65535"));
    }
    let host_key = match &raw.host_key {
        Some(p) => HostKeyPolicy::parse(p).map_err(|m| invalid(file, key("host_key"), m))?,
        None => HostKeyPolicy::Strict,
    };
    let connect_timeout = match raw.connect_timeout {
        Some(s) if !(s > 0.0 && s <= 3600.0) => {
            return Err(invalid(
                file,
                key("connect_timeout"),
                "seconds, greater than 0 and at most 3600",
            ));
        }
        Some(s) => Duration::from_secs_f64(s),
        None => DEFAULT_CONNECT_TIMEOUT,
    };
    let password_env = env_name(file, key("password_env"), raw.password_env)?;
    let remote_bind = raw.remote_bind_addresses.unwrap_or_default();
    if let Some(bad) = remote_bind
        .iter()
        .find(|a| a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(invalid(
            file,
            key("remote_bind_addresses"),
            format!("\"{bad}\" is not an address (use e.g. \"0.0.0.0\" or \"10.0.0.5\")"),
        ));
    }
    if raw.key.is_none() && !raw.agent && password_env.is_none() {
        return Err(invalid(
            file,
            format!("hosts.{name}"),
            "no way to authenticate: set `key`, `agent = true` or `password_env`",
        ));
    }
    Ok(Credential {
        name: name.to_owned(),
        host: raw.host,
        port: raw.port.unwrap_or(22),
        user: raw.user,
        keys: raw.key.as_deref().map(expand_home).into_iter().collect(),
        passphrase_env: env_name(file, key("passphrase_env"), raw.passphrase_env)?,
        agent: raw.agent,
        password_env,
        sudo_password_env: env_name(file, key("sudo_password_env"), raw.sudo_password_env)?,
        jump: raw.jump,
        host_key,
        connect_timeout,
        remote_bind,
        origin: Origin::Config,
    })
}

fn validate(raw: RawConfig, file: &str) -> Result<Settings, ConfigError> {
    let limits = validate_limits(raw.limits, file)?;
    let default_host_key = match &raw.default_host_key {
        Some(p) => HostKeyPolicy::parse(p).map_err(|m| invalid(file, "default_host_key", m))?,
        None => HostKeyPolicy::Strict,
    };
    if matches!(default_host_key, HostKeyPolicy::Pinned(_)) {
        return Err(invalid(
            file,
            "default_host_key",
            "a fingerprint pins one host: use \"strict\" or \"accept-new\" here",
        ));
    }
    let copy_local_dirs = match raw.copy_local_dirs {
        None => None,
        Some(dirs) => {
            let mut out = Vec::new();
            for (i, d) in dirs.iter().enumerate() {
                let path = expand_home(d);
                if !path.is_absolute() {
                    return Err(invalid(
                        file,
                        format!("copy_local_dirs[{i}]"),
                        format!("\"{d}\" must be an absolute path (or start with ~/)"),
                    ));
                }
                out.push(path);
            }
            Some(out)
        }
    };
    let mut all: BTreeMap<String, Arc<Credential>> = BTreeMap::new();
    if raw.import_ssh_config {
        let path = expand_home(raw.ssh_config.as_deref().unwrap_or("~/.ssh/config"));
        let imported = ssh_config::import(&path, &default_host_key).map_err(|message| {
            ConfigError::SshConfig {
                path: path.display().to_string(),
                message,
            }
        })?;
        for credential in imported {
            all.insert(credential.name.clone(), Arc::new(credential));
        }
    } else if raw.ssh_config.is_some() {
        return Err(invalid(
            file,
            "ssh_config",
            "is only read with import_ssh_config = true",
        ));
    }
    // The config file's own hosts win over imported ones of the same name.
    for (name, host) in raw.hosts {
        let credential = validate_host(&name, host, file)?;
        all.insert(name, Arc::new(credential));
    }
    check_jumps(&all).map_err(|e| match &e {
        CredentialError::UnknownJump { name, .. } | CredentialError::JumpLoop(name) => {
            invalid(file, format!("hosts.{name}.jump"), e.to_string())
        }
        _ => invalid(file, "hosts", e.to_string()),
    })?;
    Ok(Settings {
        known_hosts: expand_home(raw.known_hosts.as_deref().unwrap_or("~/.ssh/known_hosts")),
        default_host_key,
        limits,
        credentials: all.into_values().map(|c| (*c).clone()).collect(),
        runtime_credentials: true,
        copy_local_dirs,
    })
}

#[cfg(test)]
mod tests;
