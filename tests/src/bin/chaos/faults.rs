//! The faults: every failure the platform claims to survive, injected one
//! at a time in an order and with holds drawn from the seed, each healed
//! the way an orchestrator would and timed.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::Method;
use system_tests::Platform;
use testkit::DatabaseEngine;
use tokio::time::Instant;

/// The shortest and longest hold of a fault (how long it lasts before
/// it is healed).
const HOLD: (u64, u64) = (3_000, 6_000);
/// How long the platform gets to be ready again after a fault is healed.
const RECOVERY: Duration = Duration::from_secs(120);
/// A fault is not started unless about this much of the run is left.
pub(crate) const SLOT: Duration = Duration::from_secs(12);

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// SIGKILL of the PostgreSQL primary, then promotion of the replica
    /// that received the most WAL; the old primary rejoins as a standby.
    PgKill,
    /// SIGSTOP of the PostgreSQL primary, then SIGCONT.
    PgFreeze,
    /// OpenBao stopped, then started (and unsealed) again.
    BaoStop,
    /// OpenBao frozen (SIGSTOP), then thawed.
    BaoFreeze,
    /// store-service frozen, then thawed.
    StoreFreeze,
    /// store-service killed (SIGKILL), then started again.
    StoreKill,
    /// One gateway killed (SIGKILL), then started again.
    GatewayKill,
    /// One NATS node killed (SIGKILL), then started again.
    NatsKill,
    /// Every lease of the service's database credentials revoked (the
    /// users dropped): the service must get new ones.
    CredentialsRevoked,
}

impl Kind {
    pub(crate) const ALL: [Kind; 9] = [
        Kind::PgKill,
        Kind::PgFreeze,
        Kind::BaoStop,
        Kind::BaoFreeze,
        Kind::StoreFreeze,
        Kind::StoreKill,
        Kind::GatewayKill,
        Kind::NatsKill,
        Kind::CredentialsRevoked,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::PgKill => "pg-primary-kill",
            Kind::PgFreeze => "pg-primary-freeze",
            Kind::BaoStop => "openbao-restart",
            Kind::BaoFreeze => "openbao-freeze",
            Kind::StoreFreeze => "store-service-freeze",
            Kind::StoreKill => "store-service-kill",
            Kind::GatewayKill => "gateway-kill",
            Kind::NatsKill => "nats-node-kill",
            Kind::CredentialsRevoked => "db-credentials-revoked",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One fault as it happened, in seconds since the run started.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    pub(crate) kind: Kind,
    /// What it hit (`pg1`, `gateway 0`, ...).
    pub(crate) target: String,
    pub(crate) start: Duration,
    /// When it was healed (the last step of the orchestrator done).
    pub(crate) healed: Duration,
    /// When every service answered `/ready` again.
    pub(crate) recovered: Duration,
}

/// The order of the faults and their holds, from the seed.
pub(crate) struct Schedule {
    rng: fastrand::Rng,
    order: Vec<Kind>,
    next: usize,
}

impl Schedule {
    /// Every kind of `only` (all when empty) once in a seeded order, then
    /// again reshuffled: a run long enough for nine faults injects every
    /// kind.
    pub(crate) fn new(seed: u64, only: &[Kind]) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_fa17);
        let mut order: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| only.is_empty() || only.contains(k))
            .collect();
        rng.shuffle(&mut order);
        Schedule {
            rng,
            order,
            next: 0,
        }
    }

    /// The next fault, its hold and which instance it hits (of those
    /// there are).
    pub(crate) fn next(&mut self) -> (Kind, Duration, u64) {
        if self.next == self.order.len() {
            self.rng.shuffle(&mut self.order);
            self.next = 0;
        }
        let kind = self.order[self.next];
        self.next += 1;
        let hold = Duration::from_millis(self.rng.u64(HOLD.0..=HOLD.1));
        (kind, hold, self.rng.u64(..))
    }
}

