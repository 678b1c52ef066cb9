//! Who the caller is once authenticated: the [`Principal`] a verified
//! token becomes (its `sub` must be a valid [`store_domain::Actor`]), the
//! [`Verifier`] that makes it, and the [`Authenticated`] mark on responses.
//! Below the layers that read them (authentication, rate limits, the proxy,
//! degraded mode).

use std::sync::Arc;

use axum::http::HeaderValue;
use jwt_verify::{FromClaims, Scopes};

/// Why a request was not authenticated.
pub use jwt_verify::VerifyError as AuthError;

/// Verifies tokens into [`Principal`]s (and holds the key store).
pub type Verifier = jwt_verify::Verifier<Principal>;

/// The authenticated caller (request extension, as `Arc<Principal>`).
/// Holds no token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The `sub` claim (never empty).
    pub sub: Arc<str>,
    /// The subject as the value of [`store_domain::ACTOR_HEADER`].
    pub actor_header: HeaderValue,
    /// The granted scopes.
    pub scopes: Scopes,
}

impl Principal {
    /// The principal of subject `sub` with `scopes`, or `None` when `sub`
    /// is not a valid actor (empty, too long, control characters).
    pub fn new(sub: &str, scopes: Scopes) -> Option<Self> {
        let actor = store_domain::Actor::new(sub).ok()?;
        let actor_header = HeaderValue::from_str(&actor.to_header_value()).ok()?;
        Some(Self {
            sub: sub.into(),
            actor_header,
            scopes,
        })
    }
}

impl FromClaims for Principal {
    fn from_claims(sub: &str, scopes: Scopes) -> Option<Self> {
        Self::new(sub, scopes)
    }
}

/// On a response: the request was authenticated (whatever came after).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Authenticated;
