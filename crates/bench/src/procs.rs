//! Child processes (servers that print their address on stderr) and what `/proc` says about
//! processes: resident memory, CPU time, children.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A server process that listens on an address it chose.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `program args`, waits for a stderr line containing `marker` followed by
    /// `http://ADDR/`, and copies the rest of stderr to `log`.
    pub async fn start(
        program: &Path,
        args: &[&str],
        envs: &[(String, String)],
        marker: &str,
        log: &Path,
    ) -> anyhow::Result<Server> {
        let mut child = Command::new(program)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        let pid = child.id().context("the child has a pid")?;
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr);
        let mut seen = String::new();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let mut line = String::new();
                if lines.read_line(&mut line).await? == 0 {
                    bail!("{} exited before listening:\n{seen}", program.display());
                }
                seen.push_str(&line);
                if let Some(rest) = line.split(marker).nth(1)
                    && let Some(rest) = rest.split("http://").nth(1)
                {
                    let addr = rest.split('/').next().unwrap_or_default();
                    return addr
                        .parse::<SocketAddr>()
                        .with_context(|| format!("bad address in {line:?}"));
                }
            }
        })
        .await
        .with_context(|| format!("{} did not report its address", program.display()))??;
        // Keep draining stderr (a full pipe would block the server's logging).
        let mut file = std::fs::File::create(log)?;
        tokio::spawn(async move {
            let mut line = Vec::new();
            loop {
                line.clear();
                match lines.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    // Small local-file writes: blocking is harmless here.
                    Ok(_) => {
                        let _ = std::io::Write::write_all(&mut file, &line);
                    }
                }
            }
        });
        Ok(Server { child, pid, addr })
    }

    /// SIGTERM, then SIGKILL if it has not exited after a few seconds.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident memory in kB.
pub fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS").unwrap_or(0)
}

/// CPU time consumed by all threads of a process so far, in nanoseconds (from
/// `/proc/PID/task/*/schedstat`; falls back to the tick-granular `stat`).
pub fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Some(ns) = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            {
                total += ns;
                any = true;
            }
        }
    }
    if any {
        return total;
    }
    // Fields 14 and 15 (utime, stime) in clock ticks, assumed 100 Hz.
    stat_fields(pid)
        .map(|f| {
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            (t(11) + t(12)) * 10_000_000
        })
        .unwrap_or(0)
}

/// The fields of `/proc/PID/stat` after the command name: index 0 is the state, 1 the ppid.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The live children of a process.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            stat_fields(p)
                .and_then(|f| f.get(1)?.parse::<u32>().ok())
                .is_some_and(|pp| pp == pid)
        })
        .collect()
}
