//! OpenBao's identity token issuer as an OIDC-style security service: an
//! ES256 signing key, a role whose tokens carry the entity's `scope`
//! metadata, and tokens for AppRole logins.
//!
//! The JWKS is public at `<addr>/v1/identity/oidc/.well-known/keys`; tokens
//! have `iss` = [`OidcIssuer::issuer`], `aud` = [`OidcIssuer::client_id`],
//! `sub` = the entity id, and `scope` = the entity's `scope` metadata.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Error, OpenBao, Result};

/// A configured identity token issuer (see [`OpenBao::configure_oidc_issuer`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OidcIssuer {
    /// The signing key's name (`identity/oidc/key/<key>`).
    pub key: String,
    /// The role tokens are issued for (`identity/oidc/token/<role>`).
    pub role: String,
    /// The role's client id: the tokens' `aud`.
    pub client_id: String,
    /// The tokens' `iss`.
    pub issuer: String,
    /// Where the public keys are served (no token needed).
    pub jwks_url: String,
    /// The lifetime of issued tokens.
    pub ttl: Duration,
}

/// The role template: the entity's `scope` metadata as the `scope` claim.
const TEMPLATE: &str = r#"{"scope": {{identity.entity.metadata.scope}}}"#;

impl OpenBao {
    /// Configures the identity token issuer (idempotent): issuer URL
    /// `<addr>`, ES256 key `key`, role `role` signing with it (tokens valid
    /// for `ttl`, `scope` claim from the entity's metadata), and an ACL
    /// policy `oidc-<role>` that lets a token ask for `role`'s tokens.
    pub async fn configure_oidc_issuer(
        &self,
        key: &str,
        role: &str,
        ttl: Duration,
    ) -> Result<OidcIssuer> {
        self.call(
            Method::POST,
            "identity/oidc/config",
            Some(json!({ "issuer": self.addr() })),
        )
        .await?;
        self.call(
            Method::POST,
            &format!("identity/oidc/key/{key}"),
            Some(json!({
                "algorithm": "ES256",
                "allowed_client_ids": "*",
                "rotation_period": "24h",
                "verification_ttl": "24h",
            })),
        )
        .await?;
        self.write_oidc_role(key, role, ttl).await?;
        self.write_policy(
            &format!("oidc-{role}"),
            &format!(
                "path \"identity/oidc/token/{role}\" {{ capabilities = [\"read\"] }}\n\
                 path \"auth/token/lookup-self\" {{ capabilities = [\"read\"] }}\n"
            ),
        )
        .await?;
        let client_id = self
            .call(Method::GET, &format!("identity/oidc/role/{role}"), None)
            .await?
            .and_then(|v| {
                v.pointer("/data/client_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .ok_or_else(|| Error::Usage(format!("oidc role {role} has no client_id")))?;
        let discovery = self
            .call(
                Method::GET,
                "identity/oidc/.well-known/openid-configuration",
                None,
            )
            .await?
            .unwrap_or_default();
        let issuer = discovery
            .get("issuer")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Usage("openid-configuration without issuer".into()))?
            .to_owned();
        Ok(OidcIssuer {
            key: key.to_owned(),
            role: role.to_owned(),
            client_id,
            issuer,
            jwks_url: format!("{}/v1/identity/oidc/.well-known/keys", self.addr()),
            ttl,
        })
    }

    /// Writes role `role` signing with `key`, its tokens valid for `ttl`
    /// (an existing role keeps its client id).
    pub async fn write_oidc_role(&self, key: &str, role: &str, ttl: Duration) -> Result<()> {
        self.call(
            Method::POST,
            &format!("identity/oidc/role/{role}"),
            Some(json!({
                "key": key,
                "template": TEMPLATE,
                "ttl": format!("{}s", ttl.as_secs().max(1)),
            })),
        )
        .await
        .map(drop)
    }

    /// A fresh token of `issuer` whose `scope` claim is `scope`: an AppRole
    /// (named after the scope) logs in, its entity gets `scope` as
    /// metadata, and the login token asks for the role's token.
    pub async fn oidc_token(&self, issuer: &OidcIssuer, scope: &str) -> Result<String> {
        OidcClient::new(self.addr(), self.root_token())?
            .token(issuer, scope)
            .await
    }
}

/// Issues tokens from an OpenBao that this process did not start (e.g.
/// `cargo xtask token` against the stack of `cargo xtask up`), with its
/// address and root token.
pub struct OidcClient {
    /// The server's address.
    addr: String,
    /// The root token.
    root_token: String,
    /// The HTTP client.
    http: reqwest::Client,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("addr", &self.addr)
            .field("root_token", &"<redacted>")
            .finish()
    }
}

impl OidcClient {
    /// A client for the server at `addr` with `root_token`.
    pub fn new(addr: &str, root_token: &str) -> Result<Self> {
        let http = crate::openbao::http_client()?;
        Ok(Self {
            addr: addr.trim_end_matches('/').to_owned(),
            root_token: root_token.to_owned(),
            http,
        })
    }

