//! Authentication against OpenBao's real identity tokens, in front of the
//! real store service: every bad token is a 401 with `WWW-Authenticate`,
//! a missing scope a 403, and none of them reaches the store service; a
//! flood of random key ids costs the security service at most the
//! configured refresh rate.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}

/// A token's (header, claims) as JSON.
fn parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let header = serde_json::from_slice(&unb64(it.next().unwrap())).unwrap();
    let claims = serde_json::from_slice(&unb64(it.next().unwrap())).unwrap();
    (header, claims)
}

/// `header.claims.signature` from JSON parts and a raw signature.
fn assemble(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// Asserts a 401 with a Bearer `invalid_token` challenge and a problem body.
async fn assert_unauthorized(response: reqwest::Response, case: &str) {
    assert_eq!(response.status(), 401, "{case}");
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer realm=\"gateway\", error=\"invalid_token\""),
        "{case}: {challenge}"
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{case}"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["error"], "UNAUTHORIZED", "{case}");
    assert_eq!(problem["status"], 401, "{case}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_never_forwarded() {
    let (store, security) = tokio::join!(Store::start(), Security::start());
    // A second role on the same key whose tokens live 3 s (its own `aud`).
    let short = security
        .bao
        .configure_oidc_issuer("gateway", "short", Duration::from_secs(3))
        .await
        .expect("short-lived role");
    let audiences = format!("\"{}\", \"{}\"", security.issuer.client_id, short.client_id);
    let text = config_text(
        &security.issuer.jwks_url,
        &security,
        &store,
        "leeway = \"0s\"",
        "",
    )
    .replace(
        &format!("audiences = [\"{}\"]", security.issuer.client_id),
        &format!("audiences = [{audiences}]"),
    );
    let gw = RunningGateway::start(&text).await;
    let http = http();
    let token = security.token("stores:read stores:write").await;
    let url = gw.url("/api/stores");

    // The good token works.
    let ok = get_with(&url, &token).await;
    assert_eq!(ok.status(), 200);
    let before = store.api_requests().await;

    let (header, claims) = parts(&token);
    let signature = token.rsplit('.').next().unwrap().to_owned();
    let kid = header["kid"].as_str().unwrap().to_owned();

    // No token, other schemes, garbage.
    assert_unauthorized(http.get(&url).send().await.unwrap(), "no token").await;
    for value in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not.a.jwt",
        "Bearer a.b",
        &format!("Token {token}"),
    ] {
        let r = http
            .get(&url)
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_unauthorized(r, value).await;
    }

    // alg: none, with and without a signature.
    let none = json!({ "alg": "none", "typ": "JWT", "kid": kid });
    for signature in ["", &signature] {
        let forged = assemble(&none, &claims, signature);
        assert_unauthorized(get_with(&url, &forged).await, "alg none").await;
    }

    // Algorithm confusion: HS256 signed with the public key (its JWK JSON,
    // and its coordinates).
    let jwks: Value = http
        .get(&security.issuer.jwks_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap()
        .clone();
    for secret in [
        jwk.to_string().into_bytes(),
        unb64(jwk["x"].as_str().unwrap()),
    ] {
        let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        hs.kid = Some(kid.clone());
        let forged = jsonwebtoken::encode(
            &hs,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_unauthorized(get_with(&url, &forged).await, "HS256 with the public key").await;
    }

    // Tampered claims, original signature: more scopes, another subject,
    // a later expiry.
    for (field, value) in [
        ("scope", json!("stores:read stores:write stores:secrets")),
        ("sub", json!("someone-else")),
        ("exp", json!(claims["exp"].as_i64().unwrap() + 3600)),
    ] {
        let mut tampered = claims.clone();
        tampered[field] = value;
        let forged = assemble(&header, &tampered, &signature);
        assert_unauthorized(get_with(&url, &forged).await, field).await;
    }
    // A signature from another token (same key, other claims).
    let other = security.token("stores:read").await;
    let spliced = assemble(&header, &claims, other.rsplit('.').next().unwrap());
    assert_unauthorized(get_with(&url, &spliced).await, "spliced signature").await;

    // Wrong `aud` and wrong `iss`: gateways expecting other values refuse
    // the same good token.
    for (what, from, to) in [
        (
            "aud",
            format!("audiences = [{audiences}]"),
            "audiences = [\"someone-else\"]".to_owned(),
        ),
        (
            "iss",
            format!("issuer = \"{}\"", security.issuer.issuer),
            "issuer = \"https://evil.example/v1/identity/oidc\"".to_owned(),
        ),
    ] {
        let strict = RunningGateway::start(&text.replace(&from, &to)).await;
        let r = get_with(&strict.url("/api/stores"), &token).await;
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.contains(&format!(
                "wrong {}",
                if what == "aud" { "audience" } else { "issuer" }
            )),
            "{what}: {challenge}"
        );
        assert_unauthorized(r, what).await;
    }

    assert_eq!(
        store.api_requests().await,
        before,
        "a refused token reached the store service"
    );

    // Expired: a 3 s token works, then is refused as expired (leeway 0).
    let short_token = security
        .bao
        .oidc_token(&short, "stores:read")
        .await
        .expect("short token");
    let expired_at = parts(&short_token).1["exp"].as_i64().unwrap();
    let response = get_until(&url, &short_token, 401, Duration::from_secs(30)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(now >= expired_at, "refused before its exp");
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("the token has expired"),
        "{:?}",
        response.headers()
    );
    assert_unauthorized(response, "expired").await;

    let metrics = gw.metrics().await;
    for reason in ["missing", "expired", "bad signature"] {
        assert!(
            metrics.lines().any(|l| l.starts_with(&format!(
                "gateway_auth_failures_total{{reason=\"{reason}\"}}"
            ))),
            "{reason}: {metrics}"
        );
    }
    // The forgeries: not one reached the store between the checks.
    let unchanged = store.api_requests().await;
    let forged = assemble(&none, &claims, "");
    let _ = get_with(&url, &forged).await;
    assert_eq!(store.api_requests().await, unchanged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_decide_per_method_and_path() {
    let (store, security) = tokio::join!(Store::start(), Security::start());
    let gw = RunningGateway::start(&config_text(
        &security.issuer.jwks_url,
        &security,
        &store,
        "",
        "",
    ))
    .await;
    let http = http();
    let writer = security.token("stores:write").await;
    let reader = security.token("stores:read").await;
    let secrets = security.token("stores:secrets").await;

    let id = create_store(&gw, &writer, "Scoped Shop").await;
    let read = format!("/api/stores/{id}");
    let secret_path = format!("/api/stores/{id}/secrets");
    let insufficient = |scope: &str| {
        format!("Bearer realm=\"gateway\", error=\"insufficient_scope\", scope=\"{scope}\"")
    };

    let cases: Vec<(&str, reqwest::Method, &str, &str, Option<&str>)> = vec![
        // (token, method, path, body, Some(missing scope) when refused)
        (&reader, reqwest::Method::GET, &read, "", None),
        (&reader, reqwest::Method::GET, "/api/stores", "", None),
        (
            &reader,
            reqwest::Method::POST,
            "/api/stores",
            "{\"name\": \"x\"}",
            Some("stores:write"),
        ),
        (
            &reader,
            reqwest::Method::PUT,
            &read,
            "{\"name\": \"x\", \"version\": 1}",
            Some("stores:write"),
        ),
        (
            &reader,
            reqwest::Method::GET,
            &secret_path,
            "",
            Some("stores:secrets"),
        ),
        (
            &writer,
            reqwest::Method::GET,
            &read,
            "",
            Some("stores:read"),
        ),
        (
            &writer,
            reqwest::Method::PUT,
            &read,
            "{\"name\": \"Renamed\", \"version\": 1}",
            None,
        ),
        (
            &writer,
            reqwest::Method::GET,
            &secret_path,
            "",
            Some("stores:secrets"),
        ),
        (&secrets, reqwest::Method::GET, &secret_path, "", None),
        (
            &secrets,
            reqwest::Method::GET,
            &read,
            "",
            Some("stores:read"),
        ),
    ];
    for (token, method, path, body, refused) in cases {
        let before = store.api_requests().await;
        let mut request = http
            .request(method.clone(), gw.url(path))
            .bearer_auth(token);
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let challenge = response.headers().get("www-authenticate").cloned();
        let case = format!("{method} {path} refused={refused:?}");
        match refused {
            Some(scope) => {
                assert_eq!(status, 403, "{case}");
                assert_eq!(challenge.unwrap(), insufficient(scope).as_str(), "{case}");
                let problem: Value = response.json().await.unwrap();
                assert_eq!(problem["error"], "INSUFFICIENT_SCOPE", "{case}");
                assert_eq!(store.api_requests().await, before, "{case}: forwarded");
            }
            None => {
                // Forwarded: whatever the store service answers, it is not
                // the gateway's 401/403.
                assert!(status != 401 && status != 403, "{case}: {status}");
                assert_eq!(
                    store.api_requests().await,
                    before + 1,
                    "{case}: not forwarded"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_is_held_to_the_refresh_rate() {
    let (store, security) = tokio::join!(Store::start(), Security::start());
    let jwks = CountingJwks::start(security.issuer.jwks_url.clone()).await;
    // Background refresh hourly, unknown-kid refresh at most once an hour:
    // the security service may see 1 + 1 fetches, whatever the flood.
    let gw = RunningGateway::start(&config_text(
        &jwks.url,
        &security,
        &store,
        "max_age = \"2h\"\nrefresh_interval = \"1h\"\nunknown_kid_interval = \"1h\"",
        "",
    ))
    .await;
    let token = security.token("stores:read").await;
    assert_eq!(get_with(&gw.url("/api/stores"), &token).await.status(), 200);
    assert_eq!(jwks.fetches(), 1, "the start-up fetch");
    let before = store.api_requests().await;

    let (header, claims) = parts(&token);
    let signature = token.rsplit('.').next().unwrap().to_owned();
    // One client for the flood (a client per request would spend the
    // machine on building 300 TLS configurations, not on the gateway).
    let client = http();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..300u64 {
        let mut forged = header.clone();
        forged["kid"] = json!(format!("random-{i}-{}", uuid_like(i)));
        let forged = assemble(&forged, &claims, &signature);
        let request = client.get(gw.url("/api/stores")).bearer_auth(forged);
        flood.spawn(async move { request.send().await.expect("GET answers").status() });
    }
    while let Some(status) = flood.join_next().await {
        assert_eq!(status.unwrap(), 401);
    }
    assert!(
        jwks.fetches() <= 2,
        "{} JWKS fetches for 300 unknown kids",
        jwks.fetches()
    );
    assert_eq!(store.api_requests().await, before);
    // The good token still works, from the cache.
    assert_eq!(get_with(&gw.url("/api/stores"), &token).await.status(), 200);
    assert!(jwks.fetches() <= 2);
}

fn uuid_like(i: u64) -> String {
    format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
