//! [`Actor`]: who asked for a change, as the gateway vouches for it.
//!
//! The gateway authenticates every caller and forwards the verified
//! subject (the token's `sub`) to the services in one header of its own,
//! [`ACTOR_HEADER`], after removing that header from the client's request.
//! The services key idempotency records by it and write it into the audit
//! trail. A request without the header (a local call straight to a
//! service, no gateway) belongs to no subject: the anonymous caller.
//!
//! On the wire the subject is percent-encoded (UTF-8, everything but
//! `A-Z a-z 0-9 - . _ ~`), so any `sub` a security service issues fits a
//! header value and decodes back to the same text.
//!
//! ```
//! use store_domain::Actor;
//!
//! let actor = Actor::new("auth0|alice")?;
//! assert_eq!(actor.to_header_value(), "auth0%7Calice");
//! assert_eq!(Actor::from_header_value(b"auth0%7Calice")?, actor);
//! assert!(Actor::from_header_value(b"%FF").is_err());
//! # Ok::<(), store_domain::ActorError>(())
//! ```

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// The header that carries the gateway's verified subject to a service.
pub const ACTOR_HEADER: &str = "x-gateway-subject";

/// The longest subject accepted, in bytes of UTF-8 (decoded).
pub const ACTOR_MAX_BYTES: usize = 255;

/// What is percent-encoded: all but RFC 3986's unreserved characters.
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A verified subject: 1 to [`ACTOR_MAX_BYTES`] bytes of UTF-8 without
/// control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
pub struct Actor(String);

/// Why a subject is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActorError {
    /// Empty.
    #[error("the subject is empty")]
    Empty,
    /// Longer than [`ACTOR_MAX_BYTES`].
    #[error("the subject is longer than {ACTOR_MAX_BYTES} bytes")]
    TooLong,
    /// A control character, or a percent-encoding that is not UTF-8.
    #[error("the subject holds a control character or is not UTF-8")]
    Malformed,
}

impl ActorError {
    /// The API's code for a request whose subject header is refused:
    /// [`ErrorCode::InvalidSubject`] (400), whatever the reason.
    #[must_use]
    pub const fn code(self) -> ErrorCode {
        ErrorCode::InvalidSubject
    }
}

impl Actor {
    /// The subject `subject`, checked.
    pub fn new(subject: &str) -> Result<Self, ActorError> {
        if subject.is_empty() {
            return Err(ActorError::Empty);
        }
        if subject.len() > ACTOR_MAX_BYTES {
            return Err(ActorError::TooLong);
        }
        if subject.chars().any(char::is_control) {
            return Err(ActorError::Malformed);
        }
        Ok(Self(subject.to_owned()))
    }

    /// The subject as a header value of [`ACTOR_HEADER`] (percent-encoded,
    /// visible ASCII only).
    #[must_use]
    pub fn to_header_value(&self) -> String {
        utf8_percent_encode(&self.0, ENCODED).to_string()
    }

    /// The subject of a header value of [`ACTOR_HEADER`].
    pub fn from_header_value(value: &[u8]) -> Result<Self, ActorError> {
        // Three encoded bytes per decoded byte at most.
        if value.len() > 3 * ACTOR_MAX_BYTES {
            return Err(ActorError::TooLong);
        }
        let decoded = percent_decode(value)
            .decode_utf8()
            .map_err(|_| ActorError::Malformed)?;
        Self::new(&decoded)
    }

    /// The subject.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Actor {
    type Error = ActorError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<Actor> for String {
    fn from(actor: Actor) -> Self {
        actor.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refusals() {
        for subject in [
            "alice",
            "auth0|123",
            "Zoë 🙂",
            "a%41",
            "x".repeat(255).as_str(),
        ] {
            let actor = Actor::new(subject).unwrap();
            let wire = actor.to_header_value();
            assert!(wire.bytes().all(|b| b.is_ascii_graphic()), "{wire}");
            assert_eq!(Actor::from_header_value(wire.as_bytes()).unwrap(), actor);
        }
        assert_eq!(Actor::new(""), Err(ActorError::Empty));
        assert_eq!(Actor::new(&"x".repeat(256)), Err(ActorError::TooLong));
        assert_eq!(Actor::new("a\nb"), Err(ActorError::Malformed));
        assert_eq!(
            Actor::from_header_value(b"a%0Ab"),
            Err(ActorError::Malformed)
        );
        assert_eq!(
            Actor::from_header_value(b"%C3%28"),
            Err(ActorError::Malformed)
        );
        assert_eq!(Actor::from_header_value(b""), Err(ActorError::Empty));
        assert_eq!(
            Actor::from_header_value("%41".repeat(256).as_bytes()),
            Err(ActorError::TooLong)
        );
        for error in [
            ActorError::Empty,
            ActorError::TooLong,
            ActorError::Malformed,
        ] {
            assert_eq!(error.code(), ErrorCode::InvalidSubject);
            assert_eq!(error.code().status(), 400);
        }
    }

    proptest::proptest! {
        /// Any subject that is accepted survives the wire unchanged.
        #[test]
        fn any_subject(subject in "\\PC{1,80}") {
            if let Ok(actor) = Actor::new(&subject) {
                let wire = actor.to_header_value();
                proptest::prop_assert_eq!(Actor::from_header_value(wire.as_bytes()).unwrap(), actor);
            }
        }
    }
}
