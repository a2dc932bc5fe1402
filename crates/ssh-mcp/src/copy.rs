//! File copies: `scp_copy` over SFTP on the pooled connection (one file, streamed, SHA-256
//! computed on the way), and `rsync_copy` through the local `rsync` program.
//!
//! `rsync_copy` never builds a shell line: rsync is started from an argument vector, the paths
//! follow `--` (so none can be read as an option), the remote path rides after `ssh-mcp-target:`
//! with `--protect-args` (so the remote shell does not split or expand it), and rsync's `-e` is an
//! OpenSSH `ssh` command pinned to the host key the pooled connection accepted under the
//! credential's policy: a temporary known_hosts holding exactly that key, under a
//! `HostKeyAlias`, with `StrictHostKeyChecking=yes`. So rsync trusts the same key ssh-mcp
//! trusts (strict, accept-new or pinned alike), and nothing else.
//!
//! What rsync can use of a credential: key files (unencrypted) and ssh-agent. A password, a
//! key that needs `passphrase_env` (unless the agent holds it) and jump hosts are refused with
//! a message pointing at `scp_copy`, which supports them all.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connection::Connection;
use crate::credentials::Credential;
use crate::pool::{Pool, PoolError};

/// Which way a copy goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// From this machine to the host.
    ToRemote,
    /// From the host to this machine.
    FromRemote,
}

/// Errors of the copy tools.
#[derive(Debug, Error)]
pub enum CopyError {
    /// Connecting failed.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// A local file problem.
    #[error("local {path}: {message}")]
    Local {
        /// The path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A remote file problem.
    #[error("remote {path}: {message}")]
    Remote {
        /// The path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Over the size cap.
    #[error(
        "{what} is {size} bytes, above the copy limit of {limit} bytes (limits.copy_max_bytes); nothing was copied"
    )]
    TooLarge {
        /// What.
        what: String,
        /// Its size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// A local path outside `copy_local_dirs`.
    #[error(
        "local path {path} is outside the directories copies may use ({allowed}; copy_local_dirs)"
    )]
    NotAllowed {
        /// The path.
        path: String,
        /// The allowed directories.
        allowed: String,
    },
    /// Something this tool cannot do with this credential.
    #[error("{0}")]
    Unsupported(String),
    /// rsync failed.
    #[error("{0}")]
    Rsync(String),
}

/// What a copy did.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyOutcome {
    /// Credential.
    pub credential_name: String,
    /// `toRemote` or `fromRemote`.
    pub direction: Direction,
    /// `sftp` or `rsync`.
    pub method: String,
    /// The local file or directory (resolved).
    pub local_path: String,
    /// The remote file or directory (resolved).
    pub remote_path: String,
    /// Bytes copied (rsync: bytes of the files it transferred).
    pub bytes: u64,
    /// SHA-256 (hex) of the bytes copied (sftp; rsync checks every file itself and gives none).
    pub sha256: Option<String>,
    /// Files transferred (rsync).
    pub files: Option<u64>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// Paths the remote side resolves against the login directory: `~/x` and `~` as SFTP and rsync
/// expect them (neither expands `~`).
pub fn remote_relative(path: &str) -> String {
    if path == "~" || path == "~/" {
        ".".to_owned()
    } else if let Some(rest) = path.strip_prefix("~/") {
        rest.to_owned()
    } else {
        path.to_owned()
    }
}

