use proptest::prelude::*;

use super::{allow_rule, deny_rule};
use crate::{invocations, parse};

/// Pieces that stress the grammar: quotes, substitutions, keywords, here-documents.
const TOKENS: &[&str] = &[
    " ",
    " ",
    "\n",
    ";",
    "&",
    "&&",
    "|",
    "||",
    "|&",
    "(",
    ")",
    "{ ",
    " }",
    "'",
    "\"",
    "`",
    "\\",
    "$",
    "$(",
    "${",
    "$((",
    "))",
    "$'",
    "\\x72",
    "<<",
    "<<-",
    "<<<",
    "EOF",
    "<",
    ">",
    ">&",
    "2>&1",
    "<(",
    ">(",
    "[[",
    "]]",
    "((",
    "if ",
    "then ",
    "fi",
    "case ",
    " in ",
    "esac",
    ";;",
    "for ",
    "do ",
    "done",
    "while ",
    "function ",
    "f()",
    "rm",
    "ls",
    "x",
    "=",
    "#",
    "*",
    "?",
    "[",
    "]",
    ":-",
    "-c",
    "bash ",
    "sh ",
    "env ",
    "eval ",
    "xargs ",
    "find ",
    "-exec ",
    "{}",
    "\\;",
    "sudo ",
    "a[",
    "$x",
    "@P",
    "\t",
    "!",
    "coproc ",
    "time ",
    "é",
    "\r",
];

fn shellish() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..80).prop_map(|t| t.concat())
}

/// Deeply nested constructs, possibly unbalanced.
fn nested() -> impl Strategy<Value = String> {
    const PAIRS: &[(&str, &str)] = &[
        ("$(", ")"),
        ("(", ")"),
        ("{ ", "; }"),
        ("`", "`"),
        ("${x:-", "}"),
        ("$((", "))"),
        ("\"$(", ")\""),
        ("bash -c '", "'"),
        ("eval ", ""),
        ("if true; then ", "; fi"),
        ("[[ ", " ]]"),
        ("<(", ")"),
        ("$[", "]"),
        ("\\`", "\\`"),
    ];
    (
        prop::sample::select(PAIRS),
        0usize..120,
        0usize..120,
        prop::sample::select(&["rm x", "ls", "", "x", "'"][..]),
    )
        .prop_map(|((open, close), n, m, core)| {
            format!("{}{core}{}", open.repeat(n), close.repeat(m))
        })
}

