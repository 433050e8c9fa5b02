//! What a phase saw, and the table the run ends with.

use crate::check::Kept;
use crate::load::Ledger;
use std::fmt::Write as _;
use std::time::Duration;

/// One phase's counts, notes and broken invariants.
#[derive(Debug, Default)]
pub struct PhaseReport {
    /// `sqlite kill -9`, `postgres outage`, `disk full`.
    pub name: String,
    /// Kills, outages or fills.
    pub rounds: usize,
    /// Runs the server created.
    pub runs: usize,
    /// Runs by final status (`successful=12 error=3`).
    pub statuses: String,
    /// Webhook deliveries acknowledged.
    pub events_acked: usize,
    /// Of those, stored.
    pub events_stored: usize,
    /// Runs left `queued` or `running`.
    pub stuck: usize,
    /// Processes of runs left behind.
    pub orphans: usize,
    /// Wall time.
    pub time: Duration,
    /// What is worth knowing but breaks nothing.
    pub notes: Vec<String>,
    /// Broken invariants: any makes the script fail.
    pub failures: Vec<String>,
    /// Set when the phase could not run here (and why).
    pub skipped: Option<String>,
}

impl PhaseReport {
    /// An empty report for `name`.
    pub fn new(name: &str) -> PhaseReport {
        PhaseReport {
            name: name.to_owned(),
            ..Default::default()
        }
    }

    /// Records `fail` when `broken`.
    pub fn expect(&mut self, ok: bool, fail: impl FnOnce() -> String) {
        if !ok {
            let f = fail();
            println!("  BROKEN: {f}");
            self.failures.push(f);
        }
    }

    /// A note, printed as it is taken.
    pub fn note(&mut self, note: String) {
        println!("  {note}");
        self.notes.push(note);
    }

    /// Takes the final comparison in, checking the invariants it covers.
    pub fn absorb(&mut self, kept: &Kept, ledger: &Ledger) {
        self.runs = kept.by_status.values().sum();
        self.statuses = kept
            .by_status
            .iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        self.events_acked = ledger.acked_events.len();
        self.events_stored = kept.events_stored;
        self.stuck = kept.stuck.len();
        self.note(format!(
            "runs: {} ({}); webhook deliveries: {} acknowledged, {} not, {} records stored; refused: {:?}; no answer: {}",
            self.runs,
            self.statuses,
            ledger.acked_events.len(),
            ledger.unacked_events,
            kept.events_recorded,
            ledger.refused,
            ledger.no_answer
        ));
        self.expect(kept.events_lost.is_empty(), || {
            format!(
                "{} acknowledged events not stored: {:?}",
                kept.events_lost.len(),
                kept.events_lost.iter().take(10).collect::<Vec<_>>()
            )
        });
        self.expect(kept.runs_lost.is_empty(), || {
            format!("runs the server created are gone: {:?}", kept.runs_lost)
        });
        self.expect(kept.stuck.is_empty(), || {
            format!("runs stuck queued/running: {:?}", kept.stuck)
        });
        self.expect(kept.unexplained.is_empty(), || {
            format!("runs in error without a reason: {:?}", kept.unexplained)
        });
        self.expect(ledger.bad.is_empty(), || {
            format!("answers that are no clear error: {:?}", ledger.bad)
        });
    }
}

/// The results as a Markdown table (what docs/reliability.md shows).
pub fn table(seed: u64, reports: &[PhaseReport]) -> String {
    let mut s = format!(
        "seed {seed}\n\n| phase | rounds | runs (final status) | events acked / stored | stuck | orphans | time | result |\n|---|---|---|---|---|---|---|---|\n"
    );
    for r in reports {
        let result = match (&r.skipped, r.failures.len()) {
            (Some(why), _) => format!("skipped: {why}"),
            (None, 0) => "ok".to_owned(),
            (None, n) => format!("{n} broken"),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} ({}) | {} / {} | {} | {} | {:.0} s | {} |",
            r.name,
            r.rounds,
            r.runs,
            r.statuses,
            r.events_acked,
            r.events_stored,
            r.stuck,
            r.orphans,
            r.time.as_secs_f64(),
            result
        );
    }
    s
}
