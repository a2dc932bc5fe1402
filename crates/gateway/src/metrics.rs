//! Prometheus metrics: calls, errors and latency histograms per server and tool.
//!
//! A handful of atomics behind a read-mostly map; rendering is the text exposition format.

use foldhash::HashMap;
use std::fmt::Write;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// Picks one counter out of a tool's stats.
type Field = fn(&ToolStats) -> &AtomicU64;

#[derive(Default)]
struct ToolStats {
    calls: AtomicU64,
    errors: AtomicU64,
    micros: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

/// The gateway's metrics.
#[derive(Default)]
pub struct Metrics {
    /// Server -> tool -> stats: nested so that counting a call looks up by `&str`, allocating
    /// nothing.
    tools: RwLock<HashMap<String, HashMap<String, ToolStats>>>,
    http: RwLock<HashMap<u16, AtomicU64>>,
}

impl Metrics {
    /// Counts one `tools/call`.
    pub fn record_call(&self, server: &str, tool: &str, latency: Duration, failed: bool) {
        let apply = |s: &ToolStats| {
            s.calls.fetch_add(1, Ordering::Relaxed);
            if failed {
                s.errors.fetch_add(1, Ordering::Relaxed);
            }
            s.micros
                .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
            let secs = latency.as_secs_f64();
            if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
                s.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        };
        if let Some(s) = self
            .tools
            .read()
            .unwrap()
            .get(server)
            .and_then(|t| t.get(tool))
        {
            return apply(s);
        }
        let mut tools = self.tools.write().unwrap();
        // Bound the label space: a client inventing tool names must not grow it without end.
        let known: usize = tools.values().map(HashMap::len).sum();
        let tool = if known >= 10_000 { "_other" } else { tool };
        apply(
            tools
                .entry(server.to_owned())
                .or_default()
                .entry(tool.to_owned())
                .or_default(),
        );
    }

    /// Counts one HTTP response by status.
    pub fn record_status(&self, status: u16) {
        if let Some(c) = self.http.read().unwrap().get(&status) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.http
            .write()
            .unwrap()
            .entry(status)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self, sessions: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP toolgate_sessions Open downstream sessions.\n# TYPE toolgate_sessions gauge"
        );
        let _ = writeln!(out, "toolgate_sessions {sessions}");
        let _ = writeln!(
            out,
            "# HELP toolgate_http_responses_total HTTP responses by status.\n# TYPE toolgate_http_responses_total counter"
        );
        let mut statuses: Vec<_> = self
            .http
            .read()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, v.load(Ordering::Relaxed)))
            .collect();
        statuses.sort();
        for (status, n) in statuses {
            let _ = writeln!(
                out,
                "toolgate_http_responses_total{{status=\"{status}\"}} {n}"
            );
        }
        let tools = self.tools.read().unwrap();
        let mut rows: Vec<((&str, &str), &ToolStats)> = tools
            .iter()
            .flat_map(|(server, t)| {
                t.iter()
                    .map(move |(tool, s)| ((server.as_str(), tool.as_str()), s))
            })
            .collect();
        rows.sort_by_key(|(k, _)| *k);
        let counters: [(&str, &str, Field); 2] = [
            ("toolgate_tool_calls_total", "Tool calls relayed.", |s| {
                &s.calls
            }),
            (
                "toolgate_tool_errors_total",
                "Tool calls that failed or returned isError.",
                |s| &s.errors,
            ),
        ];
        for (name, help, field) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (k, s) in &rows {
                let _ = writeln!(
                    out,
                    "{name}{{{}}} {}",
                    labels(k),
                    field(s).load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP toolgate_tool_call_seconds Tool call latency through the gateway.\n# TYPE toolgate_tool_call_seconds histogram"
        );
        for (k, s) in &rows {
            let mut cumulative = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "toolgate_tool_call_seconds_bucket{{{},le=\"{b}\"}} {cumulative}",
                    labels(k)
                );
            }
            let calls = s.calls.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "toolgate_tool_call_seconds_bucket{{{},le=\"+Inf\"}} {calls}",
                labels(k)
            );
            let _ = writeln!(
                out,
                "toolgate_tool_call_seconds_sum{{{}}} {}",
                labels(k),
                s.micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "toolgate_tool_call_seconds_count{{{}}} {calls}",
                labels(k)
            );
        }
        out
    }
}

fn labels((server, tool): &(&str, &str)) -> String {
    format!("server=\"{}\",tool=\"{}\"", escape(server), escape(tool))
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_show_up_as_counters_and_histograms() {
        let m = Metrics::default();
        m.record_call("ssh", "ssh_exec", Duration::from_millis(2), false);
        m.record_call("ssh", "ssh_exec", Duration::from_millis(20), true);
        let text = m.render(1);
        assert!(
            text.contains("toolgate_tool_calls_total{server=\"ssh\",tool=\"ssh_exec\"} 2"),
            "{text}"
        );
        assert!(text.contains("toolgate_tool_errors_total{server=\"ssh\",tool=\"ssh_exec\"} 1"));
        assert!(text.contains(
            "toolgate_tool_call_seconds_bucket{server=\"ssh\",tool=\"ssh_exec\",le=\"0.0025\"} 1"
        ));
        assert!(
            text.contains("toolgate_tool_call_seconds_count{server=\"ssh\",tool=\"ssh_exec\"} 2")
        );
    }
}
