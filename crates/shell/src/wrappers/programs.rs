//! Ordinary programs that operators tend to allow as harmless, with options that run another
//! program or shell code (`sort --compress-program=sh`, `git grep -O'cmd'`, `tar
//! --checkpoint-action=exec=cmd`, `ip netns exec ns cmd`, `scp -S prog`, `tcpdump -z cmd`).
//! The command such an option names is checked like a wrapper's (an allow list must name it
//! too); an option whose effect cannot be seen (a configuration file, a batch file) is refused.
//! Since a word computed at run time could be any of these options, such a word is refused
//! where an option could be, unless it starts with text that is not an option (`./$f`).
//!
//! `awk` and `sed` are read conservatively: the commands their programs run with a literal
//! (`system("ls")`, `1e ls`) are checked, and anything that could run other commands is
//! refused. Other interpreters and editors (`perl`, `python`, `vim`, `less`, ...) are not
//! modelled: the rule cannot see inside them (see the crate documentation).

use super::{Arg, Next, Step, runners::ssh_option, short};
use crate::InvocationKind::Program;
use crate::error::Unchecked;

/// Whether `word` (`--name` or `--name=value`) is `--full` or an abbreviation of it that
/// `getopt_long` would accept (at least `min` characters).
fn long_is(word: &str, full: &str, min: usize) -> bool {
    let Some(key) = word.strip_prefix("--") else {
        return false;
    };
    let key = key.split_once('=').map_or(key, |(k, _)| k);
    key.len() >= min.min(full.len()) && full.starts_with(key)
}

/// The value of a long option at `args[i]`: after `=`, or the next word.
fn long_value(args: &[Arg], i: usize) -> Option<Option<String>> {
    let word = args[i].text.as_deref()?;
    match word.split_once('=') {
        Some((_, v)) => Some(Some(v.to_string())),
        None => args.get(i + 1).map(|a| a.text.clone()),
    }
}

/// Short options as `getopt` reads a cluster such as `-nnz cmd`: the letters up to one in
/// `with_arg`, which takes the rest of the word or the next word. Returns the letters, each
/// with its value.
fn cluster(args: &[Arg], i: usize, with_arg: &str) -> Vec<(char, Option<Option<String>>)> {
    let Some(word) = args[i].text.as_deref() else {
        return Vec::new();
    };
    let body = &word[1..];
    let mut out = Vec::new();
    for (j, c) in body.char_indices() {
        if !with_arg.contains(c) {
            out.push((c, None));
            continue;
        }
        let attached = &body[j + c.len_utf8()..];
        let value = if attached.is_empty() {
            args.get(i + 1).map(|a| a.text.clone())
        } else {
            Some(Some(attached.to_string()))
        };
        out.push((c, Some(value.flatten())));
        break;
    }
    out
}

fn refuse(step: &mut Step, what: String) {
    step.problem.get_or_insert(Unchecked::Unsupported(what));
}

fn run(step: &mut Step, program: &str, option: &str, value: Option<Option<String>>) {
    match value.flatten() {
        Some(v) if !v.is_empty() => step.next.push(Next::Command {
            argv: vec![Arg::lit(&v)],
            appended: false,
        }),
        _ => refuse(step, format!("{program} {option}")),
    }
}

fn code(step: &mut Step, program: &str, option: &str, value: Option<Option<String>>) {
    match value.flatten() {
        Some(v) => step.next.push(Next::Code {
            text: v,
            same_process: false,
        }),
        None => refuse(step, format!("{program} {option}")),
    }
}

