//! Operator actions shared by the CLI (`toolgate grant`, `toolgate explain`) and the admin API
//! (the web UI): one implementation, so both check the same things and audit the same way.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use toolgate_policy::{Call, Policy, Verdict, utc_rfc3339, window_name};
use toolgate_state::{AuditRecord, GrantChange, StoreError, StoredGrant};

use crate::config::{Config, CounterBackend};
use crate::grant::{new_token, token_digest};
use crate::guard::{counter_specs, limited_message, load_policy, now_ms};
use crate::stores::Stores;

/// Why a grant change was refused.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The name belongs to a grant of the configuration file, which only an edit of it changes.
    #[error("{0:?} is a grant of the configuration file (edit the file to change it)")]
    Configured(String),
    /// `create` with a name in use.
    #[error("a grant named {0:?} exists (rotate or revoke it)")]
    Exists(String),
    /// No stored grant of that name.
    #[error("no stored grant named {0:?}")]
    NotFound(String),
    /// A name other than letters, digits and `- _ . @`.
    #[error("a grant name is 1 to 64 letters, digits and - _ . @")]
    BadName,
    /// The policy file cannot be used.
    #[error("invalid policy: {0}")]
    BadPolicy(String),
    /// The store failed.
    #[error("the grant store failed: {0}")]
    Store(#[from] StoreError),
}

/// A grant as operators see it (never its token).
pub fn grant_rows(config: &Config, stored: &[StoredGrant]) -> Vec<Value> {
    let mut rows: Vec<Value> = config
        .grants
        .iter()
        .map(|g| {
            json!({"name": g.name, "source": "config",
                "policy": g.policy.as_ref().map(|p| p.display().to_string())})
        })
        .collect();
    rows.extend(stored.iter().map(|g| {
        json!({"name": g.name, "source": "store", "policy": g.policy,
            "created": utc_rfc3339(g.created_ms), "updated": utc_rfc3339(g.updated_ms)})
    }));
    rows
}

/// A policy file for a grant: absolute (the gateway may run elsewhere), and valid now, so that
/// a typo is caught here rather than by an agent that may do nothing.
pub fn policy_path(policy: &str) -> Result<String, GrantError> {
    let bad = |e: String| GrantError::BadPolicy(e);
    let path = std::path::absolute(Path::new(policy)).map_err(|e| bad(format!("{policy}: {e}")))?;
    load_policy(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("{}: not UTF-8", path.display())))
}

/// Grant changes, made by `by` (`cli:alice`, `admin:ops`), each one audited.
pub struct GrantAdmin<'a> {
    /// The configuration (its grants cannot be changed here).
    pub config: &'a Config,
    /// Where grants and the audit log live.
    pub stores: &'a Stores,
    /// Who acts, for the audit log.
    pub by: String,
}

