//! `toolgate audit`: read (and follow) the audit log.

use std::process::ExitCode;
use std::time::Duration;

use toolgate_gateway::Config;
use toolgate_gateway::guard::now_ms;
use toolgate_gateway::stores::{Purpose, Stores};
use toolgate_policy::{parse_duration, utc_rfc3339};
use toolgate_state::{AuditFilter, AuditRecord};

use crate::BAD_CONFIG;

/// What to show.
pub struct Query {
    pub grant: Option<String>,
    pub tool: Option<String>,
    pub decision: Option<String>,
    pub since: Option<String>,
    pub limit: usize,
    pub json: bool,
    pub follow: bool,
}

/// Prints the matching records, then (with `follow`) new ones as they come.
pub async fn run(config: &Config, query: Query) -> anyhow::Result<ExitCode> {
    let since_ms = match query.since.as_deref().map(since) {
        None => None,
        Some(Ok(ms)) => Some(ms),
        Some(Err(e)) => {
            eprintln!("toolgate audit: --since: {e}");
            return Ok(ExitCode::from(BAD_CONFIG));
        }
    };
    let path = config.state_dir.join("state.db");
    if config.shared.postgres.is_none() && !path.exists() {
        eprintln!(
            "toolgate audit: no state yet at {} (nothing was recorded)",
            path.display()
        );
        return Ok(ExitCode::from(1));
    }
    let store = Stores::open(config, Purpose::Command)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the audit log: {e}"))?
        .audit;
    let mut filter = AuditFilter {
        grant: query.grant,
        tool: query.tool,
        decision: query.decision,
        since_ms,
        after_id: None,
        limit: query.limit.max(1),
    };
    loop {
        let records = store.query(&filter).await?;
        for r in &records {
            if query.json {
                println!("{}", serde_json::to_string(r)?);
            } else {
                println!("{}", line(r));
            }
        }
        if !query.follow {
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(last) = records.last() {
            filter.after_id = Some(last.id);
        } else if filter.after_id.is_none() {
            filter.after_id = Some(0);
        }
        filter.limit = 10_000;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `--since`: a duration back from now, or an RFC 3339 UTC time.
fn since(text: &str) -> Result<u64, String> {
    if let Ok(d) = parse_duration(text) {
        return Ok(now_ms().saturating_sub(d));
    }
    parse_utc(text).ok_or_else(|| {
        format!(
            "{text:?} is neither a duration (10m, 2h, 7d) nor a UTC time like 2026-12-01T10:00:00Z"
        )
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` to UTC milliseconds.
fn parse_utc(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    let total = ((days * 24 + h) * 60 + min) * 60 + s;
    u64::try_from(total * 1000 + ms).ok()
}

/// One record as a line for people.
fn line(r: &AuditRecord) -> String {
    let mut parts = vec![utc_rfc3339(r.at_ms), format!("{:<17}", r.decision)];
    if let Some(g) = &r.grant {
        parts.push(format!("grant={g}"));
    }
    match (&r.server, &r.tool) {
        (Some(s), Some(t)) => parts.push(format!("tool={s}/{t}")),
        (None, Some(t)) => parts.push(format!("tool={t}")),
        (Some(s), None) => parts.push(format!("server={s}")),
        (None, None) => {}
    }
    if let Some(rule) = &r.rule {
        parts.push(format!("rule={rule}"));
    }
    if !r.arg_keys.is_empty() {
        parts.push(format!("args=[{}]", r.arg_keys.join(",")));
    }
    if let Some(us) = r.latency_us {
        parts.push(format!("{:.1}ms", us as f64 / 1000.0));
    }
    if let Some(status) = &r.upstream_status {
        parts.push(format!("upstream={status}"));
    }
    if let Some(m) = &r.message {
        parts.push(format!("-- {m}"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::parse_utc;

    #[test]
    fn utc_times_parse() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2026-12-01T10:00:00.5Z"), Some(1_796_119_200_500));
        assert_eq!(parse_utc("2026-13-01T10:00:00Z"), None);
        assert_eq!(parse_utc("yesterday"), None);
        assert_eq!(parse_utc("2026-12-01T10:00:00.ééZ"), None);
        assert_eq!(parse_utc("2026-12-01T10:00:00.Z"), None);
    }
}