/// A program of this module, or `None` for one it does not model.
pub(super) fn program(name: &str, args: &[Arg], appended: bool) -> Option<Step> {
    const MODELLED: &[&str] = &[
        "sort",
        "tar",
        "gtar",
        "man",
        "git",
        "zip",
        "rsync",
        "scp",
        "sftp",
        "wget",
        "tcpdump",
        "apt",
        "apt-get",
        "apt-cache",
        "aptitude",
        "dpkg",
        "ip",
        "awk",
        "gawk",
        "mawk",
        "nawk",
        "sed",
        "gsed",
        "nc",
        "ncat",
        "netcat",
        "socat",
    ];
    if !MODELLED.contains(&name) {
        return None;
    }
    let mut step = Step::new(Program);
    if appended && name != "ip" {
        // Words from input could be any option.
        step.problem = Some(Unchecked::DynamicArgument(name.into()));
        return Some(step);
    }
    match name {
        "sort" => options(
            &mut step,
            name,
            args,
            "kStTo",
            true,
            |step, args, i, word| {
                if long_is(word, "compress-program", 3) {
                    run(step, "sort", "--compress-program", long_value(args, i));
                }
            },
        ),
        "tar" | "gtar" => tar(&mut step, args),
        "man" => options(
            &mut step,
            name,
            args,
            "CELMmPpRrSs",
            true,
            |step, args, i, word| {
                if long_is(word, "pager", 3) {
                    code(step, "man", "--pager", long_value(args, i));
                } else if long_is(word, "html", 2) || long_is(word, "config-file", 2) {
                    refuse(step, format!("man {}", short(word)));
                } else if !word.starts_with("--") {
                    for (c, value) in cluster(args, i, "CELMmPpRrSs") {
                        match c {
                            'P' => code(step, "man", "-P", value),
                            'C' | 'H' => refuse(step, format!("man -{c}")),
                            _ => {}
                        }
                    }
                }
            },
        ),
        "git" => git(&mut step, args),
        "zip" => options(&mut step, name, args, "bnt", true, |step, _, _, word| {
            if word.starts_with("-TT") || long_is(word, "unzip-command", 3) {
                refuse(step, format!("zip {}", short(word)));
            }
        }),
        "rsync" => options(
            &mut step,
            name,
            args,
            "BefMT",
            true,
            |step, args, i, word| {
                if long_is(word, "rsh", 3) {
                    code(step, "rsync", "--rsh", long_value(args, i));
                } else if !word.starts_with("--") {
                    for (c, value) in cluster(args, i, "BefMT") {
                        if c == 'e' {
                            code(step, "rsync", "-e", value);
                        }
                    }
                }
            },
        ),
        "scp" | "sftp" => {
            let with_arg = if name == "scp" {
                "cDFiJloPSX"
            } else {
                "BbcDFiJloPRSsX"
            };
            options(
                &mut step,
                name,
                args,
                with_arg,
                true,
                |step, args, i, word| {
                    if word.starts_with("--") {
                        return;
                    }
                    for (c, value) in cluster(args, i, with_arg) {
                        match c {
                            'S' | 'D' => run(step, name, &format!("-{c}"), value),
                            'F' => refuse(step, format!("{name} -F")),
                            'b' if name == "sftp" => refuse(step, "sftp -b".into()),
                            'o' => match value.flatten().map(|v| ssh_option(&v)) {
                                Some(Ok(Some(text))) => step.next.push(Next::Code {
                                    text,
                                    same_process: false,
                                }),
                                Some(Ok(None)) => {}
                                Some(Err(e)) => {
                                    step.problem.get_or_insert(e);
                                }
                                None => refuse(step, format!("{name} -o")),
                            },
                            _ => {}
                        }
                    }
                },
            )
        }
        "wget" => options(
            &mut step,
            name,
            args,
            "aDIOoPQTtUXw",
            true,
            |step, args, i, word| {
                if long_is(word, "use-askpass", 5) {
                    run(step, "wget", "--use-askpass", long_value(args, i));
                } else if long_is(word, "execute", 3)
                    || long_is(word, "config", 4)
                    || (!word.starts_with("--") && word[1..].contains('e'))
                {
                    refuse(step, format!("wget {}", short(word)));
                }
            },
        ),
        "tcpdump" => options(
            &mut step,
            name,
            args,
            "bBcCDEFGijmMQrsTVwWyzZ",
            true,
            |step, args, i, word| {
                if word.starts_with("--") {
                    return;
                }
                for (c, value) in cluster(args, i, "bBcCDEFGijmMQrsTVwWyzZ") {
                    if c == 'z' {
                        run(step, "tcpdump", "-z", value);
                    }
                }
            },
        ),
        "apt" | "apt-get" | "apt-cache" | "aptitude" => {
            options(&mut step, name, args, "co", false, |step, args, i, word| {
                let value = if long_is(word, "option", 3) {
                    long_value(args, i)
                } else if long_is(word, "config-file", 3) {
                    return refuse(step, format!("{name} --config-file"));
                } else if !word.starts_with("--") {
                    let mut value = None;
                    for (c, v) in cluster(args, i, "cotqaS") {
                        match c {
                            'c' => return refuse(step, format!("{name} -c")),
                            'o' => value = v,
                            _ => {}
                        }
                    }
                    value
                } else {
                    None
                };
                if let Some(v) = value {
                    let v = v.unwrap_or_default().to_ascii_lowercase();
                    if v.is_empty()
                        || [
                            "invoke", "dir", "bin", "hook", "exec", "script", "method", "pager",
                        ]
                        .iter()
                        .any(|k| v.contains(k))
                    {
                        refuse(step, format!("{name} -o {}", short(&v)));
                    }
                }
            })
        }
        "dpkg" => options(&mut step, name, args, "", false, |step, _, _, word| {
            if ["pre-invoke", "post-invoke", "status-logger"]
                .iter()
                .any(|o| long_is(word, o, 3))
            {
                refuse(step, format!("dpkg {}", short(word)));
            }
        }),
        "ip" => ip(&mut step, args, appended),
        "awk" | "gawk" | "mawk" | "nawk" => awk(&mut step, name, args),
        "sed" | "gsed" => sed(&mut step, name, args),
        // `nc -e prog`, `nc -c cmd`, `ncat --sh-exec cmd`.
        "nc" | "ncat" | "netcat" => options(
            &mut step,
            name,
            args,
            "bIiOpPqsTVwxX",
            true,
            |step, args, i, word| {
                if ["exec", "sh-exec", "lua-exec"]
                    .iter()
                    .any(|o| long_is(word, o, 3))
                {
                    return refuse(step, format!("{name} {}", short(word)));
                }
                if word.starts_with("--") {
                    return;
                }
                for (c, value) in cluster(args, i, "bIiOpPqsTVwxXce") {
                    match c {
                        'e' => run(step, name, "-e", value),
                        'c' => code(step, name, "-c", value),
                        _ => {}
                    }
                }
            },
        ),
        // `socat` addresses `EXEC:cmd` and `SYSTEM:cmd` run programs.
        "socat" => {
            for a in args {
                match a.text.as_deref().map(str::to_ascii_lowercase) {
                    Some(t) if !t.contains("exec") && !t.contains("system") => {}
                    _ => refuse(&mut step, "socat EXEC:/SYSTEM:".into()),
                }
            }
        }
        _ => return None,
    }
    Some(step)
}

