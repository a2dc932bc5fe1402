//! Walks a parsed script and records everything a rule may care about, in source order:
//! each program that could run (after wrappers), each shell feature used (substitution,
//! redirection, background, here-documents), and whatever cannot be checked.
//!
//! Beyond programs, two bash behaviours run code without a visible command and are tracked:
//! - arithmetic evaluates the *values* of variables, and array subscripts inside them expand
//!   `$(...)` (`x='a[$(id)]'; echo $((x))` runs `id`). A variable used in arithmetic (or
//!   through `${!x}`) must not also be set from text or input in the same command;
//! - variables such as `PATH`, `LD_PRELOAD`, `BASH_ENV`, `PS4` change what later runs, so
//!   setting them is reported when the rule restricts programs.

mod builtins;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::ast::*;
use crate::error::{ParseError, Unchecked};
use crate::parse::{self, MAX_DEPTH, MAX_INPUT};
use crate::wrappers::{self, Arg, Next, Step};

/// A program the input would run, once wrappers are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The program as written, after quote removal (`/bin/rm` for `"/bin/r"m`), or a
    /// description for an implied program (`find -delete`).
    pub program: String,
    /// What rules match: the basename (`rm`).
    pub name: String,
    /// The words after the program; `None` where a word is computed at run time.
    pub args: Vec<Option<String>>,
    pub kind: InvocationKind,
    /// 1-based position, in source order, of the simple command of the checked input this
    /// invocation comes from (a wrapped command shares its wrapper's position).
    pub command: usize,
}

/// How an allow list treats an [`Invocation`]. Deny lists apply to every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationKind {
    /// An ordinary program: allow lists must name it.
    Program,
    /// A wrapper that only changes how the next command runs (`env`, `nice`, `xargs`,
    /// `sh -c`, `eval` …): allow lists need not name it; the command it runs is checked.
    Transparent,
    /// A program that runs another with powers of its own (`sudo`, `su`, `ssh`, `chroot` …):
    /// allow lists must name it, and the command it runs is checked too.
    Runner,
    /// A shell builtin that cannot run or redirect to a program (`cd`, `true`, `test`,
    /// `export` …); always allowed by allow lists.
    Builtin,
    /// A call to a function defined, unconditionally, earlier in the same script; its body
    /// was checked where it was defined.
    Function,
    /// Runs code the checker cannot see (a script file, standard input, `source`, `parallel`):
    /// denied whenever the rule restricts programs, unless allow_programs names it.
    UnseenCode(&'static str),
}

#[derive(Debug, Clone)]
pub(crate) enum Feature {
    Substitution,
    Redirection(String),
    Background,
    Heredoc,
}

#[derive(Debug, Clone)]
pub(crate) enum Finding {
    Invocation(Invocation),
    Feature(Feature),
    Unchecked(Unchecked, usize),
    /// "setting `PATH`", "`hash -p`": changes which program a name runs.
    Rebinding(String, usize),
}

pub(crate) struct Analysis {
    pub findings: Vec<Finding>,
    /// How many simple commands the checked input has.
    pub total: usize,
}

/// Analyses a shell command string.
pub(crate) fn analyze(text: &str) -> Analysis {
    let mut checker = Checker::default();
    match parse::parse(text) {
        Ok(script) => {
            checker.contexts.push(Context::default());
            checker.script(&script, true);
            checker.finish_context();
        }
        Err(e) => checker.unchecked(e.into()),
    }
    checker.finish()
}

/// Analyses an exec-style argv: no shell parsing of the words, but wrappers still apply.
pub(crate) fn analyze_argv(argv: &[&str]) -> Analysis {
    let mut checker = Checker::default();
    checker.offsets.push(0);
    if argv.iter().any(|a| a.contains('\0')) {
        checker.unchecked(ParseError::NulByte.into());
    } else if argv.iter().map(|a| a.len() + 1).sum::<usize>() > MAX_INPUT {
        checker.unchecked(ParseError::TooLong.into());
    } else if !argv.is_empty() {
        checker.contexts.push(Context::default());
        checker.resolve(argv.iter().map(|a| Arg::lit(a)).collect(), How::default());
        checker.finish_context();
    }
    checker.finish()
}

#[derive(Default)]
struct Context {
    functions: HashSet<String>,
    calls: Vec<usize>,
    /// Something here can remove or shadow functions (`unset`, `source`, `alias`): calls are
    /// then checked as programs.
    shaken: bool,
    /// Variables that hold a number here for sure: set to one by a top-level command that
    /// always runs (`i=0`), or the variable of a `for` loop over numbers, inside the loop.
    numbers: HashSet<String>,
}

