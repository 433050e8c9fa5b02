//! Pansible's API under `/pansible/api/v1`: a compatibility layer over troupe's own resources,
//! with no store of its own but what troupe has no resource for (docs/pansible.md).
//!
//! - an inventory is an inventory (always YAML, as Pansible takes it);
//! - a playbook is a git project, cloned on create, plus the file its jobs run (its entry);
//! - an app is a name with playbooks and inventories linked to it;
//! - a job is a run of the playbook's entry against the inventory, labelled with the job's
//!   uuid and env (split into slices of `hosts_per_task` hosts when that is configured);
//! - a job's result is built from the run's summary and failure events, and its progress is
//!   the run's event stream, each host result turned into Pansible's message.
//!
//! Every route needs a token, as troupe's own do; Pansible clients send it in `COFFEE_TOKEN`.

use super::stream::{Frame, pump_ws_with, start_run_stream};
use super::{IdOrName, find_inventory, shown};
use crate::AppState;
use crate::audit::AuditTarget;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use std::collections::BTreeMap;
use troupe_core::inventory::{Inventory, InventoryFormat, NewInventory};
use troupe_core::project::{NewProject, PlaybookRef, Project, ProjectSource};
use troupe_core::run::{Labels, Origin, Run, RunOptions};
use troupe_launch::{InventorySource, LaunchRequest, ProjectRef, Ref};
use troupe_store::pansible::AppLink;
use troupe_store::{Page, RunFilter, StoreError};
use troupe_wire::pansible::{
    ENV_LABEL, JOB_LABEL, NewPansibleApp, NewPansibleInventory, NewPansibleJob,
    NewPansiblePlaybook, PansibleApp, PansibleAppInventory, PansibleAppPlaybook, PansibleFailure,
    PansibleHostResult, PansibleInventory, PansibleJob, PansibleJobResult, PansiblePlaybook,
    PansibleProgress, PansibleStats,
};
use troupe_wire::streams::RunStreamMessage;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What `pansible.yml` (or troupe's own configuration) sets for Pansible's API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PansibleSettings {
    /// Split each job into slices of at most this many hosts, one ansible-playbook each,
    /// run in parallel by any workers (Pansible's "tasks"); `None` runs a job as one.
    pub hosts_per_task: Option<u32>,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_inventory))
        .routes(routes!(get_inventory))
        .routes(routes!(create_playbook))
        .routes(routes!(get_playbook))
        .routes(routes!(create_app))
        .routes(routes!(get_app))
        .routes(routes!(link_playbook))
        .routes(routes!(link_inventory))
        .routes(routes!(create_job))
        .routes(routes!(get_job))
        .routes(routes!(job_result))
        .routes(routes!(job_progress))
}

fn inventory_shown(inv: Inventory) -> PansibleInventory {
    PansibleInventory {
        id: inv.id,
        name: inv.name,
        env: inv.env,
        version: inv.version,
        hosts: inv.content.hosts,
        vars: inv.content.vars,
    }
}

fn app_shown(app: troupe_store::pansible::PansibleApp) -> PansibleApp {
    PansibleApp {
        id: app.id,
        appid: app.appid,
        playbooks: app.playbooks,
        inventories: app.inventories,
    }
}

/// Store an inventory: `hosts` is Ansible's YAML inventory, `vars` a YAML mapping of group to
/// variables; both are checked (with line and column on errors). The same inventory as
/// `POST /api/v1/inventories` with `format: yaml` makes.
#[utoipa::path(post, path = "/pansible/api/v1/inventory", tag = "pansible", request_body = NewPansibleInventory,
    responses((status = 201, body = PansibleInventory), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn create_inventory(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<NewPansibleInventory>,
) -> ApiResult<(StatusCode, AuditTarget, Json<PansibleInventory>)> {
    let new = NewInventory {
        name: req.name,
        env: req.env,
        version: req.version,
        format: InventoryFormat::Yaml,
        hosts: req.hosts,
        vars: req.vars,
    };
    let count = super::inventories::check(&new)?;
    let inv = state.store.create_inventory(&new, count).await?;
    let target = AuditTarget::new("inventory", inv.id).named(inv.name.clone());
    Ok((StatusCode::CREATED, target, Json(inventory_shown(inv))))
}

/// One inventory (any of troupe's, INI ones as they were written).
#[utoipa::path(get, path = "/pansible/api/v1/inventory/{id}", tag = "pansible", params(("id" = i64, Path)),
    responses((status = 200, body = PansibleInventory), (status = 404, body = crate::error::ErrorBody)))]