/// Looks at every option word of `args` (up to `--`) with `check`. `with_arg`: short
/// options whose value is the next word (skipped). A word computed at run time is refused
/// where it could be an option, unless it is `--name=...` with a fixed name (then checked,
/// with its value unknown); `strict: false` lets words with no fixed start through, for
/// programs whose dangerous options are all refused by `check` anyway.
fn options(
    step: &mut Step,
    name: &str,
    args: &[Arg],
    with_arg: &str,
    strict: bool,
    check: impl Fn(&mut Step, &[Arg], usize, &str),
) {
    let mut i = 0;
    while i < args.len() {
        let Some(word) = args[i].text.as_deref() else {
            let prefix = args[i].prefix.as_str();
            if prefix.starts_with("--") && prefix.contains('=') {
                check(step, args, i, prefix);
            } else if prefix.starts_with('-') || (strict && prefix.is_empty()) {
                step.problem
                    .get_or_insert(Unchecked::DynamicArgument(name.into()));
            }
            i += 1;
            continue;
        };
        if word == "--" {
            break;
        }
        if word.len() > 1 && word.starts_with('-') {
            check(step, args, i, word);
            if !word.starts_with("--")
                && let Some((j, _)) = word[1..]
                    .char_indices()
                    .find(|(_, c)| with_arg.contains(*c))
                && j + 2 == word.len()
            {
                i += 1;
            }
        }
        i += 1;
    }
}

