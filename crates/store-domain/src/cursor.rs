//! Opaque positions in a paged answer: [`Cursor`] in the list of stores,
//! ordered by `(created_at, id)`, and [`HistoryCursor`] in one store's
//! history, ordered by version. Both are URL-safe base64 (no padding) of a
//! payload whose first byte is its format, so one is never taken for the
//! other.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Store;

/// The format of a [`Cursor`], written as the payload's first byte.
const FORMAT_V1: u8 = 1;
/// Payload length of format 1: version, i128 nanoseconds, UUID.
const PAYLOAD_V1_LEN: usize = 1 + 16 + 16;
/// The format of a [`HistoryCursor`].
const FORMAT_HISTORY: u8 = 2;
/// The text of every [`Cursor`] whose time is before the year 6000 (all
/// of them in practice), and only text [`Cursor::decode`] reads: an
/// OpenAPI `pattern` (ECMA-262 and Python alike). Format 1, then 61 zero
/// bits of the time's 128, then any 67 bits of time and 128 of id.
pub const CURSOR_PATTERN: &str = "^AQAAAAAAAAA[A-H][A-Za-z0-9_-]{32}$";
/// The text of every [`HistoryCursor`], and only text
/// [`HistoryCursor::decode`] reads: format 2, a version from 0 to
/// `i32::MAX`, and the 2 zero bits that end the last character.
pub const HISTORY_CURSOR_PATTERN: &str = "^A[g-n][A-Za-z0-9_-]{4}[AEIMQUYcgkosw048]$";
/// Longest text accepted by [`Cursor::decode`] and
/// [`HistoryCursor::decode`], checked before decoding.
pub const CURSOR_MAX_CHARS: usize = 64;

/// The text of a payload of `format`.
fn seal<const N: usize>(format: u8, body: [u8; N]) -> String {
    let mut payload = Vec::with_capacity(1 + N);
    payload.push(format);
    payload.extend_from_slice(&body);
    URL_SAFE_NO_PAD.encode(payload)
}

/// The body of `text`, a payload of `format` with an `N`-byte body.
fn open<const N: usize>(text: &str, format: u8) -> Result<[u8; N], CursorError> {
    if text.len() > CURSOR_MAX_CHARS {
        return Err(CursorError::TooLong);
    }
    let payload = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| CursorError::Encoding)?;
    let Some((&found, body)) = payload.split_first() else {
        return Err(CursorError::Length);
    };
    if found != format {
        return Err(CursorError::Format(found));
    }
    <[u8; N]>::try_from(body).map_err(|_| CursorError::Length)
}

/// A position in the list of stores: the `(created_at, id)` of the last store
/// of a page. The next page starts after it.
///
/// On the wire it is an opaque string (URL-safe base64 without padding of a
/// small versioned payload; 44 characters today): clients pass it back as
/// `cursor=` and never build or read one. It is not signed: a client that
/// edits it only moves its own position in the list.
///
/// ```
/// use store_domain::Cursor;
/// use time::OffsetDateTime;
/// use uuid::Uuid;
///
/// let cursor = Cursor::new(OffsetDateTime::UNIX_EPOCH, Uuid::nil());
/// let text = cursor.encode();
/// assert_eq!(text.len(), 44);
/// assert_eq!(Cursor::decode(&text)?, cursor);
/// assert!(Cursor::decode("not a cursor").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// `created_at` of the last store seen, in UTC.
    created_at: OffsetDateTime,
    /// `id` of the last store seen.
    id: Uuid,
}

impl Cursor {
    /// The position just after a store with this `created_at` and `id`.
    #[must_use]
    pub fn new(created_at: OffsetDateTime, id: Uuid) -> Self {
        Self {
            created_at: created_at.to_offset(time::UtcOffset::UTC),
            id,
        }
    }

    /// The position just after `store`.
    #[must_use]
    pub fn after(store: &Store) -> Self {
        Self::new(store.created_at, store.id)
    }

    /// `created_at` of the last store seen, in UTC.
    #[must_use]
    pub const fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }

    /// `id` of the last store seen.
    #[must_use]
    pub const fn id(&self) -> Uuid {
        self.id
    }

    /// The opaque text form.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut body = [0_u8; PAYLOAD_V1_LEN - 1];
        body[..16].copy_from_slice(&self.created_at.unix_timestamp_nanos().to_be_bytes());
        body[16..].copy_from_slice(self.id.as_bytes());
        seal(FORMAT_V1, body)
    }

    /// Reads the text form. Never panics, whatever the input.
    ///
    /// # Errors
    ///
    /// [`CursorError`] when the text is not a cursor this version wrote.
    pub fn decode(text: &str) -> Result<Self, CursorError> {
        let body: [u8; PAYLOAD_V1_LEN - 1] = open(text, FORMAT_V1)?;
        let (nanos, id) = body.split_at(16);
        let (Ok(nanos), Ok(id)) = (<[u8; 16]>::try_from(nanos), <[u8; 16]>::try_from(id)) else {
            return Err(CursorError::Length);
        };
        let nanos = i128::from_be_bytes(nanos);
        // Stores are created long after 1970; an earlier time can only be a
        // forged cursor, and one before 4713 BC would even make PostgreSQL's
        // `timestamptz` fail ("timestamp out of range"): refuse it here as
        // bad input, not later as a server error.
        if nanos < 0 {
            return Err(CursorError::Time);
        }
        let created_at =
            OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| CursorError::Time)?;
        Ok(Self {
            created_at,
            id: Uuid::from_bytes(id),
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::decode(s)
    }
}

impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::decode(&text).map_err(D::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Cursor {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .max_length(Some(CURSOR_MAX_CHARS))
            .description(Some(
                "Opaque position in the list; pass back the `nextCursor` of the previous page.",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Cursor {}

/// A position in one store's history: the version of the last event of a
/// page. The next page starts after it (after version 0: at the first
/// event). Opaque on the wire, like
/// [`Cursor`] (7 characters today); a list cursor is not one.
///
/// ```
/// use store_domain::{Cursor, HistoryCursor};
/// use time::OffsetDateTime;
/// use uuid::Uuid;
///
/// let cursor = HistoryCursor::after(7);
/// assert_eq!(HistoryCursor::decode(&cursor.encode())?.version(), 7);
/// let list = Cursor::new(OffsetDateTime::UNIX_EPOCH, Uuid::nil()).encode();
/// assert!(HistoryCursor::decode(&list).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HistoryCursor {
    /// The version of the last event seen (0: none).
    version: i32,
}

impl HistoryCursor {
    /// The position just after the event of `version`.
    #[must_use]
    pub const fn after(version: i32) -> Self {
        Self { version }
    }

    /// The version of the last event seen.
    #[must_use]
    pub const fn version(&self) -> i32 {
        self.version
    }

    /// The opaque text form.
    #[must_use]
    pub fn encode(&self) -> String {
        seal(FORMAT_HISTORY, self.version.to_be_bytes())
    }

    /// Reads the text form. Never panics, whatever the input.
    ///
    /// # Errors
    ///
    /// [`CursorError`] when the text is not a history cursor this version
    /// wrote ([`CursorError::Version`] for a negative version).
    pub fn decode(text: &str) -> Result<Self, CursorError> {
        let version = i32::from_be_bytes(open(text, FORMAT_HISTORY)?);
        if version < 0 {
            return Err(CursorError::Version);
        }
        Ok(Self { version })
    }
}

impl fmt::Display for HistoryCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl FromStr for HistoryCursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::decode(s)
    }
}

impl Serialize for HistoryCursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for HistoryCursor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::decode(&text).map_err(D::Error::custom)
    }
}

