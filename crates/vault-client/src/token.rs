//! The token manager: renews the client token at about 2/3 of its TTL (with
//! jitter), logs in again when renewal is impossible (max TTL reached, 403),
//! lets only one login run at a time, and backs off (capped) while Vault is
//! down.
//!
//! The decisions are pure functions of the token's state and the time
//! ([`next_step`]); the loop ([`run`]) only sleeps on tokio time and carries
//! them out through an [`Authority`], so its tests run on paused time.

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, watch};
use tokio::time::Instant;

use crate::config::ConfigError;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::json::instant_after;
use crate::retry::Backoff;
use crate::secret::SecretString;

/// When the token is renewed and how logins are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewalPolicy {
    /// Renew (or log in again) after this fraction of the TTL. Default 2/3.
    pub fraction: f64,
    /// Up to this fraction of that point is taken off at random, so that
    /// many clients do not renew in step. Default 0.1 (renewal between 60 %
    /// and 67 % of the TTL).
    pub jitter: f64,
    /// Back-off between failed renewals or logins; its `max` caps the
    /// pressure on a server that is down. Default 1 s doubling to 30 s.
    pub retry: Backoff,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        RenewalPolicy {
            fraction: 2.0 / 3.0,
            jitter: 0.1,
            retry: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
        }
    }
}

impl RenewalPolicy {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if !(self.fraction > 0.0 && self.fraction < 1.0) {
            return Err(ConfigError::Setting {
                setting: "renewal.fraction",
                reason: "must be between 0 and 1".into(),
            });
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(ConfigError::Setting {
                setting: "renewal.jitter",
                reason: "must be at least 0 and less than 1".into(),
            });
        }
        self.retry.check()
    }

    /// When to act on a lease of `ttl` obtained at `obtained`, given a random
    /// `unit` in `[0, 1)`: `obtained + ttl * fraction * (1 - jitter * unit)`.
    pub(crate) fn due(&self, obtained: Instant, ttl: Duration, unit: f64) -> Instant {
        let fraction = self.fraction * (1.0 - self.jitter * unit.clamp(0.0, 1.0));
        instant_after(obtained, ttl.mul_f64(fraction))
    }
}

/// What Vault said about a token (login, renew-self or lookup-self).
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// The new token (logins only).
    pub(crate) token: Option<SecretString>,
    /// Its TTL; zero means it never expires.
    pub(crate) ttl: Duration,
    /// Whether it may be renewed.
    pub(crate) renewable: bool,
}

/// The token's lifetime, as far as the client knows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Lifetime {
    /// Not looked up yet (a configured token while Vault was down).
    Unknown,
    /// A token without TTL (root, or `period` 0).
    Never,
    /// A token that expires.
    Expires {
        /// When it was obtained or last renewed.
        since: Instant,
        /// Its TTL at that moment.
        ttl: Duration,
        /// When it expires.
        at: Instant,
        /// Whether Vault lets it be renewed.
        renewable: bool,
        /// The TTL asked for at each renewal (the login TTL).
        increment: Duration,
        /// Renewal stopped extending it (its max TTL is near).
        exhausted: bool,
    },
}

/// The current token and what is known about it.
#[derive(Clone)]
pub(crate) struct TokenState {
    /// The token, if there is one.
    pub(crate) token: Option<SecretString>,
    /// Bumped at every login, so that callers who saw a bad token can tell
    /// whether someone already replaced it.
    pub(crate) generation: u64,
    /// Its lifetime.
    pub(crate) lifetime: Lifetime,
}

impl TokenState {
    /// Whether the token is past its expiry at `now`.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        matches!(self.lifetime, Lifetime::Expires { at, .. } if now >= at)
    }

    /// The TTL left at `now` (`None`: never expires or unknown).
    pub(crate) fn remaining(&self, now: Instant) -> Option<Duration> {
        match self.lifetime {
            Lifetime::Expires { at, .. } => Some(at.saturating_duration_since(now)),
            _ => None,
        }
    }
}

/// What the manager does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// `auth/token/renew-self`.
    Renew,
    /// Log in again.
    Login,
    /// `auth/token/lookup-self` (learn the TTL of a configured token).
    Lookup,
    /// The token expires now and nothing can replace it.
    Expire,
}

