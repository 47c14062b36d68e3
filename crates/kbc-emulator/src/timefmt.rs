//! Time as the Storage API writes it (`2017-02-13T12:01:05+0100`) and as `changedSince`/`changedUntil`
//! accept it: a unix timestamp, ISO 8601 in its usual spellings, or a PHP `strtotime`-style relative phrase
//! (`-2 days`, `-10 minutes`, `now`).

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Unix seconds now.
pub(crate) fn now_secs() -> i64 {
    Utc::now().timestamp()
}

/// `2017-02-13T12:01:05+0000` for unix seconds.
pub(crate) fn iso(secs: i64) -> String {
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%z")
        .to_string()
}

/// `2017-02-13T12:01:05+00:00` (the `Expiration` style of AWS credentials).
pub(crate) fn iso_colon(secs: i64) -> String {
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}

/// RFC 7231 date for `Last-Modified`.
pub(crate) fn http_date(secs: i64) -> String {
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// `2017-02-13T12:01:05.000Z` for S3 XML listings.
pub(crate) fn s3_date(secs: i64) -> String {
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S.000Z")
        .to_string()
}

/// Parses a point in time relative to `now` (unix seconds). None when the text is not understood.
pub(crate) fn parse_point(text: &str, now: i64) -> Option<i64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(n) = t.parse::<i64>() {
        return Some(n);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.timestamp());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%z",
        "%Y-%m-%d %H:%M:%S%z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Some(dt.timestamp());
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, fmt) {
            return Some(dt.and_utc().timestamp());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|dt| dt.and_utc().timestamp());
    }
    parse_relative(t, now)
}

fn parse_relative(t: &str, now: i64) -> Option<i64> {
    let lower = t.to_ascii_lowercase();
    match lower.as_str() {
        "now" => return Some(now),
        "today" | "midnight" => return Some(now - now.rem_euclid(86_400)),
        "yesterday" => return Some(now - now.rem_euclid(86_400) - 86_400),
        _ => {}
    }
    // One or more "<signed number> <unit>" groups, optionally followed by "ago".
    let mut words: Vec<&str> = lower.split_whitespace().collect();
    let ago = words.last() == Some(&"ago");
    if ago {
        words.pop();
    }
    let mut total = Duration::zero();
    let mut i = 0;
    if words.is_empty() {
        return None;
    }
    while i < words.len() {
        // Accept "-2 days" and "-2days".
        let (num, unit) = match words[i].find(|c: char| c.is_ascii_alphabetic()) {
            Some(p) if p > 0 => (&words[i][..p], &words[i][p..]),
            _ => {
                let unit = words.get(i + 1)?;
                i += 1;
                (words[i - 1], *unit)
            }
        };
        i += 1;
        let n: i64 = num.trim_start_matches('+').parse().ok()?;
        let unit = unit.trim_end_matches('s');
        // Checked arithmetic throughout: the text comes from a request.
        let d = match unit {
            "sec" | "second" => Duration::try_seconds(n),
            "min" | "minute" => Duration::try_minutes(n),
            "hour" => Duration::try_hours(n),
            "day" => Duration::try_days(n),
            "week" => Duration::try_weeks(n),
            "month" => Duration::try_days(n.checked_mul(30)?),
            "year" => Duration::try_days(n.checked_mul(365)?),
            _ => return None,
        }?;
        total = total.checked_add(&d)?;
    }
    if ago {
        total = -total;
    }
    now.checked_add(total.num_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_api() {
        assert_eq!(iso(0), "1970-01-01T00:00:00+0000");
        assert_eq!(iso_colon(0), "1970-01-01T00:00:00+00:00");
    }

    #[test]
    fn parses_points() {
        let now = 1_700_000_000;
        assert_eq!(parse_point("1360138863", now), Some(1_360_138_863));
        assert_eq!(
            parse_point("2013-02-12T15:19:21+00:00", now),
            Some(1_360_682_361)
        );
        assert_eq!(
            parse_point("2013-02-12T16:19:21+0100", now),
            Some(1_360_682_361)
        );
        assert_eq!(parse_point("2013-02-12 15:19:21", now), Some(1_360_682_361));
        assert_eq!(
            parse_point("2013-02-12T15:19:21Z", now),
            Some(1_360_682_361)
        );
        assert_eq!(parse_point("-2 days", now), Some(now - 2 * 86_400));
        assert_eq!(parse_point("-10 minutes", now), Some(now - 600));
        assert_eq!(parse_point("-5 second", now), Some(now - 5));
        assert_eq!(parse_point("3 hours ago", now), Some(now - 3 * 3600));
        assert_eq!(parse_point("now", now), Some(now));
        assert_eq!(parse_point("soonish", now), None);
        assert_eq!(parse_point("-2 fortnights", now), None);
    }

    proptest::proptest! {
        /// Any text (relative phrases with huge numbers included) parses or is refused, never panics.
        #[test]
        fn parse_point_never_panics(text in ".{0,40}", n in proptest::num::i64::ANY, now in proptest::num::i64::ANY) {
            let _ = parse_point(&text, now);
            let _ = parse_point(&format!("{n} days"), now);
            let _ = parse_point(&format!("-{n} years ago"), now);
            let _ = iso(n);
        }
    }
}
