//! Programs that run other programs. Each entry knows the wrapper's options well enough to
//! find the command it runs; an option it does not know, or a word computed at run time where
//! an option or the command could be, is a problem (denied) rather than a guess.
//!
//! Two families, as seen by allow lists:
//! - transparent (`env`, `nice`, `timeout`, `nohup`, `time`, `command`, `exec`, `stdbuf`,
//!   `xargs`, `watch`, `flock`, `setsid`, `ionice`, `unbuffer`, `busybox`, `sh -c`, `eval` …):
//!   they only change how the next command runs, so the allow list needs only that command;
//! - runners with powers of their own (`sudo`, `doas`, `su`, `runuser`, `sg`, `pkexec`,
//!   `chroot`, `ssh`): the allow list must name them, and the command they run is checked too.
//!
//! Deny lists see every program, wrappers included.

mod programs;
mod runners;

use crate::InvocationKind::{self, Builtin, Program, Runner, Transparent, UnseenCode};
use crate::error::Unchecked;
use runners::{READS_STDIN, alias, completion, doas, sg, shell, ssh, su, sudo, trap, unseen};

/// A word of a command as the checker sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Arg {
    /// The word after quote removal; `None` when it depends on run time.
    pub text: Option<String>,
    /// The text before the first run-time part (`FOO=` in `FOO="$x"`).
    pub prefix: String,
    /// Variables the word expands.
    pub params: Vec<String>,
    /// Whether a command's output becomes part of the word.
    pub output: bool,
    /// The word is `NAME=(...)` and its elements are plain text.
    pub array_text: bool,
    /// The word has no expansion in it: when `text` is `None`, only globbing or brace
    /// expansion makes it dynamic.
    pub plain: bool,
}

impl Arg {
    pub(crate) fn lit(text: &str) -> Arg {
        Arg {
            text: Some(text.to_string()),
            prefix: text.to_string(),
            ..Arg::default()
        }
    }
}

/// What a wrapper runs.
pub(crate) struct Step {
    pub kind: InvocationKind,
    pub next: Vec<Next>,
    pub problem: Option<Unchecked>,
}

pub(crate) enum Next {
    /// A command to resolve in turn; `appended`: input words are added to it (`xargs`).
    Command { argv: Vec<Arg>, appended: bool },
    /// Shell code to parse and check (`sh -c`, `eval`, `ssh host cmd`, `trap`, `alias`).
    Code { text: String, same_process: bool },
    /// Text the program expands like a double-quoted string (`compgen -W '$(...)'`).
    Expanded { text: String },
    /// A program implied by an option, e.g. `find -delete` deletes like `rm`.
    Implied {
        program: &'static str,
        name: &'static str,
    },
    /// An environment assignment made by the wrapper (`env X=1`, `sudo X=1`).
    Assign { name: String, value: Option<String> },
}

impl Step {
    fn new(kind: InvocationKind) -> Step {
        Step {
            kind,
            next: Vec::new(),
            problem: None,
        }
    }

    fn problem(kind: InvocationKind, problem: Unchecked) -> Step {
        Step {
            problem: Some(problem),
            ..Step::new(kind)
        }
    }

    fn command(kind: InvocationKind, argv: Vec<Arg>, appended: bool) -> Step {
        Step {
            next: vec![Next::Command { argv, appended }],
            ..Step::new(kind)
        }
    }

    fn code(kind: InvocationKind, text: String, same_process: bool) -> Step {
        Step {
            next: vec![Next::Code { text, same_process }],
            ..Step::new(kind)
        }
    }
}

/// Options of a wrapper, as `getopt` with `+` (stop at the first operand) sees them.
#[derive(Default)]
struct Spec {
    flags: &'static str,
    with_arg: &'static str,
    long_flags: &'static [&'static str],
    long_with_arg: &'static [&'static str],
    /// `nice -5`
    numeric: bool,
}

struct Opt {
    name: String,
    value: Option<Arg>,
}

