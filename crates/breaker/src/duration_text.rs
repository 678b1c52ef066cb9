//! Durations written as text in configuration files: `250ms`, `10s`, `1.5m`,
//! `2h` (units `ns`, `us`, `ms`, `s`, `m`, `h`), and [`DurationText`], which
//! also takes a bare number of seconds.

use std::fmt;
use std::str::FromStr;
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

/// A duration in a configuration file: text such as `250ms`, `10s`, `1.5m`
/// or `2h` (units `ns`, `us`, `ms`, `s`, `m` or `min`, `h`), or a bare number
/// of seconds (`3`, `"3"`, `"1.5"`). Policy files are stricter: their
/// durations need a unit.
///
/// ```
/// use std::time::Duration;
/// use breaker::DurationText;
///
/// let parsed: DurationText = "1.5m".parse()?;
/// assert_eq!(parsed.0, Duration::from_secs(90));
/// assert_eq!("3".parse::<DurationText>()?.0, Duration::from_secs(3));
/// assert!("5 parsecs".parse::<DurationText>().is_err());
/// assert_eq!(parsed.to_string(), "90s");
/// # Ok::<(), breaker::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationText(pub Duration);

impl FromStr for DurationText {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let bare = !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.');
        if bare {
            parse(&format!("{trimmed}s"))
                .map(DurationText)
                .map_err(|_| ConfigError::Duration(text.to_owned()))
        } else {
            parse(text).map(DurationText)
        }
    }
}

impl fmt::Display for DurationText {
    /// The largest unit that keeps it exact (`90s`, `1500ms`, `2m`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

impl From<Duration> for DurationText {
    fn from(duration: Duration) -> Self {
        DurationText(duration)
    }
}

impl From<DurationText> for Duration {
    fn from(text: DurationText) -> Self {
        text.0
    }
}

impl<'de> Deserialize<'de> for DurationText {
    /// A whole number of seconds, or text.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(seconds) => Ok(DurationText(Duration::from_secs(seconds))),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl serde::Serialize for DurationText {
    /// As text that reads back the same.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize(&self.0, serializer)
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

    #[test]
    fn duration_text_also_takes_bare_seconds() {
        for (text, expected) in [
            ("250ms", 250),
            ("10s", 10_000),
            ("1.5m", 90_000),
            ("2h", 7_200_000),
            ("3", 3000),
            (" 1.5 ", 1500),
            ("2min", 120_000),
        ] {
            let parsed: DurationText = text.parse().unwrap();
            assert_eq!(parsed.0.as_millis(), expected, "{text}");
        }
        for text in ["", "5 parsecs", "-1s", "-1", ".", "1.2.3", "ten"] {
            let error = text.parse::<DurationText>().unwrap_err();
            assert!(error.to_string().contains(text), "{text}: {error}");
        }
    }

    #[test]
    fn duration_text_in_serde() {
        #[derive(Deserialize, serde::Serialize)]
        struct File {
            wait: DurationText,
        }
        let read = |json: &str| serde_json::from_str::<File>(json).map(|file| file.wait.0);
        assert_eq!(read(r#"{"wait": 7}"#).unwrap(), Duration::from_secs(7));
        assert_eq!(read(r#"{"wait": "7"}"#).unwrap(), Duration::from_secs(7));
        assert_eq!(
            read(r#"{"wait": "250ms"}"#).unwrap(),
            Duration::from_millis(250)
        );
        assert!(read(r#"{"wait": -7}"#).is_err());
        let error = read(r#"{"wait": "ten"}"#).unwrap_err().to_string();
        assert!(error.contains("ten"), "{error}");
        let file = File {
            wait: DurationText(Duration::from_millis(1500)),
        };
        assert_eq!(
            serde_json::to_string(&file).unwrap(),
            r#"{"wait":"1500ms"}"#
        );
    }
}