#[derive(Clone, Copy, Default)]
struct How {
    /// The word is the command word of a simple command (functions apply).
    direct: bool,
    /// Input words are appended to the command (`xargs`).
    appended: bool,
    hops: usize,
}

#[derive(Default)]
struct Checker {
    findings: Vec<Finding>,
    /// Offsets of the simple commands of the checked input.
    offsets: Vec<usize>,
    /// Offset of the command being checked.
    origin: usize,
    /// Above zero while checking code parsed from a string (its offsets mean nothing here).
    nested: usize,
    depth: usize,
    contexts: Vec<Context>,
    arith_refs: BTreeMap<String, usize>,
    /// Variables evaluated as arithmetic whose value may come from outside the command (the
    /// environment, the shell): such a value can name a variable set here (`MACHTYPE` is
    /// `x86_64-pc-linux-gnu`, so `$((MACHTYPE))` evaluates `pc`).
    outside_refs: BTreeMap<String, usize>,
    /// Variables set to anything but a number.
    tainted: BTreeSet<String>,
    /// Variables set to text that could run code when evaluated as arithmetic.
    code_values: BTreeSet<String>,
    /// Bytes of code parsed out of strings so far (`eval`, `sh -c`, ...): nesting must not
    /// turn one input into unbounded work.
    reparsed: usize,
}

/// Most code parsed out of strings per check, in bytes.
const REPARSE_BUDGET: usize = 4 * MAX_INPUT;

/// Shell builtins that neither run a program nor redirect anything.
const INERT_BUILTINS: &[&str] = &[
    ":",
    "true",
    "false",
    "test",
    "[",
    "cd",
    "pwd",
    "break",
    "continue",
    "return",
    "exit",
    "shift",
    "set",
    "unset",
    "export",
    "readonly",
    "local",
    "declare",
    "typeset",
    "read",
    "getopts",
    "wait",
    "let",
    "shopt",
    "mapfile",
    "readarray",
    "umask",
    "type",
    "hash",
    "times",
    "jobs",
    "dirs",
    "pushd",
    "popd",
];

/// Directories whose programs an allow list entry `ls` also matches as `/usr/bin/ls`.
const SYSTEM_DIRS: &[&str] = &[
    "/bin",
    "/usr/bin",
    "/sbin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
];

pub(crate) fn is_system_path(program: &str) -> bool {
    let Some((dir, name)) = program.rsplit_once('/') else {
        return false;
    };
    !name.is_empty() && SYSTEM_DIRS.contains(&dir)
}

pub(crate) fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

/// Whether a word always expands to a number: `5`, `$((i + 1))`, `${#x}`, `$?`, `{1..9}`.
fn is_numeric(word: &Word) -> bool {
    if static_word(word).is_some_and(|t| is_integer(&t)) {
        return true;
    }
    let numeric_part = |p: &WordPart| match p {
        WordPart::Arith(_) => true,
        WordPart::Param(p) => {
            p.op.is_none() && (p.length || matches!(p.name.as_str(), "#" | "?" | "$" | "!"))
        }
        _ => false,
    };
    match word.parts.as_slice() {
        [WordPart::DoubleQuoted(inner)] => matches!(inner.as_slice(), [p] if numeric_part(p)),
        [WordPart::Literal(t)] => t
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .is_some_and(|range| {
                let bounds: Vec<&str> = range.split("..").collect();
                (2..=3).contains(&bounds.len()) && bounds.iter().all(|b| is_integer(b))
            }),
        [p] => numeric_part(p),
        _ => false,
    }
}

/// What a variable is set to, as far as arithmetic is concerned: bash evaluates the value of
/// a variable used in arithmetic as an expression, and expands `$(...)` in array subscripts
/// there.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Value {
    Number,
    /// Known text with no `$`, backquote or name of a variable the shell sets from text:
    /// evaluated, it can only reach other variables.
    Text,
    /// Text that could run code when evaluated: unknown (input, output, expansions, globs)
    /// or holding `$`, backquotes or such names.
    Code,
}

pub(crate) fn text_value(text: &str) -> Value {
    if is_integer(text) {
        Value::Number
    } else if text.contains(['$', '`'])
        || identifiers(text)
            .iter()
            .any(|n| SHELL_TEXT.contains(&n.as_str()))
    {
        Value::Code
    } else {
        Value::Text
    }
}

/// The value of an assignment's word (no globbing there, but arrays are globbed).
fn word_value(word: &Word) -> Value {
    if is_numeric(word) {
        return Value::Number;
    }
    if let [WordPart::Array(elements)] = word.parts.as_slice() {
        return array_value(elements);
    }
    static_word(word).map_or(Value::Code, |t| text_value(&t))
}

