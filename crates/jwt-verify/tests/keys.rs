//! The key store over real HTTP: it fails closed when no fresh keys can be
//! had, recovers with the next fetch, and holds unknown-`kid` refreshes to
//! the configured rate.

mod common;

use std::time::Duration;

use common::*;
use jwt_verify::{FetchError, Principal, Verifier, VerifyError};

#[tokio::test]
async fn fails_closed_until_keys_are_fetched_and_again_once_they_are_too_old() {
    let key = Signer::es256("k1");
    let jwks = Jwks::start(&[&key]).await;
    jwks.serve(503, "");
    let recorded = Recorded::default();
    let verifier: Verifier<Principal> = verifier(config(&jwks), &recorded);
    let token = key.sign(&claims("alice", "stores:read"));
    let bearer = format!("Bearer {token}");

    // The keys cannot be fetched: a good token, no token and garbage are
    // all refused as unavailable (retryable), before the token is read.
    let error = verifier.keys().refresh().await.unwrap_err();
    assert!(matches!(error, FetchError::Status(503)), "{error:?}");
    assert!(error.is_retryable());
    for authorization in [Some(bearer.as_str()), None, Some("Basic x")] {
        let refused = verifier.authenticate(authorization).await.unwrap_err();
        assert_eq!(
            refused,
            VerifyError::Unavailable {
                retry_after: Duration::from_secs(20)
            },
            "{authorization:?}"
        );
        assert!(refused.is_retryable());
    }
    assert!(!verifier.keys().obtained_once());
    assert_eq!(
        recorded.take(),
        [
            "failed: answered 503",
            "unavailable",
            "unavailable",
            "unavailable"
        ]
    );

    // An unusable document is not retryable, and keys nothing.
    jwks.serve(
        200,
        r#"{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}"#,
    );
    let error = verifier.keys().refresh().await.unwrap_err();
    assert!(matches!(error, FetchError::Document(_)), "{error:?}");
    assert!(!error.is_retryable());
    assert!(verifier.verify(&token).await.is_err());
    recorded.take();

    // Keys arrive: the token verifies.
    jwks.serve_keys(&[&key]);
    assert_eq!(verifier.keys().refresh().await.unwrap(), 1);
    assert_eq!(recorded.take(), ["refreshed 1"]);
    let alice = verifier.authenticate(Some(&bearer)).await.unwrap();
    assert_eq!(&*alice.sub, "alice");
    assert_eq!(verifier.authenticate(None).await, Err(VerifyError::Missing));

    // The security service goes away and the keys age past `max_age`
    // (tokio's clock, paused and advanced): the same token, verified and
    // cached a moment ago, is refused.
    jwks.serve(503, "");
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(matches!(
        verifier.authenticate(Some(&bearer)).await,
        Err(VerifyError::Unavailable { .. })
    ));
    assert_eq!(recorded.take(), ["unavailable"]);
    tokio::time::resume();

    // Back: the next fetch ends it.
    jwks.serve_keys(&[&key]);
    verifier.keys().refresh().await.unwrap();
    assert!(verifier.authenticate(Some(&bearer)).await.is_ok());
    assert_eq!(recorded.take(), ["refreshed 1"]);
}

#[tokio::test]
async fn the_refresher_reports_missing_keys_without_traffic() {
    let key = Signer::es256("k1");
    let jwks = Jwks::start(&[&key]).await;
    jwks.serve(503, "");
    let recorded = Recorded::default();
    let verifier: Verifier<Principal> = verifier(config(&jwks), &recorded);
    let refresher = verifier.keys().spawn_refresher();
    // Its first round: the fetch fails and the keys are reported missing.
    recorded.wait_for(2).await;
    refresher.abort();
    assert_eq!(recorded.take(), ["failed: answered 503", "unavailable"]);
}

