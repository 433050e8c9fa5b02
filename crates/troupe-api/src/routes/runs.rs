//! Runs: launch, list, inspect, follow and cancel.

use super::to_ref;
use crate::AppState;
use crate::audit::AuditTarget;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};
use crate::run_json::TaggedJson;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::Value;
use std::collections::BTreeMap;
use troupe_core::inventory::{InventoryContent, InventoryFormat};
use troupe_core::run::{CancelMode, HostStats, Origin, Run, RunOptions, TaskPosition};
use troupe_core::{Event, RunStatus};
use troupe_launch::{InventorySource, LaunchRequest, ProjectRef};
use troupe_store::{Page, RunFilter, Stream};
use troupe_telemetry::{RunSpan, Stage};
use troupe_wire::runs::RunsQuery as ListQuery;
use troupe_wire::runs::{
    CancelRequest, CreateRun, EventPage, EventsQuery, HostFailure, HostResult, OutputQuery,
    PruneReport, PruneRuns, RelaunchFrom, RelaunchHosts, RelaunchRequest, RunList,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_run, list_runs))
        .routes(routes!(get_run))
        .routes(routes!(list_events))
        .routes(routes!(get_stdout))
        .routes(routes!(get_stderr))
        .routes(routes!(get_hosts))
        .routes(routes!(cancel_run))
        .routes(routes!(relaunch_run))
        .routes(routes!(prune_runs))
}

/// Launch a run: it is queued at once and started as soon as a worker slot is free.
#[utoipa::path(post, path = "/api/v1/runs", request_body = CreateRun,
    responses((status = 201, body = Run), (status = 422, body = crate::error::ErrorBody)))]
async fn create_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateRun>,
) -> ApiResult<(StatusCode, AuditTarget, Json<Run>)> {
    let received = chrono::Utc::now();
    if caller.projects.is_some() {
        // Another project's playbook is refused as if the project did not exist.
        let project = super::find_project(&state, &req.project, "project").await?;
        if !caller.sees(project.id) {
            return Err(ApiError::invalid(
                "unknown_project",
                "project",
                format!("no project {}", req.project),
            ));
        }
    }
    let inventory = match (&req.inventory, req.hosts) {
        (Some(r), None) => InventorySource::Stored(to_ref(r)),
        (None, Some(hosts)) => InventorySource::Inline(InventoryContent {
            format: req
                .hosts_format
                .unwrap_or_else(|| InventoryFormat::detect(&hosts)),
            hosts,
            vars: None,
        }),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "invalid_inventory",
                "inventory",
                "give either inventory or hosts, not both",
            ));
        }
        // As ansible-playbook without -i: the inventory ansible's configuration names.
        (None, None) => InventorySource::AnsibleConfig,
    };
    let extra_vars = extra_vars_object(req.extra_vars)?;
    let options = RunOptions {
        extra_vars,
        limit: req.limit,
        tags: req.tags,
        skip_tags: req.skip_tags,
        check: req.check,
        diff: req.diff,
        forks: req.forks,
        verbosity: req.verbosity,
        timeout_s: req.timeout_s,
        start_at_task: req.start_at_task,
        // Set by a relaunch from a failed task, from the events of the run it resumes.
        start_at_position: None,
        slices: req.slices,
        slice_size: req.slice_size,
        credentials: req.credentials,
        connection: req.connection,
        remote_user: req.remote_user,
        become_: req.become_,
        become_method: req.become_method,
        become_user: req.become_user,
        ssh_common_args: req.ssh_common_args,
        ssh_extra_args: req.ssh_extra_args,
        worker_labels: req.worker_labels,
        launcher: req.launcher,
    };
    let request = LaunchRequest {
        labels: req.labels,
        tag: req.tag,
        ..LaunchRequest::playbook(
            ProjectRef::Ref(to_ref(&req.project)),
            req.playbook,
            inventory,
            options,
        )
    };
    let run = state.launcher.launch(request, Origin::Api).await?;
    if state.telemetry.tracing() {
        state.telemetry.span(
            RunSpan::new(&run, Stage::Request, received, chrono::Utc::now())
                .text("http.request.method", "POST")
                .text("http.route", "/api/v1/runs"),
        );
    }
    Ok((StatusCode::CREATED, audited(&run), Json(run)))
}

