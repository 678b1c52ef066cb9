//! The lease manager of dynamic database credentials.
//!
//! It renews the lease at about 2/3 of its TTL until renewal stops extending
//! it (the role's max TTL), then reads new credentials a margin before the
//! old ones expire. Each credential set is published on a
//! [`tokio::sync::watch`] channel ([`Credentials`], with a generation that
//! only grows) and every step is a [`LeaseEvent`]. On
//! [`shutdown`](LeaseManager::shutdown) it can revoke the current lease after
//! a drain delay, so connections in use finish first.
//!
//! If renewal keeps failing, new credentials are read at the rotation point
//! (the margin before expiry) all the same, rather than letting the lease
//! expire. The remaining-TTL gauge is refreshed every second.
//!
//! The schedule is a pure function ([`LeaseState::next`]) and the loop waits
//! on tokio time, so its tests run on paused time.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::database::{Database, DbCredentials};
use crate::error::{Error, Result};
use crate::json::{instant_after, system_time_after};
use crate::retry::Backoff;
use crate::secret::SecretString;

/// One published credential set. `Debug` hides the password.
///
/// Hand [`LeaseManager::credentials`] (a `watch::Receiver<Credentials>`) to
/// any code that opens connections: it reads `borrow()` for each new
/// connection and may `changed().await` to learn of a rotation. Code that
/// must not depend on this crate can get its own type with
/// [`LeaseManager::map`].
#[derive(Clone)]
pub struct Credentials {
    /// The database user.
    pub username: String,
    /// Its password.
    pub password: SecretString,
    /// The Vault lease id.
    pub lease_id: String,
    /// The lease's TTL at the last issue or renewal.
    pub lease_duration: Duration,
    /// When the lease expires (wall clock; moves later at each renewal).
    pub expires_at: SystemTime,
    /// 1 for the first set, +1 at each rotation; never goes back.
    pub generation: u64,
    /// When this set was published (connections opened before it use older
    /// credentials).
    pub published_at: std::time::Instant,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("lease_id", &self.lease_id)
            .field("lease_duration", &self.lease_duration)
            .field("expires_at", &self.expires_at)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// What the lease manager did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LeaseEvent {
    /// The first credentials were read.
    Created {
        /// Their generation (1).
        generation: u64,
        /// The lease id.
        lease_id: String,
        /// The lease's TTL.
        ttl: Duration,
    },
    /// The lease was renewed.
    Renewed {
        /// The credentials' generation.
        generation: u64,
        /// The lease id.
        lease_id: String,
        /// The TTL granted.
        ttl: Duration,
        /// False when Vault granted less than asked: the max TTL is near and
        /// the credentials will be rotated.
        extended: bool,
    },
    /// The lease can no longer be renewed (max TTL, or renewal refused): new
    /// credentials will be read `rotate_in` from now.
    Expiring {
        /// The credentials' generation.
        generation: u64,
        /// The lease id.
        lease_id: String,
        /// How long the current credentials remain valid.
        expires_in: Duration,
        /// When the rotation is planned.
        rotate_in: Duration,
    },
    /// New credentials replaced the old ones.
    Rotated {
        /// The new generation.
        generation: u64,
        /// The old lease id.
        previous_lease_id: String,
        /// The new lease id.
        lease_id: String,
        /// The new lease's TTL.
        ttl: Duration,
    },
    /// A renewal or a credentials read failed; retried after `retry_in`.
    Failed {
        /// The credentials' generation.
        generation: u64,
        /// `renew` or `rotate`.
        operation: &'static str,
        /// Why.
        error: Arc<Error>,
        /// When the next attempt is made.
        retry_in: Duration,
    },
    /// A lease was revoked (at shutdown).
    Revoked {
        /// The lease id.
        lease_id: String,
    },
}

/// How the lease manager schedules its work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseOptions {
    /// Renew after this fraction of the TTL. Default 2/3.
    pub renew_fraction: f64,
    /// Up to this fraction of that point is taken off at random. Default 0.1.
    pub jitter: f64,
    /// Read new credentials this long before the old ones expire, at most a
    /// third of the lease's TTL. Default 60 s.
    pub rotate_before_expiry: Duration,
    /// Back-off between failed attempts (capped by its `max`). Default 1 s
    /// doubling to 30 s. Its `initial` is also the shortest time between two
    /// credential reads, so a lease with a zero or tiny TTL cannot make the
    /// manager create database users in a loop.
    pub retry: Backoff,
    /// Revoke the current lease at shutdown (dropping the user). Default
    /// false.
    pub revoke_on_shutdown: bool,
    /// Wait this long before revoking at shutdown, so connections in use
    /// can finish. Default 5 s.
    pub drain_delay: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            renew_fraction: 2.0 / 3.0,
            jitter: 0.1,
            rotate_before_expiry: Duration::from_secs(60),
            retry: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            revoke_on_shutdown: false,
            drain_delay: Duration::from_secs(5),
        }
    }
}

