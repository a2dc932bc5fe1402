//! Approvals: a call a policy holds for a human, bound to that exact call.
//!
//! An approval names the grant, session, server, tool, the SHA-256 of the arguments and the
//! policy version that asked for it. It is decided once (approved or denied, by whom and
//! why), expires unanswered, and an approval is used at most once: approving one call never
//! lets a retry with other arguments through.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::counters::{BoxFuture, StoreError};

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a human.
    Pending,
    /// A human said yes; the call has not gone through yet.
    Approved,
    /// A human said no.
    Denied,
    /// Nobody answered in time.
    Expired,
    /// Approved, and the call it was for went through.
    Used,
}

impl ApprovalStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Used => "used",
        }
    }

    /// Parses a stored status.
    pub fn parse(text: &str) -> Option<ApprovalStatus> {
        [
            ApprovalStatus::Pending,
            ApprovalStatus::Approved,
            ApprovalStatus::Denied,
            ApprovalStatus::Expired,
            ApprovalStatus::Used,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// Random, unguessable (it is what an approver names).
    pub id: String,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// When it was asked for, UTC milliseconds.
    pub created_ms: u64,
    /// When it expires unanswered.
    pub expires_ms: u64,
    /// The grant that made the call.
    pub grant: String,
    /// The downstream session.
    pub session: String,
    /// The upstream server.
    pub server: String,
    /// The tool's name on its server.
    pub tool: String,
    /// SHA-256 (hex) of the arguments as sent.
    pub args_sha256: String,
    /// The arguments, for the approver to judge (redacted as the policy's `audit.redact`
    /// says).
    pub arguments: Value,
    /// The rule that asked for approval.
    pub rule: String,
    /// The policy version that asked.
    pub policy_version: String,
    /// Who may approve (empty: any approver).
    pub approvers: Vec<String>,
    /// The catalog's severity of the tool, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Who decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// Why (for a denial, what the agent is told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was decided, UTC milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_ms: Option<u64>,
}

impl Approval {
    /// Whether it is for this very call.
    pub fn binds(&self, other: &Approval) -> bool {
        self.grant == other.grant
            && self.session == other.session
            && self.server == other.server
            && self.tool == other.tool
            && self.args_sha256 == other.args_sha256
            && self.policy_version == other.policy_version
    }
}

/// A store of approvals, shared by every gateway process that uses it.
pub trait ApprovalStore: Send + Sync {
    /// Records a new pending approval.
    fn create(&self, approval: Approval) -> BoxFuture<'_, Result<(), StoreError>>;
    /// One approval, with expiry applied.
    fn get<'a>(
        &'a self,
        id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Approval>, StoreError>>;
    /// Approvals, newest first, with expiry applied: only pending ones unless `all`.
    fn list(&self, all: bool, now_ms: u64) -> BoxFuture<'_, Result<Vec<Approval>, StoreError>>;
    /// Decides a pending, unexpired approval. `None` when there is none to decide.
    fn decide<'a>(
        &'a self,
        id: &'a str,
        approve: bool,
        by: &'a str,
        reason: Option<&'a str>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Approval>, StoreError>>;
    /// Uses an approved approval for its call (once): whether it was approved and unused.
    fn consume<'a>(&'a self, id: &'a str, now_ms: u64) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// An approved, unused, unexpired approval for exactly this call (a retry of a call
    /// whose client gave up while a human was deciding), if any.
    fn find_approved<'a>(
        &'a self,
        call: &'a Approval,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Approval>, StoreError>>;
}

/// Applies expiry: a pending or approved-unused approval past its time is expired.
pub(crate) fn expire(a: &mut Approval, now_ms: u64) {
    if matches!(a.status, ApprovalStatus::Pending | ApprovalStatus::Approved)
        && now_ms >= a.expires_ms
    {
        a.status = ApprovalStatus::Expired;
    }
}

/// Approvals in this process's memory (tests; a gateway without a state directory).
#[derive(Debug, Default)]
pub struct MemoryApprovals {
    all: Mutex<BTreeMap<String, Approval>>,
}

impl MemoryApprovals {
    /// An empty store.
    pub fn new() -> MemoryApprovals {
        MemoryApprovals::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Approval>) -> T) -> T {
        f(&mut self.all.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn ready<T: Send + 'static>(v: T) -> BoxFuture<'static, T> {
    Box::pin(std::future::ready(v))
}

impl ApprovalStore for MemoryApprovals {
    fn create(&self, approval: Approval) -> BoxFuture<'_, Result<(), StoreError>> {
        self.with(|m| m.insert(approval.id.clone(), approval));
        ready(Ok(()))
    }

    fn get<'a>(
        &'a self,
        id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Approval>, StoreError>> {
        ready(Ok(self.with(|m| {
            let a = m.get_mut(id)?;
            expire(a, now_ms);
            Some(a.clone())
        })))
    }

    fn list(&self, all: bool, now_ms: u64) -> BoxFuture<'_, Result<Vec<Approval>, StoreError>> {
        ready(Ok(self.with(|m| {
            let mut out: Vec<Approval> = m
                .values_mut()
                .map(|a| {
                    expire(a, now_ms);
                    a.clone()
                })
                .filter(|a| all || a.status == ApprovalStatus::Pending)
                .collect();
            out.sort_by_key(|a| std::cmp::Reverse(a.created_ms));
            out
        })))
    }

    fn decide<'a>(
        &'a self,
        id: &'a str,
        approve: bool,
        by: &'a str,
        reason: Option<&'a str>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Approval>, StoreError>> {
        ready(Ok(self.with(|m| {
            let a = m.get_mut(id)?;
            expire(a, now_ms);
            if a.status != ApprovalStatus::Pending {
                return None;
            }
            a.status = if approve {
                ApprovalStatus::Approved
            } else {
                ApprovalStatus::Denied
            };
            a.decided_by = Some(by.to_owned());
            a.reason = reason.map(str::to_owned);
            a.decided_ms = Some(now_ms);
            Some(a.clone())
        })))
    }

    fn consume<'a>(&'a self, id: &'a str, now_ms: u64) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(Ok(self.with(|m| {
            let Some(a) = m.get_mut(id) else { return false };
            expire(a, now_ms);
            if a.status != ApprovalStatus::Approved {
                return false;
            }
            a.status = ApprovalStatus::Used;
            true
        })))
    }

    fn find_approved<'a>(
        &'a self,
        call: &'a Approval,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Approval>, StoreError>> {
        ready(Ok(self.with(|m| {
            for a in m.values_mut() {
                expire(a, now_ms);
            }
            m.values()
                .find(|a| a.status == ApprovalStatus::Approved && a.binds(call))
                .cloned()
        })))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn approval(id: &str, args: &str, created: u64) -> Approval {
        Approval {
            id: id.into(),
            status: ApprovalStatus::Pending,
            created_ms: created,
            expires_ms: created + 1_000,
            grant: "alice".into(),
            session: "s1".into(),
            server: "ssh".into(),
            tool: "ssh_exec".into(),
            args_sha256: args.into(),
            arguments: json!({"command": "rm -rf /tmp/x"}),
            rule: "/tools/ssh_exec/action".into(),
            policy_version: "sha256:1".into(),
            approvers: vec!["ops".into()],
            severity: Some("critical".into()),
            decided_by: None,
            reason: None,
            decided_ms: None,
        }
    }

    /// What every approval store must do.
    pub async fn contract(store: &dyn ApprovalStore) {
        store.create(approval("a", "d1", 100)).await.unwrap();
        store.create(approval("b", "d2", 200)).await.unwrap();
        store.create(approval("c", "d3", 300)).await.unwrap();
        let pending = store.list(false, 400).await.unwrap();
        assert_eq!(
            pending.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["c", "b", "a"]
        );
        assert_eq!(pending[0].arguments, json!({"command": "rm -rf /tmp/x"}));
        // Decided once.
        let a = store
            .decide("a", true, "ops", Some("looks fine"), 500)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.status, ApprovalStatus::Approved);
        assert_eq!(a.decided_by.as_deref(), Some("ops"));
        assert!(
            store
                .decide("a", false, "ops", None, 510)
                .await
                .unwrap()
                .is_none()
        );
        let b = store
            .decide("b", false, "ops", Some("no"), 520)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.status, ApprovalStatus::Denied);
        assert_eq!(b.reason.as_deref(), Some("no"));
        // Only the exact call finds an approval, and uses it once.
        let mut retry = approval("x", "d1", 600);
        assert_eq!(
            store.find_approved(&retry, 600).await.unwrap().unwrap().id,
            "a"
        );
        retry.args_sha256 = "other".into();
        assert!(store.find_approved(&retry, 600).await.unwrap().is_none());
        assert!(!store.consume("b", 600).await.unwrap());
        assert!(store.consume("a", 600).await.unwrap());
        assert!(!store.consume("a", 610).await.unwrap());
        assert_eq!(
            store.get("a", 610).await.unwrap().unwrap().status,
            ApprovalStatus::Used
        );
        // Unanswered past its time: expired, and cannot be decided.
        assert_eq!(
            store.get("c", 1_300).await.unwrap().unwrap().status,
            ApprovalStatus::Expired
        );
        assert!(
            store
                .decide("c", true, "ops", None, 1_300)
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.list(false, 1_300).await.unwrap().is_empty());
        assert_eq!(store.list(true, 1_300).await.unwrap().len(), 3);
        assert!(store.get("nope", 0).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn memory_approvals_keep_the_contract() {
        contract(&MemoryApprovals::new()).await;
    }
}
