//! Auth methods: a fixed token, AppRole (with a plain or response-wrapped
//! secret id) and Kubernetes (the service-account JWT re-read from its file
//! at every login, since the kubelet rotates it).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::client::{Call, CallAuth, Inner};
use crate::error::{Error, Result};
use crate::json::Answer;
use crate::path::ApiPath;
use crate::retry::Idempotence;
use crate::secret::{ExposeSecret, SecretString};
use crate::token::Grant;

/// The default service-account token file of a Kubernetes pod.
pub const KUBERNETES_JWT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// How the client gets its token. `Debug` never shows a secret.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum AuthMethod {
    /// No token (only unauthenticated endpoints such as `sys/health`).
    #[default]
    None,
    /// A fixed token (`VAULT_TOKEN`). Renewed if renewable; it cannot be
    /// replaced when it expires.
    Token(SecretString),
    /// AppRole login.
    AppRole(AppRole),
    /// Kubernetes service-account login.
    Kubernetes(Kubernetes),
}

impl fmt::Debug for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthMethod::None => f.write_str("None"),
            AuthMethod::Token(_) => f.write_str("Token([REDACTED])"),
            AuthMethod::AppRole(approle) => approle.fmt(f),
            AuthMethod::Kubernetes(k8s) => k8s.fmt(f),
        }
    }
}

impl AuthMethod {
    /// A fixed token.
    pub fn token(token: impl Into<String>) -> Self {
        AuthMethod::Token(SecretString::from(token.into()))
    }

    /// AppRole at mount `approle` with a plain secret id.
    pub fn approle(role_id: impl Into<String>, secret_id: impl Into<String>) -> Self {
        AuthMethod::AppRole(AppRole {
            mount: "approle".into(),
            role_id: role_id.into(),
            secret_id: SecretId::Plain(SecretString::from(secret_id.into())),
        })
    }

    /// AppRole at mount `approle` with a response-wrapped secret id: the
    /// client unwraps it once (after checking the wrapping token was created
    /// by `auth/approle/role/<role>/secret-id`) and keeps the secret id in
    /// memory for later logins.
    pub fn approle_wrapped(role_id: impl Into<String>, wrapping_token: impl Into<String>) -> Self {
        AuthMethod::AppRole(AppRole {
            mount: "approle".into(),
            role_id: role_id.into(),
            secret_id: SecretId::Wrapped(SecretString::from(wrapping_token.into())),
        })
    }

    /// Kubernetes at mount `kubernetes`, reading the JWT from
    /// [`KUBERNETES_JWT_PATH`].
    pub fn kubernetes(role: impl Into<String>) -> Self {
        AuthMethod::Kubernetes(Kubernetes {
            mount: "kubernetes".into(),
            role: role.into(),
            jwt_path: PathBuf::from(KUBERNETES_JWT_PATH),
        })
    }

    /// Whether the client can get a new token by itself.
    pub fn can_login(&self) -> bool {
        matches!(self, AuthMethod::AppRole(_) | AuthMethod::Kubernetes(_))
    }
}

/// AppRole settings.
#[derive(Clone)]
pub struct AppRole {
    /// Where the method is mounted (default `approle`).
    pub mount: String,
    /// The role id (not secret on its own).
    pub role_id: String,
    /// The secret id.
    pub secret_id: SecretId,
}

impl fmt::Debug for AppRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppRole")
            .field("mount", &self.mount)
            .field("role_id", &self.role_id)
            .field("secret_id", &self.secret_id)
            .finish()
    }
}

/// An AppRole secret id, given as is or response-wrapped.
#[derive(Clone)]
#[non_exhaustive]
pub enum SecretId {
    /// The secret id itself.
    Plain(SecretString),
    /// A wrapping token whose unwrapped answer holds the secret id.
    Wrapped(SecretString),
}

impl fmt::Debug for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretId::Plain(_) => "Plain([REDACTED])",
            SecretId::Wrapped(_) => "Wrapped([REDACTED])",
        })
    }
}

