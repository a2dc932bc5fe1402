//! What shell builtins do to variables (`read`, `declare`, `printf -v`, ...), and where they
//! evaluate arithmetic (`let`, `declare -i`, subscripts of names) or code (`mapfile -C`).

use super::{Checker, Finding, is_integer};
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
            "mapfile" | "readarray" => {
                let mut i = 0;
                while i < args.len() {
                    let Some(t) = args[i].text.as_deref() else {
                        break;
                    };
                    if !(t.len() > 1 && t.starts_with('-')) {
                        break;
                    }
                    if t == "-C" {
                        match args.get(i + 1).map(|a| a.text.clone()) {
                            Some(Some(code)) => self.code(&code, true),
                            _ => self.unchecked(Unchecked::DynamicCode(format!("{name} -C"))),
                        }
                    }
                    if t.len() == 2 && "dnOsuCc".contains(&t[1..]) {
                        i += 1;
                    }
                    i += 1;
                }
                for a in args.get(i..).unwrap_or_default() {
                    self.assign_name(a);
                }
            }
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
                    self.name_arg(a);
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

    /// One operand of `declare`/`local`/`export`/...: `NAME`, `NAME=value`, `NAME[i]=value`.
    fn declaration(&mut self, builtin: &str, arg: &Arg, integer: bool, nameref: bool) {
        let Some(text) = &arg.text else {
            let Some((lhs, _)) = arg.prefix.split_once('=') else {
                self.unchecked(Unchecked::DynamicArgument(builtin.to_string()));
                return;
            };
            if let Some(name) = self.name_arg(&Arg::lit(lhs.trim_end_matches('+'))) {
                self.assigned(&name, false);
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
            self.assigned(&name, is_integer(v) && !nameref);
            if nameref && let Some(target) = self.name_arg(&Arg::lit(v)) {
                // Assignments through the reference land in the target.
                self.assigned(&target, false);
            }
        }
    }
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
