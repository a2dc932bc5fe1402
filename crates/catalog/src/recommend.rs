//! A starting policy from the classification: deny by default, reads free, writes limited,
//! execution limited and argument-checked, destruction and poisoned tools held or refused.

use serde_json::{Map, Value, json};

use crate::class::{Category, Classification, FindingKind, Severity};

/// Programs an agent may run unattended through a shell-aware rule: they read and print.
pub const READ_ONLY_PROGRAMS: &[&str] = &[
    "ls", "cat", "head", "tail", "grep", "wc", "stat", "df", "du", "free", "uptime", "uname",
    "hostname", "whoami", "id", "date", "ps", "echo", "pwd",
];

/// Calls per minute per grant for tools that write or reach out.
pub const WRITE_PER_MINUTE: u64 = 60;
/// Calls per minute per grant for tools that execute or are of high severity.
pub const EXECUTE_PER_MINUTE: u64 = 10;

/// One tool to recommend for.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// The configured server name.
    pub server: &'a str,
    /// The tool's name on that server.
    pub tool: &'a str,
    /// Its classification.
    pub class: &'a Classification,
    /// The argument holding a shell command, if any.
    pub shell_argument: Option<&'a str>,
}

/// What the recommendation does with a tool, and the rules it gets.
fn entry(s: &Subject<'_>) -> Value {
    let class = s.class;
    let cats = class
        .categories
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let label = if cats.is_empty() {
        format!("unclassified ({})", class.severity)
    } else {
        format!("{cats} ({})", class.severity)
    };
    let counter = |per: &str| format!("{}/{}-{per}", s.server, s.tool);
    let poisoned = class.findings.iter().any(|f| {
        matches!(
            f.kind,
            FindingKind::HiddenInstruction | FindingKind::InvisibleCharacters
        )
    });
    if poisoned {
        return json!({
            "description": format!("{label}: its definition looks poisoned ({}); denied until reviewed", class
                .findings.iter().map(|f| f.kind.as_str()).collect::<Vec<_>>().join(", ")),
            "action": "deny",
            "on_deny": "This tool's definition failed toolgate's poisoning checks; an operator must review it.",
        });
    }
    if let Some(arg) = s.shell_argument {
        return json!({
            "description": format!(
                "{label}: read-only commands ({}) run unattended; any other command waits for approval; {EXECUTE_PER_MINUTE} calls a minute per grant",
                READ_ONLY_PROGRAMS.join(" ")
            ),
            "require": [{"path": format!("args.{arg}"), "op": "max_len", "value": 4096}],
            "approve_unless": [{"path": format!("args.{arg}"), "op": "command", "value": {
                "allow_programs": READ_ONLY_PROGRAMS,
                "deny": ["substitution", "redirection", "background", "heredoc"],
            }}],
            "approval": {"timeout": "5m"},
            "limits": [{"counter": counter("minute"), "window": "minute", "max": EXECUTE_PER_MINUTE, "scope": "grant"}],
        });
    }
    if class.is(Category::Destructive)
        || class.is(Category::Financial)
        || class.severity == Severity::Critical
    {
        return json!({
            "description": format!("{label}: every call waits for a human's approval"),
            "action": "approve",
            "approval": {"timeout": "10m"},
        });
    }
    if class.is(Category::Execute) || class.severity >= Severity::High {
        return json!({
            "description": format!("{label}: {EXECUTE_PER_MINUTE} calls a minute per grant"),
            "limits": [{"counter": counter("minute"), "window": "minute", "max": EXECUTE_PER_MINUTE, "scope": "grant"}],
        });
    }
    if class.severity >= Severity::Medium {
        return json!({
            "description": format!("{label}: allowed, {WRITE_PER_MINUTE} calls a minute per grant"),
            "limits": [{"counter": counter("minute"), "window": "minute", "max": WRITE_PER_MINUTE, "scope": "grant"}],
        });
    }
    json!({ "description": format!("{label}: allowed") })
}

/// The recommended policy for these tools, keyed `server/tool` so that each rule binds
/// exactly one tool. `generated_from` goes into the policy's description.
pub fn recommend(subjects: &[Subject<'_>], generated_from: &str) -> Value {
    let mut tools = Map::new();
    for s in subjects {
        tools.insert(format!("{}/{}", s.server, s.tool), entry(s));
    }
    json!({
        "version": "1",
        "description": format!(
            "Recommended by `toolgate recommend` from {generated_from}. Review it: default deny; reads allowed; writes rate-limited; execution limited and argument-checked; destructive, financial and critical tools need approval; tools with poisoned definitions denied."
        ),
        "default": "deny",
        "tools": tools,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::{Evidence, Finding, Source};

    fn class(categories: &[Category], severity: Severity) -> Classification {
        Classification {
            categories: categories.to_vec(),
            severity,
            evidence: vec![Evidence {
                source: Source::Name,
                detail: "test".into(),
                categories: categories.to_vec(),
                severity: None,
            }],
            findings: Vec::new(),
        }
    }

    fn subject<'a>(
        tool: &'a str,
        class: &'a Classification,
        shell: Option<&'a str>,
    ) -> Subject<'a> {
        Subject {
            server: "s",
            tool,
            class,
            shell_argument: shell,
        }
    }

    #[test]
    fn each_class_gets_its_rule_and_the_policy_parses() {
        let read = class(&[Category::Read], Severity::Low);
        let write = class(&[Category::Write], Severity::Medium);
        let exec = class(&[Category::Execute], Severity::High);
        let remote = class(&[Category::Execute, Category::Network], Severity::Critical);
        let gone = class(&[Category::Destructive], Severity::High);
        let mut poisoned = class(&[Category::Read], Severity::Low);
        poisoned.add_finding(Finding {
            kind: FindingKind::HiddenInstruction,
            location: "description".into(),
            detail: "asks to ignore earlier instructions".into(),
        });
        let subjects = [
            subject("read", &read, None),
            subject("write", &write, None),
            subject("exec", &exec, None),
            subject("shell", &remote, Some("command")),
            subject("delete", &gone, None),
            subject("poisoned", &poisoned, None),
        ];
        let policy = recommend(&subjects, "a test");
        let text = serde_json::to_string_pretty(&policy).unwrap();
        let compiled = toolgate_policy::parse(&text).expect("recommend output parses");
        assert_eq!(compiled.len(), 6);
        let t = &policy["tools"];
        assert_eq!(t["s/read"].as_object().unwrap().len(), 1);
        assert_eq!(t["s/write"]["limits"][0]["max"], WRITE_PER_MINUTE);
        assert_eq!(t["s/exec"]["limits"][0]["max"], EXECUTE_PER_MINUTE);
        assert_eq!(t["s/shell"]["approve_unless"][0]["op"], "command");
        assert_eq!(t["s/delete"]["action"], "approve");
        assert_eq!(t["s/poisoned"]["action"], "deny");
    }
}
