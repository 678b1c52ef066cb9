//! A stand-in for Vault's Kubernetes auth method, on a real OpenBao.
//!
//! OpenBao's `jwt` auth method takes the same login body as the
//! `kubernetes` one (`{"role", "jwt"}` at `auth/<mount>/login`), so a client
//! configured for Kubernetes auth (vault-client's `AuthMethod::Kubernetes`,
//! store-service's `BAO_K8S_ROLE`) logs in against it with a
//! service-account-shaped JWT (`sub` =
//! `system:serviceaccount:<namespace>:<name>`, `aud` = `vault`) signed by a
//! key of the test's own. What is not exercised: OpenBao asking a
//! Kubernetes API server to review the token.

use std::{
    fmt,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rcgen::{KeyPair, PKCS_ED25519, SigningKey as _};
use reqwest::Method;
use serde_json::json;

use crate::{Error, OpenBao, Result};

/// Issues service-account tokens that the login of
/// [`OpenBao::enable_kubernetes_login`] accepts.
pub struct ServiceAccountTokens {
    /// The signing key (Ed25519).
    key: KeyPair,
    /// `system:serviceaccount:<namespace>:<name>`.
    subject: String,
}

impl fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountTokens")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountTokens {
    /// The service account's subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// A token for the bound service account, valid for 10 minutes.
    pub fn token(&self) -> String {
        self.token_for(&self.subject)
    }

    /// A token for `subject` (another service account is refused by the
    /// role).
    pub fn token_for(&self, subject: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(
            json!({"sub": subject, "aud": "vault", "iat": now, "nbf": now.saturating_sub(5), "exp": now + 600})
                .to_string(),
        );
        let input = format!("{header}.{claims}");
        // Ed25519 signing with a key that was just generated cannot fail.
        let signature = self.key.sign(input.as_bytes()).unwrap_or_default();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// Writes [`token`](Self::token) to `path` (as the kubelet projects
    /// it into a pod).
    pub fn write_token(&self, path: &Path) -> Result<()> {
        crate::write_private(path, &self.token())
    }
}

impl OpenBao {
    /// Enables a Kubernetes-style login at `mount` (OpenBao's `jwt` method)
    /// with role `role` for the service account `name` of `namespace`,
    /// whose tokens get `policies`; returns the token issuer.
    pub async fn enable_kubernetes_login(
        &self,
        mount: &str,
        role: &str,
        namespace: &str,
        name: &str,
        policies: &[&str],
    ) -> Result<ServiceAccountTokens> {
        let key = KeyPair::generate_for(&PKCS_ED25519)
            .map_err(|e| Error::Usage(format!("generating a signing key: {e}")))?;
        self.call(
            Method::POST,
            &format!("sys/auth/{mount}"),
            Some(json!({"type": "jwt"})),
        )
        .await?;
        self.call(
            Method::POST,
            &format!("auth/{mount}/config"),
            Some(json!({"jwt_validation_pubkeys": [key.public_key_pem()]})),
        )
        .await?;
        let subject = format!("system:serviceaccount:{namespace}:{name}");
        self.call(
            Method::POST,
            &format!("auth/{mount}/role/{role}"),
            Some(json!({
                "role_type": "jwt",
                "bound_audiences": ["vault"],
                "user_claim": "sub",
                "bound_subject": subject,
                "token_policies": policies,
                "token_ttl": "1h",
            })),
        )
        .await?;
        Ok(ServiceAccountTokens { key, subject })
    }
}