struct Scan {
    opts: Vec<Opt>,
    rest: usize,
}

impl Scan {
    fn has(&self, names: &[&str]) -> bool {
        self.opts.iter().any(|o| names.contains(&o.name.as_str()))
    }

    fn value(&self, names: &[&str]) -> Option<&Arg> {
        self.opts
            .iter()
            .rev()
            .find(|o| names.contains(&o.name.as_str()))
            .and_then(|o| o.value.as_ref())
    }
}

fn short(text: &str) -> String {
    crate::error::snippet(text, 24)
}

fn scan(program: &str, spec: &Spec, args: &[Arg]) -> Result<Scan, Unchecked> {
    let mut opts = Vec::new();
    let mut i = 0;
    let missing = || Unchecked::MissingOperand(program.to_string());
    while i < args.len() {
        let Some(text) = args[i].text.as_deref() else {
            return Err(Unchecked::DynamicArgument(program.to_string()));
        };
        if text == "--" {
            i += 1;
            break;
        }
        if let Some(long) = text.strip_prefix("--") {
            let (key, inline) = match long.split_once('=') {
                Some((k, v)) => (k, Some(Arg::lit(v))),
                None => (long, None),
            };
            let value = if spec.long_with_arg.contains(&key) {
                match inline {
                    Some(v) => Some(v),
                    None => {
                        i += 1;
                        Some(args.get(i).cloned().ok_or_else(missing)?)
                    }
                }
            } else if spec.long_flags.contains(&key) {
                inline
            } else {
                return Err(Unchecked::UnknownOption {
                    program: program.to_string(),
                    option: short(text),
                });
            };
            opts.push(Opt {
                name: key.to_string(),
                value,
            });
        } else if text.len() > 1 && text.starts_with('-') {
            let body = &text[1..];
            let digits = body.trim_start_matches(['+', '-']);
            if spec.numeric && !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
                opts.push(Opt {
                    name: "n".into(),
                    value: Some(Arg::lit(body)),
                });
                i += 1;
                continue;
            }
            for (j, c) in body.char_indices() {
                if spec.flags.contains(c) {
                    opts.push(Opt {
                        name: c.to_string(),
                        value: None,
                    });
                } else if spec.with_arg.contains(c) {
                    let attached = &body[j + c.len_utf8()..];
                    let value = if attached.is_empty() {
                        i += 1;
                        args.get(i).cloned().ok_or_else(missing)?
                    } else {
                        Arg::lit(attached)
                    };
                    opts.push(Opt {
                        name: c.to_string(),
                        value: Some(value),
                    });
                    break;
                } else {
                    return Err(Unchecked::UnknownOption {
                        program: program.to_string(),
                        option: format!("-{c}"),
                    });
                }
            }
        } else {
            break;
        }
        i += 1;
    }
    Ok(Scan { opts, rest: i })
}

/// The command after a wrapper's options and `operands` leading operands.
fn then_run(
    kind: InvocationKind,
    program: &str,
    args: &[Arg],
    start: usize,
    appended: bool,
) -> Step {
    match args.get(start..) {
        Some(argv) if !argv.is_empty() => Step::command(kind, argv.to_vec(), appended),
        _ if appended => Step::problem(kind, Unchecked::ProgramFromInput(program.to_string())),
        _ => Step::new(kind),
    }
}

fn prefix(
    kind: InvocationKind,
    program: &str,
    spec: &Spec,
    operands: usize,
    args: &[Arg],
    appended: bool,
) -> Step {
    match scan(program, spec, args) {
        Ok(s) => then_run(kind, program, args, s.rest + operands, appended),
        Err(e) => Step::problem(kind, e),
    }
}

fn joined(args: &[Arg]) -> Option<String> {
    let mut out = Vec::new();
    for a in args {
        out.push(a.text.as_deref()?);
    }
    Some(out.join(" "))
}

const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "posh", "lksh", "pdksh", "oksh",
    "loksh", "ksh93", "rbash", "hush",
];