/// The next step and when, or `None` when there is nothing to do until the
/// state changes. `unit` is a random number in `[0, 1)` for the jitter.
pub(crate) fn next_step(
    state: &TokenState,
    can_login: bool,
    policy: &RenewalPolicy,
    now: Instant,
    unit: f64,
) -> Option<(Instant, Step)> {
    if state.token.is_none() {
        return can_login.then_some((now, Step::Login));
    }
    match state.lifetime {
        Lifetime::Unknown => Some((now, Step::Lookup)),
        Lifetime::Never => None,
        Lifetime::Expires {
            since,
            ttl,
            at,
            renewable,
            exhausted,
            ..
        } => {
            let due = policy.due(since, ttl, unit);
            // A token that cannot be replaced (a configured token) and is
            // past its expiry is announced as expired, even when renewal
            // was still planned: a renewal granting 0 s, or renewals that
            // failed until the TTL ran out, end there too. The loop
            // announces each token's expiry once.
            if renewable && !exhausted && (can_login || now < at) {
                Some((due, Step::Renew))
            } else if can_login {
                Some((due, Step::Login))
            } else {
                Some((at.max(now), Step::Expire))
            }
        }
    }
}

/// The lifetime after a renewal that asked for `increment` and got `grant`.
/// If Vault granted less than asked, the max TTL is near and renewal is
/// exhausted (an unconstrained renewal grants exactly the increment). Only a
/// fresh login's TTL 0 means "never expires": a renewal granting 0 means
/// the token has nothing left, so renewal is exhausted (log in again).
pub(crate) fn after_renewal(grant: &Grant, increment: Duration, now: Instant) -> Lifetime {
    Lifetime::Expires {
        since: now,
        ttl: grant.ttl,
        at: instant_after(now, grant.ttl),
        renewable: grant.renewable,
        increment,
        exhausted: grant.ttl < increment,
    }
}

/// After a failed renewal whose retry would be at `retry`: the lifetime
/// marked exhausted (so the next step is a login) if `retry` is at or past
/// 90 % of the TTL, `None` while renewing can still wait.
pub(crate) fn give_up_renewal(lifetime: &Lifetime, retry: Instant) -> Option<Lifetime> {
    match *lifetime {
        Lifetime::Expires {
            since,
            ttl,
            exhausted: false,
            ..
        } if retry >= instant_after(since, ttl.mul_f64(0.9)) => {
            let mut lifetime = *lifetime;
            if let Lifetime::Expires { exhausted, .. } = &mut lifetime {
                *exhausted = true;
            }
            Some(lifetime)
        }
        _ => None,
    }
}

/// The lifetime of a freshly obtained (or looked-up) token.
pub(crate) fn fresh(grant: &Grant, now: Instant) -> Lifetime {
    if grant.ttl.is_zero() {
        return Lifetime::Never;
    }
    Lifetime::Expires {
        since: now,
        ttl: grant.ttl,
        at: instant_after(now, grant.ttl),
        renewable: grant.renewable,
        increment: grant.ttl,
        exhausted: false,
    }
}

/// The last failed login, shared with every caller that waited for it.
#[derive(Debug)]
struct LoginFailure {
    /// The generation the login tried to replace.
    generation: u64,
    /// When it failed.
    at: Instant,
    /// No new login from the request path before this (the back-off).
    not_before: Instant,
    /// Failed logins in a row for this generation.
    failures: u32,
    /// Why it failed, as shared ([`Error::LoginFailed`]).
    error: Error,
}

/// The token, shared by the request path and the manager.
pub(crate) struct TokenCell {
    /// The state; replaced whole on every change.
    state: RwLock<Arc<TokenState>>,
    /// Held while logging in: one login at a time.
    login: Mutex<()>,
    /// The last failed login since the last successful one.
    failure: std::sync::Mutex<Option<LoginFailure>>,
    /// The back-off between failed logins (the manager's retry policy).
    backoff: Backoff,
    /// Wakes the manager when the state changed outside it.
    pub(crate) changed: Notify,
}

