use super::*;

fn parse_str(text: &str) -> Result<Settings, ConfigError> {
    parse(text, Path::new("test.toml"))
}

#[test]
fn a_minimal_host_gets_the_documented_defaults() {
    let s =
        parse_str("[hosts.web]\nhost = \"10.0.0.5\"\nuser = \"deploy\"\nkey = \"/k\"\n").unwrap();
    let c = &s.credentials[0];
    assert_eq!(
        (c.name.as_str(), c.port, c.host_key.clone()),
        ("web", 22, HostKeyPolicy::Strict)
    );
    assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(s.limits.output_bytes, 64 * 1024);
    assert_eq!(s.default_host_key, HostKeyPolicy::Strict);
}

#[test]
fn an_unknown_key_is_refused_with_its_name() {
    let e =
        parse_str("[hosts.web]\nhost = \"h\"\nuser = \"u\"\nkey = \"/k\"\npasword_env = \"X\"\n")
            .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("pasword_env"), "{msg}");
}

#[test]
fn a_host_without_any_auth_method_is_refused_naming_the_table() {
    let e = parse_str("[hosts.web]\nhost = \"h\"\nuser = \"u\"\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("`hosts.web`: no way to authenticate"),
        "{e}"
    );
}

#[test]
fn a_bad_host_key_policy_names_the_key() {
    let e =
        parse_str("[hosts.web]\nhost = \"h\"\nuser = \"u\"\nagent = true\nhost_key = \"yes\"\n")
            .unwrap_err();
    assert!(e.to_string().contains("`hosts.web.host_key`"), "{e}");
}

#[test]
fn a_pinned_fingerprint_is_accepted() {
    let fp = "SHA256:RXYuFEJJtGF1leoCs9BF4TRb2t+j0QcZz1pTNssUS0w";
    let s = parse_str(&format!(
        "[hosts.w]\nhost = \"h\"\nuser = \"u\"\nagent = true\nhost_key = \"{fp}\"\n"
    ))
    .unwrap();
    assert_eq!(s.credentials[0].host_key, HostKeyPolicy::Pinned(fp.into()));
}

#[test]
fn a_jump_to_nowhere_and_a_jump_loop_are_refused() {
    let e = parse_str("[hosts.a]\nhost = \"h\"\nuser = \"u\"\nagent = true\njump = \"b\"\n")
        .unwrap_err();
    assert!(e.to_string().contains("`hosts.a.jump`"), "{e}");
    let e = parse_str(
        "[hosts.a]\nhost = \"h\"\nuser = \"u\"\nagent = true\njump = \"b\"\n[hosts.b]\nhost = \"h\"\nuser = \"u\"\nagent = true\njump = \"a\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("loop"), "{e}");
}

#[test]
fn a_secret_in_an_env_field_is_refused_as_not_a_variable_name() {
    let e = parse_str("[hosts.a]\nhost = \"h\"\nuser = \"u\"\npassword_env = \"hunter2 !\"\n")
        .unwrap_err();
    assert!(e.to_string().contains("`hosts.a.password_env`"), "{e}");
}

#[test]
fn limits_are_checked() {
    let e = parse_str("[limits]\noutput_bytes = 0\n").unwrap_err();
    assert!(e.to_string().contains("`limits.output_bytes`"), "{e}");
    let e = parse_str("[limits]\noutput_bytes = 100\nkeep_output_bytes = 10\n").unwrap_err();
    assert!(e.to_string().contains("`limits.keep_output_bytes`"), "{e}");
    let e = parse_str("[hosts.a]\nhost = \"h\"\nuser = \"u\"\nagent = true\nport = 70000\n")
        .unwrap_err();
    assert!(e.to_string().contains("port"), "{e}");
}

#[test]
fn session_copy_and_tunnel_settings_are_read_and_checked() {
    let s = parse_str(
        "copy_local_dirs = [\"/srv/inbox\"]\n[limits]\nsession_idle_secs = 60\npty_sessions_per_credential = 2\n\
         session_scrollback_lines = 0\ncopy_max_bytes = 1000\ntunnels_max = 3\n\
         [hosts.web]\nhost = \"h\"\nuser = \"u\"\nkey = \"/k\"\nremote_bind_addresses = [\"0.0.0.0\"]\n",
    )
    .unwrap();
    assert_eq!(s.limits.session_idle, Duration::from_secs(60));
    assert_eq!(s.limits.pty_sessions_per_credential, 2);
    assert_eq!(s.limits.session_scrollback_lines, 0);
    assert_eq!((s.limits.copy_max_bytes, s.limits.tunnels_max), (1000, 3));
    assert_eq!(s.copy_local_dirs, Some(vec![PathBuf::from("/srv/inbox")]));
    assert_eq!(s.credentials[0].remote_bind, vec!["0.0.0.0".to_owned()]);
    let d = Settings::default();
    assert_eq!(d.limits.session_scrollback_lines, 2000);
    assert_eq!(d.copy_local_dirs, None);

    let cases = [
        (
            "[limits]\npty_sessions_per_credential = 8\n",
            "limits.pty_sessions_per_credential",
        ),
        (
            "[limits]\nsession_idle_secs = 0\n",
            "limits.session_idle_secs",
        ),
        (
            "copy_local_dirs = [\"relative/dir\"]\n",
            "copy_local_dirs[0]",
        ),
        (
            "[hosts.web]\nhost = \"h\"\nuser = \"u\"\nkey = \"/k\"\nremote_bind_addresses = [\"a b\"]\n",
            "hosts.web.remote_bind_addresses",
        ),
    ];
    for (text, key) in cases {
        let msg = parse_str(text).unwrap_err().to_string();
        assert!(msg.contains(&format!("`{key}`")), "{text}: {msg}");
    }
}
