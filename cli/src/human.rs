//! Human-readable values: sizes, rates, times, durations, and the parsers for `--timeout`,
//! `--duration` and `--range`.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid duration {0:?}: expected a number with a unit, e.g. 500ms, 30s, 2m, 1h, 90d")]
    Duration(String),
    #[error(
        "invalid range {0:?}: expected START-END (inclusive byte offsets), START- (to the end) \
         or -N (the last N bytes)"
    )]
    Range(String),
    #[error(
        "invalid spread {0:?}: expected percentage points above 0 and below 100, e.g. 10 or 2.5"
    )]
    Spread(String),
}

/// Binary units with one decimal, as `ls -lh` prints them: `0 B`, `1023 B`, `1.5 KiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, from Unix seconds (`-` for 0, "unknown").
pub fn time(unix: i64) -> String {
    if unix == 0 {
        return "-".to_owned();
    }
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (the standard era-based conversion).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A latency: `850µs`, `12.3ms`, `1.20s`.
/// "1 partition", "8 partitions".
pub fn partitions(n: u64) -> String {
    if n == 1 {
        "1 partition".to_owned()
    } else {
        format!("{n} partitions")
    }
}

pub fn latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1e6 {
        format!("{:.1}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// A span of wall-clock time for people: `850ms`, `12.3s`, `4m05s`, `2h07m`.
pub fn elapsed(d: Duration) -> String {
    let secs = d.as_secs();
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, secs / 60 % 60)
    }
}

/// A duration as a user would write it for `--timeout`: `500ms`, `2s`, `1.5s`, `2m`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// A key (or any name) for human output on one line: backslash becomes `\\`, newline,
/// carriage return and tab `\n`, `\r`, `\t`, other control characters `\xNN` (C0, DEL) or
/// `\u{NN}` (C1, line and paragraph separators). Anything else, UTF-8 included, is kept.
/// JSON output needs none of this: JSON strings are escaped exactly.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| c == '\\' || c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !s.chars().any(needs) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && needs(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if needs(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Parses `500ms`, `30s`, `2m`, `1h`, `90d`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let err = || ParseError::Duration(s.to_owned());
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| err())?;
    let secs = match unit.trim() {
        "ms" => value / 1e3,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => return Err(err()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| err())
}

/// A rebalance spread (`--spread 10`, `--spread 2.5%`): percentage points, 0 < x < 100, as
/// the metadata service accepts them (0 would mean "the cluster's setting" on the wire).
pub fn parse_spread(s: &str) -> Result<f64, ParseError> {
    let t = s.trim();
    let v: f64 = t
        .strip_suffix('%')
        .unwrap_or(t)
        .trim()
        .parse()
        .map_err(|_| ParseError::Spread(s.to_owned()))?;
    if v.is_finite() && v > 0.0 && v < 100.0 {
        Ok(v)
    } else {
        Err(ParseError::Spread(s.to_owned()))
    }
}

/// A `--range` as given, resolved against the object's size by [`ByteRange::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `START-END`, both inclusive (as in HTTP `Range: bytes=`).
    Closed { start: u64, end: u64 },
    /// `START-`: to the end of the object.
    From { start: u64 },
    /// `-N`: the last N bytes.
    Suffix { len: u64 },
}

impl ByteRange {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let err = || ParseError::Range(s.to_owned());
        let (a, b) = s.trim().split_once('-').ok_or_else(err)?;
        let num = |v: &str| v.trim().parse::<u64>().map_err(|_| err());
        match (a.trim().is_empty(), b.trim().is_empty()) {
            (false, false) => {
                let (start, end) = (num(a)?, num(b)?);
                if end < start {
                    return Err(err());
                }
                Ok(ByteRange::Closed { start, end })
            }
            (false, true) => Ok(ByteRange::From { start: num(a)? }),
            (true, false) => Ok(ByteRange::Suffix { len: num(b)? }),
            (true, true) => Err(err()),
        }
    }

    /// The half-open range of an object of `size` bytes this selects, clamped to the object
    /// as HTTP does; `None` when it selects nothing (it starts at or past the end).
    pub fn resolve(self, size: u64) -> Option<std::ops::Range<u64>> {
        let r = match self {
            ByteRange::Closed { start, end } => start..end.saturating_add(1).min(size),
            ByteRange::From { start } => start..size,
            ByteRange::Suffix { len } => size.saturating_sub(len)..size,
        };
        (r.start < r.end).then_some(r)
    }
}

