//! Interactive sessions and tunnels against the in-process russh server: the PTY request, typing
//! and waiting, resize, the shell's exit, ownership by MCP client, caps, idle timeout, and a
//! local tunnel.

mod support;

use std::time::Duration;

use regex::Regex;
use support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use toolgate_ssh_mcp::SshMcp;
use toolgate_ssh_mcp::config::{Limits, Settings};
use toolgate_ssh_mcp::pty::{self, WaitEnd, WaitSpec};
use toolgate_ssh_mcp::sessions::{OwnerId, SessionError, StartRequest};
use toolgate_ssh_mcp::tunnels::{TunnelError, TunnelKind, TunnelRequest};

fn server_with(server: &TestServer, limits: Limits) -> SshMcp {
    SshMcp::new(Settings {
        known_hosts: server.known_hosts(),
        credentials: vec![server.credential("t")],
        limits,
        ..Settings::default()
    })
}

fn request() -> StartRequest {
    StartRequest {
        credential: "t".into(),
        cols: 100,
        rows: 20,
        term: "xterm-256color".into(),
    }
}

fn until(re: &str) -> WaitSpec {
    WaitSpec {
        regex: Some(Regex::new(re).unwrap()),
        max: Duration::from_secs(5),
        after_output: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_pty_session_types_waits_resizes_and_reports_the_exit() {
    let server = TestServer::start(31).await;
    let mcp = server_with(&server, Limits::default());
    let sessions = &mcp.state().sessions;
    let s = sessions.start(mcp.owner_id(), request()).await.unwrap();
    assert_eq!(
        server.seen.ptys.lock().unwrap().clone(),
        vec![("xterm-256color".to_owned(), 100, 20)]
    );
    let first = pty::wait(&s.term, &until(r"\$ $")).await;
    assert_eq!(first.reason, WaitEnd::Matched, "{first:?}");

    s.send(b"hello\r".to_vec()).await.unwrap();
    let out = pty::wait(&s.term, &until(r"(?m)^you said: hello$")).await;
    assert_eq!(out.reason, WaitEnd::Matched);
    let snap = s.term.with(|t| t.snapshot());
    assert_eq!(snap.lines, vec!["$ hello", "you said: hello", "$"]);
    assert_eq!((snap.cursor_row, snap.cursor_col), (2, 2));

    s.resize(132, 43).await.unwrap();
    assert_eq!(s.term.with(|t| t.size()), (132, 43));
    s.send(b"size\r".to_vec()).await.unwrap();
    let out = pty::wait(&s.term, &until(r"(?m)^\d+x\d+$")).await;
    assert_eq!(out.matched.as_deref(), Some("132x43"));

    // Output not read yet, escapes stripped, consumed once.
    let (new, _) = s.term.with(|t| t.take_new(true));
    assert!(
        new.contains("you said: hello\n") && new.ends_with("132x43\n$ "),
        "{new:?}"
    );
    assert_eq!(s.term.with(|t| t.take_new(true)).0, "");

    s.send(b"exit\r".to_vec()).await.unwrap();
    let out = pty::wait(&s.term, &until("never")).await;
    assert_eq!(out.reason, WaitEnd::Closed);
    assert_eq!(s.term.with(|t| t.exit_status()), Some(3));
    assert!(s.ended().unwrap().contains("status 3"));
    let late = s.send(b"ls\r".to_vec()).await.unwrap_err();
    assert!(matches!(late, SessionError::Ended { .. }), "{late}");
}

#[tokio::test]
async fn another_client_cannot_see_read_type_into_or_end_a_session() {
    let server = TestServer::start(32).await;
    let alice = server_with(&server, Limits::default());
    let bob = alice.for_new_client();
    assert_ne!(alice.owner_id(), bob.owner_id());
    let sessions = &alice.state().sessions;
    let s = sessions.start(alice.owner_id(), request()).await.unwrap();

    for owner in [bob.owner_id(), OwnerId(9999)] {
        let e = sessions.get(owner, &s.id).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "unknown session \"{}\" (ssh_session_list shows this client's sessions)",
                s.id
            )
        );
        assert!(sessions.list(owner).is_empty());
        assert!(matches!(
            sessions.end(owner, &s.id).await,
            Err(SessionError::Unknown(_))
        ));
    }
    // The same message as for an id that never existed: nothing leaks.
    let never = sessions
        .get(alice.owner_id(), "s-404")
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        never,
        "unknown session \"s-404\" (ssh_session_list shows this client's sessions)"
    );
    assert!(sessions.get(alice.owner_id(), &s.id).is_ok());
    assert_eq!(sessions.list(alice.owner_id()).len(), 1);
}

