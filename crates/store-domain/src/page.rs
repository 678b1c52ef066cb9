//! The paged endpoints' types: [`PageLimit`]; the list's [`StorePage`]
//! and query [`StoreQuery`]; a history page's query [`HistoryQuery`] (its
//! body is [`crate::StoreHistory`]).

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::validation::{Collector, FieldError, FieldErrorCode};
use crate::{Cursor, HistoryCursor, Store, StoreStatus, ValidationErrors};

/// How many items (stores, events) a page holds: 1 to 200, 50 by default.
///
/// ```
/// use store_domain::PageLimit;
///
/// assert_eq!(PageLimit::default().get(), 50);
/// assert_eq!("200".parse::<PageLimit>()?.get(), 200);
/// assert!("0".parse::<PageLimit>().is_err());
/// assert!(PageLimit::new(201).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PageLimit(u16);

impl PageLimit {
    /// The smallest limit.
    pub const MIN: u16 = 1;
    /// The largest limit.
    pub const MAX: u16 = 200;
    /// The limit when none is given.
    pub const DEFAULT: Self = Self(50);

    /// A limit, if `limit` is within [`MIN`](Self::MIN)..=[`MAX`](Self::MAX).
    ///
    /// # Errors
    ///
    /// [`PageLimitError::OutOfRange`] otherwise.
    pub fn new(limit: u64) -> Result<Self, PageLimitError> {
        match u16::try_from(limit) {
            Ok(limit) if (Self::MIN..=Self::MAX).contains(&limit) => Ok(Self(limit)),
            _ => Err(PageLimitError::OutOfRange),
        }
    }

    /// The number of items.
    #[must_use]
    pub const fn get(self) -> u16 {
        self.0
    }

    /// How many rows to fetch to know whether another page follows: one
    /// more than the limit (`LIMIT $n` in SQL takes an `i64`).
    #[must_use]
    pub const fn fetch(self) -> i64 {
        self.0 as i64 + 1
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for PageLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for PageLimit {
    type Err = PageLimitError;

    /// Parses decimal digits only (no sign, no spaces).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PageLimitError::NotANumber);
        }
        // Many digits are simply too large.
        Self::new(s.parse::<u64>().unwrap_or(u64::MAX))
    }
}

impl<'de> Deserialize<'de> for PageLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// A limit written as a number (JSON) or as text (a query string).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<'a> {
            /// `50`.
            Number(u64),
            /// `"50"`.
            Text(std::borrow::Cow<'a, str>),
        }
        match Raw::deserialize(deserializer) {
            Ok(Raw::Number(n)) => Self::new(n),
            Ok(Raw::Text(text)) => text.parse(),
            Err(_) => Err(PageLimitError::NotANumber),
        }
        .map_err(D::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for PageLimit {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .minimum(Some(Self::MIN))
            .maximum(Some(Self::MAX))
            .default(Some(Self::DEFAULT.0.into()))
            .description(Some("How many items a page holds."))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for PageLimit {}

/// A `limit` that is not a whole number from 1 to 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PageLimitError {
    /// Not decimal digits.
    #[error("limit must be a whole number from 1 to 200")]
    NotANumber,
    /// Outside 1..=200.
    #[error("limit must be from 1 to 200")]
    OutOfRange,
}

/// The body of `GET /api/stores`: one page of stores, and the cursor of the
/// next page (`null` on the last one).
///
/// ```json
/// {"stores": [...], "count": 2, "nextCursor": "AQAAAA..."}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StorePage {
    /// The stores of this page, in list order.
    pub stores: Vec<Store>,
    /// How many stores this page holds (not the total: counting every store
    /// would make each page cost as much as the table).
    pub count: usize,
    /// Where the next page starts; `null` when this is the last page.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub next_cursor: Option<Cursor>,
}

impl StorePage {
    /// A page of `stores`, and the cursor of the next one.
    #[must_use]
    pub fn new(stores: Vec<Store>, next_cursor: Option<Cursor>) -> Self {
        Self {
            count: stores.len(),
            stores,
            next_cursor,
        }
    }

