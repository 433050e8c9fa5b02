//! What a notification says: the webhook's JSON ([`Ended`]) and the Slack line.

use troupe_core::flow::{Execution, Phase, StepRecord, StepStatus};
use troupe_core::run::Run;
use troupe_wire::notifications::{Ended, ExecutionEnded, RunEnded};

/// The end of a run: `project` and `template` are their names.
pub fn run_ended(run: &Run, project: &str, template: Option<&str>) -> Ended {
    Ended {
        kind: "run".into(),
        status: run.status.as_str().into(),
        link: format!("/api/v1/runs/{}", run.id),
        run: Some(RunEnded {
            id: run.id,
            status: run.status.as_str().into(),
            rc: run.rc,
            reason: run.status_reason.clone(),
            playbook: run.playbook.clone(),
            project: project.into(),
            template: template.map(str::to_owned),
            labels: run.labels.clone(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            hosts: run.summary.clone(),
        }),
        execution: None,
    }
}

/// The end of an execution, with its step records (to name the step that failed).
pub fn execution_ended(execution: &Execution, steps: &[StepRecord]) -> Ended {
    // The execution stops at the last step of its body that failed in its last round.
    let failed_step = steps
        .iter()
        .rfind(|s| {
            s.round == execution.round
                && matches!(s.phase, Phase::Pre | Phase::Steps)
                && matches!(s.status, StepStatus::Failed | StepStatus::Timeout)
        })
        .map(|s| s.key.clone());
    Ended {
        kind: "execution".into(),
        status: execution.status.as_str().into(),
        link: format!("/api/v1/executions/{}", execution.id),
        run: None,
        execution: Some(ExecutionEnded {
            id: execution.id,
            flow: execution.flow.clone(),
            version: execution.version,
            status: execution.status.as_str().into(),
            failed_step,
            error: execution.error.clone(),
            started_by: execution.started_by.clone(),
            started_at: execution.started_at,
            finished_at: execution.finished_at,
        }),
    }
}

/// The Slack line when a target gives no `text`: what ended, how, and its link.
pub fn default_text(ended: &Ended) -> String {
    if let Some(r) = &ended.run {
        let template = r
            .template
            .as_deref()
            .map(|t| format!(", template {t}"))
            .unwrap_or_default();
        format!(
            "troupe: run {} ({} in {}{template}) ended {} - {}",
            r.id, r.playbook, r.project, ended.status, ended.link
        )
    } else if let Some(e) = &ended.execution {
        let at = e
            .failed_step
            .as_deref()
            .map(|s| format!(" at {s}"))
            .unwrap_or_default();
        let why = e
            .error
            .as_deref()
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        format!(
            "troupe: flow {} execution {} ended {}{at}{why} - {}",
            e.flow, e.id, ended.status, ended.link
        )
    } else {
        format!(
            "troupe: {} ended {} - {}",
            ended.kind, ended.status, ended.link
        )
    }
}

/// Renders a target's `text` (Jinja) over the end's JSON: `run` or `execution`, `status`,
/// `link`, `kind`.
pub fn render_text(template: &str, ended: &Ended) -> Result<String, String> {
    let ctx = minijinja::Value::from(minijinja::value::Serde(ended));
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env.render_str(template, ctx)
        .map_err(|e| format!("text: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use troupe_core::RunStatus;
    use troupe_core::run::{HostStats, RunOptions};

    fn run() -> Run {
        serde_json::from_value(serde_json::json!({
            "id": 12, "project_id": 1, "playbook": "deploy.yml", "inventory_id": null,
            "options": RunOptions::default(), "labels": {"team": "ops"}, "tag": null,
            "status": RunStatus::Failed, "status_reason": "a task failed", "rc": 2,
            "created_at": Utc::now(), "started_at": Utc::now(), "finished_at": Utc::now(),
            "summary": {"web1": HostStats { ok: 3, failed: 1, ..HostStats::default() }},
            "event_count": 9,
        }))
        .expect("a run")
    }

    #[test]
    fn a_run_end_names_its_parts_and_renders_text() {
        let ended = run_ended(&run(), "web", Some("deploy"));
        assert_eq!(
            (ended.kind.as_str(), ended.status.as_str()),
            ("run", "failed")
        );
        assert_eq!(ended.link, "/api/v1/runs/12");
        let text = default_text(&ended);
        assert!(text.contains("run 12") && text.contains("failed"), "{text}");
        assert!(text.contains("template deploy") && text.contains("/api/v1/runs/12"));
        let custom = render_text(
            "{{ run.project }}/{{ run.playbook }} {{ status }} rc={{ run.rc }} \
             failed={{ run.hosts.web1.failed }} {{ run.nothing.here }}",
            &ended,
        )
        .expect("renders");
        assert_eq!(custom, "web/deploy.yml failed rc=2 failed=1 ");
        assert!(render_text("{{ broken", &ended).is_err());
    }
}