fn check_everything(text: &str) {
    let _ = parse(text);
    let _ = invocations(text);
    let _ = deny_rule().check_command(text);
    let _ = allow_rule().check_command(text);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn never_panics_on_any_string(text in any::<String>()) {
        check_everything(&text);
    }

    #[test]
    fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_everything(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn never_panics_on_shellish_text(text in shellish()) {
        check_everything(&text);
    }

    #[test]
    fn never_panics_on_deep_nesting(text in nested()) {
        check_everything(&text);
    }

    #[test]
    fn never_panics_on_argv(argv in prop::collection::vec(shellish(), 0..6)) {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let _ = deny_rule().check_argv(&argv);
        let _ = allow_rule().check_argv(&argv);
    }
}

/// Commands both corpus rules allow.
const ALLOWED: &[&str] = &[
    "ls -la",
    "cat f",
    "df -h",
    "systemctl status nginx",
    "echo ok",
    "grep -r x .",
];

/// Ways to write the program `rm`.
const RM: &[&str] = &[
    "rm",
    "r''m",
    "\\rm",
    "\"rm\"",
    "/bin/rm",
    "$'rm'",
    "'rm'",
    "r\"\"m",
    "$'\\x72m'",
    "/usr/bin/rm",
];

const SEPARATORS: &[&str] = &[";", " && ", " || ", " | ", "\n", " & ", " |& "];

#[derive(Debug, Clone, Copy)]
enum Wrap {
    Env,
    Nice,
    Timeout,
    Shell,
    Xargs,
    Command,
    Substitution,
    Backquote,
}

fn single_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn wrap(command: String, how: Wrap) -> String {
    match how {
        Wrap::Env => format!("env {command}"),
        Wrap::Nice => format!("nice -n 1 {command}"),
        Wrap::Timeout => format!("timeout 5 {command}"),
        Wrap::Shell => format!("bash -c {}", single_quoted(&command)),
        Wrap::Xargs => format!("xargs {command}"),
        Wrap::Command => format!("command {command}"),
        Wrap::Substitution => format!("echo $({command})"),
        // One level of backquotes only: nested ones need escaping.
        Wrap::Backquote if !command.contains('`') => format!("echo `{command}`"),
        Wrap::Backquote => format!("echo $({command})"),
    }
}

fn with_rm() -> impl Strategy<Value = String> {
    let wraps = prop::sample::select(vec![
        Wrap::Env,
        Wrap::Nice,
        Wrap::Timeout,
        Wrap::Shell,
        Wrap::Xargs,
        Wrap::Command,
        Wrap::Substitution,
        Wrap::Backquote,
    ]);
    (
        prop::sample::select(RM),
        prop::sample::select(&["", " x", " -rf /tmp/x"][..]),
        prop::collection::vec(wraps, 0..4),
        prop::collection::vec(
            (
                prop::sample::select(ALLOWED),
                prop::sample::select(SEPARATORS),
            ),
            0..4,
        ),
        any::<prop::sample::Index>(),
        prop::sample::select(SEPARATORS),
    )
        .prop_map(|(rm, args, wraps, others, at, sep)| {
            let mut command = format!("{rm}{args}");
            for how in wraps {
                command = wrap(command, how);
            }
            let at = at.index(others.len() + 1);
            let mut out = String::new();
            for (i, (other, other_sep)) in others.iter().enumerate() {
                if i == at {
                    out.push_str(&command);
                    out.push_str(sep);
                }
                out.push_str(other);
                if i + 1 < others.len() || at == others.len() {
                    out.push_str(other_sep);
                }
            }
            if at == others.len() {
                out.push_str(&command);
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rm_never_passes(command in with_rm()) {
        prop_assert!(deny_rule().check_command(&command).is_err(), "deny list passed {:?}", command);
        prop_assert!(allow_rule().check_command(&command).is_err(), "allow list passed {:?}", command);
    }

    #[test]
    fn allowed_commands_pass(
        parts in prop::collection::vec((prop::sample::select(ALLOWED), prop::sample::select(SEPARATORS)), 1..5)
    ) {
        let mut command = String::new();
        for (i, (c, sep)) in parts.iter().enumerate() {
            if i > 0 {
                command.push_str(sep);
            }
            command.push_str(c);
        }
        prop_assert!(allow_rule().check_command(&command).is_ok(), "allow list denied {:?}", command);
        prop_assert!(deny_rule().check_command(&command).is_ok(), "deny list denied {:?}", command);
    }
}

#[test]
fn huge_and_deep_inputs_are_refused_quickly() {
    let started = std::time::Instant::now();
    for text in [
        "$(".repeat(20_000),
        "(".repeat(30_000),
        "((".repeat(15_000),
        "$((".repeat(10_000),
        "${".repeat(20_000),
        "\"$(".repeat(15_000),
        "{ ".repeat(20_000),
        "[".repeat(60_000),
        "a[".repeat(30_000),
        "x=(".repeat(20_000),
        "`".repeat(60_000),
        "\\`".repeat(30_000),
        "env ".repeat(15_000) + "rm",
        "eval ".repeat(12_000) + "rm",
        "ls;".repeat(20_000),
        "ls | ".repeat(12_000) + "ls",
        "cat <<E\n".repeat(8_000),
        format!("{}{}", "bash -c \"".repeat(40), "\"".repeat(40)),
    ] {
        let t = std::time::Instant::now();
        check_everything(&text);
        assert!(
            t.elapsed().as_secs() < 5,
            "{:?} took {:?}",
            &text[..20],
            t.elapsed()
        );
        if text.contains("rm") {
            assert!(
                deny_rule().check_command(&text).is_err(),
                "{:?}",
                &text[..20]
            );
        }
    }
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
}