impl LeaseOptions {
    fn check(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidArgument(format!("lease options: {what}")));
        if !(self.renew_fraction > 0.0 && self.renew_fraction < 1.0) {
            return bad("renew_fraction must be between 0 and 1");
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return bad("jitter must be at least 0 and less than 1");
        }
        self.retry
            .check()
            .map_err(|e| Error::InvalidArgument(format!("lease options: {e}")))
    }
}

/// How often the remaining-lease-TTL gauge is refreshed while waiting.
const METRICS_TICK: Duration = Duration::from_secs(1);

/// What the manager does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Renew,
    Rotate,
}

/// The current lease's timing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LeaseState {
    /// When it was issued or last renewed.
    pub(crate) since: Instant,
    /// Its TTL then.
    pub(crate) ttl: Duration,
    /// When it expires.
    pub(crate) expires: Instant,
    /// Whether Vault lets it be renewed.
    pub(crate) renewable: bool,
    /// The TTL asked for at each renewal (the issue TTL).
    pub(crate) increment: Duration,
    /// Renewal stopped extending it.
    pub(crate) exhausted: bool,
}

impl LeaseState {
    pub(crate) fn issued(now: Instant, ttl: Duration, renewable: bool) -> Self {
        LeaseState {
            since: now,
            ttl,
            expires: instant_after(now, ttl),
            renewable,
            increment: ttl,
            exhausted: false,
        }
    }

    /// After a renewal that granted `ttl`: exhausted if less than asked or
    /// the expiry did not move.
    pub(crate) fn renewed(&self, now: Instant, ttl: Duration) -> Self {
        let expires = instant_after(now, ttl);
        LeaseState {
            since: now,
            ttl,
            expires,
            renewable: self.renewable,
            increment: self.increment,
            exhausted: ttl < self.increment || expires <= self.expires,
        }
    }

    /// The rotation margin: `rotate_before_expiry`, at most a third of the
    /// issue TTL.
    pub(crate) fn margin(&self, options: &LeaseOptions) -> Duration {
        options.rotate_before_expiry.min(self.increment / 3)
    }

    /// The next action and when (`unit`: random in `[0, 1)` for the jitter).
    pub(crate) fn next(&self, options: &LeaseOptions, unit: f64) -> (Instant, Action) {
        if self.renewable && !self.exhausted && !self.ttl.is_zero() {
            let fraction = options.renew_fraction * (1.0 - options.jitter * unit.clamp(0.0, 1.0));
            (
                instant_after(self.since, self.ttl.mul_f64(fraction)),
                Action::Renew,
            )
        } else {
            (self.rotate_at(options), Action::Rotate)
        }
    }

    /// When new credentials are read if renewal is over: the margin before
    /// expiry, never before the lease was issued or last renewed.
    pub(crate) fn rotate_at(&self, options: &LeaseOptions) -> Instant {
        self.expires
            .checked_sub(self.margin(options))
            .unwrap_or(self.since)
            .max(self.since)
    }
}

/// Fresh credentials from Vault.
pub(crate) struct Fetched {
    /// The database user.
    pub(crate) username: String,
    /// Its password.
    pub(crate) password: SecretString,
    /// The lease id.
    pub(crate) lease_id: String,
    /// The lease's TTL.
    pub(crate) ttl: Duration,
    /// Whether the lease may be renewed.
    pub(crate) renewable: bool,
}

impl From<DbCredentials> for Fetched {
    fn from(creds: DbCredentials) -> Self {
        Fetched {
            username: creds.username,
            password: creds.password,
            lease_id: creds.lease.id,
            ttl: creds.lease.duration,
            renewable: creds.lease.renewable,
        }
    }
}

/// What the manager needs from Vault (the client; a fake in unit tests).
pub(crate) trait LeaseSource: Send + Sync + 'static {
    fn fetch(&self) -> impl Future<Output = Result<Fetched>> + Send;
    fn renew(
        &self,
        lease_id: &str,
        increment: Duration,
    ) -> impl Future<Output = Result<Duration>> + Send;
    fn revoke(&self, lease_id: &str) -> impl Future<Output = Result<()>> + Send;
}

