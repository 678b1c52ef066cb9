//! [`Verifier`]: a token's signature with the algorithm of the key named
//! by its `kid` (so `alg: none` and algorithm confusion such as HS256
//! signed with a public key are refused), `exp`, `nbf`, `iss`, `aud`, and a
//! `sub` (RFC 9068 §2.2) the caller's [`FromClaims`] accepts. Without fresh
//! keys it fails closed before the token is even read. Verified tokens are
//! cached per key set.

use std::{collections::HashMap, sync::Arc, time::Duration};

use jsonwebtoken::{Validation, errors::ErrorKind};

use crate::{config::Config, errors::KeyError, events::Observer, keys::KeyStore, scopes::Scopes};

/// What a verified token becomes: built once per token and key set, then
/// shared (as `Arc<Self>`) by every call that presents the same token.
pub trait FromClaims: Sized + Send + Sync + 'static {
    /// The caller of subject `sub` with `scopes`, or `None` when `sub` is
    /// not acceptable (the token is refused as
    /// [`VerifyError::Invalid`]`("no usable subject (sub)")`). `sub` is
    /// `""` when the token has none.
    fn from_claims(sub: &str, scopes: Scopes) -> Option<Self>;
}

/// The default caller: its subject and scopes. Holds no token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The `sub` claim (never empty).
    pub sub: Arc<str>,
    /// The granted scopes.
    pub scopes: Scopes,
}

impl FromClaims for Principal {
    /// Any non-empty `sub`.
    fn from_claims(sub: &str, scopes: Scopes) -> Option<Self> {
        (!sub.is_empty()).then(|| Self {
            sub: sub.into(),
            scopes,
        })
    }
}

/// Why a token was not accepted. The texts are fixed, never input, so
/// they may be shown to the caller (e.g. in `WWW-Authenticate`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// No `Bearer` token.
    #[error("no bearer token")]
    Missing,
    /// The token does not verify (the reason is a fixed text).
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// The token's `exp` is past (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// No fresh signing keys: fail closed (retryable).
    #[error("security service unavailable")]
    Unavailable {
        /// When to try again.
        retry_after: Duration,
    },
}

impl VerifyError {
    /// A stable short label (for a metric): `missing`, `expired`,
    /// `security_unavailable`, or the invalid token's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid(reason) => reason,
            Self::Expired => "expired",
            Self::Unavailable { .. } => "security_unavailable",
        }
    }

    /// What to tell the caller about a refused token.
    pub fn description(&self) -> &'static str {
        match self {
            Self::Missing => "no bearer token",
            Self::Expired => "the token has expired",
            Self::Invalid(reason) => reason,
            Self::Unavailable { .. } => "security service unavailable",
        }
    }

    /// Whether retrying the same token may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

impl From<KeyError> for VerifyError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Unavailable { retry_after } => Self::Unavailable { retry_after },
            KeyError::UnknownKid => Self::Invalid("unknown key id"),
        }
    }
}

/// The claims read here (the rest are checked by `jsonwebtoken`).
#[derive(serde::Deserialize)]
struct Claims {
    /// Expiry (seconds since the epoch; required and checked by
    /// `jsonwebtoken`, kept for the cache).
    exp: u64,
    /// Not before, if any.
    #[serde(default)]
    nbf: Option<u64>,
    /// The subject.
    #[serde(default)]
    sub: Option<String>,
    /// Space-separated scopes.
    #[serde(default)]
    scope: Option<String>,
}

/// The most tokens the verification cache holds (it is emptied when full).
const CACHE_CAPACITY: usize = 10_000;

/// A token that verified: who it is, and the checks a cache hit repeats.
struct Verified<P> {
    /// The caller.
    principal: Arc<P>,
    /// When the key set that verified it was fetched: a hit counts only
    /// while that same key set is current.
    keys_fetched_at: tokio::time::Instant,
    /// `exp`.
    exp: u64,
    /// `nbf`.
    nbf: Option<u64>,
}

/// Verified tokens by their exact text, so a signature is checked once per
/// token and key set, not once per call. A token that differs in any byte
/// is a miss; `exp`/`nbf` are checked again on every hit.
type VerifiedCache<P> = std::sync::RwLock<HashMap<Box<str>, Arc<Verified<P>>>>;

/// Seconds since the epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies tokens into `Arc<P>` (cheap to clone: clones share the keys
/// and the cache).
pub struct Verifier<P = Principal> {
    /// Tokens already verified.
    cache: Arc<VerifiedCache<P>>,
    /// The keys.
    keys: KeyStore,
    /// The expected `iss`.
    issuer: String,
    /// The accepted `aud`s.
    audiences: Vec<String>,
    /// Clock skew on `exp`/`nbf`.
    leeway: Duration,
}

