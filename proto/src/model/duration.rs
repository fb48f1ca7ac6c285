//! Durations in Mesos's flag spelling (`15secs`, `2mins`, `100ms`, `1hrs`) and the short one (`15s`, `2m`, `1h`).

use std::time::Duration;

/// Parses `15secs`, `15s`, `2mins`, `2m`, `100ms`, `1hrs`, `1h`, `1days`, `1.5secs`, `500us`, `10ns`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("'{text}' is not a duration like 15secs or 15s"))?;
    let seconds_per_unit = match unit.trim() {
        "ns" | "nsecs" => 1e-9,
        "us" | "usecs" => 1e-6,
        "ms" | "msecs" => 1e-3,
        "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" | "hr" | "hrs" => 3600.0,
        "d" | "day" | "days" => 86400.0,
        "w" | "week" | "weeks" => 604800.0,
        "" => return Err(format!("'{text}' has no unit (write e.g. 15secs or 15s)")),
        other => {
            return Err(format!(
                "'{text}' has an unknown unit '{other}' (use ns, us, ms, secs, mins, hrs, days, weeks)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| format!("'{text}' is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesos_and_short_spellings() {
        assert_eq!(parse_duration("15secs"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2mins"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1.5secs"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("15").unwrap_err().contains("no unit"));
        assert!(parse_duration("5parsecs").unwrap_err().contains("unknown unit"));
    }
}
