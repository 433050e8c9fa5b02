//! Flows (versions of flow documents) and their executions: start, follow, cancel, resume,
//! approve.

use crate::AppState;
use crate::audit::AuditTarget;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use troupe_core::flow::{ExecutionFilter, ExecutionStatus, FlowVersion};
use troupe_flow::engine::{ActionError, PutError, StartError, StartRequest};
use troupe_flow::load::{FlowError, Problem};
use troupe_store::Page;
use troupe_wire::errors::Problem as WireProblem;
use troupe_wire::flows::{
    AnswerApproval, Approval, Execution, ExecutionList, ExecutionView, ExecutionsQuery, FlowList,
    FlowView, PutFlow, StartExecution, StepRecord,
};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_flow, list_flows))
        .routes(routes!(get_flow))
        .routes(routes!(flow_versions))
        .routes(routes!(start_execution))
        .routes(routes!(list_executions))
        .routes(routes!(get_execution))
        .routes(routes!(cancel_execution))
        .routes(routes!(resume_execution))
        .routes(routes!(answer_approval))
}

fn view(version: FlowVersion) -> FlowView {
    let doc = troupe_flow::load::load(&version.document).ok();
    FlowView {
        name: version.name,
        version: version.version,
        created_at: version.created_at,
        description: doc.as_ref().and_then(|d| d.description.clone()),
        inputs: doc
            .as_ref()
            .map(|d| d.inputs.keys().cloned().collect())
            .unwrap_or_default(),
        steps: doc.as_ref().map(|d| d.steps.len()).unwrap_or_default(),
        explanation: doc
            .as_ref()
            .map(troupe_flow::explain::explain)
            .unwrap_or_default(),
        document: version.document,
    }
}

fn wire(problems: Vec<Problem>) -> Vec<WireProblem> {
    problems
        .into_iter()
        .map(|p| WireProblem {
            field: p.field,
            message: p.message,
        })
        .collect()
}

fn document_error(e: FlowError) -> ApiError {
    match e {
        FlowError::Yaml(message) => ApiError::invalid("invalid_flow", "document", message),
        FlowError::Invalid(problems) => {
            let n = problems.len();
            let first = problems
                .first()
                .map(|p| format!("{}: {}", p.field, p.message))
                .unwrap_or_default();
            let message = if n > 1 {
                format!("{first} (and {} more problem(s))", n - 1)
            } else {
                first
            };
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_flow", message)
                .problems(wire(problems))
        }
    }
}

impl From<PutError> for ApiError {
    fn from(e: PutError) -> Self {
        match e {
            PutError::Document(e) => document_error(e),
            PutError::Store(e) => e.into(),
        }
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::UnknownFlow(name) => ApiError::not_found("flow", format!("{name:?}")),
            StartError::Document { name, source } => ApiError::new(
                StatusCode::CONFLICT,
                "flow_broken",
                format!("the stored flow {name:?} no longer loads: {source}"),
            ),
            StartError::Inputs(problems) => {
                let message = problems
                    .iter()
                    .map(|p| format!("{}: {}", p.field, p.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_inputs", message)
                    .problems(wire(problems))
            }
            StartError::Seal(why) => ApiError::internal("could not seal the secret inputs", &why),
            StartError::Store(e) => e.into(),
        }
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::Store(e) => e.into(),
        }
    }
}

/// Store a flow document: a new version when it differs from the newest one.
#[utoipa::path(post, path = "/api/v1/flows", request_body = PutFlow,
    responses((status = 201, body = FlowView), (status = 422, body = crate::error::ErrorBody)))]
async fn put_flow(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PutFlow>,
) -> ApiResult<(StatusCode, AuditTarget, Json<FlowView>)> {
    let (_, version) = state.flows.put_flow(&req.document).await?;
    let target = AuditTarget::new("flow", &version.name)
        .detail(serde_json::json!({"version": version.version}));
    Ok((StatusCode::CREATED, target, Json(view(version))))
}

/// The newest version of every flow.
#[utoipa::path(get, path = "/api/v1/flows", responses((status = 200, body = FlowList)))]
async fn list_flows(State(state): State<AppState>) -> ApiResult<Json<FlowList>> {
    let flows = state
        .store
        .list_flows()
        .await?
        .into_iter()
        .map(view)
        .collect();
    Ok(Json(FlowList { flows }))
}

/// Which version of a flow.
#[derive(Debug, serde::Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    /// The version (the newest when absent).
    version: Option<i64>,
}

/// One flow: its newest version, or `?version=N`.
#[utoipa::path(get, path = "/api/v1/flows/{name}", params(("name" = String, Path), VersionQuery),
    responses((status = 200, body = FlowView), (status = 404, body = crate::error::ErrorBody)))]
