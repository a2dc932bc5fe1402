//! Importing hosts from an OpenSSH client config (`~/.ssh/config`), so users keep one list of hosts.
//!
//! Only what the connection needs is read: `Host`, `HostName`, `User`, `Port`, `IdentityFile`,
//! `ProxyJump` and `StrictHostKeyChecking accept-new`. Values resolve as OpenSSH resolves them:
//! for each concrete alias (a `Host` pattern without `*`, `?` or `!`), every block whose patterns
//! match is applied in file order and the first value of each keyword wins (`IdentityFile`
//! accumulates). `Match` blocks and `Include` are not evaluated (a warning is logged), and
//! `StrictHostKeyChecking no` never weakens the policy: host keys are always checked.

use std::path::Path;
use std::time::Duration;

use crate::config::{DEFAULT_CONNECT_TIMEOUT, expand_home, home_dir};
use crate::credentials::{Credential, Origin, valid_name};
use crate::host_keys::HostKeyPolicy;

#[derive(Debug, Default)]
struct Block {
    patterns: Vec<String>,
    /// `Match` blocks never apply here.
    never: bool,
    options: Vec<(String, String)>,
}

/// Parses the config text into blocks; options before the first `Host` form a block matching all.
fn parse(text: &str) -> Vec<Block> {
    let mut blocks = vec![Block {
        patterns: vec!["*".into()],
        ..Block::default()
    }];
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let split = line
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(line.len());
        let keyword = line[..split].to_ascii_lowercase();
        let value = line[split..]
            .trim_start_matches(|c: char| c.is_whitespace() || c == '=')
            .trim()
            .trim_matches('"')
            .to_owned();
        match keyword.as_str() {
            "host" => blocks.push(Block {
                patterns: value.split_whitespace().map(str::to_owned).collect(),
                ..Block::default()
            }),
            "match" => {
                tracing::warn!(
                    "ssh config: `Match {value}` is not evaluated; its options are ignored"
                );
                blocks.push(Block {
                    never: true,
                    ..Block::default()
                });
            }
            "include" => tracing::warn!("ssh config: `Include {value}` is not followed"),
            _ => {
                if let Some(block) = blocks.last_mut() {
                    block.options.push((keyword, value));
                }
            }
        }
    }
    blocks
}

/// OpenSSH glob: `*` any run, `?` one character.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p.eq_ignore_ascii_case(t) => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// A block applies when some pattern matches and no negated (`!`) pattern does.
fn applies(block: &Block, alias: &str) -> bool {
    if block.never {
        return false;
    }
    let mut hit = false;
    for p in &block.patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if glob(neg.as_bytes(), alias.as_bytes()) {
                return false;
            }
        } else if glob(p.as_bytes(), alias.as_bytes()) {
            hit = true;
        }
    }
    hit
}

#[derive(Debug, Default)]
struct Resolved {
    hostname: Option<String>,
    user: Option<String>,
    port: Option<String>,
    identity_files: Vec<String>,
    proxy_jump: Option<String>,
    strict: Option<String>,
    connect_timeout: Option<String>,
}

fn resolve(blocks: &[Block], alias: &str) -> Resolved {
    let mut r = Resolved::default();
    for block in blocks.iter().filter(|b| applies(b, alias)) {
        for (k, v) in &block.options {
            let slot = match k.as_str() {
                "hostname" => &mut r.hostname,
                "user" => &mut r.user,
                "port" => &mut r.port,
                "proxyjump" => &mut r.proxy_jump,
                "stricthostkeychecking" => &mut r.strict,
                "connecttimeout" => &mut r.connect_timeout,
                "identityfile" => {
                    r.identity_files.push(v.clone());
                    continue;
                }
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(v.clone());
            }
        }
    }
    r
}

fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".into())
}

/// Expands the `%` tokens OpenSSH allows in `IdentityFile` that make sense here, and `~`.
fn expand_tokens(value: &str, alias: &str, host: &str, user: &str) -> String {
    let home = home_dir().display().to_string();
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('d') => out.push_str(&home),
            Some('h') => out.push_str(host),
            Some('n') => out.push_str(alias),
            Some('r') => out.push_str(user),
            Some('u') => out.push_str(&local_user()),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    expand_home(&out).display().to_string()
}

/// `[user@]host[:port]` of a ProxyJump hop.
fn parse_hop(hop: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let (user, rest) = match hop.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_owned()), r),
        None => (None, hop),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("bad ProxyJump hop `{hop}`"))?;
        let port = after
            .strip_prefix(':')
            .map(str::parse)
            .transpose()
            .map_err(|_| format!("bad port in ProxyJump hop `{hop}`"))?;
        (h.to_owned(), port)
    } else if let Some((h, p)) = rest.rsplit_once(':') {
        (
            h.to_owned(),
            Some(
                p.parse()
                    .map_err(|_| format!("bad port in ProxyJump hop `{hop}`"))?,
            ),
        )
    } else {
        (rest.to_owned(), None)
    };
    Ok((user, host, port))
}