#[tokio::test]
async fn a_client_that_goes_away_takes_its_sessions_and_tunnels_with_it() {
    let server = TestServer::start(33).await;
    let alice = server_with(&server, Limits::default());
    let bob = alice.for_new_client();
    let state = alice.state().clone();
    let mine = state
        .sessions
        .start(alice.owner_id(), request())
        .await
        .unwrap();
    let theirs = state
        .sessions
        .start(bob.owner_id(), request())
        .await
        .unwrap();
    let tunnel = state
        .tunnels
        .start(
            bob.owner_id(),
            TunnelRequest {
                credential: state.credentials.get("t").unwrap(),
                kind: TunnelKind::Local,
                local_port: 0,
                remote_host: "127.0.0.1".into(),
                remote_port: 9,
            },
        )
        .await
        .unwrap();
    let port = tunnel.view().local_port;
    drop(bob);
    let out = pty::wait(&theirs.term, &until("never")).await;
    assert_eq!(out.reason, WaitEnd::Closed);
    assert_eq!(
        theirs.ended().as_deref(),
        Some("its MCP client disconnected")
    );
    assert!(mine.ended().is_none());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the tunnel of the departed client still listens"
    );
}

#[tokio::test]
async fn sessions_per_credential_are_capped_and_idle_ones_close() {
    let server = TestServer::start(34).await;
    let limits = Limits {
        pty_sessions_per_credential: 2,
        session_idle: Duration::from_millis(400),
        ..Limits::default()
    };
    let mcp = server_with(&server, limits);
    let sessions = &mcp.state().sessions;
    let owner = mcp.owner_id();
    let a = sessions.start(owner, request()).await.unwrap();
    let _b = sessions.start(owner, request()).await.unwrap();
    let e = sessions.start(owner, request()).await.err().unwrap();
    assert!(matches!(e, SessionError::Cap { limit: 2, .. }), "{e}");
    sessions.end(owner, &a.id).await.unwrap();
    let c = sessions.start(owner, request()).await.unwrap();

    // Used sessions stay open; one left alone closes after the idle time.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.touch();
    }
    assert!(c.ended().is_none());
    let out = pty::wait(&c.term, &until("never")).await;
    assert_eq!(out.reason, WaitEnd::Closed);
    assert!(
        c.ended().unwrap().contains("without use"),
        "{:?}",
        c.ended()
    );
}

#[tokio::test]
async fn a_local_tunnel_carries_bytes_through_direct_tcpip_and_stops() {
    let server = TestServer::start(35).await;
    let mcp = server_with(&server, Limits::default());
    let state = mcp.state();
    // A TCP echo service the "server" forwards to.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let tunnel = state
        .tunnels
        .start(
            mcp.owner_id(),
            TunnelRequest {
                credential: state.credentials.get("t").unwrap(),
                kind: TunnelKind::Local,
                local_port: 0,
                remote_host: "127.0.0.1".into(),
                remote_port: echo_port,
            },
        )
        .await
        .unwrap();
    let view = tunnel.view();
    assert_eq!(view.status, "active");
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", view.local_port))
        .await
        .unwrap();
    c.write_all(b"ping through the tunnel").await.unwrap();
    let mut buf = [0u8; 23];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping through the tunnel");
    assert_eq!(tunnel.view().connections, 1);

    let other = mcp.for_new_client();
    assert!(matches!(
        state.tunnels.stop(other.owner_id(), &view.tunnel_id).await,
        Err(TunnelError::Unknown(_))
    ));
    let stopped = state
        .tunnels
        .stop(mcp.owner_id(), &view.tunnel_id)
        .await
        .unwrap();
    assert_eq!(stopped.view().status, "ended");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", view.local_port))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn remote_tunnels_refuse_non_loopback_binds_unless_configured() {
    let server = TestServer::start(36).await;
    let mcp = server_with(&server, Limits::default());
    let state = mcp.state();
    let e = state
        .tunnels
        .start(
            mcp.owner_id(),
            TunnelRequest {
                credential: state.credentials.get("t").unwrap(),
                kind: TunnelKind::Remote,
                local_port: 8080,
                remote_host: "0.0.0.0".into(),
                remote_port: 9000,
            },
        )
        .await
        .err()
        .unwrap();
    let text = e.to_string();
    assert!(
        text.contains("loopback") && text.contains("remote_bind_addresses = [\"0.0.0.0\"]"),
        "{text}"
    );
}
