//! Results: the metric rows every scenario produces, the machine they ran on, and the files
//! written from them (`BENCHMARKS.md`, `benchmarks.json`).

use crate::stats::{Summary, fmt_num};
use crate::table;
use serde::Serialize;
use std::path::Path;
use std::process::Command;

/// A goal a metric is held to (reported, never asserted).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The value must not exceed this.
    AtMost(f64),
    /// The value must reach at least this.
    AtLeast(f64),
}

impl Target {
    fn met(self, v: f64) -> bool {
        match self {
            Target::AtMost(t) => v <= t,
            Target::AtLeast(t) => v >= t,
        }
    }

    fn describe(self) -> String {
        match self {
            Target::AtMost(t) => format!("≤ {}", fmt_num(t)),
            Target::AtLeast(t) => format!("≥ {}", fmt_num(t)),
        }
    }
}

/// One line of the results table.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    /// The scenario, e.g. `3 ingest (sqlite)`.
    pub scenario: String,
    /// What was measured, with its unit, e.g. `events/s`.
    pub name: String,
    /// The median (or the single value); `None` for a skipped measurement.
    pub value: Option<f64>,
    /// Spread over the repetitions, when there were several.
    pub spread: Option<String>,
    /// The target from the benchmark issue, if any.
    pub target: Option<Target>,
    /// Anything a reader must know to read the number.
    pub note: Option<String>,
}

impl Metric {
    /// A single value.
    pub fn value(scenario: &str, name: &str, value: f64) -> Metric {
        Metric {
            scenario: scenario.to_owned(),
            name: name.to_owned(),
            value: Some(value),
            spread: None,
            target: None,
            note: None,
        }
    }

    /// The median of repeated samples, with their spread.
    pub fn summary(scenario: &str, name: &str, s: &Summary) -> Metric {
        Metric {
            spread: (s.n > 1).then(|| s.spread()),
            ..Metric::value(scenario, name, s.median)
        }
    }

    /// A measurement that could not be made, and why.
    pub fn skipped(scenario: &str, why: &str) -> Metric {
        Metric {
            scenario: scenario.to_owned(),
            name: "skipped".to_owned(),
            value: None,
            spread: None,
            target: None,
            note: Some(why.to_owned()),
        }
    }

    /// With a target.
    pub fn target(mut self, t: Target) -> Metric {
        self.target = Some(t);
        self
    }

    /// With a note.
    pub fn note(mut self, n: impl Into<String>) -> Metric {
        let n = n.into();
        self.note = (!n.is_empty()).then_some(n);
        self
    }

    /// With an explicit spread text.
    pub fn spread_text(mut self, s: impl Into<String>) -> Metric {
        self.spread = Some(s.into());
        self
    }

    fn verdict(&self) -> String {
        match (self.target, self.value) {
            (Some(t), Some(v)) if t.met(v) => "met".into(),
            (Some(_), Some(_)) => "MISSED".into(),
            _ => String::new(),
        }
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.scenario.clone(),
            self.name.clone(),
            self.value.map(fmt_num).unwrap_or_else(|| "-".into()),
            self.spread.clone().unwrap_or_default(),
            self.target.map(Target::describe).unwrap_or_default(),
            self.verdict(),
            self.note.clone().unwrap_or_default(),
        ]
    }
}

const HEADERS: [&str; 7] = [
    "scenario",
    "metric",
    "median",
    "spread (min–max)",
    "target",
    "",
    "note",
];

/// The results table for a terminal.
pub fn text_table(metrics: &[Metric]) -> String {
    let rows: Vec<Vec<String>> = metrics.iter().map(Metric::cells).collect();
    table::render_text(&HEADERS, &rows)
}

/// Where the numbers came from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs available (`nproc`).
    pub nproc: usize,
    /// MemTotal from /proc/meminfo, in MiB.
    pub memory_mib: u64,
    /// CPU model name.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// `ansible-playbook --version`'s first line, if found.
    pub ansible: Option<String>,
    /// `ansible-runner --version`, if found.
    pub ansible_runner: Option<String>,
    /// The troupe binary measured.
    pub troupe_binary: String,
    /// The repository's commit (with `-dirty` when the tree had changes).
    pub commit: Option<String>,
    /// /proc/loadavg when the harness started: how busy the shared machine already was.
    pub loadavg_at_start: String,
    /// When the harness started (UTC).
    pub started_at: String,
}

