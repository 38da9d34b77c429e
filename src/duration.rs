//! Durations as runbooks write them (`90s`, `45m`, `1h30m`, `500ms`): parsing and display.

use std::time::Duration;

/// Parses `500ms`, `90s`, `45m`, `2h`, or a sum such as `1h30m`. A bare number is rejected so
/// that `timeout=30` (seconds? minutes?) is never guessed.
pub fn parse(text: &str) -> Result<Duration, String> {
    let total = parse_sum(text, Units::Runbook)?;
    if total > Duration::from_secs(7 * 24 * 3600) {
        return Err(format!("`{}` is longer than a week", text.trim()));
    }
    Ok(total)
}

/// An age, as `runs --prune --older-than` takes it: the same sums as [`parse`], plus days
/// (`30d`, `1d12h`), and no upper bound (retention is counted in weeks, timeouts are not).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    parse_sum(text, Units::Age)
}

/// Which units a duration may use: runbooks keep the units (and the messages) they always had.
#[derive(Clone, Copy, PartialEq)]
enum Units {
    Runbook,
    Age,
}

fn parse_sum(text: &str, units: Units) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration (expected e.g. 90s, 45m, 1h30m)"
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "d" if units == Units::Age => Duration::from_secs(number.saturating_mul(86400)),
            "" if units == Units::Age => {
                return Err(format!(
                    "`{text}` has no unit (write {number}m, {number}h or {number}d)"
                ));
            }
            "" => {
                return Err(format!(
                    "`{text}` has no unit (write {number}s, {number}m or {number}h)"
                ));
            }
            other if units == Units::Age => {
                return Err(format!(
                    "unknown unit `{other}` in `{text}` (use ms, s, m, h or d)"
                ));
            }
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{text}` (use ms, s, m or h)"
                ));
            }
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A short human form: `1h30m`, `45s`, `1.2s`, `350ms`.
pub fn display(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    if secs < 10 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// Serde helper: durations serialize as whole milliseconds.
pub mod as_millis {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub mod option {
        use serde::Serializer;
        use std::time::Duration;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&(d.as_millis() as u64)),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse("30").unwrap_err().contains("no unit"));
        assert!(parse("5x").unwrap_err().contains("unknown unit"));
        assert!(parse("m").is_err());
        assert!(parse("99999999999999999999s").is_err());
        assert!(parse("200h").unwrap_err().contains("week"));
    }

    #[test]
    fn ages_take_days_and_have_no_cap_but_runbooks_do_not_change() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_age("1d12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_age("200h"), Ok(Duration::from_secs(200 * 3600)));
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_age("30").unwrap_err().contains("30d"));
        assert!(
            parse_age("2w")
                .unwrap_err()
                .contains("use ms, s, m, h or d")
        );
        assert!(parse_age("").is_err());
        assert_eq!(
            parse("2d").unwrap_err(),
            "unknown unit `d` in `2d` (use ms, s, m or h)"
        );
        assert_eq!(
            parse("30").unwrap_err(),
            "`30` has no unit (write 30s, 30m or 30h)"
        );
    }

    #[test]
    fn displays_compactly() {
        assert_eq!(display(Duration::from_millis(350)), "350ms");
        assert_eq!(display(Duration::from_millis(1234)), "1.2s");
        assert_eq!(display(Duration::from_secs(45)), "45s");
        assert_eq!(display(Duration::from_secs(90)), "1m30s");
        assert_eq!(display(Duration::from_secs(5400)), "1h30m");
    }
}
