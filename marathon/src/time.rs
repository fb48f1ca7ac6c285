//! Marathon's timestamps: ISO-8601 UTC with milliseconds (`2015-09-29T15:59:51.164Z`), from and to Unix
//! milliseconds. Every clock reading in this crate is a `Millis` passed in by the shell.

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// The wall clock, for the shell only; the core always receives `now` as an argument.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's civil-from-days.
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

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2015-09-29T15:59:51.164Z`.
pub fn format_iso(ms: Millis) -> String {
    let secs = (ms / 1000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60, ms % 1000)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (also `+00:00`); `None` for anything else.
pub fn parse_iso(text: &str) -> Option<Millis> {
    let t = text.strip_suffix('Z').or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = t.split_once('T')?;
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let mo: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    if dp.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, ""),
    };
    let mut tp = hms.split(':');
    let h: u64 = tp.next()?.parse().ok()?;
    let mi: u64 = tp.next()?.parse().ok()?;
    let s: u64 = tp.next()?.parse().ok()?;
    if tp.next().is_some() || h > 23 || mi > 59 || s > 60 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let millis: u64 = format!("{frac:0<3}")[..3].parse().ok()?;
    let days = days_from_civil(y, mo, d);
    Some((days as u64 * 86_400 + h * 3600 + mi * 60 + s) * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_iso(1_443_542_391_164), "2015-09-29T15:59:51.164Z");
        assert_eq!(format_iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for ms in [0, 1_443_542_391_164, 951_782_400_001, 4_102_444_799_999] {
            assert_eq!(parse_iso(&format_iso(ms)), Some(ms), "{ms}");
        }
        assert_eq!(parse_iso("2015-09-29T15:59:51Z"), Some(1_443_542_391_000));
        assert_eq!(parse_iso("2015-09-29T15:59:51.1Z"), Some(1_443_542_391_100));
        assert_eq!(parse_iso("yesterday"), None);
        assert_eq!(parse_iso("2015-13-29T15:59:51.164Z"), None);
    }
}