async fn get_inventory(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<PansibleInventory>> {
    Ok(Json(inventory_shown(state.store.get_inventory(id).await?)))
}

fn playbook_shown(project: Project, entry: String) -> PansiblePlaybook {
    let project = shown(project);
    let git_repo = match project.source {
        ProjectSource::Git { url, .. } => url,
        ProjectSource::Dir { path } => path,
    };
    PansiblePlaybook {
        id: project.id,
        name: project.name,
        git_repo,
        entry,
    }
}

/// Store a playbook: a git project cloned from `git_repo` (before anything is stored: a
/// repository git cannot clone is `422 sync_failed`), and `entry`, the file its jobs run.
/// The entry is checked to be a path inside the repository; that the file exists is checked
/// when a job runs it (a sync may bring it).
#[utoipa::path(post, path = "/pansible/api/v1/playbook", tag = "pansible", request_body = NewPansiblePlaybook,
    responses((status = 201, body = PansiblePlaybook), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn create_playbook(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<NewPansiblePlaybook>,
) -> ApiResult<(StatusCode, AuditTarget, Json<PansiblePlaybook>)> {
    let new = NewProject {
        name: req.name,
        source: ProjectSource::Git {
            url: req.git_repo,
            git_ref: None,
            credential: None,
        },
    };
    new.validate().map_err(|e| {
        let field = if e.field.starts_with("source") {
            "git_repo".to_owned()
        } else {
            e.field.clone()
        };
        ApiError::from(e).field(field)
    })?;
    let entry = PlaybookRef::parse(&req.entry)
        .map_err(|e| ApiError::from(e).field("entry"))?
        .as_str()
        .to_owned();
    let staged = super::git::stage_git_project(&state, &new)
        .await
        .map_err(|e| match e.field.as_deref() {
            Some(f) if f.starts_with("source") => e.field("git_repo"),
            _ => e,
        })?;
    let project = state.store.create_pansible_playbook(&new, &entry).await?;
    let project = super::git::place_git_project(&state, staged, project).await?;
    let target = AuditTarget::new("project", project.id).named(project.name.clone());
    Ok((
        StatusCode::CREATED,
        target,
        Json(playbook_shown(project, entry)),
    ))
}

/// One playbook.
#[utoipa::path(get, path = "/pansible/api/v1/playbook/{id}", tag = "pansible", params(("id" = i64, Path)),
    responses((status = 200, body = PansiblePlaybook), (status = 404, body = crate::error::ErrorBody)))]
async fn get_playbook(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<PansiblePlaybook>> {
    let playbook = state.store.get_pansible_playbook(id).await?;
    let project = state.store.get_project(playbook.project_id).await?;
    Ok(Json(playbook_shown(project, playbook.entry)))
}

/// Store an app, with nothing linked to it yet.
#[utoipa::path(post, path = "/pansible/api/v1/app", tag = "pansible", request_body = NewPansibleApp,
    responses((status = 201, body = PansibleApp), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn create_app(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<NewPansibleApp>,
) -> ApiResult<(StatusCode, AuditTarget, Json<PansibleApp>)> {
    troupe_core::project::validate_name(&req.appid, "appid")?;
    let app = state.store.create_pansible_app(&req.appid).await?;
    let target = AuditTarget::new("pansible_app", app.id).named(app.appid.clone());
    Ok((StatusCode::CREATED, target, Json(app_shown(app))))
}

/// One app, with the playbooks and inventories linked to it.
#[utoipa::path(get, path = "/pansible/api/v1/app/{id}", tag = "pansible", params(("id" = i64, Path)),
    responses((status = 200, body = PansibleApp), (status = 404, body = crate::error::ErrorBody)))]
