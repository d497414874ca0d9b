//! Durations as people write them: a whole number followed by a unit, `250ms`, `60s`, `5m`, `1h`.
//!
//! The daemon's flags use this format, and so will every duration on the wire. A bare number is never a
//! duration: `60` could mean seconds or milliseconds, and guessing wrong by a factor of 1000 is worse
//! than an error.

use std::time::Duration;

/// A duration that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("duration is empty")]
    Empty,
    #[error("duration needs a unit (ms, s, m or h), as in 250ms, 60s, 5m")]
    MissingUnit,
    #[error("duration must start with a whole number, as in 250ms, 60s, 5m")]
    NotANumber,
    #[error("unknown duration unit; use ms, s, m or h")]
    UnknownUnit,
    #[error("duration is too large")]
    TooLarge,
}

/// Parses `<digits><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(DurationError::NotANumber);
    }
    if unit.is_empty() {
        return Err(DurationError::MissingUnit);
    }
    let value: u64 = digits.parse().map_err(|_| DurationError::TooLarge)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(DurationError::UnknownUnit),
    };
    value.checked_mul(millis_per_unit).map(Duration::from_millis).ok_or(DurationError::TooLarge)
}

/// Writes `duration` in the largest unit that represents it exactly (`90s`, `5m`, `250ms`).
pub fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    match ms {
        0 => "0s".to_string(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_unit() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert_eq!(parse("60"), Err(DurationError::MissingUnit));
        assert_eq!(parse("s"), Err(DurationError::NotANumber));
        assert_eq!(parse("-5s"), Err(DurationError::NotANumber));
        assert_eq!(parse("1.5s"), Err(DurationError::UnknownUnit));
        assert_eq!(parse("5 s"), Err(DurationError::UnknownUnit));
        assert_eq!(parse("5sec"), Err(DurationError::UnknownUnit));
        assert_eq!(parse("99999999999999999999s"), Err(DurationError::TooLarge));
        assert_eq!(parse("18446744073709551615h"), Err(DurationError::TooLarge));
    }

    #[test]
    fn formats_in_the_largest_exact_unit_and_reads_back() {
        for (ms, text) in
            [(0, "0s"), (250, "250ms"), (1500, "1500ms"), (60_000, "1m"), (90_000, "90s"), (7_200_000, "2h")]
        {
            let duration = Duration::from_millis(ms);
            assert_eq!(format(duration), text);
            assert_eq!(parse(text), Ok(duration));
        }
    }
}