impl GrantAdmin<'_> {
    async fn record(&self, action: &str, grant: &str, detail: Value) {
        let record = AuditRecord {
            at_ms: now_ms(),
            kind: "admin".into(),
            decision: action.into(),
            grant: Some(self.by.clone()),
            message: Some(format!("{action} {grant:?}")),
            detail: Some(json!({"grant": grant, "change": detail})),
            ..AuditRecord::default()
        };
        if let Err(e) = self.stores.audit.append(&[record]).await {
            tracing::warn!(error = %e, action, grant, "a grant change is not in the audit log");
        }
    }

    fn stored_only(&self, name: &str) -> Result<(), GrantError> {
        match self.config.grants.iter().any(|g| g.name == name) {
            true => Err(GrantError::Configured(name.to_owned())),
            false => Ok(()),
        }
    }

    /// Creates a grant; its token (shown once).
    pub async fn create(&self, name: &str, policy: Option<&str>) -> Result<String, GrantError> {
        self.stored_only(name)?;
        let valid = |c: char| c.is_ascii_alphanumeric() || "-_.@".contains(c);
        if name.is_empty() || name.len() > 64 || !name.chars().all(valid) {
            return Err(GrantError::BadName);
        }
        let policy = policy.map(policy_path).transpose()?;
        let token = new_token();
        let now = now_ms();
        let grant = StoredGrant {
            name: name.to_owned(),
            token_sha256: crate::to_hex(&token_digest(&token)),
            policy: policy.clone(),
            created_ms: now,
            updated_ms: now,
        };
        if !self.stores.grants.create(grant).await? {
            return Err(GrantError::Exists(name.to_owned()));
        }
        self.record("grant_created", name, json!({"policy": policy}))
            .await;
        Ok(token)
    }

    async fn change(&self, name: &str, change: GrantChange) -> Result<(), GrantError> {
        self.stored_only(name)?;
        match self.stores.grants.update(name, change, now_ms()).await? {
            Some(_) => Ok(()),
            None => Err(GrantError::NotFound(name.to_owned())),
        }
    }

    /// A new token; the old one stops working.
    pub async fn rotate(&self, name: &str) -> Result<String, GrantError> {
        let token = new_token();
        let change = GrantChange {
            token_sha256: Some(crate::to_hex(&token_digest(&token))),
            policy: None,
        };
        self.change(name, change).await?;
        self.record("grant_rotated", name, json!({})).await;
        Ok(token)
    }

    /// Attaches a policy file (`None`: none, the grant may do nothing); the absolute path.
    pub async fn attach(
        &self,
        name: &str,
        policy: Option<&str>,
    ) -> Result<Option<String>, GrantError> {
        let policy = policy.map(policy_path).transpose()?;
        let change = GrantChange {
            token_sha256: None,
            policy: Some(policy.clone()),
        };
        self.change(name, change).await?;
        self.record("grant_policy_attached", name, json!({"policy": policy}))
            .await;
        Ok(policy)
    }

    /// Revokes a grant: its token stops working and its sessions end.
    pub async fn revoke(&self, name: &str) -> Result<(), GrantError> {
        self.stored_only(name)?;
        if !self.stores.grants.revoke(name).await? {
            return Err(GrantError::NotFound(name.to_owned()));
        }
        self.record("grant_revoked", name, json!({})).await;
        Ok(())
    }
}

/// SHA-256 of a text, hex: how a policy editor tells whether the file changed under it, and
/// how audit records and approvals name a call's arguments.
pub fn text_sha256(text: &str) -> String {
    crate::to_hex(&Sha256::digest(text.as_bytes()))
}

/// Why a policy was not saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The text is not a valid policy (the file is untouched).
    #[error("the policy was not saved: {} problem(s)", .0.diagnostics.len())]
    Invalid(toolgate_policy::PolicyError),
    /// The file changed since the editor read it.
    #[error("{0} changed since it was read; reload it and apply your change again")]
    Conflict(String),
    /// Reading or writing the file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        error: std::io::Error,
    },
}

/// A saved policy.
#[derive(Debug)]
pub struct Saved {
    /// The previous text, kept beside the file (`<file>.bak`), if there was one.
    pub backup: Option<PathBuf>,
    /// The new policy's version.
    pub version: String,
    /// SHA-256 of the new text.
    pub sha256: String,
}

