//! The client side against an in-process russh server: authentication, host keys, exec semantics,
//! dropped connections, the pool, jump hosts. Each test starts its own server on 127.0.0.1.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::{PASSWORD, TestServer, temp_dir};
use toolgate_ssh_mcp::connection::{ConnectError, ConnectOptions};
use toolgate_ssh_mcp::credentials::{Credential, CredentialStore};
use toolgate_ssh_mcp::exec::{self, Ending, ExecOptions, ExecOutcome, ExecRequest, Exit};
use toolgate_ssh_mcp::host_keys::{HostKeyPolicy, KnownHosts, fingerprint};
use toolgate_ssh_mcp::pool::{Pool, PoolError};

fn pool(credentials: Vec<Credential>, known_hosts: &Path) -> Pool {
    Pool::new(
        Arc::new(CredentialStore::new(credentials)),
        Arc::new(KnownHosts::new(known_hosts)),
        ConnectOptions {
            keepalive: Duration::from_secs(15),
        },
        4,
    )
}

fn options() -> ExecOptions {
    ExecOptions {
        keep_bytes: 1 << 20,
        tail_bytes: 1024,
        kill_grace: Duration::from_millis(300),
        progress_interval: Duration::from_millis(100),
    }
}

async fn run_with(
    pool: &Pool,
    name: &str,
    command: &str,
    stdin: Option<&str>,
    timeout: Duration,
    cancel: impl std::future::Future<Output = ()>,
) -> ExecOutcome {
    let (lease, channel) = pool.open_session(name).await.expect("session");
    let request = ExecRequest {
        command: command.into(),
        stdin: stdin.map(|s| s.as_bytes().to_vec()),
        timeout,
        sudo: false,
        sudo_password: None,
    };
    exec::run(
        channel,
        Some(lease.connection.clone()),
        request,
        &options(),
        cancel,
        |_| {},
    )
    .await
    .expect("exec")
}

async fn run_sudo(pool: &Pool, password: Option<&str>, stdin: &str) -> ExecOutcome {
    let (lease, channel) = pool.open_session("t").await.expect("session");
    let request = ExecRequest {
        command: exec::sudo_wrap("cat"),
        stdin: Some(stdin.as_bytes().to_vec()),
        timeout: Duration::from_secs(5),
        sudo: true,
        sudo_password: password.map(str::to_owned),
    };
    exec::run(
        channel,
        Some(lease.connection.clone()),
        request,
        &options(),
        std::future::pending(),
        |_| {},
    )
    .await
    .expect("exec")
}

async fn run(pool: &Pool, name: &str, command: &str, stdin: Option<&str>) -> ExecOutcome {
    run_with(
        pool,
        name,
        command,
        stdin,
        Duration::from_secs(5),
        std::future::pending(),
    )
    .await
}

fn connect_error(e: PoolError) -> ConnectError {
    match e {
        PoolError::Connect(c) => c,
        other => panic!("expected a connect error, got {other}"),
    }
}

#[tokio::test]
async fn exec_reports_exit_code_stdout_and_stderr() {
    let server = TestServer::start(1).await;
    let pool = pool(vec![server.credential("t")], &server.known_hosts());
    let out = run(&pool, "t", "hello", None).await;
    assert_eq!(out.exit, Some(Exit::Code(7)));
    assert_eq!(out.ending, Ending::Exited);
    assert_eq!(out.stdout.kept(), b"hello\n");
    assert_eq!(out.stderr.kept(), b"warn\n");
}

#[tokio::test]
async fn stdin_is_sent_then_closed_and_a_reader_without_stdin_gets_end_of_input() {
    let server = TestServer::start(2).await;
    let pool = pool(vec![server.credential("t")], &server.known_hosts());
    let out = run(&pool, "t", "cat", Some("line one\nline two")).await;
    assert_eq!(out.stdout.kept(), b"line one\nline two");
    assert_eq!(out.exit, Some(Exit::Code(0)));
    let started = Instant::now();
    let out = run(&pool, "t", "cat", None).await;
    assert_eq!((out.exit, out.stdout.total()), (Some(Exit::Code(0)), 0));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "cat without stdin must not wait for the timeout"
    );
}

#[tokio::test]
async fn a_timeout_signals_the_command_and_reports_that_it_stopped() {
    let server = TestServer::start(3).await;
    let pool = pool(vec![server.credential("t")], &server.known_hosts());
    let out = run_with(
        &pool,
        "t",
        "sleep",
        None,
        Duration::from_millis(200),
        std::future::pending(),
    )
    .await;
    assert_eq!(out.ending, Ending::TimedOut);
    assert_eq!(out.stopped, Some(true));
    assert_eq!(
        out.exit,
        Some(Exit::Signal {
            name: "TERM".into(),
            core_dumped: false
        })
    );
    assert_eq!(*server.seen.signals.lock().unwrap(), vec!["TERM"]);
}

