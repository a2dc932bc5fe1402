//! The rules every call passes: each grant's policy (hot-reloaded), rate-limit counters
//! reserved before forwarding, and approvals for calls a policy holds.
//!
//! The session asks [`Guard::admit`] before it forwards a `tools/call`; the answer is either
//! a [`Pass`] (forward, then [`Pass::settle`] the counters with the outcome) or a
//! [`Refusal`] to send back instead. The policy itself is pure (`toolgate-policy`); the guard
//! owns the clock, the files and the stores.

use foldhash::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use toolgate_policy::{Approval, Call, CounterRequest, Decision, Policy, Verdict, limit_message};
use toolgate_state::{
    Approval as PendingApproval, ApprovalStatus, ApprovalStore, AuditRecord, CounterSpec,
    CounterStore, Reservation, Reserve, Usage,
};
use toolgate_wire::raw;

use crate::audit::AuditLog;
use crate::config::{Config, StoreFailure};
use crate::grant::Grant;
use crate::stores::Stores;

/// Why the guard could not start.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// A grant's policy file could not be read.
    #[error("grant {grant:?}: cannot read policy {path}: {source}")]
    Read {
        grant: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A grant's policy file is invalid.
    #[error("grant {grant:?}: invalid policy {path}:\n{error}")]
    Invalid {
        grant: String,
        path: PathBuf,
        error: toolgate_policy::PolicyError,
    },
    /// The counter store could not be opened.
    #[error("{0}")]
    Store(#[from] toolgate_state::StoreError),
}

/// A policy as loaded from its file.
struct Loaded {
    policy: Arc<Policy>,
    digest: [u8; 32],
    /// The file could not be read at the last check (reported once, not at every check).
    unreadable: bool,
}

/// Policies, counters and approvals for every grant.
pub struct Guard {
    /// By path, as bytes: every call looks its policy up, and hashing a `Path` walks its
    /// components.
    policies: RwLock<HashMap<OsString, Loaded>>,
    stores: Stores,
    on_store_error: StoreFailure,
    store_timeout: Duration,
    approval_command: Vec<String>,
    webhook: Option<String>,
    /// Woken when an approval is decided, in this process or (through Redis) another.
    decided: Arc<tokio::sync::Notify>,
    /// Key of the `requestState`s of approvals asked of 2026-07-28 clients.
    state_key: [u8; 32],
    /// The web UI's base URL, for approval links (URL-mode elicitation).
    admin_url: Option<String>,
    audit: std::sync::OnceLock<Arc<AuditLog>>,
}

/// What the session does with a call.
pub enum Admission {
    /// Forward it; settle the counters afterwards.
    Pass(Pass),
    /// Send this result instead (a visible denial).
    Refuse(Refusal),
    /// Answer as for a tool that does not exist.
    Unknown,
    /// Answer with an invalid-params error: the request is malformed (e.g. `arguments` that
    /// is not an object), which no policy should be asked to judge.
    Invalid(&'static str),
    /// Ask the calling (2026-07-28) client's user: answer `input_required` with this pending
    /// approval's question and `request_state`; the client's retry carries the answer.
    AskClient {
        /// The pending approval.
        approval: Box<PendingApproval>,
        /// The integrity-protected `requestState` naming it.
        request_state: String,
    },
}

/// A call allowed through, with the counters it holds.
pub struct Pass {
    reservation: Option<(Arc<dyn CounterStore>, Reservation)>,
    /// The decision, for the log.
    pub decision: Decision,
    /// The policy version that decided.
    pub policy_version: String,
    /// A human approved it.
    pub approved: bool,
}

/// How a forwarded call ended, for its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with a result (an `isError` result counts), or has the call
    /// and the client gave up waiting (cancelled, went away): the counters are kept.
    Answered,
    /// The upstream failed: protocol error or transport failure. Counters are given back.
    Failed,
}

impl Pass {
    /// Commits or rolls back the call's counters.
    pub async fn settle(self, outcome: Outcome) {
        let Some((store, reservation)) = self.reservation else {
            return;
        };
        let result = match outcome {
            Outcome::Answered => store.commit(reservation).await,
            Outcome::Failed => store.rollback(reservation).await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "settling rate-limit counters failed");
        }
    }
}