fn local_err(path: &Path, e: impl std::fmt::Display) -> CopyError {
    CopyError::Local {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Checks that `path` (made absolute and resolved as far as it exists) lies under one of
/// `allowed`; returns the absolute path.
pub fn check_local(path: &Path, allowed: Option<&[PathBuf]>) -> Result<PathBuf, CopyError> {
    let absolute = std::path::absolute(path).map_err(|e| local_err(path, e))?;
    let Some(allowed) = allowed else {
        return Ok(absolute);
    };
    if absolute
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(local_err(
            path,
            "`..` is not allowed in local paths while copy_local_dirs is set",
        ));
    }
    // Resolve symlinks of the longest existing ancestor, so a link cannot lead outside.
    let mut existing = absolute.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_owned());
                existing = parent.to_owned();
            }
            _ => break,
        }
    }
    let mut resolved = existing.canonicalize().unwrap_or(existing);
    for part in rest.iter().rev() {
        resolved.push(part);
    }
    let ok = allowed.iter().any(|dir| {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        resolved.starts_with(&dir)
    });
    if ok {
        Ok(resolved)
    } else {
        Err(CopyError::NotAllowed {
            path: path.display().to_string(),
            allowed: allowed
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// The settings a copy runs under.
#[derive(Clone, Debug)]
pub struct CopyLimits {
    /// Size cap.
    pub max_bytes: u64,
    /// Local directories allowed.
    pub local_dirs: Option<Vec<PathBuf>>,
}

static PARTIAL: AtomicU64 = AtomicU64::new(0);

/// Copies one file over SFTP.
pub async fn sftp_copy(
    pool: &Pool,
    credential: &Credential,
    local: &str,
    remote: &str,
    direction: Direction,
    limits: &CopyLimits,
) -> Result<CopyOutcome, CopyError> {
    let started = Instant::now();
    let local_path = check_local(Path::new(local), limits.local_dirs.as_deref())?;
    // Check the local side before connecting, so a bad path costs nothing.
    if direction == Direction::ToRemote {
        let meta = tokio::fs::metadata(&local_path)
            .await
            .map_err(|e| local_err(&local_path, e))?;
        if meta.is_dir() {
            return Err(local_err(
                &local_path,
                "is a directory; scp_copy copies one file (use rsync_copy for trees)",
            ));
        }
        if meta.len() > limits.max_bytes {
            return Err(CopyError::TooLarge {
                what: local_path.display().to_string(),
                size: meta.len(),
                limit: limits.max_bytes,
            });
        }
    }

    let (lease, mut channel) = pool.open_session(&credential.name).await?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| remote_err(remote, e))?;
    if !crate::sessions::reply(&mut channel).await {
        return Err(remote_err(remote, "the server refused the sftp subsystem"));
    }
    let sftp = russh_sftp::client::SftpSession::new(channel.into_stream())
        .await
        .map_err(|e| remote_err(remote, e))?;
    let remote_path = remote_relative(remote);
    let copied = match direction {
        Direction::ToRemote => upload(&sftp, &local_path, remote_path, limits.max_bytes).await,
        Direction::FromRemote => download(&sftp, local_path, remote_path, limits.max_bytes).await,
    };
    let _ = sftp.close().await;
    drop(lease);
    let copied = copied?;
    Ok(CopyOutcome {
        credential_name: credential.name.clone(),
        direction,
        method: "sftp".into(),
        local_path: copied.local.display().to_string(),
        remote_path: sftp_display(&copied.remote),
        bytes: copied.bytes,
        sha256: Some(copied.sha256),
        files: Some(1),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// What one SFTP transfer did.
struct Copied {
    local: PathBuf,
    remote: String,
    bytes: u64,
    sha256: String,
}

fn remote_err(path: &str, e: impl std::fmt::Display) -> CopyError {
    CopyError::Remote {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

const CHUNK: usize = 64 * 1024;

async fn upload(
    sftp: &russh_sftp::client::SftpSession,
    local_path: &Path,
    mut remote_path: String,
    max_bytes: u64,
) -> Result<Copied, CopyError> {
    if let Ok(meta) = sftp.metadata(remote_path.clone()).await
        && meta.is_dir()
    {
        let name = local_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        remote_path = format!("{}/{name}", remote_path.trim_end_matches('/'));
    }
    let mut source = tokio::fs::File::open(local_path)
        .await
        .map_err(|e| local_err(local_path, e))?;
    let mut target = sftp
        .create(remote_path.clone())
        .await
        .map_err(|e| remote_err(&remote_path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut copied: u64 = 0;
    loop {
        let n = source
            .read(&mut buf)
            .await
            .map_err(|e| local_err(local_path, e))?;
        if n == 0 {
            break;
        }
        copied += n as u64;
        if copied > max_bytes {
            drop(target);
            let _ = sftp.remove_file(remote_path.clone()).await;
            return Err(CopyError::TooLarge {
                what: format!("{} (it grew while copying)", local_path.display()),
                size: copied,
                limit: max_bytes,
            });
        }
        hasher.update(&buf[..n]);
        target
            .write_all(&buf[..n])
            .await
            .map_err(|e| remote_err(&remote_path, e))?;
    }
    target
        .shutdown()
        .await
        .map_err(|e| remote_err(&remote_path, e))?;
    Ok(Copied {
        local: local_path.to_owned(),
        remote: remote_path,
        bytes: copied,
        sha256: hex::encode(hasher.finalize()),
    })
}

async fn download(
    sftp: &russh_sftp::client::SftpSession,
    local_path: PathBuf,
    remote_path: String,
    max_bytes: u64,
) -> Result<Copied, CopyError> {
    let meta = sftp
        .metadata(remote_path.clone())
        .await
        .map_err(|e| remote_err(&remote_path, e))?;
    if meta.is_dir() {
        return Err(remote_err(
            &remote_path,
            "is a directory; scp_copy copies one file (use rsync_copy for trees)",
        ));
    }
    if meta.len() > max_bytes {
        return Err(CopyError::TooLarge {
            what: format!("remote {remote_path}"),
            size: meta.len(),
            limit: max_bytes,
        });
    }
    let mut target_path = local_path.clone();
    if tokio::fs::metadata(&target_path)
        .await
        .is_ok_and(|m| m.is_dir())
    {
        let name = Path::new(&remote_path)
            .file_name()
            .map(|n| n.to_owned())
            .ok_or_else(|| local_err(&local_path, "the remote path names no file"))?;
        target_path.push(name);
    }
    let partial = target_path.with_file_name(format!(
        ".{}.ssh-mcp-partial-{}-{}",
        target_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id(),
        PARTIAL.fetch_add(1, Ordering::Relaxed)
    ));
    let mut source = sftp
        .open(remote_path.clone())
        .await
        .map_err(|e| remote_err(&remote_path, e))?;
    let mut target = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| local_err(&partial, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut copied: u64 = 0;
    let outcome: Result<(), CopyError> = async {
        loop {
            let n = source
                .read(&mut buf)
                .await
                .map_err(|e| remote_err(&remote_path, e))?;
            if n == 0 {
                break;
            }
            copied += n as u64;
            if copied > max_bytes {
                return Err(CopyError::TooLarge {
                    what: format!("remote {remote_path} (it grew while copying)"),
                    size: copied,
                    limit: max_bytes,
                });
            }
            hasher.update(&buf[..n]);
            target
                .write_all(&buf[..n])
                .await
                .map_err(|e| local_err(&partial, e))?;
        }
        target.flush().await.map_err(|e| local_err(&partial, e))?;
        target
            .sync_all()
            .await
            .map_err(|e| local_err(&partial, e))?;
        tokio::fs::rename(&partial, &target_path)
            .await
            .map_err(|e| local_err(&target_path, e))
    }
    .await;
    if let Err(e) = outcome {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    Ok(Copied {
        local: target_path,
        remote: remote_path,
        bytes: copied,
        sha256: hex::encode(hasher.finalize()),
    })
}

fn sftp_display(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("~/{}", path.trim_start_matches("./"))
    }
}

/// Quotes one word for rsync's `-e` parsing (spaces separate words; single or double quotes
/// keep spaces; backslashes are not special).
pub fn rsync_e_word(word: &str) -> Result<String, CopyError> {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c));
    if plain {
        Ok(word.to_owned())
    } else if !word.contains('\'') {
        Ok(format!("'{word}'"))
    } else if !word.contains('"') {
        Ok(format!("\"{word}\""))
    } else {
        Err(CopyError::Unsupported(format!(
            "rsync_copy cannot pass {word:?} to ssh: it holds both kinds of quote"
        )))
    }
}

/// The host alias rsync's ssh connects as (its known_hosts entry is written under this name).
pub const RSYNC_HOST_ALIAS: &str = "ssh-mcp-target";

/// The `ssh` argument words for rsync's `-e` (without the host: rsync appends it).
pub fn rsync_ssh_words(credential: &Credential, known_hosts: &Path) -> Vec<String> {
    let o = |s: String| ["-o".to_owned(), s];
    let mut words = vec!["ssh".to_owned(), "-F".to_owned(), "/dev/null".to_owned()];
    for opt in [
        "BatchMode=yes".to_owned(),
        format!("HostName={}", credential.host),
        format!("HostKeyAlias={RSYNC_HOST_ALIAS}"),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
        "UpdateHostKeys=no".to_owned(),
        "CheckHostIP=no".to_owned(),
        format!(
            "ConnectTimeout={}",
            credential.connect_timeout.as_secs().max(1)
        ),
        "PasswordAuthentication=no".to_owned(),
        "KbdInteractiveAuthentication=no".to_owned(),
        "ServerAliveInterval=15".to_owned(),
    ] {
        words.extend(o(opt));
    }
    if !credential.agent {
        words.extend(o("IdentitiesOnly=yes".to_owned()));
        words.extend(o("IdentityAgent=none".to_owned()));
    }
    for key in &credential.keys {
        words.push("-i".to_owned());
        words.push(key.display().to_string());
    }
    words.extend(["-p".to_owned(), credential.port.to_string()]);
    words.extend(["-l".to_owned(), credential.user.clone()]);
    words
}

/// Why rsync cannot log in with this credential, if it cannot.
pub fn rsync_unsupported(credential: &Credential) -> Option<String> {
    let name = &credential.name;
    if credential.jump.is_some() {
        return Some(format!(
            "rsync_copy does not go through jump hosts (credential \"{name}\" jumps through \"{}\"); use scp_copy, which does",
            credential.jump.as_deref().unwrap_or_default()
        ));
    }
    if credential.keys.is_empty() && !credential.agent {
        return Some(format!(
            "rsync_copy logs in with OpenSSH's ssh in batch mode, which can use key files and ssh-agent but not a password; \
             credential \"{name}\" has only a password. Use scp_copy, which can"
        ));
    }
    if credential.passphrase_env.is_some() && !credential.agent {
        return Some(format!(
            "rsync_copy cannot unlock an encrypted key (credential \"{name}\" uses passphrase_env): ssh would ask for the passphrase. \
             Load the key into ssh-agent and set agent = true, or use scp_copy"
        ));
    }
    None
}

fn parse_stat(stdout: &str, label: &str) -> Option<u64> {
    stdout.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(label)?.trim();
        let digits: String = rest
            .split_whitespace()
            .next()?
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    })
}

/// Runs `rsync` once; returns stdout or the failure.
async fn run_rsync(
    rsync: &Path,
    args: &[String],
    agent: bool,
    timeout: Duration,
) -> Result<String, CopyError> {
    let mut command = tokio::process::Command::new(rsync);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if !agent {
        command.env_remove("SSH_AUTH_SOCK");
    }
    let child = command.spawn().map_err(|e| {
        CopyError::Rsync(format!(
            "cannot run {}: {e} (install rsync on this machine)",
            rsync.display()
        ))
    })?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(CopyError::Rsync(format!(
            "rsync did not finish within {} s and was stopped",
            timeout.as_secs()
        ))),
        Ok(Err(e)) => Err(CopyError::Rsync(format!("rsync failed: {e}"))),
        Ok(Ok(out)) => {
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let tail: String = stderr
                    .chars()
                    .rev()
                    .take(4000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                Err(CopyError::Rsync(format!(
                    "rsync exited with {}: {}",
                    out.status,
                    tail.trim()
                )))
            }
        }
    }
}

/// Finds `rsync` on PATH.
pub fn find_rsync() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("rsync"))
        .find(|p| p.is_file())
}

/// Copies a file or tree with the local `rsync`.
pub async fn rsync_copy(
    connection: Arc<Connection>,
    credential: &Credential,
    local: &str,
    remote: &str,
    direction: Direction,
    limits: &CopyLimits,
    timeout: Duration,
) -> Result<CopyOutcome, CopyError> {
    let started = Instant::now();
    if let Some(why) = rsync_unsupported(credential) {
        return Err(CopyError::Unsupported(why));
    }
    let rsync = find_rsync().ok_or_else(|| {
        CopyError::Rsync(
            "rsync is not installed on this machine (e.g. `apt-get install rsync`)".into(),
        )
    })?;
    // A trailing slash is meaningful to rsync ("the contents of"); keep it.
    let slash = local.ends_with('/');
    let mut local_path = check_local(Path::new(local), limits.local_dirs.as_deref())?;
    if direction == Direction::ToRemote && !local_path.exists() {
        return Err(local_err(&local_path, "does not exist"));
    }
    let key = connection.host_public_key().ok_or_else(|| {
        CopyError::Unsupported("the pooled connection recorded no host key".into())
    })?;
    let dir = std::env::temp_dir().join(format!(
        "ssh-mcp-{}-rsync-{}",
        std::process::id(),
        PARTIAL.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| local_err(&dir, e))?;
    let known_hosts = dir.join("known_hosts");
    let guard = RemoveOnDrop(dir.clone());
    let line = format!(
        "{RSYNC_HOST_ALIAS} {}\n",
        key.to_openssh()
            .map_err(|e| CopyError::Unsupported(e.to_string()))?
    );
    std::fs::write(&known_hosts, line).map_err(|e| local_err(&known_hosts, e))?;

    let e = rsync_ssh_words(credential, &known_hosts)
        .iter()
        .map(|w| rsync_e_word(w))
        .collect::<Result<Vec<_>, _>>()?
        .join(" ");
    let remote_arg = format!("{RSYNC_HOST_ALIAS}:{}", remote_relative(remote));
    let mut local_arg = local_path.display().to_string();
    if slash && !local_arg.ends_with('/') {
        local_arg.push('/');
        local_path = PathBuf::from(&local_arg);
    }
    let (src, dst) = match direction {
        Direction::ToRemote => (local_arg.clone(), remote_arg.clone()),
        Direction::FromRemote => (remote_arg.clone(), local_arg.clone()),
    };
    let base = |extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "--recursive".into(),
            "--links".into(),
            "--perms".into(),
            "--times".into(),
            "--protect-args".into(),
            "--stats".into(),
            format!("--max-size={}", limits.max_bytes),
            format!("--timeout={}", timeout.as_secs().max(1)),
            "-e".into(),
            e.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("--".into());
        args.push(src.clone());
        args.push(dst.clone());
        args
    };
    // First a dry run: how much would be transferred?
    let dry = run_rsync(&rsync, &base(&["--dry-run"]), credential.agent, timeout).await?;
    let planned = parse_stat(&dry, "Total transferred file size:").unwrap_or(0);
    if planned > limits.max_bytes {
        return Err(CopyError::TooLarge {
            what: format!("the transfer of {src}"),
            size: planned,
            limit: limits.max_bytes,
        });
    }
    let out = run_rsync(&rsync, &base(&[]), credential.agent, timeout).await?;
    drop(guard);
    Ok(CopyOutcome {
        credential_name: credential.name.clone(),
        direction,
        method: "rsync".into(),
        local_path: local_path.display().to_string(),
        remote_path: sftp_display(&remote_relative(remote)),
        bytes: parse_stat(&out, "Total transferred file size:").unwrap_or(0),
        sha256: None,
        files: parse_stat(&out, "Number of regular files transferred:")
            .or_else(|| parse_stat(&out, "Number of files transferred:")),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_words_are_quoted_for_its_e_parser() {
        assert_eq!(rsync_e_word("-o").unwrap(), "-o");
        assert_eq!(rsync_e_word("/home/a b/key").unwrap(), "'/home/a b/key'");
        assert_eq!(rsync_e_word("it's").unwrap(), "\"it's\"");
        assert!(rsync_e_word("'\"").is_err());
        assert_eq!(rsync_e_word("").unwrap(), "''");
    }

    #[test]
    fn stats_are_parsed_with_thousands_separators() {
        let out = "Number of files: 3 (reg: 2, dir: 1)\nNumber of regular files transferred: 2\n\
                   Total file size: 1,234,567 bytes\nTotal transferred file size: 12,345 bytes\n";
        assert_eq!(parse_stat(out, "Total transferred file size:"), Some(12345));
        assert_eq!(
            parse_stat(out, "Number of regular files transferred:"),
            Some(2)
        );
    }

    #[test]
    fn remote_tilde_paths_are_relative_to_the_login_directory() {
        assert_eq!(remote_relative("~/a/b"), "a/b");
        assert_eq!(remote_relative("~"), ".");
        assert_eq!(remote_relative("/etc/x"), "/etc/x");
        assert_eq!(remote_relative("~user/x"), "~user/x");
    }

    #[test]
    fn local_paths_must_stay_inside_the_allowed_directories() {
        let base = std::env::temp_dir().join(format!("ssh-mcp-copy-{}", std::process::id()));
        let inside = base.join("inside");
        std::fs::create_dir_all(&inside).unwrap();
        let allowed = vec![inside.clone()];
        assert!(check_local(&inside.join("new-file"), Some(&allowed)).is_ok());
        assert!(check_local(&inside.join("a/../../escape"), Some(&allowed)).is_err());
        assert!(check_local(&base.join("outside"), Some(&allowed)).is_err());
        #[cfg(unix)]
        {
            let link = inside.join("link");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("/etc", &link).unwrap();
            assert!(check_local(&link.join("passwd"), Some(&allowed)).is_err());
        }
        assert!(check_local(&base.join("outside"), None).is_ok());
        let _ = std::fs::remove_dir_all(&base);
    }
}
