//! The cluster's state as the prober and live traffic see it, and the rules
//! that turn observations into a primary, routable replicas, a generation
//! number and events. Pure: no IO, time comes in as an argument.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::events::ProbeReport;
use crate::{Event, Lsn, NodeId, Role};

/// How many of the primary's past WAL positions are kept to turn a
/// replica's replay position into a lag in time.
const HISTORY: usize = 256;

/// The rules' parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    /// Consecutive failed probes before a node is down.
    pub(crate) failure_threshold: u32,
    /// How long a node may leave its probes unanswered before it is down
    /// (see [`Topology::check_silence`]); `None`: only the count of failed
    /// probes decides.
    pub(crate) down_after: Option<Duration>,
    /// Lag bound in bytes.
    pub(crate) max_lag_bytes: Option<u64>,
    /// Lag bound in time.
    pub(crate) max_lag: Option<Duration>,
}

/// What is known about one node.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeState {
    /// Role at the last successful probe (or after a 25006).
    pub(crate) role: Option<Role>,
    /// `None` until the first successful probe; `Some(false)` after
    /// `failure_threshold` failures in a row or a silence of `down_after`.
    pub(crate) up: Option<bool>,
    /// Whether a probe of the node finished at least once (successfully or
    /// not): the cluster is settled once every node was.
    pub(crate) probed: bool,
    /// Consecutive failed probes.
    pub(crate) failures: u32,
    /// Whether the last probe succeeded.
    pub(crate) reachable: bool,
    /// Timeline, for a primary.
    pub(crate) timeline: Option<u32>,
    /// Current WAL position, for a primary.
    pub(crate) current_lsn: Option<Lsn>,
    /// Replay position, for a standby.
    pub(crate) replay_lsn: Option<Lsn>,
    /// Bytes behind the primary, for a standby.
    pub(crate) lag_bytes: Option<u64>,
    /// Time behind the primary, for a standby.
    pub(crate) lag: Option<Duration>,
    /// Whether a lag bound is exceeded (edge for `LagExceeded`).
    pub(crate) lagging: bool,
    /// The last probe error.
    pub(crate) last_error: Option<String>,
    /// The last successful probe's duration.
    pub(crate) probe_latency: Option<Duration>,
    /// When the last successful probe finished.
    pub(crate) last_ok: Option<Instant>,
    /// When the first probe started since the last answer (`None` while no
    /// probe is waiting for one): the start of the node's silence.
    pub(crate) silent_since: Option<Instant>,
    /// When the second probe started since the last answer.
    pub(crate) second_since: Option<Instant>,
    /// Probes started since the last answer.
    pub(crate) unanswered: u32,
    /// When the newest probe whose outcome was applied started: an older
    /// probe's outcome arriving later (probes overlap) is stale.
    pub(crate) newest_outcome: Option<Instant>,
}

/// What routing needs, published on every change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct View {
    /// Bumped whenever the primary or the set of up nodes changes.
    pub(crate) generation: u64,
    /// Where writes go.
    pub(crate) primary: Option<usize>,
    /// Standbys that are up, answered their last probe and are within the
    /// lag bounds, in node order.
    pub(crate) readable: Vec<usize>,
    /// Whether every node has been probed at least once.
    pub(crate) settled: bool,
}

/// The result of one observation.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Change {
    /// Events to broadcast, in order.
    pub(crate) events: Vec<Event>,
    /// Nodes whose pooled connections must go.
    pub(crate) evict: Vec<usize>,
    /// Whether every node should be probed again at once (to confirm a
    /// conflicting primary claim).
    pub(crate) reprobe: bool,
}

/// The state machine.
#[derive(Debug)]
pub(crate) struct Topology {
    rules: Rules,
    nodes: Vec<NodeState>,
    primary: Option<usize>,
    generation: u64,
    /// The highest timeline an elected primary ever had: a node claiming
    /// primary on a lower one is a stale former primary, never elected.
    max_timeline: u32,
    /// When the current primary first failed (probe or live traffic).
    trouble_since: Option<Instant>,
    /// The primary that was lost and when its trouble began, until a new
    /// one is elected.
    lost: Option<(usize, Instant)>,
    /// The set of claiming primaries last reported as split brain.
    split_brain: Vec<usize>,
    /// Since when more than one node claims to be primary.
    conflict_since: Option<Instant>,
    /// The primary's past (time, position) samples, oldest first.
    history: VecDeque<(Instant, Lsn)>,
}

