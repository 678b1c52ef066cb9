//! Tokens over real HTTP keys: the algorithm is the key's, the claims are
//! checked with the leeway, a `sub` is required, scopes are read, and a
//! verified token is cached for its key set only.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use jwt_verify::{FromClaims, Principal, Scopes, Verifier, VerifyError};
use serde_json::{Value, json};

/// A verifier (leeway `leeway_secs`) with its keys fetched from `jwks`.
async fn ready<P: FromClaims>(jwks: &Jwks, leeway_secs: u64) -> Verifier<P> {
    let mut config = config(jwks);
    config.leeway = Duration::from_secs(leeway_secs);
    let verifier = verifier(config, &Recorded::default());
    verifier.keys().refresh().await.expect("keys");
    verifier
}

fn invalid(reason: &'static str) -> Result<Arc<Principal>, VerifyError> {
    Err(VerifyError::Invalid(reason))
}

/// `header.claims.signature`, assembled by hand.
fn assemble(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

#[tokio::test]
async fn the_algorithm_is_the_keys() {
    let p256 = Signer::es256("p256");
    let p384 = Signer::es384("p384");
    let jwks = Jwks::start(&[&p256, &p384]).await;
    let verifier: Verifier = ready(&jwks, 5).await;
    let claims = claims("alice", "stores:read");

    for good in [p256.sign(&claims), p384.sign(&claims)] {
        assert_eq!(&*verifier.verify(&good).await.unwrap().sub, "alice");
    }

    // Signed with the P-384 key, presented as the P-256 key's (and the
    // other way round): the header's algorithm is not the key's.
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some("p256".into());
    let swapped = p384.sign_as(header, &claims);
    assert_eq!(
        verifier.verify(&swapped).await,
        invalid("algorithm does not match the key")
    );
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("p384".into());
    let swapped = p256.sign_as(header, &claims);
    assert_eq!(
        verifier.verify(&swapped).await,
        invalid("algorithm does not match the key")
    );

    // HS256 "signed" with the public key (its JWK as the secret).
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("p256".into());
    let hs = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(p256.jwk.to_string().as_bytes()),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(&hs).await,
        invalid("algorithm does not match the key")
    );

    // `alg: none`, with and without a signature.
    let good = p256.sign(&claims);
    let signature = good.rsplit('.').next().unwrap();
    let none = json!({ "alg": "none", "typ": "JWT", "kid": "p256" });
    for signature in ["", signature] {
        assert_eq!(
            verifier.verify(&assemble(&none, &claims, signature)).await,
            invalid("malformed token or unsupported algorithm")
        );
    }

    // No kid; tampered claims under the original signature; garbage.
    let no_kid = p256.sign_as(Header::new(Algorithm::ES256), &claims);
    assert_eq!(verifier.verify(&no_kid).await, invalid("no key id"));
    let header = json!({ "alg": "ES256", "typ": "JWT", "kid": "p256" });
    let mut more = claims.clone();
    more["scope"] = json!("stores:read stores:admin");
    assert_eq!(
        verifier.verify(&assemble(&header, &more, signature)).await,
        invalid("bad signature")
    );
    for garbage in ["", "a.b", "not.a.jwt"] {
        assert!(matches!(
            verifier.verify(garbage).await,
            Err(VerifyError::Invalid(_))
        ));
    }
}

#[tokio::test]
async fn claims_are_checked_with_the_leeway() {
    let key = Signer::es256("k");
    let jwks = Jwks::start(&[&key]).await;
    let lenient: Verifier = ready(&jwks, 30).await;
    let strict: Verifier = ready(&jwks, 0).await;
    let with = |field: &str, value: Value| {
        let mut claims = claims("alice", "");
        claims[field] = value;
        key.sign(&claims)
    };

    // Expired 10 s ago: within a 30 s leeway, not within none.
    let lately = with("exp", json!(now() - 10));
    assert!(lenient.verify(&lately).await.is_ok());
    assert_eq!(strict.verify(&lately).await, Err(VerifyError::Expired));
    let long_ago = with("exp", json!(now() - 3600));
    assert_eq!(lenient.verify(&long_ago).await, Err(VerifyError::Expired));

    // Not valid for 10 s yet: the same.
    let soon = with("nbf", json!(now() + 10));
    assert!(lenient.verify(&soon).await.is_ok());
    assert_eq!(
        strict.verify(&soon).await,
        invalid("the token is not valid yet")
    );

    // Issuer, audience, required claims.
    assert_eq!(
        strict
            .verify(&with("iss", json!("https://evil.test")))
            .await,
        invalid("wrong issuer")
    );
    assert_eq!(
        strict.verify(&with("aud", json!("another-api"))).await,
        invalid("wrong audience")
    );
    for required in ["iss", "aud"] {
        let mut without = claims("alice", "");
        without.as_object_mut().unwrap().remove(required);
        assert_eq!(
            strict.verify(&key.sign(&without)).await,
            invalid("a required claim is missing"),
            "{required}"
        );
    }
    // Without `exp` the claims do not even parse.
    let mut no_exp = claims("alice", "");
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        strict.verify(&key.sign(&no_exp)).await,
        invalid("malformed token")
    );
}

