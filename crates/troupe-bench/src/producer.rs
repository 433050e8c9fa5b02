//! The synthetic "ansible-playbook": writes ansible-runner-shaped events to the fd named by
//! `TROUPE_EVENT_FD` as fast as the pipe takes them, so the benchmark exercises exactly troupe's
//! pipe -> parser -> batcher -> store path without ansible's own cost.
//!
//! troupe starts it through a shell wrapper (see [`write_wrapper`]) with ansible's arguments; it
//! ignores them except `-e @extra_vars.json`, where the harness puts its settings:
//! `bench_events` (N), `bench_hosts`, `bench_gate` (a file to wait for before writing),
//! `bench_hold` (a file to wait for after writing, to keep the run in flight) and `bench_rate`
//! (events per second to pace at, instead of as fast as the pipe takes them).

use anyhow::Context;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The version line the wrapper answers `--version` with, so troupe's probe accepts it.
const VERSION: &str = "ansible-playbook [core 2.19.14] (troupe-bench synthetic producer)";

/// Writes an executable shell script that troupe can use as `--ansible-playbook`: it answers
/// `--version` and otherwise runs `exe produce` with ansible's arguments.
pub fn write_wrapper(dir: &Path, exe: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("synthetic-ansible-playbook");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then\n  echo '{VERSION}'\n  exit 0\nfi\nexec '{}' produce \"$@\"\n",
        exe.display()
    );
    write_executable(&path, &script)?;
    Ok(path)
}

/// Writes an executable shell script that exits at once (for launch latency and API data).
pub fn write_noop(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("noop-ansible-playbook");
    let script =
        format!("#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then\n  echo '{VERSION}'\nfi\nexit 0\n");
    write_executable(&path, &script)?;
    Ok(path)
}