fn tar(step: &mut Step, args: &[Arg]) {
    const RUNS: &[&str] = &[
        "to-command",
        "checkpoint-action",
        "use-compress-program",
        "rsh-command",
        "rmt-command",
        "info-script",
        "new-volume-script",
    ];
    const WITH_ARG: &str = "bCfgHKLNTVX";
    // Traditional form: `tar xf archive` (a first word without `-` holds the letters, and
    // the words after it are their values in order).
    let mut start = 0;
    if let Some(first) = args.first().and_then(|a| a.text.as_deref())
        && !first.starts_with('-')
    {
        if first.contains(['I', 'F']) {
            refuse(step, format!("tar {}", short(first)));
        }
        start = 1 + first.chars().filter(|c| WITH_ARG.contains(*c)).count();
    }
    let rest = args.get(start..).unwrap_or_default();
    options(step, "tar", rest, WITH_ARG, true, |step, _, _, word| {
        if word.starts_with("--") {
            if RUNS.iter().any(|o| long_is(word, o, 2)) {
                refuse(step, format!("tar {}", short(word)));
            }
        } else if word.contains(['I', 'F']) {
            refuse(step, format!("tar {}", short(word)));
        }
    });
}

fn git(step: &mut Step, args: &[Arg]) {
    // Global options, before the subcommand: `-c` and `--config-env` set any configuration
    // (`core.pager`, `alias.x=!cmd`), `--exec-path=DIR` picks where subcommands come from.
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let Some(word) = a.text.as_deref() else {
            step.problem
                .get_or_insert(Unchecked::DynamicArgument("git".into()));
            return;
        };
        if !word.starts_with('-') || word == "--" {
            break;
        }
        if word.starts_with("-c")
            || long_is(word, "config-env", 8)
            || (long_is(word, "exec-path", 6) && word.contains('='))
        {
            return refuse(step, format!("git {}", short(word)));
        }
        if matches!(word, "-C" | "--git-dir" | "--work-tree" | "--namespace") {
            i += 1;
        }
        i += 1;
    }
    let Some(sub) = args.get(i).and_then(|a| a.text.as_deref()) else {
        return;
    };
    let rest = args.get(i + 1..).unwrap_or_default();
    let strict = matches!(
        sub,
        "grep"
            | "ls-remote"
            | "fetch"
            | "pull"
            | "clone"
            | "push"
            | "send-pack"
            | "archive"
            | "difftool"
            | "mergetool"
            | "rebase"
    );
    let dangerous: &[&str] = match sub {
        "grep" => &["open-files-in-pager"],
        "ls-remote" | "fetch" | "pull" => &["upload-pack"],
        // `--template` and `--config` give the new repository hooks that run at checkout.
        "clone" => &["upload-pack", "template", "config"],
        "push" | "send-pack" => &["receive-pack", "exec"],
        "archive" => &["exec", "remote"],
        "difftool" | "mergetool" => &["extcmd", "tool", "tool-help"],
        "rebase" => &["exec"],
        "filter-branch" | "daemon" | "instaweb" => return refuse(step, format!("git {sub}")),
        // `git bisect run CMD`, `git submodule foreach CMD`.
        "bisect" | "submodule" => {
            if rest.iter().any(|a| {
                a.text
                    .as_deref()
                    .is_none_or(|t| matches!(t, "run" | "foreach"))
            }) {
                return refuse(step, format!("git {sub}"));
            }
            &[]
        }
        // Setting configuration can make later git commands run anything (`alias.x=!cmd`,
        // `core.pager`, `core.fsmonitor`); reading it is fine.
        "config" => {
            let operands = rest
                .iter()
                .filter(|a| a.text.as_deref().is_none_or(|t| !t.starts_with('-')))
                .count();
            if operands >= 2
                || rest.iter().any(|a| {
                    a.text.as_deref().is_none_or(|t| {
                        matches!(
                            t,
                            "set" | "edit" | "-e" | "--edit" | "--add" | "--replace-all"
                        )
                    })
                })
            {
                return refuse(step, "git config (setting a value)".into());
            }
            &[]
        }
        _ => &[],
    };
    options(step, "git", rest, "", strict, |step, _, _, word| {
        let short_hit = !word.starts_with("--")
            && match sub {
                "grep" => word.contains('O'),
                "clone" => word.contains(['u', 'c']),
                "rebase" | "difftool" => word.contains('x'),
                _ => false,
            };
        if short_hit || dangerous.iter().any(|o| long_is(word, o, 3)) {
            refuse(step, format!("git {sub} {}", short(word)));
        }
    });
}