    /// A page from rows fetched with `LIMIT` [`PageLimit::fetch`] (one more
    /// than the limit): when that extra row came, it is dropped and the
    /// next cursor points after the last store kept.
    #[must_use]
    pub fn from_rows(mut rows: Vec<Store>, limit: PageLimit) -> Self {
        let limit = usize::from(limit.get());
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(Cursor::after)
        } else {
            None
        };
        Self::new(rows, next_cursor)
    }
}

/// The query of `GET /api/stores`: `limit`, `cursor` and `status`.
///
/// Unknown parameters are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams, utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct StoreQuery {
    /// How many stores per page (1 to 200, default 50).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(inline))]
    pub limit: PageLimit,
    /// Where to start: the previous page's `nextCursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<String>), schema(value_type = Option<String>))]
    pub cursor: Option<Cursor>,
    /// Only stores in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StoreStatus>,
}

impl StoreQuery {
    /// Reads the query from its parameters, as decoded `(name, value)`
    /// pairs, reporting every wrong one (a parameter given twice is wrong
    /// too). Unknown parameters are ignored.
    ///
    /// ```
    /// use store_domain::{StoreQuery, StoreStatus};
    ///
    /// let query = StoreQuery::from_pairs([("limit", "10"), ("status", "ACTIVE")])?;
    /// assert_eq!(query.limit.get(), 10);
    /// assert_eq!(query.status, Some(StoreStatus::Active));
    ///
    /// let err = StoreQuery::from_pairs([("limit", "0"), ("cursor", "nope")]).unwrap_err();
    /// assert_eq!(err.errors().len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ValidationErrors`] naming each wrong parameter (`limit`, `cursor`,
    /// `status`).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ValidationErrors> {
        let mut query = Self::default();
        let errors = read_params(
            pairs,
            ["limit", "cursor", "status"],
            |slot, value, errors| match slot {
                0 => read_limit(value, &mut query.limit, errors),
                1 => read_cursor(value, &mut query.cursor, errors),
                _ => match value.parse() {
                    Ok(status) => query.status = Some(status),
                    Err(_) => errors.push(param_error(
                        "status",
                        FieldErrorCode::InvalidValue,
                        "status must be one of PROVISIONING, ACTIVE, DECOMMISSIONED",
                    )),
                },
            },
        );
        errors.finish(Some(query))
    }

    /// The same query from `cursor` on: the next page's query.
    #[must_use]
    pub const fn next(self, cursor: Cursor) -> Self {
        Self {
            cursor: Some(cursor),
            ..self
        }
    }

    /// The query string, without `?`: `limit=50&status=ACTIVE&cursor=...`.
    /// Every part is URL-safe as it is, so it needs no escaping; it is what
    /// a `Link: <...>; rel="next"` header carries.
    #[must_use]
    pub fn to_query_string(&self) -> String {
        let mut query = format!("limit={}", self.limit);
        if let Some(status) = self.status {
            query.push_str("&status=");
            query.push_str(status.as_str());
        }
        if let Some(cursor) = self.cursor {
            query.push_str("&cursor=");
            query.push_str(&cursor.encode());
        }
        query
    }
}

/// The query of `GET /api/stores/{id}/history`: `limit` and `cursor`,
/// read as [`StoreQuery`] reads them.
///
/// ```
/// use store_domain::{HistoryCursor, HistoryQuery};
///
/// let cursor = HistoryCursor::after(50).encode();
/// let query = HistoryQuery::from_pairs([("limit", "10"), ("cursor", cursor.as_str())])?;
/// assert_eq!((query.limit.get(), query.after()), (10, 50));
/// assert_eq!(query.to_query_string(), format!("limit=10&cursor={cursor}"));
/// assert_eq!(HistoryQuery::default().after(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct HistoryQuery {
    /// How many events per page (1 to 200, default 50).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(inline))]
    pub limit: PageLimit,
    /// Where to start: the previous page's `nextCursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<String>))]
    pub cursor: Option<HistoryCursor>,
}