fn array_value(elements: &[Word]) -> Value {
    // `[key]=value` elements are not globbed; others are.
    let text = |w: &Word| match w.parts.first() {
        Some(WordPart::Literal(t)) if t.starts_with('[') && w.parts.iter().all(is_plain) => {
            let text = static_prefix(w);
            text.contains("]=").then_some(text)
        }
        _ => static_word(w),
    };
    if elements
        .iter()
        .all(|w| text(w).is_some_and(|t| text_value(&t) != Value::Code))
    {
        Value::Text
    } else {
        Value::Code
    }
}

/// A part with no expansion in it.
fn is_plain(part: &WordPart) -> bool {
    match part {
        WordPart::Literal(_) | WordPart::Quoted(_) => true,
        WordPart::DoubleQuoted(inner) => inner.iter().all(is_plain),
        _ => false,
    }
}

/// Variables that decide which program runs, or that programs read code from.
fn is_rebinding(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "PATH",
        "path",
        "BASH_ENV",
        "ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS0",
        "PS1",
        "PS2",
        "PS3",
        "PS4",
        "PROMPT_COMMAND",
        "BASH_LOADABLES_PATH",
        "FPATH",
        "fpath",
        "module_path",
        "MODULE_PATH",
        "ZDOTDIR",
        "PERL5OPT",
        "PERL5LIB",
        "PERLLIB",
        "RUBYOPT",
        "RUBYLIB",
        "NODE_OPTIONS",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PAGER",
        "MANPAGER",
        "SYSTEMD_PAGER",
        "GIT_PAGER",
        "EDITOR",
        "VISUAL",
        "SUDO_EDITOR",
        "SYSTEMD_EDITOR",
        "GIT_EDITOR",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_EXTERNAL_DIFF",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
        "SUDO_ASKPASS",
        "LESS",
        "MORE",
        "LESSOPEN",
        "LESSCLOSE",
        "BROWSER",
        // bash: the command hash table and the aliases, as arrays.
        "BASH_CMDS",
        "BASH_ALIASES",
        "EXECIGNORE",
        // zsh: the same through its special arrays.
        "commands",
        "functions",
        "aliases",
        "galiases",
        "saliases",
        "dis_functions",
        "dis_aliases",
        "dis_galiases",
        "dis_saliases",
        // `$"..."` is translated, and the translation is expanded like `"..."`.
        "TEXTDOMAIN",
        "TEXTDOMAINDIR",
        // Programs run `$SHELL -c ...` (`flock -c`, ssh's `ProxyCommand`, `script`).
        "SHELL",
        "FCEDIT",
        "MANOPT",
        "SYSTEMD_LESS",
        "TAR_OPTIONS",
        "ZIPOPT",
        "RSYNC_RSH",
        "RSYNC_CONNECT_PROG",
        "CVS_RSH",
        "GIT_EXEC_PATH",
        "GIT_TEMPLATE_DIR",
        "GIT_PROXY_COMMAND",
        "GIT_SEQUENCE_EDITOR",
        "GIT_ALLOW_PROTOCOL",
        "WGETRC",
        "PERL5DB",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "GCONV_PATH",
        "OPENSSL_CONF",
    ];
    NAMES.contains(&name)
        || [
            "LD_",
            "DYLD_",
            "BASH_FUNC_",
            "GIT_CONFIG",
            "LUA_INIT",
            "LUA_PATH",
            "LUA_CPATH",
        ]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Variables the shell sets from text a command controls: never safe to evaluate as
/// arithmetic (`read <<< 'a[$(id)]'; echo $((REPLY))`).
const SHELL_TEXT: &[&str] = &[
    "_",
    "REPLY",
    "OPTARG",
    "MAPFILE",
    "BASH_REMATCH",
    "BASH_COMMAND",
    "BASH_EXECUTION_STRING",
    "BASH_ARGV",
    "BASH_ARGV0",
    "BASH_SOURCE",
    "FUNCNAME",
    "BASH_ALIASES",
    "BASH_CMDS",
    "COMP_WORDS",
    "COMP_LINE",
    "COMP_WORDBREAKS",
    "READLINE_LINE",
    "DIRSTACK",
    "PWD",
    "OLDPWD",
];

/// Variables the shell keeps as numbers.
const SHELL_NUMBERS: &[&str] = &[
    "RANDOM",
    "SRANDOM",
    "LINENO",
    "SECONDS",
    "EPOCHSECONDS",
    "EPOCHREALTIME",
    "BASHPID",
    "PPID",
    "UID",
    "EUID",
    "OPTIND",
    "OPTERR",
    "COLUMNS",
    "LINES",
    "HISTCMD",
    "HISTSIZE",
    "HISTFILESIZE",
    "SHLVL",
    "BASH_SUBSHELL",
    "PIPESTATUS",
    "GROUPS",
    "BASH_LINENO",
    "BASH_ARGC",
    "TMOUT",
];

