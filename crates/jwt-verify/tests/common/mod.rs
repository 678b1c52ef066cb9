//! What the tests share: a real JWKS server on a local port, signing keys
//! generated per test, tokens, and an observer that records events.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use jwt_verify::{Config, Event, FromClaims, Verifier};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// The issuer and audience of the tests' tokens.
pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "store-api";

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key with its `kid`, algorithm and public JWK.
#[derive(Clone)]
pub struct Signer {
    pub kid: String,
    pub algorithm: Algorithm,
    pub key: EncodingKey,
    pub jwk: Value,
}

impl Signer {
    /// A fresh ES256 (P-256) key.
    pub fn es256(kid: &str) -> Self {
        Self::generate(kid, &rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256)
    }

    /// A fresh ES384 (P-384) key.
    pub fn es384(kid: &str) -> Self {
        Self::generate(kid, &rcgen::PKCS_ECDSA_P384_SHA384, Algorithm::ES384)
    }

    fn generate(kid: &str, alg: &'static rcgen::SignatureAlgorithm, algorithm: Algorithm) -> Self {
        let pair = rcgen::KeyPair::generate_for(alg).expect("key pair");
        let key = EncodingKey::from_ec_der(&pair.serialize_der());
        let mut jwk = Jwk::from_encoding_key(&key, algorithm).expect("jwk");
        jwk.common.key_id = Some(kid.to_owned());
        Self {
            kid: kid.to_owned(),
            algorithm,
            key,
            jwk: serde_json::to_value(jwk).expect("jwk json"),
        }
    }

    /// A token of `claims`, with this key's `kid` and algorithm.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        self.sign_as(header, claims)
    }

    /// A token of `claims` with `header`, signed with this key.
    pub fn sign_as(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.key).expect("signs")
    }
}

/// Claims that verify: `sub`, `scope`, a 10-minute `exp`.
pub fn claims(sub: &str, scope: &str) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "scope": scope,
        "iat": now(),
        "exp": now() + 600,
    })
}

/// What the JWKS server answers.
struct Answer {
    status: u16,
    body: String,
    fetches: u64,
}

/// A JWKS server on 127.0.0.1 (plain HTTP/1.1, one request per
/// connection) that counts the fetches.
#[derive(Clone)]
pub struct Jwks {
    pub url: String,
    answer: Arc<Mutex<Answer>>,
}

impl Jwks {
    /// Serves `keys`.
    pub async fn start(keys: &[&Signer]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let url = format!("http://{}/keys", listener.local_addr().expect("addr"));
        let jwks = Self {
            url,
            answer: Arc::new(Mutex::new(Answer {
                status: 200,
                body: String::new(),
                fetches: 0,
            })),
        };
        jwks.serve_keys(keys);
        let answer = Arc::clone(&jwks.answer);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = Arc::clone(&answer);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let (status, body) = {
                        let mut answer = answer.lock().unwrap();
                        answer.fetches += 1;
                        (answer.status, answer.body.clone())
                    };
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        jwks
    }

    /// From now on, serves `keys`.
    pub fn serve_keys(&self, keys: &[&Signer]) {
        let keys: Vec<_> = keys.iter().map(|s| s.jwk.clone()).collect();
        self.serve(200, &json!({ "keys": keys }).to_string());
    }

    /// From now on, answers `status` with `body`.
    pub fn serve(&self, status: u16, body: &str) {
        let mut answer = self.answer.lock().unwrap();
        answer.status = status;
        answer.body = body.to_owned();
    }

    /// Requests served so far.
    pub fn fetches(&self) -> u64 {
        self.answer.lock().unwrap().fetches
    }
}

/// The events an observer saw, as short names.
#[derive(Clone, Default)]
pub struct Recorded {
    seen: Arc<Mutex<Vec<String>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl Recorded {
    /// An observer that records here.
    pub fn observer(&self) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
        let (seen, changed) = (Arc::clone(&self.seen), Arc::clone(&self.changed));
        move |event| {
            let name = match event {
                Event::KeysUnavailable => "unavailable".to_owned(),
                Event::KeysRefreshed { count } => format!("refreshed {count}"),
                Event::FetchFailed { error } => format!("failed: {error}"),
                Event::UnknownKidRefresh => "unknown kid: refresh".to_owned(),
                Event::UnknownKidRefused => "unknown kid: refused".to_owned(),
                other => format!("{other:?}"),
            };
            seen.lock().unwrap().push(name);
            changed.notify_one();
        }
    }

    /// Waits until `count` events were seen.
    pub async fn wait_for(&self, count: usize) {
        while self.seen.lock().unwrap().len() < count {
            self.changed.notified().await;
        }
    }

    /// Everything seen so far (and forgets it).
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.seen.lock().unwrap())
    }
}

/// The tests' configuration for `jwks`.
pub fn config(jwks: &Jwks) -> Config {
    Config::new(&jwks.url, ISSUER, [AUDIENCE])
}

/// A verifier for `config` whose events go to `recorded`.
pub fn verifier<P: FromClaims>(config: Config, recorded: &Recorded) -> Verifier<P> {
    Verifier::new(
        config,
        testkit::http_client().expect("client"),
        recorded.observer(),
    )
}
