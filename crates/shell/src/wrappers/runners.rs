//! Runners with powers of their own (`sudo`, `doas`, `su`, `runuser`, `sg`, `ssh`), shells,
//! and builtins that hold code (`trap`, `alias`, `compgen`).

use super::{Arg, Next, Spec, Step, assignments, joined, scan, short, then_run};
use crate::InvocationKind::{Builtin, Program, Runner, Transparent, UnseenCode};
use crate::error::Unchecked;

pub(super) const READS_STDIN: &str = "starts a shell that reads standard input";

pub(super) fn unseen(program: &str, why: &'static str) -> Unchecked {
    Unchecked::UnseenCode {
        program: program.to_string(),
        why,
    }
}

pub(super) fn trap(args: &[Arg]) -> Step {
    let mut i = 0;
    while let Some(t) = args.get(i).and_then(|a| a.text.as_deref()) {
        if t == "--" {
            i += 1;
            break;
        }
        if t.len() > 1 && t.starts_with('-') {
            if t.contains(['l', 'p', 'P']) {
                return Step::new(Builtin);
            }
            i += 1;
            continue;
        }
        break;
    }
    match args.get(i).map(|a| a.text.as_deref()) {
        None => Step::new(Builtin),
        Some(None) => Step::problem(Builtin, Unchecked::DynamicCode("trap".into())),
        Some(Some(t)) if t.is_empty() || t == "-" || t.chars().all(|c| c.is_ascii_digit()) => {
            Step::new(Builtin)
        }
        Some(Some(t)) => Step::code(Builtin, t.to_string(), true),
    }
}

pub(super) fn alias(args: &[Arg]) -> Step {
    let mut step = Step::new(Program);
    for a in args {
        match a.text.as_deref() {
            Some(t) if t.starts_with('-') => {}
            Some(t) => {
                if let Some((_, value)) = t.split_once('=') {
                    if value.ends_with('\\') {
                        // bash pastes the value into the line: a final backslash joins it with
                        // the next line (`alias x='r\\'`, then `x` and `m /` on two lines).
                        step.problem = Some(Unchecked::Unsupported(format!("alias {}", short(t))));
                    }
                    step.next.push(Next::Code {
                        text: value.to_string(),
                        same_process: true,
                    });
                }
            }
            None => step.problem = Some(Unchecked::DynamicCode("alias".into())),
        }
    }
    step
}

/// `compgen`/`complete`: `-C` runs a command, `-W` expands its word list (`$(...)` included),
/// `-V` (bash 5.3) sets a variable. Options are read as bash reads them (`-W'$(id)'`,
/// `-fW list`).
pub(super) fn completion(name: &str, args: &[Arg]) -> Step {
    let spec = Spec {
        flags: "abcdefgjksuvprDEI",
        with_arg: "oAGWFCXPSV",
        ..Spec::default()
    };
    let s = match scan(name, &spec, args) {
        Ok(s) => s,
        Err(e) => return Step::problem(Program, e),
    };
    let mut step = Step::new(Program);
    for opt in &s.opts {
        let value = opt.value.as_ref().and_then(|v| v.text.clone());
        match (opt.name.as_str(), value) {
            ("C", Some(text)) => step.next.push(Next::Code {
                text,
                same_process: true,
            }),
            ("W", Some(text)) => step.next.push(Next::Expanded { text }),
            ("V", Some(text)) => step.next.push(Next::Assign {
                name: text,
                value: None,
            }),
            ("C" | "W" | "V", None) => {
                step.problem = Some(Unchecked::DynamicCode(format!("{name} -{}", opt.name)))
            }
            _ => {}
        }
    }
    step
}

