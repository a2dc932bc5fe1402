//! Checks shell command strings (e.g. `ssh_exec`'s `command`) against an operator's rule of
//! which programs may run.
//!
//! Agents, and prompt-injected agents, try to get around such rules, so a command is parsed
//! with the POSIX shell grammar plus the bash extensions in common use, and every command
//! that could run is checked: each command of every list, pipeline and compound command,
//! command and process substitutions (also inside double quotes, `${...}`, arithmetic and
//! unquoted here-document bodies), and the commands that wrappers run (`env`, `sudo`,
//! `xargs`, `find -exec`, `sh -c '...'`, `eval`, `ssh host ...`, `watch`, ...). Quoting is
//! decoded as the shell decodes it: `r''m`, `\rm`, `"rm"`, `$'\x72m'` are all `rm`.
//!
//! **What cannot be checked is denied**: text that does not parse, input over 64 KiB or
//! nested deeper than 32 levels, a program name computed at run time (`$CMD`, `$(echo rm)`,
//! globs and brace expansion such as `r?m` or `{rm,x}`), shell code computed at run time
//! (`eval "$x"`, `sh -c "$x"`), unknown options of wrappers, a word computed at run time
//! among `find`'s arguments or a wrapper's options (it could be `-exec` or `-delete`), and
//! values bash evaluates as arithmetic after they were set from text, input or a command's
//! output (bash runs `$(...)` hidden in array subscripts: `x='a[$(id)]'; echo $((x))`).
//! That includes variables the shell sets from text (`_`, `REPLY`, `OPTARG`,
//! `BASH_REMATCH`, ...), indexes in array assignments (`a=([x]=1)`), and any variable whose
//! value comes from outside once the command sets one to such text (`MACHTYPE` is
//! `x86_64-pc-linux-gnu`, so `$((MACHTYPE))` evaluates a variable `pc`). Also denied: a
//! backslash-newline that joins operator characters (bash removes it before reading tokens:
//! `$\⏎(cmd)` is a command substitution, `<<\⏎-` is `<<-`), name references
//! (`declare -n`), `set -k` and history expansion (`set -H`), which change how later text
//! is read, an alias value ending in a backslash, and a `)` in a comment or here-document
//! inside `$(...)` (bash before 4.0, still macOS's `/bin/bash`, ends the substitution there).
//! The parser never panics.
//!
//! ```text
//! CommandRule --compile--> CompiledRule --check_command(&str) / check_argv(&[&str])--> Ok | Violation
//! parse(&str) -> Script (the syntax tree)     invocations(&str) -> [Invocation] (resolved programs)
//! ```
//!
//! # Decisions
//!
//! - **Allow lists** (`allow_programs`) are the control; **deny lists** are a speed bump.
//!   A deny list cannot be complete: `cp /bin/rm /tmp/x; /tmp/x` or an interpreter gets past
//!   it. Allow entries match strictly (bare name or system path `/usr/bin/ls`, never `./ls`;
//!   multi-word entries like `systemctl status` need exactly those leading words). Deny
//!   entries match loosely (any path, any letter case, entry words anywhere in order among
//!   the arguments, so `git push` also denies `git -C repo push` and `git log --grep push`).
//! - **Wrappers** `env`, `nice`, `timeout`, `nohup`, `time`, `command`, `exec`, `builtin`,
//!   `stdbuf`, `xargs`, `watch`, `flock`, `setsid`, `ionice`, `taskset`, `chrt`, `unbuffer`,
//!   `busybox`, `eval` and `sh -c`/`bash -c` (sh-family shells with a literal script) are
//!   transparent: an allow list need not name them. `sudo`, `doas`, `su`, `runuser`, `sg`,
//!   `pkexec`, `chroot` and `ssh` are programs in their own right: they must be allowed, and
//!   the command they run is checked too (`ssh host cmd`'s command as a shell string).
//! - **Code the checker cannot see** — a shell reading a script file or standard input
//!   (`bash x.sh`, `echo rm x | sh`), `source`/`.`, and runners such as `parallel`, `at`,
//!   `tmux`, `strace`, `nsenter`, other shell languages — is denied whenever the rule
//!   restricts programs, unless `allow_programs` names it (which then allows anything).
//! - **Interpreters** (`python`, `perl`, `ruby`, `node`, `php`, `lua`, ...) and many other
//!   programs can run arbitrary code (`less` then `!`, `vim`, `make`). The rule cannot see
//!   inside them. Operators must not put such programs in allow lists (see GTFOBins); under
//!   allow lists they are denied unless listed, the safe default. Deny lists do not stop
//!   them.
//! - **Options of ordinary programs** that operators tend to allow as harmless, but that run
//!   commands, are checked like wrappers (what they run must be allowed too) or denied when
//!   what they run cannot be seen: `sort --compress-program`, `tar --to-command`/
//!   `--checkpoint-action`/`-I`, `git -c`/`grep -O`/`--upload-pack`, `man -P`, `ip netns
//!   exec`, `scp`/`sftp -S`/`-o`, `rsync -e`, `tcpdump -z`, `wget --use-askpass`, `apt -o
//!   ...Invoke`, `awk` (`system("...")` with a literal command is checked; pipes to or from
//!   commands, `@` and program files are denied) and `sed` (`e command` is checked; `e`
//!   alone and `s///e` are denied). For these, a word computed at run time where an option
//!   could be is denied, and so are words appended by `xargs`.
//! - **Redirection** (`deny_redirection`): descriptor duplication/closing (`2>&1`, `>&2`,
//!   `<&-`) and `/dev/null`, `/dev/stdin`, `/dev/stdout`, `/dev/stderr` are allowed;
//!   any other file, or a target computed at run time, is denied. Here-documents fall under
//!   `deny_heredoc`, process substitution under `deny_substitution`. These flags are about
//!   shell syntax: `tee f` still writes a file.
//! - **`find -delete`** counts as running `rm` (besides `find` itself), so `rm` in a deny
//!   list stops it and an allow list needs both `find` and `rm`. `find -exec`/`-execdir`/
//!   `-ok` commands are checked; a command word holding `{}` is computed at run time.
//! - **Functions**: bodies are checked where they are defined. A call to a function is
//!   allowed by allow lists only if it was defined unconditionally (a top-level command of
//!   the same script) before the call, and nothing in the script could remove or shadow it
//!   (`unset`, `source`, `alias`); otherwise the name is checked as a program. Deny lists
//!   check function names like program names.
//! - **Aliases**: `alias` must be allowed by allow lists; each alias value is checked as a
//!   command string (so `alias x=rm` is denied when `rm` is).
//! - **Builtins** that cannot run or redirect to a program (`cd`, `true`, `test`, `export`,
//!   `read`, ...) are always allowed by allow lists (bare names only); `echo`, `printf`,
//!   `kill` and the like are programs. `trap`, `mapfile -C`, `complete -C` code and
//!   `compgen -W` word lists are checked; `${x@P}` (which runs code in the value of `x`)
//!   cannot be checked. Setting `PATH`, `LD_*`, `BASH_ENV`, `PS4`, `PAGER`, `GIT_SSH_COMMAND`,
//!   `SHELL`, `BASH_CMDS`, `BASH_ALIASES` and similar variables (or `hash -p`, `unset PATH`)
//!   is denied when the rule restricts programs: it changes which program runs. This covers
//!   every way bash sets a variable (`read`, `printf -v`, `for`, `{NAME}>file`,
//!   `((NAME = 1))`, `coproc NAME`, ...).
//! - A NUL character is denied (a C string would be cut there).
//!
//! # Not covered
//!
//! Commands that container and cluster CLIs run elsewhere (`docker exec`, `kubectl exec`),
//! code a program reads from files at run time (`./deploy.sh`, a Makefile, `~/.bashrc`
//! changed by an earlier call, a repository's `.git/config` with `core.fsmonitor`,
//! `~/.ssh/config`), programs with command-running options beyond the ones above, and shells whose grammar differs from POSIX/bash in ways not listed here (zsh glob
//! qualifiers and `${(e)...}` do not parse, so they are denied; zsh `=cmd` is resolved).
#![forbid(unsafe_code)]

pub mod ast;
mod check;
mod error;
mod parse;
mod rule;
mod word;
mod wrappers;

pub use ast::Script;
pub use check::{Invocation, InvocationKind};
pub use error::{Location, ParseError, RuleError, Unchecked, Violation};
pub use parse::{MAX_DEPTH, MAX_INPUT, parse};
pub use rule::{CommandRule, CompiledRule};

/// Every program `command` would run, in source order, after wrappers are resolved (a
/// wrapper and the command it runs are both listed). Fails with the first thing that cannot
/// be checked (e.g. a parse error or a program computed at run time).
pub fn invocations(command: &str) -> Result<Vec<Invocation>, Unchecked> {
    let mut out = Vec::new();
    for finding in check::analyze(command).findings {
        match finding {
            check::Finding::Invocation(inv) => out.push(inv),
            check::Finding::Unchecked(reason, _) => return Err(reason),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
