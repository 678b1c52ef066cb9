//! [`KeyStore`]: the signing keys (JWKS), fetched through a breaker,
//! cached, refreshed in the background and on an unknown `kid` (at most
//! once per [`Config::unknown_kid_interval`], so a flood of random kids
//! cannot hammer the security service). Keys older than
//! [`Config::max_age`], or none at all, make [`KeyStore::fresh`] fail
//! ([`Event::KeysUnavailable`]): verification fails closed until the next
//! successful fetch ([`Event::KeysRefreshed`]).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use breaker::{Breaker, CallError};
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};
use tokio::time::Instant;

use crate::{
    config::Config,
    errors::{FetchError, KeyError},
    events::{Event, Observer},
};

/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A verification key and the one algorithm it may be used with.
#[derive(Clone)]
pub struct VerifyKey {
    /// The key.
    pub key: DecodingKey,
    /// Its algorithm (from the JWK's `alg`, or its key type and curve).
    pub algorithm: Algorithm,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// One fetched key set.
#[derive(Debug)]
pub struct KeySet {
    /// Keys by `kid`.
    pub keys: HashMap<String, VerifyKey>,
    /// When it was fetched.
    pub fetched_at: Instant,
}

/// The key cache (cheap to clone).
#[derive(Clone)]
pub struct KeyStore {
    /// Shared state.
    inner: Arc<Inner>,
}

struct Inner {
    /// The client for fetches.
    http: reqwest::Client,
    /// URLs, ages, intervals.
    config: Config,
    /// The breaker around fetches.
    breaker: Breaker,
    /// Where events go.
    observer: Arc<dyn Observer>,
    /// The current key set.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    /// When the last unknown-kid refresh was allowed.
    unknown_kid_at: Mutex<Option<Instant>>,
    /// Fetches attempted.
    fetches: AtomicU64,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("jwks_url", &self.inner.config.jwks_url)
            .field("keys", &self.current().map(|k| k.keys.len()))
            .field("fetches", &self.fetches())
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// A store for `config` (nothing fetched yet) that fetches with `http`
    /// and reports to `observer`.
    pub fn new(config: Config, http: reqwest::Client, observer: Arc<dyn Observer>) -> Self {
        let breaker = Breaker::new(&config.breaker_name, config.breaker.clone());
        Self {
            inner: Arc::new(Inner {
                http,
                config,
                breaker,
                observer,
                keys: RwLock::new(None),
                fetching: tokio::sync::Mutex::new(()),
                unknown_kid_at: Mutex::new(None),
                fetches: AtomicU64::new(0),
            }),
        }
    }

    /// The breaker around fetches.
    pub fn breaker(&self) -> &Breaker {
        &self.inner.breaker
    }