/// Variable names in arithmetic text (`16#ff` and `0x1f` are numbers, not names).
fn identifiers(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let after_number = i > 0
            && (chars[i - 1].is_ascii_alphanumeric() || matches!(chars[i - 1], '_' | '#' | '.'));
        if (c.is_ascii_alphabetic() || c == '_') && !after_number {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else {
            i += 1;
        }
    }
    out
}

impl Arg {
    fn from_word(word: &Word) -> Arg {
        let mut arg = Arg {
            text: static_word(word),
            prefix: static_prefix(word),
            ..Arg::default()
        };
        if let Some(WordPart::Array(elements)) = word.parts.last() {
            arg.array_text = array_value(elements) == Value::Text;
        }
        arg.plain = word.parts.iter().all(is_plain);
        fn walk(parts: &[WordPart], arg: &mut Arg) {
            for part in parts {
                match part {
                    WordPart::Param(p) => arg.params.push(p.name.clone()),
                    WordPart::DoubleQuoted(inner) => walk(inner, arg),
                    WordPart::CommandSub(_) | WordPart::ProcessSub { .. } => arg.output = true,
                    _ => {}
                }
            }
        }
        walk(&word.parts, &mut arg);
        arg
    }
}

impl Checker {
    fn finish(mut self) -> Analysis {
        for (name, origin) in std::mem::take(&mut self.arith_refs) {
            if self.tainted.contains(&name) {
                self.findings.push(Finding::Unchecked(
                    Unchecked::ArithmeticVariable(name),
                    origin,
                ));
            }
        }
        if !self.code_values.is_empty() {
            for (name, origin) in std::mem::take(&mut self.outside_refs) {
                if !self.tainted.contains(&name) {
                    self.findings.push(Finding::Unchecked(
                        Unchecked::ArithmeticOutsideVariable(name),
                        origin,
                    ));
                }
            }
        }
        let mut offsets = std::mem::take(&mut self.offsets);
        offsets.sort_unstable();
        offsets.dedup();
        let index = |o: &mut usize| *o = offsets.binary_search(o).map_or(0, |i| i + 1);
        for finding in &mut self.findings {
            match finding {
                Finding::Invocation(inv) => index(&mut inv.command),
                Finding::Unchecked(_, o) | Finding::Rebinding(_, o) => index(o),
                Finding::Feature(_) => {}
            }
        }
        Analysis {
            findings: self.findings,
            total: offsets.len(),
        }
    }

    fn ctx(&mut self) -> &mut Context {
        if self.contexts.is_empty() {
            self.contexts.push(Context::default());
        }
        let last = self.contexts.len() - 1;
        &mut self.contexts[last]
    }

    fn finish_context(&mut self) {
        let Some(ctx) = self.contexts.pop() else {
            return;
        };
        if ctx.shaken {
            for i in ctx.calls {
                if let Some(Finding::Invocation(inv)) = self.findings.get_mut(i) {
                    inv.kind = InvocationKind::Program;
                }
            }
        }
    }

    /// Takes `text` from the re-parse budget; reports the input as too long when it is spent.
    fn spend(&mut self, text: &str) -> bool {
        self.reparsed += text.len();
        if self.reparsed > REPARSE_BUDGET {
            self.unchecked(Unchecked::TooMuchCode);
            return false;
        }
        true
    }

    fn unchecked(&mut self, reason: Unchecked) {
        self.findings.push(Finding::Unchecked(reason, self.origin));
    }

    fn feature(&mut self, feature: Feature) {
        self.findings.push(Finding::Feature(feature));
    }

    /// Records a program that runs. `appended`: words from input are added to its arguments
    /// (`xargs`); they count as one word computed at run time, which deny entries like
    /// `git push` match (`echo push | xargs git`).
    fn invocation(
        &mut self,
        program: &str,
        name: &str,
        args: &[Arg],
        kind: InvocationKind,
        appended: bool,
    ) -> usize {
        let mut words: Vec<Option<String>> = args.iter().map(|a| a.text.clone()).collect();
        if appended {
            words.push(None);
        }
        self.findings.push(Finding::Invocation(Invocation {
            program: program.to_string(),
            name: name.to_string(),
            args: words,
            kind,
            command: self.origin,
        }));
        self.findings.len() - 1
    }

    fn assigned(&mut self, name: &str, value: Value) {
        if value != Value::Number {
            self.tainted.insert(name.to_string());
        }
        if value == Value::Code {
            self.code_values.insert(name.to_string());
        }
        if is_rebinding(name) {
            self.findings
                .push(Finding::Rebinding(format!("setting `{name}`"), self.origin));
        }
    }