struct VaultSource {
    /// The engine.
    db: Database,
    /// The role whose credentials are read.
    role: String,
}

impl LeaseSource for VaultSource {
    async fn fetch(&self) -> Result<Fetched> {
        self.db.creds(&self.role).await.map(Fetched::from)
    }

    async fn renew(&self, lease_id: &str, increment: Duration) -> Result<Duration> {
        self.db
            .client
            .renew_lease(lease_id, increment)
            .await
            .map(|lease| lease.duration)
    }

    async fn revoke(&self, lease_id: &str) -> Result<()> {
        self.db.client.revoke_lease(lease_id).await
    }
}

/// Sets up a [`LeaseManager`]. From [`Database::lease_manager`].
#[derive(Debug)]
pub struct LeaseManagerBuilder {
    /// The engine.
    db: Database,
    /// The role.
    role: String,
    /// The schedule.
    options: LeaseOptions,
    /// Events, created early so subscribers see `Created`.
    events: broadcast::Sender<LeaseEvent>,
}

impl LeaseManagerBuilder {
    pub(crate) fn new(db: Database, role: &str) -> Self {
        LeaseManagerBuilder {
            db,
            role: role.to_owned(),
            options: LeaseOptions::default(),
            events: broadcast::channel(64).0,
        }
    }

    /// The schedule.
    pub fn options(mut self, options: LeaseOptions) -> Self {
        self.options = options;
        self
    }

    /// Subscribes to the manager's events, including the first `Created`.
    pub fn subscribe(&self) -> broadcast::Receiver<LeaseEvent> {
        self.events.subscribe()
    }

    /// Reads the first credentials and starts renewing and rotating them.
    /// Fails if the first read fails (nothing to publish yet).
    pub async fn start(self) -> Result<LeaseManager> {
        self.options.check()?;
        let source = VaultSource {
            db: self.db,
            role: self.role.clone(),
        };
        start(source, self.role, self.options, self.events).await
    }
}

/// Keeps one set of dynamic database credentials valid. Dropping it stops
/// the renewals (without revoking); [`LeaseManager::shutdown`] stops them
/// and optionally revokes.
pub struct LeaseManager {
    /// The Vault role.
    role: String,
    /// The published credentials.
    credentials: watch::Receiver<Credentials>,
    /// Lease events.
    events: broadcast::Sender<LeaseEvent>,
    /// Stops the loop.
    stop: watch::Sender<bool>,
    /// The newest generation the database refused ([`LeaseManager::refused`]).
    refused: watch::Sender<u64>,
    /// The loop; returns the current lease id when stopped.
    task: JoinHandle<Option<String>>,
    /// Revokes a lease (taken at shutdown).
    revoke: Option<Box<dyn Fn(String) -> futures_revoke::Revoke + Send + Sync>>,
    /// The schedule.
    options: LeaseOptions,
}

/// A boxed revoke future (the source's type is erased in the handle).
mod futures_revoke {
    use std::future::Future;
    use std::pin::Pin;

    pub(crate) type Revoke = Pin<Box<dyn Future<Output = crate::Result<()>> + Send>>;
}

impl fmt::Debug for LeaseManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseManager")
            .field("role", &self.role)
            .field("credentials", &*self.credentials.borrow())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

async fn start<S: LeaseSource>(
    source: S,
    role: String,
    options: LeaseOptions,
    events: broadcast::Sender<LeaseEvent>,
) -> Result<LeaseManager> {
    let first = source.fetch().await?;
    let now = Instant::now();
    let state = LeaseState::issued(now, first.ttl, first.renewable);
    let credentials = publish(&first, 1, first.ttl);
    let _ = events.send(LeaseEvent::Created {
        generation: 1,
        lease_id: first.lease_id.clone(),
        ttl: first.ttl,
    });
    tracing::info!(role = %role, lease_ttl = ?first.ttl, "database credentials created");
    let (tx, rx) = watch::channel(credentials);
    let (stop, stop_rx) = watch::channel(false);
    let (refused, refused_rx) = watch::channel(0);
    let source = Arc::new(source);
    let task = tokio::spawn(run(
        Arc::clone(&source),
        role.clone(),
        options,
        state,
        first.lease_id,
        tx,
        events.clone(),
        stop_rx,
        refused_rx,
    ));
    let revoker = Arc::clone(&source);
    let revoke: Box<dyn Fn(String) -> futures_revoke::Revoke + Send + Sync> =
        Box::new(move |lease_id: String| {
            let revoker = Arc::clone(&revoker);
            Box::pin(async move { revoker.revoke(&lease_id).await })
        });
    Ok(LeaseManager {
        role,
        credentials: rx,
        events,
        stop,
        refused,
        task,
        revoke: Some(revoke),
        options,
    })
}

