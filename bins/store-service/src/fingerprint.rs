//! Request fingerprints of `Idempotency-Key` records.
//!
//! A fingerprint tells a retry (same request) from a reuse of the key
//! (another request: 422). It is an HMAC-SHA-256 computed here, over
//! `If-Match` and the body, with a key every instance shares: the body may
//! carry store secrets in plaintext, and neither those bytes nor an
//! unkeyed hash of them (which would let anyone who reads the table test
//! guesses of a secret) reach PostgreSQL.
//!
//! The key, in order of preference: `IDEMPOTENCY_HMAC_KEY`; else derived
//! from the Transit key (`transit/hmac/<key>` of a fixed label, pinned to
//! key version 1, so rotating the Transit key does not change it and the
//! key material never leaves Vault's policy); else, with no Vault at all,
//! a random key of this process, which `/ready` reports as degraded: a
//! retry that reaches another instance, or this one after a restart, gets
//! a 422 instead of its replay (never a second execution).

use std::fmt;

use ring::{
    hmac,
    rand::{SecureRandom, SystemRandom},
};
use vault_client::{ExposeSecret, Transit};

/// The label whose Transit HMAC is the key (changing it changes every
/// fingerprint: records written before would answer 422).
const LABEL: &[u8] = b"store-service/idempotency-fingerprint/v1";

/// Where the key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `IDEMPOTENCY_HMAC_KEY`.
    Configured,
    /// Derived from the Transit key.
    Transit,
    /// Random, this process only (no Vault, nothing configured).
    Ephemeral,
}

/// The fingerprint key. Its `Debug` shows the source only.
#[derive(Clone)]
pub struct FingerprintKey {
    /// The HMAC key.
    key: hmac::Key,
    /// Where it came from.
    source: KeySource,
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FingerprintKey")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl FingerprintKey {
    /// A key from configured material (`IDEMPOTENCY_HMAC_KEY`).
    pub fn configured(material: &[u8]) -> Self {
        Self::new(material, KeySource::Configured)
    }

    /// The key derived from Transit key `key`: its HMAC of a fixed label
    /// with key version 1.
    pub async fn from_transit(transit: &Transit, key: &str) -> vault_client::Result<Self> {
        let derived = transit.hmac(key, LABEL, Some(1), None).await?;
        Ok(Self::new(
            derived.expose_secret().as_bytes(),
            KeySource::Transit,
        ))
    }

    /// A random key for this process.
    pub fn ephemeral() -> Self {
        let mut material = [0_u8; 32];
        // The OS random source failing is not recoverable in any useful
        // way; fall back to a time-and-pid seed rather than panic (the
        // key is then guessable, which only weakens the fingerprint back
        // to an unkeyed hash).
        if SystemRandom::new().fill(&mut material).is_err() {
            let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
            material = *ring::digest::digest(&ring::digest::SHA256, seed.as_bytes())
                .as_ref()
                .first_chunk::<32>()
                .unwrap_or(&[0; 32]);
        }
        Self::new(&material, KeySource::Ephemeral)
    }

    fn new(material: &[u8], source: KeySource) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, material),
            source,
        }
    }

    /// Where the key came from.
    pub fn source(&self) -> KeySource {
        self.source
    }

    /// The fingerprint of a request with `if_match` (the raw header, if
    /// any) and `body`. `If-Match` cannot hold a line feed, so the
    /// separator keeps the two parts apart.
    pub fn fingerprint(&self, if_match: Option<&[u8]>, body: &[u8]) -> Vec<u8> {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(if_match.unwrap_or_default());
        context.update(b"\n");
        context.update(body);
        context.sign().as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_request_same_fingerprint_other_request_other() {
        let key = FingerprintKey::configured(b"shared");
        let a = key.fingerprint(Some(b"\"3\""), b"{\"name\":\"a\"}");
        assert_eq!(a, key.fingerprint(Some(b"\"3\""), b"{\"name\":\"a\"}"));
        assert_ne!(a, key.fingerprint(Some(b"\"4\""), b"{\"name\":\"a\"}"));
        assert_ne!(a, key.fingerprint(None, b"{\"name\":\"a\"}"));
        assert_ne!(a, key.fingerprint(Some(b"\"3\""), b"{\"name\":\"b\"}"));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn the_key_matters_and_is_not_printed() {
        let one = FingerprintKey::configured(b"key-one");
        let two = FingerprintKey::configured(b"key-two");
        assert_ne!(one.fingerprint(None, b"x"), two.fingerprint(None, b"x"));
        // Not an unkeyed SHA-256 of the input either.
        let plain = ring::digest::digest(&ring::digest::SHA256, b"\nx");
        assert_ne!(one.fingerprint(None, b"x"), plain.as_ref());
        assert!(!format!("{one:?}").contains("key-one"));
        let random = FingerprintKey::ephemeral();
        assert_eq!(random.source(), KeySource::Ephemeral);
        assert_ne!(
            random.fingerprint(None, b"x"),
            FingerprintKey::ephemeral().fingerprint(None, b"x")
        );
    }
}