/// Writes a policy file: validated first (an invalid text changes nothing), only if the file
/// still has `base_sha256` (when given), the old text kept as `<file>.bak`, the new one written
/// to a temporary file, synced and renamed over the old, so that a reader never sees half.
pub fn save_policy(path: &Path, text: &str, base_sha256: Option<&str>) -> Result<Saved, SaveError> {
    let io = |error| SaveError::Io {
        path: path.display().to_string(),
        error,
    };
    let policy = toolgate_policy::parse(text).map_err(SaveError::Invalid)?;
    let current = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    if let Some(base) = base_sha256 {
        let now = current.as_deref().map(text_sha256).unwrap_or_default();
        if now != base {
            return Err(SaveError::Conflict(path.display().to_string()));
        }
    }
    let sibling = |suffix: &str| {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        path.with_file_name(name)
    };
    let backup = match &current {
        Some(old) => {
            let backup = sibling(".bak");
            std::fs::write(&backup, old).map_err(io)?;
            if let Ok(m) = std::fs::metadata(path) {
                std::fs::set_permissions(&backup, m.permissions()).map_err(io)?;
            }
            Some(backup)
        }
        None => None,
    };
    let temporary = sibling(&format!(".tmp-{}", std::process::id()));
    // The new file keeps the old one's permissions (a policy readable only by its owner
    // stays so).
    let permissions = std::fs::metadata(path).ok().map(|m| m.permissions());
    let written = (|| {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&temporary)?;
        if let Some(p) = &permissions {
            file.set_permissions(p.clone())?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(io(e));
    }
    Ok(Saved {
        backup,
        version: policy.version,
        sha256: text_sha256(text),
    })
}

/// What a policy decides for one call of `server`/`tool` by `grant`, and why, with the state of
/// the counters it would take: `toolgate explain` and the policy builder's "try a call".
pub async fn explain(
    config: &Config,
    stores: &Stores,
    grant: &str,
    policy: &Policy,
    server: &str,
    tool: &str,
    args: &Value,
) -> Result<Value, StoreError> {
    // The gateway matches policies against the aggregated name whatever endpoint is used.
    let exposed = crate::names::exposed(server, tool);
    let decision = policy.explain(&Call {
        grant,
        session: "(explain)",
        server,
        tool,
        exposed: &exposed,
        categories: &[],
        severity: None,
        args,
    });
    let now = now_ms();
    let specs = counter_specs(&decision.counters, now);
    let usage = stores.counters.usage(&specs, now).await?;
    // A call the policy allows is refused when one of its counters is full: say so, as the
    // gateway would.
    let full = decision
        .counters
        .iter()
        .zip(&usage)
        .find(|(c, u)| u.used + c.amount > c.max);
    let (verdict, rule, message) = match (&decision.verdict, full) {
        (Verdict::Allow, Some((c, u))) => ("limited", &*c.rule, limited_message(c, *u, now)),
        (verdict, _) => (
            verdict.as_str(),
            decision.rule.as_str(),
            decision.message.clone(),
        ),
    };
    let counters: Vec<Value> = decision
        .counters
        .iter()
        .zip(&usage)
        .map(|(c, u)| {
            json!({
                "rule": &*c.rule, "counter": &*c.counter, "key": c.key, "scope": c.scope.as_str(),
                "window": window_name(&c.window), "max": c.max, "takes": c.amount, "used": u.used,
                "would_exceed": u.used + c.amount > c.max,
                "resets_at": utc_rfc3339(u.reset_at_ms),
            })
        })
        .collect();
    Ok(json!({
        "decision": verdict,
        "rule": rule,
        "message": message,
        "approval": match &decision.verdict {
            Verdict::Approve(a) => json!({"timeout_ms": a.timeout_ms, "approvers": a.approvers}),
            _ => Value::Null,
        },
        "policy_version": policy.version,
        "server": server,
        "tool": tool,
        "fired": decision.fired.iter().map(|f| json!({"rule": f.rule, "effect": f.effect})).collect::<Vec<_>>(),
        "counters": counters,
        "counter_store": match config.counters.backend {
            CounterBackend::Sqlite => "sqlite",
            CounterBackend::Redis => "redis",
            CounterBackend::Memory => "memory (a running gateway's counts live in its memory; shown as 0)",
        },
    }))
}

/// Finds the server of a tool named as a client or an operator would: `server/tool`, the
/// exposed `server__tool`, or a plain name when one server is configured.
pub fn resolve_tool(config: &Config, tool: &str) -> Result<(String, String), String> {
    if let Some((s, t)) = tool.split_once('/') {
        return match config.server(s) {
            Some(_) => Ok((s.to_owned(), t.to_owned())),
            None => Err(format!("no server named {s:?} in the configuration")),
        };
    }
    if config.servers.len() == 1 {
        return Ok((config.servers[0].name.clone(), tool.to_owned()));
    }
    for s in &config.servers {
        if let Some(t) = tool
            .strip_prefix(s.name.as_str())
            .and_then(|t| t.strip_prefix("__"))
        {
            return Ok((s.name.clone(), t.to_owned()));
        }
    }
    Err("several servers are configured: name the tool as server/tool".into())
}