/// `ip [options] netns exec NAME cmd...` and `ip vrf exec NAME cmd...` run a command;
/// `ip -batch FILE` runs commands from a file.
fn ip(step: &mut Step, args: &[Arg], appended: bool) {
    let mut i = 0;
    let mut all = false;
    while let Some(a) = args.get(i) {
        let Some(word) = a.text.as_deref() else {
            step.problem
                .get_or_insert(Unchecked::DynamicArgument("ip".into()));
            return;
        };
        let Some(option) = word.strip_prefix('-') else {
            break;
        };
        let option = option.trim_start_matches('-');
        if option.is_empty()
            || "batch".starts_with(option)
            || (option.len() >= 2 && "force".starts_with(option))
        {
            return refuse(step, format!("ip {}", short(word)));
        }
        if "all".starts_with(option) {
            all = true;
        }
        // Options that take a value. Reading a flag as one would hide the object word (`-r`
        // could be `-resolve` or `-rcvbuf`: it is read as the flag, which hides nothing).
        if ["netns", "family", "loops"]
            .iter()
            .any(|o| o.starts_with(option))
            || (option.len() >= 2 && "rcvbuf".starts_with(option))
        {
            i += 1;
        }
        i += 1;
    }
    let object = match args.get(i).map(|a| a.text.as_deref()) {
        None if appended => {
            step.problem
                .get_or_insert(Unchecked::DynamicArgument("ip".into()));
            return;
        }
        None => return,
        Some(None) => {
            step.problem
                .get_or_insert(Unchecked::DynamicArgument("ip".into()));
            return;
        }
        Some(Some(o)) => o,
    };
    let runs = (object.len() >= 3 && "netns".starts_with(object)) || "vrf".starts_with(object);
    if !runs {
        if appended {
            step.problem
                .get_or_insert(Unchecked::DynamicArgument("ip".into()));
        }
        return;
    }
    match args.get(i + 1).map(|a| a.text.as_deref()) {
        Some(Some(verb)) if !"exec".starts_with(verb) => {}
        Some(Some(_)) => {
            // `ip -all netns exec cmd` has no namespace name: check both readings.
            let starts = if all { vec![i + 2, i + 3] } else { vec![i + 3] };
            for start in starts {
                match args.get(start..) {
                    Some(argv) if !argv.is_empty() => step.next.push(Next::Command {
                        argv: argv.to_vec(),
                        appended,
                    }),
                    _ => refuse(step, "ip netns exec".into()),
                }
            }
        }
        None if !appended => {}
        _ => refuse(step, format!("ip {object}")),
    }
}

/// `awk`: `system("cmd")` with a literal command is checked; anything else that runs
/// commands (`print | "cmd"`, `"cmd" | getline`, gawk's `@load` and indirect calls
/// `@f()`, program files `-f`, `-i`, `-l`, `-E`) is refused, and so is a program computed at
/// run time.
fn awk(step: &mut Step, name: &str, args: &[Arg]) {
    let mut programs: Vec<String> = Vec::new();
    let mut sandbox = false;
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let Some(word) = a.text.as_deref() else {
            if programs.is_empty() {
                // The program text itself, or an option.
                step.problem
                    .get_or_insert(Unchecked::DynamicArgument(name.into()));
                return;
            }
            break;
        };
        if word == "--" {
            i += 1;
            break;
        }
        if !(word.len() > 1 && word.starts_with('-')) {
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            let key = long.split_once('=').map_or(long, |(k, _)| k);
            if key.len() >= 2 && "source".starts_with(key) {
                match long_value(args, i).flatten() {
                    Some(text) => programs.push(text),
                    None => return refuse(step, format!("{name} --source")),
                }
                if !long.contains('=') {
                    i += 1;
                }
            } else if key.len() >= 2 && "sandbox".starts_with(key) {
                sandbox = true;
            } else if ["file", "include", "load", "exec", "debug"]
                .iter()
                .any(|o| key.len() >= 2 && o.starts_with(key))
            {
                return refuse(step, format!("{name} {}", short(word)));
            } else if ["assign", "field-separator"]
                .iter()
                .any(|o| o.starts_with(key))
                && !long.contains('=')
            {
                i += 1;
            }
            i += 1;
            continue;
        }
        for (c, value) in cluster(args, i, "eFv") {
            match c {
                'e' => match value.flatten() {
                    Some(text) => programs.push(text),
                    None => return refuse(step, format!("{name} -e")),
                },
                'f' | 'i' | 'l' | 'E' | 'D' | 'W' => {
                    return refuse(step, format!("{name} -{c}"));
                }
                'S' => sandbox = true,
                _ => {}
            }
        }
        if let Some((j, _)) = word[1..].char_indices().find(|(_, c)| "eFv".contains(*c))
            && j + 2 == word.len()
        {
            i += 1;
        }
        i += 1;
    }
    if programs.is_empty() {
        match args.get(i).map(|a| a.text.clone()) {
            Some(Some(text)) => programs.push(text),
            Some(None) => {
                step.problem
                    .get_or_insert(Unchecked::DynamicArgument(name.into()));
                return;
            }
            None => return,
        }
    }
    if sandbox {
        return;
    }
    for program in programs {
        match awk_commands(&program) {
            Some(commands) => step
                .next
                .extend(commands.into_iter().map(|text| Next::Code {
                    text,
                    same_process: false,
                })),
            None => return refuse(step, format!("{name} program {}", short(&program))),
        }
    }
}

