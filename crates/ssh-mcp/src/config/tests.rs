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
