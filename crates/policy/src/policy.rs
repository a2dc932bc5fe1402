//! The compiled policy and its decisions.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde_json::Value;

use crate::path::{Path, walk};
use crate::pattern::{Pattern, Target, glob_match};
use crate::predicate::{Outcome, Predicate, Subject};
use crate::window::{Window, utc_rfc3339};

/// Rule pointer of a decision made by `default: "deny"`.
pub const RULE_DEFAULT_DENY: &str = "(default deny)";
/// Rule pointer of a decision made by `default: "allow"`.
pub const RULE_DEFAULT_ALLOW: &str = "(default allow)";
/// Rule pointer of a hidden tool.
pub const RULE_HIDDEN: &str = "(hidden)";
/// Rule pointer of a grant without a policy.
pub const RULE_NO_POLICY: &str = "(no policy)";

/// A validated, compiled policy. Immutable: a reload builds a new one.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `sha256:` and the first 16 hex digits of the policy text's hash.
    pub version: String,
    pub(crate) default_allow: bool,
    pub(crate) hide_all: bool,
    pub(crate) hide: Vec<Pattern>,
    pub(crate) all_tools: Option<Rules>,
    pub(crate) entries: Vec<Entry>,
    /// Exact tool name -> entries naming it exactly (by plain or qualified name).
    pub(crate) by_name: HashMap<String, Vec<usize>, BuildHasherDefault<NameHasher>>,
    /// Entries that must be tried against every tool (globs, classes).
    pub(crate) generic: Vec<usize>,
    /// Globs with a literal head, by the head's first byte: a call tries only those that can
    /// match its name (a policy may hold many `tool_*`-style keys).
    pub(crate) globs_by_first: HashMap<u8, Vec<usize>, BuildHasherDefault<NameHasher>>,
    pub(crate) resources: Section,
    pub(crate) prompts: Section,
    pub(crate) audit: AuditSpec,
}

/// One `tools` entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its JSON pointer (`/tools/<key>`).
    pub pointer: String,
    pub(crate) pattern: Pattern,
    pub(crate) rules: Rules,
}

/// What an entry says to do with a call it selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Action {
    /// Allowed when its predicates and limits allow (the default).
    #[default]
    Allow,
    /// Visible, always refused.
    Deny,
    /// Held until a human approves.
    Approve,
}

/// The rules of a `tools` entry or of `all_tools`.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub(crate) pointer: String,
    pub(crate) action: Action,
    pub(crate) require: Vec<Predicate>,
    pub(crate) deny_if: Vec<Predicate>,
    /// Any that holds sends the call for approval.
    pub(crate) approve_if: Vec<Predicate>,
    /// Any that does not hold sends the call for approval.
    pub(crate) approve_unless: Vec<Predicate>,
    pub(crate) limits: Vec<Limit>,
    pub(crate) on_deny: Option<Arc<str>>,
    pub(crate) approval: Option<Approval>,
}

/// How an approval is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// How long the call is held before it is denied.
    pub timeout_ms: u64,
    /// Who may approve (e.g. `"client"`, `"admin"`, names); empty means any approver.
    pub approvers: Vec<String>,
    /// How the calling client's user is asked, when `approvers` has `"client"`.
    pub ask_client: AskClient,
}

/// How a client's user is asked to approve a call (MCP elicitation modes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AskClient {
    /// A yes/no form shown by the client.
    #[default]
    Form,
    /// A link to the web UI's approval page, opened in a browser: the decision never passes
    /// through the client. Falls back to a form when the client or the gateway cannot.
    Url,
}

impl Default for Approval {
    fn default() -> Self {
        Approval {
            timeout_ms: 10 * 60_000,
            approvers: Vec::new(),
            ask_client: AskClient::Form,
        }
    }
}

/// Who shares a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Each grant has its own count (the default).
    Grant,
    /// Each downstream session has its own count.
    Session,
    /// One count per upstream server, shared by every grant.
    Server,
    /// One count for everyone.
    Global,
}

