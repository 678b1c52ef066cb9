//! The first look at a JSON document: its shape (nesting depth, keys per
//! object, array lengths) and its raw size, checked without recursion before
//! any string is cleaned; and [`dismantle`], which drops a value of any depth
//! without recursion.
//!
//! `serde_json::Value` drops itself recursively, so a value nested 100 000
//! deep overflows the stack when dropped: a refused document is dismantled
//! here, and the cleaning walk, which does recurse, only ever sees documents
//! whose depth this check has bounded.

use std::iter::Enumerate;
use std::slice;

use serde_json::{Value, map};

use crate::SanitizeError;
use crate::json_size::{container_overhead, scalar_len, string_len};
use crate::pointer;

/// The bounds checked before cleaning.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Arrays/objects that may enclose one another.
    pub(crate) max_depth: usize,
    /// Keys per object.
    pub(crate) max_keys: usize,
    /// Elements per array.
    pub(crate) max_array_len: usize,
    /// Bytes of the document as compact JSON.
    pub(crate) max_input_bytes: usize,
}

/// How a value was reached from its parent.
#[derive(Debug, Clone, Copy)]
enum Segment<'a> {
    /// The document itself.
    Root,
    /// An array element.
    Index(usize),
    /// An object member, by its raw key.
    Key(&'a str),
}

/// The members of an array or object still to visit.
enum Members<'a> {
    /// Elements of an array.
    Array(Enumerate<slice::Iter<'a, Value>>),
    /// Members of an object.
    Object(map::Iter<'a>),
}

/// One open array or object on the walk.
struct Frame<'a> {
    /// How this container was reached.
    reached_by: Segment<'a>,
    /// What is left of it.
    members: Members<'a>,
}

/// The depth-first walk; `stack` never holds more than `max_depth` frames.
struct Walk<'a, 'k> {
    /// The bounds.
    limits: Limits,
    /// Turns a raw key into the form shown in a pointer.
    key_name: &'k dyn Fn(&str) -> String,
    /// The open containers, outermost first.
    stack: Vec<Frame<'a>>,
    /// Bytes of compact JSON so far.
    size: usize,
}

/// Checks the shape and raw size of `value` without recursion.
///
/// `key_name` turns a raw key into its form in an error's pointer.
pub(crate) fn check(
    value: &Value,
    limits: Limits,
    key_name: &dyn Fn(&str) -> String,
) -> Result<(), SanitizeError> {
    let mut walk = Walk {
        limits,
        key_name,
        stack: Vec::new(),
        size: 0,
    };
    walk.enter(value, Segment::Root)?;
    while let Some(frame) = walk.stack.last_mut() {
        let next = match &mut frame.members {
            Members::Array(elements) => elements.next().map(|(i, v)| (Segment::Index(i), v)),
            Members::Object(members) => members.next().map(|(k, v)| (Segment::Key(k.as_str()), v)),
        };
        match next {
            Some((segment, child)) => walk.enter(child, segment)?,
            None => {
                walk.stack.pop();
            }
        }
    }
    if walk.size > limits.max_input_bytes {
        return Err(SanitizeError::DocumentTooLarge {
            max: limits.max_input_bytes,
            actual: walk.size,
        });
    }
    Ok(())
}

impl<'a> Walk<'a, '_> {
    /// Counts `value` and opens a frame for it if it is a container.
    fn enter(&mut self, value: &'a Value, segment: Segment<'a>) -> Result<(), SanitizeError> {
        let (len, members) = match value {
            Value::Array(elements) => (elements.len(), Members::Array(elements.iter().enumerate())),
            Value::Object(map) => (map.len(), Members::Object(map.iter())),
            scalar => {
                self.size = self
                    .size
                    .saturating_add(scalar_len(scalar).unwrap_or_default());
                return Ok(());
            }
        };
        if self.stack.len() >= self.limits.max_depth {
            let path = self.pointer(segment);
            return Err(SanitizeError::TooDeep {
                path,
                max: self.limits.max_depth,
            });
        }
        let mut size = container_overhead(len);
        match value {
            Value::Array(_) if len > self.limits.max_array_len => {
                let path = self.pointer(segment);
                return Err(SanitizeError::ArrayTooLong {
                    path,
                    max: self.limits.max_array_len,
                    actual: len,
                });
            }
            Value::Object(_) if len > self.limits.max_keys => {
                let path = self.pointer(segment);
                return Err(SanitizeError::TooManyKeys {
                    path,
                    max: self.limits.max_keys,
                    actual: len,
                });
            }
            Value::Object(map) => {
                size = map
                    .keys()
                    .fold(size, |size, key| size.saturating_add(string_len(key) + 1));
            }
            _ => {}
        }
        self.size = self.size.saturating_add(size);
        self.stack.push(Frame {
            reached_by: segment,
            members,
        });
        Ok(())
    }

    /// The pointer of a value reached by `last` from the innermost open frame.
    fn pointer(&self, last: Segment<'_>) -> String {
        let mut path = String::new();
        let segments = self
            .stack
            .iter()
            .map(|frame| frame.reached_by)
            .chain([last]);
        for segment in segments {
            match segment {
                Segment::Root => {}
                Segment::Index(i) => pointer::push_index(&mut path, i),
                Segment::Key(raw) => pointer::push_key(&mut path, &(self.key_name)(raw)),
            }
        }
        path
    }
}

/// Drops `value` without recursion, however deep it is.
pub(crate) fn dismantle(value: Value) {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::Array(elements) => pending.extend(elements),
            Value::Object(map) => pending.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LIMITS: Limits = Limits {
        max_depth: 3,
        max_keys: 2,
        max_array_len: 2,
        max_input_bytes: 100,
    };

    fn run(value: &Value) -> Result<(), SanitizeError> {
        check(value, LIMITS, &|raw: &str| raw.to_uppercase())
    }

    #[test]
    fn within_bounds() {
        assert_eq!(run(&json!({"a": [1, {"b": "c"}], "d": null})), Ok(()));
        assert_eq!(run(&json!("scalar")), Ok(()));
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(run(&json!([[[1]]])), Ok(()));
        assert_eq!(
            run(&json!({"a": [[[]]]})),
            Err(SanitizeError::TooDeep {
                path: "/A/0/0".into(),
                max: 3
            })
        );
    }

    #[test]
    fn counts() {
        assert_eq!(
            run(&json!({"a/b": [1, 2, 3]})),
            Err(SanitizeError::ArrayTooLong {
                path: "/A~1B".into(),
                max: 2,
                actual: 3
            })
        );
        assert_eq!(
            run(&json!([{"a": 1, "b": 2, "c": 3}])),
            Err(SanitizeError::TooManyKeys {
                path: "/0".into(),
                max: 2,
                actual: 3
            })
        );
    }

    #[test]
    fn raw_size_is_compact_json_bytes() {
        let value = json!({"k": "x".repeat(92)});
        let actual = serde_json::to_vec(&value)
            .map(|v| v.len())
            .unwrap_or_default();
        assert_eq!(actual, 100);
        assert_eq!(run(&value), Ok(()));
        let value = json!({"k": "x".repeat(93)});
        assert_eq!(
            run(&value),
            Err(SanitizeError::DocumentTooLarge {
                max: 100,
                actual: 101
            })
        );
    }

    #[test]
    fn dismantles_very_deep_values() {
        let mut value = Value::Null;
        for i in 0..200_000 {
            value = if i % 2 == 0 {
                Value::Array(vec![value])
            } else {
                // Not `json!`: it would serialize `value` recursively.
                Value::Object([("k".to_owned(), value)].into_iter().collect())
            };
        }
        dismantle(value);
    }
}
