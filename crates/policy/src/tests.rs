//! Decisions as a policy's users expect them.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::*;

fn call<'a>(tool: &'a str, args: &'a Value) -> Call<'a> {
    Call {
        grant: "alice",
        session: "s1",
        server: "ssh",
        tool,
        exposed: tool,
        categories: &[],
        severity: None,
        args,
    }
}

fn policy(v: Value) -> Policy {
    parse(&v.to_string()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_policylayer_example_loads_and_limits_one_grant() {
    let p = parse(r#"{"version":"1","default":"deny","tools":{"ssh_session_start":{"limits":[{"counter":"ssh_session_start_rate","window":"minute","max":10,"scope":"grant"}]}}}"#).unwrap();
    let none = Value::Null;
    let d = p.decide(&call("ssh_session_start", &none));
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.counters.len(), 1);
    let c = &d.counters[0];
    assert_eq!(&*c.rule, "/tools/ssh_session_start/limits/0");
    assert_eq!((c.max, c.amount, c.window.length_ms), (10, 1, 60_000));
    assert_eq!(c.key, "ssh_session_start_rate|60000|grant|alice");
    let mut bob = call("ssh_session_start", &none);
    bob.grant = "bob";
    assert_eq!(
        p.decide(&bob).counters[0].key,
        "ssh_session_start_rate|60000|grant|bob"
    );
    let other = p.decide(&call("ssh_exec", &none));
    assert_eq!(other.verdict, Verdict::Unknown);
    assert_eq!(other.rule, RULE_DEFAULT_DENY);
    assert!(!p.tool_visible("ssh", "ssh_exec", "ssh_exec"));
    assert!(p.tool_visible("ssh", "ssh_session_start", "ssh_session_start"));
}

#[test]
fn the_reference_example_decides_each_tool() {
    let p = policy(json!({
      "version": "1", "default": "deny", "hide": ["delete_account"],
      "all_tools": {"limits": [{"counter": "calls-per-minute", "window": "minute", "max": 100, "scope": "grant"}]},
      "tools": {
        "create_charge": {
          "require": [{"path": "args.reason", "op": "exists"}],
          "deny_if": [{"path": "args.amount", "op": "gt", "value": 10000}],
          "on_deny": "Charges over 10000 need a human."
        },
        "list_files": {}
      }
    }));
    let ok = json!({"amount": 5, "reason": "refund"});
    let d = p.decide(&call("create_charge", &ok));
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(&*d.counters[0].rule, "/all_tools/limits/0");
    let big = json!({"amount": 20000, "reason": "x"});
    let d = p.decide(&call("create_charge", &big));
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.rule, "/tools/create_charge/deny_if/0");
    assert_eq!(d.message, "Charges over 10000 need a human.");
    assert!(d.counters.is_empty());
    let no_reason = json!({"amount": 1});
    let d = p.decide(&call("create_charge", &no_reason));
    assert_eq!(d.rule, "/tools/create_charge/require/0");
    // A string that an upstream would coerce is compared as the number it is.
    let sneaky = json!({"amount": "20000", "reason": "x"});
    assert_eq!(
        p.decide(&call("create_charge", &sneaky)).verdict,
        Verdict::Deny
    );
    // A type the operator cannot compare denies rather than slipping through.
    let odd = json!({"amount": {"v": 20000}, "reason": "x"});
    let d = p.decide(&call("create_charge", &odd));
    assert_eq!(d.verdict, Verdict::Deny);
    assert!(d.message.contains("Charges over"), "{}", d.message);
    assert!(
        d.fired
            .iter()
            .any(|f| f.effect.contains("is an object, not a number")),
        "{:?}",
        d.fired
    );
    assert_eq!(
        p.decide(&call("list_files", &Value::Null)).verdict,
        Verdict::Allow
    );
    let hidden = p.decide(&call("delete_account", &Value::Null));
    assert_eq!(
        (hidden.verdict, hidden.rule.as_str()),
        (Verdict::Unknown, RULE_HIDDEN)
    );
}

#[test]
fn hide_star_hides_everything_and_deny_action_stays_visible() {
    let p = policy(json!({"version": "1", "default": "allow", "hide": ["*"]}));
    assert!(!p.tool_visible("a", "b", "b"));
    assert_eq!(p.decide(&call("b", &Value::Null)).verdict, Verdict::Unknown);
    let p = policy(
        json!({"version": "1", "default": "allow", "tools": {"rm": {"action": "deny", "on_deny": "no"}}}),
    );
    assert!(p.tool_visible("ssh", "rm", "rm"));
    let d = p.decide(&call("rm", &Value::Null));
    assert_eq!(
        (d.verdict, d.rule.as_str(), d.message.as_str()),
        (Verdict::Deny, "/tools/rm/action", "no")
    );
    assert_eq!(p.decide(&call("ls", &Value::Null)).rule, RULE_DEFAULT_ALLOW);
}

#[test]
fn several_matching_keys_all_apply_and_any_deny_wins() {
    let p = policy(json!({"version": "1", "default": "deny", "tools": {
        "ssh_session_*": {"limits": [{"counter": "sessions", "window": "hour", "max": 5}]},
        "ssh/ssh_session_start": {"deny_if": [{"path": "args.host", "op": "eq", "value": "prod"}]},
        "*/delete_*": {"action": "deny"}
    }}));
    let dev = json!({"host": "dev"});
    let d = p.decide(&call("ssh_session_start", &dev));
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.counters.len(), 1);
    let prod = json!({"host": "prod"});
    let d = p.decide(&call("ssh_session_start", &prod));
    assert_eq!(d.rule, "/tools/ssh~1ssh_session_start/deny_if/0");
    assert_eq!(
        p.decide(&call("delete_host", &Value::Null)).rule,
        "/tools/*~1delete_*/action"
    );
    let mut other_server = call("ssh_session_start", &prod);
    other_server.server = "lab";
    assert_eq!(p.decide(&other_server).verdict, Verdict::Allow);
}