impl Scope {
    /// Who shares the count, for messages: "per grant", ..., "for everyone".
    pub fn phrase(self) -> &'static str {
        match self {
            Scope::Grant => "per grant",
            Scope::Session => "per session",
            Scope::Server => "per server",
            Scope::Global => "for everyone",
        }
    }

    /// The scope's name as written in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Grant => "grant",
            Scope::Session => "session",
            Scope::Server => "server",
            Scope::Global => "global",
        }
    }
}

/// A rate limit.
#[derive(Debug, Clone)]
pub struct Limit {
    pub(crate) pointer: Arc<str>,
    pub(crate) counter: Arc<str>,
    /// The store key up to the scope's value: `name|window|scope|`. The window is part of
    /// it: two limits that share a counter name but not a window (or one changed by a
    /// reload) must not reset each other's counts.
    pub(crate) key_prefix: Box<str>,
    pub(crate) window: Window,
    pub(crate) max: u64,
    pub(crate) scope: Scope,
    pub(crate) increment_from: Option<Path>,
}

/// `resources` or `prompts`: which URIs or prompt names are served.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// `None`: follow the policy's `default`.
    pub(crate) default_allow: Option<bool>,
    pub(crate) rules: Vec<SectionRule>,
}

/// One `allow` or `deny` glob of a section.
#[derive(Debug, Clone)]
pub struct SectionRule {
    pub(crate) glob: String,
    pub(crate) allow: bool,
}

/// What the audit log may keep of arguments.
#[derive(Debug, Clone, Default)]
pub struct AuditSpec {
    /// Store argument values (default: only keys and a digest).
    pub values: bool,
    /// Paths whose values are replaced before storing.
    pub redact: Vec<Path>,
}

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

impl AuditSpec {
    /// The arguments with every `redact` path that exists replaced by `"[REDACTED]"`.
    pub fn redacted(&self, args: &Value) -> Value {
        let mut out = args.clone();
        for path in &self.redact {
            let Some(steps) = path.arg_steps() else {
                continue;
            };
            let mut at = Some(&mut out);
            for step in steps {
                at = at.and_then(|v| match step {
                    crate::path::Step::Key(k) => v.as_object_mut()?.get_mut(k),
                    crate::path::Step::Index(i) => v.as_array_mut()?.get_mut(*i),
                });
            }
            if let Some(v) = at {
                *v = Value::String(REDACTED.into());
            }
        }
        out
    }
}

/// One call, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The grant's name.
    pub grant: &'a str,
    /// The downstream session id.
    pub session: &'a str,
    /// The upstream server's name.
    pub server: &'a str,
    /// The tool's name on its server.
    pub tool: &'a str,
    /// Its aggregated name, `server__tool`, whatever endpoint the client used: a rule keyed
    /// by it binds the tool everywhere.
    pub exposed: &'a str,
    /// The catalog's categories (empty when unknown).
    pub categories: &'a [&'a str],
    /// The catalog's severity, when known.
    pub severity: Option<&'a str>,
    /// The call's arguments (`Null` when absent).
    pub args: &'a Value,
}

impl Call<'_> {
    fn target(&self) -> Target<'_> {
        Target {
            server: self.server,
            name: self.tool,
            exposed: self.exposed,
            categories: self.categories,
            severity: self.severity,
        }
    }
}

/// How a policy treats a tool, strongest last: see [`Policy::treatment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TreatmentKind {
    /// Called freely.
    Allowed,
    /// Called within rate limits.
    Limited,
    /// Some arguments are refused (`require`, `deny_if`).
    Restricted,
    /// Some arguments are held for a human (`approve_if`, `approve_unless`).
    SometimesApproval,
    /// Every call waits for a human.
    NeedsApproval,
    /// Listed, every call refused.
    Denied,
    /// Absent from listings; calls answered as for an unknown tool.
    Hidden,
}

