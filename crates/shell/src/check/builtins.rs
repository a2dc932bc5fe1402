//! What shell builtins do to variables (`read`, `declare`, `printf -v`, ...), and where they
//! evaluate arithmetic (`let`, `declare -i`, subscripts of names) or code (`mapfile -C`).

use super::{Checker, Finding, Value, text_value};
use crate::error::Unchecked;
use crate::wrappers::Arg;

impl Checker {
    /// What builtins do to variables, and where they evaluate arithmetic or code.
    pub(super) fn builtin_effects(&mut self, name: &str, args: &[Arg]) {
        let (options, operands) = split_options(args);
        let has = |c: char| options.iter().any(|o| o.contains(c));
        match name {
            "declare" | "typeset" | "local" | "export" | "readonly" => {
                if has('f') || has('F') {
                    return;
                }
                if name != "export" && has('n') {
                    // A name reference can be pointed at any variable later (`declare -n r;
                    // r=PATH`, `for r in PATH`), so assignments through it cannot be followed.
                    self.unchecked(Unchecked::Unsupported(format!("{name} -n")));
                    return;
                }
                for a in operands {
                    self.declaration(name, a, has('i'), has('n'));
                }
            }
            "read" => {
                let mut names: Vec<&Arg> = Vec::new();
                let mut i = 0;
                while i < args.len() {
                    let Some(t) = args[i].text.as_deref() else {
                        break;
                    };
                    if t == "--" {
                        i += 1;
                        break;
                    }
                    if !(t.len() > 1 && t.starts_with('-')) {
                        break;
                    }
                    for (j, c) in t[1..].char_indices() {
                        if "adinNptu".contains(c) {
                            if t[1 + j + 1..].is_empty() {
                                i += 1;
                                if c == 'a'
                                    && let Some(a) = args.get(i)
                                {
                                    names.push(a);
                                }
                            }
                            break;
                        }
                    }
                    i += 1;
                }
                names.extend(args.get(i..).unwrap_or_default());
                for a in names {
                    self.assign_name(a);
                }
            }
            "mapfile" | "readarray" => match getopt(args, "dnOsuCc") {
                None => self.unchecked(Unchecked::DynamicArgument(name.to_string())),
                Some((opts, rest)) => {
                    for (c, value) in opts {
                        if c != 'C' {
                            continue;
                        }
                        match value {
                            Some(code) => self.code(&code, true),
                            None => self.unchecked(Unchecked::DynamicCode(format!("{name} -C"))),
                        }
                    }
                    for a in args.get(rest..).unwrap_or_default() {
                        self.assign_name(a);
                    }
                }
            },
            "set" => self.set_options(args),
            "shopt" => match getopt(args, "") {
                None => self.unchecked(Unchecked::DynamicArgument(name.to_string())),
                Some((opts, rest)) => {
                    if opts.iter().any(|(c, _)| *c == 'o') {
                        for a in args.get(rest..).unwrap_or_default() {
                            self.shell_option(a.text.as_deref());
                        }
                    }
                }
            },
            "printf" => {
                if let Some(first) = args.first().and_then(|a| a.text.as_deref()) {
                    if first == "-v" {
                        if let Some(a) = args.get(1) {
                            self.assign_name(a);
                        }
                    } else if let Some(var) = first.strip_prefix("-v") {
                        self.assign_name(&Arg::lit(var));
                    }
                }
            }
            "getopts" => {
                if let Some(a) = operands.get(1) {
                    self.assign_name(a);
                }
            }
            "wait" => {
                if let Some(i) = args.iter().position(|a| a.text.as_deref() == Some("-p"))
                    && let Some(a) = args.get(i + 1)
                {
                    self.assign_name(a);
                }
            }
            "unset" => {
                for a in operands {
                    // Without `PATH`, bash looks programs up in the current directory.
                    if !has('f')
                        && self
                            .name_arg(a)
                            .is_none_or(|n| matches!(n.as_str(), "PATH" | "path"))
                    {
                        self.findings
                            .push(Finding::Rebinding("unsetting `PATH`".into(), self.origin));
                    }
                }
            }
            "test" | "[" => {
                for pair in args.windows(2) {
                    if pair[0].text.as_deref() == Some("-v") {
                        self.name_arg(&pair[1]);
                    }
                }
            }
            "let" => {
                for a in args {
                    match &a.text {
                        Some(t) => self.arith_text(t),
                        None => {
                            for p in &a.params {
                                self.arith_ref(p);
                            }
                            if a.output {
                                self.unchecked(Unchecked::ArithmeticOutput);
                            }
                        }
                    }
                }
            }
            "hash" if has('p') => {
                self.findings
                    .push(Finding::Rebinding("`hash -p`".into(), self.origin));
            }
            _ => {}
        }
    }