impl HistoryQuery {
    /// Reads the query from its parameters, as [`StoreQuery::from_pairs`]
    /// does.
    ///
    /// # Errors
    ///
    /// [`ValidationErrors`] naming each wrong parameter (`limit`, `cursor`).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ValidationErrors> {
        let mut query = Self::default();
        let errors = read_params(pairs, ["limit", "cursor"], |slot, value, errors| {
            if slot == 0 {
                read_limit(value, &mut query.limit, errors);
            } else {
                read_cursor(value, &mut query.cursor, errors);
            }
        });
        errors.finish(Some(query))
    }

    /// The version after which the page starts (0: from the first event).
    #[must_use]
    pub fn after(&self) -> i32 {
        self.cursor.map_or(0, |c| c.version())
    }

    /// The same query from `cursor` on: the next page's query.
    #[must_use]
    pub const fn next(self, cursor: HistoryCursor) -> Self {
        Self {
            cursor: Some(cursor),
            ..self
        }
    }

    /// The query string, without `?`: `limit=50&cursor=...` (URL-safe as
    /// it is).
    #[must_use]
    pub fn to_query_string(&self) -> String {
        let mut query = format!("limit={}", self.limit);
        if let Some(cursor) = self.cursor {
            query.push_str("&cursor=");
            query.push_str(&cursor.encode());
        }
        query
    }
}

/// Reads query parameters: the value of `names[slot]` goes to
/// `read(slot, value, errors)`. A parameter given twice is an error of its
/// own; unknown parameters are ignored.
fn read_params<'a, const N: usize>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    names: [&str; N],
    mut read: impl FnMut(usize, &'a str, &mut Collector),
) -> Collector {
    let mut errors = Collector::default();
    let mut seen = [false; N];
    for (name, value) in pairs {
        let Some(slot) = names.iter().position(|n| *n == name) else {
            continue;
        };
        if std::mem::replace(&mut seen[slot], true) {
            errors.push(param_error(
                name,
                FieldErrorCode::InvalidValue,
                format!("{name} is given more than once"),
            ));
            continue;
        }
        read(slot, value, &mut errors);
    }
    errors
}

/// Reads `limit`.
fn read_limit(value: &str, limit: &mut PageLimit, errors: &mut Collector) {
    match value.parse() {
        Ok(parsed) => *limit = parsed,
        Err(PageLimitError::NotANumber) => errors.push(param_error(
            "limit",
            FieldErrorCode::InvalidValue,
            PageLimitError::NotANumber.to_string(),
        )),
        Err(err) => errors.push(param_error(
            "limit",
            FieldErrorCode::OutOfRange,
            err.to_string(),
        )),
    }
}

/// Reads `cursor`, a list or a history cursor.
fn read_cursor<C: FromStr>(value: &str, cursor: &mut Option<C>, errors: &mut Collector) {
    match value.parse() {
        Ok(parsed) => *cursor = Some(parsed),
        Err(_) => errors.push(param_error(
            "cursor",
            FieldErrorCode::InvalidValue,
            "cursor is not one this API gave out; start again without it",
        )),
    }
}