/// Extra vars as a request gives them: a JSON object, or nothing.
pub(crate) fn extra_vars_object(v: Option<Value>) -> ApiResult<serde_json::Map<String, Value>> {
    match v {
        None | Some(Value::Null) => Ok(serde_json::Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(ApiError::invalid(
            "invalid_extra_vars",
            "extra_vars",
            format!(
                "extra_vars must be a JSON object, got {}",
                json_kind(&other)
            ),
        )),
    }
}

pub(crate) use troupe_core::text::json_kind;

/// List runs, newest first. The answer carries an `ETag`; with `If-None-Match` naming it, an
/// unchanged page is answered `304 Not Modified` with no body.
#[utoipa::path(get, path = "/api/v1/runs", params(ListQuery), responses((status = 200, body = RunList), (status = 304, description = "The page named by `If-None-Match` is unchanged")))]
async fn list_runs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let mut statuses = Vec::new();
    for s in q
        .status
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        statuses.push(s.parse::<RunStatus>().map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string()).field("status")
        })?);
    }
    let limit = super::page_limit(q.limit)?;
    let label = q.label.map(|l| match l.split_once('=') {
        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
        None => (l, None),
    });
    let filter = RunFilter {
        statuses,
        project_id: q.project,
        projects: caller.project_filter(),
        label,
        tag: q.tag,
        job_id: q.job,
        unit: q.unit,
        relaunch_of: q.relaunch_of,
        parent_id: q.parent,
    };
    let page = Page {
        before: q.cursor,
        limit,
    };
    // Read before the query: if it has not moved since a page was kept, nothing it lists
    // changed (run_json.rs).
    let generation = state.store.runs_generation();
    let read = list_page(&state, &filter, page);
    let page = state
        .run_json
        .pages
        .get_or_read((filter.clone(), page), generation, read)
        .await?;
    Ok(page.respond(&headers))
}

/// Reads a runs-list page: the ids and versions on it, then each run's JSON, built once per
/// version (run_json.rs).
async fn list_page(state: &AppState, filter: &RunFilter, page: Page) -> ApiResult<TaggedJson> {
    let listed = state.store.list_run_versions(filter, page).await?;
    let next_cursor = if listed.len() as i64 == page.limit {
        listed.last().map(|v| v.id)
    } else {
        None
    };
    let runs = state.run_json.runs(&*state.store, &listed).await?;
    let mut body = Vec::with_capacity(runs.iter().map(|r| r.len() + 1).sum::<usize>() + 48);
    body.extend_from_slice(b"{\"runs\":[");
    for (i, run) in runs.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(run);
    }
    body.push(b']');
    if let Some(cursor) = next_cursor {
        body.extend_from_slice(format!(",\"next_cursor\":{cursor}").as_bytes());
    }
    body.push(b'}');
    Ok(TaggedJson::new(body))
}

/// One run: status, times, rc and per-host summary. The answer carries an `ETag`; with
/// `If-None-Match` naming it, an unchanged run is answered `304 Not Modified` with no body.
#[utoipa::path(get, path = "/api/v1/runs/{id}", params(("id" = i64, Path)), responses((status = 200, body = Run), (status = 304, description = "The run named by `If-None-Match` is unchanged"), (status = 404, body = crate::error::ErrorBody)))]
async fn get_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    // As for the list: unchanged while the runs generation stays put (run_json.rs).
    let generation = state.store.runs_generation();
    let read = async {
        let run = state.store.get_run(id).await?;
        let json =
            serde_json::to_vec(&run).map_err(|e| ApiError::internal("serializing a run", &e))?;
        Ok(TaggedJson::new(json))
    };
    let run = state
        .run_json
        .by_id
        .get_or_read(id, generation, read)
        .await?;
    Ok(run.respond(&headers))
}