    fn arith_ref(&mut self, name: &str) {
        if name.chars().all(|c| c.is_ascii_digit()) || matches!(name, "@" | "*") {
            // Positional parameters come from outside the command: never known to be numbers.
            self.unchecked(Unchecked::ArithmeticVariable(format!("${name}")));
            return;
        }
        if matches!(name, "#" | "?" | "$" | "!" | "-") {
            return;
        }
        if SHELL_TEXT.contains(&name) {
            // Set by the shell from text the command controls (`: 'a[$(id)]'; $((_))`).
            self.unchecked(Unchecked::ArithmeticVariable(name.to_string()));
            return;
        }
        if is_rebinding(name) {
            // Arithmetic can assign too: `((BASH_ENV = 7))`.
            self.findings.push(Finding::Rebinding(
                format!("`{name}` in arithmetic"),
                self.origin,
            ));
        }
        let origin = self.origin;
        self.arith_refs.entry(name.to_string()).or_insert(origin);
        if !SHELL_NUMBERS.contains(&name) && !self.ctx().numbers.contains(name) {
            self.outside_refs.entry(name.to_string()).or_insert(origin);
        }
    }

    // ---- the tree ----

    fn script(&mut self, script: &Script, top: bool) {
        if self.depth > MAX_DEPTH {
            self.unchecked(ParseError::TooDeep.into());
            return;
        }
        self.depth += 1;
        for item in &script.items {
            if item.background {
                self.feature(Feature::Background);
            }
            let ao = &item.and_or;
            if top
                && !item.background
                && ao.rest.is_empty()
                && !ao.first.negated
                && let [Command::Function(def)] = ao.first.commands.as_slice()
            {
                self.ctx().functions.insert(def.name.clone());
            }
            self.pipeline(&ao.first);
            for (_, p) in &ao.rest {
                self.pipeline(p);
            }
            if top
                && !item.background
                && ao.rest.is_empty()
                && !ao.first.negated
                && let [Command::Simple(sc)] = ao.first.commands.as_slice()
                && sc.words.is_empty()
            {
                for a in &sc.assignments {
                    if !a.append && a.subscript.is_none() && is_numeric(&a.value) {
                        self.ctx().numbers.insert(a.name.clone());
                    }
                }
            }
        }
        self.depth -= 1;
    }

    fn pipeline(&mut self, pipeline: &Pipeline) {
        for command in &pipeline.commands {
            self.command(command);
        }
    }

    fn command(&mut self, command: &Command) {
        match command {
            Command::Simple(sc) => self.simple(sc),
            Command::Compound(compound, redirects) => {
                self.compound(compound);
                for r in redirects {
                    self.redirect(r);
                }
            }
            Command::Function(def) => self.command(&def.body),
            Command::Coproc(name, inner) => {
                self.feature(Feature::Background);
                // `coproc NAME { ...; }` sets the array `NAME` to descriptor numbers.
                self.assigned(name.as_deref().unwrap_or("COPROC"), Value::Number);
                self.command(inner);
            }
        }
    }

    fn compound(&mut self, compound: &Compound) {
        match compound {
            Compound::Brace(s) | Compound::Subshell(s) => self.script(s, false),
            Compound::If {
                branches,
                otherwise,
            } => {
                for (cond, body) in branches {
                    self.script(cond, false);
                    self.script(body, false);
                }
                if let Some(s) = otherwise {
                    self.script(s, false);
                }
            }
            Compound::For {
                var, words, body, ..
            } => {
                let numeric = words.as_ref().is_some_and(|w| w.iter().all(is_numeric));
                let value = match words {
                    _ if numeric => Value::Number,
                    Some(words) if words.iter().all(|w| word_value(w) != Value::Code) => {
                        Value::Text
                    }
                    _ => Value::Code,
                };
                self.assigned(var, value);
                for w in words.iter().flatten() {
                    self.word(w);
                }
                let added = numeric && self.ctx().numbers.insert(var.clone());
                self.script(body, false);
                if added {
                    self.ctx().numbers.remove(var);
                }
            }
            Compound::ArithFor { header, body } => {
                self.arith(header);
                self.script(body, false);
            }
            Compound::While { cond, body, .. } => {
                self.script(cond, false);
                self.script(body, false);
            }
            Compound::Case { word, arms } => {
                self.word(word);
                for arm in arms {
                    for p in &arm.patterns {
                        self.word(p);
                    }
                    self.script(&arm.body, false);
                }
            }
            Compound::Arith(a) => self.arith(a),
            Compound::Cond(tokens) => self.cond(tokens),
        }
    }