/// Programs that run commands in ways this crate does not model: other shell languages,
/// schedulers, multiplexers, tracers and sandboxes. Listing one in `allow_programs` allows it.
const UNSEEN_RUNNERS: &[&str] = &[
    "csh",
    "tcsh",
    "fish",
    "nu",
    "pwsh",
    "elvish",
    "xonsh",
    "rc",
    "es",
    "parallel",
    "sem",
    "at",
    "batch",
    "crontab",
    "script",
    "expect",
    "tmux",
    "screen",
    "systemd-run",
    "run0",
    "strace",
    "ltrace",
    "gdb",
    "lldb",
    "valgrind",
    "perf",
    "unshare",
    "nsenter",
    "setpriv",
    "prlimit",
    "numactl",
    "cpulimit",
    "firejail",
    "bwrap",
    "proot",
    "fakeroot",
    "faketime",
    "torsocks",
    "torify",
    "proxychains",
    "proxychains4",
    "gosu",
    "su-exec",
    "tini",
    "dumb-init",
    "catchsegv",
    "daemonize",
    "start-stop-daemon",
    "sshpass",
    "rlwrap",
    "entr",
    "watchexec",
    "dbus-run-session",
    "xvfb-run",
    "sched",
    "zpty",
    "cgexec",
];

const RUNS_UNSEEN: &str = "runs commands the checker cannot see";