/// The commands an awk program runs with `system("...")`, or `None` when it could run others.
fn awk_commands(program: &str) -> Option<Vec<String>> {
    #[derive(PartialEq)]
    enum Tok {
        Str(String),
        Word(String),
        Punct(char),
        Other,
    }
    const KEYWORDS: &[&str] = &[
        "BEGIN",
        "END",
        "BEGINFILE",
        "ENDFILE",
        "function",
        "func",
        "if",
        "else",
        "while",
        "for",
        "do",
        "break",
        "continue",
        "next",
        "nextfile",
        "exit",
        "return",
        "delete",
        "in",
        "getline",
        "print",
        "printf",
        "case",
        "default",
        "switch",
    ];
    if program.contains('@') {
        return None;
    }
    let s: Vec<char> = program.chars().collect();
    let mut toks: Vec<Tok> = Vec::new();
    let mut i = 0;
    // Whether the last token ends an operand: then `/` divides, otherwise it starts a regex.
    let operand = |toks: &[Tok]| -> Option<bool> {
        match toks.last() {
            Some(Tok::Str(_) | Tok::Other) => Some(true),
            Some(Tok::Punct(')' | ']')) => Some(true),
            // `$/x/`, `x++ / 2`: not worth guessing.
            Some(Tok::Punct('$' | '+' | '-')) => None,
            Some(Tok::Word(w)) if w == "getline" => None,
            Some(Tok::Word(w)) => Some(!KEYWORDS.contains(&w.as_str())),
            Some(Tok::Punct(_)) | None => Some(false),
        }
    };
    while i < s.len() {
        let c = s[i];
        match c {
            ' ' | '\t' | '\r' => i += 1,
            '\\' if s.get(i + 1) == Some(&'\n') => i += 2,
            '#' => {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
            }
            '"' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match s.get(i) {
                        None | Some('\n') => return None,
                        Some('"') => break,
                        Some('\\') => {
                            let e = *s.get(i + 1)?;
                            text.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                // Anything else: leave decoding to a stricter reading.
                                '"' | '\\' | '/' => e,
                                _ => return None,
                            });
                            i += 2;
                        }
                        Some(&ch) => {
                            text.push(ch);
                            i += 1;
                        }
                    }
                }
                i += 1;
                toks.push(Tok::Str(text));
            }
            '/' if !operand(&toks)? => {
                // A regex literal, up to the next `/` outside brackets.
                i += 1;
                let mut bracket = false;
                loop {
                    match s.get(i) {
                        None | Some('\n') => return None,
                        Some('\\') => i += 2,
                        Some('[') => {
                            bracket = true;
                            i += 1;
                        }
                        Some(']') => {
                            bracket = false;
                            i += 1;
                        }
                        Some('/') if bracket => return None,
                        Some('/') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                toks.push(Tok::Other);
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while s
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                toks.push(Tok::Word(s[start..i].iter().collect()));
            }
            c if c.is_ascii_digit() || c == '.' => {
                while s
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.')
                {
                    i += 1;
                }
                toks.push(Tok::Other);
            }
            '|' if s.get(i + 1) == Some(&'|') && s.get(i + 2) != Some(&'|') => {
                toks.push(Tok::Punct('&'));
                i += 2;
            }
            // A pipe to or from a command.
            '|' => return None,
            _ => {
                toks.push(Tok::Punct(c));
                i += 1;
            }
        }
    }
    let mut commands = Vec::new();
    for (k, tok) in toks.iter().enumerate() {
        if *tok != Tok::Word("system".into()) {
            continue;
        }
        match (toks.get(k + 1), toks.get(k + 2), toks.get(k + 3)) {
            (Some(Tok::Punct('(')), Some(Tok::Str(cmd)), Some(Tok::Punct(')'))) => {
                commands.push(cmd.clone())
            }
            _ => return None,
        }
    }
    // A `system(` the tokens above did not see (inside a string, say) is not guessed about.
    let calls = program
        .match_indices("system")
        .filter(|&(at, _)| {
            let before = program[..at].chars().next_back();
            let after = program[at + 6..].trim_start_matches([' ', '\t']);
            !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && after.starts_with('(')
        })
        .count();
    if calls != commands.len() {
        return None;
    }
    Some(commands)
}