#[test]
fn every_operator() {
    let cases: Vec<(Value, Value, bool)> = vec![
        (json!({"op": "eq", "value": 1}), json!(1.0), true),
        (json!({"op": "neq", "value": "a"}), json!("b"), true),
        (json!({"op": "in", "value": ["a", "b"]}), json!("b"), true),
        (
            json!({"op": "not_in", "value": ["a", "b"]}),
            json!("b"),
            false,
        ),
        (json!({"op": "lt", "value": 3}), json!(2), true),
        (json!({"op": "lte", "value": 3}), json!(3), true),
        (json!({"op": "gt", "value": 3}), json!(3), false),
        (json!({"op": "gte", "value": 3}), json!("3"), true),
        (
            json!({"op": "regex", "value": "^/tmp/[a-z]+$"}),
            json!("/tmp/abc"),
            true,
        ),
        (
            json!({"op": "regex", "value": "^/tmp/[a-z]+$"}),
            json!("/tmp/../etc"),
            false,
        ),
        // Unanchored patterns match anywhere; Unicode classes and case folding work.
        (
            json!({"op": "regex", "value": "(?i)rm\\s+-rf"}),
            json!("sudo RM  -rf /"),
            true,
        ),
        (
            json!({"op": "regex", "value": "^\\w+$"}),
            json!("größe"),
            true,
        ),
        (
            json!({"op": "contains", "value": "secret"}),
            json!("my secret file"),
            true,
        ),
        (json!({"op": "contains", "value": 2}), json!([1, 2]), true),
        (json!({"op": "exists"}), json!(0), true),
        (
            json!({"op": "glob", "value": "/home/*/notes.txt"}),
            json!("/home/al/notes.txt"),
            true,
        ),
        (
            json!({"op": "starts_with", "value": "/srv/"}),
            json!("/srv/x"),
            true,
        ),
        (
            json!({"op": "ends_with", "value": ".log"}),
            json!("/srv/x.txt"),
            false,
        ),
        (json!({"op": "max_len", "value": 3}), json!("abcd"), false),
        (json!({"op": "max_len", "value": 3}), json!([1, 2]), true),
        (
            json!({"op": "schema", "value": {"type": "string", "pattern": "^[a-z]+$"}}),
            json!("abc"),
            true,
        ),
        (
            json!({"op": "schema", "value": {"type": "integer", "maximum": 5}}),
            json!(7),
            false,
        ),
    ];
    for (pred, arg, holds) in cases {
        let mut pred = pred;
        pred["path"] = json!("args.x");
        let p = policy(
            json!({"version": "1", "default": "deny", "tools": {"t": {"require": [pred.clone()]}}}),
        );
        let args = json!({"x": arg});
        let d = p.decide(&call("t", &args));
        assert_eq!(d.verdict == Verdict::Allow, holds, "{pred} on {arg}: {d:?}");
    }
}