/// A run's events in counter order (ansible-runner's fields).
#[utoipa::path(get, path = "/api/v1/runs/{id}/events", params(("id" = i64, Path), EventsQuery), responses((status = 200, body = EventPage)))]
async fn list_events(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Json<EventPage>> {
    let after = q.after.unwrap_or(0).max(0);
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit must be between 1 and 10000, got {limit}"),
        )
        .field("limit"));
    }
    // Status first: events stored before a finished status was read are all there is.
    let run = state.store.get_run(id).await?;
    let events = state.store.list_events(id, after, limit).await?;
    let next_after = events.last().map_or(after, |e| e.counter);
    Ok(Json(EventPage {
        events,
        next_after,
        run_status: run.status,
    }))
}

/// A run's standard output, as ansible printed it (plain text, or with ansible's colours with
/// `ansi=true`). `X-Troupe-Run-Status` carries the run's status as it was before the output
/// was read.
#[utoipa::path(get, path = "/api/v1/runs/{id}/stdout", params(("id" = i64, Path), OutputQuery), responses((status = 200, content_type = "text/plain", body = String)))]
async fn get_stdout(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<OutputQuery>,
) -> ApiResult<Response> {
    output(&state, id, Stream::Stdout, &q).await
}

/// A run's standard error.
#[utoipa::path(get, path = "/api/v1/runs/{id}/stderr", params(("id" = i64, Path), OutputQuery), responses((status = 200, content_type = "text/plain", body = String)))]
async fn get_stderr(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<OutputQuery>,
) -> ApiResult<Response> {
    output(&state, id, Stream::Stderr, &q).await
}

async fn output(state: &AppState, id: i64, stream: Stream, q: &OutputQuery) -> ApiResult<Response> {
    let run = state.store.get_run(id).await?;
    let mut text = state.store.read_output(id, stream).await?;
    if !q.ansi {
        text = troupe_core::text::plain(&text);
    }
    let offset = q.offset.unwrap_or(0);
    let body = match text.get(offset..) {
        Some(rest) => rest.to_owned(),
        None if offset >= text.len() => String::new(),
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("offset {offset} is not at a character boundary"),
            )
            .field("offset"));
        }
    };
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        "x-troupe-run-status",
        HeaderValue::from_static(run.status.as_str()),
    );
    Ok(resp)
}

/// Per host: totals from the PLAY RECAP and the failures behind them.
#[utoipa::path(get, path = "/api/v1/runs/{id}/hosts", params(("id" = i64, Path)), responses((status = 200, body = BTreeMap<String, HostResult>)))]
async fn get_hosts(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<BTreeMap<String, HostResult>>> {
    let run = state.store.get_run(id).await?;
    let failures = state.store.host_failures(id).await?;
    let mut hosts: BTreeMap<String, HostResult> = run
        .summary
        .into_iter()
        .map(|(host, stats)| {
            let unreachable = stats.unreachable > 0;
            (
                host,
                HostResult {
                    stats,
                    unreachable,
                    failures: Vec::new(),
                },
            )
        })
        .collect();
    for ev in failures {
        let Some(host) = ev.host().map(str::to_owned) else {
            continue;
        };
        let result = ev.event_data.get("res").unwrap_or(Value::Null);
        let entry = hosts.entry(host).or_insert_with(|| HostResult {
            stats: HostStats::default(),
            unreachable: false,
            failures: Vec::new(),
        });
        if ev.event == "runner_on_unreachable" {
            entry.unreachable = true;
        }
        entry.failures.push(HostFailure {
            counter: ev.counter,
            task: ev.task().map(str::to_owned),
            msg: result.get("msg").and_then(Value::as_str).map(str::to_owned),
            event: ev.event,
            result,
        });
    }
    Ok(Json(hosts))
}

/// Stop a run. A queued run is canceled at once; a running one is stopped by its worker.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", params(("id" = i64, Path)), request_body = CancelRequest,
    responses((status = 202, body = Run), (status = 409, body = crate::error::ErrorBody)))]