#[tokio::test]
async fn a_subject_is_required_and_scopes_are_read() {
    let key = Signer::es256("k");
    let jwks = Jwks::start(&[&key]).await;
    let verifier: Verifier = ready(&jwks, 5).await;

    let alice = verifier
        .authenticate(Some(&format!(
            "bearer {}",
            key.sign(&claims("alice", " stores:read  stores:write "))
        )))
        .await
        .unwrap();
    assert_eq!(&*alice.sub, "alice");
    assert_eq!(
        alice.scopes,
        Scopes::parse("stores:write stores:read"),
        "space separated"
    );
    assert!(alice.scopes.contains_all(["stores:read", "stores:write"]));
    let mut granted: Vec<&str> = alice.scopes.iter().collect();
    granted.sort_unstable();
    assert_eq!(granted, ["stores:read", "stores:write"]);
    assert!(!alice.scopes.contains("stores:admin"));

    let mut no_scope = claims("bob", "");
    no_scope.as_object_mut().unwrap().remove("scope");
    assert!(
        verifier
            .verify(&key.sign(&no_scope))
            .await
            .unwrap()
            .scopes
            .is_empty()
    );

    let mut no_sub = claims("", "stores:read");
    assert_eq!(
        verifier.verify(&key.sign(&no_sub)).await,
        invalid("no usable subject (sub)")
    );
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_eq!(
        verifier.verify(&key.sign(&no_sub)).await,
        invalid("no usable subject (sub)")
    );

    // The caller's own type decides which subjects are usable.
    #[derive(Debug)]
    struct Admin(String);
    impl FromClaims for Admin {
        fn from_claims(sub: &str, scopes: Scopes) -> Option<Self> {
            scopes.contains("admin").then(|| Admin(sub.to_owned()))
        }
    }
    let admins: Verifier<Admin> = ready(&jwks, 5).await;
    assert_eq!(
        admins
            .verify(&key.sign(&claims("root", "admin")))
            .await
            .unwrap()
            .0,
        "root"
    );
    assert_eq!(
        admins
            .verify(&key.sign(&claims("alice", "stores:read")))
            .await
            .unwrap_err(),
        VerifyError::Invalid("no usable subject (sub)")
    );
}

#[tokio::test]
async fn a_verified_token_is_cached_for_its_key_set_only() {
    let old = Signer::es256("old");
    let new = Signer::es256("new");
    let jwks = Jwks::start(&[&old]).await;
    let verifier: Verifier = ready(&jwks, 0).await;
    let token = old.sign(&claims("alice", "stores:read"));

    // Verified once, then the same caller from the cache.
    let first = verifier.verify(&token).await.unwrap();
    let second = verifier.verify(&token).await.unwrap();
    assert!(Arc::ptr_eq(&first, &second), "served from the cache");
    // A clone shares the cache.
    assert!(Arc::ptr_eq(
        &first,
        &verifier.clone().verify(&token).await.unwrap()
    ));

    // The old key is withdrawn: once the new key set is fetched, the cached
    // verification no longer counts.
    jwks.serve_keys(&[&new]);
    verifier.keys().refresh().await.unwrap();
    assert_eq!(verifier.verify(&token).await, invalid("unknown key id"));

    // A hit checks the expiry again: a token that expires in a second
    // verifies, is cached, and is refused once its `exp` has passed.
    let mut brief = claims("bob", "");
    brief["exp"] = json!(now() + 1);
    let brief = new.sign(&brief);
    let bob = verifier.verify(&brief).await.unwrap();
    assert!(Arc::ptr_eq(&bob, &verifier.verify(&brief).await.unwrap()));
    let exp = now() + 1;
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(verifier.verify(&brief).await, Err(VerifyError::Expired));
}

#[tokio::test]
async fn refusals_carry_a_label_a_description_and_retryability() {
    let key = Signer::es256("k");
    let jwks = Jwks::start(&[&key]).await;
    let verifier: Verifier = ready(&jwks, 0).await;
    let mut expired = claims("alice", "stores:read");
    expired["exp"] = json!(now() - 60);

    let missing = verifier.authenticate(None).await.unwrap_err();
    let expired = verifier.verify(&key.sign(&expired)).await.unwrap_err();
    let garbage = verifier.verify("a.b.c").await.unwrap_err();
    let unavailable = VerifyError::Unavailable {
        retry_after: Duration::from_secs(3),
    };
    let seen: Vec<_> = [&missing, &expired, &garbage, &unavailable]
        .into_iter()
        .map(|e| (e.reason(), e.description(), e.is_retryable()))
        .collect();
    assert_eq!(
        seen,
        [
            ("missing", "no bearer token", false),
            ("expired", "the token has expired", false),
            (
                "malformed token or unsupported algorithm",
                "malformed token or unsupported algorithm",
                false
            ),
            ("security_unavailable", "security service unavailable", true),
        ]
    );
}