/// How `name` (a basename) runs other code, or `None` for an ordinary program.
pub(crate) fn step(name: &str, args: &[Arg], appended: bool) -> Option<Step> {
    let step = match name {
        "env" => env(args, appended, 0),
        "nice" => prefix(
            Transparent,
            name,
            &Spec {
                with_arg: "n",
                long_with_arg: &["adjustment"],
                numeric: true,
                ..Spec::default()
            },
            0,
            args,
            appended,
        ),
        "timeout" => prefix(
            Transparent,
            name,
            &Spec {
                flags: "fpv",
                with_arg: "ks",
                long_flags: &["foreground", "preserve-status", "verbose"],
                long_with_arg: &["kill-after", "signal"],
                ..Spec::default()
            },
            1,
            args,
            appended,
        ),
        "nohup" | "builtin" | "noglob" | "nocorrect" | "-" => {
            prefix(Transparent, name, &Spec::default(), 0, args, appended)
        }
        "repeat" => prefix(Transparent, name, &Spec::default(), 1, args, appended),
        "time" => prefix(
            Transparent,
            name,
            &Spec {
                flags: "apqvV",
                with_arg: "fo",
                long_flags: &["portability", "verbose", "append", "quiet"],
                long_with_arg: &["format", "output"],
                ..Spec::default()
            },
            0,
            args,
            appended,
        ),
        "command" => {
            let spec = Spec {
                flags: "pvV",
                ..Spec::default()
            };
            match scan(name, &spec, args) {
                Ok(s) if s.has(&["v", "V"]) => Step::new(Builtin),
                Ok(s) => then_run(Transparent, name, args, s.rest, appended),
                Err(e) => Step::problem(Transparent, e),
            }
        }
        "exec" => prefix(
            Transparent,
            name,
            &Spec {
                flags: "cl",
                with_arg: "a",
                ..Spec::default()
            },
            0,
            args,
            appended,
        ),
        "stdbuf" => prefix(
            Transparent,
            name,
            &Spec {
                with_arg: "ioe",
                long_with_arg: &["input", "output", "error"],
                ..Spec::default()
            },
            0,
            args,
            appended,
        ),
        "setsid" => prefix(
            Transparent,
            name,
            &Spec {
                flags: "cfw",
                long_flags: &["ctty", "fork", "wait"],
                ..Spec::default()
            },
            0,
            args,
            appended,
        ),
        "unbuffer" => prefix(
            Transparent,
            name,
            &Spec {
                flags: "p",
                ..Spec::default()
            },
            0,
            args,
            appended,
        ),
        "ionice" => {
            let spec = Spec {
                flags: "t",
                with_arg: "cnpPu",
                long_flags: &["ignore"],
                long_with_arg: &["class", "classdata", "pid", "pgid", "uid"],
                ..Spec::default()
            };
            existing_process(
                name,
                &spec,
                &["p", "P", "u", "pid", "pgid", "uid"],
                0,
                args,
                appended,
            )
        }
        "taskset" => {
            let spec = Spec {
                flags: "acp",
                long_flags: &["all-tasks", "cpu-list", "pid"],
                ..Spec::default()
            };
            existing_process(name, &spec, &["p", "pid"], 1, args, appended)
        }
        "chrt" => {
            let spec = Spec {
                flags: "abdefimoprRv",
                with_arg: "TPD",
                long_flags: &[
                    "all-tasks",
                    "batch",
                    "deadline",
                    "ext",
                    "fifo",
                    "idle",
                    "max",
                    "other",
                    "pid",
                    "rr",
                    "reset-on-fork",
                    "verbose",
                ],
                long_with_arg: &["sched-runtime", "sched-period", "sched-deadline"],
                ..Spec::default()
            };
            existing_process(name, &spec, &["p", "m", "pid", "max"], 1, args, appended)
        }
        "flock" => flock(args, appended),
        "watch" => watch(args, appended),
        "busybox" => match args.first().and_then(|a| a.text.as_deref()) {
            Some(t) if t.starts_with('-') => Step::new(Transparent),
            _ => then_run(Transparent, name, args, 0, appended),
        },
        // zsh: `emulate sh -c 'code'` evaluates its `-c` argument.
        "emulate" => match args.iter().position(|a| a.text.as_deref() == Some("-c")) {
            None => Step::new(Builtin),
            Some(i) => match args.get(i + 1).map(|a| a.text.clone()) {
                Some(Some(code)) => Step::code(Transparent, code, true),
                Some(None) => {
                    Step::problem(Transparent, Unchecked::DynamicCode("emulate -c".into()))
                }
                None => Step::problem(Transparent, Unchecked::MissingOperand("emulate -c".into())),
            },
        },
        "xargs" => xargs(args),
        // Words appended from input could be `-exec rm {} ;` or `-delete`.
        "find" if appended => Step::problem(Program, Unchecked::DynamicArgument(name.into())),
        "find" => find(args),
        "eval" => match joined(args) {
            Some(text) if text.trim().is_empty() => Step::new(Transparent),
            Some(text) => Step::code(Transparent, text, true),
            None => Step::problem(Transparent, Unchecked::DynamicCode(name.into())),
        },
        "source" | "." => Step::new(UnseenCode("runs a script file")),
        "fc" => Step::new(UnseenCode("re-runs commands from history")),
        "enable"
            if args.iter().any(|a| {
                a.text
                    .as_deref()
                    .is_none_or(|t| t.starts_with('-') && t.contains('f'))
            }) =>
        {
            Step::new(UnseenCode("loads shell builtins from a library"))
        }
        "trap" => trap(args),
        "alias" => alias(args),
        "compgen" | "complete" => completion(name, args),
        "sudo" => sudo(args, appended),
        "doas" => doas(args, appended),
        // These join their words into a command line (or, for `su`, read options anywhere):
        // words appended from input become code.
        "su" | "runuser" | "sg" | "ssh" if appended => {
            Step::problem(Runner, Unchecked::ProgramFromInput(name.into()))
        }
        "su" | "runuser" => su(name, args),
        "sg" => sg(args),
        "pkexec" => match scan(
            name,
            &Spec {
                long_flags: &["disable-internal-agent", "keep-cwd"],
                long_with_arg: &["user"],
                ..Spec::default()
            },
            args,
        ) {
            Ok(s) if s.rest >= args.len() => Step::problem(Runner, unseen(name, READS_STDIN)),
            Ok(s) => then_run(Runner, name, args, s.rest, appended),
            Err(e) => Step::problem(Runner, e),
        },
        "chroot" => match scan(
            name,
            &Spec {
                long_flags: &["skip-chdir"],
                long_with_arg: &["userspec", "groups"],
                ..Spec::default()
            },
            args,
        ) {
            Ok(s) if s.rest + 1 >= args.len() => Step::problem(Runner, unseen(name, READS_STDIN)),
            // Programs then come from the new root: `/srv/x/bin/ls` is not the system's `ls`.
            Ok(s)
                if args[s.rest]
                    .text
                    .as_deref()
                    .is_none_or(|r| !r.trim_end_matches('/').is_empty() || !r.starts_with('/')) =>
            {
                Step::problem(
                    Runner,
                    Unchecked::UnseenCode {
                        program: name.into(),
                        why: "runs programs from another root directory",
                    },
                )
            }
            Ok(s) => then_run(Runner, name, args, s.rest + 1, appended),
            Err(e) => Step::problem(Runner, e),
        },
        "ssh" => ssh(args),
        _ if SHELLS.contains(&name) => shell(name, args),
        _ if UNSEEN_RUNNERS.contains(&name) => Step::new(UnseenCode(RUNS_UNSEEN)),
        _ => return programs::program(name, args, appended),
    };
    Some(step)
}

