//! The size of JSON as `serde_json` writes it compactly
//! (`serde_json::to_vec`), computed without writing it.

use std::fmt::{self, Write};

use serde_json::{Number, Value};

/// Bytes of a JSON string literal for `s`, quotes included, escaped as
/// `serde_json` escapes: `"` `\` and the C0 controls, nothing else.
pub(crate) fn string_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\x08' | b'\x0C' | b'\n' | b'\r' | b'\t' => 2,
            0x00..=0x1F => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Bytes of a number as `serde_json` writes it (its `Display` uses the same
/// `itoa`/`ryu` formatting as its serializer).
pub(crate) fn number_len(n: &Number) -> usize {
    struct Count(usize);
    impl Write for Count {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing into a counter cannot fail.
    let _ = write!(count, "{n}");
    count.0
}

/// Bytes of a value that is not an array or an object; `None` for those.
pub(crate) fn scalar_len(value: &Value) -> Option<usize> {
    match value {
        Value::Null | Value::Bool(true) => Some(4),
        Value::Bool(false) => Some(5),
        Value::Number(n) => Some(number_len(n)),
        Value::String(s) => Some(string_len(s)),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// Bytes of the brackets and commas of a container with `len` members (for
/// objects, not counting keys and colons).
pub(crate) const fn container_overhead(len: usize) -> usize {
    2 + len.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A recursive reference implementation, for small values only.
    fn value_len(value: &Value) -> usize {
        match value {
            Value::Array(items) => {
                container_overhead(items.len()) + items.iter().map(value_len).sum::<usize>()
            }
            Value::Object(map) => {
                container_overhead(map.len())
                    + map
                        .iter()
                        .map(|(k, v)| string_len(k) + 1 + value_len(v))
                        .sum::<usize>()
            }
            scalar => scalar_len(scalar).unwrap_or_default(),
        }
    }

    #[test]
    fn matches_serde_json() {
        let samples = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(-12345678901234_i64),
            json!(u64::MAX),
            json!(1.5e300),
            json!(-0.000123),
            json!(0.1),
            json!("plain"),
            json!("quote \" backslash \\ controls \u{0} \u{1f} \n \r \t \u{8} \u{c} del \u{7f}"),
            json!("unicode é ✓ 𝄞 \u{2028}"),
            json!([]),
            json!({}),
            json!([1, [2, [3]], {"a": {"b": []}}]),
            json!({"k\"ey": "v", "": null, "x": [true, false]}),
        ];
        for value in samples {
            let written = serde_json::to_vec(&value)
                .map(|v| v.len())
                .unwrap_or_default();
            assert_eq!(value_len(&value), written, "{value}");
        }
    }
}