#[test]
fn missing_paths_do_not_hold_and_context_values_are_paths() {
    let p = policy(json!({"version": "1", "default": "deny", "tools": {"t": {
        "deny_if": [{"path": "args.a.b[2]", "op": "eq", "value": 1},
                    {"path": "grant", "op": "eq", "value": "mallory"}],
        "require": [{"path": "server", "op": "in", "value": ["ssh"]}]}}}));
    assert_eq!(p.decide(&call("t", &json!({}))).verdict, Verdict::Allow);
    assert_eq!(
        p.decide(&call("t", &json!({"a": {"b": [0, 0, 1]}}))).rule,
        "/tools/t/deny_if/0"
    );
    let args = json!({});
    let mut c = call("t", &args);
    c.grant = "mallory";
    assert_eq!(p.decide(&c).rule, "/tools/t/deny_if/1");
    c.grant = "alice";
    c.server = "git";
    assert_eq!(p.decide(&c).rule, "/tools/t/require/0");
}

#[test]
fn approval_and_increment_from() {
    let p = policy(json!({"version": "1", "default": "deny", "tools": {
        "pay": {"action": "approve", "approval": {"timeout": "2m", "approvers": ["client"]},
                "limits": [{"counter": "spend", "window": "day", "max": 1000, "increment_from": "args.amount", "scope": "global"}]}}}));
    let args = json!({"amount": 12.5});
    let d = p.decide(&call("pay", &args));
    assert_eq!(
        d.verdict,
        Verdict::Approve(Approval {
            timeout_ms: 120_000,
            approvers: vec!["client".into()],
            ask_client: AskClient::Form,
        })
    );
    assert_eq!(d.rule, "/tools/pay/action");
    assert_eq!(
        (d.counters[0].amount, d.counters[0].key.as_str()),
        (13, "spend|86400000|global|")
    );
    let bad = json!({"amount": -1});
    let d = p.decide(&call("pay", &bad));
    assert_eq!(
        (d.verdict, d.rule.as_str()),
        (Verdict::Deny, "/tools/pay/limits/0/increment_from")
    );
}

#[test]
fn resources_and_prompts_follow_default_unless_told() {
    let p = policy(
        json!({"version": "1", "default": "deny", "resources": {"allow": ["file:///docs/*"]}}),
    );
    assert!(p.resource_allowed("fs", "file:///docs/a.md"));
    assert!(!p.resource_allowed("fs", "file:///etc/passwd"));
    assert!(!p.prompt_allowed("fs", "greet", "greet"));
    let p =
        policy(json!({"version": "1", "default": "allow", "prompts": {"deny": ["fs/secret_*"]}}));
    assert!(p.prompt_allowed("fs", "greet", "greet"));
    assert!(!p.prompt_allowed("fs", "secret_x", "secret_x"));
    assert!(p.resource_allowed("fs", "anything"));
}

#[test]
fn limit_messages_say_when_they_reset() {
    let p = policy(
        json!({"version": "1", "default": "allow", "all_tools": {"limits": [{"counter": "c", "window": "minute", "max": 10}]}}),
    );
    let d = p.decide(&call("x", &Value::Null));
    let now = 1_795_631_502_500; // 2026-11-25T18:31:42.5Z
    let msg = limit_message(&d.counters[0], 1_795_631_520_000, now);
    assert_eq!(
        msg,
        "rate limit `c` reached: at most 10 per minute per grant; resets in 18 s (at 2026-11-25T18:32:00Z)"
    );
}