/// Wrappers that act on an existing process with some options (`ionice -p PID`) and run a
/// command otherwise.
fn existing_process(
    program: &str,
    spec: &Spec,
    existing: &[&str],
    operands: usize,
    args: &[Arg],
    appended: bool,
) -> Step {
    match scan(program, spec, args) {
        Ok(s) if s.has(existing) => Step::new(Transparent),
        Ok(s) => then_run(Transparent, program, args, s.rest + operands, appended),
        Err(e) => Step::problem(Transparent, e),
    }
}

fn env(args: &[Arg], appended: bool, depth: usize) -> Step {
    let spec = Spec {
        flags: "i0v",
        with_arg: "uCSPa",
        long_flags: &[
            "ignore-environment",
            "null",
            "debug",
            "list-signal-handling",
            "block-signal",
            "default-signal",
            "ignore-signal",
        ],
        long_with_arg: &["unset", "chdir", "split-string", "argv0"],
        ..Spec::default()
    };
    let s = match scan("env", &spec, args) {
        Ok(s) => s,
        Err(e) => return Step::problem(Transparent, e),
    };
    if let Some(split) = s.value(&["S", "split-string"]) {
        // `env -S 'prog args'` splits a string into words (with its own quoting rules).
        let Some(text) = split.text.as_deref() else {
            return Step::problem(Transparent, Unchecked::DynamicArgument("env -S".into()));
        };
        if depth > 4 || text.contains(['\'', '"', '\\', '$', '#']) {
            return Step::problem(
                Transparent,
                Unchecked::Unsupported("env -S with quoting".into()),
            );
        }
        let mut words: Vec<Arg> = text.split_whitespace().map(Arg::lit).collect();
        words.extend_from_slice(&args[s.rest..]);
        return env(&words, appended, depth + 1);
    }
    let mut step = Step::new(Transparent);
    let unsets_path = s.opts.iter().any(|o| {
        matches!(o.name.as_str(), "u" | "unset")
            && o.value
                .as_ref()
                .is_none_or(|v| v.text.as_deref().is_none_or(|t| t == "PATH"))
    });
    if s.has(&["P"]) || unsets_path {
        // BSD `env -P DIRS` looks the program up in DIRS instead of `PATH`; without `PATH`,
        // shells look programs up in the current directory too.
        step.next.push(Next::Assign {
            name: "PATH".into(),
            value: None,
        });
    }
    let mut i = s.rest;
    if args.get(i).and_then(|a| a.text.as_deref()) == Some("-") {
        i += 1;
    }
    i += assignments(&args[i.min(args.len())..], &mut step);
    let rest = then_run(Transparent, "env", args, i, appended);
    step.next.extend(rest.next);
    step.problem = rest.problem;
    step
}