    /// Fetches attempted so far.
    pub fn fetches(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// Whether keys were obtained at least once.
    pub fn obtained_once(&self) -> bool {
        self.current().is_some()
    }

    /// The age of the current keys.
    pub fn age(&self) -> Option<Duration> {
        self.current().map(|k| k.fetched_at.elapsed())
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.inner.keys.read().ok().and_then(|k| k.clone())
    }

    /// The keys, if obtained and not older than the maximum age; otherwise
    /// [`KeyError::Unavailable`] and [`Event::KeysUnavailable`].
    pub fn fresh(&self) -> Result<Arc<KeySet>, KeyError> {
        let max_age = self.inner.config.max_age;
        match self.current() {
            Some(keys) if keys.fetched_at.elapsed() <= max_age => Ok(keys),
            _ => {
                self.inner.observer.on_event(&Event::KeysUnavailable);
                Err(KeyError::Unavailable {
                    retry_after: self
                        .inner
                        .config
                        .refresh_interval
                        .max(Duration::from_secs(1)),
                })
            }
        }
    }

    /// The key `kid`, refreshing once for an unknown kid when the
    /// unknown-kid interval allows it.
    pub async fn key(&self, kid: &str) -> Result<VerifyKey, KeyError> {
        let keys = self.fresh()?;
        if let Some(key) = keys.keys.get(kid) {
            return Ok(key.clone());
        }
        if !self.allow_unknown_kid_refresh() {
            self.inner.observer.on_event(&Event::UnknownKidRefused);
            return Err(KeyError::UnknownKid);
        }
        tracing::info!("unknown key id: refreshing the signing keys");
        self.inner.observer.on_event(&Event::UnknownKidRefresh);
        let _ = self.refresh().await;
        self.fresh()?
            .keys
            .get(kid)
            .cloned()
            .ok_or(KeyError::UnknownKid)
    }

    fn allow_unknown_kid_refresh(&self) -> bool {
        let interval = self.inner.config.unknown_kid_interval;
        let Ok(mut last) = self.inner.unknown_kid_at.lock() else {
            return false;
        };
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < interval => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    /// Fetches the keys now (one fetch at a time; a caller that waited for
    /// another's fetch reuses its result). Returns the number of keys.
    pub async fn refresh(&self) -> Result<usize, FetchError> {
        let waited_from = Instant::now();
        let _guard = self.inner.fetching.lock().await;
        if let Some(keys) = self.current()
            && keys.fetched_at >= waited_from
        {
            return Ok(keys.keys.len());
        }
        self.inner.fetches.fetch_add(1, Ordering::Relaxed);
        let outcome = match self.inner.breaker.run(self.fetch()).await {
            Ok(keys) => Ok(keys),
            Err(CallError::Rejected(rejected)) => Err(FetchError::Rejected(rejected)),
            Err(CallError::Timeout(after)) => Err(FetchError::Timeout(after)),
            Err(CallError::Inner(error)) => Err(error),
            Err(other) => Err(FetchError::Http(other.to_string())),
        };
        match outcome {
            Ok(keys) => {
                let count = keys.len();
                let set = Arc::new(KeySet {
                    keys,
                    fetched_at: Instant::now(),
                });
                if let Ok(mut current) = self.inner.keys.write() {
                    *current = Some(set);
                }
                tracing::debug!(count, "signing keys refreshed");
                self.inner
                    .observer
                    .on_event(&Event::KeysRefreshed { count });
                Ok(count)
            }
            Err(error) => {
                tracing::warn!(%error, "fetching the signing keys failed");
                self.inner
                    .observer
                    .on_event(&Event::FetchFailed { error: &error });
                Err(error)
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, VerifyKey>, FetchError> {
        let response = self
            .inner
            .http
            .get(&self.inner.config.jwks_url)
            .timeout(self.inner.config.fetch_timeout)
            .send()
            .await
            .map_err(|e| FetchError::Http(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|l| l > MAX_JWKS_BYTES as u64)
        {
            return Err(FetchError::Document("larger than 256 KiB".into()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| FetchError::Http(e.without_url().to_string()))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(FetchError::Document("larger than 256 KiB".into()));
        }
        parse_jwks(&body)
    }

    /// Fetches at once, then every [`Config::refresh_interval`] (every
    /// second while failing), and reports [`Event::KeysUnavailable`] as
    /// soon as the keys go stale even without traffic. Stops when the
    /// returned handle is aborted (call inside a tokio runtime).
    pub fn spawn_refresher(&self) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let interval = store.inner.config.refresh_interval;
            loop {
                let ok = store.refresh().await.is_ok();
                let _ = store.fresh();
                let wait = if ok {
                    interval
                } else {
                    interval.min(Duration::from_secs(1))
                };
                tokio::time::sleep(wait).await;
            }
        })
    }
}

/// The usable signing keys of a JWKS document: asymmetric keys with a
/// `kid`, for signing (`use` absent or `sig`); others are skipped.
pub fn parse_jwks(body: &[u8]) -> Result<HashMap<String, VerifyKey>, FetchError> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document =
        serde_json::from_slice(body).map_err(|e| FetchError::Document(e.to_string()))?;
    let mut keys = HashMap::new();
    for value in document.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let (Some(kid), Some(algorithm)) = (jwk.common.key_id.clone(), algorithm_of(&jwk)) else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            keys.insert(kid, VerifyKey { key, algorithm });
        }
    }
    if keys.is_empty() {
        return Err(FetchError::Document("no usable signing key".into()));
    }
    Ok(keys)
}

/// The algorithm a JWK may be used with: its `alg` when that is an
/// asymmetric signature algorithm matching the key type, else from the key
/// type and curve. Symmetric keys are never used.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let from_key = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let Some(declared) = jwk.common.key_algorithm else {
        return Some(from_key);
    };
    let declared = match declared {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    };
    let same_family = match from_key {
        Algorithm::RS256 => matches!(
            declared,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        other => other == declared,
    };
    same_family.then_some(declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_signing_keys_are_kept() {
        let body = br#"{"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec", "use": "sig", "alg": "ES256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "lying", "alg": "HS256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "kid": "rsa", "alg": "RS256", "e": "AQAB",
             "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"}
        ]}"#;
        let keys = parse_jwks(body).unwrap();
        let mut kids: Vec<_> = keys.keys().cloned().collect();
        kids.sort();
        assert_eq!(kids, ["ec", "ed", "rsa"]);
        assert_eq!(keys["ec"].algorithm, Algorithm::ES256);
        assert_eq!(keys["ed"].algorithm, Algorithm::EdDSA);
        assert_eq!(keys["rsa"].algorithm, Algorithm::RS256);
        assert!(parse_jwks(br#"{"keys": []}"#).is_err());
        assert!(parse_jwks(b"not json").is_err());
    }
}
