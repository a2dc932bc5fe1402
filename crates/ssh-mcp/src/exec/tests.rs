use super::*;

#[test]
fn script_changes_directory_and_exports_quoted_values_before_the_command() {
    let env = BTreeMap::from([("GREETING".to_owned(), "it's $(here)".to_owned())]);
    let s = script("echo \"$GREETING\"", Some("/srv/my app"), &env).unwrap();
    assert_eq!(
        s,
        "cd -- '/srv/my app' || exit 126\nexport GREETING='it'\\''s $(here)'\necho \"$GREETING\""
    );
}

#[test]
fn env_names_that_are_not_variables_are_refused() {
    let env = BTreeMap::from([("A;rm -rf /".to_owned(), "x".to_owned())]);
    assert!(matches!(
        script("true", None, &env),
        Err(ExecError::BadEnvName(_))
    ));
}

#[test]
fn the_pgid_marker_is_removed_and_reported_even_when_split_across_packets() {
    let mut f = MarkerFilter::new(false);
    let mut out = Vec::new();
    assert!(f.feed(b"[ssh-mcp:pg", &mut out).is_empty());
    assert_eq!(
        f.feed(b"id=4242]warning: x\n", &mut out),
        vec![Marker::Pgid(4242)]
    );
    // After the marker stderr passes through untouched, fake markers included.
    assert!(f.feed(b"[ssh-mcp:pgid=1]", &mut out).is_empty());
    assert_eq!(out, b"warning: x\n[ssh-mcp:pgid=1]");
}

#[test]
fn a_pgid_of_one_is_never_reported() {
    let mut f = MarkerFilter::new(false);
    let mut out = Vec::new();
    assert!(f.feed(b"[ssh-mcp:pgid=1]rest", &mut out).is_empty());
    assert_eq!(out, b"rest");
}

#[test]
fn sudo_markers_are_reported_in_order_and_removed() {
    let mut f = MarkerFilter::new(true);
    let mut out = Vec::new();
    let ev = f.feed(
        format!("[ssh-mcp:pgid=77]{SUDO_PROMPT}").as_bytes(),
        &mut out,
    );
    assert_eq!(ev, vec![Marker::Pgid(77), Marker::Prompt]);
    let ev = f.feed(format!("{SUDO_READY}real stderr").as_bytes(), &mut out);
    assert_eq!(ev, vec![Marker::Ready]);
    f.finish(&mut out);
    assert_eq!(out, b"real stderr");
}

#[test]
fn sudo_wrap_keeps_the_script_one_quoted_word() {
    let line = sudo_wrap("echo 'a b'; id");
    assert!(
        line.starts_with("sudo -S -p '[ssh-mcp:sudo-password]' -- sh -c "),
        "{line}"
    );
    assert!(line.ends_with(" sh 'echo '\\''a b'\\''; id'"), "{line}");
}

/// The wrappers are parsed by a real /bin/sh: the marker prints the shell's pid, then the command runs.
#[test]
fn the_pgid_marker_line_runs_in_a_real_shell() {
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(with_pgid_marker("echo ran"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"ran\n");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with(PGID_MARKER) && err.ends_with(']'), "{err}");
}