fn write_executable(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

struct Settings {
    events: u64,
    hosts: u64,
    gate: Option<PathBuf>,
    hold: Option<PathBuf>,
    /// Events per second to pace at; as fast as the pipe takes them when absent.
    rate: Option<u64>,
}

fn settings(args: &[String]) -> anyhow::Result<Settings> {
    let mut vars = Value::Null;
    for pair in args.windows(2) {
        if pair[0] == "-e"
            && let Some(file) = pair[1].strip_prefix('@')
        {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
            vars = serde_json::from_str(&text).with_context(|| format!("parsing {file}"))?;
        }
    }
    let path = |k: &str| vars[k].as_str().map(PathBuf::from);
    Ok(Settings {
        events: vars["bench_events"].as_u64().unwrap_or(1000).max(3),
        hosts: vars["bench_hosts"].as_u64().unwrap_or(50).max(1),
        gate: path("bench_gate"),
        hold: path("bench_hold"),
        rate: vars["bench_rate"].as_u64().filter(|r| *r > 0),
    })
}

fn wait_for(path: &Path, every: Duration, limit: Duration) {
    let start = Instant::now();
    while !path.exists() && start.elapsed() < limit {
        std::thread::sleep(every);
    }
}

/// Runs the producer with ansible's command-line arguments.
pub fn produce(args: &[String]) -> anyhow::Result<()> {
    let s = settings(args)?;
    let fd: i32 = std::env::var("TROUPE_EVENT_FD")
        .context("TROUPE_EVENT_FD is not set: run me through troupe")?
        .parse()
        .context("TROUPE_EVENT_FD")?;
    // Opening the inherited pipe through /proc gives a second handle on the same pipe without
    // unsafe fd adoption.
    let pipe = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))
        .context("opening the event pipe")?;
    if let Some(g) = &s.gate {
        wait_for(g, Duration::from_millis(1), Duration::from_secs(300));
    }
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, pipe);
    let mut generator = Generator::new(s.hosts);
    let mut line = String::with_capacity(2048);
    // Paced runs write in 10 ms steps, flushed at once, so `created` is close to the write.
    let step = s.rate.map(|r| (r / 100).max(1));
    let start = Instant::now();
    for counter in 1..=s.events {
        line.clear();
        generator.event(&mut line, counter, s.events);
        line.push('\n');
        out.write_all(line.as_bytes())?;
        if let (Some(rate), Some(step)) = (s.rate, step)
            && counter % step == 0
        {
            out.flush()?;
            let due = start + Duration::from_secs_f64(counter as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    out.flush()?;
    drop(out);
    if let Some(h) = &s.hold {
        wait_for(h, Duration::from_millis(50), Duration::from_secs(900));
    }
    Ok(())
}

/// Builds the lines: a playbook start, a play start, then per task one task start and one
/// `runner_on_ok` per host, and the stats last.
struct Generator {
    hosts: u64,
    prefix: String,
    task: u64,
    task_uuid: String,
    line_no: u64,
}

impl Generator {
    fn new(hosts: u64) -> Generator {
        let seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        Generator {
            hosts,
            prefix: format!("{:08x}", seed as u32),
            task: 0,
            task_uuid: String::new(),
            line_no: 0,
        }
    }

    fn uuid(&self, n: u64) -> String {
        format!("{}-5e1f-4c3a-9d2b-{n:012x}", self.prefix)
    }

    fn event(&mut self, out: &mut String, counter: u64, total: u64) {
        use std::fmt::Write as _;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
        let uuid = self.uuid(counter);
        let playbook_uuid = self.uuid(0);
        let play_uuid = self.uuid(1);
        let per_task = self.hosts + 1;
        let (name, parent, stdout, data): (&str, String, String, String) = if counter == 1 {
            (
                "playbook_on_start",
                String::new(),
                String::new(),
                format!(
                    r#"{{"playbook":"bench.yml","playbook_uuid":"{playbook_uuid}","uuid":"{uuid}"}}"#
                ),
            )
        } else if counter == 2 {
            (
                "playbook_on_play_start",
                playbook_uuid.clone(),
                "\\r\\nPLAY [bench] *******************************************************************".into(),
                format!(
                    r#"{{"playbook":"bench.yml","playbook_uuid":"{playbook_uuid}","play":"bench","play_uuid":"{play_uuid}","play_pattern":"all","name":"bench","pattern":"all","uuid":"{uuid}"}}"#
                ),
            )
        } else if counter == total {
            let mut ok = String::new();
            for h in 1..=self.hosts.min(200) {
                let _ = write!(ok, "{}\"h{h}\":{}", if h > 1 { "," } else { "" }, self.task);
            }
            (
                "playbook_on_stats",
                playbook_uuid.clone(),
                "\\r\\nPLAY RECAP *********************************************************************".into(),
                format!(
                    r#"{{"playbook":"bench.yml","playbook_uuid":"{playbook_uuid}","changed":{{}},"dark":{{}},"failures":{{}},"ignored":{{}},"ok":{{{ok}}},"processed":{{{ok}}},"rescued":{{}},"skipped":{{}},"artifact_data":{{}},"uuid":"{uuid}"}}"#
                ),
            )
        } else if (counter - 3).is_multiple_of(per_task) {
            self.task += 1;
            self.task_uuid = self.uuid(1_000_000_000 + self.task);
            let t = self.task;
            (
                "playbook_on_task_start",
                play_uuid.clone(),
                format!(
                    "\\r\\nTASK [say hello {t}] ************************************************************"
                ),
                format!(
                    r#"{{"playbook":"bench.yml","playbook_uuid":"{playbook_uuid}","play":"bench","play_uuid":"{play_uuid}","play_pattern":"all","task":"say hello {t}","task_uuid":"{}","task_action":"ansible.builtin.debug","resolved_action":"ansible.builtin.debug","task_args":"","task_path":"/srv/project/bench.yml:{}","name":"say hello {t}","is_conditional":false,"uuid":"{uuid}"}}"#,
                    self.task_uuid,
                    10 + 3 * t
                ),
            )
        } else {
            let h = (counter - 3) % per_task;
            let t = self.task;
            (
                "runner_on_ok",
                self.task_uuid.clone(),
                format!(
                    "\\u001b[0;32mok: [h{h}] => {{\\u001b[0m\\r\\n\\u001b[0;32m    \\\"msg\\\": \\\"hello from h{h}, task {t}\\\"\\u001b[0m\\r\\n\\u001b[0;32m}}\\u001b[0m"
                ),
                format!(
                    r#"{{"playbook":"bench.yml","playbook_uuid":"{playbook_uuid}","play":"bench","play_uuid":"{play_uuid}","play_pattern":"all","task":"say hello {t}","task_uuid":"{}","task_action":"ansible.builtin.debug","resolved_action":"ansible.builtin.debug","task_args":"","task_path":"/srv/project/bench.yml:{}","host":"h{h}","remote_addr":"h{h}","res":{{"msg":"hello from h{h}, task {t}","_ansible_verbose_always":true,"_ansible_no_log":false,"changed":false}},"start":"{now}","end":"{now}","duration":0.004172,"event_loop":null,"uuid":"{uuid}"}}"#,
                    self.task_uuid,
                    10 + 3 * t
                ),
            )
        };
        let lines = if stdout.is_empty() {
            0
        } else {
            1 + stdout.matches("\\r\\n").count() as u64
        };
        let start = self.line_no;
        self.line_no += lines;
        let parent = if parent.is_empty() {
            String::new()
        } else {
            format!(r#""parent_uuid":"{parent}","#)
        };
        let _ = write!(
            out,
            r#"{{"uuid":"{uuid}","counter":{counter},"event":"{name}",{parent}"created":"{now}","stdout":"{stdout}","start_line":{start},"end_line":{},"runner_ident":"bench","event_data":{data}}}"#,
            self.line_no
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_a_runner_shaped_json_event() {
        let mut g = Generator::new(3);
        let mut line = String::new();
        let total = 12;
        let mut names = Vec::new();
        for c in 1..=total {
            line.clear();
            g.event(&mut line, c, total);
            let v: Value = serde_json::from_str(&line).expect("valid JSON");
            assert_eq!(v["counter"].as_u64(), Some(c));
            assert!(
                v["created"]
                    .as_str()
                    .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
            );
            assert!(v["event_data"].is_object());
            names.push(v["event"].as_str().unwrap_or_default().to_owned());
        }
        assert_eq!(names[0], "playbook_on_start");
        assert_eq!(names[2], "playbook_on_task_start");
        assert_eq!(names[3], "runner_on_ok");
        assert_eq!(names[6], "playbook_on_task_start");
        assert_eq!(names[11], "playbook_on_stats");
    }
}
