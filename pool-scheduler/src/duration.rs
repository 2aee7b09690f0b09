//! Durations written as integer seconds or as `"90s"`, `"10m"`, `"12h"`, `"1h30m"`, `"2d"`.

use std::time::Duration;

/// Parses a duration string: either plain digits (seconds) or a sequence of `<digits><unit>` with units
/// `s`, `m`, `h`, `d` (e.g. `"1h30m"`). Surrounding whitespace is ignored. Returns a one-line reason on error.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(pool_scheduler::parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
/// assert_eq!(pool_scheduler::parse_duration("600"), Ok(Duration::from_secs(600)));
/// assert!(pool_scheduler::parse_duration("10 minutes").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty".to_owned());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| "too large".to_owned());
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            let n = number
                .unwrap_or(0)
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d)))
                .ok_or_else(|| "too large".to_owned())?;
            number = Some(n);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return Err(format!("unexpected character {c:?}")),
        };
        let n = number
            .take()
            .ok_or_else(|| format!("unit {c:?} without a number"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "too large".to_owned())?;
    }
    if number.is_some() {
        return Err("number without a unit at the end".to_owned());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        for (text, secs) in [
            ("90s", 90),
            ("10m", 600),
            ("12h", 43_200),
            ("1h30m", 5_400),
            ("2d", 172_800),
            (" 45 ", 45),
            ("0", 0),
            ("1h0m5s", 3_605),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        for text in [
            "",
            "m",
            "10x",
            "1h30",
            "ten minutes",
            "-5s",
            "1.5h",
            "99999999999999999999",
        ] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }
}