    fn cond(&mut self, tokens: &[CondToken]) {
        let op = |i: Option<usize>| -> Option<String> {
            match i.and_then(|i| tokens.get(i)) {
                Some(CondToken::Word(w)) => static_word(w),
                _ => None,
            }
        };
        const ARITH: &[&str] = &["-eq", "-ne", "-lt", "-le", "-gt", "-ge"];
        for (i, token) in tokens.iter().enumerate() {
            let CondToken::Word(w) = token else { continue };
            let before = op(i.checked_sub(1));
            let after = op(Some(i + 1));
            if before.as_deref().is_some_and(|o| ARITH.contains(&o))
                || after.as_deref().is_some_and(|o| ARITH.contains(&o))
            {
                self.arith_word(w);
            } else if before.as_deref() == Some("-v") {
                self.word(w);
                self.name_arg(&Arg::from_word(w));
            } else {
                self.word(w);
            }
        }
    }

    fn simple(&mut self, sc: &SimpleCommand) {
        if self.nested == 0 {
            self.offsets.push(sc.offset);
            self.origin = sc.offset;
        }
        for a in &sc.assignments {
            if let Some(sub) = &a.subscript {
                self.arith(sub);
            }
            self.word(&a.value);
            let value = match word_value(&a.value) {
                Value::Number if a.append => Value::Text,
                value => value,
            };
            self.assigned(&a.name, value);
        }
        for r in &sc.redirects {
            self.redirect(r);
        }
        for w in &sc.words {
            self.word(w);
        }
        if self.nested == 0 {
            // Substitutions inside the words are commands of their own: restore ours.
            self.origin = sc.offset;
        }
        if !sc.words.is_empty() {
            let argv = sc.words.iter().map(Arg::from_word).collect();
            self.resolve(
                argv,
                How {
                    direct: true,
                    ..How::default()
                },
            );
        }
    }

    fn redirect(&mut self, r: &Redirect) {
        if let Some(fd) = &r.fd
            && !fd.chars().all(|c| c.is_ascii_digit())
        {
            // `{NAME}>file` sets `NAME` to the descriptor's number.
            self.assigned(fd, Value::Number);
        }
        let word = match &r.target {
            RedirTarget::HereDoc(doc) => {
                self.feature(Feature::Heredoc);
                self.word(&doc.body);
                return;
            }
            RedirTarget::Word(w) => w,
        };
        self.word(word);
        let target = static_word(word);
        let fine = match r.op {
            RedirOp::HereString => {
                self.feature(Feature::Heredoc);
                true
            }
            // `2>&1`, `>&2`, `<&-`: duplicating or closing descriptors touches no file.
            RedirOp::DupIn | RedirOp::DupOut => target.as_deref().is_some_and(|t| {
                t == "-" || (!t.is_empty() && t.chars().all(|c| c.is_ascii_digit()))
            }),
            // Reading or writing these devices touches no file either.
            _ => target.as_deref().is_some_and(|t| {
                matches!(
                    t,
                    "/dev/null" | "/dev/stdout" | "/dev/stderr" | "/dev/stdin"
                )
            }),
        };
        if !fine {
            let shown = format!(
                "{}{}{}",
                r.fd.as_deref().unwrap_or(""),
                r.op.as_str(),
                target.as_deref().unwrap_or("…")
            );
            self.feature(Feature::Redirection(crate::error::snippet(&shown, 40)));
        }
    }

    fn word(&mut self, word: &Word) {
        self.parts(&word.parts);
    }

    fn parts(&mut self, parts: &[WordPart]) {
        for part in parts {
            match part {
                WordPart::Literal(_) | WordPart::Quoted(_) => {}
                WordPart::DoubleQuoted(inner) => self.parts(inner),
                WordPart::Param(p) => self.param(p, false),
                WordPart::CommandSub(s) | WordPart::ProcessSub { script: s, .. } => {
                    self.feature(Feature::Substitution);
                    self.script(s, false);
                }
                WordPart::Arith(a) => self.arith(a),
                WordPart::Array(words) => words.iter().for_each(|w| self.array_element(w)),
            }
        }
    }