/// Leading `NAME=value` words (as `env` and `sudo` read them); returns how many.
fn assignments(args: &[Arg], step: &mut Step) -> usize {
    let mut n = 0;
    for a in args {
        let Some((name, _)) = a.prefix.split_once('=') else {
            break;
        };
        if name.is_empty() {
            break;
        }
        let value = a.text.as_deref().map(|t| t[name.len() + 1..].to_string());
        step.next.push(Next::Assign {
            name: name.to_string(),
            value,
        });
        n += 1;
    }
    n
}

fn flock(args: &[Arg], appended: bool) -> Step {
    let spec = Spec {
        flags: "sexnouF",
        with_arg: "wE",
        long_flags: &[
            "shared",
            "exclusive",
            "nonblock",
            "nb",
            "unlock",
            "close",
            "no-fork",
            "verbose",
        ],
        long_with_arg: &["timeout", "wait", "conflict-exit-code"],
        ..Spec::default()
    };
    let s = match scan("flock", &spec, args) {
        Ok(s) => s,
        Err(e) => return Step::problem(Transparent, e),
    };
    let after = s.rest + 1;
    match args.get(after).map(|a| a.text.as_deref()) {
        Some(Some("-c" | "--command")) => match args.get(after + 1).map(|a| a.text.clone()) {
            Some(Some(code)) => Step::code(Transparent, code, false),
            Some(None) => Step::problem(Transparent, Unchecked::DynamicCode("flock -c".into())),
            None => Step::problem(Transparent, Unchecked::MissingOperand("flock -c".into())),
        },
        _ => then_run(Transparent, "flock", args, after, appended),
    }
}

fn watch(args: &[Arg], appended: bool) -> Step {
    let spec = Spec {
        flags: "bcCdegprtwx",
        with_arg: "nqs",
        long_flags: &[
            "beep",
            "color",
            "no-color",
            "differences",
            "errexit",
            "chgexit",
            "precise",
            "no-rerun",
            "no-title",
            "no-wrap",
            "exec",
        ],
        long_with_arg: &["interval", "equexit", "shotsdir"],
        ..Spec::default()
    };
    let s = match scan("watch", &spec, args) {
        Ok(s) => s,
        Err(e) => return Step::problem(Transparent, e),
    };
    if s.has(&["x", "exec"]) {
        return then_run(Transparent, "watch", args, s.rest, appended);
    }
    if appended {
        return Step::problem(Transparent, Unchecked::DynamicCode("watch".into()));
    }
    // Without -x, watch joins its arguments and runs them with `sh -c`.
    match joined(&args[s.rest..]) {
        Some(text) if text.trim().is_empty() => Step::new(Transparent),
        Some(text) => Step::code(Transparent, text, false),
        None => Step::problem(Transparent, Unchecked::DynamicCode("watch".into())),
    }
}

/// Replaces words that hold `placeholder` with run-time words: `xargs -I {}` and
/// `find -exec` substitute input into them.
/// `prefix`: how every substituted value is known to start (`find` gives paths under its
/// starting points), so that a program reading options anywhere knows they are not options.
fn substitute(argv: &[Arg], placeholder: &str, prefix: &str) -> Vec<Arg> {
    argv.iter()
        .map(|a| match &a.text {
            Some(t) if t.contains(placeholder) => Arg {
                prefix: if t.starts_with(placeholder) {
                    prefix.to_string()
                } else {
                    String::new()
                },
                ..Arg::default()
            },
            _ => a.clone(),
        })
        .collect()
}