    /// `set`: options that change how later text is read or what a command's words mean.
    fn set_options(&mut self, args: &[Arg]) {
        let mut i = 0;
        while let Some(a) = args.get(i) {
            let Some(t) = a.text.as_deref() else {
                // `set $x` sets options if `$x` starts with `-`.
                self.unchecked(Unchecked::DynamicArgument("set".into()));
                return;
            };
            if t == "--" || t == "-" || !(t.starts_with('-') || t.starts_with('+')) {
                return;
            }
            let enable = t.starts_with('-');
            for (j, c) in t[1..].char_indices() {
                match c {
                    'o' => {
                        let attached = &t[1 + j + 1..];
                        let value = if attached.is_empty() {
                            i += 1;
                            match args.get(i) {
                                Some(a) => a.text.as_deref(),
                                None => return,
                            }
                        } else {
                            Some(attached)
                        };
                        if enable {
                            self.shell_option(value);
                        }
                        break;
                    }
                    'k' | 'H' if enable => {
                        self.shell_option(Some(if c == 'k' { "keyword" } else { "histexpand" }))
                    }
                    _ => {}
                }
            }
            i += 1;
        }
    }

    /// A `set -o` option being turned on.
    fn shell_option(&mut self, option: Option<&str>) {
        match option {
            // `keyword` (`set -k`) makes `NAME=value` words anywhere in a command assignments
            // (`bash -c ls BASH_ENV=/tmp/x`); history expansion rewrites later lines from
            // earlier ones (`!!:s/x/;/`).
            Some("keyword" | "histexpand" | "history") => self.unchecked(Unchecked::Unsupported(
                format!("set -o {}", option.unwrap_or_default()),
            )),
            Some(_) => {}
            None => self.unchecked(Unchecked::DynamicArgument("set -o".into())),
        }
    }

    /// One operand of `declare`/`local`/`export`/...: `NAME`, `NAME=value`, `NAME[i]=value`.
    fn declaration(&mut self, builtin: &str, arg: &Arg, integer: bool, nameref: bool) {
        let Some(text) = &arg.text else {
            let Some((lhs, _)) = arg.prefix.split_once('=') else {
                self.unchecked(Unchecked::DynamicArgument(builtin.to_string()));
                return;
            };
            if let Some(name) = self.name_arg(&Arg::lit(lhs.trim_end_matches('+'))) {
                let value = if arg.array_text {
                    Value::Text
                } else {
                    Value::Code
                };
                self.assigned(&name, value);
                if integer || nameref {
                    self.arith_ref(&name);
                }
            }
            if integer || nameref {
                for p in &arg.params {
                    self.arith_ref(p);
                }
                if arg.output {
                    self.unchecked(Unchecked::ArithmeticOutput);
                }
            }
            return;
        };
        let (lhs, value) = match text.split_once('=') {
            Some((l, v)) => (l.trim_end_matches('+'), Some(v)),
            None => (text.as_str(), None),
        };
        let Some(name) = self.name_arg(&Arg::lit(lhs)) else {
            return;
        };
        if integer {
            self.arith_ref(&name);
            if let Some(v) = value {
                self.arith_text(v);
            }
        }
        if let Some(v) = value {
            let value = match text_value(v) {
                Value::Number if nameref || text.contains("+=") => Value::Text,
                value => value,
            };
            self.assigned(&name, value);
            if nameref && let Some(target) = self.name_arg(&Arg::lit(v)) {
                // Assignments through the reference land in the target.
                self.assigned(&target, Value::Code);
            }
        }
    }
}

/// Option letters with their values (`None` for a flag, or a value computed at run time).
type Options = Vec<(char, Option<String>)>;

/// Options as bash builtins read them: clusters of single letters, each letter in
/// `with_arg` taking the rest of its word or the next word as its value, `--` ending them.
/// Returns each option with its value (`None` when computed at run time) and where the
/// operands start; `None` when a word where an option could be is computed at run time.
fn getopt(args: &[Arg], with_arg: &str) -> Option<(Options, usize)> {
    let mut opts = Vec::new();
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let t = a.text.as_deref()?;
        if t == "--" {
            return Some((opts, i + 1));
        }
        if !(t.len() > 1 && t.starts_with('-')) {
            break;
        }
        for (j, c) in t[1..].char_indices() {
            if !with_arg.contains(c) {
                opts.push((c, None));
                continue;
            }
            let attached = &t[1 + j + c.len_utf8()..];
            let value = if attached.is_empty() {
                i += 1;
                args.get(i).and_then(|a| a.text.clone())
            } else {
                Some(attached.to_string())
            };
            opts.push((c, value));
            break;
        }
        i += 1;
    }
    Some((opts, i))
}

/// Leading `-x`/`+x` option words and the operands after them.
fn split_options(args: &[Arg]) -> (Vec<&str>, &[Arg]) {
    let mut options = Vec::new();
    for (i, a) in args.iter().enumerate() {
        match a.text.as_deref() {
            Some("--") => return (options, &args[i + 1..]),
            Some(t) if t.len() > 1 && (t.starts_with('-') || t.starts_with('+')) => options.push(t),
            _ => return (options, &args[i..]),
        }
    }
    (options, &[])
}