async fn get_app(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<PansibleApp>> {
    Ok(Json(app_shown(state.store.get_pansible_app(id).await?)))
}

/// The app a link names; 422 naming `app_id` when there is none.
async fn linked_app(state: &AppState, app_id: i64) -> ApiResult<()> {
    match state.store.get_pansible_app(app_id).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound { .. }) => Err(ApiError::invalid(
            "unknown_app",
            "app_id",
            format!("no app with id {app_id}"),
        )),
        Err(e) => Err(e.into()),
    }
}

async fn link(
    state: &AppState,
    app_id: i64,
    link: AppLink,
) -> ApiResult<(AuditTarget, Json<PansibleApp>)> {
    let app = state.store.link_pansible_app(app_id, link).await?;
    let target = AuditTarget::new("pansible_app", app.id).named(app.appid.clone());
    Ok((target, Json(app_shown(app))))
}

/// Link a playbook to an app (linking it again changes nothing). Answers the app.
#[utoipa::path(post, path = "/pansible/api/v1/app/playbook", tag = "pansible", request_body = PansibleAppPlaybook,
    responses((status = 200, body = PansibleApp), (status = 422, body = crate::error::ErrorBody)))]
async fn link_playbook(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PansibleAppPlaybook>,
) -> ApiResult<(AuditTarget, Json<PansibleApp>)> {
    linked_app(&state, req.app_id).await?;
    find_playbook(&state, None, req.playbook_id).await?;
    link(&state, req.app_id, AppLink::Playbook(req.playbook_id)).await
}

/// Link an inventory to an app (linking it again changes nothing). Answers the app.
#[utoipa::path(post, path = "/pansible/api/v1/app/inventory", tag = "pansible", request_body = PansibleAppInventory,
    responses((status = 200, body = PansibleApp), (status = 422, body = crate::error::ErrorBody)))]
async fn link_inventory(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PansibleAppInventory>,
) -> ApiResult<(AuditTarget, Json<PansibleApp>)> {
    linked_app(&state, req.app_id).await?;
    find_inventory(&state, &IdOrName::Id(req.inventory_id), "inventory_id").await?;
    link(&state, req.app_id, AppLink::Inventory(req.inventory_id)).await
}