    /// An element of `(a b c)` in an array assignment. `[sub]=value` gives the index, which
    /// bash evaluates as arithmetic for indexed arrays, after expanding it
    /// (`x='b[$(id)]'; a=([x]=1)` runs `id`).
    fn array_element(&mut self, word: &Word) {
        let Some(WordPart::Literal(first)) = word.parts.first() else {
            self.word(word);
            return;
        };
        if !first.starts_with('[') {
            self.word(word);
            return;
        }
        let mut subscript = Vec::new();
        let mut value = Vec::new();
        let mut found = false;
        for (i, part) in word.parts.iter().enumerate() {
            let text = match part {
                WordPart::Literal(t) if !found => t,
                _ => {
                    if found {
                        value.push(part.clone());
                    } else {
                        subscript.push(part.clone());
                    }
                    continue;
                }
            };
            let text = if i == 0 { &text[1..] } else { text.as_str() };
            match text.find("]=").or_else(|| text.find("]+=")) {
                Some(end) => {
                    found = true;
                    subscript.push(WordPart::Literal(text[..end].to_string()));
                    let rest = text[end + 1..].trim_start_matches('+');
                    value.push(WordPart::Literal(rest[1..].to_string()));
                }
                None => subscript.push(WordPart::Literal(text.to_string())),
            }
        }
        if !found {
            self.word(word);
            return;
        }
        self.arith_word(&Word { parts: subscript });
        self.word(&Word { parts: value });
    }

    /// `arith`: the expansion is part of arithmetic, so text it substitutes (a default, a
    /// replacement) is evaluated there too (`$((${x:-pc}))` evaluates the variable `pc`).
    fn param(&mut self, p: &Param, arith: bool) {
        if p.indirect && !matches!(p.op.as_deref(), Some("*" | "@")) {
            // `${!x}` expands the variable the value of `x` names, subscripts included.
            self.arith_ref(&p.name);
        }
        if let Some(sub) = &p.subscript {
            self.arith(sub);
        }
        if p.op.as_deref() == Some("@")
            && p.arg
                .as_ref()
                .is_none_or(|a| static_word(a).is_none_or(|t| t.starts_with('P')))
        {
            // `${x@P}` expands the value of `x` as a prompt, running any `$(...)` in it.
            self.unchecked(Unchecked::DynamicCode(format!("${{{}@P}}", p.name)));
        }
        if matches!(p.op.as_deref(), Some("=" | ":=")) {
            self.assigned(&p.name, p.arg.as_ref().map_or(Value::Text, word_value));
        }
        if let Some(arg) = &p.arg {
            if arith || p.op.as_deref() == Some(":") {
                self.arith_word(arg);
            } else {
                self.word(arg);
            }
        }
    }

    fn arith(&mut self, a: &Arith) {
        self.arith_parts(&a.parts, false);
    }

    /// Parts in arithmetic context. `data`: literal text came from a word (quoted or not)
    /// rather than from arithmetic syntax, so it may hide `$(...)` the parser did not see.
    fn arith_parts(&mut self, parts: &[WordPart], data: bool) {
        for part in parts {
            match part {
                WordPart::Literal(t) | WordPart::Quoted(t) => {
                    if data && t.contains(['$', '`']) {
                        self.arith_text(t);
                    } else {
                        for name in identifiers(t) {
                            self.arith_ref(&name);
                        }
                    }
                }
                WordPart::DoubleQuoted(inner) => self.arith_parts(inner, data),
                WordPart::Param(p) => {
                    self.arith_ref(&p.name);
                    self.param(p, true);
                }
                WordPart::CommandSub(s) | WordPart::ProcessSub { script: s, .. } => {
                    self.feature(Feature::Substitution);
                    self.script(s, false);
                    self.unchecked(Unchecked::ArithmeticOutput);
                }
                WordPart::Arith(a) => self.arith(a),
                WordPart::Array(words) => words.iter().for_each(|w| self.array_element(w)),
            }
        }
    }

    /// A word whose value the shell evaluates as arithmetic (`[[ $x -eq 1 ]]`, `${x:$n}`).
    fn arith_word(&mut self, word: &Word) {
        self.arith_parts(&word.parts, true);
    }

    /// Text evaluated as arithmetic (`let 'x+1'`, `declare -i x=...`, subscripts of names).
    fn arith_text(&mut self, text: &str) {
        if !text.contains(['$', '`']) {
            for name in identifiers(text) {
                self.arith_ref(&name);
            }
            return;
        }
        if !self.spend(text) {
            return;
        }
        match parse::parse_arith_text(text, self.depth) {
            Ok(a) => {
                self.nested += 1;
                self.arith(&a);
                self.nested -= 1;
            }
            Err(e) => self.unchecked(e.into()),
        }
    }