pub(super) fn sudo(args: &[Arg], appended: bool) -> Step {
    let spec = Spec {
        flags: "AbBEeHhiKklNnPSsVv",
        with_arg: "aCcDgpRrTtUu",
        long_flags: &[
            "askpass",
            "background",
            "bell",
            "edit",
            "help",
            "list",
            "login",
            "non-interactive",
            "preserve-groups",
            "remove-timestamp",
            "reset-timestamp",
            "set-home",
            "shell",
            "stdin",
            "validate",
            "version",
            "preserve-env",
        ],
        long_with_arg: &[
            "auth-type",
            "chdir",
            "chroot",
            "close-from",
            "command-timeout",
            "group",
            "host",
            "login-class",
            "other-user",
            "prompt",
            "role",
            "type",
            "user",
        ],
        ..Spec::default()
    };
    let s = match scan("sudo", &spec, args) {
        Ok(s) => s,
        Err(e) => return Step::problem(Runner, e),
    };
    if s.has(&["e", "edit"]) {
        return Step::problem(Runner, Unchecked::Unsupported("sudo -e".into()));
    }
    let mut step = Step::new(Runner);
    let start = s.rest + assignments(&args[s.rest..], &mut step);
    if s.has(&["l", "list"]) {
        return step;
    }
    if start >= args.len() {
        if s.has(&["i", "s", "login", "shell"]) {
            step.problem = Some(unseen("sudo", READS_STDIN));
        } else if appended {
            step.problem = Some(Unchecked::ProgramFromInput("sudo".into()));
        }
        return step;
    }
    step.next.push(Next::Command {
        argv: args[start..].to_vec(),
        appended,
    });
    step
}

pub(super) fn doas(args: &[Arg], appended: bool) -> Step {
    let spec = Spec {
        flags: "nsL",
        with_arg: "uCa",
        ..Spec::default()
    };
    match scan("doas", &spec, args) {
        Ok(s) if s.has(&["C", "L"]) => Step::new(Runner),
        Ok(s) if s.rest >= args.len() && s.has(&["s"]) => {
            Step::problem(Runner, unseen("doas", READS_STDIN))
        }
        Ok(s) => then_run(Runner, "doas", args, s.rest, appended),
        Err(e) => Step::problem(Runner, e),
    }
}

/// `su` and `runuser` permute their arguments: options may follow the user name, and
/// `-c` holds a command string for the user's shell.
pub(super) fn su(program: &str, args: &[Arg]) -> Step {
    let mut code = None;
    let mut shell: Option<Option<String>> = None;
    let mut user_mode = false;
    let mut operands = Vec::new();
    let mut i = 0;
    let mut options_done = false;
    while i < args.len() {
        let Some(text) = args[i].text.as_deref() else {
            return Step::problem(Runner, Unchecked::DynamicArgument(program.into()));
        };
        if options_done || text == "-" || !text.starts_with('-') {
            if text != "-" {
                operands.push(i);
            }
            i += 1;
            continue;
        }
        if text == "--" {
            options_done = true;
            i += 1;
            continue;
        }
        if let Some(long) = text.strip_prefix("--") {
            let (key, inline) = match long.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (long, None),
            };
            match key {
                "login" | "preserve-environment" | "pty" | "fast" => {}
                "command"
                | "session-command"
                | "shell"
                | "group"
                | "supp-group"
                | "whitelist-environment"
                | "user" => {
                    let value = match inline {
                        Some(v) => Some(Some(v)),
                        None => {
                            i += 1;
                            args.get(i).map(|a| a.text.clone())
                        }
                    };
                    let Some(value) = value else {
                        return Step::problem(Runner, Unchecked::MissingOperand(program.into()));
                    };
                    if key == "user" {
                        user_mode = true;
                    }
                    if key.ends_with("command") {
                        code = Some(value.clone());
                    }
                    if key == "shell" {
                        shell = Some(value);
                    }
                }
                _ => {
                    return Step::problem(
                        Runner,
                        Unchecked::UnknownOption {
                            program: program.into(),
                            option: short(text),
                        },
                    );
                }
            }
            i += 1;
            continue;
        }
        let body = &text[1..];
        for (j, c) in body.char_indices() {
            match c {
                'l' | 'm' | 'p' | 'f' | 'P' => {}
                'c' | 's' | 'g' | 'G' | 'w' | 'u' => {
                    let attached = &body[j + 1..];
                    let value = if attached.is_empty() {
                        i += 1;
                        match args.get(i) {
                            Some(a) => a.text.clone(),
                            None => {
                                return Step::problem(
                                    Runner,
                                    Unchecked::MissingOperand(program.into()),
                                );
                            }
                        }
                    } else {
                        Some(attached.to_string())
                    };
                    if c == 'c' {
                        code = Some(value.clone());
                    }
                    if c == 'u' {
                        user_mode = true;
                    }
                    if c == 's' {
                        shell = Some(value);
                    }
                    break;
                }
                _ => {
                    return Step::problem(
                        Runner,
                        Unchecked::UnknownOption {
                            program: program.into(),
                            option: format!("-{c}"),
                        },
                    );
                }
            }
        }
        i += 1;
    }
    match (code, shell) {
        (Some(None), _) => Step::problem(Runner, Unchecked::DynamicCode(program.into())),
        (_, Some(None)) => Step::problem(Runner, Unchecked::DynamicArgument(program.into())),
        // `-s PROGRAM` replaces the user's shell: it is what runs (`su -s /usr/bin/python3 -c
        // CODE`), so it is resolved like any program, with the `-c` it is given.
        (Some(Some(text)), Some(Some(shell))) if !user_mode => Step::command(
            Runner,
            vec![Arg::lit(&shell), Arg::lit("-c"), Arg::lit(&text)],
            false,
        ),
        (None, Some(Some(shell))) if !user_mode => {
            Step::command(Runner, vec![Arg::lit(&shell)], false)
        }
        (Some(Some(text)), _) => Step::code(Runner, text, false),
        (None, _) if user_mode && !operands.is_empty() => {
            let argv = operands.iter().map(|&i| args[i].clone()).collect();
            Step::command(Runner, argv, false)
        }
        (None, _) => Step::problem(Runner, unseen(program, READS_STDIN)),
    }
}