/// The playbook a request names (and the caller may see); 422 naming `playbook_id` otherwise.
async fn find_playbook(
    state: &AppState,
    caller: Option<&Caller>,
    id: i64,
) -> ApiResult<troupe_store::pansible::PansiblePlaybook> {
    match state.store.get_pansible_playbook(id).await {
        Ok(p) if caller.is_none_or(|c| c.sees(p.project_id)) => Ok(p),
        Ok(_) | Err(StoreError::NotFound { .. }) => Err(ApiError::invalid(
            "unknown_playbook",
            "playbook_id",
            format!("no playbook with id {id}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Run a playbook's entry against an inventory: one troupe run, labelled `pansible.job` (the
/// uuid answered) and `pansible.env`. The inventory's `env`, when it has one, must be the
/// job's. With `hosts_per_task` configured, the run is split into slices of that many hosts.
#[utoipa::path(post, path = "/pansible/api/v1/job", tag = "pansible", request_body = NewPansibleJob,
    responses((status = 201, body = PansibleJob), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn create_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<NewPansibleJob>,
) -> ApiResult<(StatusCode, AuditTarget, Json<PansibleJob>)> {
    if req.env.is_empty() || req.env.len() > 100 || req.env.contains('\0') {
        return Err(ApiError::invalid(
            "invalid_field",
            "env",
            "env must be 1 to 100 characters",
        ));
    }
    let playbook = find_playbook(&state, Some(&caller), req.playbook_id).await?;
    let inventory = find_inventory(&state, &IdOrName::Id(req.inventory_id), "inventory_id").await?;
    if let Some(env) = inventory.env.as_deref()
        && env != req.env
    {
        return Err(ApiError::invalid(
            "env_mismatch",
            "env",
            format!(
                "inventory {} is for env {env:?}, not {:?}",
                inventory.id, req.env
            ),
        ));
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    let labels = Labels::from([
        (JOB_LABEL.to_owned(), uuid.clone()),
        (ENV_LABEL.to_owned(), req.env.clone()),
    ]);
    let options = RunOptions {
        slice_size: state.pansible.hosts_per_task,
        ..RunOptions::default()
    };
    let request = LaunchRequest {
        labels,
        ..LaunchRequest::playbook(
            ProjectRef::Ref(Ref::Id(playbook.project_id)),
            playbook.entry,
            InventorySource::Stored(Ref::Id(inventory.id)),
            options,
        )
    };
    let run = state
        .launcher
        .launch(request, Origin::Api)
        .await
        .map_err(|e| {
            // Named as the job's body names them.
            let e = ApiError::from(e);
            match e.field.as_deref() {
                Some("playbook" | "project") => e.field("playbook_id"),
                Some("inventory") => e.field("inventory_id"),
                _ => e,
            }
        })?;
    let target = super::runs::audited(&run);
    Ok((StatusCode::CREATED, target, Json(job_shown(&run, uuid))))
}

fn job_shown(run: &Run, uuid: String) -> PansibleJob {
    PansibleJob {
        id: run.id,
        uuid,
        env: run.labels.get(ENV_LABEL).cloned().unwrap_or_default(),
        playbook_id: run.project_id,
        inventory_id: run.inventory_id.unwrap_or_default(),
        status: run.status.as_str().to_owned(),
    }
}

/// The run of the job `uuid`, if the caller may see it; 404 otherwise.
async fn find_job(state: &AppState, caller: &Caller, uuid: &str) -> ApiResult<(Run, String)> {
    let not_found = || ApiError::not_found("job", uuid);
    let uuid = uuid::Uuid::parse_str(uuid)
        .map_err(|_| not_found())?
        .to_string();
    let filter = RunFilter {
        label: Some((JOB_LABEL.to_owned(), Some(uuid.clone()))),
        projects: caller.project_filter(),
        ..RunFilter::default()
    };
    // Slices carry their split run's labels; the job is the run that is no slice.
    let runs = state
        .store
        .list_runs(
            &filter,
            Page {
                before: None,
                limit: 1001,
            },
        )
        .await?;
    let run = runs
        .into_iter()
        .find(|r| r.parent_id.is_none())
        .ok_or_else(not_found)?;
    Ok((run, uuid))
}

/// One job.
#[utoipa::path(get, path = "/pansible/api/v1/job/{uuid}", tag = "pansible", params(("uuid" = String, Path)),
    responses((status = 200, body = PansibleJob), (status = 404, body = crate::error::ErrorBody)))]
async fn get_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(uuid): ApiPath<String>,
) -> ApiResult<Json<PansibleJob>> {
    let (run, uuid) = find_job(&state, &caller, &uuid).await?;
    Ok(Json(job_shown(&run, uuid)))
}

/// The playbook uuid (Pansible's task id) of the first events of `run_id`, if it has any.
async fn task_of(state: &AppState, run_id: i64) -> ApiResult<Option<String>> {
    let events = state.store.list_events(run_id, 0, 20).await?;
    Ok(events.iter().find_map(|e| {
        e.event_data
            .get("playbook_uuid")
            .and_then(|v| v.as_str().map(str::to_owned))
    }))
}

/// Which task ran each host: a split job's slices each ran their own hosts.
async fn tasks_by_host(
    state: &AppState,
    run: &Run,
) -> ApiResult<(BTreeMap<String, String>, Option<String>)> {
    let mut by_host = BTreeMap::new();
    if run.options.slicing().is_some() {
        let filter = RunFilter {
            parent_id: Some(run.id),
            ..RunFilter::default()
        };
        let slices = state
            .store
            .list_runs(
                &filter,
                Page {
                    before: None,
                    limit: 1000,
                },
            )
            .await?;
        for slice in slices {
            if let Some(task) = task_of(state, slice.id).await? {
                for host in slice.summary.keys() {
                    by_host.insert(host.clone(), task.clone());
                }
            }
        }
    }
    Ok((by_host, task_of(state, run.id).await?))
}

/// A job's result by host: its totals (from the PLAY RECAP; complete once the job has ended)
/// and the tasks that failed on it (`failures`, `null` when none did). A host that was
/// unreachable has `unreachable: true`; its unreachable results are not failures.
#[utoipa::path(get, path = "/pansible/api/v1/job/result/{uuid}", tag = "pansible", params(("uuid" = String, Path)),
    responses((status = 200, body = BTreeMap<String, PansibleHostResult>), (status = 404, body = crate::error::ErrorBody)))]
async fn job_result(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(uuid): ApiPath<String>,
) -> ApiResult<Json<PansibleJobResult>> {
    let (run, uuid) = find_job(&state, &caller, &uuid).await?;
    let events = state.store.host_failures(run.id).await?;
    let (tasks, first_task) = tasks_by_host(&state, &run).await?;
    let default_task = first_task.unwrap_or_else(|| uuid.clone());
    let start = run.started_at.unwrap_or(run.created_at);
    let mut hosts: BTreeMap<String, (i64, bool)> = run
        .summary
        .iter()
        .map(|(host, stats)| (host.clone(), (stats.failed, stats.unreachable > 0)))
        .collect();
    for ev in &events {
        if let Some(host) = ev.host() {
            let entry = hosts.entry(host.to_owned()).or_default();
            if ev.event == "runner_on_unreachable" {
                entry.1 = true;
            }
        }
    }
    let mut result = PansibleJobResult::new();
    for (i, (host, (failed, unreachable))) in hosts.into_iter().enumerate() {
        let id = i64::try_from(i).unwrap_or(i64::MAX - 1) + 1;
        let failures: Vec<PansibleFailure> = events
            .iter()
            .filter(|e| e.event == "runner_on_failed" && e.host() == Some(host.as_str()))
            .map(|e| PansibleFailure {
                id: e.counter,
                result: e
                    .event_data
                    .get("res")
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "{}".to_owned()),
                stats_id: id,
            })
            .collect();
        // Before the recap, the failures seen so far are the count.
        let failed = failed.max(i64::try_from(failures.len()).unwrap_or(i64::MAX));
        let stats = PansibleStats {
            failed,
            id,
            job_start_time: start,
            run_id: tasks.get(&host).unwrap_or(&default_task).clone(),
            target: host.clone(),
            unreachable,
        };
        result.insert(
            host,
            PansibleHostResult {
                failures: (!failures.is_empty()).then_some(failures),
                stats,
            },
        );
    }
    Ok(Json(result))
}

