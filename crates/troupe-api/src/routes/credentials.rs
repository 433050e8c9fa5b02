//! Credentials: secrets runs use (SSH keys, become and vault passwords, env vars), sealed with
//! the server's key before they are stored. No answer, log line or error holds a secret value.

use crate::AppState;
use crate::audit::AuditTarget;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use troupe_core::credential::{CredentialFields, NewCredential};
use troupe_wire::credentials::{CreateCredential, Credential, CredentialList};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_credential, list_credentials))
        .routes(routes!(get_credential, delete_credential))
}

/// The body as a credential request. serde quotes a string it did not expect in its message
/// (`invalid type: string "...", expected a map`); that string may be a secret, so quoted
/// text is left out of the answer.
fn parse_body(body: Value) -> ApiResult<CreateCredential> {
    serde_json::from_value(body).map_err(|e| {
        let mut message = String::new();
        let mut quoted = false;
        for c in e.to_string().chars() {
            if c == '"' {
                if !quoted {
                    message.push_str("\"…\"");
                }
                quoted = !quoted;
            } else if !quoted {
                message.push(c);
            }
        }
        let field = message
            .strip_prefix("unknown field `")
            .or_else(|| message.strip_prefix("missing field `"))
            .and_then(|rest| rest.split_once('`'))
            .map(|(f, _)| f.to_owned());
        let mut err = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("the body is not a credential: {message}"),
        );
        if let Some(f) = field {
            err = err.field(f);
        }
        err
    })
}

/// Create a credential. Its secret fields are sealed (ChaCha20-Poly1305, with the server's
/// key) before they are stored, and never sent back. 422 naming the field for a field that
/// does not belong to the kind, a missing one, or a private key that is not one; 409 when the
/// name is taken.
#[utoipa::path(post, path = "/api/v1/credentials", request_body = CreateCredential,
    responses((status = 201, body = Credential), (status = 409, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
async fn create_credential(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, AuditTarget, Json<Credential>)> {
    let req = parse_body(body)?;
    let new = NewCredential::from_fields(
        req.name,
        req.kind,
        CredentialFields {
            private_key: req.private_key,
            passphrase: req.passphrase,
            username: req.username,
            password: req.password,
            vault_id: req.vault_id,
            token: req.token,
            vars: req.vars,
        },
    )?;
    let sealed = troupe_core::credential::seal(state.sealer.as_ref(), &new)
        .map_err(|e| ApiError::internal("could not seal the credential", &e))?;
    let credential = state.store.create_credential(&sealed).await?;
    tracing::info!(id = credential.id, name = %credential.name, kind = %credential.kind, "credential created");
    let target = AuditTarget::new("credential", credential.id)
        .named(credential.name.clone())
        .detail(serde_json::json!({"kind": credential.kind}));
    Ok((StatusCode::CREATED, target, Json(credential)))
}

/// Every credential, by name: names, kinds, usernames and vault ids, never a secret.
#[utoipa::path(get, path = "/api/v1/credentials", responses((status = 200, body = CredentialList)))]
async fn list_credentials(State(state): State<AppState>) -> ApiResult<Json<CredentialList>> {
    Ok(Json(CredentialList {
        credentials: state.store.list_credentials().await?,
    }))
}

/// One credential, without its secret.
#[utoipa::path(get, path = "/api/v1/credentials/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = Credential), (status = 404, body = crate::error::ErrorBody)))]
async fn get_credential(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Credential>> {
    Ok(Json(state.store.get_credential(id).await?))
}

/// Delete a credential. Runs already queued that name it fail when they start.
#[utoipa::path(delete, path = "/api/v1/credentials/{id}", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
async fn delete_credential(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    state.store.delete_credential(id).await?;
    tracing::info!(id, "credential deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::parse_body;
    use serde_json::json;

    #[test]
    fn a_mistyped_body_never_quotes_its_strings() {
        let e = parse_body(json!({"name": "x", "kind": "env", "vars": "AWS_KEY=s3cr3t"}))
            .expect_err("vars is a map");
        assert!(!e.message.contains("s3cr3t"), "{}", e.message);
        assert!(e.message.contains("expected a map"), "{}", e.message);
        let e = parse_body(json!({"name": "x", "kind": "env", "pasword": "s3cr3t"}))
            .expect_err("unknown field");
        assert_eq!(e.field.as_deref(), Some("pasword"));
        assert!(!e.message.contains("s3cr3t"), "{}", e.message);
        let e = parse_body(json!({"name": "x"})).expect_err("no kind");
        assert_eq!(e.field.as_deref(), Some("kind"));
    }
}
