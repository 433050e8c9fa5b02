//! The seven scenarios of the benchmark issue, the event path (8), flows (9), scale-out over
//! remote workers (10), retention (11), the web UI (12) and event-driven runs against
//! ansible-rulebook (13).

mod api;
mod eventdriven;
mod events;
mod fanout;
mod flows;
mod footprint;
mod ingest;
mod launch;
mod overhead;
mod retention;
mod scaleout;
mod slices;
mod ui;

use crate::ctx::Ctx;
use crate::report::Metric;
use crate::stats::Summary;
use std::path::Path;

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Overhead,
    Launch,
    Ingest,
    Fanout,
    Api,
    Footprint,
    Slices,
    Events,
    Flows,
    Scaleout,
    Retention,
    Ui,
    EventDriven,
}

impl Scenario {
    /// In the order they run.
    pub const ALL: [Scenario; 13] = [
        Scenario::Overhead,
        Scenario::Launch,
        Scenario::Ingest,
        Scenario::Fanout,
        Scenario::Api,
        Scenario::Footprint,
        Scenario::Slices,
        Scenario::Events,
        Scenario::Flows,
        Scenario::Scaleout,
        Scenario::Retention,
        Scenario::Ui,
        Scenario::EventDriven,
    ];

    /// Its name in the table.
    pub fn title(self) -> &'static str {
        match self {
            Scenario::Overhead => "1 overhead",
            Scenario::Launch => "2 launch",
            Scenario::Ingest => "3 ingest",
            Scenario::Fanout => "4 fanout",
            Scenario::Api => "5 api",
            Scenario::Footprint => "6 footprint",
            Scenario::Slices => "7 slices",
            Scenario::Events => "8 events",
            Scenario::Flows => "9 flows",
            Scenario::Scaleout => "10 scaleout",
            Scenario::Retention => "11 retention",
            Scenario::Ui => "12 ui",
            Scenario::EventDriven => "13 eventdriven",
        }
    }
}

/// Runs one scenario, adding its rows to `ctx`. Overhead, ingest, scaleout and retention run
/// once (the first three repeat their runs themselves) (interleaved, or on one server); every other scenario is run `ctx.reps` times,
/// each time on a fresh server.
pub async fn run(s: Scenario, ctx: &mut Ctx) -> anyhow::Result<()> {
    if matches!(
        s,
        Scenario::Overhead | Scenario::Ingest | Scenario::Scaleout | Scenario::Retention
    ) {
        once(s, ctx).await
    } else {
        repeated(s, ctx).await
    }
}

async fn once(s: Scenario, ctx: &mut Ctx) -> anyhow::Result<()> {
    match s {
        Scenario::Overhead => overhead::run(ctx).await,
        Scenario::Launch => launch::run(ctx).await,
        Scenario::Ingest => ingest::run(ctx).await,
        Scenario::Fanout => fanout::run(ctx).await,
        Scenario::Api => api::run(ctx).await,
        Scenario::Footprint => footprint::run(ctx).await,
        Scenario::Events => events::run(ctx).await,
        Scenario::Slices => slices::run(ctx).await,
        Scenario::Flows => flows::run(ctx).await,
        Scenario::Scaleout => scaleout::run(ctx).await,
        Scenario::Retention => retention::run(ctx).await,
        Scenario::Ui => ui::run(ctx).await,
        Scenario::EventDriven => eventdriven::run(ctx).await,
    }
}

/// Runs `s` `ctx.reps` times. The rows each repetition made become one row each: the median
/// over the repetitions with their min–max, and the note of the repetition at the median. The
/// raw details of each repetition are kept in order.
async fn repeated(s: Scenario, ctx: &mut Ctx) -> anyhow::Result<()> {
    let reps = ctx.reps;
    let mut rows = Vec::new();
    let mut details: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    for rep in 1..=reps {
        if reps > 1 {
            println!("  repetition {rep} of {reps}");
        }
        let earlier_rows = std::mem::take(&mut ctx.metrics);
        let earlier_details = std::mem::take(&mut ctx.details);
        let outcome = once(s, ctx).await;
        rows.push(std::mem::replace(&mut ctx.metrics, earlier_rows));
        for (key, value) in std::mem::replace(&mut ctx.details, earlier_details) {
            if reps == 1 {
                details.insert(key, value);
            } else if let serde_json::Value::Array(list) = details
                .entry(key)
                .or_insert_with(|| serde_json::Value::Array(Vec::new()))
            {
                list.push(value);
            }
        }
        outcome?;
    }
    ctx.metrics.extend(combine(rows));
    ctx.details.extend(details);
    Ok(())
}