impl TokenCell {
    /// A cell whose failed logins back off by `backoff`.
    pub(crate) fn new(token: Option<SecretString>, lifetime: Lifetime, backoff: Backoff) -> Self {
        TokenCell {
            state: RwLock::new(Arc::new(TokenState {
                token,
                generation: 0,
                lifetime,
            })),
            login: Mutex::new(()),
            failure: std::sync::Mutex::new(None),
            backoff,
            changed: Notify::new(),
        }
    }

    /// The shared error for a caller that asked at `asked` to replace
    /// generation `seen`, if it must not log in itself: the last login for
    /// that generation failed after it asked, or its back-off runs.
    fn shared_failure(&self, seen: u64, asked: Instant) -> Option<Error> {
        let failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        let failure = failure.as_ref().filter(|f| f.generation == seen)?;
        let now = Instant::now();
        (failure.at >= asked || now < failure.not_before).then(|| {
            failure
                .error
                .login_failed(failure.not_before.saturating_duration_since(now))
        })
    }

    /// Keeps the request path from logging in before `not_before` (the
    /// manager's own back-off after its failed login).
    pub(crate) fn defer_logins(&self, generation: u64, not_before: Instant) {
        let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(failure) = failure.as_mut()
            && failure.generation == generation
        {
            failure.not_before = failure.not_before.max(not_before);
        }
    }