impl TreatmentKind {
    /// The name used in the inventory.
    pub fn as_str(self) -> &'static str {
        match self {
            TreatmentKind::Allowed => "allowed",
            TreatmentKind::Limited => "limited",
            TreatmentKind::Restricted => "restricted",
            TreatmentKind::SometimesApproval => "needs approval for some arguments",
            TreatmentKind::NeedsApproval => "needs approval",
            TreatmentKind::Denied => "denied",
            TreatmentKind::Hidden => "hidden",
        }
    }
}

/// What a policy does with one tool, and the rules (JSON pointers) that make it so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Treatment {
    /// The strongest effect.
    pub kind: TreatmentKind,
    /// Every effect, strongest first (empty when the tool is simply allowed).
    pub effects: Vec<TreatmentKind>,
    /// The rules that apply.
    pub rules: Vec<String>,
}

impl Treatment {
    fn new(kind: TreatmentKind, rules: Vec<String>) -> Treatment {
        Treatment {
            kind,
            effects: vec![kind],
            rules,
        }
    }

    /// The effects for people: `restricted, limited`.
    pub fn describe(&self) -> String {
        if self.effects.is_empty() {
            return self.kind.as_str().to_owned();
        }
        let names: Vec<&str> = self.effects.iter().map(|k| k.as_str()).collect();
        names.join(", ")
    }
}

/// What the policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the call (after reserving `counters`).
    Allow,
    /// Refuse it with a visible denial.
    Deny,
    /// Answer as if the tool did not exist (hidden, or not allowed by `default: "deny"`).
    Unknown,
    /// Hold it until a human approves (then reserve `counters` and forward).
    Approve(Approval),
}

impl Verdict {
    /// The decision's name in audit records and `_meta`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Allow => "allowed",
            Verdict::Deny => "denied",
            Verdict::Unknown => "hidden",
            Verdict::Approve(_) => "approval_required",
        }
    }
}

/// One counter a call takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRequest {
    /// The limit's JSON pointer.
    pub rule: Arc<str>,
    /// The counter's name.
    pub counter: Arc<str>,
    /// The store key: counter name and scope value (survives reloads: no policy version in it).
    pub key: String,
    /// The scope, for messages.
    pub scope: Scope,
    /// At most this much per window.
    pub max: u64,
    /// How much this call takes (1, or the `increment_from` argument).
    pub amount: u64,
    /// The window.
    pub window: Window,
    /// The `on_deny` of the entry the limit belongs to, shown before the limit's details.
    pub on_deny: Option<Arc<str>>,
}

/// A rule that fired, for `toolgate explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The rule's JSON pointer.
    pub rule: String,
    /// What it did.
    pub effect: String,
}

/// A policy decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub verdict: Verdict,
    /// The JSON pointer of the rule that decided.
    pub rule: String,
    /// For a denial, what the agent reads (after `[POLICY DENIED] `).
    pub message: String,
    /// Counters to reserve before forwarding (allow and approve only).
    pub counters: Vec<CounterRequest>,
    /// The rules that fired, in evaluation order: denials and approvals, and with
    /// [`Policy::explain`] also the limits that take counters.
    pub fired: Vec<Fired>,
}

impl Decision {
    fn new(verdict: Verdict, rule: &str, message: String) -> Decision {
        Decision {
            verdict,
            rule: rule.to_owned(),
            message,
            counters: Vec::new(),
            fired: Vec::new(),
        }
    }

    /// The decision for a grant that has no policy: every call refused, every tool hidden.
    pub fn no_policy() -> Decision {
        Decision::new(
            Verdict::Unknown,
            RULE_NO_POLICY,
            "this grant has no policy".into(),
        )
    }
}

impl Policy {
    pub(crate) fn empty(version: String) -> Policy {
        Policy {
            version,
            default_allow: false,
            hide_all: false,
            hide: Vec::new(),
            all_tools: None,
            entries: Vec::new(),
            by_name: HashMap::default(),
            generic: Vec::new(),
            globs_by_first: HashMap::default(),
            resources: Section::default(),
            prompts: Section::default(),
            audit: AuditSpec::default(),
        }
    }

