//! Raw policy JSON -> a compiled [`Policy`], or every problem with its JSON pointer.
//!
//! Validation walks the `serde_json::Value` by hand rather than through `serde` derives so
//! that it reports every error at once, each at its exact pointer, with a hint.

use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Diagnostic, PolicyError, did_you_mean};
use crate::locate::{Positions, escape_token};
use crate::path::Path;
use crate::pattern::Pattern;
use crate::policy::{
    Action, Approval, AskClient, AuditSpec, Entry, Limit, Policy, Rules, Scope, Section,
    SectionRule,
};
use crate::predicate::{OPS, Op, Predicate, REGEX_MAX_LEN};
use crate::window::{Window, parse_duration};

const TOP_FIELDS: &[&str] = &[
    "version",
    "default",
    "hide",
    "all_tools",
    "tools",
    "resources",
    "prompts",
    "audit",
    "description",
];
const RULE_FIELDS: &[&str] = &[
    "action",
    "require",
    "deny_if",
    "approve_if",
    "approve_unless",
    "limits",
    "on_deny",
    "reason",
    "approval",
    "description",
];
const PREDICATE_FIELDS: &[&str] = &["path", "op", "value"];
const LIMIT_FIELDS: &[&str] = &[
    "counter",
    "window",
    "max",
    "scope",
    "sliding",
    "increment_from",
];
const APPROVAL_FIELDS: &[&str] = &["timeout", "approvers", "ask_client"];
const SECTION_FIELDS: &[&str] = &["default", "allow", "deny"];
const AUDIT_FIELDS: &[&str] = &["values", "redact"];
const COMMAND_FIELDS: &[&str] = &["allow_programs", "deny_programs", "deny"];
const COMMAND_FEATURES: &[&str] = &["substitution", "redirection", "background", "heredoc"];
const SCOPES: &[&str] = &["grant", "session", "server", "global"];
const ACTIONS: &[&str] = &["allow", "deny", "approve"];

/// Longest policy text accepted.
pub const MAX_POLICY_BYTES: usize = 16 << 20;

