//! Workers: `GET /api/v1/workers` and drain for people; the worker protocol remote
//! `troupe worker` agents speak (`/api/v1/worker/...`, worker tokens only): register,
//! heartbeat, claim (long poll), fetch a run's plan and project bundle, report its launch,
//! renew its lease, send its events and output in batches (stored idempotently), finish it.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;
use troupe_core::RunStatus;
use troupe_core::run::Run;
use troupe_core::worker::{NewWorker, Worker, WorkerKind, WorkerStatus, check_node, node_of};
use troupe_store::{Claimant, Lease, OutputChunk, RunFilter, RunOutcome, Stream};
use troupe_wire::workers::{
    BatchAck, ClaimRuns, ClaimedRuns, FinishRun, Goodbye, Heartbeat, HeartbeatAnswer, LaunchPlan,
    Launched, LeaseAnswer, OutputStream, Placement, RegisterWorker, Registered, RenewLease,
    RunBatch, WorkerList, WorkerQuery, WorkerView,
};
use troupe_worker::RunChange;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Longest a claim waits for work.
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting claim looks at the queue when nobody announces a run (runs queued by
/// other replicas).
const CLAIM_POLL: Duration = Duration::from_millis(500);
/// How long gone workers stay listed.
const LISTED_AFTER_GONE: chrono::Duration = chrono::Duration::hours(1);

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workers))
        .routes(routes!(placement))
        .routes(routes!(drain_worker))
        .routes(routes!(register))
        .routes(routes!(heartbeat))
        .routes(routes!(goodbye))
        .routes(routes!(claim))
        .routes(routes!(plan))
        .routes(routes!(bundle))
        .routes(routes!(launched))
        .routes(routes!(renew))
        .routes(routes!(batch))
        .routes(routes!(finish))
}

/// Every worker alive (embedded pools and remote agents), and those gone in the last hour:
/// status, labels, capacity, runs held, last heartbeat, version.
#[utoipa::path(get, path = "/api/v1/workers", responses((status = 200, body = WorkerList)))]
async fn list_workers(State(state): State<AppState>) -> ApiResult<Json<WorkerList>> {
    let now = chrono::Utc::now();
    let workers = state.store.list_workers(now - LISTED_AFTER_GONE).await?;
    let running = state
        .store
        .list_runs(
            &RunFilter {
                statuses: vec![RunStatus::Running],
                ..RunFilter::default()
            },
            troupe_store::Page {
                before: None,
                limit: 10_000,
            },
        )
        .await?;
    let silence = state.pool.lease();
    let workers = workers
        .into_iter()
        .map(|worker| {
            let mut runs: Vec<i64> = running
                .iter()
                .filter(|r| r.worker_id.as_deref() == Some(worker.id.as_str()))
                .map(|r| r.id)
                .collect();
            runs.sort_unstable();
            WorkerView {
                status: worker.status(now, silence),
                runs,
                worker,
            }
        })
        .collect();
    Ok(Json(WorkerList { workers }))
}

/// Where a run can go: the labels it requires, the live workers able to take it, and for a
/// queued run the reason it waits (no live worker has its labels; every able worker is busy
/// or draining).
#[utoipa::path(get, path = "/api/v1/runs/{id}/placement",
    params(("id" = i64, Path, description = "run id")),
    responses((status = 200, body = Placement), (status = 404, body = troupe_wire::errors::ErrorBody)))]
async fn placement(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Placement>> {
    let run = state.store.get_run(id).await?;
    let now = chrono::Utc::now();
    let silence = state.pool.lease();
    let workers = state.store.list_workers(now - LISTED_AFTER_GONE).await?;
    let required = &run.options.worker_labels;
    let splits = run.slice.is_none() && run.options.slicing().is_some();
    let live: Vec<&Worker> = workers
        .iter()
        .filter(|w| w.status(now, silence) == WorkerStatus::Active)
        .filter(|w| w.can_take(required))
        .filter(|w| !splits || w.kind == WorkerKind::Embedded)
        .collect();
    let reason = (run.status == RunStatus::Queued).then(|| {
        if live.is_empty() {
            let draining = workers
                .iter()
                .any(|w| w.status(now, silence) == WorkerStatus::Draining && w.can_take(required));
            if required.is_empty() {
                "no live worker is claiming runs".to_owned()
            } else if draining {
                format!(
                    "every live worker with the labels {} is draining",
                    required.join(",")
                )
            } else {
                format!("no live worker has the labels {}", required.join(","))
            }
        } else {
            "waiting for a free slot on an able worker".to_owned()
        }
    });
    Ok(Json(Placement {
        run_id: run.id,
        status: run.status,
        worker_labels: required.clone(),
        able_workers: live.iter().map(|w| w.id.clone()).collect(),
        reason,
    }))
}

/// Ask a worker to finish its runs and claim no more (it sees it at its next heartbeat). The
/// id is `node/incarnation`, URL-encoded (`%2F`).
#[utoipa::path(post, path = "/api/v1/workers/{id}/drain",
    params(("id" = String, Path, description = "the worker's id")),
    responses((status = 200, body = Worker), (status = 404, body = troupe_wire::errors::ErrorBody)))]
