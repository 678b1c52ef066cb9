//! testkit's identity token issuer against the real OpenBao: ES256 keys in
//! the public JWKS, tokens carrying the entity's `scope`, `aud` and `iss`.

use std::time::Duration;

use serde_json::Value;
use testkit::OpenBao;

/// The JSON of a JWT's part `index` (0 header, 1 claims).
fn part(token: &str, index: usize) -> Value {
    let text = token.split('.').nth(index).expect("three parts");
    let bytes = base64url(text);
    serde_json::from_slice(&bytes).expect("JSON part")
}

/// Unpadded base64url, decoded by hand (no dependency for a test).
fn base64url(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        other => panic!("not base64url: {other}"),
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_es256_tokens_with_the_entity_scope() {
    let bao = OpenBao::start().await.expect("OpenBao starts");
    let issuer = bao
        .configure_oidc_issuer("gateway", "api", Duration::from_secs(300))
        .await
        .expect("issuer configured");
    assert_eq!(issuer.issuer, format!("{}/v1/identity/oidc", bao.addr()));

    // Two first calls at once (both find AppRole not yet enabled).
    let (token, concurrent) = tokio::join!(
        bao.oidc_token(&issuer, "stores:read stores:write"),
        bao.oidc_token(&issuer, "stores:secrets"),
    );
    let token = token.expect("a token");
    assert_eq!(
        part(&concurrent.expect("a concurrent token"), 1)["scope"],
        "stores:secrets"
    );
    let header = part(&token, 0);
    assert_eq!(header["alg"], "ES256", "{header}");
    let claims = part(&token, 1);
    assert_eq!(claims["scope"], "stores:read stores:write", "{claims}");
    assert_eq!(claims["aud"], issuer.client_id.as_str(), "{claims}");
    assert_eq!(claims["iss"], issuer.issuer.as_str(), "{claims}");
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 300, "{claims}");

    // Another scope: another entity, the same key.
    let other = bao.oidc_token(&issuer, "stores:read").await.expect("token");
    assert_eq!(part(&other, 1)["scope"], "stores:read");
    assert_ne!(part(&other, 1)["sub"], claims["sub"]);

    let jwks: Value = reqwest::get(&issuer.jwks_url)
        .await
        .expect("JWKS answers")
        .json()
        .await
        .expect("JWKS JSON");
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(
        keys.iter()
            .any(|k| k["kid"] == header["kid"] && k["alg"] == "ES256" && k["kty"] == "EC"),
        "{jwks}"
    );
}