    /// Builds the name index once the entries are known.
    pub(crate) fn index(&mut self) {
        self.by_name.clear();
        self.generic.clear();
        self.globs_by_first.clear();
        for (i, e) in self.entries.iter().enumerate() {
            match e.pattern.exact_name() {
                Some(name) => self.by_name.entry(name.to_owned()).or_default().push(i),
                None => match e.pattern.first_byte() {
                    Some(b) => self.globs_by_first.entry(b).or_default().push(i),
                    None => self.generic.push(i),
                },
            }
        }
    }

    /// What the audit log may keep of this policy's arguments.
    pub fn audit(&self) -> &AuditSpec {
        &self.audit
    }

    /// The number of `tools` entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the policy has no `tools` entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn hidden(&self, t: &Target<'_>) -> bool {
        self.hide_all || self.hide.iter().any(|p| p.matches(t))
    }

    /// The entries selecting a tool, in canonical (sorted key) order.
    fn matching(&self, t: &Target<'_>) -> Vec<&Entry> {
        let mut found: Vec<usize> = Vec::new();
        let names: &[&str] = if t.exposed == t.name {
            &[t.name]
        } else {
            &[t.name, t.exposed]
        };
        for name in names {
            if let Some(ids) = self.by_name.get(*name) {
                found.extend(ids.iter().filter(|&&i| self.entries[i].pattern.matches(t)));
            }
        }
        let mut firsts: Vec<u8> = names.iter().filter_map(|n| n.bytes().next()).collect();
        firsts.dedup();
        for first in firsts {
            if let Some(ids) = self.globs_by_first.get(&first) {
                found.extend(ids.iter().filter(|&&i| self.entries[i].pattern.matches(t)));
            }
        }
        found.extend(
            self.generic
                .iter()
                .filter(|&&i| self.entries[i].pattern.matches(t)),
        );
        found.sort_unstable();
        found.dedup();
        found.into_iter().map(|i| &self.entries[i]).collect()
    }

    /// Whether a tool appears in `tools/list`: not hidden, and selected by some entry unless
    /// `default` is `allow`. Tools with `action: "deny"` stay visible.
    pub fn tool_visible(&self, server: &str, tool: &str, exposed: &str) -> bool {
        let t = Target {
            server,
            name: tool,
            exposed,
            categories: &[],
            severity: None,
        };
        self.visible(&t)
    }

    /// [`Policy::tool_visible`] with the catalog's classification.
    pub fn visible(&self, t: &Target<'_>) -> bool {
        !self.hidden(t) && (self.default_allow || !self.matching(t).is_empty())
    }

    /// What the policy does with a tool whatever its arguments, for the inventory: hidden, or
    /// every effect of the rules that select it (denied, needs approval, restricted, limited;
    /// allowed when none), with the rules. Predicates are not evaluated: `require` and `deny_if` make a tool restricted,
    /// `approve_if` and `approve_unless` make it need approval for some arguments.
    pub fn treatment(&self, t: &Target<'_>) -> Treatment {
        if self.hidden(t) {
            return Treatment::new(TreatmentKind::Hidden, vec![RULE_HIDDEN.into()]);
        }
        let entries = self.matching(t);
        if entries.is_empty() && !self.default_allow {
            return Treatment::new(TreatmentKind::Hidden, vec![RULE_DEFAULT_DENY.into()]);
        }
        let mut effects: Vec<TreatmentKind> = Vec::new();
        let mut rules: Vec<String> = Vec::new();
        let mut add = |k: TreatmentKind, rule: String| {
            if !effects.contains(&k) {
                effects.push(k);
            }
            rules.push(rule);
        };
        for r in self
            .all_tools
            .iter()
            .chain(entries.iter().map(|e| &e.rules))
        {
            match r.action {
                Action::Deny => add(TreatmentKind::Denied, format!("{}/action", r.pointer)),
                Action::Approve => add(
                    TreatmentKind::NeedsApproval,
                    format!("{}/action", r.pointer),
                ),
                Action::Allow => {}
            }
            let conditional = [
                ("require", r.require.len(), TreatmentKind::Restricted),
                ("deny_if", r.deny_if.len(), TreatmentKind::Restricted),
                (
                    "approve_if",
                    r.approve_if.len(),
                    TreatmentKind::SometimesApproval,
                ),
                (
                    "approve_unless",
                    r.approve_unless.len(),
                    TreatmentKind::SometimesApproval,
                ),
            ];
            for (key, n, k) in conditional {
                if n > 0 {
                    add(k, format!("{}/{key}", r.pointer));
                }
            }
            if !r.limits.is_empty() {
                add(TreatmentKind::Limited, format!("{}/limits", r.pointer));
            }
        }
        if rules.is_empty() {
            rules.push(match entries.first() {
                Some(e) => e.pointer.clone(),
                None => RULE_DEFAULT_ALLOW.into(),
            });
        }
        effects.sort_unstable_by(|a, b| b.cmp(a));
        // A denied tool is refused whatever else applies.
        if effects.first() == Some(&TreatmentKind::Denied) {
            effects.truncate(1);
        }
        Treatment {
            kind: effects.first().copied().unwrap_or(TreatmentKind::Allowed),
            effects,
            rules,
        }
    }

    /// Decides a `tools/call`. `now_ms` is the UTC time in milliseconds (windows are computed
    /// by the counter store from it; it is taken here so that decisions stay pure).
    pub fn decide(&self, call: &Call<'_>) -> Decision {
        self.decide_traced(call, false)
    }

    /// [`Policy::decide`], with every rule that fired recorded in [`Decision::fired`] (limits
    /// included), for `toolgate explain`. `decide` records only denials and approvals.
    pub fn explain(&self, call: &Call<'_>) -> Decision {
        self.decide_traced(call, true)
    }

    fn decide_traced(&self, call: &Call<'_>, trace: bool) -> Decision {
        let t = call.target();
        if self.hidden(&t) {
            return Decision::new(Verdict::Unknown, RULE_HIDDEN, "the tool is hidden".into());
        }
        let entries = self.matching(&t);
        if entries.is_empty() && !self.default_allow {
            return Decision::new(
                Verdict::Unknown,
                RULE_DEFAULT_DENY,
                "the tool is not allowed by this policy".into(),
            );
        }
        let subject = Subject {
            args: call.args,
            grant: call.grant,
            session: call.session,
            server: call.server,
            tool: call.tool,
        };
        let mut decision = Decision::new(
            Verdict::Allow,
            if entries.is_empty() {
                RULE_DEFAULT_ALLOW
            } else {
                &entries[0].pointer
            },
            String::new(),
        );
        let mut denial: Option<(String, String)> = None;
        let mut approval: Option<(String, Approval)> = None;
        for rules in self
            .all_tools
            .iter()
            .chain(entries.iter().map(|e| &e.rules))
        {
            let deny = |decision: &mut Decision,
                        denial: &mut Option<(String, String)>,
                        rule: String,
                        why: String| {
                let message = match &rules.on_deny {
                    Some(m) => m.to_string(),
                    None => why.clone(),
                };
                decision.fired.push(Fired {
                    rule: rule.clone(),
                    effect: format!("deny: {why}"),
                });
                if denial.is_none() {
                    *denial = Some((rule, message));
                }
            };
            match rules.action {
                Action::Deny => deny(
                    &mut decision,
                    &mut denial,
                    format!("{}/action", rules.pointer),
                    "this tool is denied by policy".into(),
                ),
                Action::Approve => {
                    let rule = format!("{}/action", rules.pointer);
                    decision.fired.push(Fired {
                        rule: rule.clone(),
                        effect: "needs approval".into(),
                    });
                    if approval.is_none() {
                        approval = Some((rule, rules.approval.clone().unwrap_or_default()));
                    }
                }
                Action::Allow => {}
            }
            // Rule pointers are formatted only for predicates that deny: this loop runs for
            // every predicate of every matching entry on every call.
            for (i, p) in rules.require.iter().enumerate() {
                let rule = || format!("{}/require/{i}", rules.pointer);
                match p.eval(&subject) {
                    Outcome::Holds => {}
                    Outcome::Fails(why) => deny(
                        &mut decision,
                        &mut denial,
                        rule(),
                        why.unwrap_or_else(|| format!("requirement not met: {p}")),
                    ),
                    Outcome::Indeterminate(why) => deny(&mut decision, &mut denial, rule(), why),
                }
            }
            for (i, p) in rules.deny_if.iter().enumerate() {
                let rule = || format!("{}/deny_if/{i}", rules.pointer);
                match p.eval(&subject) {
                    Outcome::Fails(_) => {}
                    Outcome::Holds => deny(
                        &mut decision,
                        &mut denial,
                        rule(),
                        format!("denied because {p}"),
                    ),
                    Outcome::Indeterminate(why) => deny(&mut decision, &mut denial, rule(), why),
                }
            }
            let approve = |decision: &mut Decision,
                           approval: &mut Option<(String, Approval)>,
                           rule: String,
                           why: String| {
                decision.fired.push(Fired {
                    rule: rule.clone(),
                    effect: format!("needs approval: {why}"),
                });
                if approval.is_none() {
                    *approval = Some((rule, rules.approval.clone().unwrap_or_default()));
                }
            };
            for (i, p) in rules.approve_if.iter().enumerate() {
                let rule = || format!("{}/approve_if/{i}", rules.pointer);
                match p.eval(&subject) {
                    Outcome::Fails(_) => {}
                    Outcome::Holds => approve(&mut decision, &mut approval, rule(), format!("{p}")),
                    Outcome::Indeterminate(why) => deny(&mut decision, &mut denial, rule(), why),
                }
            }
            for (i, p) in rules.approve_unless.iter().enumerate() {
                let rule = || format!("{}/approve_unless/{i}", rules.pointer);
                match p.eval(&subject) {
                    Outcome::Holds => {}
                    Outcome::Fails(why) => approve(
                        &mut decision,
                        &mut approval,
                        rule(),
                        why.unwrap_or_else(|| format!("not {p}")),
                    ),
                    Outcome::Indeterminate(why) => deny(&mut decision, &mut denial, rule(), why),
                }
            }
            for (i, limit) in rules.limits.iter().enumerate() {
                match counter_request(limit, rules.on_deny.as_ref(), call) {
                    Ok(req) if !trace => push_counter(&mut decision.counters, req),
                    Ok(req) => {
                        decision.fired.push(Fired {
                            rule: limit.pointer.to_string(),
                            effect: format!(
                                "takes {} of counter `{}` ({} per {} {})",
                                req.amount,
                                limit.counter,
                                limit.max,
                                window_name(&limit.window),
                                limit.scope.phrase()
                            ),
                        });
                        push_counter(&mut decision.counters, req);
                    }
                    Err(why) => deny(
                        &mut decision,
                        &mut denial,
                        format!("{}/limits/{i}/increment_from", rules.pointer),
                        why,
                    ),
                }
            }
        }
        if let Some((rule, message)) = denial {
            decision.verdict = Verdict::Deny;
            decision.rule = rule;
            decision.message = message;
            decision.counters.clear();
        } else if let Some((rule, approval)) = approval {
            decision.verdict = Verdict::Approve(approval);
            decision.rule = rule;
            decision.message = "this call needs a human's approval".into();
        }
        decision
    }

    /// Whether a resource URI of a server is served.
    pub fn resource_allowed(&self, server: &str, uri: &str) -> bool {
        self.section_allows(&self.resources, server, uri)
    }

    /// Whether a prompt of a server is served.
    pub fn prompt_allowed(&self, server: &str, name: &str, exposed: &str) -> bool {
        self.section_allows(&self.prompts, server, name)
            || (exposed != name && self.section_allows(&self.prompts, server, exposed))
    }

    fn section_allows(&self, section: &Section, server: &str, name: &str) -> bool {
        let hit = |r: &&SectionRule| {
            glob_match(&r.glob, name)
                || r.glob
                    .split_once('/')
                    .is_some_and(|(s, n)| s == server && glob_match(n, name))
        };
        if section.rules.iter().filter(|r| !r.allow).any(|r| hit(&r)) {
            return false;
        }
        section.rules.iter().filter(|r| r.allow).any(|r| hit(&r))
            || section.default_allow.unwrap_or(self.default_allow)
    }
}

