//! 7: a 200-host playbook as 1, 2 and 4 slices, when the server supports `slices`.

use super::{local_hosts, write_files};
use crate::ctx::Ctx;
use crate::report::Metric;
use crate::run_api;
use crate::server::{Server, ServerOpts, ms_between};
use anyhow::bail;
use serde_json::json;
use std::time::Duration;
use troupe_wire::runs::CreateRun;

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
        let mut body = CreateRun::new(pid, "slices.yml");
        body.hosts = Some(inventory.clone());
        body.slices = Some(slices);
        let (status, v) = server
            .call(
                reqwest::Method::POST,
                "/api/v1/runs",
                Some(&run_api::body(&body)?),
            )
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
        let id = run_api::read(v)?.id;
        let run = run_api::wait_finished(
            &server,
            id,
            Duration::from_millis(100),
            Duration::from_secs(1800),
        )
        .await?;
        let Some(f) = run.finished_at else {
            bail!("run {id} has no finished_at");
        };
        let secs = ms_between(run.created_at, f) / 1000.0;
        let scen = format!(
            "{title} ({hosts} hosts, {slices} slice{})",
            if slices == 1 { "" } else { "s" }
        );
        // Quoted, as the report has always shown it.
        let status = run.status.as_str();
        ctx.push(Metric::value(&scen, "wall s", secs).note(format!("status {status:?}")));
        ctx.push(Metric::value(
            &scen,
            "host-tasks/s",
            (hosts * TASKS) as f64 / secs,
        ));
        details.push(json!({"slices": slices, "seconds": secs, "status": run.status}));
    }
    ctx.details.insert("slices".into(), json!(details));
    server.stop()?;
    Ok(())
}