#[test]
fn errors_carry_pointer_position_and_hint() {
    let text = "{\n  \"version\": \"1\",\n  \"default\": \"deny\",\n  \"tools\": {\n    \"ssh_exec\": {\"deny-if\": []},\n    \"x\": {\"require\": [{\"path\": \"args.a\", \"op\": \"greater\", \"value\": 1}]},\n    \"y\": {\"limits\": [{\"counter\": \"c\", \"window\": \"fortnight\", \"max\": -1}]}\n  }\n}";
    let e = parse(text).unwrap_err();
    let lines: Vec<String> = e.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_eq!(
        lines[0],
        "5:18: /tools/ssh_exec/deny-if: unknown field `deny-if` in tool `ssh_exec` (hint: did you mean `deny_if`?)"
    );
    assert!(
        lines[1].starts_with("6:42: /tools/x/require/0/op: unknown op `greater`"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("7:39: /tools/y/limits/0/window: `fortnight` is not a duration"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with("7:62: /tools/y/limits/0/max: `max` must be a non-negative integer"),
        "{}",
        lines[3]
    );
}

#[test]
fn refuses_what_could_be_read_two_ways() {
    let e = parse(r#"{"version":"1","default":"deny","default":"allow"}"#).unwrap_err();
    assert_eq!(e.diagnostics[0].pointer, "/default");
    assert!(e.diagnostics[0].message.contains("duplicate key"));
    let e = parse(r#"{"version":1,"default":"deny"}"#).unwrap_err();
    assert_eq!(
        e.diagnostics[0].hint.as_deref(),
        Some("write \"1\" with quotes")
    );
    let e = parse(r#"{"default":"deny","tools":{"t":{"reason":"a","on_deny":"b"}}}"#).unwrap_err();
    assert_eq!(e.diagnostics.len(), 2);
    let e = parse("{\"version\":\"1\",").unwrap_err();
    assert!(e.diagnostics[0].message.starts_with("not valid JSON"));
    let e = parse(r#"{"version":"1","default":"deny","tools":{"t":{"require":[{"path":"args.a","op":"regex","value":"(a"}]}}}"#).unwrap_err();
    assert!(e.diagnostics[0].message.starts_with("invalid regex"), "{e}");
    let e = parse(r#"{"version":"1","default":"deny","tools":{"t":{"deny_if":[{"path":"args.c","op":"command","value":{"deny_programs":["rm"]}}]}}}"#).unwrap_err();
    assert!(e.diagnostics[0].message.contains("under `require`"), "{e}");
}

#[test]
fn a_huge_regex_is_refused_not_compiled_forever() {
    let src = "(a{100}){100}".repeat(20);
    let text = json!({"version": "1", "default": "deny", "tools": {"t": {"require": [{"path": "args.a", "op": "regex", "value": src}]}}}).to_string();
    let e = parse(&text).unwrap_err();
    assert!(e.to_string().contains("invalid regex"), "{e}");
}

fn shuffled_policy(order: &[usize]) -> String {
    let entries = [
        r#""ssh_*": {"limits": [{"counter": "a", "window": "minute", "max": 3}]}"#,
        r#""ssh_exec": {"deny_if": [{"path": "args.command", "op": "contains", "value": "rm"}]}"#,
        r#""*/ssh_exec": {"require": [{"path": "args.timeout", "op": "lte", "value": 1000}]}"#,
        r#""ssh/ssh_exec": {"action": "approve"}"#,
        r#""*exec": {"deny_if": [{"path": "args.sudo", "op": "eq", "value": true}]}"#,
    ];
    let body: Vec<&str> = order.iter().map(|&i| entries[i]).collect();
    format!(
        r#"{{"version": "1", "default": "deny", "tools": {{{}}}}}"#,
        body.join(",")
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_parser_never_panics(text in ".{0,400}") {
        let _ = parse(&text);
    }

    #[test]
    fn the_parser_never_panics_on_near_policies(
        tool in "[a-z_*/]{0,8}", op in "[a-z_]{0,8}", path in "[a-z.\\[\\]0-9\"]{0,12}", value in prop_oneof![Just(json!(1)), Just(json!("x")), Just(json!(null)), Just(json!([1])), Just(json!({"a": 1}))]
    ) {
        let text = json!({"version": "1", "default": "deny", "tools": {tool: {"require": [{"path": path, "op": op, "value": value}], "limits": [{"counter": "c", "window": op, "max": 1}]}}}).to_string();
        let _ = parse(&text);
    }

    #[test]
    fn decisions_do_not_depend_on_key_order(
        order in Just((0..5).collect::<Vec<usize>>()).prop_shuffle(),
        command in prop_oneof![Just("ls"), Just("rm -rf /")],
        timeout in 0u32..2000,
        sudo: bool,
    ) {
        let reference = parse(&shuffled_policy(&[0, 1, 2, 3, 4])).unwrap();
        let shuffled = parse(&shuffled_policy(&order)).unwrap();
        let args = json!({"command": command, "timeout": timeout, "sudo": sudo});
        let a = reference.decide(&call("ssh_exec", &args));
        let b = shuffled.decide(&call("ssh_exec", &args));
        prop_assert_eq!(a, b);
    }
}

#[test]
fn conditional_approval_asks_a_human_only_for_what_the_rule_says() {
    let p = policy(json!({"version": "1", "default": "deny", "tools": {
        "create_charge": {
            "approve_if": [{"path": "args.amount", "op": "gt", "value": 100}],
            "approval": {"timeout": "5m", "approvers": ["admin"]}
        },
        "deploy": {"approve_unless": [{"path": "args.env", "op": "eq", "value": "staging"}]}
    }}));
    let small = json!({"amount": 20});
    assert_eq!(
        p.decide(&call("create_charge", &small)).verdict,
        Verdict::Allow
    );
    let big = json!({"amount": "250"});
    let d = p.decide(&call("create_charge", &big));
    assert_eq!(
        d.verdict,
        Verdict::Approve(Approval {
            timeout_ms: 300_000,
            approvers: vec!["admin".into()],
            ask_client: AskClient::Form,
        })
    );
    assert_eq!(d.rule, "/tools/create_charge/approve_if/0");
    // A value of a type the operator cannot compare is denied, not sent to a human.
    let odd = json!({"amount": [1]});
    assert_eq!(
        p.decide(&call("create_charge", &odd)).verdict,
        Verdict::Deny
    );
    let staging = json!({"env": "staging"});
    assert_eq!(p.decide(&call("deploy", &staging)).verdict, Verdict::Allow);
    let prod = json!({"env": "prod"});
    let d = p.decide(&call("deploy", &prod));
    assert!(matches!(d.verdict, Verdict::Approve(_)), "{d:?}");
    assert_eq!(d.rule, "/tools/deploy/approve_unless/0");
    // `approval` without any way to ask for one is a mistake.
    let e =
        parse(r#"{"version":"1","default":"deny","tools":{"x":{"approval":{"timeout":"1m"}}}}"#)
            .unwrap_err();
    assert_eq!(e.diagnostics[0].pointer, "/tools/x/approval");
}

#[test]
fn a_counter_named_twice_is_taken_once_with_both_amounts() {
    let p = policy(json!({"version": "1", "default": "allow",
    "all_tools": {"limits": [{"counter": "calls", "window": "minute", "max": 100}]},
    "tools": {"x": {"limits": [
        {"counter": "calls", "window": "minute", "max": 10},
        {"counter": "calls", "window": "hour", "max": 50}
    ]}}}));
    let d = p.decide(&call("x", &Value::Null));
    let keys: Vec<(&str, u64, u64)> = d
        .counters
        .iter()
        .map(|c| (c.key.as_str(), c.amount, c.max))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("calls|60000|grant|alice", 2, 10),
            ("calls|3600000|grant|alice", 1, 50)
        ]
    );
    assert_eq!(&*d.counters[0].rule, "/tools/x/limits/0");
}

#[test]
fn numbers_sent_as_strings_and_nulls_do_not_slip_through() {
    let p = policy(
        json!({"version": "1", "default": "allow", "tools": {"pay": {
            "deny_if": [
                {"path": "args.amount", "op": "eq", "value": 20000},
                {"path": "args.account", "op": "in", "value": [7, 8]}
            ],
            "require": [{"path": "args.reason", "op": "exists"}]
        }}}),
    );
    for args in [
        json!({"amount": "20000", "reason": "r"}),
        json!({"amount": " 2e4 ", "reason": "r"}),
        json!({"account": "7", "reason": "r"}),
        json!({"amount": 1, "reason": null}),
    ] {
        assert_eq!(
            p.decide(&call("pay", &args)).verdict,
            Verdict::Deny,
            "{args}"
        );
    }
    let fine = json!({"amount": "19999", "account": "9", "reason": "r"});
    assert_eq!(p.decide(&call("pay", &fine)).verdict, Verdict::Allow);
}

#[test]
fn a_command_rule_must_point_at_one_argument() {
    let e = parse(r#"{"version":"1","default":"deny","tools":{"x":{"require":[{"path":"args","op":"command","value":{"deny_programs":["rm"]}}]}}}"#)
        .unwrap_err();
    assert_eq!(e.diagnostics[0].pointer, "/tools/x/require/0/path");
    let e = parse(r#"{"version":"1","default":"deny","tools":{"x":{"deny_if":[{"path":"args.c","op":"command","value":{"deny_programs":["rm"]}}]}}}"#)
        .unwrap_err();
    assert!(
        e.diagnostics[0]
            .message
            .contains("`require` or `approve_unless`"),
        "{e}"
    );
}

#[test]
fn an_approval_says_how_the_client_is_asked() {
    let p = policy(json!({"version": "1", "default": "deny", "tools": {
        "pay": {"action": "approve", "approval": {"approvers": ["client"], "ask_client": "url"}}}}));
    let d = p.decide(&call("pay", &json!({})));
    let Verdict::Approve(a) = d.verdict else {
        panic!("not held: {:?}", d.verdict)
    };
    assert_eq!(a.ask_client, AskClient::Url);
    let text = r#"{"version": "1", "default": "deny", "tools": {"pay": {"action": "approve", "approval": {"ask_client": "link"}}}}"#;
    let e = parse(text).unwrap_err();
    assert_eq!(e.diagnostics[0].pointer, "/tools/pay/approval/ask_client");
    assert!(
        e.diagnostics[0]
            .message
            .contains("must be one of `form`, `url`, not `link`"),
        "{}",
        e.diagnostics[0]
    );
}