/// Parses, validates and compiles a policy.
pub fn parse(text: &str) -> Result<Policy, PolicyError> {
    let single = |message: String, line, column| PolicyError {
        diagnostics: vec![Diagnostic {
            pointer: String::new(),
            line,
            column,
            message,
            hint: None,
        }],
    };
    if text.len() > MAX_POLICY_BYTES {
        return Err(single(
            format!("the policy is larger than {MAX_POLICY_BYTES} bytes"),
            1,
            1,
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        single(
            format!("not valid JSON: {}", strip_position(&e.to_string())),
            e.line(),
            e.column().max(1),
        )
    })?;
    let scanned = Positions::duplicates(text);
    let mut c = Checker {
        diagnostics: Vec::new(),
    };
    for (pointer, offset) in &scanned.duplicates {
        let (line, column) = scanned.offset_line_col(*offset);
        c.diagnostics.push(Diagnostic {
            pointer: pointer.clone(),
            line,
            column,
            message: "duplicate key: a policy must not say two things about one field".into(),
            hint: Some("merge the two entries into one".into()),
        });
    }
    let version = format!(
        "sha256:{}",
        &hex::encode(Sha256::digest(text.as_bytes()))[..16]
    );
    let policy = c.document(&value, version);
    if c.diagnostics.is_empty() {
        Ok(policy)
    } else {
        // Only now are positions worth recording: place every problem found.
        let positions = Positions::scan(text);
        for d in c.diagnostics.iter_mut().filter(|d| d.line == 0) {
            (d.line, d.column) = positions.line_col(&d.pointer);
        }
        c.diagnostics.sort_by_key(|d| (d.line, d.column));
        Err(PolicyError {
            diagnostics: c.diagnostics,
        })
    }
}

fn strip_position(message: &str) -> &str {
    message
        .rfind(" at line ")
        .map_or(message, |i| &message[..i])
}

/// Walks a policy document, building it and collecting every problem.
struct Checker {
    /// Problems so far; positions (line 0) are filled in once all are known.
    diagnostics: Vec<Diagnostic>,
}

fn child(pointer: &str, token: &str) -> String {
    format!("{pointer}/{}", escape_token(token))
}

impl Checker {
    fn error(&mut self, pointer: &str, message: impl Into<String>, hint: Option<String>) {
        self.diagnostics.push(Diagnostic {
            pointer: pointer.to_owned(),
            line: 0,
            column: 0,
            message: message.into(),
            hint,
        });
    }

    /// The object at `pointer`, with unknown fields reported.
    fn object<'v>(
        &mut self,
        value: &'v Value,
        pointer: &str,
        what: &str,
        fields: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Some(map) = value.as_object() else {
            self.error(pointer, format!("{what} must be an object"), None);
            return None;
        };
        for key in map.keys() {
            if !fields.contains(&key.as_str()) {
                let hint = did_you_mean(key, fields)
                    .map(|f| format!("did you mean `{f}`?"))
                    .or_else(|| Some(format!("known fields: {}", fields.join(", "))));
                self.error(
                    &child(pointer, key),
                    format!("unknown field `{key}` in {what}"),
                    hint,
                );
            }
        }
        Some(map)
    }

    fn string<'v>(&mut self, value: &'v Value, pointer: &str, what: &str) -> Option<&'v str> {
        let s = value.as_str();
        if s.is_none() {
            self.error(pointer, format!("{what} must be a string"), None);
        }
        s
    }

    fn one_of(&mut self, value: &Value, pointer: &str, what: &str, options: &[&str]) -> usize {
        let Some(s) = self.string(value, pointer, what) else {
            return 0;
        };
        match options.iter().position(|o| *o == s) {
            Some(i) => i,
            None => {
                let hint = did_you_mean(s, options).map(|o| format!("did you mean `{o}`?"));
                self.error(
                    pointer,
                    format!("{what} must be one of {}, not `{s}`", quoted(options)),
                    hint,
                );
                0
            }
        }
    }

    fn string_list(&mut self, value: &Value, pointer: &str, what: &str) -> Vec<String> {
        let Some(items) = value.as_array() else {
            self.error(pointer, format!("{what} must be an array of strings"), None);
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                self.string(v, &child(pointer, &i.to_string()), what)
                    .map(str::to_owned)
            })
            .collect()
    }

    fn document(&mut self, value: &Value, version: String) -> Policy {
        let mut policy = Policy::empty(version);
        let Some(map) = self.object(value, "", "the policy", TOP_FIELDS) else {
            return policy;
        };
        match map.get("version") {
            None => self.error(
                "",
                "missing `version`",
                Some("add \"version\": \"1\"".into()),
            ),
            Some(v) if v.as_str() == Some("1") => {}
            Some(Value::Number(n)) if n.as_u64() == Some(1) => self.error(
                "/version",
                "`version` must be the string \"1\"",
                Some("write \"1\" with quotes".into()),
            ),
            Some(_) => self.error("/version", "only version \"1\" is supported", None),
        }
        match map.get("default") {
            None => self.error(
                "",
                "missing `default`",
                Some("add \"default\": \"deny\" (or \"allow\")".into()),
            ),
            Some(v) => {
                policy.default_allow =
                    self.one_of(v, "/default", "`default`", &["deny", "allow"]) == 1
            }
        }
        if let Some(v) = map.get("hide") {
            for (i, key) in self
                .string_list(v, "/hide", "`hide` entries")
                .into_iter()
                .enumerate()
            {
                if key == "*" {
                    policy.hide_all = true;
                    continue;
                }
                match Pattern::parse(&key) {
                    Ok(p) => policy.hide.push(p),
                    Err(e) => self.error(&format!("/hide/{i}"), e, None),
                }
            }
        }
        if let Some(v) = map.get("all_tools") {
            let rules = self.rules(v, "/all_tools", "`all_tools`");
            policy.all_tools = Some(rules);
        }
        if let Some(v) = map.get("tools") {
            let Some(tools) = v.as_object() else {
                self.error("/tools", "`tools` must be an object of tool keys", None);
                return policy;
            };
            let mut keys: Vec<&String> = tools.keys().collect();
            // Canonical order, so that the rule a decision names never depends on key order.
            keys.sort();
            for key in keys {
                let pointer = child("/tools", key);
                let pattern = match Pattern::parse(key) {
                    Ok(p) => p,
                    Err(e) => {
                        self.error(&pointer, format!("bad tool key `{key}`: {e}"), None);
                        continue;
                    }
                };
                let rules = self.rules(&tools[key], &pointer, &format!("tool `{key}`"));
                policy.entries.push(Entry {
                    pointer,
                    pattern,
                    rules,
                });
            }
        }
        if let Some(v) = map.get("resources") {
            policy.resources = self.section(v, "/resources", "`resources`");
        }
        if let Some(v) = map.get("prompts") {
            policy.prompts = self.section(v, "/prompts", "`prompts`");
        }
        if let Some(v) = map.get("audit") {
            policy.audit = self.audit(v, "/audit");
        }
        if let Some(v) = map.get("description") {
            self.string(v, "/description", "`description`");
        }
        policy.index();
        policy
    }

    fn rules(&mut self, value: &Value, pointer: &str, what: &str) -> Rules {
        let mut rules = Rules::default();
        let Some(map) = self.object(value, pointer, what, RULE_FIELDS) else {
            return rules;
        };
        if let Some(v) = map.get("action") {
            let p = child(pointer, "action");
            rules.action = match self.one_of(v, &p, "`action`", ACTIONS) {
                1 => Action::Deny,
                2 => Action::Approve,
                _ => Action::Allow,
            };
        }
        if let Some(v) = map.get("approval") {
            let p = child(pointer, "approval");
            rules.approval = self.approval(v, &p);
            let conditional = map.contains_key("approve_if") || map.contains_key("approve_unless");
            if rules.action != Action::Approve && !conditional {
                self.error(
                    &p,
                    "`approval` only applies with \"action\": \"approve\", `approve_if` or `approve_unless`",
                    Some("add \"action\": \"approve\" or remove `approval`".into()),
                );
            }
        }
        if rules.approval.is_none() {
            rules.approval = Some(Approval::default());
        }
        // `require` and `approve_unless` hold for a good call; `deny_if` and `approve_if` for a
        // bad one.
        for (field, positive) in [
            ("require", true),
            ("deny_if", false),
            ("approve_if", false),
            ("approve_unless", true),
        ] {
            let Some(v) = map.get(field) else { continue };
            let p = child(pointer, field);
            let Some(items) = v.as_array() else {
                self.error(
                    &p,
                    format!("`{field}` must be an array of predicates"),
                    None,
                );
                continue;
            };
            for (i, item) in items.iter().enumerate() {
                if let Some(pred) = self.predicate(item, &child(&p, &i.to_string()), positive) {
                    match field {
                        "require" => rules.require.push(pred),
                        "deny_if" => rules.deny_if.push(pred),
                        "approve_if" => rules.approve_if.push(pred),
                        _ => rules.approve_unless.push(pred),
                    }
                }
            }
        }
        if let Some(v) = map.get("limits") {
            let p = child(pointer, "limits");
            match v.as_array() {
                None => self.error(&p, "`limits` must be an array", None),
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(l) = self.limit(item, &child(&p, &i.to_string())) {
                            rules.limits.push(l);
                        }
                    }
                }
            }
        }
        match (map.get("on_deny"), map.get("reason")) {
            (Some(_), Some(_)) => self.error(
                &child(pointer, "reason"),
                "`reason` is an alias of `on_deny`; give only one",
                None,
            ),
            (Some(v), None) => {
                rules.on_deny = self
                    .string(v, &child(pointer, "on_deny"), "`on_deny`")
                    .map(Arc::from)
            }
            (None, Some(v)) => {
                rules.on_deny = self
                    .string(v, &child(pointer, "reason"), "`reason`")
                    .map(Arc::from)
            }
            (None, None) => {}
        }
        if let Some(v) = map.get("description") {
            self.string(v, &child(pointer, "description"), "`description`");
        }
        rules.pointer = pointer.to_owned();
        rules
    }

    fn approval(&mut self, value: &Value, pointer: &str) -> Option<Approval> {
        let map = self.object(value, pointer, "`approval`", APPROVAL_FIELDS)?;
        let mut approval = Approval::default();
        if let Some(v) = map.get("timeout") {
            let p = child(pointer, "timeout");
            if let Some(s) = self.string(v, &p, "`timeout`") {
                match parse_duration(s) {
                    Ok(ms) => approval.timeout_ms = ms,
                    Err(e) => self.error(&p, e, None),
                }
            }
        }
        if let Some(v) = map.get("approvers") {
            approval.approvers =
                self.string_list(v, &child(pointer, "approvers"), "`approvers` entries");
        }
        if let Some(v) = map.get("ask_client") {
            let p = child(pointer, "ask_client");
            approval.ask_client = match self.one_of(v, &p, "`ask_client`", &["form", "url"]) {
                1 => AskClient::Url,
                _ => AskClient::Form,
            };
        }
        Some(approval)
    }

    /// One predicate; `positive` when it sits where it holds for a good call (`require`,
    /// `approve_unless`), the only places a `command` rule may go.
    fn predicate(&mut self, value: &Value, pointer: &str, positive: bool) -> Option<Predicate> {
        let map = self.object(value, pointer, "a predicate", PREDICATE_FIELDS)?;
        let path = match map.get("path") {
            None => {
                self.error(pointer, "a predicate needs `path`", None);
                None
            }
            Some(v) => {
                let p = child(pointer, "path");
                self.string(v, &p, "`path`")
                    .and_then(|s| match Path::parse(s) {
                        Ok(path) => Some(path),
                        Err(e) => {
                            self.error(&p, e, None);
                            None
                        }
                    })
            }
        };
        let Some(op_value) = map.get("op") else {
            self.error(
                pointer,
                "a predicate needs `op`",
                Some(format!("one of {}", OPS.join(", "))),
            );
            return None;
        };
        let op_pointer = child(pointer, "op");
        let op_name = self.string(op_value, &op_pointer, "`op`")?;
        let Some(op_name) = OPS.iter().find(|o| **o == op_name).copied() else {
            let hint = did_you_mean(op_name, OPS)
                .map(|o| format!("did you mean `{o}`?"))
                .unwrap_or_else(|| format!("one of {}", OPS.join(", ")));
            self.error(&op_pointer, format!("unknown op `{op_name}`"), Some(hint));
            return None;
        };
        let vp = child(pointer, "value");
        let value = map.get("value").cloned();
        let need = |c: &mut Self| {
            if value.is_none() {
                c.error(pointer, format!("op `{op_name}` needs a `value`"), None);
            }
            value.clone()
        };
        let op = match op_name {
            "eq" => Op::Eq(need(self)?),
            "neq" => Op::Neq(need(self)?),
            "in" | "not_in" => {
                let v = need(self)?;
                let Some(items) = v.as_array() else {
                    self.error(&vp, format!("op `{op_name}` needs an array `value`"), None);
                    return None;
                };
                if op_name == "in" {
                    Op::In(items.clone())
                } else {
                    Op::NotIn(items.clone())
                }
            }
            "lt" | "lte" | "gt" | "gte" => {
                let v = need(self)?;
                let Some(n) = v.as_f64() else {
                    self.error(&vp, format!("op `{op_name}` needs a number `value`"), None);
                    return None;
                };
                match op_name {
                    "lt" => Op::Lt(n),
                    "lte" => Op::Lte(n),
                    "gt" => Op::Gt(n),
                    _ => Op::Gte(n),
                }
            }
            "regex" => {
                let v = need(self)?;
                let src = self.string(&v, &vp, "a regex")?;
                if src.len() > REGEX_MAX_LEN {
                    self.error(
                        &vp,
                        format!("the regex is longer than {REGEX_MAX_LEN} bytes"),
                        None,
                    );
                    return None;
                }
                match crate::predicate::compile_regex(src) {
                    Ok(re) => Op::Regex(re),
                    Err(e) => {
                        self.error(&vp, format!("invalid regex: {e}"), None);
                        return None;
                    }
                }
            }
            "contains" => Op::Contains(need(self)?),
            "exists" => match &value {
                None => Op::Exists(true),
                Some(Value::Bool(b)) => Op::Exists(*b),
                Some(_) => {
                    self.error(&vp, "op `exists` takes no value, or true/false", None);
                    return None;
                }
            },
            "glob" | "starts_with" | "ends_with" => {
                let v = need(self)?;
                let s = self.string(&v, &vp, "the value")?.to_owned();
                match op_name {
                    "glob" => Op::Glob(s),
                    "starts_with" => Op::StartsWith(s),
                    _ => Op::EndsWith(s),
                }
            }
            "max_len" => {
                let v = need(self)?;
                let Some(n) = v.as_u64() else {
                    self.error(&vp, "op `max_len` needs a non-negative integer", None);
                    return None;
                };
                Op::MaxLen(n)
            }
            "schema" => {
                let v = need(self)?;
                if !v.is_object() && !v.is_boolean() {
                    self.error(&vp, "op `schema` needs a JSON Schema object", None);
                    return None;
                }
                match jsonschema::options()
                    .with_pattern_options(jsonschema::PatternOptions::regex())
                    .build(&v)
                {
                    Ok(validator) => Op::Schema(Arc::new(validator)),
                    Err(e) => {
                        self.error(&vp, format!("invalid JSON Schema: {e}"), None);
                        return None;
                    }
                }
            }
            _ => {
                // "command"
                if !positive {
                    self.error(
                        &op_pointer,
                        "a `command` rule says what a command may run: put it under `require` or `approve_unless`",
                        Some("move this predicate to `require` (a command outside the rule is denied) or `approve_unless` (it needs approval)".into()),
                    );
                    return None;
                }
                let v = need(self)?;
                Op::Command(Arc::new(self.command_rule(&v, &vp)?))
            }
        };
        let path = path?;
        if matches!(op, Op::Command(_)) && path.arg_steps().is_none_or(<[_]>::is_empty) {
            self.error(
                &child(pointer, "path"),
                "a `command` rule checks one argument that holds a command",
                Some("point the path at it, e.g. `args.command`".into()),
            );
            return None;
        }
        if !matches!(op, Op::Command(_) | Op::Schema(_)) && path.arg_steps() == Some(&[]) {
            // `args` itself is an object: only `schema`, `exists`, `max_len` make sense on it.
            if !matches!(op, Op::Exists(_) | Op::MaxLen(_)) {
                self.error(
                    &child(pointer, "path"),
                    format!("op `{op_name}` on the whole `args` object can never hold"),
                    Some("point the path at one argument, e.g. `args.command`".into()),
                );
                return None;
            }
        }
        Some(Predicate {
            path,
            op_name,
            op,
            value: value.unwrap_or(Value::Null),
        })
    }

    fn command_rule(
        &mut self,
        value: &Value,
        pointer: &str,
    ) -> Option<toolgate_shell::CompiledRule> {
        let map = self.object(value, pointer, "a command rule", COMMAND_FIELDS)?;
        let mut rule = toolgate_shell::CommandRule::default();
        if let Some(v) = map.get("allow_programs") {
            rule.allow_programs = Some(self.string_list(
                v,
                &child(pointer, "allow_programs"),
                "`allow_programs` entries",
            ));
        }
        if let Some(v) = map.get("deny_programs") {
            rule.deny_programs = self.string_list(
                v,
                &child(pointer, "deny_programs"),
                "`deny_programs` entries",
            );
        }
        if let Some(v) = map.get("deny") {
            let p = child(pointer, "deny");
            let Some(items) = v.as_array() else {
                self.error(&p, "`deny` must be an array", None);
                return None;
            };
            for (i, item) in items.iter().enumerate() {
                match self.one_of(
                    item,
                    &child(&p, &i.to_string()),
                    "a denied feature",
                    COMMAND_FEATURES,
                ) {
                    0 => rule.deny_substitution = true,
                    1 => rule.deny_redirection = true,
                    2 => rule.deny_background = true,
                    _ => rule.deny_heredoc = true,
                }
            }
        }
        if rule.allow_programs.is_none()
            && rule.deny_programs.is_empty()
            && !(rule.deny_substitution
                || rule.deny_redirection
                || rule.deny_background
                || rule.deny_heredoc)
        {
            self.error(
                pointer,
                "a command rule must say something",
                Some("give `allow_programs`, `deny_programs` or `deny`".into()),
            );
            return None;
        }
        match rule.compile() {
            Ok(r) => Some(r),
            Err(e) => {
                self.error(pointer, e.to_string(), None);
                None
            }
        }
    }

    fn limit(&mut self, value: &Value, pointer: &str) -> Option<Limit> {
        let map = self.object(value, pointer, "a limit", LIMIT_FIELDS)?;
        let mut ok = true;
        let mut required = |c: &mut Self, field: &str| {
            let v = map.get(field);
            if v.is_none() {
                c.error(pointer, format!("a limit needs `{field}`"), None);
                ok = false;
            }
            v
        };
        let counter = required(self, "counter");
        let window = required(self, "window");
        let max = required(self, "max");
        let counter = counter.and_then(|v| {
            let s = self.string(v, &child(pointer, "counter"), "`counter`")?;
            if s.is_empty() || s.contains('|') {
                self.error(
                    &child(pointer, "counter"),
                    "a counter name must be non-empty and hold no `|`",
                    None,
                );
                return None;
            }
            Some(s.to_owned())
        });
        let sliding = match map.get("sliding") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.error(
                    &child(pointer, "sliding"),
                    "`sliding` must be true or false",
                    None,
                );
                false
            }
        };
        let window = window.and_then(|v| {
            let p = child(pointer, "window");
            let s = self.string(v, &p, "`window`")?;
            Window::parse(s, sliding)
                .map_err(|e| self.error(&p, e, None))
                .ok()
        });
        let max = max.and_then(|v| {
            let n = v.as_u64();
            if n.is_none() {
                self.error(
                    &child(pointer, "max"),
                    "`max` must be a non-negative integer",
                    None,
                );
            }
            n
        });
        let scope = match map.get("scope") {
            None => Scope::Grant,
            Some(v) => match self.one_of(v, &child(pointer, "scope"), "`scope`", SCOPES) {
                1 => Scope::Session,
                2 => Scope::Server,
                3 => Scope::Global,
                _ => Scope::Grant,
            },
        };
        let increment_from = map.get("increment_from").and_then(|v| {
            let p = child(pointer, "increment_from");
            let s = self.string(v, &p, "`increment_from`")?;
            match Path::parse(s) {
                Ok(path) if path.arg_steps().is_some_and(|s| !s.is_empty()) => Some(path),
                Ok(_) => {
                    self.error(
                        &p,
                        "`increment_from` must name an argument, e.g. `args.amount`",
                        None,
                    );
                    None
                }
                Err(e) => {
                    self.error(&p, e, None);
                    None
                }
            }
        });
        if !ok {
            return None;
        }
        let (counter, window) = (counter?, window?);
        Some(Limit {
            pointer: Arc::from(pointer),
            key_prefix: format!(
                "{counter}|{}{}|{}|",
                window.length_ms,
                if window.sliding { "s" } else { "" },
                scope.as_str()
            )
            .into(),
            counter: Arc::from(counter),
            window,
            max: max?,
            scope,
            increment_from,
        })
    }

    fn section(&mut self, value: &Value, pointer: &str, what: &str) -> Section {
        let mut section = Section::default();
        let Some(map) = self.object(value, pointer, what, SECTION_FIELDS) else {
            return section;
        };
        if let Some(v) = map.get("default") {
            section.default_allow = Some(
                self.one_of(
                    v,
                    &child(pointer, "default"),
                    "`default`",
                    &["deny", "allow"],
                ) == 1,
            );
        }
        for (field, allow) in [("allow", true), ("deny", false)] {
            if let Some(v) = map.get(field) {
                let p = child(pointer, field);
                for glob in self.string_list(v, &p, &format!("`{field}` entries")) {
                    section.rules.push(SectionRule { glob, allow });
                }
            }
        }
        section
    }

    fn audit(&mut self, value: &Value, pointer: &str) -> AuditSpec {
        let mut audit = AuditSpec::default();
        let Some(map) = self.object(value, pointer, "`audit`", AUDIT_FIELDS) else {
            return audit;
        };
        if let Some(v) = map.get("values") {
            match v.as_bool() {
                Some(b) => audit.values = b,
                None => self.error(
                    &child(pointer, "values"),
                    "`values` must be true or false",
                    None,
                ),
            }
        }
        if let Some(v) = map.get("redact") {
            let p = child(pointer, "redact");
            for (i, s) in self
                .string_list(v, &p, "`redact` entries")
                .into_iter()
                .enumerate()
            {
                match Path::parse(&s) {
                    Ok(path) if path.arg_steps().is_some() => audit.redact.push(path),
                    Ok(_) => self.error(
                        &child(&p, &i.to_string()),
                        "redact paths start with `args`",
                        None,
                    ),
                    Err(e) => self.error(&child(&p, &i.to_string()), e, None),
                }
            }
        }
        audit
    }
}

fn quoted(options: &[&str]) -> String {
    options
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