/// Fuzz entry point (`dogfs_core::fuzzing` explains how it runs): byte ranges, durations and
/// spreads as typed on the command line — errors, never panics; a closed range is ordered.
#[doc(hidden)]
pub fn fuzz_parsers(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(ByteRange::Closed { start, end }) = ByteRange::parse(&s) {
        assert!(start <= end, "{s:?}");
    }
    let _ = parse_duration(&s);
    if let Ok(spread) = parse_spread(&s) {
        assert!(spread > 0.0 && spread < 100.0, "{s:?}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn spreads_are_percentage_points_strictly_between_0_and_100() {
        assert_eq!(parse_spread("10"), Ok(10.0));
        assert_eq!(parse_spread(" 2.5% "), Ok(2.5));
        for bad in ["0", "100", "-1", "abc", "", "NaN", "inf", "10%%"] {
            assert!(parse_spread(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn elapsed_times() {
        assert_eq!(elapsed(Duration::from_millis(850)), "850ms");
        assert_eq!(elapsed(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(elapsed(Duration::from_secs(245)), "4m05s");
        assert_eq!(elapsed(Duration::from_secs(2 * 3600 + 7 * 60 + 5)), "2h07m");
    }

    #[test]
    fn partition_counts_read_as_english() {
        assert_eq!(partitions(1), "1 partition");
        assert_eq!(partitions(8), "8 partitions");
    }

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(64 << 20), "64.0 MiB");
        assert_eq!(size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn times() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1), "1970-01-01 00:00:01");
        assert_eq!(time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(time(1_795_680_000), "2026-11-26 08:00:00");
        assert_eq!(time(-86_400), "1969-12-31 00:00:00");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "s", "10x", "-1s", "1e999"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(latency(Duration::from_micros(850)), "850µs");
        assert_eq!(latency(Duration::from_micros(12_345)), "12.3ms");
        assert_eq!(latency(Duration::from_millis(1200)), "1.20s");
    }

    #[test]
    fn escapes_keep_one_key_on_one_line() {
        assert_eq!(escape("plain/ké y.txt"), "plain/ké y.txt");
        assert_eq!(escape("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("\u{1}\u{7f}\u{1b}[31m"), "\\x01\\x7f\\x1b[31m");
        assert_eq!(escape("\u{85}\u{2028}"), "\\u{85}\\u{2028}");
        // Distinct keys stay distinct: a literal backslash-n is not a newline.
        assert_ne!(escape("a\\nb"), escape("a\nb"));
        for k in ["x\ny", "x\u{0}y", "\u{9b}"] {
            assert!(!escape(k).chars().any(char::is_control), "{k:?}");
        }
        assert_eq!(duration(Duration::from_millis(500)), "500ms");
        assert_eq!(duration(Duration::from_secs(2)), "2s");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn ranges() {
        let r = ByteRange::parse("10-19").unwrap();
        assert_eq!(r, ByteRange::Closed { start: 10, end: 19 });
        assert_eq!(r.resolve(100), Some(10..20));
        assert_eq!(r.resolve(15), Some(10..15));
        assert_eq!(r.resolve(10), None);
        assert_eq!(ByteRange::parse("5-").unwrap().resolve(8), Some(5..8));
        assert_eq!(ByteRange::parse("-3").unwrap().resolve(8), Some(5..8));
        assert_eq!(ByteRange::parse("-30").unwrap().resolve(8), Some(0..8));
        assert_eq!(ByteRange::parse("0-0").unwrap().resolve(1), Some(0..1));
        for bad in ["", "-", "5", "9-3", "a-b", "1-2-3"] {
            assert!(ByteRange::parse(bad).is_err(), "{bad}");
        }
    }
}