/// One row per (scenario, metric) over the repetitions' rows, in the order they first came.
fn combine(reps: Vec<Vec<Metric>>) -> Vec<Metric> {
    if reps.len() == 1 {
        return reps.into_iter().flatten().collect();
    }
    let mut groups: Vec<Vec<Metric>> = Vec::new();
    for m in reps.into_iter().flatten() {
        match groups
            .iter_mut()
            .find(|g| g[0].scenario == m.scenario && g[0].name == m.name)
        {
            Some(g) => g.push(m),
            None => groups.push(vec![m]),
        }
    }
    groups
        .into_iter()
        .map(|mut group| {
            let valued: Vec<(usize, f64)> = group
                .iter()
                .enumerate()
                .filter_map(|(i, m)| m.value.filter(|v| v.is_finite()).map(|v| (i, v)))
                .collect();
            let values: Vec<f64> = valued.iter().map(|&(_, v)| v).collect();
            let Some(summary) = Summary::of(&values) else {
                // Skipped every time: the first repetition's row says why.
                return group.swap_remove(0);
            };
            // The repetition at the median (the lower middle one for an even count) lends
            // its note, so the note describes the value shown.
            let mut order = valued;
            order.sort_by(|a, b| a.1.total_cmp(&b.1));
            let middle = group.swap_remove(order[(order.len() - 1) / 2].0);
            Metric {
                note: middle.note,
                target: middle.target,
                ..Metric::summary(&middle.scenario, &middle.name, &summary)
            }
        })
        .collect()
}

/// An INI inventory of `n` hosts that run locally with ansible's own Python.
pub fn local_hosts(n: usize) -> String {
    let mut s = String::from("[all]\n");
    for i in 1..=n {
        s.push_str(&format!("h{i}\n"));
    }
    s.push_str("[all:vars]\nansible_connection=local\nansible_python_interpreter={{ ansible_playbook_python }}\n");
    s
}

/// Writes the files of a project directory.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    for (name, text) in files {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// A fresh server whose ansible-playbook is the synthetic producer, with one project
/// (`NAME-project`, data in `NAME-data`) holding `bench.yml`; the server and the project's id.
pub async fn synthetic_server(
    ctx: &Ctx,
    name: &str,
    max_concurrent_runs: usize,
) -> anyhow::Result<(crate::server::Server, i64)> {
    let project = ctx.dir(&format!("{name}-project"))?;
    write_files(&project, &[("bench.yml", SYNTHETIC_PLAYBOOK)])?;
    let producer = crate::producer::write_wrapper(ctx.tmp.path(), &ctx.exe)?;
    let server = crate::server::Server::start(&crate::server::ServerOpts {
        troupe: ctx.troupe.clone(),
        data_dir: ctx.dir(&format!("{name}-data"))?,
        database_url: None,
        max_concurrent_runs,
        ansible_playbook: Some(producer),
    })?;
    let pid = server.project(&project).await?;
    Ok((server, pid))
}

/// The playbook file every synthetic run names (the producer never reads it, troupe checks it
/// exists inside the project).
pub const SYNTHETIC_PLAYBOOK: &str = "- hosts: all\n  gather_facts: false\n  tasks: []\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Target;

    fn row(name: &str, value: Option<f64>, note: &str) -> Metric {
        let m = match value {
            Some(v) => Metric::value("2 launch", name, v).target(Target::AtMost(20.0)),
            None => Metric::skipped("2 launch", "no server"),
        };
        Metric {
            name: name.to_owned(),
            ..m.note(note)
        }
    }

    #[test]
    fn repetitions_become_one_row_each_with_the_median_repetitions_note() {
        let reps = vec![
            vec![
                row("p99 ms", Some(30.0), "first"),
                row("rate", Some(5.0), ""),
            ],
            vec![
                row("p99 ms", Some(10.0), "second"),
                row("rate", Some(7.0), ""),
            ],
            vec![
                row("p99 ms", Some(20.0), "third"),
                row("rate", Some(6.0), ""),
            ],
        ];
        let rows = combine(reps);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "p99 ms");
        assert_eq!(rows[0].value, Some(20.0));
        assert_eq!(rows[0].note.as_deref(), Some("third"));
        assert_eq!(rows[0].target, Some(Target::AtMost(20.0)));
        let spread = rows[0].spread.clone().unwrap_or_default();
        assert!(spread.contains("10") && spread.contains("30"), "{spread}");
        assert_eq!(rows[1].name, "rate");
        assert_eq!(rows[1].value, Some(6.0));
    }

    #[test]
    fn a_repetition_without_a_value_does_not_count() {
        let reps = vec![
            vec![row("p99 ms", None, "why")],
            vec![row("p99 ms", Some(4.0), "only")],
        ];
        let rows = combine(reps);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].value, Some(4.0));
        assert_eq!(rows[0].note.as_deref(), Some("only"));

        let skipped = combine(vec![
            vec![row("p99 ms", None, "why")],
            vec![row("p99 ms", None, "again")],
        ]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].value, None);
        assert_eq!(skipped[0].note.as_deref(), Some("why"));
    }

    #[test]
    fn one_repetition_is_kept_as_it_came() {
        let rows = combine(vec![vec![
            row("p99 ms", Some(4.0), "n").spread_text("max 4.1 (n=50)"),
        ]]);
        assert_eq!(rows[0].spread.as_deref(), Some("max 4.1 (n=50)"));
    }
}