#[tokio::test]
async fn unknown_kids_are_held_to_one_refresh_per_interval() {
    let known = Signer::es256("known");
    let rotated = Signer::es256("rotated");
    let jwks = Jwks::start(&[&known]).await;
    let recorded = Recorded::default();
    let mut config = config(&jwks);
    config.unknown_kid_interval = Duration::from_secs(3600);
    let verifier: Verifier<Principal> = verifier(config.clone(), &recorded);
    verifier.keys().refresh().await.unwrap();
    assert_eq!(jwks.fetches(), 1);
    assert_eq!(recorded.take(), ["refreshed 1"]);

    // A flood of random kids: one refresh, the rest refused at once.
    for i in 0..50 {
        let stranger = Signer {
            kid: format!("random-{i}"),
            ..known.clone()
        };
        let token = stranger.sign(&claims("mallory", ""));
        assert_eq!(
            verifier.verify(&token).await,
            Err(VerifyError::Invalid("unknown key id"))
        );
    }
    assert_eq!(jwks.fetches(), 2, "one refresh for 50 unknown kids");
    assert_eq!(verifier.keys().fetches(), 2);
    let events = recorded.take();
    assert_eq!(events[..2], ["unknown kid: refresh", "refreshed 1"]);
    assert_eq!(events.len(), 2 + 49);
    assert!(events[2..].iter().all(|e| e == "unknown kid: refused"));

    // A rotated-in key within the interval waits for the next refresh...
    jwks.serve_keys(&[&known, &rotated]);
    let token = rotated.sign(&claims("bob", ""));
    assert_eq!(
        verifier.verify(&token).await,
        Err(VerifyError::Invalid("unknown key id"))
    );
    assert_eq!(jwks.fetches(), 2);
    verifier.keys().refresh().await.unwrap();
    assert!(verifier.verify(&token).await.is_ok());

    // ...and is fetched at once when a refresh is allowed.
    config.unknown_kid_interval = Duration::ZERO;
    let eager: Verifier<Principal> = common::verifier(config, &recorded);
    eager.keys().refresh().await.unwrap();
    let newer = Signer::es256("newer");
    jwks.serve_keys(&[&known, &rotated, &newer]);
    let token = newer.sign(&claims("carol", ""));
    assert_eq!(&*eager.verify(&token).await.unwrap().sub, "carol");
}

#[tokio::test]
async fn an_oversized_key_document_is_refused_and_keys_nothing() {
    let key = Signer::es256("k1");
    let jwks = Jwks::start(&[&key]).await;
    // A valid document padded past 256 KiB with a key the parser would skip.
    let padding = "x".repeat(300 * 1024);
    jwks.serve(
        200,
        &format!(
            r#"{{"keys": [{}, {{"kty": "oct", "kid": "pad", "k": "{padding}"}}]}}"#,
            key.jwk
        ),
    );
    let verifier: Verifier<Principal> = verifier(config(&jwks), &Recorded::default());
    let error = verifier.keys().refresh().await.unwrap_err();
    assert!(
        matches!(&error, FetchError::Document(why) if why.contains("256 KiB")),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert!(!verifier.keys().obtained_once());
    assert_eq!(verifier.keys().age(), None);

    // The same keys in a small document are taken.
    jwks.serve_keys(&[&key]);
    assert_eq!(verifier.keys().refresh().await.unwrap(), 1);
    assert!(
        verifier
            .keys()
            .age()
            .is_some_and(|age| age < Duration::from_secs(60))
    );
}

#[tokio::test]
async fn debug_output_names_no_key_material_and_no_token() {
    let key = Signer::es256("k1");
    let jwks = Jwks::start(&[&key]).await;
    let verifier: Verifier<Principal> = verifier(config(&jwks), &Recorded::default());
    verifier.keys().refresh().await.unwrap();
    let token = key.sign(&claims("alice", "stores:read"));
    verifier.verify(&token).await.unwrap();

    let signing_key = verifier.keys().key("k1").await.unwrap();
    let shown = [
        format!("{verifier:?}"),
        format!("{:?}", verifier.keys()),
        format!("{signing_key:?}"),
    ];
    let x = key.jwk["x"].as_str().unwrap();
    let y = key.jwk["y"].as_str().unwrap();
    for text in &shown {
        for secretish in [x, y, token.as_str()] {
            assert!(!text.contains(secretish), "{text}");
        }
    }
    assert!(shown[0].contains("cached: 1"), "{}", shown[0]);
    assert!(shown[1].contains(&jwks.url), "{}", shown[1]);
    assert!(shown[2].contains("ES256"), "{}", shown[2]);
    assert_eq!(verifier.keys().breaker().name(), config(&jwks).breaker_name);
}