impl Topology {
    pub(crate) fn new(nodes: usize, rules: Rules) -> Topology {
        Topology {
            rules,
            nodes: vec![NodeState::default(); nodes],
            primary: None,
            generation: 0,
            max_timeline: 0,
            trouble_since: None,
            lost: None,
            split_brain: Vec::new(),
            conflict_since: None,
            history: VecDeque::new(),
        }
    }

    pub(crate) fn nodes(&self) -> &[NodeState] {
        &self.nodes
    }

    pub(crate) fn primary(&self) -> Option<usize> {
        self.primary
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether probes should run at the fast interval for `node`.
    pub(crate) fn wants_fast_probe(&self, node: usize) -> bool {
        let state = &self.nodes[node];
        self.primary.is_none() || (state.failures > 0 && state.up != Some(false))
    }

    /// A probe of `node` starts now: it opens or extends the node's
    /// silence, which may already be long enough to make it down.
    pub(crate) fn probe_started(&mut self, node: usize, now: Instant) -> Change {
        let state = &mut self.nodes[node];
        if state.silent_since.is_some() {
            state.second_since.get_or_insert(now);
        }
        state.silent_since.get_or_insert(now);
        state.unanswered = state.unanswered.saturating_add(1);
        self.check_silence(node, now)
    }

    /// When [`Topology::check_silence`] would make `node` down if no
    /// probe is answered until then: `None` unless the rule is on, the
    /// node is not down yet and two probes are unanswered (a later probe
    /// start checks the silence itself).
    pub(crate) fn silence_deadline(&self, node: usize) -> Option<Instant> {
        let state = &self.nodes[node];
        if state.up == Some(false) {
            return None;
        }
        let limit = self.rules.down_after?;
        let first = state.silent_since?;
        let second = state.second_since?;
        Some((first + limit).max(second + limit / 2))
    }

    /// Makes `node` down if it has answered no probe for `down_after` since
    /// the first unanswered one started, and none for half of it since the
    /// second: one probe stuck on a broken connection is not enough, a
    /// fresh one must have gone unanswered too.
    pub(crate) fn check_silence(&mut self, node: usize, now: Instant) -> Change {
        let mut change = Change::default();
        let Some(error) = self.silent_too_long(node, now) else {
            return change;
        };
        self.mark_down(node, error, &mut change);
        if self.primary == Some(node) {
            self.trouble_since.get_or_insert(now);
        }
        self.elect(now, &mut change);
        self.update_lag(now, &mut change);
        change
    }

    /// Why `node` is down by the silence rule now, if it is.
    fn silent_too_long(&self, node: usize, now: Instant) -> Option<String> {
        let state = &self.nodes[node];
        let deadline = self.silence_deadline(node)?;
        if now < deadline {
            return None;
        }
        let silent = now.saturating_duration_since(state.silent_since?);
        let error = format!(
            "no probe answered for {} ms ({} unanswered)",
            silent.as_millis(),
            state.unanswered
        );
        Some(match &state.last_error {
            Some(last) => format!("{error}; last error: {last}"),
            None => error,
        })
    }

    /// A probe of `node` that started at `started` finished with
    /// `outcome`. The outcome of a probe older than one already applied is
    /// stale (probes overlap) and ignored: a probe that timed out on a
    /// stuck connection says nothing once a newer one was answered.
    pub(crate) fn probe_finished(
        &mut self,
        node: usize,
        started: Instant,
        outcome: Result<ProbeReport, String>,
        now: Instant,
    ) -> Change {
        let state = &mut self.nodes[node];
        if state.newest_outcome.is_some_and(|newest| newest > started) {
            return Change::default();
        }
        state.newest_outcome = Some(started);
        match outcome {
            Ok(report) => self.probe_succeeded(node, &report, now),
            Err(error) => self.probe_failed(node, error, now),
        }
    }

    /// `node` is down from now: a `NodeDown` event, its connections go.
    fn mark_down(&mut self, node: usize, error: String, change: &mut Change) {
        let state = &mut self.nodes[node];
        state.up = Some(false);
        state.reachable = false;
        state.silent_since = None;
        state.second_since = None;
        state.unanswered = 0;
        change.events.push(Event::NodeDown {
            node: NodeId(node),
            error,
        });
        change.evict.push(node);
        self.generation += 1;
    }

    pub(crate) fn view(&self) -> View {
        let readable = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.role == Some(Role::Standby) && n.up == Some(true) && n.reachable && !n.lagging
            })
            .map(|(i, _)| i)
            .collect();
        View {
            generation: self.generation,
            primary: self.primary,
            readable,
            settled: self.nodes.iter().all(|n| n.probed),
        }
    }

    /// A probe of `node` succeeded.
    pub(crate) fn probe_succeeded(
        &mut self,
        node: usize,
        report: &ProbeReport,
        now: Instant,
    ) -> Change {
        let mut change = Change::default();
        let state = &mut self.nodes[node];
        state.probed = true;
        state.failures = 0;
        state.reachable = true;
        state.last_error = None;
        state.role = Some(report.role);
        state.probe_latency = Some(report.latency);
        state.last_ok = Some(now);
        state.silent_since = None;
        state.second_since = None;
        state.unanswered = 0;
        let came_up = state.up != Some(true);
        if came_up {
            state.up = Some(true);
            change.events.push(Event::NodeUp {
                node: NodeId(node),
                role: report.role,
            });
        }
        match report.role {
            Role::Primary => {
                state.timeline = report.timeline;
                state.current_lsn = report.current_lsn;
                state.replay_lsn = None;
                state.lag_bytes = None;
                state.lag = None;
                state.lagging = false;
            }
            Role::Standby => {
                state.timeline = None;
                state.current_lsn = None;
                state.replay_lsn = report.replay_lsn;
            }
        }
        if self.primary == Some(node) && report.role == Role::Primary {
            self.trouble_since = None;
        }
        self.elect(now, &mut change);
        if self.primary == Some(node)
            && let Some(lsn) = report.current_lsn
        {
            self.record_primary_position(now, lsn);
        }
        if came_up {
            self.generation += 1;
        }
        self.update_lag(now, &mut change);
        change
    }

    /// A probe of `node` failed with `error`.
    pub(crate) fn probe_failed(&mut self, node: usize, error: String, now: Instant) -> Change {
        let mut change = Change::default();
        let threshold = self.rules.failure_threshold;
        let state = &mut self.nodes[node];
        state.probed = true;
        state.failures = state.failures.saturating_add(1);
        state.reachable = false;
        if state.failures >= threshold && state.up != Some(false) {
            self.mark_down(node, error.clone(), &mut change);
        }
        self.nodes[node].last_error = Some(error);
        if let Some(error) = self.silent_too_long(node, now) {
            self.mark_down(node, error, &mut change);
        }
        if self.primary == Some(node) {
            self.trouble_since.get_or_insert(now);
        }
        self.elect(now, &mut change);
        self.update_lag(now, &mut change);
        change
    }

    /// Live traffic to `node` failed in a way that says something about the
    /// node (broken connection, server going away). It does not count as a
    /// failed probe (probes decide up and down) but starts the failover
    /// clock if `node` is the primary.
    pub(crate) fn trouble(&mut self, node: usize, now: Instant) {
        if self.primary == Some(node) {
            self.trouble_since.get_or_insert(now);
        }
    }

    /// `node` answered a write with SQLSTATE 25006 (or opened a connection
    /// as a hot standby): it is a standby now, whatever the last probe said.
    pub(crate) fn read_only(&mut self, node: usize, now: Instant) -> Change {
        let mut change = Change::default();
        if self.nodes[node].role != Some(Role::Primary) {
            return change;
        }
        if self.primary == Some(node) {
            self.trouble_since.get_or_insert(now);
        }
        let state = &mut self.nodes[node];
        state.role = Some(Role::Standby);
        state.timeline = None;
        state.current_lsn = None;
        // Its replay position is unknown until the next probe: keep it out
        // of reads until then.
        state.replay_lsn = None;
        state.reachable = false;
        self.elect(now, &mut change);
        change
    }

    /// Picks the primary from the nodes' claims and records the change.
    fn elect(&mut self, now: Instant, change: &mut Change) {
        let claims: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let n = &self.nodes[i];
                n.reachable && n.up != Some(false) && n.role == Some(Role::Primary)
            })
            .collect();
        // Stale former primaries (lower timeline than ever elected) never win.
        let eligible: Vec<usize> = claims
            .iter()
            .copied()
            .filter(|&i| self.timeline(i) >= self.max_timeline)
            .collect();
        let best = eligible.iter().copied().max_by_key(|&i| {
            (
                self.timeline(i),
                self.primary == Some(i), // ties keep the current primary
                std::cmp::Reverse(i),
            )
        });
        let chosen = match best {
            Some(best) => Some(best),
            // The primary failed a probe or two but is not down yet.
            None => self.primary.filter(|&p| {
                let n = &self.nodes[p];
                n.up != Some(false) && n.role == Some(Role::Primary)
            }),
        };
        if claims.len() > 1 {
            // A claim from before the conflict may be stale (that node may
            // have died since its last probe): report split brain only once
            // every claim was confirmed by a probe since the conflict began.
            let since = *self.conflict_since.get_or_insert(now);
            let confirmed = claims
                .iter()
                .all(|&i| self.nodes[i].last_ok.is_some_and(|t| t >= since));
            if !confirmed {
                change.reprobe = true;
            } else if claims != self.split_brain
                && let Some(chosen) = chosen
            {
                change.events.push(Event::SplitBrain {
                    primaries: claims
                        .iter()
                        .map(|&i| (NodeId(i), self.nodes[i].timeline))
                        .collect(),
                    chosen: NodeId(chosen),
                });
                self.split_brain = claims;
            }
        } else {
            self.split_brain.clear();
            self.conflict_since = None;
        }
        if chosen == self.primary {
            return;
        }
        self.generation += 1;
        if let Some(old) = self.primary {
            change.events.push(Event::PrimaryLost {
                node: NodeId(old),
                generation: self.generation,
            });
            if !change.evict.contains(&old) {
                change.evict.push(old);
            }
            let since = self.trouble_since.take().unwrap_or(now);
            self.lost = Some((old, since));
        }
        if chosen.is_none() {
            // Every prober that last saw a primary sleeps its slow interval
            // (1 s) from that probe: without a wake-up, a replica promoted
            // meanwhile is noticed up to that interval late (the failover
            // bench's rounds at ~0.5 s and ~1 s). Woken, each probes at once
            // and then runs at the fast interval until a primary is elected.
            change.reprobe = true;
        }
        self.primary = chosen;
        // WAL positions are only comparable within one primary's history:
        // a promoted replica's timeline branches off at its own replay
        // position, which may be below the old primary's head. Start the
        // history afresh and re-judge every replica against the new primary.
        self.history.clear();
        for (i, state) in self.nodes.iter_mut().enumerate() {
            state.lag_bytes = None;
            state.lag = None;
            if state.lagging {
                state.lagging = false;
                change.events.push(Event::LagRecovered { node: NodeId(i) });
            }
        }
        if let Some(new) = chosen {
            let timeline = self.nodes[new].timeline;
            self.max_timeline = self.max_timeline.max(timeline.unwrap_or(0));
            change.events.push(Event::PrimaryElected {
                node: NodeId(new),
                timeline,
                generation: self.generation,
            });
            if let Some((old, since)) = self.lost.take()
                && old != new
            {
                change.events.push(Event::FailoverCompleted {
                    from: NodeId(old),
                    to: NodeId(new),
                    duration: now.saturating_duration_since(since),
                });
            }
        }
    }

    fn timeline(&self, node: usize) -> u32 {
        self.nodes[node].timeline.unwrap_or(0)
    }

    fn record_primary_position(&mut self, now: Instant, lsn: Lsn) {
        if self.history.back().is_some_and(|&(_, last)| last >= lsn) {
            return;
        }
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back((now, lsn));
    }

    /// Recomputes every standby's lag against the primary's latest known
    /// position and emits lag edges.
    fn update_lag(&mut self, now: Instant, change: &mut Change) {
        let Some(&(_, head)) = self.history.back() else {
            return;
        };
        let rules = self.rules;
        for (i, state) in self.nodes.iter_mut().enumerate() {
            if state.role != Some(Role::Standby) {
                continue;
            }
            let Some(replay) = state.replay_lsn else {
                continue;
            };
            let bytes = head.bytes_after(replay);
            // The oldest WAL the replica lacks was written when the primary
            // first passed its replay position.
            let lag = if replay >= head {
                Duration::ZERO
            } else {
                let since = self
                    .history
                    .iter()
                    .find(|&&(_, lsn)| lsn > replay)
                    .map(|&(t, _)| t)
                    .unwrap_or(now);
                now.saturating_duration_since(since)
            };
            state.lag_bytes = Some(bytes);
            state.lag = Some(lag);
            let over = rules.max_lag_bytes.is_some_and(|max| bytes > max)
                || rules.max_lag.is_some_and(|max| lag > max);
            if over && !state.lagging {
                state.lagging = true;
                change.events.push(Event::LagExceeded {
                    node: NodeId(i),
                    lag_bytes: Some(bytes),
                    lag: Some(lag),
                });
            } else if !over && state.lagging {
                state.lagging = false;
                change.events.push(Event::LagRecovered { node: NodeId(i) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        failure_threshold: 3,
        down_after: Some(Duration::from_millis(600)),
        max_lag_bytes: Some(1000),
        max_lag: Some(Duration::from_secs(5)),
    };

    fn primary(timeline: u32, lsn: u64) -> ProbeReport {
        ProbeReport {
            role: Role::Primary,
            timeline: Some(timeline),
            current_lsn: Some(Lsn(lsn)),
            replay_lsn: None,
            latency: Duration::from_millis(1),
        }
    }

    fn standby(replay: u64) -> ProbeReport {
        ProbeReport {
            role: Role::Standby,
            timeline: None,
            current_lsn: None,
            replay_lsn: Some(Lsn(replay)),
            latency: Duration::from_millis(1),
        }
    }

    /// Node 0 primary on timeline 1, nodes 1 and 2 caught-up standbys.
    fn healthy() -> (Topology, Instant) {
        let now = Instant::now();
        let mut t = Topology::new(3, RULES);
        t.probe_succeeded(0, &primary(1, 100), now);
        t.probe_succeeded(1, &standby(100), now);
        t.probe_succeeded(2, &standby(100), now);
        (t, now)
    }

    fn kinds(change: &Change) -> Vec<&'static str> {
        change
            .events
            .iter()
            .map(|e| match e {
                Event::NodeDown { .. } => "NodeDown",
                Event::NodeUp { .. } => "NodeUp",
                Event::PrimaryLost { .. } => "PrimaryLost",
                Event::PrimaryElected { .. } => "PrimaryElected",
                Event::FailoverCompleted { .. } => "FailoverCompleted",
                Event::LagExceeded { .. } => "LagExceeded",
                Event::LagRecovered { .. } => "LagRecovered",
                Event::SplitBrain { .. } => "SplitBrain",
                Event::CredentialsRefused { .. } => "CredentialsRefused",
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn first_probes_elect_the_primary_and_settle() {
        let now = Instant::now();
        let mut t = Topology::new(2, RULES);
        assert!(!t.view().settled);
        let change = t.probe_succeeded(1, &standby(0), now);
        assert_eq!(kinds(&change), ["NodeUp"]);
        let change = t.probe_succeeded(0, &primary(1, 50), now);
        assert_eq!(kinds(&change), ["NodeUp", "PrimaryElected"]);
        let view = t.view();
        assert!(view.settled);
        assert_eq!(view.primary, Some(0));
        assert_eq!(view.readable, [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn three_failures_make_a_node_down_and_lose_the_primary() {
        let (mut t, start) = healthy();
        let generation = t.generation();
        tokio::time::advance(Duration::from_millis(300)).await;
        let now = Instant::now();
        assert!(kinds(&t.probe_failed(0, "refused".into(), now)).is_empty());
        assert!(t.wants_fast_probe(0), "a suspect node is probed fast");
        assert!(kinds(&t.probe_failed(0, "refused".into(), now)).is_empty());
        assert_eq!(t.primary(), Some(0), "still primary while suspect");
        assert_eq!(t.generation(), generation);
        let change = t.probe_failed(0, "refused".into(), now);
        assert_eq!(kinds(&change), ["NodeDown", "PrimaryLost"]);
        assert_eq!(change.evict, [0]);
        assert!(
            change.reprobe,
            "every prober wakes: one asleep on its slow interval would see a promotion late"
        );
        assert_eq!(t.primary(), None);
        assert!(t.generation() > generation);
        assert!(
            t.wants_fast_probe(1),
            "no primary: hunt at the fast interval"
        );

        // Node 1 is promoted: failover completes, measured from the first
        // failed probe.
        tokio::time::advance(Duration::from_millis(700)).await;
        let change = t.probe_succeeded(1, &primary(2, 200), Instant::now());
        assert_eq!(kinds(&change), ["PrimaryElected", "FailoverCompleted"]);
        assert!(change.events.contains(&Event::FailoverCompleted {
            from: NodeId(0),
            to: NodeId(1),
            duration: Duration::from_millis(700),
        }));
        assert!(start < Instant::now());
        assert_eq!(t.view().readable, [2]);
    }

    #[tokio::test(start_paused = true)]
    async fn promoted_replica_wins_before_the_old_primary_is_down() {
        let (mut t, now) = healthy();
        t.probe_failed(0, "refused".into(), now);
        let change = t.probe_succeeded(2, &primary(2, 150), now);
        assert_eq!(
            kinds(&change),
            ["PrimaryLost", "PrimaryElected", "FailoverCompleted"]
        );
        assert_eq!(t.primary(), Some(2));
        assert_eq!(change.evict, [0]);
    }

    #[tokio::test(start_paused = true)]
    async fn split_brain_prefers_the_higher_timeline_and_fences_the_stale_one() {
        let (mut t, now) = healthy();
        let change = t.probe_succeeded(1, &primary(2, 120), now);
        assert_eq!(
            kinds(&change),
            [
                "SplitBrain",
                "PrimaryLost",
                "PrimaryElected",
                "FailoverCompleted"
            ]
        );
        assert!(matches!(
            &change.events[0],
            Event::SplitBrain { primaries, chosen: NodeId(1) }
                if primaries == &[(NodeId(0), Some(1)), (NodeId(1), Some(2))]
        ));
        // Reported once, not on every probe.
        assert!(kinds(&t.probe_succeeded(0, &primary(1, 100), now)).is_empty());
        // The new primary dies: the stale one (timeline 1) is never elected.
        for _ in 0..3 {
            t.probe_failed(1, "refused".into(), now);
        }
        assert_eq!(t.primary(), None);
        t.probe_succeeded(0, &primary(1, 100), now);
        assert_eq!(t.primary(), None);
        // Once it rejoins as a standby and another node is promoted on a
        // higher timeline, writes resume.
        t.probe_succeeded(0, &standby(100), now);
        t.probe_succeeded(2, &primary(3, 300), now);
        assert_eq!(t.primary(), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_primary_claim_is_confirmed_before_split_brain_is_reported() {
        let (mut t, _) = healthy();
        tokio::time::advance(Duration::from_millis(500)).await;
        // Node 1 was promoted; node 0's claim is from before (it may be dead).
        let change = t.probe_succeeded(1, &primary(2, 150), Instant::now());
        assert_eq!(
            kinds(&change),
            ["PrimaryLost", "PrimaryElected", "FailoverCompleted"]
        );
        assert!(change.reprobe, "the old claim is re-checked at once");
        assert_eq!(t.primary(), Some(1), "writes move to the higher timeline");
        // Confirmed by a fresh probe: now it is split brain.
        tokio::time::advance(Duration::from_millis(10)).await;
        let change = t.probe_succeeded(0, &primary(1, 100), Instant::now());
        assert_eq!(kinds(&change), ["SplitBrain"]);

        // The same, but the old primary turns out dead: no split brain.
        let (mut t, _) = healthy();
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(
            t.probe_succeeded(1, &primary(2, 150), Instant::now())
                .reprobe
        );
        let change = t.probe_failed(0, "refused".into(), Instant::now());
        assert!(kinds(&change).is_empty());
        assert!(!change.reprobe);
    }

    #[tokio::test(start_paused = true)]
    async fn read_only_answer_demotes_at_once() {
        let (mut t, now) = healthy();
        let generation = t.generation();
        let change = t.read_only(0, now);
        assert_eq!(kinds(&change), ["PrimaryLost"]);
        assert_eq!(change.evict, [0]);
        assert_eq!(t.primary(), None);
        assert!(t.generation() > generation);
        assert!(
            !t.view().readable.contains(&0),
            "not read from until probed"
        );
        // A second 25006 from the same node changes nothing.
        assert_eq!(t.read_only(0, now), Change::default());
        // The probe finds the real primary.
        let change = t.probe_succeeded(1, &primary(2, 500), now);
        assert_eq!(kinds(&change), ["PrimaryElected", "FailoverCompleted"]);
    }

    #[tokio::test(start_paused = true)]
    async fn lag_in_bytes_and_time_excludes_and_readmits_a_replica() {
        let (mut t, _) = healthy();
        // The primary moves on by 400 bytes a second; replica 2 keeps up,
        // replica 1 is stuck at 100.
        let mut events = Vec::new();
        for step in 1..=3u64 {
            tokio::time::advance(Duration::from_secs(1)).await;
            let now = Instant::now();
            events.extend(
                t.probe_succeeded(0, &primary(1, 100 + step * 400), now)
                    .events,
            );
            events.extend(t.probe_succeeded(2, &standby(100 + step * 400), now).events);
        }
        assert_eq!(
            events,
            [Event::LagExceeded {
                node: NodeId(1),
                lag_bytes: Some(1200),
                // The first position past its replay was seen 2 s ago.
                lag: Some(Duration::from_secs(2)),
            }]
        );
        assert_eq!(t.view().readable, [2]);
        let change = t.probe_succeeded(1, &standby(1300), Instant::now());
        assert_eq!(kinds(&change), ["LagRecovered"]);
        assert_eq!(t.view().readable, [1, 2]);

        // The time bound alone: 800 bytes behind is fine, 6 s is not.
        t.probe_succeeded(1, &standby(500), Instant::now());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(kinds(&t.probe_succeeded(1, &standby(500), Instant::now())).is_empty());
        assert_eq!(t.nodes()[1].lag, Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(1)).await;
        let change = t.probe_succeeded(1, &standby(500), Instant::now());
        assert_eq!(kinds(&change), ["LagExceeded"]);
        assert_eq!(t.nodes()[1].lag_bytes, Some(800));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_primary_does_not_make_replicas_late() {
        let (mut t, _) = healthy();
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = Instant::now();
        t.probe_succeeded(0, &primary(1, 100), now);
        t.probe_succeeded(1, &standby(100), now);
        assert_eq!(t.nodes()[1].lag, Some(Duration::ZERO));
        assert_eq!(t.view().readable, [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn lag_history_restarts_with_a_new_primary() {
        let (mut t, _) = healthy();
        // The old primary runs far ahead of replica 1, which is lagging.
        for step in 1..=3u64 {
            tokio::time::advance(Duration::from_secs(1)).await;
            let now = Instant::now();
            t.probe_succeeded(0, &primary(1, 10_000 * step), now);
            t.probe_succeeded(2, &standby(10_000 * step), now);
        }
        // Failover: node 2 is promoted on timeline 2 and its new timeline
        // branches below the old head (30 000); replica 1 follows it and
        // looks far behind as long as the old head counts.
        t.probe_failed(0, "refused".into(), Instant::now());
        t.probe_succeeded(1, &standby(5_000), Instant::now());
        assert!(t.nodes()[1].lagging);
        let change = t.probe_succeeded(2, &primary(2, 5_000), Instant::now());
        assert!(kinds(&change).contains(&"PrimaryElected"));
        assert!(kinds(&change).contains(&"LagRecovered"));
        // The new primary moves on slowly and replica 1 keeps up: it stays
        // readable however long it runs (the old head no longer counts).
        for step in 1..=30u64 {
            tokio::time::advance(Duration::from_secs(1)).await;
            let now = Instant::now();
            let change = t.probe_succeeded(2, &primary(2, 5_000 + step * 10), now);
            assert!(kinds(&change).is_empty(), "{change:?}");
            let change = t.probe_succeeded(1, &standby(5_000 + step * 10), now);
            assert!(kinds(&change).is_empty(), "{change:?}");
            assert_eq!(t.nodes()[1].lag, Some(Duration::ZERO));
            assert_eq!(t.view().readable, [1]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_whose_first_probe_failed_counts_as_probed() {
        let now = Instant::now();
        let mut t = Topology::new(2, RULES);
        t.probe_succeeded(0, &primary(1, 50), now);
        assert!(!t.view().settled);
        t.probe_failed(1, "refused".into(), now);
        assert!(t.view().settled, "one failed attempt is enough to settle");
        assert_eq!(t.nodes()[1].up, None, "not down before the threshold");
    }

    #[tokio::test(start_paused = true)]
    async fn node_coming_back_is_up_again_and_generation_moves() {
        let (mut t, now) = healthy();
        for _ in 0..3 {
            t.probe_failed(2, "timeout".into(), now);
        }
        assert_eq!(t.view().readable, [1]);
        let generation = t.generation();
        let change = t.probe_succeeded(2, &standby(100), now);
        assert_eq!(kinds(&change), ["NodeUp"]);
        assert!(t.generation() > generation);
        assert_eq!(t.view().readable, [1, 2]);
    }

    /// Starts a probe of `node` now and returns its start.
    fn start(t: &mut Topology, node: usize, events: &mut Vec<Event>) -> Instant {
        let now = Instant::now();
        events.extend(t.probe_started(node, now).events);
        now
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_primary_is_down_once_down_after_passed_with_two_probes_unanswered() {
        let (mut t, _) = healthy();
        let mut events = Vec::new();
        // The primary froze: probes every 200 ms, none answered.
        let first = start(&mut t, 0, &mut events);
        assert_eq!(t.silence_deadline(0), None, "one probe is not enough");
        tokio::time::advance(Duration::from_millis(200)).await;
        start(&mut t, 0, &mut events);
        assert_eq!(
            t.silence_deadline(0),
            Some(first + Duration::from_millis(600)),
            "counted from the first unanswered probe"
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        start(&mut t, 0, &mut events);
        tokio::time::advance(Duration::from_millis(100)).await;
        // The first probe timed out: one failure, not down yet.
        events.extend(
            t.probe_finished(0, first, Err("probe timed out".into()), Instant::now())
                .events,
        );
        tokio::time::advance(Duration::from_millis(99)).await;
        events.extend(t.check_silence(0, Instant::now()).events);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(t.primary(), Some(0));

        tokio::time::advance(Duration::from_millis(1)).await;
        let change = t.check_silence(0, Instant::now());
        assert_eq!(kinds(&change), ["NodeDown", "PrimaryLost"]);
        assert_eq!(change.evict, [0]);
        assert!(change.reprobe);
        match &change.events[0] {
            Event::NodeDown { node, error } => {
                assert_eq!(*node, NodeId(0));
                assert!(error.contains("600 ms (3 unanswered)"), "{error}");
                assert!(error.contains("probe timed out"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.silence_deadline(0), None, "down once");
        assert!(t.check_silence(0, Instant::now()).events.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_stuck_probe_is_not_enough() {
        let (mut t, _) = healthy();
        let mut events = Vec::new();
        // A replica probed every second; its probe hangs far past
        // `down_after` without a second probe starting.
        start(&mut t, 1, &mut events);
        tokio::time::advance(Duration::from_secs(5)).await;
        events.extend(t.check_silence(1, Instant::now()).events);
        assert!(events.is_empty(), "{events:?}");
        // A second probe, on a fresh connection, gets half of `down_after`
        // to answer.
        let second = start(&mut t, 1, &mut events);
        assert_eq!(
            t.silence_deadline(1),
            Some(second + Duration::from_millis(300))
        );
        tokio::time::advance(Duration::from_millis(299)).await;
        events.extend(t.check_silence(1, Instant::now()).events);
        assert!(events.is_empty(), "{events:?}");
        tokio::time::advance(Duration::from_millis(1)).await;
        let change = t.check_silence(1, Instant::now());
        assert_eq!(kinds(&change), ["NodeDown"]);
        assert_eq!(t.view().readable, [2]);

        // Answered in time instead: the silence ends.
        let (mut t, _) = healthy();
        start(&mut t, 1, &mut events);
        tokio::time::advance(Duration::from_secs(5)).await;
        let second = start(&mut t, 1, &mut events);
        tokio::time::advance(Duration::from_millis(250)).await;
        events.extend(
            t.probe_finished(1, second, Ok(standby(100)), Instant::now())
                .events,
        );
        assert_eq!(t.silence_deadline(1), None);
        tokio::time::advance(Duration::from_secs(5)).await;
        events.extend(t.check_silence(1, Instant::now()).events);
        assert!(events.is_empty(), "{events:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_answering_primary_is_never_down() {
        let (mut t, _) = healthy();
        let mut events = Vec::new();
        // Probes every 200 ms, each answered after 450 ms (three overlap),
        // for a minute; the silence is checked every 10 ms.
        let mut in_flight = VecDeque::new();
        for tick in 0..6_000u64 {
            if tick % 20 == 0 {
                in_flight.push_back(start(&mut t, 0, &mut events));
            }
            while let Some(&started) = in_flight.front() {
                if Instant::now() < started + Duration::from_millis(450) {
                    break;
                }
                in_flight.pop_front();
                let report = primary(1, 100);
                events.extend(
                    t.probe_finished(0, started, Ok(report), Instant::now())
                        .events,
                );
            }
            events.extend(t.check_silence(0, Instant::now()).events);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(t.primary(), Some(0));
        assert!(t.nodes()[0].up == Some(true) && t.nodes()[0].reachable);
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_probe_finishing_after_a_newer_one_is_stale() {
        let (mut t, _) = healthy();
        let mut events = Vec::new();
        // A probe stuck on a broken connection, then one on a fresh
        // connection that is answered.
        let stuck = start(&mut t, 0, &mut events);
        tokio::time::advance(Duration::from_millis(200)).await;
        let fresh = start(&mut t, 0, &mut events);
        tokio::time::advance(Duration::from_millis(1)).await;
        events.extend(
            t.probe_finished(0, fresh, Ok(primary(1, 200)), Instant::now())
                .events,
        );
        tokio::time::advance(Duration::from_millis(299)).await;
        let change = t.probe_finished(0, stuck, Err("probe timed out".into()), Instant::now());
        events.extend(change.events);
        assert!(events.is_empty(), "{events:?}");
        let state = &t.nodes()[0];
        assert_eq!(state.failures, 0, "the stale failure is not counted");
        assert!(state.reachable);
        assert_eq!(state.last_error, None);
        assert_eq!(t.silence_deadline(0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn without_down_after_only_failures_count() {
        let rules = Rules {
            down_after: None,
            ..RULES
        };
        let now = Instant::now();
        let mut t = Topology::new(1, rules);
        t.probe_succeeded(0, &primary(1, 100), now);
        let mut events = Vec::new();
        for _ in 0..10 {
            start(&mut t, 0, &mut events);
            tokio::time::advance(Duration::from_secs(1)).await;
            events.extend(t.check_silence(0, Instant::now()).events);
        }
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(t.silence_deadline(0), None);
    }
}
