use super::{allow_rule, deny_rule};
use crate::{CommandRule, CompiledRule, InvocationKind, RuleError, Violation, invocations};

/// Each must be denied under both the deny list and the allow list of the corpus.
const BYPASSES: &[&str] = &[
    // separators
    "ls; rm -rf /",
    "ls && rm x",
    "ls || rm x",
    "ls | rm x",
    "ls |& rm x",
    "ls\nrm x",
    "ls & rm x",
    "! rm x",
    "ls;rm x",
    "ls\r\nrm x",
    // quoting
    "r''m x",
    "r\"\"m x",
    "\"rm\" x",
    "'rm' x",
    "\\rm x",
    "r\\m x",
    "$'rm' x",
    "$'\\x72m' x",
    "$'\\162m' x",
    "$'rm\\0junk' x",
    "\"r\"'m'",
    "r\\\nm x",
    "$\"rm\" x",
    // substitution
    "echo $(rm x)",
    "echo `rm x`",
    "echo \"$(rm x)\"",
    "echo \"`rm x`\"",
    "cat <(rm x)",
    "ls >(rm x)",
    "$(echo rm) x",
    "`echo rm` x",
    "$CMD x",
    "${X:-rm} x",
    "\"$@\"",
    "echo $((1+$(rm x)))",
    "echo ${x:-$(rm x)}",
    "echo \"${x:-'$(rm x)'}\"",
    "echo $(echo $(echo $(rm x)))",
    "echo `echo \\`rm x\\``",
    // env assignments
    "X=1 rm x",
    "X=$(rm y) ls",
    "PATH=/tmp/evil ls",
    "LD_PRELOAD=/tmp/x.so ls",
    "export PATH=/tmp:$PATH; ls",
    "BASH_ENV=/tmp/x bash -c ls",
    "PS4='$(rm x)' bash -xc ls",
    // wrappers
    "env rm x",
    "env -i X=1 rm x",
    "env -u HOME rm x",
    "env -S 'rm x'",
    "env -- rm x",
    "nice -n 5 rm x",
    "nice -5 rm x",
    "timeout 5 rm x",
    "timeout -s KILL 5 rm x",
    "timeout --signal=KILL 5s rm x",
    "nohup rm x",
    "time rm x",
    "time -p rm x",
    "command rm x",
    "command -p rm x",
    "exec rm x",
    "exec -a foo rm x",
    "builtin eval 'rm x'",
    "stdbuf -oL rm x",
    "xargs rm",
    "xargs -0 -n1 rm",
    "xargs -I{} rm {}",
    "xargs -I % sh -c 'echo %'",
    "echo rm x | xargs -I{} sh -c '{}'",
    "echo x | xargs env",
    "xargs sh -c",
    "find . -exec rm {} \\;",
    "find . -execdir rm {} +",
    "find . -ok rm {} ';'",
    "find . -delete",
    "find . -exec {} \\;",
    "find . -exec sh -c 'rm \"$1\"' _ {} \\;",
    "sudo ls",
    "sudo rm x",
    "sudo -u root -- rm x",
    "doas rm x",
    "su -c 'rm x'",
    "su root -c 'rm x'",
    "bash -c 'rm x'",
    "sh -c \"rm x\"",
    "bash -lc 'rm x'",
    "bash -e -o pipefail -c 'rm x'",
    "zsh -c",
    "zsh -c 'rm x'",
    "dash -c 'rm x'",
    "bash -c \"$X\"",
    "sh -c \"ls $DIR\"",
    "bash -c 'bash -c \"rm x\"'",
    "eval 'rm x'",
    "eval rm x",
    "eval \"$X\"",
    ". ./script",
    "source script",
    "bash script.sh",
    "echo 'rm x' | sh",
    "sh <<< 'rm x'",
    "watch rm x",
    "watch -n 1 'ls; rm x'",
    "watch -x rm x",
    "flock /tmp/l rm x",
    "flock /tmp/l -c 'rm x'",
    "chroot / rm x",
    "ionice rm x",
    "ionice -c 3 rm x",
    "setsid rm x",
    "setsid -f rm x",
    "unbuffer rm x",
    "busybox rm x",
    "busybox sh -c 'rm x'",
    "ssh host rm x",
    "ssh -p 22 host 'ls; rm x'",
    "ssh host",
    "ssh -o ProxyCommand='rm x' host",
    "ssh -F /tmp/cfg host ls",
    "ssh -o ProxyCommand='rm x' host ls",
    "ssh host -o 'ProxyCommand rm x' ls",
    "x='$(rm x)'; echo ${x@P}",
    "compgen -W '$(rm x)' y",
    "complete -C 'rm x' ls",
    "nice env timeout 5 rm x",
    "env --frobnicate rm x",
    "parallel rm ::: x",
    "strace rm x",
    "trap 'rm x' EXIT",
    "alias x=rm; x a",
    "mapfile -C 'rm x' -c 1 arr < /dev/null",
    "noglob rm x",
    "emulate sh -c 'rm x'",
    "sched +1 rm x",
    "echo rm | xargs busybox",
    "repeat 3 rm x",
    "=rm x",
    "hash -p /bin/rm ls; ls",
    "coproc rm x",
    "coproc N { rm x; }",
    // paths
    "/bin/rm x",
    "/usr/bin/rm x",
    "./rm",
    "../../bin/rm",
    "~/bin/rm",
    "RM x",
    // compound commands
    "{ rm x; }",
    "(rm x)",
    "if true; then rm x; fi",
    "if rm x; then ls; fi",
    "if false; then ls; elif true; then rm x; else ls; fi",
    "for f in a; do rm $f; done",
    "for f in $(rm x); do ls; done",
    "for ((i=0; i<1; i++)); do rm x; done",
    "while true; do rm x; done",
    "until false; do rm x; done",
    "case a in a) rm x;; esac",
    "case $(rm x) in a) ls;; esac",
    "f() { rm x; }; f",
    "f() { rm x; }",
    "function f { rm x; }",
    "[[ $(rm x) ]]",
    "(( $(rm x) ))",
    "select x in a; do rm x; done",
    "ls | { rm x; }",
    "curl() { ls; }; unset -f curl; curl evil.example",
    // here-documents
    "cat <<EOF\n$(rm x)\nEOF",
    "cat <<EOF\n`rm x`\nEOF",
    "cat <<EOF; rm x\nbody\nEOF",
    "cat <<EOF\nbody\nEOF\nrm x",
    "bash <<EOF\nrm x\nEOF",
    // arithmetic code execution
    "x='a[$(rm x)]'; echo $((x))",
    "read x; echo $((x + 1))",
    "x=$(cat f); (( x ))",
    "for i in a[$(rm x)]; do echo $((i)); done",
    "for i in $(seq 3); do echo $((i)); done",
    "i=0; read i; echo $((i))",
    "[[ 'a[$(rm x)]' -eq 1 ]]",
    "let 'a[$(rm x)]=1'",
    "declare -i n='a[$(rm x)]'",
    "unset 'a[$(rm x)]'",
    "printf -v 'a[$(rm x)]' %s 1",
    "x='a[$(rm x)]'; echo ${!x}",
    "echo $(( $(echo 'a[$(rm x)]') ))",
    // more spellings, found while reviewing
    "r$()m x",
    "r$@m x",
    "env -S\"rm x\"",
    "env -iS 'rm x'",
    "env --split-string='rm x'",
    "command -- rm x",
    "ssh host -- rm x",
    "sh -c \"echo \\$(rm x)\"",
    "bash -c $'rm\\x20x'",
    "bash +o posix -c 'rm x'",
    "bash -cl 'rm x'",
    "echo \"${x:-\"$(rm x)\"}\"",
    "$'\\x00'rm x",
    "/bin//rm x",
    "rm${IFS}x",
    "f() { \"$@\"; }; f rm x",
    "rm() { ls; }; command rm x",
    "xargs -i rm {}",
    "watch -n1 -- rm x",
    "flock /tmp/l --command 'rm x'",
    "timeout -k 5 5 rm x",
    "xargs -a /dev/null -- rm",
    "bash -c 'f() { rm x; }'",
    "cat <<EOF | sh\nrm x\nEOF",
    "echo ${x/$(rm x)/}",
    ": $(rm x)",
    "ls <<< \"$(rm x)\"",
    "exec 3< <(rm x)",
    "ls >&$(rm x)",
    "eval \"rm\" x",
    "x=( $(rm x) )",
    "declare -a x=($(rm x))",
    "local x=$(rm x)",
    "nice --adjustment=3 rm",
    "sudo -s -- rm x",
    // arithmetic: array-assignment indexes, variables the shell sets from text, and
    // variables whose outside value names one set here (MACHTYPE is x86_64-pc-linux-gnu)
    "x='b[$(rm x)]'; a=([x]=1)",
    "x='b[$(rm x)]'; a=([$x]=1)",
    "x='b[$(rm x)]'; declare -a a=([x]=1)",
    ": 'a[$(rm x)]'; echo $((_))",
    "read <<< 'a[$(rm x)]'; echo $((REPLY))",
    "[[ 'a[$(rm x)]' =~ .* ]]; echo $((BASH_REMATCH))",
    "getopts a: o -a 'b[$(rm x)]'; echo $((OPTARG))",
    "pc='b[$(rm x)]'; echo $((MACHTYPE))",
    "pc=_; : 'b[$(rm x)]'; echo $((MACHTYPE))",
    "if false; then MACHTYPE=0; fi; pc='b[$(rm x)]'; echo $((MACHTYPE))",
    "for i in 1; do :; done; pc='b[$(rm x)]'; echo $((i)) $((MACHTYPE))",
    // variables that change what runs, set without `NAME=value`
    "BASH_CMDS[ls]=/tmp/x; ls",
    "shopt -s expand_aliases; BASH_ALIASES[ls]='rm x'\nls",
    "exec {BASH_ENV}>/dev/null; export BASH_ENV; bash -c ls",
    "((BASH_ENV = 7)); export BASH_ENV; bash -c ls",
    "coproc PATH { ls; }; ls",
    "declare -n r; r=PATH; r=/tmp/x; ls",
    "declare -n r=x; for r in PATH; do r=/tmp/x; done; ls",
    "SHELL=/tmp/x flock /tmp/l -c ls",
    "env -P /tmp/x ls",
    "cd /tmp/x; unset PATH; ls",
    "cd /tmp/x; env -u PATH bash -c ls",
    "x=0; unset x; pc='b[$(rm x)]'; echo $((${x:-pc}))",
    "x='b[$(rm x)]'; [[ -v c[x] ]]",
    "x='b[$(rm x)]'; test -v c[x]",
    "x='b[$(rm x)]'; unset c[x]",
    // shell options that change how later words or lines are read
    "set -k; bash -c ls BASH_ENV=/tmp/x",
    "set -o keyword; bash -c ls BASH_ENV=/tmp/x",
    "bash -kc 'bash -c ls BASH_ENV=/tmp/x'",
    "set -o history -H\necho '\";rm x;\"'\necho \"!!:1\"",
    "shopt -so history histexpand\necho '\";rm x;\"'\necho \"!!:1\"",
    "shopt -s expand_aliases\nalias x='r\\'\nx\nm -rf /tmp/x",
    // builtin options read as bash reads them
    "mapfile -C'rm x' -c1 a <<< x",
    "mapfile -tC 'rm x' -c1 a <<< x",
    "compgen -W'$(rm x)' y",
    "compgen -fW '$(rm x)' y",
    "compgen -C'rm x' y",
    // `${...}`: a plain `{` does not nest; quotes inside it within double quotes
    "echo ${x:-{}; rm x #}",
    "echo \"${x:-{}\"; rm x; \"}\"",
    "echo \"${x:-'}\" '$(rm x)' \"'}\"",
    // line continuations that join tokens
    "echo \"$\\\n(rm x)\"",
    "echo ${x:-$\\\n(rm x)}",
    "echo $((1+$\\\n(rm x)))",
    "cat <<EOF\n$\\\n(rm x)\nEOF",
    "cat <<\\\n-EOF\n\tEOF\nrm x\n-EOF",
    "cat <<EOF\nx\\\nEOF\necho '\nEOF\nrm x #'\n",
    "X\\\n=1 rm x",
    "PA\\\nTH=/tmp/x ls",
    "time -\\\np rm x",
    "x='a[$(rm x)]'; (\\\n(x))",
    "x='a[$(rm x)]'; echo $((x)\\\n)",
    "exec {BASH\\\n_ENV}>/dev/null; export BASH_ENV; bash -c ls",
    // bash before 4.0 (macOS /bin/bash, /bin/sh) ends `$(` at a `)` in a comment or body
    "echo $(true # ) ; rm x #\n)",
    "echo \"$(cat <<'EOF'\n)\"\nrm x\nEOF\n)\"",
    // runners and wrappers
    "ssh -o ' ProxyCommand=rm x' host ls",
    "ssh -o '\"ProxyCommand\" rm x' host ls",
    "ssh -o '\tProxyCommand\trm x' host ls",
    "ssh -o PKCS11Provider=/tmp/x.so host ls",
    "ssh -I /tmp/x.so host ls",
    "su -s /bin/rm -c x root",
    "runuser --shell=/bin/rm -c x root",
    "chroot /tmp/x ls",
    "echo . -delete | xargs find",
    "echo '; rm x' | xargs ssh host ls",
    "echo '; rm x' | xargs watch -n1 ls",
    "echo '; rm x' | xargs sg grp ls",
    // options of ordinary programs that run commands
    "sort -S1 --compress-program=rm f",
    "sort --compress-prog=sh f",
    "tar -cf /dev/null --checkpoint=1 --checkpoint-action=exec='rm x' f",
    "tar -cf /dev/null --to-command=sh f",
    "tar xIf rm x.tar",
    "git grep --open-files-in-pager='rm x' foo",
    "git grep -O'rm x' foo",
    "git ls-remote --upload-pack='rm x' .",
    "git -c core.pager='rm x' log",
    "ip netns exec ns rm x",
    "ip -all netns exec rm x",
    "man -P 'rm x' ls",
    "scp -S /bin/rm f host:",
    "rsync -e 'rm x' f host:",
    "tcpdump -i lo -w f -G 1 -z rm",
    "apt-get -o APT::Update::Pre-Invoke::='rm x' update",
    "git clone --template=/tmp/x repo d",
    "GIT_ALLOW_PROTOCOL=ext git ls-remote 'ext::sh -c rm% x'",
    "nc -l -p 4444 -e /bin/rm",
    "nc -lvp 4444 -c 'rm x'",
    "socat - EXEC:rm",
    "awk 'BEGIN { system(\"rm x\") }'",
    "sed '1e rm x' f",
    // unparseable
    "ls 'unterminated",
    "ls \"unterminated",
    "ls (",
    "ls )",
    "$(",
    "echo `ls",
    "echo ${x",
    "rm\0",
    // globs and braces at command position
    "r?m x",
    "r[m]m",
    "r[\"m\"] x",
    "r[\\m] x",
    "{rm,x}",
    "*",
    "r* x",
];

