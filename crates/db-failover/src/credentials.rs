//! Who the cluster logs in as: fixed credentials, or rotating ones pushed
//! through a `tokio::sync::watch` channel.

use std::fmt;

use tokio::sync::watch;

/// A password that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    /// The password itself, for the login.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A database login: user, password and the generation it belongs to.
///
/// The generation must grow with every rotation: connections opened with an
/// older generation are retired when they next come back to the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: Password,
    generation: u64,
}

impl Credentials {
    /// Credentials of `generation` (0 for fixed ones).
    pub fn new(username: impl Into<String>, password: impl Into<String>, generation: u64) -> Self {
        Credentials {
            username: username.into(),
            password: Password::new(password),
            generation,
        }
    }

    /// The role to log in as.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Its password.
    pub fn password(&self) -> &Password {
        &self.password
    }

    /// The rotation generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// Where the cluster gets its credentials.
///
/// # The rotation contract
///
/// A rotating source (a secrets manager's dynamic database credentials, say)
/// publishes each new login on a `watch` channel once the role exists on the
/// primary, with a `generation` higher than the last. From then on:
///
/// - every new connection (pooled or probe) logs in with the newest value;
/// - a pooled connection opened with an older generation is closed instead
///   of being handed out again (checked when it is next taken from the pool,
///   so a query running on it finishes normally);
/// - a node that refuses the new login (SQLSTATE 28P01 / 28000: a replica
///   that has not replayed the new role yet) is not failing: it keeps using
///   the last generation that logged in there, probe and pool, until the
///   new one works (tried again at every probe);
/// - the old role must stay valid until the connections using it are gone.
///   Revoke it only after that (a lease's grace period covers it).
///
/// vault-client's `LeaseManager::map` gives the receiver for
/// [`CredentialsProvider::watch`]; see the crate documentation.
#[derive(Clone, Debug)]
pub enum CredentialsProvider {
    /// The same login for the cluster's whole life.
    Static(Credentials),
    /// The latest value of a watch channel.
    Watch(watch::Receiver<Credentials>),
}

impl CredentialsProvider {
    /// Fixed credentials (generation 0).
    pub fn fixed(username: impl Into<String>, password: impl Into<String>) -> Self {
        CredentialsProvider::Static(Credentials::new(username, password, 0))
    }

    /// Rotating credentials: whatever `receiver` holds when a connection is
    /// opened.
    pub fn watch(receiver: watch::Receiver<Credentials>) -> Self {
        CredentialsProvider::Watch(receiver)
    }

    /// The credentials new connections use now.
    pub fn current(&self) -> Credentials {
        match self {
            CredentialsProvider::Static(c) => c.clone(),
            CredentialsProvider::Watch(rx) => rx.borrow().clone(),
        }
    }

    /// The current generation, without cloning the credentials.
    pub fn generation(&self) -> u64 {
        match self {
            CredentialsProvider::Static(c) => c.generation,
            CredentialsProvider::Watch(rx) => rx.borrow().generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let creds = Credentials::new("app", "hunter2", 4);
        let shown = format!("{creds:?} {:?}", CredentialsProvider::Static(creds.clone()));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("app"));
        assert_eq!(creds.password().expose(), "hunter2");
    }

    #[test]
    fn watch_source_follows_rotation() {
        let (tx, rx) = watch::channel(Credentials::new("v1", "p1", 1));
        let provider = CredentialsProvider::watch(rx);
        assert_eq!(provider.current().username(), "v1");
        tx.send_replace(Credentials::new("v2", "p2", 2));
        assert_eq!(provider.generation(), 2);
        assert_eq!(provider.current().username(), "v2");
        assert_eq!(CredentialsProvider::fixed("a", "b").generation(), 0);
    }
}