/// Text that is not a cursor. None of these is retryable: the client should
/// start again from the first page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// Longer than any cursor (checked before decoding).
    #[error("the cursor is too long")]
    TooLong,
    /// Not URL-safe base64.
    #[error("the cursor is not a valid cursor string")]
    Encoding,
    /// The payload has the wrong length.
    #[error("the cursor has the wrong length")]
    Length,
    /// A format this version does not read.
    #[error("the cursor has an unknown format ({0})")]
    Format(u8),
    /// The time is out of range (before 1970, or beyond what `time` holds).
    #[error("the cursor's time is out of range")]
    Time,
    /// A history cursor's version is negative.
    #[error("the cursor's version is out of range")]
    Version,
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn a_time_before_1970_is_refused() {
        let cursor = Cursor::new(datetime!(1969-12-31 23:59:59.999999999 UTC), Uuid::nil());
        assert_eq!(Cursor::decode(&cursor.encode()), Err(CursorError::Time));
        let ancient = Cursor::new(datetime!(-5000-01-01 00:00:00 UTC), Uuid::nil());
        assert_eq!(Cursor::decode(&ancient.encode()), Err(CursorError::Time));
    }

    #[test]
    fn round_trips_exactly() {
        let id = Uuid::from_u128(0x0192_0000_7000_8000_0000_0000_0000_0001);
        for at in [
            datetime!(2026-11-26 09:30:00.123456789 UTC),
            datetime!(1970-01-01 00:00:00 UTC),
            datetime!(2026-11-26 10:30:00.5 +01:00),
        ] {
            let cursor = Cursor::new(at, id);
            let text = cursor.encode();
            assert_eq!(text.len(), 44);
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            let back = Cursor::decode(&text).unwrap();
            assert_eq!(back, cursor);
            assert_eq!(back.created_at(), at);
            assert_eq!(back.created_at().offset(), time::UtcOffset::UTC);
            assert_eq!(back.id(), id);
        }
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let valid = Cursor::new(datetime!(2026-01-01 00:00 UTC), Uuid::nil()).encode();
        let cases: [(String, CursorError); 7] = [
            (String::new(), CursorError::Length),
            ("!!!!".into(), CursorError::Encoding),
            ("a".repeat(65), CursorError::TooLong),
            (valid[..40].to_owned(), CursorError::Length),
            (URL_SAFE_NO_PAD.encode([3_u8; 33]), CursorError::Format(3)),
            (
                URL_SAFE_NO_PAD.encode({
                    let mut p = [0xff_u8; 33];
                    p[0] = 1;
                    p[1] = 0x7f;
                    p
                }),
                CursorError::Time,
            ),
            (format!("{valid}=="), CursorError::Encoding),
        ];
        for (text, expected) in cases {
            assert_eq!(Cursor::decode(&text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn serde_is_the_string() {
        let cursor = Cursor::new(datetime!(2026-01-01 00:00 UTC), Uuid::nil());
        let json = serde_json::to_string(&cursor).unwrap();
        assert_eq!(json, format!("\"{}\"", cursor.encode()));
        assert_eq!(serde_json::from_str::<Cursor>(&json).unwrap(), cursor);
        let err = serde_json::from_str::<Cursor>("\"zzz\"").unwrap_err();
        assert!(err.to_string().starts_with("the cursor"), "{err}");
    }

    #[test]
    fn history_cursors_round_trip_and_refuse_garbage() {
        for version in [0, 1, 2, 1 << 20, i32::MAX] {
            let cursor = HistoryCursor::after(version);
            let text = cursor.encode();
            assert_eq!(text.len(), 7);
            assert_eq!(HistoryCursor::decode(&text), Ok(cursor));
            assert_eq!(
                serde_json::to_string(&cursor).unwrap(),
                format!("\"{text}\"")
            );
        }
        let list = Cursor::new(datetime!(2026-01-01 00:00 UTC), Uuid::nil()).encode();
        let cases: [(String, CursorError); 6] = [
            (list.clone(), CursorError::Format(1)),
            (HistoryCursor::after(-1).encode(), CursorError::Version),
            (
                HistoryCursor::after(i32::MIN).encode(),
                CursorError::Version,
            ),
            (URL_SAFE_NO_PAD.encode([2_u8; 4]), CursorError::Length),
            ("a".repeat(65), CursorError::TooLong),
            ("%%".into(), CursorError::Encoding),
        ];
        for (text, expected) in cases {
            assert_eq!(HistoryCursor::decode(&text), Err(expected), "{text:?}");
        }
        assert_eq!(
            Cursor::decode(&HistoryCursor::after(3).encode()),
            Err(CursorError::Format(2))
        );
    }

    proptest::proptest! {
        /// Every cursor matches its pattern, and every text that matches
        /// decodes: an OpenAPI document that states the pattern is exact.
        #[test]
        fn the_patterns_are_exactly_the_cursors(
            nanos in 0_i128..(1 << 67),
            id in proptest::num::u128::ANY,
            version in 0..=i32::MAX,
            list_text in CURSOR_PATTERN.trim_start_matches('^').trim_end_matches('$'),
            history_text in HISTORY_CURSOR_PATTERN.trim_start_matches('^').trim_end_matches('$'),
        ) {
            let list = regex::Regex::new(CURSOR_PATTERN).unwrap();
            let history = regex::Regex::new(HISTORY_CURSOR_PATTERN).unwrap();
            let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            proptest::prop_assert!(list.is_match(&Cursor::new(at, Uuid::from_u128(id)).encode()));
            proptest::prop_assert!(history.is_match(&HistoryCursor::after(version).encode()));
            proptest::prop_assert!(Cursor::decode(&list_text).is_ok(), "{}", list_text);
            proptest::prop_assert!(HistoryCursor::decode(&history_text).is_ok(), "{}", history_text);
        }

        #[test]
        fn history_decode_never_panics(text in ".{0,80}") {
            let _ = HistoryCursor::decode(&text);
        }

        #[test]
        fn times_before_1970_are_refused(nanos in i128::MIN..0, id in proptest::num::u128::ANY) {
            let mut payload = vec![FORMAT_V1];
            payload.extend_from_slice(&nanos.to_be_bytes());
            payload.extend_from_slice(&id.to_be_bytes());
            proptest::prop_assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode(payload)), Err(CursorError::Time));
        }

        #[test]
        fn decode_never_panics(text in ".{0,80}") {
            let _ = Cursor::decode(&text);
        }

        #[test]
        fn decode_of_any_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..60)) {
            let _ = Cursor::decode(&URL_SAFE_NO_PAD.encode(bytes));
        }

        #[test]
        fn any_valid_cursor_round_trips(nanos in 0_i128..10_000_000_000_000_000_000, id in proptest::num::u128::ANY) {
            let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            let cursor = Cursor::new(at, Uuid::from_u128(id));
            proptest::prop_assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        }
    }
}