/// Kubernetes settings.
#[derive(Debug, Clone)]
pub struct Kubernetes {
    /// Where the method is mounted (default `kubernetes`).
    pub mount: String,
    /// The Vault role to log in as.
    pub role: String,
    /// The service-account JWT file, read again at every login.
    pub jwt_path: PathBuf,
}

impl Inner {
    /// Logs in with the configured method.
    pub(crate) async fn login(&self) -> Result<Grant> {
        match &self.config.auth {
            AuthMethod::None | AuthMethod::Token(_) => Err(Error::NoToken(
                "the auth method cannot log in (no method, or a fixed token)".into(),
            )),
            AuthMethod::AppRole(approle) => {
                let secret_id = self.approle_secret_id(approle).await?;
                let path = ApiPath::join(&["auth", &approle.mount, "login"])?;
                let body = json!({
                    "role_id": approle.role_id,
                    "secret_id": secret_id.expose_secret(),
                });
                self.login_call("auth.approle.login", &path, &body).await
            }
            AuthMethod::Kubernetes(k8s) => {
                // Re-read at every login: the kubelet rotates the token.
                let jwt = tokio::fs::read_to_string(&k8s.jwt_path)
                    .await
                    .map_err(|source| Error::Io {
                        context: format!(
                            "reading the service-account JWT {}",
                            k8s.jwt_path.display()
                        ),
                        source,
                    })?;
                let jwt = SecretString::from(jwt.trim().to_owned());
                let path = ApiPath::join(&["auth", &k8s.mount, "login"])?;
                let body = json!({ "role": k8s.role, "jwt": jwt.expose_secret() });
                self.login_call("auth.kubernetes.login", &path, &body).await
            }
        }
    }

    async fn login_call(
        &self,
        op: &'static str,
        path: &ApiPath,
        body: &serde_json::Value,
    ) -> Result<Grant> {
        let reply = self
            .send(Call {
                body: Some(body),
                auth: CallAuth::None,
                // A login with a limited-use secret id must not run twice.
                idempotence: Idempotence::NotAfterSent,
                ..Call::new(op, Method::POST, path)
            })
            .await?;
        grant_from_auth(path.as_str(), reply.body.as_ref())
    }

    /// The AppRole secret id, unwrapping it on first use.
    async fn approle_secret_id(&self, approle: &AppRole) -> Result<SecretString> {
        let wrapping_token = match &approle.secret_id {
            SecretId::Plain(secret) => return Ok(secret.clone()),
            SecretId::Wrapped(token) => token,
        };
        let mut unwrapped = self.unwrapped_secret_id.lock().await;
        if let Some(secret) = &*unwrapped {
            return Ok(secret.clone());
        }
        let prefix = format!("auth/{}/role/", approle.mount.trim_matches('/'));
        let value = self
            .unwrap_checked(
                wrapping_token,
                |creation_path| {
                    creation_path.starts_with(&prefix)
                        && (creation_path.ends_with("/secret-id")
                            || creation_path.ends_with("/custom-secret-id"))
                },
                &format!("{prefix}<role>/secret-id"),
            )
            .await?;
        let answer = Answer::new("sys/wrapping/unwrap", &value);
        let secret = SecretString::from(answer.str("/data/secret_id")?.to_owned());
        *unwrapped = Some(secret.clone());
        Ok(secret)
    }

    /// Looks the wrapping token up, checks its creation path with `expected`
    /// and unwraps it (once: an unwrap is never retried after it was sent).
    pub(crate) async fn unwrap_checked(
        &self,
        wrapping_token: &SecretString,
        expected: impl Fn(&str) -> bool,
        expected_text: &str,
    ) -> Result<serde_json::Value> {
        let lookup_path = ApiPath::new("sys/wrapping/lookup")?;
        let body = json!({ "token": wrapping_token.expose_secret() });
        let lookup = self
            .send(Call {
                body: Some(&body),
                auth: CallAuth::None,
                idempotence: Idempotence::Safe,
                ..Call::new("sys.wrapping.lookup", Method::POST, &lookup_path)
            })
            .await?;
        let lookup_body = lookup.body.unwrap_or_default();
        let creation_path =
            Answer::new("sys/wrapping/lookup", &lookup_body).str("/data/creation_path")?;
        if !expected(creation_path) {
            return Err(Error::WrappingMismatch {
                expected: expected_text.to_owned(),
                actual: creation_path.to_owned(),
            });
        }
        let unwrap_path = ApiPath::new("sys/wrapping/unwrap")?;
        let reply = self
            .send(Call {
                auth: CallAuth::Token(wrapping_token),
                idempotence: Idempotence::NotAfterSent,
                ..Call::new("sys.wrapping.unwrap", Method::POST, &unwrap_path)
            })
            .await?;
        reply.body.ok_or_else(|| Error::MissingField {
            path: "sys/wrapping/unwrap".into(),
            field: "/data".into(),
            expected: "an object",
        })
    }

