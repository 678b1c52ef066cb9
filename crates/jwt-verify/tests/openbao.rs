//! OpenBao's identity tokens (a real OIDC-style issuer, started by
//! `testkit`): they verify with the published keys, carry the entity as
//! `sub` and the scopes, and a forgery with the public key is refused.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use jwt_verify::{Config, Ignore, Principal, Verifier, VerifyError};
use serde_json::Value;
use testkit::OpenBao;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_tokens_verify() {
    let bao = OpenBao::start().await.expect("OpenBao starts");
    let issuer = bao
        .configure_oidc_issuer("jwt-verify", "api", Duration::from_secs(600))
        .await
        .expect("issuer");
    let http = testkit::http_client().expect("client");
    let config = Config::new(&issuer.jwks_url, &issuer.issuer, [&issuer.client_id]);
    let verifier: Verifier<Principal> = Verifier::new(config, http.clone(), Ignore);
    assert!(verifier.keys().refresh().await.expect("keys") >= 1);

    let token = bao
        .oidc_token(&issuer, "stores:read stores:write")
        .await
        .expect("token");
    let principal = verifier
        .authenticate(Some(&format!("Bearer {token}")))
        .await
        .expect("verifies");
    assert!(!principal.sub.is_empty());
    assert!(
        principal
            .scopes
            .contains_all(["stores:read", "stores:write"])
    );

    // HS256 with the published key as the secret, same claims and kid.
    let jwks: Value = http
        .get(&issuer.jwks_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .unwrap()
        .clone();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = header.kid;
    let forged = jsonwebtoken::encode(
        &hs,
        &claims,
        &EncodingKey::from_secret(jwk.to_string().as_bytes()),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(&forged).await,
        Err(VerifyError::Invalid("algorithm does not match the key"))
    );
}