async fn drain_worker(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Worker>> {
    Ok(Json(state.store.drain_worker(&id).await?))
}

/// Register a worker (on every start). Runs a previous incarnation of the same node still
/// held are ended `error`: the worker restarted while they were in flight (it sent what it
/// had buffered for them before registering).
#[utoipa::path(post, path = "/api/v1/worker/register", request_body = RegisterWorker,
    responses((status = 200, body = Registered), (status = 422, body = troupe_wire::errors::ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterWorker>,
) -> ApiResult<Json<Registered>> {
    check_node(&req.node, "node")?;
    for label in &req.labels {
        troupe_core::run::check_worker_label(label, "labels")?;
    }
    if !(1..=1024).contains(&req.capacity) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("capacity must be between 1 and 1024, got {}", req.capacity),
        )
        .field("capacity"));
    }
    let worker_id = format!("{}/{}", req.node, uuid::Uuid::new_v4().simple());
    let failed_runs = state
        .store
        .fail_runs_of_workers(
            &format!("{}/", req.node),
            "worker lost: it restarted while the run was in flight",
        )
        .await?;
    for id in &failed_runs {
        if let Ok(run) = state.store.get_run(*id).await {
            state.hub.publish_change(RunChange::status_of(&run));
            state.hub.publish_finished(run.id, run.status);
        }
    }
    state
        .store
        .register_worker(&NewWorker {
            id: worker_id.clone(),
            name: req.name,
            kind: WorkerKind::Remote,
            labels: req.labels,
            capacity: req.capacity,
            version: req.version,
        })
        .await?;
    tracing::info!(worker = %worker_id, failed = ?failed_runs, "remote worker registered");
    Ok(Json(Registered {
        worker_id,
        lease_s: state.pool.lease().as_secs(),
        failed_runs,
    }))
}

/// A worker is alive; the answer says whether it should drain.
#[utoipa::path(post, path = "/api/v1/worker/heartbeat", request_body = Heartbeat,
    responses((status = 200, body = HeartbeatAnswer), (status = 404, body = troupe_wire::errors::ErrorBody)))]
async fn heartbeat(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<Heartbeat>,
) -> ApiResult<Json<HeartbeatAnswer>> {
    let worker = state
        .store
        .heartbeat_worker(&req.worker_id, req.active_runs)
        .await?;
    Ok(Json(HeartbeatAnswer {
        drain: worker.draining,
    }))
}

/// A worker stops.
#[utoipa::path(post, path = "/api/v1/worker/goodbye", request_body = Goodbye,
    responses((status = 204)))]
async fn goodbye(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<Goodbye>,
) -> ApiResult<StatusCode> {
    state.store.stop_worker(&req.worker_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Claim up to `max` queued runs this worker may take (it has every label they require; split
/// parents stay with servers), waiting up to `wait_ms` for one. Claimed runs are `running`
/// under the worker's id with a lease it must renew.
#[utoipa::path(post, path = "/api/v1/worker/claim", request_body = ClaimRuns,
    responses((status = 200, body = ClaimedRuns), (status = 404, body = troupe_wire::errors::ErrorBody)))]
async fn claim(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ClaimRuns>,
) -> ApiResult<Json<ClaimedRuns>> {
    let worker = live_worker(&state, &req.worker_id).await?;
    let max = usize::try_from(req.max.clamp(0, 256)).unwrap_or(1);
    let wait = Duration::from_millis(req.wait_ms).min(MAX_CLAIM_WAIT);
    if worker.draining || max == 0 {
        return Ok(Json(ClaimedRuns { runs: Vec::new() }));
    }
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribed before the first look, so a run queued in between wakes the wait.
    let mut changes = state.hub.subscribe_changes();
    let claimant = Claimant {
        worker_id: &worker.id,
        labels: &worker.labels,
        splits: false,
        job_runs: troupe_store::JobRuns::Any,
    };
    loop {
        // A drain asked for while this claim waited holds from the next look on.
        if state.store.get_worker(&worker.id).await?.draining {
            return Ok(Json(ClaimedRuns { runs: Vec::new() }));
        }
        let runs = state
            .store
            .claim_for(&claimant, state.pool.lease(), max)
            .await?;
        if !runs.is_empty() {
            for run in &runs {
                state.hub.publish_change(RunChange::status_of(run));
            }
            return Ok(Json(ClaimedRuns { runs }));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Json(ClaimedRuns { runs: Vec::new() }));
        }
        let until = deadline.min(now + CLAIM_POLL);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(RunChange::RunCreated { .. })
                    | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep_until(until).await;
                        break;
                    }
                },
                () = tokio::time::sleep_until(until) => break,
            }
        }
    }
}