/// A visible denial.
pub struct Refusal {
    /// `denied`, `limited`, `approval_denied`, `approval_expired`, `error`.
    pub decision: &'static str,
    /// The rule's JSON pointer.
    pub rule: String,
    /// What the agent reads after `[POLICY DENIED] `.
    pub message: String,
    /// The policy version that decided.
    pub policy_version: String,
}

impl Refusal {
    /// The `tools/call` result that carries the denial.
    pub fn result(&self) -> Box<RawValue> {
        raw(&json!({
            "content": [{"type": "text", "text": format!("[POLICY DENIED] {}", self.message)}],
            "isError": true,
            "_meta": {"toolgate/decision": {
                "decision": self.decision,
                "rule": self.rule,
                "policy_version": self.policy_version,
            }},
        }))
    }
}

/// The call being admitted.
pub struct CallInfo<'a> {
    /// The grant.
    pub grant: &'a Grant,
    /// The downstream session id.
    pub session: &'a str,
    /// The upstream server.
    pub server: &'a str,
    /// The tool's name on its server.
    pub tool: &'a str,
    /// Its aggregated name, `server__tool`, whatever endpoint the client used: a rule keyed
    /// by it binds the tool everywhere.
    pub exposed: &'a str,
    /// The catalog's categories for the tool (empty when unknown).
    pub categories: &'a [&'static str],
    /// The catalog's severity for the tool, when known.
    pub severity: Option<&'static str>,
    /// `params.arguments` as sent.
    pub arguments: Option<&'a RawValue>,
    /// The same, parsed once for the policy and the audit record ([`parse_arguments`]).
    pub args: &'a Value,
    /// Told the approval's id when the call is held for a human (to keep the client informed).
    pub on_hold: Option<&'a (dyn Fn(&str) + Send + Sync)>,
    /// Asks the calling client's user (MCP elicitation), for policies whose `approvers`
    /// include `"client"`: `Some((approved, reason))` once the user answers, `None` when the
    /// client cannot be asked or the user dismissed the question.
    pub ask_client: Option<&'a ClientAsker>,
    /// A 2026-07-28 client's part in approvals: it can be asked through `input_required`, or
    /// this request is its answer.
    pub client_input: Option<ClientInput>,
}

/// How a 2026-07-28 client takes part in an approval (it cannot be sent requests: it is
/// asked by an `input_required` result and answers by retrying the call).
#[derive(Debug, Clone)]
pub enum ClientInput {
    /// The client declared elicitation: a held call may be answered `input_required`.
    CanAsk,
    /// The retry: the approval its verified `requestState` names, and the user's answer
    /// (`None`: dismissed; the call then waits for another approver).
    Answer {
        /// The approval's id.
        approval: String,
        /// `(approved, reason)`.
        answer: Option<(bool, Option<String>)>,
    },
}

/// How the guard asks the calling client's user to approve a held call.
pub type ClientAsker = dyn Fn(
        PendingApproval,
        toolgate_policy::AskClient,
    ) -> toolgate_state::BoxFuture<'static, Option<(bool, Option<String>)>>
    + Send
    + Sync;

/// The current UTC time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a call refused by a full counter is told: the limit and when it resets, after the
/// policy's own `on_deny` text if it has one.
pub fn limited_message(req: &CounterRequest, usage: Usage, now_ms: u64) -> String {
    let message = limit_message(req, usage.reset_at_ms, now_ms);
    match &req.on_deny {
        Some(custom) => format!("{custom} ({message})"),
        None => message,
    }
}

/// A call's `arguments` as the policy sees them: absent arguments are an empty object to the
/// upstream, and so to the policy; `null` if they are not JSON (a strictly parsed message's
/// always are).
pub fn parse_arguments(arguments: Option<&RawValue>) -> Value {
    match arguments {
        None => Value::Object(Default::default()),
        Some(a) => serde_json::from_str(a.get()).unwrap_or(Value::Null),
    }
}

/// Counter specs for a decision's counters at `now`.
pub fn counter_specs(counters: &[CounterRequest], now: u64) -> Vec<CounterSpec> {
    counters
        .iter()
        .map(|c| CounterSpec {
            key: c.key.clone(),
            max: c.max,
            amount: c.amount,
            window_ms: c.window.length_ms,
            sliding: c.window.sliding,
            window_start_ms: c.window.start(now),
        })
        .collect()
}

