//! The audit: every acknowledged write checked against the database, every
//! queued write against its status resource, every store's history for
//! gaps and forks, every secret read back, every 5xx against the fault
//! windows.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use system_tests::Platform;

use crate::faults::Window;
use crate::workload::{Ack, Answer, Ledger, OpKind, QueuedOutcome, written_secrets};

/// After a fault is healed and the platform is ready again, 503s (and
/// 504s after a timeout) are still what the contract says: the gateway's
/// `store-service` breaker preset waits 30 s open before it tries the
/// upstream again (degraded mode: stale reads, 503 with Retry-After,
/// queued writes), plus the route's 2 s timeout and a few seconds of
/// margin.
pub(crate) const GRACE: Duration = Duration::from_secs(35);

/// What the audit found.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// Writes with at least one acknowledgement that took effect (200/201,
    /// or 202 then completed).
    pub(crate) acknowledged: usize,
    /// Writes answered 202 at least once.
    pub(crate) queued: usize,
    /// Queued writes that ended in a terminal failure (reason visible).
    pub(crate) queued_failed: usize,
    pub(crate) lost: Vec<String>,
    pub(crate) duplicated: Vec<String>,
    pub(crate) unexplained: Vec<String>,
}

/// Audits `ledger` against the platform after the run.
pub(crate) async fn audit(
    platform: &Platform,
    token: &str,
    ledger: &Ledger,
    windows: &[Window],
) -> anyhow::Result<Findings> {
    let mut findings = Findings::default();
    let db = platform.db().await;

    // Every write's effect, by the marker each one puts in `config.op`:
    // (store, version) of the events whose config change set it.
    let rows = db
        .query(
            "SELECT c->'new'->>'op', e.store_id::text, e.version::bigint \
             FROM store_events e, jsonb_array_elements(e.changes) c \
             WHERE c->>'field' = 'config' AND c->'new' ? 'op'",
            &[],
        )
        .await
        .context("reading the store events")?;
    let mut effects: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for row in rows {
        effects
            .entry(row.get(0))
            .or_default()
            .push((row.get(1), row.get(2)));
    }

    for write in &ledger.writes {
        let found = effects.get(&write.op).map(Vec::as_slice).unwrap_or(&[]);
        if found.len() > 1 && write.kind != OpKind::Replay {
            findings.duplicated.push(format!(
                "{} applied {} times: {found:?}",
                write.op,
                found.len()
            ));
        }
        let mut effective = Vec::new();
        for ack in &write.acks {
            match ack {
                Ack::Done { store, version } => effective.push((store.clone(), *version)),
                Ack::Queued { request, outcome } => match outcome {
                    QueuedOutcome::Completed { store, version, .. } => {
                        effective.push((store.clone(), *version));
                    }
                    QueuedOutcome::Failed { .. } => findings.queued_failed += 1,
                    QueuedOutcome::Unfinished { last } => findings.lost.push(format!(
                        "{}: queued as {request}, never finished (last: {last})",
                        write.op
                    )),
                },
            }
        }
        if write.acks.iter().any(|a| matches!(a, Ack::Queued { .. })) {
            findings.queued += 1;
        }
        if effective.is_empty() {
            continue;
        }
        findings.acknowledged += 1;
        // A create's replays name its store; an update's name the store
        // and the version it made.
        let expected = match write.kind {
            OpKind::Create | OpKind::Replay => effective
                .iter()
                .map(|(s, _)| (s.clone(), 1))
                .collect::<Vec<_>>(),
            _ => effective,
        };
        for (store, version) in &expected {
            if !found.iter().any(|(s, v)| s == store && v == version) {
                findings.lost.push(format!(
                    "{} acknowledged as {store} version {version}; the database has {found:?}",
                    write.op
                ));
            }
        }
    }

    // Histories: versions 1..=version, each once.
    let rows = db
        .query(
            "SELECT s.id::text, s.version::bigint, count(e.version), count(DISTINCT e.version), \
                    coalesce(min(e.version), 0)::bigint, coalesce(max(e.version), 0)::bigint \
             FROM stores s LEFT JOIN store_events e ON e.store_id = s.id \
             WHERE s.name LIKE 'Chaos %' GROUP BY s.id, s.version",
            &[],
        )
        .await
        .context("reading the histories")?;
    for row in rows {
        let (id, version): (String, i64) = (row.get(0), row.get(1));
        let (events, distinct, min, max): (i64, i64, i64, i64) =
            (row.get(2), row.get(3), row.get(4), row.get(5));
        if events != distinct {
            findings.duplicated.push(format!(
                "{id}: a fork, {events} events for {distinct} versions"
            ));
        }
        if min != 1 || max != version || distinct != version {
            findings.lost.push(format!(
                "{id}: a gap, version {version} with versions {min}..={max} ({distinct} distinct)"
            ));
        }
    }

    // Secrets read back, through the gateway, as written.
    for (store, written) in written_secrets(ledger) {
        let path = format!("/api/stores/{store}/secrets");
        let (status, body) = platform.get_json(&path, token).await;
        if status != 200 || body["secrets"] != written {
            findings.lost.push(format!(
                "{store}: secrets {written} read back as {status} {}",
                body.get("secrets").unwrap_or(&json!(null))
            ));
        }
    }
    findings
        .lost
        .extend(ledger.secrets_mismatch.iter().cloned());

    // Every 5xx: one the contract allows while a fault was on (or just
    // healed), or unexplained.
    for sample in &ledger.samples {
        let Answer::Status {
            status,
            retry_after,
            error,
        } = &sample.answer
        else {
            continue;
        };
        if *status < 500 {
            continue;
        }
        let end = sample.sent + sample.latency;
        let during = windows
            .iter()
            .any(|w| sample.sent <= w.recovered + GRACE && end >= w.start);
        // The gateway's contract (its README, "Degraded mode"): a 503 with
        // Retry-After while an upstream or dependency is down, or a 504
        // GATEWAY_TIMEOUT with Retry-After for a read that timed out with
        // no stale copy kept.
        let allowed = retry_after.is_some()
            && (*status == 503 || (*status == 504 && error.as_deref() == Some("GATEWAY_TIMEOUT")));
        if !(allowed && during) {
            findings.unexplained.push(format!(
                "{status} {} to {:?} at {:.1} s (gateway {}, Retry-After {retry_after:?}, {})",
                error.as_deref().unwrap_or("-"),
                sample.kind,
                sample.sent.as_secs_f64(),
                sample.gateway,
                if during {
                    "in a fault window"
                } else {
                    "outside any fault window"
                },
            ));
        }
    }
    Ok(findings)
}
