//! Event rules that start flows: a webhook event starts an execution whose inputs come from
//! the payload, through the real binary; gates hold it back the same way as runs, and input
//! problems are the event's failure.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use troupe_testkit::Api;
use troupe_wire::events::{EventStatus, HookResponse, RuleResult};
use troupe_wire::flows::{ExecutionList, ExecutionStatus, ExecutionView, FlowView, PutFlow};

const FLOW: &str = r#"
name: greet
inputs:
  who: {type: string, required: true, validate: shellsafe}
  times: {type: integer, default: 1}
  token: {type: string, secret: true}
steps:
  - id: say
    shell: {command: "echo hello {{ inputs.who }} x{{ inputs.times }}"}
"#;

const RULES: &str = r#"
sources:
  hook: {type: webhook}
rules:
  - name: greet-rule
    routing_keys: ["greet.*"]
    action:
      flow: greet
      inputs:
        who: "{{ payload.user.name }}"
        times: "{{ count }}"
        token: "{{ payload.token }}"
    dedupe: {key: payload.id, within: 1h}
"#;

const SECRET: &str = "tok-e2e-7f3a91";

/// Posts a webhook event (the API token is accepted by any webhook source).
async fn hook(api: &Api, key: &str, payload: Value) -> anyhow::Result<HookResponse> {
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/hooks/hook/{key}"),
            Some(&payload),
        )
        .await?;
    anyhow::ensure!(status == 202, "the hook answered {status}: {body}");
    Ok(serde_json::from_value(body)?)
}

/// An execution once finished.
async fn finished(api: &Api, id: i64) -> anyhow::Result<ExecutionView> {
    for _ in 0..600 {
        let view: ExecutionView =
            serde_json::from_value(api.get(&format!("/api/v1/executions/{id}")).await?)?;
        if view.execution.status.is_finished() {
            return Ok(view);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("execution {id} did not finish")
}

#[tokio::test]
async fn a_webhook_event_starts_a_flow_with_inputs_from_its_payload() -> anyhow::Result<()> {
    let server = serve()?;
    let body = serde_json::to_value(PutFlow {
        document: FLOW.to_owned(),
    })?;
    let (status, stored) = server
        .call(reqwest::Method::POST, "/api/v1/flows", Some(&body))
        .await?;
    assert_eq!(status, 201, "{stored}");
    let stored: FlowView = serde_json::from_value(stored)?;
    assert_eq!(stored.name, "greet");
    server.apply_rules(RULES).await?;

    let payload = json!({"id": 1, "user": {"name": "alice"}, "count": 3, "token": SECRET});
    let answer = hook(&server, "greet.web", payload.clone()).await?;
    let event = answer.event;
    assert_eq!(event.status, EventStatus::Accepted, "{event:?}");
    assert!(event.run_ids.is_empty(), "{event:?}");
    let [outcome] = &event.rules[..] else {
        anyhow::bail!("one rule matched: {event:?}");
    };
    assert_eq!(outcome.rule, "greet-rule");
    let RuleResult::StartedFlow { execution_id } = outcome.result else {
        anyhow::bail!("the rule started a flow: {outcome:?}");
    };
    assert_eq!(event.execution_ids, vec![execution_id]);

    let view = finished(&server, execution_id).await?;
    let e = &view.execution;
    assert_eq!(
        e.status,
        ExecutionStatus::Successful,
        "{view:?}\n{}",
        server.log()
    );
    assert_eq!(e.flow, "greet");
    assert_eq!(e.started_by, "rule:greet-rule");
    assert_eq!(e.inputs.get("who"), Some(&json!("alice")));
    assert_eq!(
        e.inputs.get("times"),
        Some(&json!(3)),
        "a sole expression keeps its type"
    );
    assert_eq!(e.inputs.get("token"), Some(&json!("********")));
    let say = view
        .steps
        .iter()
        .find(|s| s.key == "steps/say")
        .ok_or_else(|| anyhow::anyhow!("no say step: {view:?}"))?;
    assert_eq!(say.result.get("stdout"), Some(&json!("hello alice x3\n")));
    assert!(
        !serde_json::to_string(&view)?.contains(SECRET),
        "the secret input is not shown"
    );

    // The same id again: the dedupe gate the execution closed holds it back.
    let again = hook(&server, "greet.web", payload).await?.event;
    assert_eq!(again.status, EventStatus::Skipped, "{again:?}");
    assert!(
        matches!(again.rules[0].result, RuleResult::Gated { by_event, .. } if by_event == event.id),
        "{again:?}"
    );
    assert!(again.execution_ids.is_empty());

    // A missing required input, a lookup into nothing, and a value the input refuses: the
    // event fails, saying why.
    let missing = hook(&server, "greet.web", json!({"id": 2, "user": {}}))
        .await?
        .event;
    assert_eq!(missing.status, EventStatus::Failed, "{missing:?}");
    let RuleResult::Failed { error } = &missing.rules[0].result else {
        anyhow::bail!("failed: {missing:?}");
    };
    assert!(
        error.contains("inputs.who") && error.contains("required"),
        "{error}"
    );
    let no_user = hook(&server, "greet.web", json!({"id": 4})).await?.event;
    let RuleResult::Failed { error } = &no_user.rules[0].result else {
        anyhow::bail!("failed: {no_user:?}");
    };
    assert!(
        error.starts_with("inputs.who: ") && error.contains("payload.user"),
        "{error}"
    );
    let refused = hook(
        &server,
        "greet.web",
        json!({"id": 3, "user": {"name": "a;reboot"}, "token": SECRET}),
    )
    .await?
    .event;
    assert_eq!(refused.status, EventStatus::Failed, "{refused:?}");
    let RuleResult::Failed { error } = &refused.rules[0].result else {
        anyhow::bail!("failed: {refused:?}");
    };
    assert!(
        error.contains("inputs.who") && error.contains("shellsafe"),
        "{error}"
    );

    let listed: ExecutionList =
        serde_json::from_value(server.get("/api/v1/executions?flow=greet").await?)?;
    let ids: Vec<i64> = listed.executions.iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        vec![execution_id],
        "only the accepted event started one"
    );
    assert!(
        !server.log().contains(SECRET),
        "the secret input is never logged"
    );
    Ok(())
}