    /// One API call with `token`; the JSON body (`Null` when empty).
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}/v1/{path}", self.addr);
        crate::openbao::api_call(&self.http, &url, token, method, path, body)
            .await
            .map(Option::unwrap_or_default)
    }

    fn text(value: &Value, pointer: &str, what: &str) -> Result<String> {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| Error::Usage(format!("{what} answered without {pointer}")))
    }

    /// A fresh token of `issuer` whose `scope` claim is `scope` (see
    /// [`OpenBao::oidc_token`]).
    pub async fn token(&self, issuer: &OidcIssuer, scope: &str) -> Result<String> {
        let name: String = scope
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.approle_token(issuer, &format!("oidc-client-{name}"), scope)
            .await
    }

    /// A fresh token of `issuer` for the client `subject` (lowercase ASCII
    /// letters, digits, `-`, `_`; at most 64), whose `scope` claim is
    /// `scope`: the AppRole `oidc-subject-<subject>` logs in, so every
    /// token of one subject has the same `sub` (its entity's id, kept as
    /// long as OpenBao's storage), whatever its scope, and two subjects
    /// have different ones. The scope is the entity's metadata, set before
    /// each token: concurrent calls for one subject with different scopes
    /// may swap them.
    pub async fn subject_token(
        &self,
        issuer: &OidcIssuer,
        subject: &str,
        scope: &str,
    ) -> Result<String> {
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if subject.is_empty() || subject.len() > 64 || !subject.chars().all(valid) {
            return Err(Error::Usage(format!(
                "subject `{subject}`: use 1 to 64 lowercase ASCII letters, digits, `-` or `_`"
            )));
        }
        self.approle_token(issuer, &format!("oidc-subject-{subject}"), scope)
            .await
    }

    /// A token of `issuer` with `scope`, for the entity of AppRole `role`
    /// (created on first use).
    async fn approle_token(&self, issuer: &OidcIssuer, role: &str, scope: &str) -> Result<String> {
        let root = self.root_token.as_str();
        let auths = self.call(Method::GET, "sys/auth", root, None).await?;
        if auths.get("approle/").is_none() && auths.pointer("/data/approle~1").is_none() {
            match self
                .call(
                    Method::POST,
                    "sys/auth/approle",
                    root,
                    Some(json!({ "type": "approle" })),
                )
                .await
            {
                // Two concurrent first calls both enable it: fine.
                Err(Error::Bao {
                    status: 400, body, ..
                }) if body.contains("already in use") => {}
                other => drop(other?),
            }
        }
        self.call(
            Method::POST,
            &format!("auth/approle/role/{role}"),
            root,
            Some(
                json!({ "token_policies": [format!("oidc-{}", issuer.role)], "token_ttl": "600s" }),
            ),
        )
        .await?;
        let role_id = self
            .call(
                Method::GET,
                &format!("auth/approle/role/{role}/role-id"),
                root,
                None,
            )
            .await?;
        let role_id = Self::text(&role_id, "/data/role_id", "role-id")?;
        let secret_id = self
            .call(
                Method::POST,
                &format!("auth/approle/role/{role}/secret-id"),
                root,
                Some(json!({})),
            )
            .await?;
        let secret_id = Self::text(&secret_id, "/data/secret_id", "secret-id")?;
        let login = self
            .call(
                Method::POST,
                "auth/approle/login",
                "",
                Some(json!({ "role_id": role_id, "secret_id": secret_id })),
            )
            .await?;
        let client_token = Self::text(&login, "/auth/client_token", "approle login")?;
        let entity = Self::text(&login, "/auth/entity_id", "approle login")?;
        self.call(
            Method::POST,
            &format!("identity/entity/id/{entity}"),
            root,
            Some(json!({ "metadata": { "scope": scope } })),
        )
        .await?;
        let token = self
            .call(
                Method::GET,
                &format!("identity/oidc/token/{}", issuer.role),
                &client_token,
                None,
            )
            .await?;
        Self::text(&token, "/data/token", "identity/oidc/token")
    }
}

/// The `sub` claim of a JWT, read without verifying the signature: what a
/// test compares with the subject the services recorded (the audit trail's
/// `actor`, a queued write's owner).
pub fn jwt_subject(token: &str) -> Result<String> {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    let not_a_jwt = |why: &str| Error::Usage(format!("not a JWT: {why}"));
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| not_a_jwt("no payload"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| not_a_jwt("the payload is not base64url"))?;
    let claims: Value =
        serde_json::from_slice(&bytes).map_err(|_| not_a_jwt("the payload is not JSON"))?;
    claims["sub"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| not_a_jwt("no `sub` claim"))
}

#[cfg(test)]
mod subject_tests {
    use super::*;

    #[test]
    fn the_subject_is_read_from_the_payload() {
        // {"alg":"none"} . {"sub":"alice","scope":"x"} . (no signature)
        let token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSIsInNjb3BlIjoieCJ9.";
        assert_eq!(jwt_subject(token).unwrap(), "alice");
        assert!(jwt_subject("no-dots").is_err());
        assert!(jwt_subject("a.!!!.c").is_err());
    }
}
