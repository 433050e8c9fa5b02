//! 7: a 200-host playbook as 1, 2 and 4 slices, when the server supports `slices`.

use super::{local_hosts, write_files};
use crate::ctx::Ctx;
use crate::report::Metric;
use crate::server::{Server, ServerOpts, ms_between, time_field};
use anyhow::bail;
use serde_json::json;
use std::time::Duration;

const PLAY: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n    - ansible.builtin.debug:\n        msg: \"hello {{ inventory_hostname }}\"\n";
const TASKS: usize = 2;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let title = "7 slices";
    let Some(ansible) = ctx.ansible_playbook.clone() else {
        ctx.push(Metric::skipped(title, "ansible-playbook is not on PATH"));
        return Ok(());
    };
    let hosts = if ctx.quick { 20 } else { 200 };
    let project = ctx.dir("slices-project")?;
    write_files(&project, &[("slices.yml", PLAY)])?;
    let server = Server::start(&ServerOpts {
        troupe: ctx.troupe.clone(),
        data_dir: ctx.dir("slices-data")?,
        database_url: None,
        max_concurrent_runs: 4,
        ansible_playbook: Some(ansible),
    })?;
    let pid = server.project(&project).await?;
    let inventory = local_hosts(hosts);
    let mut details = Vec::new();
    for slices in [1, 2, 4] {
        let body =
            json!({"project": pid, "playbook": "slices.yml", "hosts": inventory, "slices": slices});
        let (status, v) = server
            .call(reqwest::Method::POST, "/api/v1/runs", Some(&body))
            .await?;
        if status == 422 && v.to_string().contains("slices") {
            println!("  skipped: server does not support slices yet");
            ctx.push(Metric::skipped(
                title,
                "server does not support slices yet (422 for the `slices` field)",
            ));
            server.stop()?;
            return Ok(());
        }
        if !(200..300).contains(&status) {
            bail!("POST /api/v1/runs with slices={slices} -> {status}: {v}");
        }
        let Some(id) = v["id"].as_i64() else {
            bail!("no run id in {v}")
        };
        let run = server
            .wait_finished(id, Duration::from_millis(100), Duration::from_secs(1800))
            .await?;
        let (Some(c), Some(f)) = (
            time_field(&run, "created_at"),
            time_field(&run, "finished_at"),
        ) else {
            bail!("run {id} has no created_at/finished_at");
        };
        let secs = ms_between(c, f) / 1000.0;
        let scen = format!(
            "{title} ({hosts} hosts, {slices} slice{})",
            if slices == 1 { "" } else { "s" }
        );
        ctx.push(Metric::value(&scen, "wall s", secs).note(format!("status {}", run["status"])));
        ctx.push(Metric::value(
            &scen,
            "host-tasks/s",
            (hosts * TASKS) as f64 / secs,
        ));
        details.push(json!({"slices": slices, "seconds": secs, "status": run["status"]}));
    }
    ctx.details.insert("slices".into(), json!(details));
    server.stop()?;
    Ok(())
}