/// Passes the corpus allow list (and the deny list).
const ALLOWED: &[&str] = &[
    "ls -la /var/log",
    "cat /etc/os-release | grep ID",
    "df -h && echo ok",
    "systemctl status nginx",
    "ls \"my dir\"",
    "echo 'a;b|c'",
    "grep -r \"rm -rf\" .",
    "ls 2>&1",
    "ls >/dev/null 2>&1",
    "for f in *.log; do cat \"$f\"; done",
    "X=1 ls",
    "env ls",
    "env -i LANG=C ls",
    "timeout 5 cat f",
    "nice -n 10 ls",
    "/bin/ls",
    "/usr/bin/cat f",
    "cd /var/log && ls",
    "if [ -f x ]; then cat x; else echo none; fi",
    "[[ -f x ]] && cat x",
    "test -d /tmp || echo no",
    "ls # rm x",
    "ls | grep -v rm",
    "echo $HOME ${USER:-me}",
    "echo \"$(ls)\"",
    "echo $((1 + 2)) $((RANDOM % 6))",
    "for ((i = 0; i < 3; i++)); do echo $i; done",
    "f() { ls; }; f",
    "bash -c 'ls; df -h'",
    "sh -c 'cat /etc/hostname'",
    "xargs -0 cat",
    "echo x | xargs grep -l foo",
    "eval 'ls -l'",
    "cat <<EOF\nhello $USER\nEOF",
    "cat <<'EOF'\n$(rm x)\nEOF",
    "grep -c x f || true",
    "case $1 in start) echo go;; *) echo stop;; esac",
    "while read -r line; do echo \"$line\"; done < f",
    "ls; ls && ls || ls",
    "time ls",
    "command ls",
    "exec ls",
    "ls -l ~/x",
    "echo {a,b}",
    "cat *.txt",
    "watch -n 5 df -h",
    "echo 'x' | grep -q x",
    "(cd /tmp && ls)",
    "{ ls; df; }",
    "cat f | grep \"a|b\" | grep -v '^#'",
    "echo a\\;b",
    "X='a[$(rm x)]' ls",
    "echo ${x@Q} ${#x} ${x%%.*} ${x/a/b}",
    "i=0; while [ $i -lt 3 ]; do i=$((i + 1)); done; echo $i",
    "for i in 1 2 3; do echo $((i * 2)); done",
    "for i in {1..5}; do echo $((i * 2)); done",
    "n=${#x}; echo $((n + 1)); s=$?; echo $((s))",
    "count=0; for f in *.log; do count=$((count + 1)); done; echo $count",
    "x=$(cat f); i=0; for l in $x; do i=$((i + 1)); done; echo $((RANDOM % i))",
    "declare -A m=([k]=v); echo ${m[k]}",
    "echo \"${x//$'\\n'/ }\" \"${PATH//:/ }\"",
    "echo \"$(cat <<'EOF'\nhello\nEOF\n)\"",
    "ls | \\\n  grep x && \\\n  echo ok",
    "ls |\\\ngrep x",
    "cat <<EOF\nline \\\nmore\nEOF\n",
    "echo ab\\\ncd",
    "echo \"$(cat <<'EOF'\nfix(parser): don't crash\nEOF\n)\"",
    "x=$(ls # list files\n)",
];

