//! An MCP client over a child's stdin/stdout: newline-delimited JSON-RPC, with requests of many
//! concurrent workers multiplexed on the one pipe by id.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use toolgate_wire::{Kind, Limits, Message};

use crate::http::{PROTOCOL_VERSION, call_body};

type Waiter = oneshot::Sender<Result<(), String>>;

pub struct Mux {
    lines: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    pending: Arc<Mutex<HashMap<u64, Waiter>>>,
    next_id: AtomicU64,
    child: tokio::sync::Mutex<Child>,
    pub pid: u32,
}

impl Mux {
    /// Starts `program args`, its stderr going to `log`, and performs the handshake.
    pub async fn start(
        program: &Path,
        args: &[&str],
        envs: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Arc<Mux>> {
        let mut child = Command::new(program)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        let pid = child.id().context("the child has a pid")?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if stdin.write_all(&line).await.is_err() {
                    return;
                }
                if rx.is_empty() && stdin.flush().await.is_err() {
                    return;
                }
            }
            // Dropping stdin closes the child's input: MCP's stdio shutdown.
        });
        let pending: Arc<Mutex<HashMap<u64, Waiter>>> = Arc::default();
        let readers = pending.clone();
        tokio::spawn(async move {
            let mut out = BufReader::with_capacity(64 * 1024, stdout);
            let mut line = Vec::with_capacity(1024);
            let limits = Limits::default();
            loop {
                line.clear();
                match out.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let Ok(m) = Message::parse(&line, &limits) else {
                    continue;
                };
                if m.kind() != Kind::Response {
                    continue;
                }
                let Some(id) = m.id().and_then(|i| i.as_u64()) else {
                    continue;
                };
                let ok = if m.is_error() {
                    Err(String::from_utf8_lossy(&line).into_owned())
                } else {
                    Ok(())
                };
                if let Some(w) = readers.lock().unwrap().remove(&id) {
                    let _ = w.send(ok);
                }
            }
            // The child's output ended: fail everyone still waiting.
            for (_, w) in readers.lock().unwrap().drain() {
                let _ = w.send(Err("the server's output ended".into()));
            }
        });
        let mux = Arc::new(Mux {
            lines: Mutex::new(Some(tx)),
            pending,
            next_id: AtomicU64::new(1),
            child: tokio::sync::Mutex::new(child),
            pid,
        });
        let init = format!(
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{{}},"clientInfo":{{"name":"toolgate-bench","version":"{}"}}}}}}"#,
            env!("CARGO_PKG_VERSION")
        );
        tokio::time::timeout(Duration::from_secs(30), mux.exchange(0, init))
            .await
            .context("initialize timed out")?
            .context("initialize")?;
        mux.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec())?;
        Ok(mux)
    }

    fn send(&self, mut line: Vec<u8>) -> anyhow::Result<()> {
        line.push(b'\n');
        match &*self.lines.lock().unwrap() {
            Some(tx) => tx
                .send(line)
                .map_err(|_| anyhow::anyhow!("the writer stopped")),
            None => bail!("closed"),
        }
    }

    async fn exchange(&self, id: u64, body: String) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.send(body.into_bytes())?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => bail!("{e}"),
            Err(_) => bail!("the reader stopped"),
        }
    }

    /// One `tools/call` of `echo`.
    pub async fn call(&self) -> anyhow::Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.exchange(id, call_body(id)).await
    }

    /// Closes the child's input and waits for it to exit (killing it after a while).
    pub async fn stop(&self) {
        self.lines.lock().unwrap().take();
        let mut child = self.child.lock().await;
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}