impl<P> Clone for Verifier<P> {
    fn clone(&self) -> Self {
        Self {
            cache: Arc::clone(&self.cache),
            keys: self.keys.clone(),
            issuer: self.issuer.clone(),
            audiences: self.audiences.clone(),
            leeway: self.leeway,
        }
    }
}

impl<P> std::fmt::Debug for Verifier<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self.cache.read().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("Verifier")
            .field("keys", &self.keys)
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("leeway", &self.leeway)
            .field("cached", &cached)
            .finish()
    }
}

impl<P: FromClaims> Verifier<P> {
    /// A verifier for `config` whose keys are fetched with `http` (nothing
    /// fetched yet: call [`KeyStore::refresh`] or
    /// [`KeyStore::spawn_refresher`] on [`Verifier::keys`]). Events go to
    /// `observer`.
    pub fn new(config: Config, http: reqwest::Client, observer: impl Observer) -> Self {
        Self {
            cache: Arc::default(),
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            leeway: config.leeway,
            keys: KeyStore::new(config, http, Arc::new(observer)),
        }
    }

    /// The key store.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Verifies the value of an `Authorization` header (see [`bearer`]).
    /// Fails closed first: without fresh keys nothing else is looked at,
    /// not even whether there is a token.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Arc<P>, VerifyError> {
        let keys = self.keys.fresh()?;
        let token = authorization.and_then(bearer).ok_or(VerifyError::Missing)?;
        self.verify_with(keys.fetched_at, token).await
    }

    /// Verifies `token` (a compact JWS), failing closed first.
    pub async fn verify(&self, token: &str) -> Result<Arc<P>, VerifyError> {
        let keys = self.keys.fresh()?;
        self.verify_with(keys.fetched_at, token).await
    }

    /// Verifies `token` while the key set fetched at `keys_fetched_at` is
    /// fresh.
    async fn verify_with(
        &self,
        keys_fetched_at: tokio::time::Instant,
        token: &str,
    ) -> Result<Arc<P>, VerifyError> {
        let hit = self
            .cache
            .read()
            .ok()
            .and_then(|cache| cache.get(token).cloned());
        if let Some(verified) = hit.filter(|v| v.keys_fetched_at == keys_fetched_at) {
            let (now, leeway) = (now_secs(), self.leeway.as_secs());
            if verified.exp < now.saturating_sub(leeway) {
                return Err(VerifyError::Expired);
            }
            if verified.nbf.is_some_and(|nbf| nbf > now + leeway) {
                return Err(VerifyError::Invalid("the token is not valid yet"));
            }
            return Ok(Arc::clone(&verified.principal));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| VerifyError::Invalid("malformed token or unsupported algorithm"))?;
        let kid = header
            .kid
            .as_deref()
            .ok_or(VerifyError::Invalid("no key id"))?;
        let key = self.keys.key(kid).await?;
        if header.alg != key.algorithm {
            return Err(VerifyError::Invalid("algorithm does not match the key"));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway.as_secs();
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
            VerifyError::Invalid(match e.kind() {
                ErrorKind::ExpiredSignature => return VerifyError::Expired,
                ErrorKind::ImmatureSignature => "the token is not valid yet",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidAlgorithm => "algorithm does not match the key",
                ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
                _ => "malformed token",
            })
        })?;
        let scopes = Scopes::parse(data.claims.scope.as_deref().unwrap_or_default());
        let principal = P::from_claims(data.claims.sub.as_deref().unwrap_or_default(), scopes)
            .map(Arc::new)
            .ok_or(VerifyError::Invalid("no usable subject (sub)"))?;
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(
                token.into(),
                Arc::new(Verified {
                    principal: Arc::clone(&principal),
                    keys_fetched_at,
                    exp: data.claims.exp,
                    nbf: data.claims.nbf,
                }),
            );
        }
        Ok(principal)
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme
/// case-insensitive, surrounding spaces ignored), or `None`.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer(""), None);
    }

    #[test]
    fn the_default_principal_needs_a_subject() {
        assert!(Principal::from_claims("", Scopes::default()).is_none());
        let alice = Principal::from_claims("alice", Scopes::parse("a b")).unwrap();
        assert_eq!(&*alice.sub, "alice");
        assert!(alice.scopes.contains_all(["a", "b"]));
    }

    #[test]
    fn errors_say_fixed_texts() {
        assert_eq!(VerifyError::Missing.reason(), "missing");
        assert_eq!(VerifyError::Expired.description(), "the token has expired");
        let closed = VerifyError::Unavailable {
            retry_after: Duration::from_secs(5),
        };
        assert!(closed.is_retryable());
        assert_eq!(closed.reason(), "security_unavailable");
        assert!(!VerifyError::Invalid("bad signature").is_retryable());
        assert_eq!(
            VerifyError::from(KeyError::UnknownKid),
            VerifyError::Invalid("unknown key id")
        );
    }
}