#[tokio::test]
async fn a_command_that_ignores_signals_gets_kill_and_is_reported_as_not_stopped() {
    let server = TestServer::start(4).await;
    let pool = pool(vec![server.credential("t")], &server.known_hosts());
    let out = run_with(
        &pool,
        "t",
        "ignore-signals",
        None,
        Duration::from_millis(100),
        std::future::pending(),
    )
    .await;
    assert_eq!(out.ending, Ending::TimedOut);
    assert_eq!(out.stopped, Some(false));
    assert_eq!(*server.seen.signals.lock().unwrap(), vec!["TERM", "KILL"]);
}

#[tokio::test]
async fn cancellation_signals_the_command() {
    let server = TestServer::start(5).await;
    let pool = pool(vec![server.credential("t")], &server.known_hosts());
    let cancel = tokio::time::sleep(Duration::from_millis(150));
    let out = run_with(&pool, "t", "sleep", None, Duration::from_secs(30), cancel).await;
    assert_eq!(out.ending, Ending::Cancelled);
    assert_eq!(out.stopped, Some(true));
    assert!(out.duration < Duration::from_secs(5));
}

#[tokio::test]
async fn a_disconnect_mid_command_is_reported_as_a_lost_connection() {
    let server = TestServer::start(6).await;
    let pool = pool(vec![server.credential("t")], &server.known_hosts());
    let out = run(&pool, "t", "drop", None).await;
    assert_eq!(out.ending, Ending::ConnectionLost);
    assert_eq!(out.exit, None);
}

