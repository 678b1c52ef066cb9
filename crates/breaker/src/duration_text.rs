//! Durations written as text in configuration files: `250ms`, `10s`, `1.5m`,
//! `2h` (units `ns`, `us`, `ms`, `s`, `m`, `h`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

use crate::error::ConfigError;

/// Reads a duration such as `10s` or `1.5m`.
pub(crate) fn parse(text: &str) -> Result<Duration, ConfigError> {
    let invalid = || ConfigError::Duration(text.to_owned());
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(invalid)?;
    let (number, unit) = trimmed.split_at(split);
    let seconds_per_unit = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(invalid()),
    };
    if number.is_empty() {
        return Err(invalid());
    }
    // Whole numbers are exact; fractions go through f64.
    if let Ok(whole) = number.parse::<u64>() {
        let duration = match unit.trim() {
            "ns" => Some(Duration::from_nanos(whole)),
            "us" | "µs" => Some(Duration::from_micros(whole)),
            "ms" => Some(Duration::from_millis(whole)),
            "s" => Some(Duration::from_secs(whole)),
            "m" | "min" => whole.checked_mul(60).map(Duration::from_secs),
            _ => whole.checked_mul(3600).map(Duration::from_secs),
        };
        return duration.ok_or_else(invalid);
    }
    let value: f64 = number.parse().map_err(|_| invalid())?;
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| invalid())
}

/// Writes a duration in the largest unit that keeps it exact.
pub(crate) fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    let units: [(u128, &str); 5] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
    ];
    for (size, unit) in units {
        if nanos != 0 && nanos.is_multiple_of(size) {
            return format!("{}{unit}", nanos / size);
        }
    }
    if nanos == 0 {
        "0s".to_owned()
    } else {
        format!("{nanos}ns")
    }
}

/// `serde(with = "...")` for `Duration`.
pub(crate) fn serialize<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*duration))
}

/// `serde(with = "...")` for `Duration`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// `serde(with = "...")` for `Option<Duration>`.
pub(crate) mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `None` as nothing (null).
    pub(crate) fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_some(&super::format(*duration)),
            None => serializer.serialize_none(),
        }
    }

    /// Reads null or a duration.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| super::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("10s", Duration::from_secs(10)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("7us", Duration::from_micros(7)),
            ("9ns", Duration::from_nanos(9)),
            (" 3 s ", Duration::from_secs(3)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for text in [
            "",
            "10",
            "s",
            "ten s",
            "10 parsecs",
            "-1s",
            "1e400s",
            "99999999999999999999h",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn formats_exactly_and_round_trips() {
        for duration in [
            Duration::ZERO,
            Duration::from_secs(3600),
            Duration::from_secs(90),
            Duration::from_secs(60),
            Duration::from_millis(1500),
            Duration::from_nanos(17),
        ] {
            assert_eq!(parse(&format(duration)), Ok(duration));
        }
        assert_eq!(format(Duration::from_secs(120)), "2m");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
    }
}