fn xargs(args: &[Arg]) -> Step {
    // -e, -i and -l take their argument only when attached; handle them before the scan.
    let mut placeholder = None;
    let mut cleaned = Vec::new();
    let mut in_options = true;
    for a in args {
        match a.text.as_deref() {
            Some(t) if in_options && (t.starts_with("-i") || t.starts_with("--replace")) => {
                let value = t
                    .strip_prefix("-i")
                    .or_else(|| t.strip_prefix("--replace="))
                    .unwrap_or("");
                placeholder = Some(if value.is_empty() {
                    "{}".to_string()
                } else {
                    value.to_string()
                });
            }
            Some(t)
                if in_options && (t.starts_with("-e") || t.starts_with("-l")) && t.len() > 1 => {}
            Some(t) if in_options && (t.starts_with("--eof") || t.starts_with("--max-lines")) => {}
            Some(t) if in_options && !t.starts_with('-') => {
                in_options = false;
                cleaned.push(a.clone());
            }
            _ => cleaned.push(a.clone()),
        }
    }
    let spec = Spec {
        flags: "0oprtx",
        with_arg: "adEILnPs",
        long_flags: &[
            "null",
            "interactive",
            "no-run-if-empty",
            "verbose",
            "exit",
            "show-limits",
            "open-tty",
        ],
        long_with_arg: &[
            "arg-file",
            "delimiter",
            "max-args",
            "max-procs",
            "max-chars",
            "process-slot-var",
        ],
        ..Spec::default()
    };
    let s = match scan("xargs", &spec, &cleaned) {
        Ok(s) => s,
        Err(e) => return Step::problem(Transparent, e),
    };
    if let Some(i) = s.value(&["I"]) {
        match &i.text {
            Some(t) if !t.is_empty() => placeholder = Some(t.clone()),
            _ => return Step::problem(Transparent, Unchecked::DynamicArgument("xargs -I".into())),
        }
    }
    let mut argv = cleaned[s.rest..].to_vec();
    if argv.is_empty() {
        argv.push(Arg::lit("echo"));
    }
    match placeholder {
        Some(p) => Step::command(Transparent, substitute(&argv, &p, ""), false),
        None => Step::command(Transparent, argv, true),
    }
}

fn find(args: &[Arg]) -> Step {
    let mut step = Step::new(Program);
    // The paths `{}` stands for start with a starting point (`.` when none is given); one
    // that could start with `-` is not known.
    let starts: Vec<&Arg> = args
        .iter()
        .skip_while(|a| {
            a.text
                .as_deref()
                .is_some_and(|t| matches!(t, "-H" | "-L" | "-P") || t.starts_with("-O"))
        })
        .take_while(|a| {
            a.text
                .as_deref()
                .is_none_or(|t| !t.starts_with(['-', '(', '!', ')', ',']))
        })
        .collect();
    let prefix = match starts.as_slice() {
        // `-files0-from FILE` reads starting points from a file: they could start with `-`.
        _ if args
            .iter()
            .any(|a| a.text.as_deref() == Some("-files0-from")) =>
        {
            String::new()
        }
        [] => "./".to_string(),
        starts => {
            let known = starts.iter().map(|a| a.prefix.as_str());
            if known.clone().all(|p| !p.is_empty() && !p.starts_with('-')) {
                // Any starting point's first character will do: none is `-`.
                known.min().unwrap_or_default().chars().take(1).collect()
            } else {
                String::new()
            }
        }
    };
    let mut i = 0;
    while i < args.len() {
        let Some(text) = args[i].text.as_deref() else {
            step.problem = Some(Unchecked::DynamicArgument("find".into()));
            return step;
        };
        match text {
            "-exec" | "-execdir" | "-ok" | "-okdir" => {
                let start = i + 1;
                let end = (start..args.len()).find(|&j| match args[j].text.as_deref() {
                    Some(";") => true,
                    Some("+") => j > start && args[j - 1].text.as_deref() == Some("{}"),
                    _ => false,
                });
                let Some(end) = end.filter(|&e| e > start) else {
                    step.problem = Some(Unchecked::MissingOperand(format!("find {text}")));
                    return step;
                };
                step.next.push(Next::Command {
                    argv: substitute(&args[start..end], "{}", &prefix),
                    appended: false,
                });
                i = end;
            }
            "-delete" => step.next.push(Next::Implied {
                program: "find -delete",
                name: "rm",
            }),
            _ => {}
        }
        i += 1;
    }
    step
}