/// An error of a query parameter (its pointer is empty: it is not in a body).
fn param_error(name: &str, code: FieldErrorCode, message: impl Into<String>) -> FieldError {
    FieldError::new(name, "", code, message)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;
    use uuid::Uuid;

    use super::*;

    fn store(n: u128) -> Store {
        Store {
            id: Uuid::from_u128(n),
            name: format!("Store {n}"),
            status: StoreStatus::Active,
            config: serde_json::Map::new(),
            version: 1,
            created_at: datetime!(2026-01-01 00:00 UTC),
            updated_at: datetime!(2026-01-01 00:00 UTC),
            secret_keys: Vec::new(),
        }
    }

    #[test]
    fn limit_bounds() {
        assert_eq!(PageLimit::new(0), Err(PageLimitError::OutOfRange));
        assert_eq!(PageLimit::new(1).map(PageLimit::get), Ok(1));
        assert_eq!(PageLimit::new(200).map(PageLimit::get), Ok(200));
        assert_eq!(PageLimit::new(201), Err(PageLimitError::OutOfRange));
        assert_eq!(PageLimit::new(u64::MAX), Err(PageLimitError::OutOfRange));
        assert_eq!(PageLimit::new(65_537), Err(PageLimitError::OutOfRange));
        assert_eq!(PageLimit::default().fetch(), 51);
    }

    #[test]
    fn limit_parsing() {
        let cases = [
            ("1", Ok(1)),
            ("050", Ok(50)),
            ("200", Ok(200)),
            ("201", Err(PageLimitError::OutOfRange)),
            ("99999999999999999999999", Err(PageLimitError::OutOfRange)),
            ("", Err(PageLimitError::NotANumber)),
            ("-1", Err(PageLimitError::NotANumber)),
            ("+5", Err(PageLimitError::NotANumber)),
            (" 5", Err(PageLimitError::NotANumber)),
            ("5.0", Err(PageLimitError::NotANumber)),
            ("ten", Err(PageLimitError::NotANumber)),
        ];
        for (text, expected) in cases {
            assert_eq!(
                text.parse::<PageLimit>().map(PageLimit::get),
                expected,
                "{text:?}"
            );
        }
    }

    #[test]
    fn limit_serde() {
        assert_eq!(serde_json::to_string(&PageLimit::DEFAULT).unwrap(), "50");
        assert_eq!(serde_json::from_str::<PageLimit>("7").unwrap().get(), 7);
        assert_eq!(serde_json::from_str::<PageLimit>("\"7\"").unwrap().get(), 7);
        for bad in ["0", "201", "-3", "1.5", "null", "\"x\""] {
            assert!(serde_json::from_str::<PageLimit>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn page_from_rows() {
        let limit = PageLimit::new(2).unwrap();
        let page = StorePage::from_rows(vec![store(1), store(2), store(3)], limit);
        assert_eq!(page.count, 2);
        assert_eq!(page.stores.len(), 2);
        assert_eq!(page.next_cursor, Some(Cursor::after(&store(2))));

        let last = StorePage::from_rows(vec![store(1), store(2)], limit);
        assert_eq!((last.count, last.next_cursor), (2, None));
        let empty = StorePage::from_rows(Vec::new(), limit);
        assert_eq!((empty.count, empty.next_cursor), (0, None));
    }

    #[test]
    fn query_from_pairs() {
        let cursor = Cursor::after(&store(9));
        let encoded = cursor.encode();
        let query = StoreQuery::from_pairs([
            ("cursor", encoded.as_str()),
            ("other", "ignored"),
            ("status", "DECOMMISSIONED"),
        ])
        .unwrap();
        assert_eq!(
            query,
            StoreQuery {
                limit: PageLimit::DEFAULT,
                cursor: Some(cursor),
                status: Some(StoreStatus::Decommissioned),
            }
        );
        let errors = StoreQuery::from_pairs([("limit", "x"), ("limit", "5"), ("status", "gone")])
            .unwrap_err();
        let got: Vec<(&str, &str)> = errors
            .errors()
            .iter()
            .map(|e| (e.field.as_str(), e.code.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("status", "invalid_value"),
                ("limit", "invalid_value"),
                ("limit", "invalid_value")
            ]
        );
        let errors = StoreQuery::from_pairs([("limit", "500")]).unwrap_err();
        assert!(errors.has("limit", FieldErrorCode::OutOfRange));
    }

    #[test]
    fn query_string_round_trips() {
        let cursor = Cursor::after(&store(4));
        let query = StoreQuery {
            limit: PageLimit::new(10).unwrap(),
            cursor: None,
            status: Some(StoreStatus::Active),
        }
        .next(cursor);
        let text = query.to_query_string();
        assert_eq!(
            text,
            format!("limit=10&status=ACTIVE&cursor={}", cursor.encode())
        );
        let pairs: Vec<(&str, &str)> = text
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .collect();
        assert_eq!(StoreQuery::from_pairs(pairs).unwrap(), query);
        assert_eq!(StoreQuery::default().to_query_string(), "limit=50");
    }
}