fn publish(fetched: &Fetched, generation: u64, ttl: Duration) -> Credentials {
    Credentials {
        username: fetched.username.clone(),
        password: fetched.password.clone(),
        lease_id: fetched.lease_id.clone(),
        lease_duration: ttl,
        expires_at: system_time_after(SystemTime::now(), ttl),
        generation,
        published_at: std::time::Instant::now(),
    }
}

impl LeaseManager {
    /// The role whose credentials this manager keeps.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// A receiver of the current credentials: `borrow()` is always the
    /// latest set, `changed()` wakes at each renewal and rotation. Clone it
    /// freely and hand it to connection pools.
    pub fn credentials(&self) -> watch::Receiver<Credentials> {
        self.credentials.clone()
    }

    /// The current credentials.
    pub fn current(&self) -> Credentials {
        self.credentials.borrow().clone()
    }

    /// Subscribes to the manager's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LeaseEvent> {
        self.events.subscribe()
    }

    /// A receiver of `f(credentials)`, updated at every change: how to hand
    /// the credentials to code with its own credentials type (for example
    /// `db-failover`, which does not depend on this crate). The forwarding
    /// task ends when the manager stops or every receiver is dropped.
    ///
    /// ```no_run
    /// # async fn demo(manager: vault_client::LeaseManager) {
    /// use vault_client::ExposeSecret;
    ///
    /// #[derive(Clone)]
    /// struct PgLogin { user: String, password: String, generation: u64 }
    ///
    /// let logins: tokio::sync::watch::Receiver<PgLogin> = manager.map(|c| PgLogin {
    ///     user: c.username.clone(),
    ///     password: c.password.expose_secret().to_owned(),
    ///     generation: c.generation,
    /// });
    /// # }
    /// ```
    pub fn map<T, F>(&self, f: F) -> watch::Receiver<T>
    where
        T: Send + Sync + 'static,
        F: Fn(&Credentials) -> T + Send + 'static,
    {
        let mut source = self.credentials.clone();
        let (tx, rx) = watch::channel(f(&source.borrow_and_update()));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = source.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let value = f(&source.borrow_and_update());
                        if tx.send(value).is_err() {
                            return;
                        }
                    }
                    () = tx.closed() => return,
                }
            }
        });
        rx
    }

    /// The database refused the credentials of `generation`: a login failed
    /// with SQLSTATE 28P01/28000, or a statement was denied (42501) because
    /// the user was dropped or lost its grants (the lease revoked early, by
    /// an operator or a breach response). New credentials are read at once
    /// instead of at the lease's end, at most once per generation and no
    /// sooner than the retry policy allows after the last read (doubling
    /// while forced reads follow one another with no renewal between them,
    /// so a role that is refused whatever its password cannot make the
    /// manager create users in a loop). A report about an older generation
    /// than the current one is ignored: it was already replaced.
    ///
    /// db-failover's `Event::CredentialsRefused` is the signal to pass on.
    pub fn refused(&self, generation: u64) {
        self.refused.send_if_modified(|newest| {
            let newer = generation > *newest;
            if newer {
                *newest = generation;
            }
            newer
        });
    }

    /// Stops renewing; with `revoke_on_shutdown`, waits the drain delay and
    /// revokes the current lease (dropping the database user).
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        let lease_id = (&mut self.task).await.ok().flatten();
        if !self.options.revoke_on_shutdown {
            return Ok(());
        }
        let lease_id = lease_id.unwrap_or_else(|| self.credentials.borrow().lease_id.clone());
        tokio::time::sleep(self.options.drain_delay).await;
        let Some(revoke) = self.revoke.take() else {
            return Ok(());
        };
        revoke(lease_id.clone()).await?;
        tracing::info!(role = %self.role, "database lease revoked at shutdown");
        let _ = self.events.send(LeaseEvent::Revoked { lease_id });
        Ok(())
    }
}