/// Injects `kind` for `hold`, heals it, and waits until the platform is
/// ready again. `pick` chooses the instance hit.
pub(crate) async fn inject(
    platform: &mut Platform,
    kind: Kind,
    hold: Duration,
    pick: u64,
    started: Instant,
) -> anyhow::Result<Window> {
    let start = started.elapsed();
    let target = match kind {
        Kind::PgKill => {
            let (old, new) = platform
                .pg
                .kill_and_promote()
                .await
                .context("killing the primary and promoting a replica")?;
            // The orchestrator points OpenBao's database engine at the new
            // primary and the other standbys at it.
            platform
                .bao
                .configure_database(&platform.pg, &DatabaseEngine::default())
                .await
                .context("pointing OpenBao at the new primary")?;
            for other in platform.pg.replicas() {
                if other != old {
                    platform.pg.restart_as_standby(other).await?;
                }
            }
            tokio::time::sleep(hold).await;
            platform
                .pg
                .restart_as_standby(old)
                .await
                .with_context(|| format!("rejoining {old} as a standby"))?;
            platform.pg.set_synchronous_standbys(new, 1).await?;
            format!("{old} -> {new}")
        }
        Kind::PgFreeze => {
            let primary = platform.pg.primary();
            platform.pg.freeze(primary).await?;
            tokio::time::sleep(hold).await;
            platform.pg.thaw(primary).await?;
            primary.to_string()
        }
        Kind::BaoStop => {
            platform.bao.stop().await?;
            tokio::time::sleep(hold).await;
            platform.bao.restart().await.context("restarting OpenBao")?;
            "openbao".into()
        }
        Kind::BaoFreeze => {
            platform.bao.freeze().await?;
            tokio::time::sleep(hold).await;
            platform.bao.thaw().await?;
            "openbao".into()
        }
        Kind::StoreFreeze => {
            platform.store.freeze()?;
            tokio::time::sleep(hold).await;
            platform.store.thaw()?;
            "store-service".into()
        }
        Kind::StoreKill => {
            platform.store.kill();
            tokio::time::sleep(hold).await;
            platform
                .store
                .restart()
                .await
                .context("restarting store-service")?;
            "store-service".into()
        }
        Kind::GatewayKill => {
            let i = (pick % platform.gateways.len() as u64) as usize;
            platform.gateways[i].kill();
            tokio::time::sleep(hold).await;
            platform.gateways[i]
                .restart()
                .await
                .with_context(|| format!("restarting gateway {i}"))?;
            format!("gateway {i}")
        }
        Kind::NatsKill => {
            let nats = platform.nats.as_ref().context("no NATS cluster")?;
            let i = (pick % nats.len() as u64) as usize;
            nats.kill(i).await?;
            tokio::time::sleep(hold).await;
            nats.restart(i).await.context("restarting a NATS node")?;
            nats.server_name(i).to_owned()
        }
        Kind::CredentialsRevoked => {
            let engine = DatabaseEngine::default();
            let before = service_users(platform, &engine).await?;
            platform
                .bao
                .call(
                    Method::PUT,
                    &format!(
                        "sys/leases/revoke-prefix/{}/creds/{}",
                        engine.mount, engine.role
                    ),
                    None,
                )
                .await
                .context("revoking the service's database leases")?;
            let after = service_users(platform, &engine).await?;
            if let Some(kept) = before.iter().find(|u| after.contains(u)) {
                bail!("the revocation left the user {kept} in place");
            }
            tokio::time::sleep(hold).await;
            "store-service's database users".into()
        }
    };
    let healed = started.elapsed();
    ready(platform).await?;
    Ok(Window {
        kind,
        target,
        start,
        healed,
        recovered: started.elapsed(),
    })
}

/// The login roles OpenBao made for the service (members of the group
/// role that holds the grants), on the primary.
async fn service_users(
    platform: &Platform,
    engine: &DatabaseEngine,
) -> anyhow::Result<Vec<String>> {
    let db = platform.db().await;
    let rows = db
        .query(
            "SELECT r.rolname::text FROM pg_auth_members m \
             JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid \
             WHERE g.rolname = $1 AND r.rolcanlogin AND r.rolname <> $2",
            &[&engine.group_role, &engine.admin_role],
        )
        .await
        .context("listing the service's database users")?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Waits until store-service and every gateway answer `/ready` with 200.
pub(crate) async fn ready(platform: &Platform) -> anyhow::Result<()> {
    let mut urls = vec![platform.store_url("/ready")];
    urls.extend((0..platform.gateways.len()).map(|i| platform.url_of(i, "/ready")));
    for url in urls {
        let answered = testkit::eventually(&format!("{url} to answer 200"), RECOVERY, || {
            let request = platform.http.get(&url).send();
            async move { (request.await.ok()?.status() == 200).then_some(()) }
        })
        .await;
        if let Err(error) = answered {
            let body = match platform.http.get(&url).send().await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            bail!(
                "{error}\nlast answer: {body}\nstore-service's log:\n{}",
                platform.store.log_tail()
            );
        }
    }
    Ok(())
}
