//! An in-process SSH server (russh's `server` module) with a tiny fake "shell", for fast tests of
//! the client side: authentication, host keys, exec, signals, dropped connections, jump hosts.
//!
//! Commands it understands (the text after ssh-mcp's first marker line):
//! - `hello`: prints `hello\n` on stdout and `warn\n` on stderr, exits 7;
//! - `cat`: echoes stdin, exits 0 at end-of-input;
//! - `sleep`: waits for a signal, then reports exit-signal with it;
//! - `ignore-signals`: waits forever, only records signals;
//! - `drop`: the server drops the whole connection;
//! - a PTY shell (`pty-req` + `shell`): prints `$ `, echoes what is typed, and on Enter answers
//!   `size` with the PTY size (`COLSxROWS`), `exit` by exiting with status 3, anything else with
//!   `you said: LINE`;
//! - `sudo -S -p '[ssh-mcp:sudo-password]' ...`: a fake sudo that prompts with that marker on
//!   stderr, reads a password line from stdin, then prints the ready marker and acts as `cat`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet, Sig};
use tokio::net::TcpListener;
use toolgate_ssh_mcp::credentials::{Credential, Origin};
use toolgate_ssh_mcp::host_keys::HostKeyPolicy;

/// A key pair from a seed: deterministic, no RNG needed.
pub fn key(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ssh-mcp-it-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What the server saw.
#[derive(Default)]
pub struct Seen {
    pub connections: AtomicUsize,
    pub signals: Mutex<Vec<String>>,
    pub commands: Mutex<Vec<String>>,
    pub handles: Mutex<Vec<russh::server::Handle>>,
    pub ptys: Mutex<Vec<(String, u32, u32)>>,
}

/// The password the server accepts. Tests read it through `password_env = "CARGO_MANIFEST_DIR"`,
/// a variable cargo sets for test processes, because setting variables needs `unsafe` in Rust 2024.
pub const PASSWORD: &str = env!("CARGO_MANIFEST_DIR");

pub struct TestServer {
    pub addr: SocketAddr,
    pub host_key: PrivateKey,
    pub client_key: PrivateKey,
    pub client_key_path: PathBuf,
    pub dir: PathBuf,
    pub seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Cat,
    Sudo,
    Sleep,
    Ignore,
    Shell,
}

struct Conn {
    seen: Arc<Seen>,
    authorized: PublicKey,
    modes: HashMap<ChannelId, Mode>,
    sudo_input: Vec<u8>,
    sizes: HashMap<ChannelId, (u32, u32)>,
    lines: HashMap<ChannelId, Vec<u8>>,
}

fn sig_name(sig: &Sig) -> String {
    format!("{sig:?}")
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if key.public_key.key_data() == self.authorized.key_data() {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_password(&mut self, _user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(if password == PASSWORD {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let target = format!("{host_to_connect}:{port_to_connect}");
        match tokio::net::TcpStream::connect(&target).await {
            Ok(mut tcp) => {
                reply.accept().await;
                tokio::spawn(async move {
                    let mut stream = channel.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
                });
            }
            Err(_) => drop(reply),
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.seen
            .ptys
            .lock()
            .unwrap()
            .push((term.to_owned(), col_width, row_height));
        self.sizes.insert(channel, (col_width, row_height));
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        self.modes.insert(channel, Mode::Shell);
        session.data(channel, b"$ ".to_vec())?;
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.sizes.insert(channel, (col_width, row_height));
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        let line = String::from_utf8_lossy(data).into_owned();
        // ssh-mcp's first line prints the process-group marker; the command follows.
        let command = line
            .split_once('\n')
            .map(|(_, c)| c.to_owned())
            .unwrap_or(line);
        self.seen.commands.lock().unwrap().push(command.clone());
        match command.as_str() {
            "hello" => {
                session.data(channel, b"hello\n".to_vec())?;
                session.extended_data(channel, 1, b"warn\n".to_vec())?;
                session.exit_status_request(channel, 7)?;
                session.eof(channel)?;
                session.close(channel)?;
            }
            "cat" => {
                self.modes.insert(channel, Mode::Cat);
            }
            "sleep" => {
                self.modes.insert(channel, Mode::Sleep);
            }
            "ignore-signals" => {
                self.modes.insert(channel, Mode::Ignore);
            }
            "drop" => return Err(russh::Error::Disconnect),
            c if c.starts_with("sudo -S -p '[ssh-mcp:sudo-password]' -- ") => {
                self.modes.insert(channel, Mode::Sudo);
                session.extended_data(channel, 1, b"[ssh-mcp:sudo-password]".to_vec())?;
            }
            _ => {
                session.extended_data(channel, 1, b"unknown command\n".to_vec())?;
                session.exit_status_request(channel, 127)?;
                session.eof(channel)?;
                session.close(channel)?;
            }
        }
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.modes.get(&channel) {
            Some(Mode::Shell) => {
                for &b in data {
                    if b == b'\r' {
                        let line = String::from_utf8_lossy(
                            &self.lines.remove(&channel).unwrap_or_default(),
                        )
                        .into_owned();
                        let answer = match line.as_str() {
                            "exit" => {
                                session.data(channel, b"\r\nbye\r\n".to_vec())?;
                                session.exit_status_request(channel, 3)?;
                                session.eof(channel)?;
                                session.close(channel)?;
                                return Ok(());
                            }
                            "size" => {
                                let (c, r) = self.sizes.get(&channel).copied().unwrap_or((0, 0));
                                format!("{c}x{r}")
                            }
                            other => format!("you said: {other}"),
                        };
                        session.data(channel, format!("\r\n{answer}\r\n$ ").into_bytes())?;
                    } else {
                        self.lines.entry(channel).or_default().push(b);
                        session.data(channel, vec![b])?;
                    }
                }
            }
            Some(Mode::Cat) => session.data(channel, data.to_vec())?,
            Some(Mode::Sudo) => {
                self.sudo_input.extend_from_slice(data);
                if let Some(nl) = self.sudo_input.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.sudo_input.drain(..=nl).collect();
                    if line[..nl] == *PASSWORD.as_bytes() {
                        session.extended_data(channel, 1, b"[ssh-mcp:sudo-ok]".to_vec())?;
                        self.modes.insert(channel, Mode::Cat);
                        let rest: Vec<u8> = self.sudo_input.drain(..).collect();
                        if !rest.is_empty() {
                            session.data(channel, rest)?;
                        }
                    } else {
                        session.extended_data(
                            channel,
                            1,
                            b"Sorry, try again.\n[ssh-mcp:sudo-password]".to_vec(),
                        )?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.modes.get(&channel) == Some(&Mode::Sudo) {
            session.extended_data(channel, 1, b"sudo: no password was provided\n".to_vec())?;
            session.exit_status_request(channel, 1)?;
            session.eof(channel)?;
            session.close(channel)?;
        } else if self.modes.get(&channel) == Some(&Mode::Cat) {
            session.exit_status_request(channel, 0)?;
            session.eof(channel)?;
            session.close(channel)?;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.seen.signals.lock().unwrap().push(sig_name(&signal));
        if self.modes.get(&channel) == Some(&Mode::Sleep) {
            session.exit_signal_request(channel, signal, false, "", "")?;
            session.eof(channel)?;
            session.close(channel)?;
        }
        Ok(())
    }
}

impl TestServer {
    /// Starts a server on 127.0.0.1 with host key `key(host_seed)` and one authorized client key.
    pub async fn start(host_seed: u8) -> Self {
        let dir = temp_dir("server");
        let host_key = key(host_seed);
        let client_key = key(host_seed.wrapping_add(100));
        let client_key_path = dir.join("client_ed25519");
        std::fs::write(
            &client_key_path,
            client_key.to_openssh(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        let config = Arc::new(russh::server::Config {
            keys: vec![host_key.clone()],
            auth_rejection_time: Duration::from_millis(5),
            auth_rejection_time_initial: Some(Duration::ZERO),
            methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..]),
            ..Default::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let authorized = client_key.public_key().clone();
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    seen.connections.fetch_add(1, Ordering::SeqCst);
                    let handler = Conn {
                        seen: seen.clone(),
                        authorized: authorized.clone(),
                        modes: HashMap::new(),
                        sudo_input: Vec::new(),
                        sizes: HashMap::new(),
                        lines: HashMap::new(),
                    };
                    let config = config.clone();
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        if let Ok(running) =
                            russh::server::run_stream(config, socket, handler).await
                        {
                            seen.handles.lock().unwrap().push(running.handle());
                            let _ = running.await;
                        }
                    });
                }
            })
        };
        TestServer {
            addr,
            host_key,
            client_key,
            client_key_path,
            dir,
            seen,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The known_hosts line that trusts this server.
    pub fn known_hosts_line(&self) -> String {
        format!(
            "[127.0.0.1]:{} {}\n",
            self.port(),
            self.host_key.public_key().to_openssh().unwrap()
        )
    }

    /// A known_hosts file trusting this server.
    pub fn known_hosts(&self) -> PathBuf {
        let path = self.dir.join("known_hosts");
        std::fs::write(&path, self.known_hosts_line()).unwrap();
        path
    }

    /// A credential logging in with the authorized key.
    pub fn credential(&self, name: &str) -> Credential {
        Credential {
            name: name.to_owned(),
            host: "127.0.0.1".into(),
            port: self.port(),
            user: "tester".into(),
            keys: vec![self.client_key_path.clone()],
            passphrase_env: None,
            agent: false,
            password_env: None,
            sudo_password_env: None,
            jump: None,
            host_key: HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(5),
            remote_bind: Vec::new(),
            origin: Origin::Config,
        }
    }

    /// Drops every connection from the server side.
    pub async fn drop_connections(&self) {
        let handles: Vec<_> = self.seen.handles.lock().unwrap().drain(..).collect();
        for h in handles {
            let _ = h
                .disconnect(
                    russh::Disconnect::ByApplication,
                    "test drops you".into(),
                    "en".into(),
                )
                .await;
        }
    }
}
