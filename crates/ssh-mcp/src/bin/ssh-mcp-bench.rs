//! `ssh-mcp-bench`: `ssh_exec` of `true` through ssh-mcp against OpenSSH's `ssh`, both on the same
//! local sshd in the same run.
//!
//! - **warm**: a call on ssh-mcp's pooled connection (MCP request over stdio -> channel -> exec ->
//!   exit status -> result) vs `ssh -S <ControlMaster socket> host true` (a new ssh client process
//!   multiplexed over an open master connection: how scripts reuse connections).
//! - **cold**: the first call on a new connection (TCP, key exchange, authentication, channel)
//!   vs a plain `ssh host true`.
//!
//! Rounds interleave the four measurements so machine noise spreads over all of them. Needs
//! `/usr/sbin/sshd`, `ssh` and `ssh-keygen` (Debian's openssh-server and openssh-client) and
//! the `ssh-mcp` binary:
//!
//! ```sh
//! cargo build --release -p toolgate-ssh-mcp && target/release/ssh-mcp-bench --bin-dir target/release
//! ```

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

/// Benchmark ssh-mcp's ssh_exec against OpenSSH on a local sshd.
#[derive(Debug, Parser)]
#[command(name = "ssh-mcp-bench")]
struct Cli {
    /// Directory holding the `ssh-mcp` binary.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Rounds; each runs every measurement.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Warm calls per round and side.
    #[arg(long, default_value_t = 40)]
    warm: usize,
    /// Cold calls per round and side.
    #[arg(long, default_value_t = 4)]
    cold: usize,
    /// Keep the temporary directory (configs, logs).
    #[arg(long)]
    keep: bool,
}

struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
    user: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path))?;
    Ok(())
}