impl Drop for LeaseManager {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The loop. Returns the current lease id when stopped.
#[allow(clippy::too_many_arguments)]
async fn run<S: LeaseSource>(
    source: Arc<S>,
    role: String,
    options: LeaseOptions,
    mut state: LeaseState,
    mut lease_id: String,
    tx: watch::Sender<Credentials>,
    events: broadcast::Sender<LeaseEvent>,
    mut stop: watch::Receiver<bool>,
    mut refused: watch::Receiver<u64>,
) -> Option<String> {
    let mut generation = 1u64;
    let mut failures = 0u32;
    // Reads forced by a refusal since the last successful renewal: each
    // waits longer (the retry policy's back-off) after the previous read.
    let mut forced = 0u32;
    let mut forced_for = 0u64;
    let mut retry_at: Option<Instant> = None;
    let mut warned_expiring = false;
    // When credentials were last read: a lease with a zero or tiny TTL
    // must not make the manager create a database user in a hot loop.
    let mut last_fetch = Instant::now();
    loop {
        let (mut at, action) = state.next(&options, fastrand::f64());
        if let Some(retry) = retry_at {
            at = at.max(retry);
        }
        if action == Action::Rotate {
            let spacing = match forced {
                0 => options.retry.initial,
                n => options.retry.delay(n - 1),
            };
            at = at.max(instant_after(last_fetch, spacing));
        }
        if action == Action::Rotate && !warned_expiring {
            warned_expiring = true;
            let now = Instant::now();
            let _ = events.send(LeaseEvent::Expiring {
                generation,
                lease_id: lease_id.clone(),
                expires_in: state.expires.saturating_duration_since(now),
                rotate_in: at.saturating_duration_since(now),
            });
        }
        // Wait for `at`, refreshing the remaining-TTL gauge every second so
        // that it counts down between steps.
        let wait = async {
            loop {
                let now = Instant::now();
                crate::metrics::lease_ttl(&role, state.expires.saturating_duration_since(now));
                let tick = instant_after(now, METRICS_TICK);
                if tick >= at {
                    tokio::time::sleep_until(at).await;
                    return;
                }
                tokio::time::sleep_until(tick).await;
            }
        };
        tokio::select! {
            () = wait => {}
            _ = stop.changed() => return Some(lease_id),
            Ok(()) = refused.changed() => {
                let reported = *refused.borrow_and_update();
                if reported == generation && forced_for < generation {
                    // The user is gone: these credentials end now.
                    forced_for = generation;
                    forced = forced.saturating_add(1);
                    state.exhausted = true;
                    state.expires = Instant::now();
                    retry_at = None;
                    tracing::warn!(role = %role, generation, "the database refused the current credentials: reading new ones");
                }
                continue;
            }
        }
        if *stop.borrow() {
            return Some(lease_id);
        }
        let outcome = match action {
            Action::Renew => match source.renew(&lease_id, state.increment).await {
                Ok(ttl) => {
                    state = state.renewed(Instant::now(), ttl);
                    forced = 0;
                    crate::metrics::renewal("lease", true);
                    tx.send_modify(|c| {
                        c.lease_duration = ttl;
                        c.expires_at = system_time_after(SystemTime::now(), ttl);
                    });
                    let _ = events.send(LeaseEvent::Renewed {
                        generation,
                        lease_id: lease_id.clone(),
                        ttl,
                        extended: !state.exhausted,
                    });
                    Ok(())
                }
                Err(error) => {
                    crate::metrics::renewal("lease", false);
                    // Vault refused (lease gone, not renewable, expired):
                    // renewing again will not help; rotate instead.
                    if !error.is_retryable() {
                        state.exhausted = true;
                    }
                    Err(("renew", error))
                }
            },
            Action::Rotate => {
                last_fetch = Instant::now();
                match source.fetch().await {
                    Ok(fetched) => {
                        generation += 1;
                        let previous = std::mem::replace(&mut lease_id, fetched.lease_id.clone());
                        state = LeaseState::issued(Instant::now(), fetched.ttl, fetched.renewable);
                        warned_expiring = false;
                        tx.send_replace(publish(&fetched, generation, fetched.ttl));
                        crate::metrics::rotation(&role);
                        tracing::info!(role = %role, generation, lease_ttl = ?fetched.ttl, "database credentials rotated");
                        let _ = events.send(LeaseEvent::Rotated {
                            generation,
                            previous_lease_id: previous,
                            lease_id: lease_id.clone(),
                            ttl: fetched.ttl,
                        });
                        Ok(())
                    }
                    Err(error) => Err(("rotate", error)),
                }
            }
        };
        match outcome {
            Ok(()) => {
                failures = 0;
                retry_at = None;
            }
            Err((operation, error)) => {
                let wait = options.retry.delay(failures);
                failures = failures.saturating_add(1);
                let now = Instant::now();
                retry_at = Some(instant_after(now, wait));
                // Renewal keeps failing and its next try would come after
                // the rotation point: rotate then, whatever renewal's state,
                // rather than let the credentials expire.
                if action == Action::Renew
                    && !state.exhausted
                    && instant_after(now, wait) >= state.rotate_at(&options)
                {
                    state.exhausted = true;
                    retry_at = None;
                }
                tracing::warn!(role = %role, error = %error, retry_in = ?wait, "database lease {operation} failed");
                let _ = events.send(LeaseEvent::Failed {
                    generation,
                    operation,
                    error: Arc::new(error),
                    retry_in: wait,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;

    fn options() -> LeaseOptions {
        LeaseOptions::default()
    }

    #[tokio::test(start_paused = true)]
    async fn schedule_renews_then_rotates_a_margin_before_expiry() {
        let now = Instant::now();
        let state = LeaseState::issued(now, Duration::from_secs(3600), true);
        let (at, action) = state.next(&options(), 0.0);
        assert_eq!(
            (at - now, action),
            (Duration::from_secs(2400), Action::Renew)
        );
        let (at, _) = state.next(&options(), 0.999);
        assert!(at - now >= Duration::from_secs(2160), "{:?}", at - now);
        // Renewal granted the full increment: still renewing.
        let later = now + Duration::from_secs(2400);
        let renewed = state.renewed(later, Duration::from_secs(3600));
        assert!(!renewed.exhausted);
        // Granted less than asked: rotate 60 s before expiry.
        let capped = renewed.renewed(later + Duration::from_secs(2400), Duration::from_secs(1200));
        assert!(capped.exhausted);
        let (at, action) = capped.next(&options(), 0.5);
        assert_eq!(action, Action::Rotate);
        assert_eq!(capped.expires - at, Duration::from_secs(60));
        // A short lease: the margin is at most a third of its TTL.
        let short = LeaseState::issued(now, Duration::from_secs(6), false);
        let (at, action) = short.next(&options(), 0.5);
        assert_eq!((at - now, action), (Duration::from_secs(4), Action::Rotate));
        // An expired lease rotates at once (never before it was issued).
        let zero = LeaseState::issued(now, Duration::ZERO, true);
        assert_eq!(zero.next(&options(), 0.5), (now, Action::Rotate));
    }

    #[derive(Default)]
    struct Fake {
        fetches: AtomicU32,
        renewals: AtomicU32,
        revoked: Mutex<Vec<String>>,
        fail_fetch: AtomicBool,
        /// Renewals time out.
        fail_renew: AtomicBool,
        /// The TTL of new leases, if not `TTL`.
        ttl: Mutex<Option<Duration>>,
        issued: Mutex<Vec<Instant>>,
    }

    const TTL: u64 = 30;
    const MAX_TTL: u64 = 90;

    impl LeaseSource for Arc<Fake> {
        async fn fetch(&self) -> Result<Fetched> {
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            if self.fail_fetch.load(Ordering::SeqCst) {
                return Err(Error::Timeout {
                    path: "database/creds/app".into(),
                    after: Duration::from_secs(10),
                });
            }
            self.issued.lock().unwrap().push(Instant::now());
            Ok(Fetched {
                username: format!("v-app-{n}"),
                password: SecretString::from(format!("pw-{n}")),
                lease_id: format!("database/creds/app/{n}"),
                ttl: self.ttl.lock().unwrap().unwrap_or(Duration::from_secs(TTL)),
                renewable: true,
            })
        }
        async fn renew(&self, lease_id: &str, increment: Duration) -> Result<Duration> {
            self.renewals.fetch_add(1, Ordering::SeqCst);
            if self.fail_renew.load(Ordering::SeqCst) {
                return Err(Error::Timeout {
                    path: "sys/leases/renew".into(),
                    after: Duration::from_secs(10),
                });
            }
            let n: usize = lease_id.rsplit('/').next().unwrap().parse().unwrap();
            let issued = self.issued.lock().unwrap()[n - 1];
            let left = Duration::from_secs(MAX_TTL).saturating_sub(issued.elapsed());
            Ok(increment.min(Duration::from_secs(left.as_secs())))
        }
        async fn revoke(&self, lease_id: &str) -> Result<()> {
            self.revoked.lock().unwrap().push(lease_id.to_owned());
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rotates_before_every_expiry_and_revokes_on_shutdown() {
        let fake = Arc::new(Fake::default());
        let (events, mut rx) = broadcast::channel(256);
        let manager = start(
            Arc::clone(&fake),
            "app".into(),
            LeaseOptions {
                revoke_on_shutdown: true,
                ..options()
            },
            events,
        )
        .await
        .unwrap();
        let mut creds = manager.credentials();
        let mut seen = vec![creds.borrow().clone()];
        // 5 minutes: each set lives at most 90 s and is replaced 10 s (a
        // third of 30 s) before it expires.
        let deadline = Instant::now() + Duration::from_secs(300);
        while let Ok(Ok(())) = tokio::time::timeout_at(deadline, creds.changed()).await {
            let current = creds.borrow_and_update().clone();
            if current.generation != seen.last().unwrap().generation {
                seen.push(current);
            }
        }
        let generations: Vec<u64> = seen.iter().map(|c| c.generation).collect();
        assert!(
            generations.windows(2).all(|w| w[1] == w[0] + 1),
            "{generations:?}"
        );
        assert!(generations.len() >= 4, "{generations:?}");
        // Every set was replaced before its lease expired.
        let issued = fake.issued.lock().unwrap().clone();
        for pair in issued.windows(2) {
            assert!(pair[1] - pair[0] < Duration::from_secs(MAX_TTL), "{pair:?}");
        }
        assert!(fake.renewals.load(Ordering::SeqCst) >= 2 * (generations.len() as u32 - 1));
        let mut kinds = Vec::new();
        while let Ok(event) = rx.try_recv() {
            kinds.push(
                format!("{event:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap()
                    .to_owned(),
            );
        }
        for kind in ["Created", "Renewed", "Expiring", "Rotated"] {
            assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
        }
        let last = manager.current().lease_id;
        manager.shutdown().await.unwrap();
        assert_eq!(*fake.revoked.lock().unwrap(), vec![last]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_rotation_is_not_retried_blindly_and_backs_off() {
        let fake = Arc::new(Fake::default());
        let (events, mut rx) = broadcast::channel(256);
        let manager = start(Arc::clone(&fake), "app".into(), options(), events)
            .await
            .unwrap();
        fake.fail_fetch.store(true, Ordering::SeqCst);
        // Renewals until ~90 s, rotation attempts from ~80 s, failing.
        tokio::time::sleep(Duration::from_secs(200)).await;
        let fetches = fake.fetches.load(Ordering::SeqCst);
        // One attempt per back-off step (1 s doubling to 30 s, jittered):
        // a handful in 120 s, never a tight loop.
        assert!((3..=12).contains(&fetches), "fetches: {fetches}");
        let mut failed = 0;
        while let Ok(event) = rx.try_recv() {
            if let LeaseEvent::Failed {
                operation: "rotate",
                ..
            } = event
            {
                failed += 1;
            }
        }
        assert_eq!(failed, fetches - 1, "each failed read is reported once");
        assert_eq!(manager.current().generation, 1);
        fake.fail_fetch.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(manager.current().generation, 2);
        drop(manager);
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_the_database_refused_are_replaced_at_once_and_not_in_a_loop() {
        let fake = Arc::new(Fake::default());
        let (events, _rx) = broadcast::channel(256);
        let manager = start(Arc::clone(&fake), "app".into(), options(), events)
            .await
            .unwrap();
        let mut creds = manager.credentials();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(manager.current().generation, 1);

        // Refused: new credentials well before the lease's renewal (20 s).
        manager.refused(1);
        tokio::time::timeout(
            Duration::from_secs(3),
            creds.wait_for(|c| c.generation == 2),
        )
        .await
        .expect("rotated at once")
        .unwrap();
        // A late report about generation 1 changes nothing.
        manager.refused(1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(manager.current().generation, 2);

        // Refused whatever the credentials (a role without grants): each
        // forced read waits longer than the last, not one per second.
        let before = fake.fetches.load(Ordering::SeqCst);
        for _ in 0..40 {
            let generation = manager.current().generation;
            manager.refused(generation);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let forced = fake.fetches.load(Ordering::SeqCst) - before;
        assert!((3..=8).contains(&forced), "forced reads in 20 s: {forced}");
        drop(manager);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_ttl_lease_does_not_make_a_hot_loop() {
        let fake = Arc::new(Fake::default());
        *fake.ttl.lock().unwrap() = Some(Duration::ZERO);
        let (events, _rx) = broadcast::channel(256);
        let manager = start(Arc::clone(&fake), "app".into(), options(), events)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        // At most one read per `retry.initial` (1 s), not thousands.
        let fetches = fake.fetches.load(Ordering::SeqCst);
        assert!((5..=12).contains(&fetches), "fetches: {fetches}");
        assert!(manager.current().generation >= 5);
        drop(manager);
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_ttl_does_not_panic() {
        let fake = Arc::new(Fake::default());
        *fake.ttl.lock().unwrap() = Some(Duration::from_secs(1 << 63));
        let (events, _rx) = broadcast::channel(256);
        let manager = start(Arc::clone(&fake), "app".into(), options(), events)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let creds = manager.current();
        assert_eq!(creds.generation, 1);
        assert!(creds.expires_at > SystemTime::now());
        let state = LeaseState::issued(Instant::now(), Duration::MAX, true);
        let renewed = state.renewed(Instant::now(), Duration::MAX);
        assert!(renewed.expires > Instant::now());
        let _ = renewed.next(&options(), 0.5);
        // The task is still alive: shutting down returns its lease id.
        manager.shutdown().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn failing_renewals_fall_back_to_rotation_before_expiry() {
        let fake = Arc::new(Fake::default());
        let (events, mut rx) = broadcast::channel(256);
        let manager = start(Arc::clone(&fake), "app".into(), options(), events)
            .await
            .unwrap();
        fake.fail_renew.store(true, Ordering::SeqCst);
        // Renewal fails from ~20 s; the 30 s lease is replaced before it
        // expires (rotation point: 30 s - 10 s margin).
        let first = manager.current();
        let mut creds = manager.credentials();
        let deadline = Instant::now() + Duration::from_secs(29);
        while creds.borrow().generation == 1 {
            assert!(
                tokio::time::timeout_at(deadline, creds.changed())
                    .await
                    .is_ok(),
                "not rotated before the lease expired"
            );
        }
        assert!(creds.borrow().expires_at > first.expires_at);
        assert!(fake.renewals.load(Ordering::SeqCst) >= 1);
        let mut rotated = false;
        while let Ok(event) = rx.try_recv() {
            rotated |= matches!(event, LeaseEvent::Rotated { generation: 2, .. });
        }
        assert!(rotated);
        drop(manager);
    }

    #[cfg(feature = "metrics")]
    #[tokio::test(start_paused = true)]
    async fn the_lease_ttl_gauge_counts_down_between_steps() {
        use metrics::{
            Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
            Unit,
        };

        #[derive(Default)]
        struct Values(Mutex<Vec<f64>>);
        impl GaugeFn for Values {
            fn increment(&self, _: f64) {}
            fn decrement(&self, _: f64) {}
            fn set(&self, value: f64) {
                self.0.lock().unwrap().push(value);
            }
        }
        struct TtlRecorder(Arc<Values>);
        impl Recorder for TtlRecorder {
            fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
                Counter::noop()
            }
            fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
                if key.name() == "vault_lease_ttl_seconds" {
                    Gauge::from_arc(Arc::clone(&self.0))
                } else {
                    Gauge::noop()
                }
            }
            fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
                Histogram::noop()
            }
        }

        let values = Arc::new(Values::default());
        let recorder = TtlRecorder(Arc::clone(&values));
        // A current-thread runtime: the manager's task sees this recorder.
        let _guard = metrics::set_default_local_recorder(&recorder);
        let fake = Arc::new(Fake::default());
        let (events, _rx) = broadcast::channel(256);
        let manager = start(Arc::clone(&fake), "app".into(), options(), events)
            .await
            .unwrap();
        // 15 s, before the first renewal (at 18 to 20 s of a 30 s lease).
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(fake.renewals.load(Ordering::SeqCst), 0);
        let seen = values.0.lock().unwrap().clone();
        assert!(seen.len() >= 10, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[1] <= w[0]), "{seen:?}");
        let last = *seen.last().unwrap();
        assert!((15.0..=17.0).contains(&last), "{seen:?}");
        drop(manager);
    }

    #[test]
    fn debug_hides_the_password() {
        let creds = Credentials {
            username: "v-app".into(),
            password: SecretString::from("pw-secret"),
            lease_id: "l".into(),
            lease_duration: Duration::from_secs(1),
            expires_at: SystemTime::now(),
            generation: 1,
            published_at: std::time::Instant::now(),
        };
        let shown = format!("{creds:?}");
        assert!(
            shown.contains("v-app") && !shown.contains("pw-secret"),
            "{shown}"
        );
        assert!(
            LeaseOptions {
                jitter: 2.0,
                ..options()
            }
            .check()
            .is_err()
        );
    }
}
