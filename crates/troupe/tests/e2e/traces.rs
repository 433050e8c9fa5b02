//! Traces: a run's life exported over OTLP/HTTP to a collector this test runs (a real HTTP
//! server decoding the protobuf requests), checked span by span.

use crate::helpers::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode as SpanStatus};
use prost::Message;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Everything the collector received: spans, and the resources' `service.name`s.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    services: Vec<String>,
    bad_requests: Vec<String>,
}

type Collector = Arc<Mutex<Received>>;

async fn export(State(got): State<Collector>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let kind = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut got = got
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if kind != "application/x-protobuf" {
        got.bad_requests.push(format!("content type {kind}"));
        return StatusCode::UNSUPPORTED_MEDIA_TYPE;
    }
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            for rs in request.resource_spans {
                for attr in rs.resource.iter().flat_map(|r| r.attributes.iter()) {
                    if attr.key == "service.name" {
                        got.services
                            .push(text(attr.value.as_ref().and_then(|v| v.value.as_ref())));
                    }
                }
                for ss in rs.scope_spans {
                    got.spans.extend(ss.spans);
                }
            }
            StatusCode::OK
        }
        Err(e) => {
            got.bad_requests.push(e.to_string());
            StatusCode::BAD_REQUEST
        }
    }
}

fn text(v: Option<&Any>) -> String {
    match v {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
            )
        })
        .collect()
}

/// A collector on a free port of 127.0.0.1; its base URL.
async fn collector() -> anyhow::Result<(String, Collector)> {
    let got = Collector::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(export))
        .with_state(Arc::clone(&got));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, got))
}

#[tokio::test]
async fn a_runs_life_is_one_trace_at_the_collector() -> anyhow::Result<()> {
    let (base, got) = collector().await?;
    // The standard variable, as any OpenTelemetry SDK reads it.
    let server = serve_with(ServerOpts {
        extra_env: vec![("OTEL_EXPORTER_OTLP_ENDPOINT".into(), base)],
        ..Default::default()
    })?;
    let proj = project_dir(&[("ok.yml", HELLO)])?;
    let project = server.project(proj.path()).await?;
    let secret = "do-not-trace-me-7f3a";
    let id = server
        .launch(
            project,
            "ok.yml",
            &local_hosts(1),
            json!({"extra_vars": {"password": secret, "note": secret}}),
        )
        .await?;
    assert_eq!(server.wait_finished(id).await?["status"], "successful");

    let names = ["run", "request", "claim", "spawn", "first_event", "end"];
    let of_run = |got: &Received| -> Vec<Span> {
        got.spans
            .iter()
            .filter(|s| attrs(s).get("troupe.run.id") == Some(&id.to_string()))
            .cloned()
            .collect()
    };
    wait_until("the run's six spans", Duration::from_secs(30), || {
        let got = Arc::clone(&got);
        async move {
            let got = got
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Ok(of_run(&got).len() >= names.len())
        }
    })
    .await?;
    let got = got
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(got.bad_requests.is_empty(), "{:?}", got.bad_requests);
    assert!(
        got.services.iter().all(|s| s == "troupe"),
        "{:?}",
        got.services
    );
    let spans = of_run(&got);
    let by_name: HashMap<&str, &Span> = spans.iter().map(|s| (s.name.as_str(), s)).collect();
    assert_eq!(spans.len(), names.len(), "one span each: {spans:?}");
    let root = by_name["run"];
    assert_eq!(root.trace_id.len(), 16);
    assert_eq!(root.span_id.len(), 8);
    assert!(root.parent_span_id.is_empty(), "the root has no parent");
    for name in &names[1..] {
        let span = by_name
            .get(name)
            .unwrap_or_else(|| panic!("no {name} span: {spans:?}"));
        assert_eq!(span.trace_id, root.trace_id, "{name} is in the run's trace");
        assert_eq!(
            span.parent_span_id, root.span_id,
            "{name} hangs from the run"
        );
        assert_ne!(span.span_id, root.span_id);
        assert!(
            span.start_time_unix_nano <= span.end_time_unix_nano,
            "{name}"
        );
    }
    // The parts follow each other.
    let (claim, spawn, first, end) = (
        by_name["claim"],
        by_name["spawn"],
        by_name["first_event"],
        by_name["end"],
    );
    assert_eq!(claim.end_time_unix_nano, spawn.start_time_unix_nano);
    assert_eq!(spawn.end_time_unix_nano, first.start_time_unix_nano);
    assert!(first.end_time_unix_nano <= end.start_time_unix_nano);
    assert!(root.start_time_unix_nano <= claim.start_time_unix_nano);
    assert!(end.end_time_unix_nano <= root.end_time_unix_nano);

    let a = attrs(root);
    assert_eq!(a["troupe.run.playbook"], "ok.yml");
    assert_eq!(a["troupe.run.status"], "successful");
    assert_eq!(a["troupe.run.rc"], "0");
    assert_eq!(a["troupe.project.id"], project.to_string());
    let status = root.status.clone().unwrap_or_default();
    assert_eq!(status.code, SpanStatus::Ok as i32);
    assert_eq!(attrs(by_name["request"])["http.route"], "/api/v1/runs");
    // No variable, secret or not, is ever an attribute.
    for span in &spans {
        for (k, v) in attrs(span) {
            assert!(!v.contains(secret), "{} has {k}={v}", span.name);
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_failed_run_is_an_error_at_a_full_endpoint_url() -> anyhow::Result<()> {
    let (base, got) = collector().await?;
    let server = serve_with(ServerOpts {
        extra_args: vec!["--otlp-endpoint".into(), format!("{base}/v1/traces")],
        ..Default::default()
    })?;
    let proj = project_dir(&[(
        "fail.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.fail:\n        msg: no\n",
    )])?;
    let project = server.project(proj.path()).await?;
    let id = server
        .launch(project, "fail.yml", &local_hosts(1), json!({}))
        .await?;
    assert_eq!(server.wait_finished(id).await?["status"], "failed");
    wait_until(
        "the failed run's root span",
        Duration::from_secs(30),
        || {
            let got = Arc::clone(&got);
            async move {
                let got = got
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Ok(got.spans.iter().any(|s| {
                    s.name == "run" && attrs(s).get("troupe.run.id") == Some(&id.to_string())
                }))
            }
        },
    )
    .await?;
    let got = got
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = got
        .spans
        .iter()
        .find(|s| s.name == "run" && attrs(s).get("troupe.run.id") == Some(&id.to_string()))
        .cloned()
        .unwrap_or_default();
    let a = attrs(&root);
    assert_eq!(a["troupe.run.status"], "failed");
    assert_eq!(a["troupe.run.rc"], "2");
    assert_eq!(
        root.status.unwrap_or_default().code,
        SpanStatus::Error as i32
    );
    Ok(())
}