/// An sshd like tests/e2e/sshd.py's: 127.0.0.1, own host key and authorized_keys, no PAM, a clean
/// HOME for the sessions.
fn start_sshd(dir: &Path) -> anyhow::Result<Sshd> {
    let user = run(Command::new("id").arg("-un"))?.trim().to_owned();
    keygen(&dir.join("host_ed25519"))?;
    keygen(&dir.join("client_ed25519"))?;
    std::fs::copy(dir.join("client_ed25519.pub"), dir.join("authorized_keys"))?;
    let home = dir.join("home");
    std::fs::create_dir_all(&home)?;
    let port = free_port()?;
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
             AllowUsers {user}\nMaxSessions 30\nMaxStartups 100\nSetEnv HOME={home}\nLogLevel ERROR\n",
            d = dir.display(),
            home = home.display()
        ),
    )?;
    if run(Command::new("id").arg("-u"))?.trim() == "0" {
        let _ = std::fs::create_dir_all("/run/sshd");
    }
    let log = std::fs::File::create(dir.join("sshd.log"))?;
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start /usr/sbin/sshd (install openssh-server)")?;
    let sshd = Sshd {
        child,
        port,
        dir: dir.to_owned(),
        user,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("sshd did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let host_pub = std::fs::read_to_string(dir.join("host_ed25519.pub"))?;
    let mut words = host_pub.split_whitespace();
    let (kind, b64) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    std::fs::write(
        dir.join("known_hosts"),
        format!("[127.0.0.1]:{port} {kind} {b64}\n"),
    )?;
    Ok(sshd)
}

/// ssh-mcp over stdio, driven with raw JSON-RPC lines.
struct Mcp {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next: u64,
}

impl Mcp {
    fn start(bin: &Path, config: &Path, log: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .env("SSH_MCP_LOG", "warn")
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut mcp = Self {
            child,
            stdin,
            stdout,
            next: 1,
        };
        mcp.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "ssh-mcp-bench", "version": "1"}}),
        )?;
        writeln!(
            mcp.stdin,
            "{}",
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
        )?;
        Ok(mcp)
    }

    fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next;
        self.next += 1;
        writeln!(
            self.stdin,
            "{}",
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        )?;
        self.stdin.flush()?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("ssh-mcp closed stdout");
            }
            let msg: Value = serde_json::from_str(&line)?;
            if msg.get("id") == Some(&json!(id)) {
                if let Some(e) = msg.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(msg["result"].clone());
            }
        }
    }

    fn exec_true(&mut self, credential: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let r = self.request(
            "tools/call",
            json!({"name": "ssh_exec", "arguments": {"credentialName": credential, "command": "true"}}),
        )?;
        let took = started.elapsed();
        if r["isError"] == json!(true) || r["structuredContent"]["exitCode"] != json!(0) {
            bail!("ssh_exec failed: {r}");
        }
        Ok(took)
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ssh_base(sshd: &Sshd) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o"])
        .arg(format!(
            "UserKnownHostsFile={}",
            sshd.dir.join("known_hosts").display()
        ))
        .args(["-o", "StrictHostKeyChecking=yes", "-i"])
        .arg(sshd.dir.join("client_ed25519"))
        .args(["-p", &sshd.port.to_string(), "-l", &sshd.user])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn time_ssh(mut cmd: Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = cmd.output()?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "ssh failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn stats(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let pick = |q: f64| ms(samples[((samples.len() - 1) as f64 * q).round() as usize]);
    (pick(0.5), pick(0.9), pick(0.0))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bin = cli.bin_dir.join("ssh-mcp");
    if !bin.is_file() {
        bail!(
            "{} not found: `cargo build --release -p toolgate-ssh-mcp` and pass --bin-dir target/release",
            bin.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("ssh-mcp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sshd = start_sshd(&dir)?;
    let config = dir.join("ssh-mcp.toml");
    std::fs::write(
        &config,
        format!(
            "known_hosts = \"{kh}\"\n[hosts.bench]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"{user}\"\nkey = \"{key}\"\n",
            kh = dir.join("known_hosts").display(),
            port = sshd.port,
            user = sshd.user,
            key = dir.join("client_ed25519").display()
        ),
    )?;
    let mut mcp = Mcp::start(&bin, &config, &dir.join("ssh-mcp.log"))?;
    // The ControlMaster connection OpenSSH's warm calls multiplex over.
    let socket = dir.join("cm.sock");
    let mut master = ssh_base(&sshd);
    master
        .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=300", "-S"])
        .arg(&socket)
        .args(["-f", "-N", "127.0.0.1"]);
    run(&mut master).context("starting the ControlMaster")?;
    let mux = || {
        let mut c = ssh_base(&sshd);
        c.arg("-S").arg(&socket).args(["127.0.0.1", "true"]);
        c
    };
    let cold_ssh = || {
        let mut c = ssh_base(&sshd);
        c.args([
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
            "127.0.0.1",
            "true",
        ]);
        c
    };
    // Warm-up: pool connected, caches hot.
    for _ in 0..5 {
        mcp.exec_true("bench")?;
        time_ssh(mux())?;
    }
    eprintln!(
        "plan: {} rounds of {} warm and {} cold calls per side (sshd on 127.0.0.1:{})",
        cli.rounds, cli.warm, cli.cold, sshd.port
    );
    let (mut w_mcp, mut w_ssh, mut c_mcp, mut c_ssh) = (vec![], vec![], vec![], vec![]);
    let mut fresh = 0;
    for round in 0..cli.rounds {
        for _ in 0..cli.warm {
            w_mcp.push(mcp.exec_true("bench")?);
            w_ssh.push(time_ssh(mux())?);
        }
        for _ in 0..cli.cold {
            // A new credential has no pooled connection: the call connects first.
            fresh += 1;
            let name = format!("cold{fresh}");
            let added = mcp.request(
                "tools/call",
                json!({"name": "add_credential", "arguments": {"name": name, "host": "127.0.0.1", "port": sshd.port,
                       "username": sshd.user, "privateKeyPath": dir.join("client_ed25519")}}),
            )?;
            if added["isError"] == json!(true) {
                bail!("add_credential failed: {added}");
            }
            c_mcp.push(mcp.exec_true(&name)?);
            c_ssh.push(time_ssh(cold_ssh())?);
            mcp.request(
                "tools/call",
                json!({"name": "remove_credential", "arguments": {"name": name}}),
            )?;
        }
        eprintln!("round {}/{} done", round + 1, cli.rounds);
    }
    let mut stop = ssh_base(&sshd);
    stop.arg("-S")
        .arg(&socket)
        .args(["-O", "exit", "127.0.0.1"]);
    let _ = stop.output();

    println!("\nssh_exec `true` vs OpenSSH `ssh host true`, same sshd (127.0.0.1), same run");
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>7}",
        "measurement", "median ms", "p90 ms", "min ms", "n"
    );
    let rows = [
        ("warm: ssh-mcp ssh_exec, pooled connection", &mut w_mcp),
        ("warm: ssh -S ControlMaster socket", &mut w_ssh),
        ("cold: ssh-mcp ssh_exec, new connection", &mut c_mcp),
        ("cold: ssh (new connection)", &mut c_ssh),
    ];
    let mut medians = vec![];
    for (label, samples) in rows {
        let n = samples.len();
        let (p50, p90, min) = stats(samples);
        medians.push(p50);
        println!("{label:<44} {p50:>9.2} {p90:>9.2} {min:>9.2} {n:>7}");
    }
    let warm = medians[0] / medians[1];
    let cold = medians[2] / medians[3];
    println!(
        "\nratio warm (ssh-mcp / ssh ControlMaster): {warm:.2}x  [{}] target <= 1.5x",
        if warm <= 1.5 { "PASS" } else { "FAIL" }
    );
    println!("ratio cold (ssh-mcp first call / cold ssh): {cold:.2}x");
    drop(mcp);
    drop(sshd);
    if cli.keep {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