impl Machine {
    /// Looks at this machine.
    pub fn detect(troupe: &Path, repo: &Path) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb / 1024)
            .unwrap_or(0);
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let commit = command_line(
            "git",
            &[
                "-C",
                &repo.to_string_lossy(),
                "rev-parse",
                "--short",
                "HEAD",
            ],
        )
        .map(|c| {
            let dirty = Command::new("git")
                .args(["-C", &repo.to_string_lossy(), "status", "--porcelain"])
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false);
            if dirty { format!("{c}-dirty") } else { c }
        });
        Machine {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_mib,
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            ansible: command_line("ansible-playbook", &["--version"]),
            ansible_runner: command_line("ansible-runner", &["--version"]),
            troupe_binary: troupe.display().to_string(),
            commit,
            loadavg_at_start: read("/proc/loadavg").trim().to_owned(),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    fn markdown(&self) -> String {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "not found on PATH".into());
        format!(
            "- CPUs (`nproc`): {}\n- memory: {} MiB\n- CPU: {}\n- kernel: {}\n- ansible: {}\n\
             - ansible-runner: {}\n- troupe: `{}` at commit {}\n- load average at start: {}\n\
             - started: {}\n",
            self.nproc,
            self.memory_mib,
            self.cpu_model,
            self.kernel,
            opt(&self.ansible),
            opt(&self.ansible_runner),
            self.troupe_binary,
            self.commit.clone().unwrap_or_else(|| "unknown".into()),
            self.loadavg_at_start,
            self.started_at
        )
    }
}

/// The first line a command prints, if it runs.
pub fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_owned())
}

/// Everything one invocation of the harness produced.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// The command line that produced these numbers.
    pub command: String,
    /// `--quick` or the full repetitions.
    pub quick: bool,
    /// The table rows.
    pub metrics: Vec<Metric>,
    /// Per-scenario details (raw samples, settings), for the JSON file.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    /// Writes `BENCHMARKS.md` and `benchmarks.json` into `dir`; `notes` (profiling findings kept
    /// by hand) is appended to the Markdown.
    pub fn write(&self, dir: &Path, notes: Option<&str>) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("benchmarks.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        std::fs::write(dir.join("BENCHMARKS.md"), self.markdown(notes))?;
        Ok(())
    }

    fn markdown(&self, notes: Option<&str>) -> String {
        let rows: Vec<Vec<String>> = self.metrics.iter().map(Metric::cells).collect();
        let mut md = String::new();
        md.push_str("# troupe benchmarks\n\n");
        md.push_str(
            "Written by `troupe-bench` (crates/troupe-bench); do not edit by hand: rerun it. \
             Benchmarks are never assertions: these numbers are reported, not enforced.\n\n",
        );
        md.push_str("## How to run\n\n```sh\n");
        md.push_str(
            "# ansible-playbook and ansible-runner must be on PATH (scripts/test creates this venv)\n\
             export PATH=\"$HOME/.cache/troupe-ci/venv/bin:$PATH\"\n\
             cargo run --release -p troupe-bench -- all            # writes BENCHMARKS.md + benchmarks.json here\n\
             cargo run --release -p troupe-bench -- all --quick    # CI-sized smoke (< 2 min), writes to target/troupe-bench/\n\
             cargo run --release -p troupe-bench -- ingest         # one scenario: overhead launch ingest fanout api footprint slices events flows scaleout retention ui eventdriven\n",
        );
        md.push_str("```\n\n");
        md.push_str(&format!(
            "This run: `{}`{}\n\n",
            self.command,
            if self.quick {
                " (quick: few repetitions)"
            } else {
                ""
            }
        ));
        md.push_str(
            "The harness builds `target/release/troupe` (`cargo build --release -p troupe`) unless \
             `--troupe PATH` is given, starts it with `troupe serve --listen 127.0.0.1:0` on a fresh \
             data dir per scenario and talks to it over HTTP/WebSocket only.\n\n",
        );
        md.push_str("## Machine\n\n");
        md.push_str(&self.machine.markdown());
        md.push_str(
            "\n**Noise.** This machine is small and shared (other builds run in parallel), so \
             absolute times drift between runs. Compare within one run: scenario 1 interleaves \
             bare / ansible-runner / troupe repetitions (the six orders in turn, `sync` before each run) \
             and reports the median of the per-repetition ratios; read absolute figures as indications. Every other scenario runs \
             `--reps` times (3 by default), each time on a fresh server: a row shows the median \
             over the repetitions and their min–max, and the note of the repetition at the \
             median; `benchmarks.json` keeps each repetition's raw data.\n\n",
        );
        md.push_str("## Results\n\n");
        md.push_str(&table::render_markdown(&HEADERS, &rows));
        md.push_str(DEFINITIONS);
        if let Some(n) = notes {
            md.push('\n');
            md.push_str(n.trim_end());
            md.push('\n');
        }
        md
    }
}

const DEFINITIONS: &str = "
## What each scenario measures

