//! Duration flags (`--interval 10s`, `--poll-interval 500ms`, `--interruption-horizon 1m30s`),
//! parsed the same way by every subcommand.

use std::time::Duration;

/// Parses `90`, `90s`, `1.5m`, `500ms`, `1h30m`: numbers with units `ms`, `s`, `m`, `h`,
/// concatenated; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let bad = |why: &str| format!("invalid duration {text:?}: {why} (e.g. 90s, 500ms, 1m30s)");
    if text.is_empty() {
        return Err(bad("empty"));
    }
    if let Ok(secs) = text.parse::<f64>() {
        return finite(secs).ok_or_else(|| bad("out of range"));
    }
    let mut total = 0.0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(split);
        let value: f64 = num.parse().map_err(|_| bad("expected a number"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        total += value
            * match unit {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "" => return Err(bad("a number without a unit inside a compound duration")),
                _ => return Err(bad(&format!("unknown unit {unit:?}, use ms, s, m or h"))),
            };
        rest = next;
    }
    finite(total).ok_or_else(|| bad("out of range"))
}

/// Like [`parse_duration`], for settings where zero makes no sense (timeouts, intervals).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("duration {:?} must be positive", s.trim()));
    }
    Ok(d)
}

fn finite(secs: f64) -> Option<Duration> {
    (0.0..1e12)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_form_the_flags_document() {
        let cases = [
            ("7", 7_000),
            ("5s", 5_000),
            ("500ms", 500),
            ("1.5m", 90_000),
            ("1m30s", 90_000),
            ("1h30m", 5_400_000),
            (" 10m ", 600_000),
            ("0", 0),
        ];
        for (s, ms) in cases {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
    }

    #[test]
    fn rejects_with_a_clear_message() {
        for s in ["", "5x", "m", "1m30", "-1s", "1e400"] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.contains("invalid duration"), "{s}: {e}");
        }
        assert!(
            parse_positive_duration("0s")
                .unwrap_err()
                .contains("must be positive")
        );
        assert_eq!(parse_positive_duration("2s"), Ok(Duration::from_secs(2)));
    }
}