/// What executing a claimed run needs: its inventory, the digest of its project bundle, the
/// commit, and the opened secrets of its credentials (for this run only).
#[utoipa::path(get, path = "/api/v1/worker/runs/{id}/plan",
    params(("id" = i64, Path, description = "run id"), WorkerQuery),
    responses((status = 200, description = "the launch plan (credentials included)"),
        (status = 409, body = troupe_wire::errors::ErrorBody)))]
async fn plan(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<WorkerQuery>,
) -> ApiResult<Response> {
    let held = bundled(&state, id, &q.worker_id).await?;
    let credentials = troupe_worker::backend::open_credentials(
        state.store.as_ref(),
        state.sealer.as_ref(),
        &held.run.options.credentials,
    )
    .await
    .map_err(unprepared)?;
    let troupe_worker::backend::OpenedVars {
        extra_vars,
        secrets,
    } = troupe_worker::backend::open_extra_vars(state.sealer.as_ref(), &held.run)
        .map_err(unprepared)?;
    let plan = LaunchPlan {
        inventory: held.inventory,
        bundle_sha256: held.bundle.sha256.clone(),
        commit: held.commit,
        credentials,
        extra_vars,
        secrets,
    };
    let mut response = Json(plan).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The project bundle of a claimed run: a gzipped tar, its SHA-256 in `x-troupe-sha256` (the
/// plan names the one to expect).
#[utoipa::path(get, path = "/api/v1/worker/runs/{id}/bundle",
    params(("id" = i64, Path, description = "run id"), WorkerQuery),
    responses((status = 200, description = "application/gzip"), (status = 409, body = troupe_wire::errors::ErrorBody)))]
async fn bundle(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<WorkerQuery>,
) -> ApiResult<Response> {
    // The bundle built for the plan a moment ago, when it is still cached; built again only
    // when not (expired, or another replica made the plan).
    let cached = q.sha256.as_deref().and_then(|sha| state.bundles.get(sha));
    let bundle = match cached {
        Some(bundle) => {
            held_run(&state, id, &q.worker_id).await?;
            bundle
        }
        None => bundled(&state, id, &q.worker_id).await?.bundle,
    };
    let mut response = bundle.bytes.clone().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    if let Ok(v) = HeaderValue::from_str(&bundle.sha256) {
        headers.insert("x-troupe-sha256", v);
    }
    Ok(response)
}

/// ansible-playbook started for a claimed run.
#[utoipa::path(post, path = "/api/v1/worker/runs/{id}/launched", request_body = Launched,
    params(("id" = i64, Path, description = "run id")),
    responses((status = 204), (status = 409, body = troupe_wire::errors::ErrorBody)))]
async fn launched(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<Launched>,
) -> ApiResult<StatusCode> {
    state
        .store
        .mark_launched(id, &req.worker_id, req.at, req.commit.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Renew the lease of a claimed run; says whether a cancel was asked for.
#[utoipa::path(post, path = "/api/v1/worker/runs/{id}/lease", request_body = RenewLease,
    params(("id" = i64, Path, description = "run id")),
    responses((status = 200, body = LeaseAnswer)))]
async fn renew(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<RenewLease>,
) -> ApiResult<Json<LeaseAnswer>> {
    let answer = match state
        .store
        .renew_lease(id, &req.worker_id, state.pool.lease())
        .await?
    {
        Lease::Held { cancel_requested } => LeaseAnswer {
            held: true,
            cancel_requested,
        },
        Lease::Lost => LeaseAnswer {
            held: false,
            cancel_requested: None,
        },
    };
    Ok(Json(answer))
}