    /// `auth/token/renew-self`.
    pub(crate) async fn renew_self(
        &self,
        token: &SecretString,
        increment: Duration,
    ) -> Result<Grant> {
        let path = ApiPath::new("auth/token/renew-self")?;
        let body = json!({ "increment": format!("{}s", increment.as_secs()) });
        let reply = self
            .send(Call {
                body: Some(&body),
                auth: CallAuth::Token(token),
                // A renewal asks for the same TTL again.
                idempotence: Idempotence::Safe,
                ..Call::new("auth.token.renew_self", Method::POST, &path)
            })
            .await?;
        grant_from_auth(path.as_str(), reply.body.as_ref())
    }

    /// `auth/token/lookup-self`.
    pub(crate) async fn lookup_self(&self, token: &SecretString) -> Result<Grant> {
        let path = ApiPath::new("auth/token/lookup-self")?;
        let reply = self
            .send(Call {
                auth: CallAuth::Token(token),
                ..Call::new("auth.token.lookup_self", Method::GET, &path)
            })
            .await?;
        let body = reply.body.unwrap_or_default();
        let answer = Answer::new(path.as_str(), &body);
        Ok(Grant {
            token: None,
            ttl: answer.ttl("/data/ttl")?,
            renewable: answer.opt_bool("/data/renewable")?.unwrap_or(false),
        })
    }
}

/// The token, TTL and renewability of an `auth` block.
fn grant_from_auth(path: &str, body: Option<&serde_json::Value>) -> Result<Grant> {
    let empty = serde_json::Value::Null;
    let answer = Answer::new(path, body.unwrap_or(&empty));
    let token = answer.str("/auth/client_token")?;
    if token.is_empty() {
        return Err(Error::MissingField {
            path: path.to_owned(),
            field: "/auth/client_token".into(),
            expected: "a non-empty string",
        });
    }
    Ok(Grant {
        token: Some(SecretString::from(token.to_owned())),
        ttl: answer.ttl("/auth/lease_duration")?,
        renewable: answer.opt_bool("/auth/renewable")?.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        for method in [
            AuthMethod::token("s.top-secret"),
            AuthMethod::approle("role-1", "top-secret"),
            AuthMethod::approle_wrapped("role-1", "top-secret"),
        ] {
            let shown = format!("{method:?} {method:#?}");
            assert!(!shown.contains("top-secret"), "{shown}");
        }
        assert!(format!("{:?}", AuthMethod::approle("role-1", "x")).contains("role-1"));
        assert!(AuthMethod::kubernetes("app").can_login());
        assert!(!AuthMethod::token("t").can_login());
    }

    #[test]
    fn auth_block_fields() {
        let ok =
            json!({ "auth": { "client_token": "s.x", "lease_duration": 60, "renewable": true } });
        let grant = grant_from_auth("auth/approle/login", Some(&ok)).unwrap();
        assert_eq!(grant.ttl, Duration::from_secs(60));
        assert!(grant.renewable);
        for bad in [
            json!({ "auth": null }),
            json!({ "auth": { "client_token": "", "lease_duration": 60 } }),
            json!({ "auth": { "client_token": "s.x" } }),
            json!({ "data": {} }),
        ] {
            let err = grant_from_auth("auth/approle/login", Some(&bad)).unwrap_err();
            assert!(matches!(err, Error::MissingField { .. }), "{err}");
        }
        assert!(grant_from_auth("auth/approle/login", None).is_err());
    }
}