/// Passes the corpus deny list.
const DENY_PASSES: &[&str] = &[
    "rmdir x",
    "echo rm",
    "grep rm file",
    "ls -la",
    "echo 'rm -rf /'",
    "cat rm",
    "ls | grep rm",
    "env ls",
    "python3 -c 'print(1)'",
    "/usr/bin/ls rm",
    "man rm",
    "which rm",
    "command -v rm",
    "systemctl restart nginx",
    "tar czf x.tgz dir",
    "curlx",
    "echo $((x + 1))",
    "./deploy.sh",
];

fn verdict(rule: &CompiledRule, command: &str) -> Result<(), Violation> {
    rule.check_command(command)
}

#[test]
fn bypasses_are_denied_under_both_lists() {
    let (deny, allow) = (deny_rule(), allow_rule());
    let mut failures = Vec::new();
    for command in BYPASSES {
        if verdict(&deny, command).is_ok() {
            failures.push(format!("deny list passed {command:?}"));
        }
        if verdict(&allow, command).is_ok() {
            failures.push(format!("allow list passed {command:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ordinary_commands_pass() {
    let (deny, allow) = (deny_rule(), allow_rule());
    let mut failures = Vec::new();
    for command in ALLOWED {
        if let Err(e) = verdict(&allow, command) {
            failures.push(format!("allow list denied {command:?}: {e}"));
        }
        if let Err(e) = verdict(&deny, command) {
            failures.push(format!("deny list denied {command:?}: {e}"));
        }
    }
    for command in DENY_PASSES {
        if let Err(e) = verdict(&deny, command) {
            failures.push(format!("deny list denied {command:?}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn allow_entries_match_strictly() {
    let allow = allow_rule();
    for command in [
        "if true; then f() { ls; }; fi; f",
        "(f() { ls; }); f",
        "f() { ls; }; unset -f f; f",
        "f; f() { ls; }",
        "f() { ls; }; env f",
        "/usr/bin//ls",
        "/usr/bin/./ls",
        "systemctl restart nginx",
        "systemctl --no-pager status nginx",
        "systemctl",
        "curl example.com",
        "python3 -c 'print(1)'",
        "./ls",
        "/tmp/ls",
        "~/ls",
        "find . -name x",
        "sudo ls",
        "ssh host ls",
        "kill 1",
        "printf x",
        "source venv/bin/activate",
        "alias ll='ls -l'",
    ] {
        assert!(allow.check_command(command).is_err(), "{command:?} passed");
    }
    let rule = CommandRule {
        allow_programs: Some(vec![
            "sudo".into(),
            "ls".into(),
            "find".into(),
            "/opt/app/bin/tool".into(),
        ]),
        ..CommandRule::default()
    }
    .compile()
    .expect("compiles");
    assert!(rule.check_command("sudo ls").is_ok());
    assert!(rule.check_command("sudo -u www-data ls /srv").is_ok());
    assert!(rule.check_command("sudo cat x").is_err());
    assert!(rule.check_command("sudo -s").is_err());
    assert!(rule.check_command("find . -name '*.log'").is_ok());
    assert!(rule.check_command("find . -exec ls {} +").is_ok());
    assert!(rule.check_command("find . -delete").is_err());
    assert!(rule.check_command("/opt/app/bin/tool --x").is_ok());
    assert!(rule.check_command("tool --x").is_err());
    assert!(rule.check_command("/opt/app/bin/../bin/tool").is_err());
}

#[test]
fn deny_entries_match_loosely() {
    let rule = CommandRule {
        deny_programs: vec!["git push".into()],
        ..CommandRule::default()
    }
    .compile()
    .expect("compiles");
    for command in [
        "git push",
        "git -C repo push origin",
        "/usr/bin/git push",
        "git $CMD",
        "env git push -f",
        "echo push | xargs git",
        "echo push | xargs -n1 git -C repo",
    ] {
        assert!(rule.check_command(command).is_err(), "{command:?} passed");
    }
    for command in [
        "git pull",
        "git log",
        "git commit -m 'push it'",
        "echo git push",
    ] {
        assert!(rule.check_command(command).is_ok(), "{command:?} denied");
    }
}

/// Programs an operator may allow as harmless, whose options can run other programs: the
/// program such an option names must be allowed too, and what cannot be seen is denied.
#[test]
fn options_that_run_programs_are_checked() {
    let rule = CommandRule {
        allow_programs: Some(
            [
                "find",
                "sort",
                "git log",
                "git grep",
                "tar",
                "ip",
                "man",
                "ls",
                "cat",
                "grep",
                "ssh",
                "head",
                "awk",
                "sed",
                "ps",
                "journalctl",
            ]
            .map(String::from)
            .to_vec(),
        ),
        ..CommandRule::default()
    }
    .compile()
    .expect("compiles");
    for command in [
        "echo . -exec rm x \\; | xargs find",
        "ls | xargs -n1 find",
        "sort -S1 --compress-program=sh f",
        "sort --compress-prog=rm f",
        "sort \"$f\"",
        "git grep -O'rm x' foo",
        "git grep --open-files-in-p='rm x' foo",
        "git -c alias.log='!rm x' log",
        "tar -tf x.tar --checkpoint=1 --checkpoint-action=exec='rm x'",
        "tar -tf x.tar --use-compress-program=sh",
        "tar -tIsh -f x.tar",
        "ip netns exec ns rm x",
        "ip -n ns netns exec ns rm x",
        "ip -batch cmds",
        "man -P 'rm x' ls",
        "man -Hrm ls",
        "ssh -o 'proxycommand rm x' host ls",
        "ssh -o '  ProxyCommand=rm x' host ls",
        "echo '; rm x' | xargs ssh host ls",
        "awk 'BEGIN { system(\"rm x\") }'",
        "awk '{ print | \"sh\" }' f",
        "awk '{ \"date\" | getline d }' f",
        "awk 'BEGIN { f = \"sys\" \"tem\"; @f(\"rm x\") }'",
        "awk -f x.awk f",
        "awk \"$p\" f",
        "sed '1e rm x' f",
        "sed 's/.*/rm x/e' f",
        "sed -n 'p;e rm x' f",
        "sed ':a;e rm x' f",
        "sed -f x.sed f",
        "sed \"$s\" f",
        "sed 's/a/b/' -e '1e rm x' f",
        "awk 'BEGIN { print \"system(\" }'",
        "find -files0-from list -exec sed -n p {} +",
    ] {
        assert!(rule.check_command(command).is_err(), "{command:?} passed");
    }
    for command in [
        "find /var/log -name '*.log' -mtime -1 | xargs ls -la",
        "sort -u f | head -5",
        "sort -t, -k2 -n f",
        "cat f | sort -rn | head",
        "git log --oneline -5",
        "git grep -n TODO -- src/",
        "tar -tzf x.tgz",
        "tar tzvf x.tgz",
        "ip -br addr show",
        "ip netns list",
        "man ls",
        "ssh host 'ls -la /var/log'",
        "ps aux | awk '{print $2}' | head",
        "awk -F: '$3 >= 1000 {print $1}' /etc/passwd",
        "awk '/ERROR|WARN/ {n++} END {print n + 0}' f",
        "awk '{ s += $2 } END { print s / NR }' f",
        "awk 'BEGIN { system(\"ls -l\") }'",
        "sed -n '1,10p' f",
        "sed -i.bak 's/foo/bar/g' f",
        "sed '/^#/d; /^$/d' f",
        "sed -E 's|([0-9]+)|<\\1>|g' f",
        "journalctl -u x --no-pager | awk '/systemd/ {print $5}'",
        "find . -name '*.conf' -exec sed -i 's/a/b/' {} +",
    ] {
        assert_eq!(rule.check_command(command), Ok(()), "{command:?}");
    }
}

#[test]
fn messages_are_short_and_clear() {
    let (deny, allow) = (deny_rule(), allow_rule());
    let message = |rule: &CompiledRule, command: &str| match rule.check_command(command) {
        Err(e) => e.to_string(),
        Ok(()) => panic!("{command:?} passed"),
    };
    assert_eq!(
        message(&deny, "ls; rm -rf /"),
        "`rm` is a denied program (command 2 of `ls; rm -rf /`)"
    );
    assert_eq!(message(&deny, "rm -rf /"), "`rm` is a denied program");
    assert_eq!(
        message(&allow, "curl example.com"),
        "`curl` is not an allowed program (allowed: ls, cat, df, systemctl status, echo, grep)"
    );
    assert_eq!(
        message(&allow, "systemctl restart nginx"),
        "`systemctl restart` is not an allowed program (allowed: ls, cat, df, systemctl status, echo, grep)"
    );
    assert_eq!(
        message(&deny, "ls 'oops"),
        "the command cannot be checked: unterminated single quote"
    );
    assert_eq!(
        message(&deny, "$(echo rm) x"),
        "the command cannot be checked: the program name is computed at run time (command 1 of `$(echo rm) x`)"
    );
    assert_eq!(
        message(&deny, "find . -delete"),
        "`rm` is a denied program (`find -delete`)"
    );
    assert_eq!(
        message(&deny, "bash -c 'ls; rm x'"),
        "`rm` is a denied program"
    );
    assert_eq!(
        message(&deny, "echo 'rm x' | bash"),
        "the command cannot be checked: `bash` runs a script file or standard input (command 2 of `echo 'rm x' | bash`)"
    );
    assert_eq!(
        message(&deny, "PATH=/tmp ls"),
        "setting `PATH` is not allowed: it can change which program runs"
    );
    let long = format!("ls; {}; rm x", "a".repeat(500));
    let m = message(&deny, &long);
    assert!(m.len() < 160, "{m}");
    assert!(
        m.starts_with("`rm` is a denied program (command 3 of `ls; aaaa"),
        "{m}"
    );
}

fn flags(substitution: bool, redirection: bool, background: bool, heredoc: bool) -> CompiledRule {
    CommandRule {
        deny_substitution: substitution,
        deny_redirection: redirection,
        deny_background: background,
        deny_heredoc: heredoc,
        ..CommandRule::default()
    }
    .compile()
    .expect("compiles")
}

#[test]
fn feature_flags() {
    let sub = flags(true, false, false, false);
    assert_eq!(
        sub.check_command("echo $(date)"),
        Err(Violation::Substitution)
    );
    assert_eq!(
        sub.check_command("echo $(date)").map_err(|e| e.to_string()),
        Err("command substitution is not allowed".into())
    );
    for command in [
        "echo `date`",
        "cat <(ls)",
        "ls >(cat)",
        "echo \"$(date)\"",
        "cat <<EOF\n$(date)\nEOF",
        "bash -c 'echo $(date)'",
    ] {
        assert_eq!(
            sub.check_command(command),
            Err(Violation::Substitution),
            "{command:?}"
        );
    }
    for command in [
        "echo '$(date)'",
        "echo \\$\\(date\\)",
        "echo $((1+2))",
        "echo ${x:-y}",
        "cat <<'EOF'\n$(date)\nEOF",
    ] {
        assert_eq!(sub.check_command(command), Ok(()), "{command:?}");
    }

    let redir = flags(false, true, false, false);
    for command in [
        "ls > f",
        "cat < f",
        "ls >> f",
        "ls &> f",
        "ls 2> err",
        "ls >| f",
        "ls > $F",
        "ls >&f",
        "exec 3>f",
        "{ ls; } > f",
        "bash -c 'ls > f'",
        "cat < <(ls)",
    ] {
        assert!(
            matches!(redir.check_command(command), Err(Violation::Redirection(_))),
            "{command:?}"
        );
    }
    for command in [
        "ls 2>&1",
        "ls >/dev/null 2>&1",
        "ls &>/dev/null",
        "ls >&2",
        "exec 3<&-",
        "cat <<EOF\nx\nEOF",
        "cat <<< x",
        "echo '>' f",
    ] {
        assert_eq!(redir.check_command(command), Ok(()), "{command:?}");
    }

    let bg = flags(false, false, true, false);
    for command in [
        "sleep 1 &",
        "sleep 1 & ls",
        "coproc sleep 1",
        "bash -c 'sleep 1 &'",
        "{ sleep 1 & }",
    ] {
        assert_eq!(
            bg.check_command(command),
            Err(Violation::Background),
            "{command:?}"
        );
    }
    for command in ["ls && ls", "ls 2>&1", "echo '&'", "ls &>/dev/null"] {
        assert_eq!(bg.check_command(command), Ok(()), "{command:?}");
    }

    let heredoc = flags(false, false, false, true);
    for command in [
        "cat <<EOF\nx\nEOF",
        "cat <<< x",
        "cat <<-EOF\n\tx\n\tEOF",
        "bash -c 'cat <<< x'",
    ] {
        assert_eq!(
            heredoc.check_command(command),
            Err(Violation::Heredoc),
            "{command:?}"
        );
    }
    assert_eq!(heredoc.check_command("echo '<<EOF'"), Ok(()));

    // Flags alone do not care which programs run, but still deny what cannot be checked.
    assert_eq!(redir.check_command("bash script.sh"), Ok(()));
    assert!(redir.check_command("eval \"$x\"").is_err());
    assert!(redir.check_command("ls 'oops").is_err());
}

#[test]
fn argv() {
    let (deny, allow) = (deny_rule(), allow_rule());
    let denied: &[&[&str]] = &[
        &["rm", "x"],
        &["/bin/rm"],
        &["env", "rm"],
        &["bash", "-c", "rm x"],
        &["sh", "-c", "ls; rm x"],
        &["sudo", "ls"],
        &["xargs", "rm"],
        &["rm\0", "x"],
    ];
    for argv in denied {
        assert!(deny.check_argv(argv).is_err(), "deny list passed {argv:?}");
        assert!(
            allow.check_argv(argv).is_err(),
            "allow list passed {argv:?}"
        );
    }
    for argv in [
        &["ls", "; rm x"][..],
        &["ls", "$(rm x)"],
        &["cat", "`rm x`"],
        &["env", "ls"],
        &["sh", "-c", "ls | grep x"],
    ] {
        assert_eq!(deny.check_argv(argv), Ok(()), "{argv:?}");
        assert_eq!(allow.check_argv(argv), Ok(()), "{argv:?}");
    }
    assert_eq!(
        deny.check_argv(&["bash", "-c", "ls; rm x"])
            .map_err(|e| e.to_string()),
        Err("`rm` is a denied program".into())
    );
    assert_eq!(deny.check_argv(&[]), Ok(()));
}

#[test]
fn rules_are_validated() {
    let compile = |allow: &[&str], deny: &[&str]| {
        CommandRule {
            allow_programs: (!allow.is_empty())
                .then(|| allow.iter().map(|s| s.to_string()).collect()),
            deny_programs: deny.iter().map(|s| s.to_string()).collect(),
            ..CommandRule::default()
        }
        .compile()
        .map(|_| ())
    };
    assert_eq!(
        compile(&["ls", "systemctl status"], &["git push", "/usr/bin/curl"]),
        Ok(())
    );
    assert_eq!(
        compile(&["ls", " "], &[]),
        Err(RuleError::EmptyEntry {
            list: "allow_programs",
            index: 1
        })
    );
    assert!(matches!(
        compile(&["ls; rm"], &[]),
        Err(RuleError::Metacharacter { found: ';', .. })
    ));
    assert!(matches!(
        compile(&[], &["r*"]),
        Err(RuleError::Metacharacter { found: '*', .. })
    ));
    assert!(matches!(
        compile(&["./ls"], &[]),
        Err(RuleError::BadPath { .. })
    ));
    assert!(matches!(
        compile(&["/usr/../bin/ls"], &[]),
        Err(RuleError::BadPath { .. })
    ));
    let empty = CommandRule {
        allow_programs: Some(vec![]),
        ..CommandRule::default()
    };
    assert_eq!(empty.compile().map(|_| ()), Err(RuleError::EmptyAllowList));
    let e = compile(&["ls|x"], &[]).unwrap_err().to_string();
    assert!(
        e.contains("`allow_programs` entry `ls|x` contains `|`"),
        "{e}"
    );
}

#[test]
fn invocations_are_listed() {
    let found =
        invocations("sudo -u root env X=1 nice rm -rf /tmp/x; ls | grep y").expect("checks");
    let names: Vec<_> = found
        .iter()
        .map(|i| (i.name.as_str(), i.kind, i.command))
        .collect();
    assert_eq!(
        names,
        vec![
            ("sudo", InvocationKind::Runner, 1),
            ("env", InvocationKind::Transparent, 1),
            ("nice", InvocationKind::Transparent, 1),
            ("rm", InvocationKind::Program, 1),
            ("ls", InvocationKind::Program, 2),
            ("grep", InvocationKind::Program, 3),
        ]
    );
    assert_eq!(
        found[3].args,
        vec![Some("-rf".into()), Some("/tmp/x".into())]
    );
    // A substitution runs before the command it is part of.
    let found = invocations("echo $(rm \"$x\")").expect("checks");
    assert_eq!(found[0].program, "rm");
    assert_eq!(found[0].args, vec![None]);
    assert_eq!(found[1].program, "echo");
    assert!(invocations("$CMD").is_err());
    let found = invocations("bash -c 'f() { ls; }; f'").expect("checks");
    assert_eq!(found.last().map(|i| i.kind), Some(InvocationKind::Function));
}