    /// A variable name given to a builtin (`read NAME`, `unset NAME`): a subscript in it is
    /// arithmetic. Returns the name without its subscript, if known.
    fn name_arg(&mut self, arg: &Arg) -> Option<String> {
        if arg.text.is_none() && arg.plain {
            // Only globbing or brace expansion makes it dynamic (`unset c[x]`, `[[ -v c[x] ]]`):
            // bash uses the text as written when no file matches, and a `*` or `?` could
            // match any file name.
            if arg.prefix.contains(['*', '?']) {
                self.unchecked(Unchecked::Unsupported(format!(
                    "{} as a variable name",
                    crate::error::snippet(&arg.prefix, 24)
                )));
            }
            return self.name_arg(&Arg::lit(&arg.prefix));
        }
        let Some(text) = &arg.text else {
            for p in &arg.params {
                self.arith_ref(p);
            }
            if arg.output {
                self.unchecked(Unchecked::ArithmeticOutput);
            }
            return None;
        };
        match text.find('[') {
            Some(open) => {
                let close = text.rfind(']').filter(|&c| c > open).unwrap_or(text.len());
                self.arith_text(&text[open + 1..close]);
                Some(text[..open].to_string())
            }
            None => Some(text.clone()),
        }
    }

    fn assign_name(&mut self, arg: &Arg) {
        if let Some(name) = self.name_arg(arg) {
            self.assigned(&name, Value::Code);
        }
    }

    // ---- programs ----

    fn resolve(&mut self, argv: Vec<Arg>, how: How) {
        if how.hops > MAX_DEPTH {
            self.unchecked(ParseError::TooDeep.into());
            return;
        }
        let Some(first) = argv.first() else {
            return;
        };
        let Some(written) = first.text.clone() else {
            self.unchecked(Unchecked::DynamicProgram);
            return;
        };
        // zsh expands `=rm` to the path of `rm`.
        let program = match written.strip_prefix('=') {
            Some(rest) if !rest.is_empty() => rest.to_string(),
            _ => written,
        };
        let name = basename(&program).to_string();
        let args = &argv[1..];
        let bare = !program.contains('/');
        if parse::is_reserved(&name) {
            self.unchecked(Unchecked::ReservedWord(crate::error::snippet(&name, 24)));
            return;
        }
        if how.direct && bare && self.ctx().functions.contains(&name) {
            let index = self.invocation(&program, &name, args, InvocationKind::Function, false);
            self.ctx().calls.push(index);
            return;
        }
        if matches!(
            name.as_str(),
            "unset" | "source" | "." | "alias" | "unfunction" | "unhash" | "disable"
        ) {
            self.ctx().shaken = true;
        }
        match wrappers::step(&name, args, how.appended) {
            Some(mut step) => {
                let trusted = bare || is_system_path(&program);
                if !trusted
                    && matches!(
                        step.kind,
                        InvocationKind::Transparent | InvocationKind::Builtin
                    )
                {
                    step.kind = InvocationKind::Program;
                }
                self.apply(&program, &name, args, step, how);
            }
            None => {
                let kind = if bare && INERT_BUILTINS.contains(&name.as_str()) {
                    InvocationKind::Builtin
                } else {
                    InvocationKind::Program
                };
                self.invocation(&program, &name, args, kind, how.appended);
                if bare {
                    self.builtin_effects(&name, args);
                }
            }
        }
    }

    fn apply(&mut self, program: &str, name: &str, args: &[Arg], step: Step, how: How) {
        self.invocation(program, name, args, step.kind, how.appended);
        if let Some(problem) = step.problem {
            self.unchecked(problem);
        }
        for next in step.next {
            match next {
                Next::Command { argv, appended } => self.resolve(
                    argv,
                    How {
                        direct: false,
                        appended,
                        hops: how.hops + 1,
                    },
                ),
                Next::Code { text, same_process } => self.code(&text, same_process),
                Next::Expanded { text } if !self.spend(&text) => {}
                Next::Expanded { text } => match parse::parse_expanded(&text, self.depth) {
                    Ok(word) => {
                        self.nested += 1;
                        self.word(&word);
                        self.nested -= 1;
                    }
                    Err(e) => self.unchecked(e.into()),
                },
                Next::Implied { program, name } => {
                    self.invocation(program, name, &[], InvocationKind::Program, false);
                }
                Next::Assign { name, value } => {
                    self.assigned(&name, value.as_deref().map_or(Value::Code, text_value));
                }
            }
        }
    }

    /// Shell code held in a string (`sh -c`, `eval`, `ssh host ...`): parsed and checked
    /// like the input. `same_process`: it runs in this shell (`eval`, `trap`), sharing its
    /// functions; otherwise it is a new shell.
    fn code(&mut self, text: &str, same_process: bool) {
        if self.depth >= MAX_DEPTH {
            self.unchecked(ParseError::TooDeep.into());
            return;
        }
        if !self.spend(text) {
            return;
        }
        match parse::parse_at_depth(text, self.depth) {
            Err(e) => self.unchecked(e.into()),
            Ok(script) => {
                self.nested += 1;
                if same_process {
                    self.script(&script, false);
                } else {
                    self.contexts.push(Context::default());
                    self.script(&script, true);
                    self.finish_context();
                }
                self.nested -= 1;
            }
        }
    }
}
