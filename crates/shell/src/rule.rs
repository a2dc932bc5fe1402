//! The operator's rule: which programs may run, and which shell features are allowed.

use crate::check::{
    self, Analysis, Feature, Finding, Invocation, InvocationKind, basename, is_system_path,
};
use crate::error::{Location, RuleError, Unchecked, Violation, snippet};

/// What an operator's policy says about a shell-command argument.
///
/// Program entries are a program name (`ls`) or an absolute path (`/opt/app/bin/tool`),
/// optionally followed by the leading words they cover (`systemctl status`, `git push`).
///
/// ```
/// use toolgate_shell::CommandRule;
///
/// let rule = CommandRule {
///     allow_programs: Some(vec!["ls".into(), "cat".into(), "systemctl status".into()]),
///     deny_redirection: true,
///     ..CommandRule::default()
/// }
/// .compile()?;
/// assert!(rule.check_command("ls -l /var/log | cat").is_ok());
/// assert!(rule.check_argv(&["ls", "; rm x"]).is_ok());
/// let denied = rule.check_command("ls; r''m -rf /").unwrap_err();
/// assert_eq!(
///     denied.to_string(),
///     "`rm` is not an allowed program (allowed: ls, cat, systemctl status) (command 2 of `ls; r''m -rf /`)"
/// );
/// assert!(rule.check_argv(&["env", "bash", "-c", "rm x"]).is_err());
/// # Ok::<(), toolgate_shell::RuleError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct CommandRule {
    /// Only these may run. `None`: any program not denied may run.
    pub allow_programs: Option<Vec<String>>,
    /// Never these, anywhere: as the command, behind wrappers, inside substitutions.
    pub deny_programs: Vec<String>,
    /// Deny `$(...)`, `` `...` ``, `<(...)`, `>(...)`.
    pub deny_substitution: bool,
    /// Deny redirections to or from files. Descriptor duplication (`2>&1`, `>&2`, `<&-`) and
    /// `/dev/null`, `/dev/stdin`, `/dev/stdout`, `/dev/stderr` stay allowed: they touch no file.
    pub deny_redirection: bool,
    /// Deny `&` (and bash `coproc`).
    pub deny_background: bool,
    /// Deny `<<`, `<<-` and `<<<`.
    pub deny_heredoc: bool,
}

/// A validated [`CommandRule`], ready to check commands.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    allow: Option<Vec<Entry>>,
    deny: Vec<Entry>,
    allowed_text: String,
    deny_substitution: bool,
    deny_redirection: bool,
    deny_background: bool,
    deny_heredoc: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    /// A bare name, or an absolute path.
    program: String,
    words: Vec<String>,
    text: String,
}

const METACHARACTERS: &str = ";&|<>()$`\\\"'*?[]{}~#=!";

impl Entry {
    fn parse(list: &'static str, index: usize, raw: &str) -> Result<Entry, RuleError> {
        let words: Vec<&str> = raw.split_whitespace().collect();
        let Some((&program, rest)) = words.split_first() else {
            return Err(RuleError::EmptyEntry { list, index });
        };
        let text = words.join(" ");
        if let Some(found) = text
            .chars()
            .find(|&c| METACHARACTERS.contains(c) || c.is_control())
        {
            return Err(RuleError::Metacharacter {
                list,
                entry: snippet(&text, 60),
                found,
            });
        }
        if program.contains('/')
            && (!program.starts_with('/')
                || program.ends_with('/')
                || program[1..]
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == ".."))
        {
            return Err(RuleError::BadPath {
                list,
                entry: snippet(&text, 60),
            });
        }
        Ok(Entry {
            program: program.to_string(),
            words: rest.iter().map(|w| w.to_string()).collect(),
            text,
        })
    }

    /// Whether the program itself is the one this entry names, for allow lists: a bare entry
    /// matches the bare name or the program in a system directory (`/usr/bin/ls`), never
    /// another path (`./ls` could be anything).
    fn allows_program(&self, inv: &Invocation) -> bool {
        if self.program.starts_with('/') {
            inv.program == self.program
        } else {
            inv.name == self.program && (!inv.program.contains('/') || is_system_path(&inv.program))
        }
    }

    /// Allow entries match strictly: the words right after the program must be these.
    fn allows(&self, inv: &Invocation) -> bool {
        self.allows_program(inv)
            && self.words.iter().enumerate().all(|(i, w)| {
                inv.args
                    .get(i)
                    .is_some_and(|a| a.as_deref() == Some(w.as_str()))
            })
    }

    /// Deny entries match loosely: any path, any letter case (macOS), and the entry's words in
    /// order anywhere among the arguments (`git -C repo push` is `git push`); a word computed
    /// at run time could be any of them.
    fn denies(&self, inv: &Invocation) -> bool {
        if !basename(&self.program).eq_ignore_ascii_case(&inv.name) {
            return false;
        }
        let mut k = 0;
        for arg in &inv.args {
            if k == self.words.len() {
                break;
            }
            match arg {
                None => k += 1,
                Some(a) if *a == self.words[k] => k += 1,
                Some(_) => {}
            }
        }
        k == self.words.len()
    }
}

