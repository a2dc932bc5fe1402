use super::*;

const TEXT: &str = "
# comment
Host web web-alias
    HostName 10.0.0.5
    User deploy
    Port 2222
    IdentityFile ~/.ssh/web_key

Host db
    HostName db.internal
    ProxyJump web

Host inner
    HostName 10.1.0.9
    ProxyJump admin@bastion.example:2200

Host *.internal db
    User dbadmin
    IdentityFile /keys/db

Host *
    User fallback
    StrictHostKeyChecking accept-new
";

fn by_name<'a>(all: &'a [Credential], name: &str) -> &'a Credential {
    all.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{name} not imported: {all:?}"))
}

#[test]
fn concrete_aliases_are_imported_with_first_value_wins() {
    let all = import_text(TEXT, &HostKeyPolicy::Strict);
    let web = by_name(&all, "web");
    assert_eq!(
        (web.host.as_str(), web.port, web.user.as_str()),
        ("10.0.0.5", 2222, "deploy")
    );
    assert!(web.keys[0].ends_with(".ssh/web_key"), "{:?}", web.keys);
    assert_eq!(web.host_key, HostKeyPolicy::AcceptNew);
    assert_eq!(by_name(&all, "web-alias").host, "10.0.0.5");
    let db = by_name(&all, "db");
    assert_eq!(
        (db.host.as_str(), db.user.as_str()),
        ("db.internal", "dbadmin")
    );
    assert_eq!(db.keys, vec![std::path::PathBuf::from("/keys/db")]);
    assert_eq!(db.jump.as_deref(), Some("web"));
    assert!(!all.iter().any(|c| c.name.contains('*')));
}

#[test]
fn a_proxyjump_hop_that_is_no_alias_becomes_its_own_credential() {
    let all = import_text(TEXT, &HostKeyPolicy::Strict);
    let inner = by_name(&all, "inner");
    assert_eq!(inner.jump.as_deref(), Some("admin@bastion.example:2200"));
    let hop = by_name(&all, "admin@bastion.example:2200");
    assert_eq!(
        (hop.host.as_str(), hop.port, hop.user.as_str()),
        ("bastion.example", 2200, "admin")
    );
}

#[test]
fn glob_patterns_match_like_openssh() {
    assert!(glob(b"*.internal", b"db.internal"));
    assert!(glob(b"web?", b"web1"));
    assert!(!glob(b"web?", b"web"));
    let block = Block {
        patterns: vec!["*".into(), "!secret".into()],
        never: false,
        options: vec![],
    };
    assert!(applies(&block, "web"));
    assert!(!applies(&block, "secret"));
}