fn counter_request(
    limit: &Limit,
    on_deny: Option<&Arc<str>>,
    call: &Call<'_>,
) -> Result<CounterRequest, String> {
    let amount = match &limit.increment_from {
        None => 1,
        Some(path) => {
            let v = walk(call.args, path.arg_steps().unwrap_or_default());
            let n = match v {
                Some(Value::Number(n)) => n.as_f64(),
                Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if n.is_finite() && n >= 0.0 => n.ceil() as u64,
                _ => {
                    return Err(format!(
                        "{} must be a non-negative number: limit `{}` counts it",
                        path.text, limit.counter
                    ));
                }
            }
        }
    };
    let scope_value = match limit.scope {
        Scope::Grant => call.grant,
        Scope::Session => call.session,
        Scope::Server => call.server,
        Scope::Global => "",
    };
    Ok(CounterRequest {
        rule: limit.pointer.clone(),
        counter: limit.counter.clone(),
        key: [&*limit.key_prefix, scope_value].concat(),
        scope: limit.scope,
        max: limit.max,
        amount,
        window: limit.window,
        on_deny: on_deny.cloned(),
    })
}

/// Adds a counter to a call's list. A key named twice (e.g. `all_tools` and a tool entry
/// sharing a counter) is taken once, with both amounts and the stricter maximum: two separate
/// checks against the same count could together go over it.
fn push_counter(counters: &mut Vec<CounterRequest>, req: CounterRequest) {
    match counters.iter_mut().find(|c| c.key == req.key) {
        Some(c) => {
            c.amount = c.amount.saturating_add(req.amount);
            if req.max < c.max {
                c.max = req.max;
                c.rule = req.rule;
                c.on_deny = req.on_deny;
            }
        }
        None => counters.push(req),
    }
}

/// `minute`, `15m`, ... for messages.
pub fn window_name(w: &Window) -> String {
    let name = match w.length_ms {
        1_000 => "second".to_owned(),
        60_000 => "minute".to_owned(),
        3_600_000 => "hour".to_owned(),
        86_400_000 => "day".to_owned(),
        604_800_000 => "week".to_owned(),
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    };
    if w.sliding {
        format!("sliding {name}")
    } else {
        name
    }
}

/// The message of a call refused by a limit: which limit, and when it resets.
pub fn limit_message(req: &CounterRequest, reset_at_ms: u64, now_ms: u64) -> String {
    let secs = reset_at_ms.saturating_sub(now_ms).div_ceil(1000);
    format!(
        "rate limit `{}` reached: at most {} per {} {}; resets in {secs} s (at {})",
        req.counter,
        req.max,
        window_name(&req.window),
        req.scope.phrase(),
        utc_rfc3339(reset_at_ms.div_ceil(1000) * 1000),
    )
}

/// FNV-1a for the name index: tool names are short, and SipHash's resistance to chosen keys
/// buys nothing for a map that is built from the policy and only looked up per call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NameHasher(u64);

impl Default for NameHasher {
    fn default() -> Self {
        NameHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