/// Reads and compiles a policy file.
pub fn load_policy(path: &Path) -> Result<(Policy, [u8; 32]), LoadError> {
    let text = std::fs::read_to_string(path).map_err(LoadError::Read)?;
    let digest = Sha256::digest(text.as_bytes()).into();
    toolgate_policy::parse(&text)
        .map(|p| (p, digest))
        .map_err(LoadError::Invalid)
}

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading it failed.
    #[error("{0}")]
    Read(std::io::Error),
    /// It is invalid.
    #[error("{0}")]
    Invalid(toolgate_policy::PolicyError),
}

impl Guard {
    /// Loads every grant's policy and opens the counter store. An invalid policy stops the
    /// start: the operator hears about it before any agent does.
    pub async fn new(config: &Config, stores: Stores) -> Result<Guard, GuardError> {
        let mut policies = HashMap::default();
        for g in &config.grants {
            let Some(path) = &g.policy else { continue };
            if policies.contains_key(path.as_os_str()) {
                continue;
            }
            let (policy, digest) = load_policy(path).map_err(|e| match e {
                LoadError::Read(source) => GuardError::Read {
                    grant: g.name.clone(),
                    path: path.clone(),
                    source,
                },
                LoadError::Invalid(error) => GuardError::Invalid {
                    grant: g.name.clone(),
                    path: path.clone(),
                    error,
                },
            })?;
            policies.insert(
                path.clone().into_os_string(),
                Loaded {
                    policy: Arc::new(policy),
                    digest,
                    unreadable: false,
                },
            );
        }
        let decided = Arc::new(tokio::sync::Notify::new());
        if let Some(redis) = &stores.redis {
            let decided = Arc::downgrade(&decided);
            redis.watch_decisions(move |_| {
                if let Some(decided) = decided.upgrade() {
                    decided.notify_waiters();
                }
            });
        }
        Ok(Guard {
            policies: RwLock::new(policies),
            stores,
            on_store_error: config.counters.on_store_error,
            store_timeout: config.counters.store_timeout,
            approval_command: config.approvals.command.clone(),
            webhook: config.approvals.webhook.clone(),
            decided,
            state_key: config.shared.session_key.unwrap_or_else(rand::random),
            admin_url: config.admin_url.clone(),
            audit: std::sync::OnceLock::new(),
        })
    }

    /// Where approvals asked and policy reloads are recorded (set once by the gateway).
    pub fn set_audit(&self, audit: Arc<AuditLog>) {
        let _ = self.audit.set(audit);
    }

    /// The policy in force for a grant; `None` when the grant has none (everything denied).
    pub fn policy(&self, grant: &Grant) -> Option<Arc<Policy>> {
        self.policy_at(grant.policy.as_ref()?)
    }