async fn get_flow(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> ApiResult<Json<FlowView>> {
    Ok(Json(view(state.store.get_flow(&name, q.version).await?)))
}

/// Every version of one flow, newest first.
#[utoipa::path(get, path = "/api/v1/flows/{name}/versions", params(("name" = String, Path)),
    responses((status = 200, body = FlowList), (status = 404, body = crate::error::ErrorBody)))]
async fn flow_versions(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<FlowList>> {
    let versions = state.store.flow_versions(&name).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found("flow", format!("{name:?}")));
    }
    Ok(Json(FlowList {
        flows: versions.into_iter().map(view).collect(),
    }))
}

/// Start an execution of a flow with inputs.
#[utoipa::path(post, path = "/api/v1/flows/{name}/executions", params(("name" = String, Path)),
    request_body = StartExecution,
    responses((status = 201, body = Execution), (status = 404, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
async fn start_execution(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<StartExecution>,
) -> ApiResult<(StatusCode, AuditTarget, Json<Execution>)> {
    let execution = state
        .flows
        .start(StartRequest {
            flow: name,
            version: req.version,
            inputs: req.inputs,
            started_by: "api".into(),
            parent: None,
        })
        .await?;
    let target = AuditTarget::new("execution", execution.id).named(execution.flow.clone());
    Ok((StatusCode::CREATED, target, Json(execution)))
}

/// Executions, newest first.
#[utoipa::path(get, path = "/api/v1/executions", params(ExecutionsQuery),
    responses((status = 200, body = ExecutionList), (status = 400, body = crate::error::ErrorBody)))]
async fn list_executions(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ExecutionsQuery>,
) -> ApiResult<Json<ExecutionList>> {
    let status = match q.status.as_deref() {
        Some(s) => Some(s.parse::<ExecutionStatus>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!(
                    "status {s:?} is not one of {}",
                    ExecutionStatus::ALL
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .field("status")
        })?),
        None => None,
    };
    let limit = super::page_limit(q.limit)?;
    let filter = ExecutionFilter {
        flow: q.flow,
        status,
        parent: q.parent,
    };
    let executions = state
        .store
        .list_executions(
            &filter,
            Page {
                before: q.cursor,
                limit,
            },
        )
        .await?;
    let next_cursor = (executions.len() as i64 == limit)
        .then(|| executions.last().map(|e| e.id))
        .flatten();
    Ok(Json(ExecutionList {
        executions,
        next_cursor,
    }))
}

/// One execution, with every step's status, attempts, timings, result and runs.
#[utoipa::path(get, path = "/api/v1/executions/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = ExecutionView), (status = 404, body = crate::error::ErrorBody)))]
async fn get_execution(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ExecutionView>> {
    let execution = state.store.get_execution(id).await?;
    let steps = state.store.list_steps(id).await?;
    Ok(Json(ExecutionView { execution, steps }))
}

/// Cancel an execution: at once when queued; else the step in flight is stopped gracefully,
/// then `finally` runs.
#[utoipa::path(post, path = "/api/v1/executions/{id}/cancel", params(("id" = i64, Path)),
    responses((status = 202, body = Execution), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
async fn cancel_execution(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<(StatusCode, Json<Execution>)> {
    Ok((StatusCode::ACCEPTED, Json(state.flows.cancel(id).await?)))
}

/// Resume a failed, canceled or timed-out execution: steps that succeeded are not run again.
#[utoipa::path(post, path = "/api/v1/executions/{id}/resume", params(("id" = i64, Path)),
    responses((status = 202, body = Execution), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
async fn resume_execution(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<(StatusCode, Json<Execution>)> {
    Ok((StatusCode::ACCEPTED, Json(state.flows.resume(id).await?)))
}

/// Approve or deny a waiting approval step (`step` is the step's id in `steps`, or
/// `<phase>/<id>`; `/` written `%2F`).
#[utoipa::path(post, path = "/api/v1/executions/{id}/approvals/{step}",
    params(("id" = i64, Path), ("step" = String, Path)), request_body = AnswerApproval,
    responses((status = 200, body = StepRecord), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
async fn answer_approval(
    State(state): State<AppState>,
    ApiPath((id, step)): ApiPath<(i64, String)>,
    ApiJson(req): ApiJson<AnswerApproval>,
) -> ApiResult<Json<StepRecord>> {
    let approval = Approval {
        approved: req.approved,
        by: req.by.unwrap_or_else(|| "api".into()),
        comment: req.comment,
    };
    Ok(Json(state.flows.answer(id, &step, &approval).await?))
}