/// `sg [-] group [-c] command`: the command string runs with `/bin/sh -c`.
pub(super) fn sg(args: &[Arg]) -> Step {
    let mut i = 0;
    if args.first().and_then(|a| a.text.as_deref()) == Some("-") {
        i += 1;
    }
    i += 1; // the group
    if args.get(i).and_then(|a| a.text.as_deref()) == Some("-c") {
        i += 1;
    }
    match args.get(i..).filter(|rest| !rest.is_empty()).map(joined) {
        Some(Some(text)) => Step::code(Runner, text, false),
        Some(None) => Step::problem(Runner, Unchecked::DynamicCode("sg".into())),
        None => Step::problem(Runner, unseen("sg", READS_STDIN)),
    }
}

pub(super) fn ssh(args: &[Arg]) -> Step {
    let spec = Spec {
        flags: "46AaCfGgKkMNnqsTtVvXxYy",
        with_arg: "BbcDEeFIiJLlmOoPpQRSWw",
        ..Spec::default()
    };
    let mut step = Step::new(Runner);
    let mut start = 0;
    let mut no_command = false;
    // OpenSSH reads options both before and after the destination.
    for round in 0..2 {
        let s = match scan("ssh", &spec, &args[start..]) {
            Ok(s) => s,
            Err(e) => return Step::problem(Runner, e),
        };
        for opt in &s.opts {
            match opt.name.as_str() {
                "F" => return Step::problem(Runner, Unchecked::Unsupported("ssh -F".into())),
                "o" => {
                    let Some(value) = opt.value.as_ref().and_then(|v| v.text.as_deref()) else {
                        return Step::problem(Runner, Unchecked::DynamicArgument("ssh -o".into()));
                    };
                    match ssh_option(value) {
                        Ok(Some(code)) => step.next.push(Next::Code {
                            text: code,
                            same_process: false,
                        }),
                        Ok(None) => {}
                        Err(e) => return Step::problem(Runner, e),
                    }
                }
                // `-I` loads a PKCS#11 library into ssh.
                "I" => return Step::problem(Runner, Unchecked::Unsupported("ssh -I".into())),
                "N" | "W" | "O" | "G" | "V" => no_command = true,
                _ => {}
            }
        }
        start += s.rest;
        if round == 0 {
            if start >= args.len() {
                break;
            }
            start += 1; // the destination
        }
    }
    let start = start.min(args.len());
    match joined(&args[start..]) {
        _ if start >= args.len() && no_command => {}
        _ if start >= args.len() => step.problem = Some(unseen("ssh", READS_STDIN)),
        Some(text) => step.next.push(Next::Code {
            text,
            same_process: false,
        }),
        None => step.problem = Some(Unchecked::DynamicCode("ssh".into())),
    }
    step
}

/// Options that make ssh run or load something locally.
const SSH_COMMAND_OPTIONS: &[&str] = &[
    "proxycommand",
    "localcommand",
    "knownhostscommand",
    "remotecommand",
];
const SSH_LOADING_OPTIONS: &[&str] = &[
    "pkcs11provider",
    "securitykeyprovider",
    "xauthlocation",
    "include",
];