async fn cancel_run(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    OptionalJson(req): OptionalJson<CancelRequest>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    let mode = req.mode.unwrap_or(CancelMode::Graceful);
    let run = state.pool.cancel_run(id, mode).await?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

/// Run a finished run again as a new run linked to it (`relaunch_of`): on all its hosts, or
/// only those that failed or were unreachable; from the start, or resuming at the task that
/// failed or where a cancel stopped it.
#[utoipa::path(post, path = "/api/v1/runs/{id}/relaunch", params(("id" = i64, Path)), request_body = RelaunchRequest,
    responses((status = 201, body = Run), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn relaunch_run(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    OptionalJson(req): OptionalJson<RelaunchRequest>,
) -> ApiResult<(StatusCode, AuditTarget, Json<Run>)> {
    let run = state.store.get_run(id).await?;
    if !run.status.is_finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "run_not_finished",
            format!(
                "run {id} is {}; relaunch it once it has finished",
                run.status
            ),
        ));
    }
    let failures = state.store.host_failures(id).await?;
    let relevant: Vec<&Event> = failures
        .iter()
        .filter(|e| req.hosts != RelaunchHosts::Unreachable || e.event == "runner_on_unreachable")
        .collect();
    let mut options = run.options.clone();
    if req.hosts != RelaunchHosts::All {
        let mut hosts: std::collections::BTreeSet<String> = run
            .summary
            .iter()
            .filter(|(_, s)| match req.hosts {
                RelaunchHosts::Failed => s.failed > 0 || s.unreachable > 0,
                _ => s.unreachable > 0,
            })
            .map(|(h, _)| h.clone())
            .collect();
        hosts.extend(relevant.iter().filter_map(|e| e.host().map(str::to_owned)));
        if hosts.is_empty() {
            return Err(ApiError::invalid(
                "no_hosts_to_relaunch",
                "hosts",
                format!(
                    "run {id} has no {} hosts",
                    if req.hosts == RelaunchHosts::Failed {
                        "failed"
                    } else {
                        "unreachable"
                    }
                ),
            ));
        }
        options.limit = Some(hosts.into_iter().collect::<Vec<_>>().join(","));
    }
    (options.start_at_task, options.start_at_position) = match req.from {
        RelaunchFrom::Start => (None, None),
        RelaunchFrom::FailedTask => {
            let (task, position) = resume_point(&state, &run, &relevant).await?;
            (Some(task), position)
        }
    };
    let inventory = state.store.get_run_inventory(id).await?;
    let origin = Origin::Relaunch {
        of: id,
        original: Box::new(Origin::of_run(&run)),
    };
    let created = state
        .launcher
        .launch(LaunchRequest::again(&run, inventory, options), origin)
        .await?;
    Ok((StatusCode::CREATED, audited(&created), Json(created)))
}

/// Where a resumed run starts: the first failure's task, else (canceled or timed out) where
/// the run stopped. By name (`--start-at-task`), and by position when the run's events
/// recorded it, so that a name several tasks share resumes at the right one.
async fn resume_point(
    state: &AppState,
    run: &Run,
    failures: &[&Event],
) -> ApiResult<(String, Option<TaskPosition>)> {
    if let Some(failure) = failures.iter().find(|e| e.task().is_some()) {
        let name = failure.task().unwrap_or_default().to_owned();
        let start = failure
            .event_data
            .get("task_uuid")
            .and_then(|v| v.as_str().map(str::to_owned));
        let position = match start {
            Some(uuid) => task_starts(state, run.id)
                .await?
                .into_iter()
                .find(|t| t.uuid == uuid)
                .and_then(|t| t.position),
            None => None,
        };
        return Ok((name, position));
    }
    if matches!(run.status, RunStatus::Canceled | RunStatus::Timeout) {
        // A graceful cancel names the task it kept from starting in the stats event.
        let last = state
            .store
            .list_events(run.id, (run.event_count - 1).max(0), 1)
            .await?;
        if let Some(stats) = last
            .first()
            .filter(|e| e.event == troupe_core::event::STATS_EVENT)
            && let Some(Value::String(task)) = stats.event_data.get("troupe_resume_task")
        {
            return Ok((task, position_in(stats, "troupe_resume_position")));
        }
        // Otherwise the run stopped inside the last task it started.
        if let Some(started) = task_starts(state, run.id).await?.pop() {
            return Ok((started.name, started.position));
        }
    }
    Err(ApiError::invalid(
        "nothing_to_resume",
        "from",
        format!(
            "run {} has no failed task to resume from and was not stopped mid-play",
            run.id
        ),
    ))
}