1. **overhead**: the same playbook and inventory (50 `ansible_connection=local` hosts × 4 tasks,
   a 1-task play on 20 hosts and on 1) run by `ansible-playbook` directly (A), by
   `ansible-runner run` (B), through troupe exec'ing ansible-playbook (C: `POST /api/v1/runs`
   with `launcher: exec`, timed from the run's `created_at` to its `finished_at`, both recorded
   by troupe, so the harness's polling is not counted) and through troupe forking it from a warm
   parent (D: `launcher: warm`; the warm-up starts the parent). Interleaved after one warm-up of
   each, the repetitions taking eight orders in turn (the rotations of A B C D and of D C B A:
   in a fixed order, or in rotations of one, whatever one run leaves behind lands on the same
   next one; over the eight, each follows each other equally often), with the disks synced
   (`sync`) before every run; the ratios are medians of the per-repetition ratios.
2. **launch**: a playbook executable that exits at once (`--ansible-playbook` points to a shell
   script), `--max-concurrent-runs 1000`; latency is the client's time just before sending the
   POST to the run's `launched_at` (ansible exec'd, recorded by troupe; `started_at`, the claim,
   when the server does not report `launched_at`; the note says which). \"1 queued\": one run
   at a time. \"1,000 queued\": 1,000 POSTs sent 16 at a time; accepted/s is 1,000 / the time to
   get all 1,000 answers, launched/s 1,000 / (first POST sent -> last `launched_at`). The
   machine's CPUs are busy throughout such a burst (the share is in the note): each POST then
   waits behind the 15 others in flight, ≈ 16 / accepted/s, so its p99 measures the machine's
   capacity more than troupe's delay. \"1,000 paced\": 1,000 POSTs, each sent at its own time
   at half the accepted rate, however long the others take: the latency of a run when the
   machine is not saturated. troupe CPU
   per run: utime + stime of `troupe serve` (`/proc/<pid>/stat`) from just before the burst to
   after its last run finished, over 1,000; its children's (the runs' processes) apart.
   Context switches per run: the voluntary and involuntary switches of troupe's threads
   (`/proc/<pid>/task/*/status`) over the same span, over 1,000; each trip of work to another
   thread (SQLite's, the spawner, the blocking pool) costs some, and the count moves much less
   with the machine's load than time does.
3. **ingest**: `--ansible-playbook` is a synthetic producer (`troupe-bench produce`, behind a
   shell wrapper) that ignores ansible's arguments and writes N ansible-runner-shaped JSON lines
   (realistic `event_data`, ANSI stdout, ≈ 1 KB each) as fast as the pipe takes them to the fd in
   `TROUPE_EVENT_FD`: exactly the pipe -> parser -> batcher -> store path of the callback plugin.
   events/s = N / (`finished_at` − `launched_at`/`started_at`). Bytes per event: growth of the
   SQLite files (measured after a clean shutdown, so the WAL is checkpointed) or
   `pg_total_relation_size('events')`, divided by the events stored.
4. **fanout**: 100 WebSocket subscribers connect to a synthetic run (the producer waits for a
   gate file until they are all connected), then the producer floods. Delivered = distinct events
   received / (N × subscribers); latency = receipt time − the event's `created` (written by the
   producer just before the write), so it covers pipe, parse, batch, store and fan-out. The
   subscribers run in the harness process on the same 2 cores.
5. **api**: `troupe-bench loadgen`, a separate process with 64 keep-alive HTTP/1.1 connections,
   against `GET /api/v1/runs/{id}` and `GET /api/v1/runs?limit=50` (200 runs stored). \"pinned\":
   troupe on CPU 0 and the load generator on CPU 1 (`taskset`), so troupe has one core;
   \"shared\": no pinning, both on both cores. The pinning actually used is printed in the note.
   Nothing changes during these two, so troupe sends the answers it kept under its runs
   generation without a query. \"runs starting\": pinned, while the harness starts a run every
   10 ms (their processes share troupe's CPU); each run moves the generation several times, so
   answers are read from the store again and again. Reported without the target, which is for
   the API alone.
6. **footprint**: VmRSS from /proc/<troupe pid>/status only (ansible processes are separate
   processes and not counted): idle after start, and with 50 synthetic runs in flight (each has
   written 1,000 events and then holds until released).
7. **slices**: a 200-host × 2-task playbook as 1, 2 and 4 slices (`\"slices\": N` on the POST),
   timed `created_at` -> `finished_at`; host-tasks/s = 400 / wall time. Skipped while the server
   rejects the field.
8. **events**: 10,000 webhook POSTs, 32 in flight, each answered once its record is stored; the
   events match a rule whose condition is false, so the whole event path runs (parse, rules,
   condition, one store transaction) but no ansible-playbook does.
9. **flows**: (1) a flow of 10 `shell: {command: \"true\"}` steps, executed 10 times one after
   another (after one warm-up), each next to the same 10 commands run bare in sequence by the
   harness (`/bin/sh -c true`, stdout and stderr piped, as a shell step runs them), the two
   taking turns on which goes first. The execution's wall time is its `created_at` ->
   `finished_at`, both recorded by troupe; troupe's overhead per step is (wall − bare) / 10,
   the median over the 10. The harness spawns the bare commands from its own (larger, busier)
   process and troupe through its spawner, which costs no more, so single samples can come out
   below zero: the figure is troupe's bookkeeping per step (two step records written, two log
   lines, live updates) within the noise of a spawn. (2) 100 executions of a 2-step flow of the same command, POSTed
   together: the time from the first POST sent to the last `finished_at`, and the mean of the
   executions' `created_at` -> `finished_at`.