/// `sed`: the `e` command with a command is checked; `e` alone and the `s///e` flag (which
/// run text from the input) and script files are refused. GNU sed reads options anywhere, so
/// a word computed at run time is refused too.
fn sed(step: &mut Step, name: &str, args: &[Arg]) {
    let mut scripts: Vec<String> = Vec::new();
    let mut operands = Vec::new();
    let mut sandbox = false;
    let mut i = 0;
    let mut options_done = false;
    while let Some(a) = args.get(i) {
        let Some(word) = a.text.as_deref() else {
            if options_done || !(a.prefix.is_empty() || a.prefix.starts_with('-')) {
                operands.push(None);
                i += 1;
                continue;
            }
            step.problem
                .get_or_insert(Unchecked::DynamicArgument(name.into()));
            return;
        };
        if options_done || word == "-" || !word.starts_with('-') {
            operands.push(Some(word.to_string()));
            i += 1;
            continue;
        }
        if word == "--" {
            options_done = true;
            i += 1;
            continue;
        }
        if let Some(long) = word.strip_prefix("--") {
            let key = long.split_once('=').map_or(long, |(k, _)| k);
            if key.len() >= 2 && "expression".starts_with(key) {
                match long_value(args, i).flatten() {
                    Some(text) => scripts.push(text),
                    None => return refuse(step, format!("{name} --expression")),
                }
                if !long.contains('=') {
                    i += 1;
                }
            } else if key.len() >= 2 && "sandbox".starts_with(key) {
                sandbox = true;
            } else if key.len() >= 2 && "file".starts_with(key) {
                return refuse(step, format!("{name} --file"));
            } else if key.len() >= 2 && "line-length".starts_with(key) && !long.contains('=') {
                i += 1;
            }
            i += 1;
            continue;
        }
        // `-i` takes the rest of its word as a suffix (`-ie` is not `-i -e`).
        let body = &word[1..];
        for (j, c) in body.char_indices() {
            match c {
                'i' => break,
                'e' | 'f' | 'l' => {
                    let attached = &body[j + 1..];
                    let value = if attached.is_empty() {
                        i += 1;
                        args.get(i).and_then(|a| a.text.clone())
                    } else {
                        Some(attached.to_string())
                    };
                    match (c, value) {
                        ('e', Some(text)) => scripts.push(text),
                        ('e', None) => return refuse(step, format!("{name} -e")),
                        ('f', _) => return refuse(step, format!("{name} -f")),
                        _ => {}
                    }
                    break;
                }
                _ => {}
            }
        }
        i += 1;
    }
    if scripts.is_empty() {
        match operands.first() {
            Some(Some(text)) => scripts.push(text.clone()),
            Some(None) => {
                step.problem
                    .get_or_insert(Unchecked::DynamicArgument(name.into()));
                return;
            }
            None => return,
        }
    }
    if sandbox {
        return;
    }
    for script in scripts {
        match sed_commands(&script) {
            Some(commands) => step
                .next
                .extend(commands.into_iter().map(|text| Next::Code {
                    text,
                    same_process: false,
                })),
            None => return refuse(step, format!("{name} script {}", short(&script))),
        }
    }
}

