//! Durations (`"10m"`, `"1h30m"`) and rate-limit windows.

/// Parses `90s`, `15m`, `2h`, `1d`, `1w`, `500ms` or sums of them (`1h30m`) into milliseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a duration; write e.g. `30s`, `15m`, `2h`, `1d`");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if total == 0 {
        return Err(format!("`{text}` is zero; a duration must be positive"));
    }
    Ok(total)
}

/// A rate-limit window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Its length.
    pub length_ms: u64,
    /// Sliding (the last `length` before now) rather than fixed, calendar-aligned in UTC.
    pub sliding: bool,
}

/// Epoch alignment offset of weeks: 1970-01-01 was a Thursday, three days after a Monday (ISO weeks start on Monday).
const WEEK_OFFSET_MS: u64 = 3 * 86_400_000;

impl Window {
    /// Parses `second minute hour day week` or a duration.
    pub fn parse(text: &str, sliding: bool) -> Result<Window, String> {
        let length_ms = match text {
            "second" => 1_000,
            "minute" => 60_000,
            "hour" => 3_600_000,
            "day" => 86_400_000,
            "week" => 7 * 86_400_000,
            other => parse_duration(other)
                .map_err(|e| format!("{e}, or one of `second`, `minute`, `hour`, `day`, `week`"))?,
        };
        Ok(Window { length_ms, sliding })
    }

    /// The start of the fixed window holding `now_ms` (UTC calendar-aligned: minutes start at
    /// :00, days at midnight UTC, weeks on Monday).
    pub fn start(&self, now_ms: u64) -> u64 {
        let offset = if self.length_ms.is_multiple_of(7 * 86_400_000) {
            WEEK_OFFSET_MS
        } else {
            0
        };
        let shifted = now_ms.saturating_add(offset);
        (shifted - shifted % self.length_ms).saturating_sub(offset)
    }
}

/// Formats a UTC time in milliseconds as RFC 3339 (`2026-11-25T18:31:00Z`).
pub fn utc_rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(900_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn windows_are_calendar_aligned() {
        // 2026-11-25T18:31:42.5Z
        let now = 1_795_631_502_500;
        let minute = Window::parse("minute", false).unwrap();
        assert_eq!(utc_rfc3339(minute.start(now)), "2026-11-25T18:31:00Z");
        let day = Window::parse("day", false).unwrap();
        assert_eq!(utc_rfc3339(day.start(now)), "2026-11-25T00:00:00Z");
        let week = Window::parse("week", false).unwrap();
        assert_eq!(utc_rfc3339(week.start(now)), "2026-11-23T00:00:00Z");
        let q = Window::parse("15m", false).unwrap();
        assert_eq!(utc_rfc3339(q.start(now)), "2026-11-25T18:30:00Z");
        assert!(Window::parse("fortnight", false).is_err());
    }
}