impl CommandRule {
    /// Validates the entries (no empty ones, no shell metacharacters, plain absolute paths).
    pub fn compile(self) -> Result<CompiledRule, RuleError> {
        let allow = match self.allow_programs {
            Some(list) if list.is_empty() => return Err(RuleError::EmptyAllowList),
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, e)| Entry::parse("allow_programs", i, e))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let deny = self
            .deny_programs
            .iter()
            .enumerate()
            .map(|(i, e)| Entry::parse("deny_programs", i, e))
            .collect::<Result<Vec<_>, _>>()?;
        let allowed_text = allow.as_ref().map(|a| allowed_text(a)).unwrap_or_default();
        Ok(CompiledRule {
            allow,
            deny,
            allowed_text,
            deny_substitution: self.deny_substitution,
            deny_redirection: self.deny_redirection,
            deny_background: self.deny_background,
            deny_heredoc: self.deny_heredoc,
        })
    }
}

fn allowed_text(entries: &[Entry]) -> String {
    let mut out = String::new();
    for (i, e) in entries.iter().enumerate() {
        if i == 12 || out.len() > 160 {
            out.push_str(", …");
            break;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&e.text);
    }
    out
}

impl CompiledRule {
    /// Checks a shell command string. Everything that could run is checked: every command of
    /// every list, pipeline and compound command, substitutions, here-document bodies, and
    /// the commands wrappers run (`env rm`, `sudo rm`, `bash -c 'rm'`, `find -exec rm`).
    pub fn check_command(&self, command: &str) -> Result<(), Violation> {
        self.judge(&check::analyze(command), command)
    }

    /// Checks an exec-style argv: `argv[0]` is the program and no word is shell-parsed, but
    /// wrappers still are (`["sh", "-c", "rm x"]` is checked as the script `rm x`).
    pub fn check_argv(&self, argv: &[&str]) -> Result<(), Violation> {
        let mut shown = String::new();
        for a in argv {
            if shown.len() > 100 {
                break;
            }
            if !shown.is_empty() {
                shown.push(' ');
            }
            shown.push_str(&snippet(a, 100));
        }
        self.judge(&check::analyze_argv(argv), &shown)
    }

    /// Whether the rule limits which programs may run (as opposed to only shell features).
    fn restricts_programs(&self) -> bool {
        self.allow.is_some() || !self.deny.is_empty()
    }

    fn judge(&self, analysis: &Analysis, input: &str) -> Result<(), Violation> {
        let location = |index: usize| Location {
            index,
            total: analysis.total,
            input: snippet(input, 80),
        };
        for finding in &analysis.findings {
            match finding {
                Finding::Unchecked(reason, at) => {
                    return Err(Violation::Unchecked {
                        reason: reason.clone(),
                        location: location(*at),
                    });
                }
                Finding::Feature(Feature::Substitution) if self.deny_substitution => {
                    return Err(Violation::Substitution);
                }
                Finding::Feature(Feature::Redirection(shown)) if self.deny_redirection => {
                    return Err(Violation::Redirection(shown.clone()));
                }
                Finding::Feature(Feature::Background) if self.deny_background => {
                    return Err(Violation::Background);
                }
                Finding::Feature(Feature::Heredoc) if self.deny_heredoc => {
                    return Err(Violation::Heredoc);
                }
                Finding::Feature(_) => {}
                Finding::Rebinding(what, at) => {
                    if self.restricts_programs() {
                        return Err(Violation::Rebinding {
                            what: what.clone(),
                            location: location(*at),
                        });
                    }
                }
                Finding::Invocation(inv) => self.judge_invocation(inv, || location(inv.command))?,
            }
        }
        Ok(())
    }

    fn judge_invocation(
        &self,
        inv: &Invocation,
        location: impl Fn() -> Location,
    ) -> Result<(), Violation> {
        if let Some(entry) = self.deny.iter().find(|e| e.denies(inv)) {
            let via = if inv.program.contains(' ') {
                format!(" (`{}`)", inv.program)
            } else {
                String::new()
            };
            return Err(Violation::Denied {
                program: entry.text.clone(),
                via,
                location: location(),
            });
        }
        let unseen = |why: &'static str| Violation::Unchecked {
            reason: Unchecked::UnseenCode {
                program: snippet(&inv.name, 40),
                why,
            },
            location: location(),
        };
        let Some(allow) = &self.allow else {
            return match inv.kind {
                InvocationKind::UnseenCode(why) if self.restricts_programs() => Err(unseen(why)),
                _ => Ok(()),
            };
        };
        let allowed = allow.iter().any(|e| e.allows(inv));
        match inv.kind {
            InvocationKind::Transparent | InvocationKind::Builtin | InvocationKind::Function => {
                Ok(())
            }
            _ if allowed => Ok(()),
            InvocationKind::UnseenCode(why) => Err(unseen(why)),
            InvocationKind::Program | InvocationKind::Runner => Err(Violation::NotAllowed {
                program: shown_program(inv, allow),
                allowed: self.allowed_text.clone(),
                location: location(),
            }),
        }
    }
}

/// The program as the message shows it: with the words an entry for it expected
/// (`systemctl restart` when `systemctl status` is allowed).
fn shown_program(inv: &Invocation, allow: &[Entry]) -> String {
    let words = allow
        .iter()
        .filter(|e| e.allows_program(inv))
        .map(|e| e.words.len())
        .max()
        .unwrap_or(0);
    let mut out = inv.program.clone();
    for arg in inv.args.iter().take(words) {
        out.push(' ');
        out.push_str(arg.as_deref().unwrap_or("…"));
    }
    snippet(&out, 60)
}