/// An `ssh -o` value: the command it runs, if any. ssh skips leading blanks, accepts a
/// quoted keyword and `=` or blanks after it, in any letter case; any value that mentions a
/// command-running keyword some other way is refused.
pub(super) fn ssh_option(value: &str) -> Result<Option<String>, Unchecked> {
    const BLANKS: &[char] = &[' ', '\t', '\r', '\n', '\x0c'];
    let text = value.trim_start_matches(BLANKS);
    let (keyword, rest) = match text.strip_prefix('"') {
        Some(quoted) => match quoted.split_once('"') {
            Some((k, r)) => (k, r),
            None => (quoted, ""),
        },
        None => {
            let end = text
                .find(|c: char| c == '=' || BLANKS.contains(&c))
                .unwrap_or(text.len());
            (&text[..end], &text[end..])
        }
    };
    let keyword = keyword.to_ascii_lowercase();
    let rest = rest.trim_start_matches(BLANKS);
    let rest = rest
        .strip_prefix('=')
        .unwrap_or(rest)
        .trim_start_matches(BLANKS);
    let refused = || Unchecked::Unsupported(format!("ssh -o {}", short(value)));
    if SSH_COMMAND_OPTIONS.contains(&keyword.as_str()) {
        return Ok(Some(rest.to_string()));
    }
    if SSH_LOADING_OPTIONS.contains(&keyword.as_str()) {
        return Err(refused());
    }
    let folded: String = value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    if SSH_COMMAND_OPTIONS
        .iter()
        .chain(SSH_LOADING_OPTIONS)
        .any(|k| folded.contains(k))
    {
        return Err(refused());
    }
    Ok(None)
}

/// `sh`-family shells: `-c` runs its operand (checked as a script); otherwise the shell runs
/// a script file or standard input, which cannot be seen.
pub(super) fn shell(program: &str, args: &[Arg]) -> Step {
    let mut has_c = false;
    let mut i = 0;
    while i < args.len() {
        let Some(text) = args[i].text.as_deref() else {
            if has_c {
                break; // the script itself
            }
            return Step::problem(Transparent, Unchecked::DynamicArgument(program.into()));
        };
        if text == "-" || text == "--" {
            i += 1;
            break;
        }
        if let Some(long) = text.strip_prefix("--") {
            match long {
                "login" | "noprofile" | "norc" | "posix" | "restricted" | "verbose"
                | "noediting" | "debugger" | "dump-po-strings" | "dump-strings" | "help"
                | "version" | "pretty-print" => {}
                "rcfile" | "init-file" => {
                    return Step::problem(Transparent, unseen(program, "runs a startup file"));
                }
                _ => {
                    return Step::problem(
                        Transparent,
                        Unchecked::UnknownOption {
                            program: program.into(),
                            option: short(text),
                        },
                    );
                }
            }
            i += 1;
            continue;
        }
        if text.len() > 1 && (text.starts_with('-') || text.starts_with('+')) {
            let minus = text.starts_with('-');
            for c in text[1..].chars() {
                match c {
                    'c' if minus => has_c = true,
                    // `-k`: `NAME=value` words anywhere are assignments; `-H`: history
                    // expansion rewrites lines from earlier ones.
                    'k' | 'H' if minus => {
                        return Step::problem(
                            Transparent,
                            Unchecked::Unsupported(format!("{program} -{c}")),
                        );
                    }
                    'o' | 'O' => {
                        i += 1;
                        let Some(option) = args.get(i) else {
                            return Step::problem(
                                Transparent,
                                Unchecked::MissingOperand(program.into()),
                            );
                        };
                        if minus
                            && c == 'o'
                            && option
                                .text
                                .as_deref()
                                .is_none_or(|o| matches!(o, "keyword" | "histexpand" | "history"))
                        {
                            return Step::problem(
                                Transparent,
                                Unchecked::Unsupported(format!("{program} -o")),
                            );
                        }
                    }
                    c if "abefhiklmnprstuvxBCEHPT".contains(c) => {}
                    _ => {
                        return Step::problem(
                            Transparent,
                            Unchecked::UnknownOption {
                                program: program.into(),
                                option: format!("{}{c}", &text[..1]),
                            },
                        );
                    }
                }
            }
            i += 1;
            continue;
        }
        break;
    }
    if !has_c {
        return Step::new(UnseenCode("runs a script file or standard input"));
    }
    match args.get(i).map(|a| a.text.clone()) {
        Some(Some(code)) => Step::code(Transparent, code, false),
        Some(None) => Step::problem(Transparent, Unchecked::DynamicCode(format!("{program} -c"))),
        None => Step::problem(
            Transparent,
            Unchecked::MissingOperand(format!("{program} -c")),
        ),
    }
}
