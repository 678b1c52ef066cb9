//! Sealing payloads at rest: AES-256-GCM under the queue key, the write's
//! id as associated data (a payload cannot be moved to another record).

use std::{fmt, sync::Arc};

use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::QueueError;

/// The first byte of an encoded record or payload: `postcard`.
pub(crate) const FORMAT_POSTCARD: u8 = 1;

/// Seals payloads with AES-256-GCM under the queue key. Every instance
/// that shares a queue needs the same key.
#[derive(Clone)]
pub struct Sealer {
    key: Arc<LessSafeKey>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([REDACTED])")
    }
}

impl Sealer {
    /// A sealer with `key` (32 bytes), or `None` if it is not 32 bytes.
    pub fn new(key: &[u8]) -> Option<Self> {
        let key = UnboundKey::new(&AES_256_GCM, key).ok()?;
        Some(Self {
            key: Arc::new(LessSafeKey::new(key)),
        })
    }

    /// Seals `payload` of write `id`: nonce ‖ ciphertext ‖ tag, and the
    /// payload's encoded size.
    pub(crate) fn seal<P: Serialize>(
        &self,
        id: Uuid,
        payload: &P,
    ) -> Result<(Vec<u8>, u64), QueueError> {
        let mut nonce = [0_u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| QueueError::Storage("no randomness for a nonce".into()))?;
        let mut data = postcard::to_extend(payload, vec![FORMAT_POSTCARD])
            .map_err(|e| QueueError::corrupt(id, e))?;
        let size = (data.len() - 1) as u64;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut data,
            )
            .map_err(|_| QueueError::corrupt(id, "sealing failed"))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&data);
        Ok((sealed, size))
    }

    /// Opens the sealed payload of write `id`.
    pub(crate) fn open<P: DeserializeOwned>(
        &self,
        id: Uuid,
        sealed: &[u8],
    ) -> Result<P, QueueError> {
        if sealed.is_empty() {
            return Err(QueueError::corrupt(
                id,
                "the payload was erased (the write is finished)",
            ));
        }
        if sealed.len() < NONCE_LEN {
            return Err(QueueError::corrupt(id, "sealed payload too short"));
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| QueueError::corrupt(id, "bad nonce"))?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut data)
            .map_err(|_| {
                QueueError::corrupt(id, "the payload does not open with this queue key")
            })?;
        match plain.split_first() {
            Some((&FORMAT_POSTCARD, rest)) => {
                postcard::from_bytes(rest).map_err(|e| QueueError::corrupt(id, e))
            }
            // A payload sealed as JSON by an earlier gateway.
            Some((b'{', _)) => {
                serde_json::from_slice(plain).map_err(|e| QueueError::corrupt(id, e))
            }
            _ => Err(QueueError::corrupt(id, "unknown payload format")),
        }
    }
}

/// The sealed bytes: raw bytes in `postcard`, base64 in JSON.
pub(crate) mod sealed_bytes {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&STANDARD.encode(bytes))
        } else {
            s.serialize_bytes(bytes)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl de::Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            STANDARD.decode(text).map_err(de::Error::custom)
        } else {
            d.deserialize_byte_buf(Bytes)
        }
    }
}

/// Encodes `record` in the current format.
pub(crate) fn encode<T: Serialize>(id: Uuid, record: &T) -> Result<Vec<u8>, QueueError> {
    postcard::to_extend(record, vec![FORMAT_POSTCARD]).map_err(|e| QueueError::corrupt(id, e))
}