/// Store events and output of a run this worker's node claimed, idempotently: what is already
/// stored (same event counter, same output sequence) is skipped, so a batch sent again after
/// a lost answer or a restart is stored once. Taken even after the run ended (a worker's
/// buffer may outlive its lease).
#[utoipa::path(post, path = "/api/v1/worker/runs/{id}/batches", request_body = RunBatch,
    params(("id" = i64, Path, description = "run id")),
    responses((status = 200, body = BatchAck), (status = 409, body = troupe_wire::errors::ErrorBody)))]
async fn batch(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<RunBatch>,
) -> ApiResult<Json<BatchAck>> {
    let run = state.store.get_run(id).await?;
    let claimed_here = run
        .worker_id
        .as_deref()
        .is_some_and(|w| node_of(w) == node_of(&req.worker_id));
    if !claimed_here {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_held",
            format!(
                "run {id} was not claimed by worker node {}",
                node_of(&req.worker_id)
            ),
        ));
    }
    let chunks: Vec<OutputChunk> = req
        .output
        .into_iter()
        .map(|p| OutputChunk {
            stream: match p.stream {
                OutputStream::Stdout => Stream::Stdout,
                OutputStream::Stderr => Stream::Stderr,
            },
            seq: p.seq,
            text: p.text,
        })
        .collect();
    // A worker cuts its events to its own max_event_bytes; the server's bound is what the
    // store keeps.
    let mut events = req.events;
    let max_event = state.limits.config().max_event_bytes;
    for event in &mut events {
        if let Some(bytes) = event.truncate_to(max_event) {
            tracing::debug!(
                run = id,
                counter = event.counter,
                bytes,
                "event cut to max_event_bytes"
            );
        }
    }
    let asked = std::time::Instant::now();
    state.store.append_batch(id, &events, &chunks).await?;
    let metrics = &state.telemetry.metrics;
    metrics.store_op(troupe_telemetry::StoreOp::event_batch, asked.elapsed());
    metrics.events_stored(events.len());
    state.hub.publish_events(id, &events);
    Ok(Json(BatchAck {
        events: events.len(),
    }))
}

/// Finish a claimed run (after every batch of it was acknowledged).
#[utoipa::path(post, path = "/api/v1/worker/runs/{id}/finish", request_body = FinishRun,
    params(("id" = i64, Path, description = "run id")),
    responses((status = 200, body = troupe_core::run::Run), (status = 409, body = troupe_wire::errors::ErrorBody)))]
async fn finish(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<FinishRun>,
) -> ApiResult<Json<Run>> {
    let outcome = RunOutcome {
        status: req.status,
        rc: req.rc,
        reason: req.reason,
        summary: req.summary,
    };
    let run = state.store.finish_run(id, &req.worker_id, &outcome).await?;
    state.hub.publish_change(RunChange::status_of(&run));
    state.hub.publish_finished(run.id, run.status);
    Ok(Json(run))
}

/// A registered worker that has not said goodbye.
async fn live_worker(state: &AppState, id: &str) -> ApiResult<Worker> {
    let worker = state.store.get_worker(id).await?;
    if worker.stopped_at.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "worker_stopped",
            format!(
                "worker {id} stopped or was replaced by a newer start of its node; register again"
            ),
        ));
    }
    Ok(worker)
}

fn unprepared(reason: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "cannot_prepare", reason)
}

/// A claimed run with what it runs: its inventory, commit and project bundle.
struct Bundled {
    run: Run,
    inventory: troupe_core::inventory::InventoryContent,
    commit: Option<String>,
    bundle: std::sync::Arc<crate::bundle::Bundle>,
}

/// The run `id` held by `worker_id`, and the bundle of the files it must run: for a git project
/// its commit's tree, held while it is bundled so no sync prunes it meanwhile.
async fn bundled(state: &AppState, id: i64, worker_id: &str) -> ApiResult<Bundled> {
    let run = held_run(state, id, worker_id).await?;
    let (project, inventory) = state.store.get_run_launch(run.id).await?;
    let tree = state
        .git
        .tree_for(&project)
        .await
        .map_err(|e| unprepared(e.0))?;
    let bundle = state
        .bundles
        .of(tree.path())
        .await
        .map_err(|e| unprepared(e.to_string()))?;
    Ok(Bundled {
        run,
        inventory,
        commit: tree.commit().map(str::to_owned),
        bundle,
    })
}

/// A run running under exactly this worker.
async fn held_run(state: &AppState, id: i64, worker_id: &str) -> ApiResult<Run> {
    let run = state.store.get_run(id).await?;
    if run.status != RunStatus::Running || run.worker_id.as_deref() != Some(worker_id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_held",
            format!("run {id} is not running under worker {worker_id}"),
        ));
    }
    Ok(run)
}
