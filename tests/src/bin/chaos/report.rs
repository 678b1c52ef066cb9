//! The report: one row per fault (and one for the time between faults),
//! what the audit found, and the last line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use crate::audit::{Findings, GRACE};
use crate::faults::Window;
use crate::workload::{Answer, Ledger, OpKind, Sample};

/// How many of each finding are listed.
const LISTED: usize = 20;

/// Requests by outcome, their latencies, and when writes worked again.
#[derive(Default)]
struct Phase {
    ok: usize,
    queued: usize,
    client_error: usize,
    unavailable: usize,
    other_5xx: usize,
    no_answer: usize,
    latencies: Vec<Duration>,
}

impl Phase {
    fn add(&mut self, sample: &Sample) {
        match &sample.answer {
            Answer::Status { status: 202, .. } => self.queued += 1,
            Answer::Status { status: 503, .. } => self.unavailable += 1,
            Answer::Status { status, .. } if *status >= 500 => self.other_5xx += 1,
            Answer::Status { status, .. } if *status >= 400 => self.client_error += 1,
            Answer::Status { .. } => self.ok += 1,
            Answer::Transport => self.no_answer += 1,
        }
        self.latencies.push(sample.latency);
    }

    /// The counts and p50/p99 as table cells.
    fn cells(&mut self) -> String {
        self.latencies.sort_unstable();
        format!(
            "{} | {} | {} | {} | {} | {} | {} | {}",
            self.ok,
            self.queued,
            self.client_error,
            self.unavailable,
            self.other_5xx,
            self.no_answer,
            self.percentile(0.5),
            self.percentile(0.99),
        )
    }

    /// Of the sorted latencies.
    fn percentile(&self, p: f64) -> String {
        if self.latencies.is_empty() {
            return "-".into();
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        format!("{:.1}", self.latencies[i].as_secs_f64() * 1000.0)
    }
}

/// Whether a write's answer acknowledged it (done or queued).
fn acknowledged(sample: &Sample) -> bool {
    matches!(sample.answer.status(), Some(200..=202))
}

/// From the fault's start to the first acknowledged write sent after the
/// last write that was not (0 when no write failed).
fn writes_again(window: &Window, samples: &[Sample]) -> String {
    let end = window.recovered + GRACE;
    let writes: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.kind.is_write() && s.sent >= window.start)
        .collect();
    let Some(last_failed) = writes
        .iter()
        .filter(|s| s.sent <= end && !acknowledged(s))
        .map(|s| s.sent)
        .max()
    else {
        return "0.0 (none failed)".into();
    };
    match writes
        .iter()
        .filter(|s| s.sent > last_failed && acknowledged(s))
        .map(|s| s.sent + s.latency)
        .min()
    {
        Some(at) => format!("{:.1}", at.saturating_sub(window.start).as_secs_f64()),
        None => "never".into(),
    }
}

/// The whole report; its last line is the summary.
pub(crate) fn render(ledger: &Ledger, windows: &[Window], findings: &Findings) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n| fault | target | window (s) | 2xx | 202 | 4xx | 503 | other 5xx | no answer | p50 ms | p99 ms | writes ok after (s) |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut steady = Phase::default();
    let mut phases: Vec<Phase> = windows.iter().map(|_| Phase::default()).collect();
    for sample in &ledger.samples {
        let end = sample.sent + sample.latency;
        match windows
            .iter()
            .position(|w| sample.sent <= w.recovered && end >= w.start)
        {
            Some(i) => phases[i].add(sample),
            None => steady.add(sample),
        }
    }
    for (window, phase) in windows.iter().zip(&mut phases) {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1}-{:.1} (healed {:.1}) | {} | {} |",
            window.kind,
            window.target,
            window.start.as_secs_f64(),
            window.recovered.as_secs_f64(),
            window.healed.as_secs_f64(),
            phase.cells(),
            writes_again(window, &ledger.samples),
        );
    }
    let _ = writeln!(out, "| (no fault) | - | - | {} | - |", steady.cells());
    let mut errors: BTreeMap<(u16, String, OpKind), usize> = BTreeMap::new();
    for sample in &ledger.samples {
        if let Answer::Status { status, error, .. } = &sample.answer
            && *status >= 400
        {
            let code = error.clone().unwrap_or_else(|| "-".into());
            *errors.entry((*status, code, sample.kind)).or_default() += 1;
        }
    }
    let errors: Vec<String> = errors
        .iter()
        .map(|((status, code, kind), n)| format!("{status} {code} to {kind:?}: {n}"))
        .collect();
    let _ = writeln!(out, "\nerror answers: {}", errors.join(", "));
    let mut queued_for = ledger.queued_for.clone();
    queued_for.sort_unstable();
    if let Some(max) = queued_for.last() {
        let at = |p: f64| queued_for[((queued_for.len() - 1) as f64 * p).round() as usize];
        let _ = writeln!(
            out,
            "queued writes, 202 -> seen finished: p50 {:.1} s, p99 {:.1} s, max {:.1} s ({} followed)",
            at(0.5).as_secs_f64(),
            at(0.99).as_secs_f64(),
            max.as_secs_f64(),
            queued_for.len()
        );
    }
    let kinds: BTreeSet<_> = windows.iter().map(|w| w.kind).collect();
    let _ = writeln!(
        out,
        "requests {}, writes {}, shed by the generator {}, queued writes failed (reason at their status) {}, kinds of fault {} ({})",
        ledger.samples.len(),
        ledger.writes.len(),
        ledger.shed,
        findings.queued_failed,
        kinds.len(),
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", "),
    );
    for (what, list) in [
        ("lost", &findings.lost),
        ("duplicated", &findings.duplicated),
        ("unexplained 5xx", &findings.unexplained),
    ] {
        for line in list.iter().take(LISTED) {
            let _ = writeln!(out, "{what}: {line}");
        }
        if list.len() > LISTED {
            let _ = writeln!(out, "{what}: ... and {} more", list.len() - LISTED);
        }
    }
    let _ = writeln!(
        out,
        "chaos: faults={} acknowledged={} queued={} lost={} duplicated={} unexplained_5xx={}",
        windows.len(),
        findings.acknowledged,
        findings.queued,
        findings.lost.len(),
        findings.duplicated.len(),
        findings.unexplained.len(),
    );
    out
}