/// The commands a sed script runs with `e command`, or `None` when it could run others or
/// does not read clearly.
fn sed_commands(script: &str) -> Option<Vec<String>> {
    let s: Vec<char> = script.chars().collect();
    let mut i = 0;
    let mut commands = Vec::new();
    let skip_blanks = |i: &mut usize| {
        while s.get(*i).is_some_and(|c| matches!(c, ' ' | '\t')) {
            *i += 1;
        }
    };
    let rest_of_line = |i: &mut usize| -> String {
        let start = *i;
        while *i < s.len() && s[*i] != '\n' {
            *i += 1;
        }
        s[start..*i].iter().collect()
    };
    // Up to the unescaped `delim`; a delimiter inside a bracket expression is ambiguous
    // between sed versions, so it is refused.
    let delimited = |i: &mut usize, delim: char| -> Option<()> {
        let mut bracket = false;
        loop {
            let c = *s.get(*i)?;
            if c == '\\' {
                *i += 2;
                continue;
            }
            *i += 1;
            match c {
                '[' => bracket = true,
                ']' => bracket = false,
                c if c == delim && bracket => return None,
                c if c == delim => return Some(()),
                _ => {}
            }
        }
    };
    let address = |i: &mut usize| -> Option<()> {
        match s.get(*i) {
            Some(c) if c.is_ascii_digit() || matches!(c, '+' | '~') => {
                *i += 1;
                while s.get(*i).is_some_and(|c| c.is_ascii_digit() || *c == '~') {
                    *i += 1;
                }
            }
            Some('$') => *i += 1,
            Some('/') => {
                *i += 1;
                delimited(i, '/')?;
            }
            Some('\\') => {
                let delim = *s.get(*i + 1)?;
                if delim == '\n' || delim == '\\' {
                    return None;
                }
                *i += 2;
                delimited(i, delim)?;
            }
            _ => return Some(()),
        }
        while s.get(*i).is_some_and(|c| matches!(c, 'I' | 'M')) {
            *i += 1;
        }
        Some(())
    };
    loop {
        while s
            .get(i)
            .is_some_and(|c| matches!(c, ' ' | '\t' | '\n' | ';'))
        {
            i += 1;
        }
        let Some(&first) = s.get(i) else {
            break;
        };
        if first == '#' {
            rest_of_line(&mut i);
            continue;
        }
        address(&mut i)?;
        skip_blanks(&mut i);
        if s.get(i) == Some(&',') {
            i += 1;
            skip_blanks(&mut i);
            address(&mut i)?;
            skip_blanks(&mut i);
        }
        while s.get(i) == Some(&'!') {
            i += 1;
            skip_blanks(&mut i);
        }
        let c = *s.get(i)?;
        i += 1;
        match c {
            '{' | '}' => continue,
            ':' | 'b' | 't' | 'T' | 'v' => {
                while s.get(i).is_some_and(|c| !matches!(c, '\n' | ';')) {
                    i += 1;
                }
            }
            'a' | 'i' | 'c' => loop {
                let line = rest_of_line(&mut i);
                let backslashes = line.chars().rev().take_while(|&c| c == '\\').count();
                if backslashes % 2 == 0 || i >= s.len() {
                    break;
                }
                i += 1;
            },
            'r' | 'R' | 'w' | 'W' => {
                rest_of_line(&mut i);
            }
            'e' => {
                let command = rest_of_line(&mut i);
                if command.trim().is_empty() {
                    // Runs the pattern space, that is, the input.
                    return None;
                }
                commands.push(command);
            }
            's' | 'y' => {
                let delim = *s.get(i)?;
                if matches!(delim, '\n' | '\\') {
                    return None;
                }
                i += 1;
                delimited(&mut i, delim)?;
                delimited(&mut i, delim)?;
                if c == 's' {
                    while let Some(&f) = s.get(i) {
                        match f {
                            'e' => return None,
                            'w' => {
                                rest_of_line(&mut i);
                                break;
                            }
                            'g' | 'p' | 'i' | 'I' | 'm' | 'M' => i += 1,
                            f if f.is_ascii_digit() => i += 1,
                            _ => break,
                        }
                    }
                }
            }
            'q' | 'Q' | 'l' | 'L' => {
                skip_blanks(&mut i);
                while s.get(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
            }
            '=' | 'd' | 'D' | 'g' | 'G' | 'h' | 'H' | 'n' | 'N' | 'p' | 'P' | 'x' | 'z' | 'F' => {}
            _ => return None,
        }
        skip_blanks(&mut i);
        match s.get(i) {
            None | Some(';' | '\n' | '}' | '#') => {}
            Some(_) => return None,
        }
    }
    Some(commands)
}