    pub(crate) fn current(&self) -> Arc<TokenState> {
        Arc::clone(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the lifetime of the current token (after a renewal or
    /// lookup), unless a login replaced the token meanwhile.
    pub(crate) fn set_lifetime(&self, generation: u64, lifetime: Lifetime) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.generation == generation {
            *state = Arc::new(TokenState {
                token: state.token.clone(),
                generation,
                lifetime,
            });
        }
    }

    fn install(&self, token: SecretString, lifetime: Lifetime) -> Arc<TokenState> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let next = Arc::new(TokenState {
            token: Some(token),
            generation: state.generation + 1,
            lifetime,
        });
        *state = Arc::clone(&next);
        drop(state);
        self.changed.notify_one();
        next
    }

    /// Logs in unless someone already replaced the token of generation
    /// `seen` (one login at a time: concurrent callers wait for it and share
    /// its result, a failure included: callers that were waiting for a login
    /// that failed get [`Error::LoginFailed`] rather than sending their own,
    /// and so does every caller until the back-off after the last failure
    /// has elapsed).
    pub(crate) async fn relogin<A: Authority + ?Sized>(
        &self,
        authority: &A,
        seen: u64,
    ) -> Result<Arc<TokenState>> {
        let asked = Instant::now();
        let _one_at_a_time = self.login.lock().await;
        let current = self.current();
        if current.generation != seen {
            return Ok(current);
        }
        if let Some(shared) = self.shared_failure(seen, asked) {
            return Err(shared);
        }
        self.login_locked(authority, seen).await
    }

    /// Logs in unless the token of generation `seen` was replaced, ignoring
    /// the back-off (the manager keeps its own schedule).
    pub(crate) async fn relogin_now<A: Authority + ?Sized>(
        &self,
        authority: &A,
        seen: u64,
    ) -> Result<Arc<TokenState>> {
        let _one_at_a_time = self.login.lock().await;
        let current = self.current();
        if current.generation != seen {
            return Ok(current);
        }
        self.login_locked(authority, seen).await
    }

    /// The login itself (the caller holds `self.login`); a failure is
    /// remembered for the callers waiting behind it.
    async fn login_locked<A: Authority + ?Sized>(
        &self,
        authority: &A,
        seen: u64,
    ) -> Result<Arc<TokenState>> {
        let grant = match authority.login().await.and_then(|grant| {
            grant
                .token
                .clone()
                .map(|token| (grant, token))
                .ok_or_else(|| Error::NoToken("the login answer held no token".into()))
        }) {
            Ok(grant) => grant,
            Err(error) => {
                let now = Instant::now();
                let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
                let failures = match failure.as_ref() {
                    Some(last) if last.generation == seen => last.failures,
                    _ => 0,
                };
                *failure = Some(LoginFailure {
                    generation: seen,
                    at: now,
                    not_before: instant_after(now, self.backoff.delay(failures)),
                    failures: failures.saturating_add(1),
                    error: error.login_failed(Duration::ZERO),
                });
                drop(failure);
                // The caller that sent the login gets the error itself.
                return Err(error);
            }
        };
        let (grant, token) = grant;
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = None;
        let state = self.install(token, fresh(&grant, Instant::now()));
        authority.emit(Event::LoggedIn {
            generation: state.generation,
            ttl: state.remaining(Instant::now()),
        });
        Ok(state)
    }
}

/// What the manager needs from Vault (the client; a fake in unit tests).
pub(crate) trait Authority: Send + Sync {
    /// Whether the auth method can log in (not a fixed token).
    fn can_login(&self) -> bool;
    /// Logs in.
    fn login(&self) -> impl Future<Output = Result<Grant>> + Send;
    /// Renews `token` by `increment`.
    fn renew(
        &self,
        token: &SecretString,
        increment: Duration,
    ) -> impl Future<Output = Result<Grant>> + Send;
    /// Looks `token` up.
    fn lookup(&self, token: &SecretString) -> impl Future<Output = Result<Grant>> + Send;
    /// Publishes an event.
    fn emit(&self, event: Event);
}

/// The manager loop: runs until `shutdown` turns true or the authority says
/// [`Error::Shutdown`].
pub(crate) async fn run<A: Authority>(
    cell: Arc<TokenCell>,
    authority: A,
    policy: RenewalPolicy,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let mut retry_at: Option<Instant> = None;
    // The generation whose expiry was announced (once per token).
    let mut expired: Option<u64> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let state = cell.current();
        let now = Instant::now();
        let planned = next_step(&state, authority.can_login(), &policy, now, fastrand::f64())
            .filter(|&(_, step)| step != Step::Expire || expired != Some(state.generation));
        let planned = match (planned, retry_at) {
            (Some((at, step)), Some(retry)) => Some((at.max(retry), step)),
            (planned, _) => planned,
        };
        let changed = cell.changed.notified();
        let Some((at, step)) = planned else {
            tokio::select! {
                _ = changed => continue,
                _ = shutdown.changed() => return,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = changed => continue,
            _ = shutdown.changed() => return,
        }
        let outcome = match step {
            Step::Expire => {
                expired = Some(state.generation);
                crate::metrics::token_ttl(Some(Duration::ZERO));
                authority.emit(Event::TokenExpired);
                Ok(())
            }
            Step::Login => cell
                .relogin_now(&authority, state.generation)
                .await
                .map(drop),
            Step::Renew | Step::Lookup => {
                let Some(token) = &state.token else { continue };
                let result = if step == Step::Renew {
                    let increment = match state.lifetime {
                        Lifetime::Expires { increment, .. } => increment,
                        _ => Duration::ZERO,
                    };
                    authority.renew(token, increment).await.map(|grant| {
                        let lifetime = after_renewal(&grant, increment, Instant::now());
                        let extended = !matches!(
                            lifetime,
                            Lifetime::Expires {
                                exhausted: true,
                                ..
                            }
                        );
                        crate::metrics::renewal("token", true);
                        authority.emit(Event::TokenRenewed {
                            ttl: grant.ttl,
                            extended,
                        });
                        lifetime
                    })
                } else {
                    authority
                        .lookup(token)
                        .await
                        .map(|grant| fresh(&grant, Instant::now()))
                };
                match result {
                    Ok(lifetime) => {
                        cell.set_lifetime(state.generation, lifetime);
                        Ok(())
                    }
                    // Revoked, expired, or not renewable after all: a new
                    // login is the only way forward.
                    Err(e) if e.is_forbidden() && authority.can_login() => cell
                        .relogin_now(&authority, state.generation)
                        .await
                        .map(drop),
                    Err(e) => {
                        if step == Step::Renew {
                            crate::metrics::renewal("token", false);
                        }
                        Err(e)
                    }
                }
            }
        };
        crate::metrics::token_ttl(cell.current().remaining(Instant::now()));
        match outcome {
            Ok(()) => {
                failures = 0;
                retry_at = None;
            }
            Err(Error::Shutdown) => return,
            Err(error) => {
                let wait = policy.retry.delay(failures);
                failures = failures.saturating_add(1);
                let now = Instant::now();
                retry_at = Some(instant_after(now, wait));
                // Callers on the request path respect the same back-off.
                cell.defer_logins(state.generation, instant_after(now, wait));
                // Renewal keeps failing and the next try would come too close
                // to expiry: log in again now instead, while the token still
                // works (or at least before requests find it expired).
                if step == Step::Renew
                    && authority.can_login()
                    && let Some(lifetime) = give_up_renewal(&state.lifetime, now + wait)
                {
                    cell.set_lifetime(state.generation, lifetime);
                    retry_at = None;
                }
                tracing::warn!(error = %error, retry_in = ?wait, "Vault token {step:?} failed");
                authority.emit(Event::AuthFailed {
                    operation: match step {
                        Step::Renew => "renew",
                        Step::Login => "login",
                        Step::Lookup => "lookup",
                        Step::Expire => "expire",
                    },
                    error: Arc::new(error),
                    retry_in: wait,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy() -> RenewalPolicy {
        RenewalPolicy::default()
    }

    fn state(lifetime: Lifetime) -> TokenState {
        TokenState {
            token: Some(SecretString::from("t")),
            generation: 1,
            lifetime,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renews_between_60_and_67_percent_of_the_ttl() {
        let now = Instant::now();
        let ttl = Duration::from_secs(300);
        let lifetime = fresh(
            &Grant {
                token: None,
                ttl,
                renewable: true,
            },
            now,
        );
        for unit in [0.0, 0.25, 0.5, 0.999] {
            let (at, step) = next_step(&state(lifetime), true, &policy(), now, unit).unwrap();
            assert_eq!(step, Step::Renew);
            let offset = at - now;
            assert!(offset <= Duration::from_secs(200), "{offset:?}");
            assert!(offset >= Duration::from_secs(180), "{offset:?}");
        }
        let (at, _) = next_step(&state(lifetime), true, &policy(), now, 0.0).unwrap();
        assert_eq!(at - now, Duration::from_secs(200));
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_renewal_means_login_or_expiry() {
        let now = Instant::now();
        let grant = Grant {
            token: None,
            ttl: Duration::from_secs(40),
            renewable: true,
        };
        // Asked for 60 s, got 40: the max TTL is near.
        let lifetime = after_renewal(&grant, Duration::from_secs(60), now);
        assert!(matches!(
            lifetime,
            Lifetime::Expires {
                exhausted: true,
                ..
            }
        ));
        let (_, step) = next_step(&state(lifetime), true, &policy(), now, 0.5).unwrap();
        assert_eq!(step, Step::Login);
        let (at, step) = next_step(&state(lifetime), false, &policy(), now, 0.5).unwrap();
        assert_eq!((at - now, step), (Duration::from_secs(40), Step::Expire));
        // Asked for 60, got 60: still extending.
        let full = Grant {
            ttl: Duration::from_secs(60),
            ..grant.clone()
        };
        assert!(matches!(
            after_renewal(&full, Duration::from_secs(60), now),
            Lifetime::Expires {
                exhausted: false,
                ..
            }
        ));
        // Not renewable: log in again at 2/3.
        let fixed = fresh(
            &Grant {
                renewable: false,
                ..grant
            },
            now,
        );
        assert_eq!(
            next_step(&state(fixed), true, &policy(), now, 0.0),
            Some((
                now + Duration::from_secs(40).mul_f64(2.0 / 3.0),
                Step::Login
            ))
        );
        assert_eq!(
            next_step(&state(Lifetime::Never), true, &policy(), now, 0.0),
            None
        );
        assert_eq!(
            next_step(&state(Lifetime::Unknown), false, &policy(), now, 0.0),
            Some((now, Step::Lookup))
        );
        let none = TokenState {
            token: None,
            generation: 0,
            lifetime: Lifetime::Unknown,
        };
        assert_eq!(next_step(&none, false, &policy(), now, 0.0), None);
        assert_eq!(
            next_step(&none, true, &policy(), now, 0.0),
            Some((now, Step::Login))
        );
    }

    /// A fake Vault for the loop: counts calls, fails logins while `down`.
    #[derive(Default)]
    struct Fake {
        logins: AtomicU32,
        renewals: AtomicU32,
        down: std::sync::atomic::AtomicBool,
        /// Logins answer 400 (bad credentials).
        refuse: std::sync::atomic::AtomicBool,
        /// Renewals answer 503.
        renew_down: std::sync::atomic::AtomicBool,
        /// A configured token: no login to fall back on.
        token_only: bool,
        ttl_secs: u64,
        max_ttl_secs: u64,
        issued: StdMutex<Option<Instant>>,
        events: StdMutex<Vec<String>>,
    }

    impl Authority for Arc<Fake> {
        fn can_login(&self) -> bool {
            !self.token_only
        }
        async fn login(&self) -> Result<Grant> {
            self.logins.fetch_add(1, Ordering::SeqCst);
            // A login takes a moment, so concurrent callers overlap.
            tokio::time::sleep(Duration::from_millis(10)).await;
            if self.down.load(Ordering::SeqCst) {
                return Err(Error::Api {
                    method: "POST",
                    path: "auth/approle/login".into(),
                    status: 503,
                    errors: vec![],
                    retry_after: None,
                });
            }
            if self.refuse.load(Ordering::SeqCst) {
                return Err(Error::Api {
                    method: "POST",
                    path: "auth/approle/login".into(),
                    status: 400,
                    errors: vec!["invalid role or secret ID".into()],
                    retry_after: None,
                });
            }
            *self.issued.lock().unwrap() = Some(Instant::now());
            Ok(Grant {
                token: Some(SecretString::from(format!(
                    "t{}",
                    self.logins.load(Ordering::SeqCst)
                ))),
                ttl: Duration::from_secs(self.ttl_secs),
                renewable: true,
            })
        }
        async fn renew(&self, _token: &SecretString, increment: Duration) -> Result<Grant> {
            self.renewals.fetch_add(1, Ordering::SeqCst);
            if self.renew_down.load(Ordering::SeqCst) {
                return Err(Error::Api {
                    method: "POST",
                    path: "auth/token/renew-self".into(),
                    status: 503,
                    errors: vec![],
                    retry_after: None,
                });
            }
            let issued = self.issued.lock().unwrap().unwrap_or_else(Instant::now);
            let left = Duration::from_secs(self.max_ttl_secs).saturating_sub(issued.elapsed());
            Ok(Grant {
                token: None,
                // In whole seconds, as Vault answers: under 1 s left is 0.
                ttl: Duration::from_secs(increment.min(left).as_secs()),
                renewable: true,
            })
        }
        async fn lookup(&self, _token: &SecretString) -> Result<Grant> {
            unreachable!("the fake logs in")
        }
        fn emit(&self, event: Event) {
            self.events.lock().unwrap().push(format!("{event:?}"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renews_until_max_ttl_then_logs_in_again() {
        let fake = Arc::new(Fake {
            ttl_secs: 30,
            max_ttl_secs: 90,
            ..Fake::default()
        });
        let cell = Arc::new(TokenCell::new(None, Lifetime::Unknown, policy().retry));
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(run(
            Arc::clone(&cell),
            Arc::clone(&fake),
            policy(),
            shutdown,
        ));
        // 10 minutes of paused time: each token lives 90 s (max TTL), renewed
        // at ~20 s intervals, so about 7 logins and 3 renewals per login.
        tokio::time::sleep(Duration::from_secs(600)).await;
        stop.send(true).unwrap();
        task.await.unwrap();
        let logins = fake.logins.load(Ordering::SeqCst);
        let renewals = fake.renewals.load(Ordering::SeqCst);
        assert!((6..=10).contains(&logins), "logins: {logins}");
        assert!(
            renewals >= 2 * logins,
            "renewals: {renewals}, logins: {logins}"
        );
        let state = cell.current();
        assert!(!state.expired(Instant::now()), "the token never lapsed");
        let events = fake.events.lock().unwrap();
        assert!(events.iter().any(|e| e.contains("extended: false")));
        assert!(!events.iter().any(|e| e.contains("TokenExpired")));
    }

    /// A configured token renewed until its max TTL: the last renewal
    /// grants 0 s (under 1 s was left), and the expiry is announced once.
    #[tokio::test(start_paused = true)]
    async fn configured_token_expiry_is_announced_when_the_last_renewal_grants_nothing() {
        // TTL 1 s: renewals 0.6-0.67 s apart, so the last one always finds
        // under 1 s of the 5 s max TTL left.
        let fake = Arc::new(Fake {
            token_only: true,
            max_ttl_secs: 5,
            ..Fake::default()
        });
        let now = Instant::now();
        *fake.issued.lock().unwrap() = Some(now);
        let lifetime = fresh(
            &Grant {
                token: None,
                ttl: Duration::from_secs(1),
                renewable: true,
            },
            now,
        );
        let cell = Arc::new(TokenCell::new(
            Some(SecretString::from("configured")),
            lifetime,
            policy().retry,
        ));
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(run(
            Arc::clone(&cell),
            Arc::clone(&fake),
            policy(),
            shutdown,
        ));
        tokio::time::sleep(Duration::from_secs(60)).await;
        stop.send(true).unwrap();
        task.await.unwrap();
        let events = fake.events.lock().unwrap();
        assert!(
            events.iter().any(|e| e.contains("ttl: 0ns")),
            "the last renewal granted 0 s: {events:?}"
        );
        let expired = events.iter().filter(|e| e.contains("TokenExpired")).count();
        assert_eq!(expired, 1, "{events:?}");
        assert_eq!(fake.logins.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn login_back_off_is_capped_and_never_floods() {
        let fake = Arc::new(Fake {
            ttl_secs: 30,
            max_ttl_secs: 90,
            ..Fake::default()
        });
        fake.down.store(true, Ordering::SeqCst);
        let cell = Arc::new(TokenCell::new(None, Lifetime::Unknown, policy().retry));
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(run(
            Arc::clone(&cell),
            Arc::clone(&fake),
            policy(),
            shutdown,
        ));
        tokio::time::sleep(Duration::from_secs(600)).await;
        let attempts = fake.logins.load(Ordering::SeqCst);
        // Back-off 1 s doubling to a 30 s cap with up to 50 % jitter: at
        // least 600 / 30 and at most about 5 + 600 / 15 attempts.
        assert!((20..=50).contains(&attempts), "attempts: {attempts}");
        // Vault comes back: the next attempt (at most 30 s later) succeeds.
        fake.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(cell.current().token.is_some());
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn one_login_in_flight() {
        let fake = Arc::new(Fake {
            ttl_secs: 30,
            max_ttl_secs: 90,
            ..Fake::default()
        });
        let cell = Arc::new(TokenCell::new(None, Lifetime::Unknown, policy().retry));
        let seen = cell.current().generation;
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cell, fake) = (Arc::clone(&cell), Arc::clone(&fake));
            tasks.push(tokio::spawn(async move {
                cell.relogin(&fake, seen).await.map(|s| s.generation)
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), 1);
        }
        assert_eq!(fake.logins.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_login_is_shared_and_backs_off() {
        let fake = Arc::new(Fake {
            ttl_secs: 30,
            max_ttl_secs: 90,
            ..Fake::default()
        });
        fake.refuse.store(true, Ordering::SeqCst);
        let cell = Arc::new(TokenCell::new(None, Lifetime::Unknown, policy().retry));
        let seen = cell.current().generation;
        // 16 callers queue behind one login that fails: one login is sent,
        // the first caller gets Vault's error, the others share it.
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cell, fake) = (Arc::clone(&cell), Arc::clone(&fake));
            tasks.push(tokio::spawn(async move {
                cell.relogin(&fake, seen).await.map(|s| s.generation)
            }));
        }
        let mut shared = 0;
        for task in tasks {
            let error = task.await.unwrap().unwrap_err();
            assert_eq!(error.status(), Some(400), "{error}");
            assert!(!error.is_retryable());
            if matches!(error, Error::LoginFailed { .. }) {
                shared += 1;
            }
        }
        assert_eq!(fake.logins.load(Ordering::SeqCst), 1);
        assert_eq!(shared, 15);
        // A new caller within the back-off (1 s, up to 50 % jitter) does not
        // send a login either...
        tokio::time::sleep(Duration::from_millis(100)).await;
        let error = cell.relogin(&fake, seen).await.map(drop).unwrap_err();
        assert!(
            matches!(error, Error::LoginFailed { retry_in, .. } if retry_in > Duration::ZERO),
            "{error:?}"
        );
        assert_eq!(fake.logins.load(Ordering::SeqCst), 1);
        // ...after it, one is sent; a failure doubles the back-off.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(cell.relogin(&fake, seen).await.is_err());
        assert_eq!(fake.logins.load(Ordering::SeqCst), 2);
        assert!(cell.relogin(&fake, seen).await.is_err());
        assert_eq!(fake.logins.load(Ordering::SeqCst), 2);
        // Fixed credentials: the next login after the back-off succeeds and
        // clears the failure.
        fake.refuse.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(cell.relogin(&fake, seen).await.unwrap().generation, 1);
        assert_eq!(fake.logins.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_renewals_fall_back_to_a_login_before_expiry() {
        let fake = Arc::new(Fake {
            ttl_secs: 30,
            max_ttl_secs: 3600,
            ..Fake::default()
        });
        fake.renew_down.store(true, Ordering::SeqCst);
        let cell = Arc::new(TokenCell::new(None, Lifetime::Unknown, policy().retry));
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(run(
            Arc::clone(&cell),
            Arc::clone(&fake),
            policy(),
            shutdown,
        ));
        // Renewals fail from ~20 s on; before the 30 s token expires, the
        // manager logs in again instead of renewing a dying token.
        let mut expired = false;
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            expired |= cell.current().expired(Instant::now());
        }
        stop.send(true).unwrap();
        task.await.unwrap();
        assert!(!expired, "the token lapsed");
        assert!(fake.renewals.load(Ordering::SeqCst) >= 2);
        assert!(fake.logins.load(Ordering::SeqCst) >= 2);
    }

    #[test]
    fn a_renewal_granting_zero_is_exhausted_not_eternal() {
        let now = Instant::now();
        let grant = Grant {
            token: None,
            ttl: Duration::ZERO,
            renewable: true,
        };
        let lifetime = after_renewal(&grant, Duration::from_secs(60), now);
        assert!(matches!(
            lifetime,
            Lifetime::Expires {
                exhausted: true,
                ..
            }
        ));
        assert_eq!(
            next_step(&state(lifetime), true, &policy(), now, 0.0),
            Some((now, Step::Login))
        );
        // A fresh login's 0 still means "never expires".
        assert_eq!(fresh(&grant, now), Lifetime::Never);
    }

    #[test]
    fn a_huge_ttl_does_not_overflow() {
        let now = Instant::now();
        let grant = Grant {
            token: None,
            ttl: Duration::from_secs(1 << 63),
            renewable: true,
        };
        let lifetime = fresh(&grant, now);
        let renewed = after_renewal(&grant, Duration::from_secs(u64::MAX), now);
        for lifetime in [lifetime, renewed] {
            let Lifetime::Expires { at, .. } = lifetime else {
                panic!("{lifetime:?}")
            };
            assert!(at > now);
            assert!(next_step(&state(lifetime), true, &policy(), now, 0.5).is_some());
        }
        let huge = crate::json::Answer::new(
            "auth/token/lookup-self",
            &serde_json::json!({
                "data": { "ttl": u64::MAX }
            }),
        )
        .ttl("/data/ttl")
        .unwrap();
        assert_eq!(huge, crate::json::MAX_TTL);
    }

    #[test]
    fn policy_checks() {
        assert!(policy().check().is_ok());
        for bad in [
            RenewalPolicy {
                fraction: 1.0,
                ..policy()
            },
            RenewalPolicy {
                fraction: 0.0,
                ..policy()
            },
            RenewalPolicy {
                jitter: 1.0,
                ..policy()
            },
        ] {
            assert!(bad.check().is_err());
        }
    }
}