10. **scaleout**: remote workers (`troupe worker`, capacity 1 each) of one server (SQLite), all
   on this machine. (1) Split: the same 100-host × 2-task playbook (`ping`, `debug`,
   `ansible_connection=local`) as `\"slices\": 2`, run (a) by one worker started under
   `taskset -c 0` (it and every ansible process it starts stay on CPU 0; the two slices one
   after the other) and (b) by two workers, on CPU 0 and on CPU 1 (one slice each); the server
   is not pinned. Wall time is the parent run's `created_at` -> `finished_at`; (a) and (b)
   interleaved after a 4-host warm-up run of each (the workers fetch the project bundle), the
   order alternating; the ratio is the median of the per-repetition (b) / (a). (2) Events: the
   synthetic producer of scenario 3 as the worker's ansible-playbook, 100,000 events a run;
   events/s = N / (`launched_at` -> `finished_at`) at the server, the worker reporting the
   finish only after its last batch is stored; next to the same run on the server's embedded
   pool (the store's own rate: the ceiling), interleaved. (3) Claims: 200 runs (3 synthetic
   events each) created one after another, each once the previous one finished and the worker
   is back in its long-poll claim (50 ms later): `created_at` -> `started_at` (the claim), both
   recorded by the server; and `created_at` -> `launched_at` (plan fetched, bundle already
   held, ansible exec'd). Runs are routed with `worker_labels`: the embedded pool has the label
   `embedded`, so it takes none of the workers' runs (a split parent is coordinated by the
   server whatever its labels) and they none of its.
11. **retention**: 10,000 synthetic runs (20 events of ≈ 1 KB each, no output; 16 POSTs
   in flight, `--max-concurrent-runs 32`, background retention off) in one project, then one
   `POST /api/v1/runs/prune {\"keep\": 1000}` (batches of 500 runs with a 20 ms pause between
   them), timed by the client. SQLite: `troupe.db` and its WAL after a clean shutdown, before
   and after the pass, and the bytes of its pages in use (page count minus free-list pages,
   read from the file's header): SQLite keeps the freed pages for new rows, so the file does
   not shrink. PostgreSQL: `pg_database_size` (and the three tables' `pg_total_relation_size`)
   before, right after the pass and after a plain `VACUUM`.
12. **ui**: one synthetic run of 5,000 events (50 hosts × 98 tasks), finished, then its page
   (`#/runs/ID`) opened in headless Chromium by `ui-tests/bench.mjs` (playwright-core; skipped
   without Chromium or `npm ci` in ui-tests/): milliseconds from navigation to the frame after
   the run page appears (first paint) and to the frame after the page counts the last event
   (every event parsed, stdout, grid and timeline drawn), and the longest task that blocked the
   main thread meanwhile (the longtask API: what a user would feel as a freeze). Reference: the
   same SSE stream read to its end by node, so the last row is what the page adds over reading
   the stream.
13. **eventdriven**: 40 webhook events (8 with `--quick`; 8 POSTs in flight), each matched by a
   rule that runs a 1-task local playbook (the real ansible-playbook, touching a file the event
   names): events per second from the first POST to the last run finished, for troupe with each
   launcher of `--launchers` (default `exec,warm`; `--max-concurrent-runs 8`, a fresh server each),
   and for ansible-rulebook (its own venv, `~/.cache/troupe-ci/rulebook-venv` or
   `TROUPE_BENCH_RULEBOOK`) running the same playbook per event with `run_playbook` and
   `execution_strategy: parallel` from a webhook source, until every event's task ran. The
   `ansible.eda.webhook` source comes from a Galaxy collection this machine cannot fetch, so
   the scenario gives ansible-rulebook a minimal aiohttp webhook source of its own. A row says
   why when ansible-rulebook cannot run.
";