/// A run stream frame as Pansible's progress message: host results only.
fn progress_frame(frame: Frame, job: &str) -> Option<Bytes> {
    if frame.name != "event" {
        return None;
    }
    let Ok(RunStreamMessage::Event { event }) = serde_json::from_slice(&frame.json) else {
        return None;
    };
    let kind = PansibleProgress::kind_of(&event.event)?;
    let data = &event.event_data;
    let text = |key: &str| data.get(key).and_then(|v| v.as_str().map(str::to_owned));
    let message = PansibleProgress {
        task: text("playbook_uuid").unwrap_or_else(|| job.to_owned()),
        kind: kind.to_owned(),
        target: event.host()?.to_owned(),
        job: job.to_owned(),
        task_name: event.task().map(str::to_owned),
        result: data.get("res").unwrap_or(serde_json::Value::Null),
    };
    serde_json::to_vec(&message).ok().map(Bytes::from)
}

/// Follow a job over WebSocket: one JSON text message per host result of a task
/// (`PansibleProgress`: `_pansible_task`, `type`, `target`, `_pansible_job`, `result`), from
/// the job's start (results already stored first), then live; the server closes the socket
/// when the job has ended (or when the client fell too far behind: reconnecting replays it).
#[utoipa::path(get, path = "/pansible/api/v1/job/progress/{uuid}", tag = "pansible", params(("uuid" = String, Path)),
    responses((status = 101, description = "WebSocket of PansibleProgress", body = PansibleProgress),
        (status = 404, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
async fn job_progress(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(uuid): ApiPath<String>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let (run, job) = find_job(&state, &caller, &uuid).await?;
    let guard = state.limits.open_stream(caller.token_id)?;
    let rx = start_run_stream(&state, run.id, 0);
    Ok(ws
        .on_upgrade(move |socket| {
            pump_ws_with(socket, rx, guard, move |frame| progress_frame(frame, &job))
        })
        .into_response())
}