fn default_keys() -> Vec<std::path::PathBuf> {
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|k| home_dir().join(".ssh").join(k))
        .filter(|p| p.exists())
        .collect()
}

fn credential_for(
    alias: &str,
    blocks: &[Block],
    default_policy: &HostKeyPolicy,
) -> Result<Credential, String> {
    let r = resolve(blocks, alias);
    let host = r
        .hostname
        .as_deref()
        .map(|h| h.replace("%h", alias))
        .unwrap_or_else(|| alias.to_owned());
    let user = r.user.clone().unwrap_or_else(local_user);
    let port = match &r.port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("Host {alias}: bad Port `{p}`"))?,
        None => 22,
    };
    let mut keys: Vec<std::path::PathBuf> = r
        .identity_files
        .iter()
        .filter(|f| !f.eq_ignore_ascii_case("none"))
        .map(|f| expand_tokens(f, alias, &host, &user).into())
        .collect();
    if keys.is_empty() {
        keys = default_keys();
    }
    let host_key = match r.strict.as_deref() {
        Some("accept-new") => HostKeyPolicy::AcceptNew,
        _ => default_policy.clone(),
    };
    let connect_timeout = r
        .connect_timeout
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    Ok(Credential {
        name: alias.to_owned(),
        host,
        port,
        user,
        keys,
        passphrase_env: None,
        agent: true,
        password_env: None,
        sudo_password_env: None,
        jump: None,
        host_key,
        connect_timeout,
        remote_bind: Vec::new(),
        origin: Origin::SshConfig,
    })
}

/// Reads `path` and returns one credential per concrete `Host` alias, plus one per ProxyJump hop
/// that is not itself an alias (named after the hop, e.g. `admin@bastion:2222`).
pub fn import(path: &Path, default_policy: &HostKeyPolicy) -> Result<Vec<Credential>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    Ok(import_text(&text, default_policy))
}

/// [`import`] on text; aliases that cannot be used are skipped with a warning.
pub fn import_text(text: &str, default_policy: &HostKeyPolicy) -> Vec<Credential> {
    let blocks = parse(text);
    let mut aliases: Vec<String> = Vec::new();
    for block in &blocks[1..] {
        for p in &block.patterns {
            if !p.contains(['*', '?', '!']) && valid_name(p) && !aliases.contains(p) {
                aliases.push(p.clone());
            }
        }
    }
    let mut out: Vec<Credential> = Vec::new();
    for alias in &aliases {
        let mut credential = match credential_for(alias, &blocks, default_policy) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("ssh config: skipping {alias}: {e}");
                continue;
            }
        };
        let jump = resolve(&blocks, alias)
            .proxy_jump
            .filter(|j| !j.eq_ignore_ascii_case("none"));
        if let Some(chain) = jump {
            // `ProxyJump a,b`: connect to a, through a to b, through b to the target.
            let mut previous: Option<String> = None;
            let mut failed = false;
            for hop in chain.split(',').map(str::trim) {
                let is_alias = aliases.iter().any(|a| a == hop);
                if is_alias && previous.is_none() {
                    previous = Some(hop.to_owned());
                    continue;
                }
                let built = if is_alias {
                    credential_for(hop, &blocks, default_policy)
                } else {
                    parse_hop(hop).map(|(user, host, port)| {
                        let mut c = credential_for(&host, &blocks, default_policy)
                            .unwrap_or_else(|_| credential.clone());
                        c.host = host;
                        if let Some(port) = port {
                            c.port = port;
                        }
                        if let Some(user) = user {
                            c.user = user;
                        }
                        c
                    })
                };
                let name = if previous.is_none() {
                    hop.to_owned()
                } else {
                    format!("{alias}~{hop}")
                };
                let mut hop_credential = match built {
                    Ok(c) if valid_name(&name) => c,
                    Ok(_) => {
                        tracing::warn!(
                            "ssh config: skipping {alias}: jump hop `{hop}` cannot be named"
                        );
                        failed = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!("ssh config: skipping {alias}: {e}");
                        failed = true;
                        break;
                    }
                };
                if !out.iter().any(|c| c.name == name) {
                    hop_credential.name = name.clone();
                    hop_credential.jump = previous.clone();
                    out.push(hop_credential);
                }
                previous = Some(name);
            }
            if failed {
                continue;
            }
            credential.jump = previous;
        }
        out.push(credential);
    }
    out
}

#[cfg(test)]
mod tests;
