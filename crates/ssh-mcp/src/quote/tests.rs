use super::*;
use proptest::prelude::*;
use std::process::Command;

/// Runs the quoted line through a real local `/bin/sh` that prints each argument it received
/// followed by NUL, so the test sees exactly the words the shell parsed.
fn parse_with_sh(words: &[String]) -> Vec<String> {
    let line = join_argv(words).expect("quotable");
    let script = format!("printf '%s\\0' {line}");
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("run /bin/sh");
    assert!(out.status.success(), "sh failed on {script:?}: {out:?}");
    let mut parsed: Vec<String> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .split('\0')
        .map(str::to_owned)
        .collect();
    parsed.pop(); // the empty string after the last NUL
    parsed
}

#[test]
fn plain_words_stay_bare_and_others_are_single_quoted() {
    assert_eq!(quote("ls"), "ls");
    assert_eq!(quote("/var/log/syslog"), "/var/log/syslog");
    assert_eq!(quote(""), "''");
    assert_eq!(quote("a b"), "'a b'");
    assert_eq!(quote("it's"), "'it'\\''s'");
    assert_eq!(quote("$(id)"), "'$(id)'");
}

#[test]
fn injection_attempts_arrive_as_literal_words() {
    let words: Vec<String> = [
        "; touch /tmp/x",
        "$(touch /tmp/x)",
        "`touch /tmp/x`",
        "' ; touch /tmp/x ; '",
        "\"; touch /tmp/x\"",
        "a\ntouch /tmp/x",
        "*",
        "~",
        "&& echo",
        "| cat",
        "> /tmp/x",
        "\\",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(parse_with_sh(&words), words);
}

#[test]
fn nul_and_empty_arrays_are_refused() {
    assert_eq!(join_argv(&[]), Err(QuoteError::Empty));
    assert_eq!(
        join_argv(&["echo".into(), "a\0b".into()]),
        Err(QuoteError::Nul { index: 1 })
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any words (any Unicode but NUL) survive quoting and a real shell's parse unchanged.
    #[test]
    fn random_words_round_trip_through_a_real_shell(words in prop::collection::vec("[^\\x00]{0,12}", 1..6)) {
        prop_assert_eq!(parse_with_sh(&words), words);
    }

    /// Words drawn from shell metacharacters only, where a quoting bug would show first.
    #[test]
    fn metacharacter_words_round_trip(words in prop::collection::vec("[ '\"`$;&|<>(){}\\\\\n\t*?~#!=%-]{0,10}", 1..6)) {
        prop_assert_eq!(parse_with_sh(&words), words);
    }
}