#[tokio::test]
async fn the_pool_reuses_one_connection_and_reconnects_after_the_server_dropped_it() {
    let server = TestServer::start(7).await;
    let pool = pool(vec![server.credential("t")], &server.known_hosts());
    for _ in 0..3 {
        assert_eq!(
            run(&pool, "t", "hello", None).await.exit,
            Some(Exit::Code(7))
        );
    }
    assert_eq!(
        server.seen.connections.load(Ordering::SeqCst),
        1,
        "one pooled connection"
    );

    server.drop_connections().await;
    // No wait: the pool may still hold the dead connection and must retry on a new one.
    assert_eq!(
        run(&pool, "t", "hello", None).await.exit,
        Some(Exit::Code(7))
    );
    assert_eq!(server.seen.connections.load(Ordering::SeqCst), 2);

    // A command that kills the connection: the next call reconnects.
    assert_eq!(
        run(&pool, "t", "drop", None).await.ending,
        Ending::ConnectionLost
    );
    assert_eq!(
        run(&pool, "t", "hello", None).await.exit,
        Some(Exit::Code(7))
    );
    assert_eq!(server.seen.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_key_the_server_does_not_accept_fails_with_what_was_tried() {
    let server = TestServer::start(8).await;
    let mut credential = server.credential("t");
    let other = temp_dir("otherkey").join("id");
    std::fs::write(
        &other,
        support::key(200)
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    credential.keys = vec![other.clone(), "/nonexistent/key".into()];
    let pool = pool(vec![credential], &server.known_hosts());
    let e = connect_error(pool.connection("t").await.unwrap_err());
    let msg = e.to_string();
    assert!(matches!(e, ConnectError::Auth(_)), "{msg}");
    assert!(
        msg.contains("authentication failed for tester@127.0.0.1"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("key {} (rejected)", other.display())),
        "{msg}"
    );
    assert!(msg.contains("key /nonexistent/key (cannot load"), "{msg}");
    assert!(msg.contains("publickey"), "{msg}");
}

#[tokio::test]
async fn a_password_from_the_environment_authenticates_and_a_missing_one_is_reported() {
    let server = TestServer::start(9).await;
    assert_eq!(
        std::env::var("CARGO_MANIFEST_DIR").as_deref(),
        Ok(PASSWORD),
        "run under cargo test"
    );
    let mut good = server.credential("good");
    good.keys.clear();
    good.password_env = Some("CARGO_MANIFEST_DIR".into());
    let mut bad = good.clone();
    bad.name = "bad".into();
    bad.password_env = Some("SSH_MCP_IT_UNSET_PASSWORD".into());
    let pool = pool(vec![good, bad], &server.known_hosts());
    assert_eq!(
        run(&pool, "good", "hello", None).await.exit,
        Some(Exit::Code(7))
    );
    let msg = connect_error(pool.connection("bad").await.unwrap_err()).to_string();
    assert!(
        msg.contains("password (environment variable SSH_MCP_IT_UNSET_PASSWORD is not set)"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_unknown_host_under_strict_is_refused_with_its_fingerprint() {
    let server = TestServer::start(10).await;
    let known_hosts = temp_dir("empty").join("known_hosts");
    let pool = pool(vec![server.credential("t")], &known_hosts);
    let msg = connect_error(pool.connection("t").await.unwrap_err()).to_string();
    assert!(msg.contains("is not known"), "{msg}");
    assert!(
        msg.contains(&fingerprint(server.host_key.public_key())),
        "{msg}"
    );
    assert!(msg.contains(server.known_hosts_line().trim_end()), "{msg}");
    assert_eq!(server.seen.commands.lock().unwrap().len(), 0);
}

#[tokio::test]
async fn a_changed_host_key_is_refused_even_under_accept_new() {
    let server = TestServer::start(11).await;
    let known_hosts = temp_dir("changed").join("known_hosts");
    let impostor = support::key(99);
    std::fs::write(
        &known_hosts,
        format!(
            "[127.0.0.1]:{} {}\n",
            server.port(),
            impostor.public_key().to_openssh().unwrap()
        ),
    )
    .unwrap();
    let mut credential = server.credential("t");
    credential.host_key = HostKeyPolicy::AcceptNew;
    let pool = pool(vec![credential], &known_hosts);
    let msg = connect_error(pool.connection("t").await.unwrap_err()).to_string();
    assert!(msg.contains("HOST KEY CHANGED"), "{msg}");
    assert!(
        msg.contains(&fingerprint(server.host_key.public_key())),
        "{msg}"
    );
}

#[tokio::test]
async fn accept_new_records_the_key_and_strict_accepts_it_afterwards() {
    let server = TestServer::start(12).await;
    let known_hosts = temp_dir("accept").join("known_hosts");
    let mut credential = server.credential("t");
    credential.host_key = HostKeyPolicy::AcceptNew;
    let first = pool(vec![credential], &known_hosts);
    assert_eq!(
        run(&first, "t", "hello", None).await.exit,
        Some(Exit::Code(7))
    );
    assert_eq!(
        std::fs::read_to_string(&known_hosts).unwrap(),
        server.known_hosts_line()
    );
    let strict = pool(vec![server.credential("t")], &known_hosts);
    assert_eq!(
        run(&strict, "t", "hello", None).await.exit,
        Some(Exit::Code(7))
    );
}

#[tokio::test]
async fn a_pinned_fingerprint_needs_no_known_hosts_and_a_wrong_pin_is_refused() {
    let server = TestServer::start(13).await;
    let known_hosts = temp_dir("pin").join("known_hosts");
    let mut pinned = server.credential("pinned");
    pinned.host_key = HostKeyPolicy::Pinned(fingerprint(server.host_key.public_key()));
    let mut wrong = server.credential("wrong");
    wrong.host_key = HostKeyPolicy::Pinned(fingerprint(support::key(77).public_key()));
    let pool = pool(vec![pinned, wrong], &known_hosts);
    assert_eq!(
        run(&pool, "pinned", "hello", None).await.exit,
        Some(Exit::Code(7))
    );
    let msg = connect_error(pool.connection("wrong").await.unwrap_err()).to_string();
    assert!(
        msg.contains("does not match the pinned fingerprint"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_jump_host_carries_the_connection_over_direct_tcpip() {
    let bastion = TestServer::start(14).await;
    let target = TestServer::start(15).await;
    let known_hosts = temp_dir("jump").join("known_hosts");
    std::fs::write(
        &known_hosts,
        bastion.known_hosts_line() + &target.known_hosts_line(),
    )
    .unwrap();
    let mut inner = target.credential("inner");
    inner.jump = Some("bastion".into());
    let pool = pool(vec![bastion.credential("bastion"), inner], &known_hosts);
    assert_eq!(
        run(&pool, "inner", "hello", None).await.exit,
        Some(Exit::Code(7))
    );
    assert_eq!(
        bastion.seen.commands.lock().unwrap().len(),
        0,
        "nothing ran on the bastion"
    );
    assert_eq!(*target.seen.commands.lock().unwrap(), vec!["hello"]);
}

#[tokio::test]
async fn connecting_to_a_port_nobody_listens_on_says_so() {
    let server = TestServer::start(16).await;
    let mut credential = server.credential("t");
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    credential.port = free;
    let pool = pool(vec![credential], &server.known_hosts());
    let msg = connect_error(pool.connection("t").await.unwrap_err()).to_string();
    assert!(
        msg.contains(&format!("cannot reach 127.0.0.1:{free}")),
        "{msg}"
    );
}

#[tokio::test]
async fn sudo_gets_the_password_on_stdin_only_when_it_asks_and_the_command_gets_its_own_stdin() {
    let server = TestServer::start(17).await;
    let pool = pool(vec![server.credential("t")], &server.known_hosts());
    let out = run_sudo(&pool, Some(PASSWORD), "the command's own input").await;
    assert_eq!(
        out.ending,
        Ending::Exited,
        "{out:?} {:?}",
        server.seen.commands.lock().unwrap()
    );
    assert_eq!(
        out.stdout.kept(),
        b"the command's own input",
        "the password never reaches the command"
    );
    assert_eq!(out.stderr.kept(), b"", "markers are removed from stderr");
    let commands = server.seen.commands.lock().unwrap().clone();
    assert!(
        commands.iter().all(|c| !c.contains(PASSWORD)),
        "the password was on a command line: {commands:?}"
    );

    let wrong = run_sudo(&pool, Some("wrong"), "x").await;
    assert_eq!(
        wrong.ending,
        Ending::SudoFailed("sudo rejected the password".into())
    );
    assert!(wrong.stdout.kept().is_empty());
    let none = run_sudo(&pool, None, "x").await;
    assert!(
        matches!(none.ending, Ending::SudoFailed(ref m) if m.contains("has none")),
        "{:?}",
        none.ending
    );
}
