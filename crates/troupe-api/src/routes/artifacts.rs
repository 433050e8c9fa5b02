//! `GET /runs/{id}/artifacts`: a finished run as ansible-runner's artifact directory,
//! downloaded as one `.tar.gz` (the archive itself is built by [`crate::artifacts`]).

use crate::AppState;
use crate::artifacts;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;
use troupe_store::StoreError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_artifacts))
}

/// A finished run's artifacts in ansible-runner's layout, as a gzipped tar:
/// `troupe-run-<id>/{job_events/<counter>-<uuid>.json, stdout, stderr, rc, status, command}`.
/// `rc` is left out when ansible-playbook never exited (a run canceled while queued, or one
/// troupe could not start). `command` is the ansible-playbook command line troupe ran, with the
/// run's private files named relative to its (since removed) private directory; extra-vars
/// values are never in it.
#[utoipa::path(get, path = "/api/v1/runs/{id}/artifacts",
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run's artifacts", content_type = "application/gzip", body = [u8]),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "The run has not finished", body = crate::error::ErrorBody)))]
async fn get_artifacts(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    let run = state.store.get_run(id).await?;
    if !run.status.is_finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "run_not_finished",
            format!(
                "run {id} is {}; its artifacts can be exported once it has finished",
                run.status
            ),
        ));
    }
    // The project may have been removed since; the command then has no working directory.
    // A git project's run ran in the tree of the commit it recorded.
    let cwd = match state.store.get_project(run.project_id).await {
        Ok(mut p) => {
            if run.commit.is_some() {
                p.sync.commit.clone_from(&run.commit);
            }
            Value::String(
                troupe_launch::playbooks::project_root(&p, &state.projects_dir)
                    .display()
                    .to_string(),
            )
        }
        Err(StoreError::NotFound { .. }) => Value::Null,
        Err(e) => return Err(e.into()),
    };
    let inventory = state.store.get_run_inventory(id).await?;
    let chunks = artifacts::archive(Arc::clone(&state.store), &run, inventory.format, cwd);

    let mut resp = Body::from_stream(chunks).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    let disposition = format!("attachment; filename=\"{}.tar.gz\"", artifacts::top_dir(id));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
