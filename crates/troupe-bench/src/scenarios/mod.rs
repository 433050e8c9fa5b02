//! The seven scenarios of the benchmark issue, and the event path (8).

mod api;
mod events;
mod fanout;
mod footprint;
mod ingest;
mod launch;
mod overhead;
mod slices;

use crate::ctx::Ctx;
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
}

impl Scenario {
    /// In the order they run.
    pub const ALL: [Scenario; 8] = [
        Scenario::Overhead,
        Scenario::Launch,
        Scenario::Ingest,
        Scenario::Fanout,
        Scenario::Api,
        Scenario::Footprint,
        Scenario::Slices,
        Scenario::Events,
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
        }
    }
}

/// Runs one scenario, adding its rows to `ctx`.
pub async fn run(s: Scenario, ctx: &mut Ctx) -> anyhow::Result<()> {
    match s {
        Scenario::Overhead => overhead::run(ctx).await,
        Scenario::Launch => launch::run(ctx).await,
        Scenario::Ingest => ingest::run(ctx).await,
        Scenario::Fanout => fanout::run(ctx).await,
        Scenario::Api => api::run(ctx).await,
        Scenario::Footprint => footprint::run(ctx).await,
        Scenario::Events => events::run(ctx).await,
        Scenario::Slices => slices::run(ctx).await,
    }
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

/// The playbook file every synthetic run names (the producer never reads it, troupe checks it
/// exists inside the project).
pub const SYNTHETIC_PLAYBOOK: &str = "- hosts: all\n  gather_facts: false\n  tasks: []\n";
