//! [`TokenProvider`]: how the client gets the bearer token of each
//! request, so that callers plug in their own (a fixed one, a refreshing
//! OAuth client, a workload identity).

use std::{future::Future, pin::Pin};

use crate::ClientError;

/// The future of a token.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<String, ClientError>> + Send + 'a>>;

/// Gives the bearer token of a request; asked before every attempt, so a
/// provider that refreshes its token is used as it is.
pub trait TokenProvider: Send + Sync + 'static {
    /// The token (without `Bearer `).
    fn token(&self) -> TokenFuture<'_>;
}

/// One fixed token. `Debug` never shows it.
///
/// ```
/// use store_client::StaticToken;
///
/// let token = StaticToken::new("eyJhbGciOi.secret.sig");
/// assert!(!format!("{token:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct StaticToken(String);

impl StaticToken {
    /// The token `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

impl TokenProvider for StaticToken {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}