/// A task a run started, from its `playbook_on_task_start` event.
struct TaskStart {
    uuid: String,
    name: String,
    position: Option<TaskPosition>,
}

/// The tasks a run started, in order.
async fn task_starts(state: &AppState, run_id: i64) -> ApiResult<Vec<TaskStart>> {
    let mut after = 0;
    let mut started = Vec::new();
    loop {
        let page = state.store.list_events(run_id, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.counter;
        for e in &page {
            if e.event == "playbook_on_task_start"
                && let Some(name) = e.task()
            {
                started.push(TaskStart {
                    uuid: e.uuid.clone(),
                    name: name.to_owned(),
                    position: position_in(e, "troupe_task_position"),
                });
            }
        }
    }
    Ok(started)
}

/// The task position an event's data holds under `key`, when it holds a valid one.
fn position_in(event: &Event, key: &str) -> Option<TaskPosition> {
    event
        .event_data
        .get(key)
        .and_then(|v| serde_json::from_value::<TaskPosition>(v).ok())
        .filter(|p| p.validate().is_ok())
}

/// A new run as the audit log names it: its id, its playbook, its project (and template).
pub(crate) fn audited(run: &Run) -> AuditTarget {
    let mut detail = serde_json::json!({"project": run.project_id});
    if let Some(template) = run.template_id {
        detail["template"] = template.into();
    }
    AuditTarget::new("run", run.id)
        .named(run.playbook.clone())
        .detail(detail)
}

/// Prune finished runs now, with their events and output: those that finished longer ago than
/// `older_than`, and those older than their project's newest `keep`. What still needs a run
/// keeps it (see docs/architecture.md, Retention). Pruned in batches, as the background
/// retention does; `dry_run` only counts.
#[utoipa::path(post, path = "/api/v1/runs/prune", request_body = PruneRuns,
    responses((status = 200, body = PruneReport), (status = 422, body = crate::error::ErrorBody)))]
async fn prune_runs(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PruneRuns>,
) -> ApiResult<Json<PruneReport>> {
    let policy = prune_policy(&req, chrono::Utc::now())?;
    if req.dry_run {
        let runs = state.store.count_prunable_runs(&policy).await?;
        return Ok(Json(PruneReport {
            runs,
            dry_run: true,
            ..PruneReport::default()
        }));
    }
    let pruned = troupe_store::retention::prune(
        state.store.as_ref(),
        &policy,
        state.retention_batch,
        troupe_store::retention::BATCH_PAUSE,
    )
    .await?;
    tracing::info!(
        runs = pruned.runs,
        events = pruned.events,
        output_chunks = pruned.output_chunks,
        "pruned runs on request"
    );
    Ok(Json(PruneReport {
        runs: pruned.runs,
        events: pruned.events,
        output_chunks: pruned.output_chunks,
        dry_run: false,
    }))
}

/// The retention a prune request asks for, at `now`.
fn prune_policy(
    req: &PruneRuns,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<troupe_store::RunRetention> {
    let finished_before = match req.older_than.as_deref() {
        None => None,
        Some(text) => {
            let age = humantime::parse_duration(text.trim()).map_err(|e| {
                ApiError::invalid(
                    "invalid_duration",
                    "older_than",
                    format!("older_than {text:?} is not a duration like 30d or 12h: {e}"),
                )
            })?;
            // An age beyond chrono's range reaches back before any run.
            Some(
                chrono::Duration::from_std(age)
                    .ok()
                    .and_then(|age| now.checked_sub_signed(age))
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
            )
        }
    };
    if req.keep == Some(0) {
        return Err(ApiError::invalid(
            "invalid_keep",
            "keep",
            "keep must be at least 1 (to prune every finished run, give older_than)",
        ));
    }
    let policy = troupe_store::RunRetention {
        finished_before,
        keep_per_project: req.keep,
    };
    if policy.is_off() {
        return Err(ApiError::invalid(
            "missing_limit",
            "older_than",
            "give older_than, keep, or both",
        ));
    }
    Ok(policy)
}