    /// The policy in force from a policy file.
    pub fn policy_at(&self, path: &Path) -> Option<Arc<Policy>> {
        self.policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path.as_os_str())
            .map(|l| l.policy.clone())
    }

    /// Loads a policy file a new grant names (a stored grant created while the gateway runs).
    /// An unreadable or invalid file leaves the grant without a policy (it may do nothing)
    /// until it is fixed and the grant changed again.
    pub fn track(&self, path: &Path) {
        if self
            .policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(path.as_os_str())
        {
            return;
        }
        match load_policy(path) {
            Ok((policy, digest)) => {
                tracing::info!(policy = %path.display(), version = %policy.version, "policy loaded for a stored grant");
                self.policies
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        path.as_os_str().to_owned(),
                        Loaded {
                            policy: Arc::new(policy),
                            digest,
                            unreadable: false,
                        },
                    );
            }
            Err(e) => {
                tracing::error!(policy = %path.display(), "a stored grant's policy cannot be loaded; the grant may do nothing: {e}")
            }
        }
    }

    /// The state stores.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The counter store (for `explain` and tests).
    pub fn counters(&self) -> &Arc<dyn CounterStore> {
        &self.stores.counters
    }

    /// Re-reads every policy file whose content changed. An invalid or unreadable file keeps
    /// the policy in force and logs every problem once; sessions are untouched, the next call
    /// uses the new one. Returns the files whose policy changed.
    pub fn reload(&self) -> Vec<PathBuf> {
        let paths: Vec<(PathBuf, [u8; 32], bool)> = self
            .policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(p, l)| (PathBuf::from(p), l.digest, l.unreadable))
            .collect();
        let mut changed = Vec::new();
        for (path, digest, unreadable) in paths {
            let text = match std::fs::read(&path) {
                Ok(t) if unreadable => {
                    let mut policies = self.policies.write().unwrap_or_else(|e| e.into_inner());
                    if let Some(slot) = policies.get_mut(path.as_os_str()) {
                        slot.unreadable = false;
                    }
                    tracing::info!(policy = %path.display(), "policy file readable again");
                    t
                }
                Ok(t) => t,
                Err(e) => {
                    let mut policies = self.policies.write().unwrap_or_else(|e| e.into_inner());
                    if let Some(slot) = policies.get_mut(path.as_os_str()).filter(|s| !s.unreadable)
                    {
                        slot.unreadable = true;
                        tracing::error!(policy = %path.display(), error = %e, keeping = %slot.policy.version, "cannot read policy; keeping the one in force");
                    }
                    continue;
                }
            };
            let new_digest: [u8; 32] = Sha256::digest(&text).into();
            if new_digest == digest {
                continue;
            }
            let parsed = std::str::from_utf8(&text)
                .map_err(|_| "the file is not UTF-8".to_owned())
                .and_then(|t| toolgate_policy::parse(t).map_err(|e| e.to_string()));
            let mut policies = self.policies.write().unwrap_or_else(|e| e.into_inner());
            let Some(slot) = policies.get_mut(path.as_os_str()) else {
                continue;
            };
            match parsed {
                Ok(policy) => {
                    tracing::info!(policy = %path.display(), from = %slot.policy.version, to = %policy.version, "policy reloaded");
                    slot.policy = Arc::new(policy);
                    slot.digest = new_digest;
                    changed.push(path);
                }
                Err(error) => {
                    // Remember the digest so the same broken file is reported once.
                    slot.digest = new_digest;
                    tracing::error!(policy = %path.display(), keeping = %slot.policy.version, "invalid policy; keeping the one in force:\n{error}");
                }
            }
        }
        changed
    }

    /// Decides a call, reserves its counters, and holds it for approval when the policy says
    /// so. Counters come first: a human is never asked about a call that its limits would
    /// refuse anyway, and a call that is not approved gives its counters back.
    pub async fn admit(&self, call: &CallInfo<'_>) -> Admission {
        let Some(policy) = self.policy(call.grant) else {
            return Admission::Unknown;
        };
        let args = call.args;
        let decision = policy.decide(&Call {
            grant: &call.grant.name,
            session: call.session,
            server: call.server,
            tool: call.tool,
            exposed: call.exposed,
            categories: call.categories,
            severity: call.severity,
            args,
        });
        let refuse = |decision: &'static str, rule: &str, message: String| {
            Admission::Refuse(Refusal {
                decision,
                rule: rule.to_owned(),
                message,
                policy_version: policy.version.clone(),
            })
        };
        if !matches!(decision.verdict, Verdict::Unknown) && !args.is_object() {
            return Admission::Invalid("tools/call `arguments` must be an object");
        }
        let approval = match &decision.verdict {
            Verdict::Unknown => return Admission::Unknown,
            Verdict::Deny => return refuse("denied", &decision.rule, decision.message.clone()),
            Verdict::Allow => None,
            Verdict::Approve(approval) => Some(approval.clone()),
        };
        let mut pass = Pass {
            reservation: None,
            policy_version: policy.version.clone(),
            decision,
            approved: false,
        };
        if !pass.decision.counters.is_empty()
            && let Err(refusal) = self.reserve(&mut pass).await
        {
            return refusal;
        }
        let Some(approval) = approval else {
            return Admission::Pass(pass);
        };
        // Boxed: holding a call is rare and its future is most of this one's size, which every
        // call's request future would otherwise carry (and move) inline.
        let answer = Box::pin(self.hold(call, args, &pass.decision, &policy, &approval)).await;
        let (decision, message) = match answer {
            Approved::Yes => {
                pass.approved = true;
                return Admission::Pass(pass);
            }
            Approved::AskClient(approval) => {
                // The retry reserves again: nothing is held while the user thinks.
                pass.settle(Outcome::Failed).await;
                let request_state = self.approval_state(&call.grant.name, &approval.id);
                return Admission::AskClient {
                    approval,
                    request_state,
                };
            }
            Approved::No(reason) => (
                "approval_denied",
                format!("a human denied this call: {reason}"),
            ),
            Approved::Expired => (
                "approval_expired",
                "the approval request expired without an answer".to_owned(),
            ),
            Approved::Unasked => (
                "approval_denied",
                "this call needs a human's approval, and the approval could not be recorded; try again later"
                    .to_owned(),
            ),
        };
        let rule = pass.decision.rule.clone();
        pass.settle(Outcome::Failed).await;
        refuse(decision, &rule, message)
    }

    /// Reserves a passing call's counters; the refusal to send when a limit is reached or the
    /// store fails (unless `on_store_error = "allow"`).
    async fn reserve(&self, pass: &mut Pass) -> Result<(), Admission> {
        let refuse = |decision: &'static str, rule: &str, message: String| {
            Admission::Refuse(Refusal {
                decision,
                rule: rule.to_owned(),
                message,
                policy_version: pass.policy_version.clone(),
            })
        };
        let now = now_ms();
        let specs = counter_specs(&pass.decision.counters, now);
        let reserved = tokio::time::timeout(
            self.store_timeout,
            self.stores.counters.reserve(&specs, now),
        )
        .await;
        let error = match reserved {
            Ok(Ok(Reserve::Granted(r))) => {
                pass.reservation = Some((self.stores.counters.clone(), r));
                return Ok(());
            }
            Ok(Ok(Reserve::Exceeded { index, usage })) => {
                let req = &pass.decision.counters[index];
                return Err(refuse(
                    "limited",
                    &req.rule,
                    limited_message(req, usage, now),
                ));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!(
                "counter store unavailable: no answer within {:?}",
                self.store_timeout
            ),
        };
        match self.on_store_error {
            StoreFailure::Deny => {
                tracing::error!(error = %error, "rate-limit store failed; denying the call (fail closed)");
                Err(refuse(
                    "error",
                    &pass.decision.counters[0].rule,
                    "rate limits cannot be checked right now (counter store unavailable); try again later".into(),
                ))
            }
            StoreFailure::Allow => {
                tracing::warn!(error = %error, "rate-limit store failed; letting the call through uncounted (on_store_error = \"allow\")");
                Ok(())
            }
        }
    }

    /// Holds a call for a human: records a pending approval bound to this exact call (grant,
    /// session, tool, argument digest, policy version), asks the approval command if one is
    /// configured, and waits until someone decides (the command, `toolgate approvals`, the
    /// admin API) or the approval expires. A retry of a call approved after its client gave up
    /// uses that approval instead of asking again; an approval is used once.
    async fn hold(
        &self,
        call: &CallInfo<'_>,
        args: &Value,
        decision: &Decision,
        policy: &Policy,
        approval: &Approval,
    ) -> Approved {
        let now = now_ms();
        let held = PendingApproval {
            id: crate::to_hex(&rand::random::<[u8; 16]>()),
            status: ApprovalStatus::Pending,
            created_ms: now,
            expires_ms: now + approval.timeout_ms,
            grant: call.grant.name.to_string(),
            session: call.session.to_owned(),
            server: call.server.to_owned(),
            tool: call.tool.to_owned(),
            args_sha256: crate::manage::text_sha256(call.arguments.map_or("{}", |a| a.get())),
            arguments: policy.audit().redacted(args),
            rule: decision.rule.clone(),
            policy_version: policy.version.clone(),
            approvers: approval.approvers.clone(),
            severity: call.severity.map(str::to_owned),
            decided_by: None,
            reason: None,
            decided_ms: None,
        };
        if let Ok(Some(earlier)) = self.stores.approvals.find_approved(&held, now).await
            && let Ok(true) = self.stores.approvals.consume(&earlier.id, now).await
        {
            tracing::info!(approval = %earlier.id, tool = call.tool, grant = %call.grant.name, "a retry of an approved call uses its approval");
            return Approved::Yes;
        }
        match &call.client_input {
            Some(ClientInput::Answer {
                approval: id,
                answer,
            }) => {
                return self
                    .resume_client_approval(call, &held, id, answer.clone())
                    .await;
            }
            Some(ClientInput::CanAsk) if approval.approvers.iter().any(|a| a == "client") => {
                if let Err(e) = self.stores.approvals.create(held.clone()).await {
                    tracing::error!(error = %e, "cannot record the approval request; denying the call");
                    return Approved::Unasked;
                }
                self.announce_pending(call, args, &held);
                return Approved::AskClient(Box::new(held));
            }
            _ => {}
        }
        if let Err(e) = self.stores.approvals.create(held.clone()).await {
            tracing::error!(error = %e, "cannot record the approval request; denying the call");
            return Approved::Unasked;
        }
        self.announce_pending(call, args, &held);
        let command = async {
            if let Some((approve, reason)) = self
                .ask_command(call, args, decision, policy, approval, &held)
                .await
            {
                let by = format!("command:{}", self.approval_command[0]);
                let _ = self
                    .stores
                    .approvals
                    .decide(&held.id, approve, &by, reason.as_deref(), now_ms())
                    .await;
                self.announce(&held.id).await;
            }
        };
        let client = async {
            let Some(ask) = call
                .ask_client
                .filter(|_| approval.approvers.iter().any(|a| a == "client"))
            else {
                return;
            };
            if let Some((approve, reason)) = ask(held.clone(), approval.ask_client).await {
                let _ = self
                    .stores
                    .approvals
                    .decide(&held.id, approve, "client", reason.as_deref(), now_ms())
                    .await;
                self.announce(&held.id).await;
            }
        };
        let askers = async {
            tokio::join!(command, client);
            std::future::pending::<()>().await
        };
        let wait = self.await_decision(call, &held.id);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(approval.timeout_ms + 100);
        tokio::select! {
            answer = tokio::time::timeout_at(deadline, wait) => answer.unwrap_or(Approved::Expired),
            _ = askers => unreachable!("the askers branch never completes"),
        }
    }

    /// Makes a new pending approval known: the log, the audit, the client's progress, the
    /// webhook.
    fn announce_pending(&self, call: &CallInfo<'_>, args: &Value, held: &PendingApproval) {
        tracing::warn!(approval = %held.id, tool = call.tool, grant = %call.grant.name, "call held for a human's approval: toolgate approvals approve {}", held.id);
        if let Some(audit) = self.audit.get() {
            audit.record_later(AuditRecord {
                at_ms: held.created_ms,
                kind: "call".into(),
                decision: "approval_pending".into(),
                grant: Some(held.grant.clone()),
                session: Some(held.session.clone()),
                server: Some(held.server.clone()),
                method: Some("tools/call".into()),
                tool: Some(held.tool.clone()),
                rule: Some(held.rule.clone()),
                policy_version: Some(held.policy_version.clone()),
                arg_keys: args
                    .as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default(),
                args_sha256: Some(held.args_sha256.clone()),
                detail: Some(json!({"approval": held.id, "expires_ms": held.expires_ms})),
                ..AuditRecord::default()
            });
        }
        if let Some(on_hold) = call.on_hold {
            on_hold(&held.id);
        }
        if let Some(url) = self.webhook.clone() {
            let notice = json!({"event": "approval_pending", "approval": &held}).to_string();
            let id = held.id.clone();
            tokio::spawn(async move {
                match crate::upstream::post_json(&url, notice, WEBHOOK_TIMEOUT).await {
                    Ok(status) if (200..300).contains(&status) => {}
                    Ok(status) => {
                        tracing::warn!(approval = %id, status, "the approvals webhook refused the notice")
                    }
                    Err(e) => {
                        tracing::warn!(approval = %id, error = %e, "the approvals webhook could not be told")
                    }
                }
            });
        }
    }

    /// Waits until approval `id` is decided (or gone), keeping the client informed; consumes
    /// it when approved. Unbounded: the caller sets the deadline.
    async fn await_decision(&self, call: &CallInfo<'_>, id: &str) -> Approved {
        let mut told = tokio::time::Instant::now();
        loop {
            if told.elapsed() >= HOLD_KEEPALIVE
                && let Some(on_hold) = call.on_hold
            {
                on_hold(id);
                told = tokio::time::Instant::now();
            }
            let woken = self.decided.notified();
            match self.stores.approvals.get(id, now_ms()).await {
                Ok(Some(a)) => match a.status {
                    ApprovalStatus::Pending => {}
                    ApprovalStatus::Approved => {
                        return match self.stores.approvals.consume(id, now_ms()).await {
                            Ok(true) => {
                                tracing::info!(approval = %id, by = a.decided_by.as_deref().unwrap_or("?"), "call approved");
                                Approved::Yes
                            }
                            _ => Approved::Expired,
                        };
                    }
                    ApprovalStatus::Denied => {
                        return Approved::No(a.reason.unwrap_or_else(|| "no reason given".into()));
                    }
                    ApprovalStatus::Expired | ApprovalStatus::Used => return Approved::Expired,
                },
                Ok(None) => return Approved::Expired,
                Err(e) => tracing::warn!(error = %e, "reading an approval failed; retrying"),
            }
            // Decisions made in this process, or announced on Redis, wake the wait at once;
            // others (the CLI or another instance without Redis) are seen at the next poll.
            let poll = if self.stores.redis.is_some() {
                APPROVAL_POLL_WITH_REDIS
            } else {
                APPROVAL_POLL
            };
            let _ = tokio::time::timeout(poll, woken).await;
        }
    }

    /// A 2026-07-28 client's retry answering an approval it was asked about: the approval
    /// must be pending (or decided) for this very call; the user's answer decides it unless
    /// someone decided first; then the call goes on as that decision says.
    async fn resume_client_approval(
        &self,
        call: &CallInfo<'_>,
        this_call: &PendingApproval,
        id: &str,
        answer: Option<(bool, Option<String>)>,
    ) -> Approved {
        let now = now_ms();
        let existing = match self.stores.approvals.get(id, now).await {
            Ok(Some(a)) => a,
            Ok(None) => return Approved::Expired,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the approval a client answered");
                return Approved::Unasked;
            }
        };
        // Stateless clients have no session of their own to bind (another instance may serve
        // the retry): the grant, server, tool, arguments and policy version must match.
        let same_call = PendingApproval {
            session: existing.session.clone(),
            ..this_call.clone()
        };
        if !existing.binds(&same_call) {
            tracing::warn!(approval = id, grant = %call.grant.name, tool = call.tool, "a client answered an approval with a different call; asking again is refused");
            return Approved::No(
                "the answer was for another call (other arguments or tool)".into(),
            );
        }
        // Only an approval that asked the client takes the client's answer.
        let client_may_decide = existing.approvers.iter().any(|a| a == "client");
        if let Some((approve, reason)) = answer
            && existing.status == ApprovalStatus::Pending
            && client_may_decide
        {
            let _ = self
                .stores
                .approvals
                .decide(id, approve, "client", reason.as_deref(), now)
                .await;
            self.announce(id).await;
        }
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(existing.expires_ms.saturating_sub(now) + 100);
        tokio::time::timeout_at(deadline, self.await_decision(call, id))
            .await
            .unwrap_or(Approved::Expired)
    }

    /// The `requestState` that names approval `id` to the client of `grant`: the id with a
    /// MAC, so that a client cannot make it name another approval or another grant's.
    pub fn approval_state(&self, grant: &str, id: &str) -> String {
        let mac = crate::seal::mac(
            &self.state_key,
            &[b"approval", grant.as_bytes(), id.as_bytes()],
        );
        format!("{APPROVAL_STATE_PREFIX}{id}.{}", crate::to_hex(&mac))
    }

    /// The approval a `requestState` names, if it is one this gateway (or one sharing its
    /// `session_key`) made for `grant`.
    pub fn approval_in_state(&self, grant: &str, state: &str) -> Option<String> {
        let (id, mac) = state.strip_prefix(APPROVAL_STATE_PREFIX)?.split_once('.')?;
        let mac = hex::decode(mac).ok()?;
        let want = crate::seal::mac(
            &self.state_key,
            &[b"approval", grant.as_bytes(), id.as_bytes()],
        );
        bool::from(subtle::ConstantTimeEq::ct_eq(&want[..], &mac[..])).then(|| id.to_owned())
    }

    /// The page where the client's user decides approval `id` (URL-mode elicitation): the
    /// web UI's `/approve/{id}` with a key that lets the bearer decide that approval only.
    /// `None` without a web UI.
    pub fn approval_link(&self, id: &str) -> Option<String> {
        let base = self.admin_url.as_ref()?;
        let key = crate::seal::mac(&self.state_key, &[b"approval-link", id.as_bytes()]);
        Some(format!("{base}/approve/{id}?key={}", crate::to_hex(&key)))
    }

    /// Whether `key` is the one [`Guard::approval_link`] put in approval `id`'s link.
    pub fn approval_link_ok(&self, id: &str, key: &str) -> bool {
        let want = crate::seal::mac(&self.state_key, &[b"approval-link", id.as_bytes()]);
        hex::decode(key)
            .is_ok_and(|key| bool::from(subtle::ConstantTimeEq::ct_eq(&want[..], &key[..])))
    }

    /// Decides a pending approval from this process (the admin API): waiting calls wake at
    /// once. `None` when there was nothing pending to decide.
    pub async fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        reason: Option<&str>,
    ) -> Result<Option<PendingApproval>, toolgate_state::StoreError> {
        let decided = self
            .stores
            .approvals
            .decide(id, approve, by, reason, now_ms())
            .await?;
        self.announce(id).await;
        Ok(decided)
    }

    /// The approval store (for the admin API and the CLI).
    pub fn approvals(&self) -> &Arc<dyn ApprovalStore> {
        &self.stores.approvals
    }

    /// Wakes the calls waiting on approval `id`, here and on every other instance.
    async fn announce(&self, id: &str) {
        self.decided.notify_waiters();
        self.stores.announce_decision(id).await;
    }

    /// Asks the approval command, if one is configured: `Some((approved, reason))` once it
    /// answers, `None` when there is none or it cannot be run (the call then waits for
    /// another approver).
    async fn ask_command(
        &self,
        call: &CallInfo<'_>,
        args: &Value,
        decision: &Decision,
        policy: &Policy,
        approval: &Approval,
        held: &PendingApproval,
    ) -> Option<(bool, Option<String>)> {
        let timeout_ms = approval.timeout_ms;
        let (program, rest) = self.approval_command.split_first()?;
        let request = json!({
            "approval": held.id,
            "grant": &*call.grant.name,
            "session": call.session,
            "server": call.server,
            "tool": call.tool,
            "arguments": args,
            "rule": decision.rule,
            "policy_version": policy.version,
            "timeout_ms": timeout_ms,
            "approvers": approval.approvers,
        });
        let child = tokio::process::Command::new(program)
            .args(rest)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(program = %program, error = %e, "cannot start the approval command; the call waits for another approver (toolgate approvals)");
                return None;
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(format!("{request}\n").as_bytes()).await;
        }
        let mut out = Vec::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = (&mut stdout).take(4096).read_to_end(&mut out).await;
        }
        match child.wait().await {
            Ok(status) => {
                let reason = String::from_utf8_lossy(&out)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(500)
                    .collect::<String>();
                Some((status.success(), (!reason.is_empty()).then_some(reason)))
            }
            Err(e) => {
                tracing::error!(program = %program, error = %e, "the approval command failed; the call waits for another approver");
                None
            }
        }
    }
}

/// How often a held call looks at its approval (decisions made in this process wake it at
/// once).
/// Prefix of the `requestState` of an approval asked of a 2026-07-28 client.
pub const APPROVAL_STATE_PREFIX: &str = "tg-approval.";
const APPROVAL_POLL: Duration = Duration::from_millis(250);
/// The same when Redis announces every decision: polling only covers a missed message.
const APPROVAL_POLL_WITH_REDIS: Duration = Duration::from_secs(3);
/// How long the approvals webhook may take to accept a notice.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a held call's client is told it still waits.
const HOLD_KEEPALIVE: Duration = Duration::from_secs(10);

/// What became of an approval request.
enum Approved {
    Yes,
    /// Ask the client (`input_required`) about this pending approval.
    AskClient(Box<PendingApproval>),
    /// A human said no, with this reason.
    No(String),
    Expired,
    /// The request could not be recorded (the log says why).
    Unasked,
}
