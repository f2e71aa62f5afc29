//! Confluent's error answers: an HTTP status and a body `{"error_code", "message"}`.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use tracing::error;

use crate::CONTENT_TYPE;

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// An error answer of the registry.
#[derive(Debug, thiserror::Error)]
#[error("{error_code}: {message}")]
pub struct RegistryError {
    pub status: StatusCode,
    pub error_code: u32,
    pub message: String,
}

impl RegistryError {
    fn new(status: StatusCode, error_code: u32, message: String) -> Self {
        Self {
            status,
            error_code,
            message,
        }
    }

    pub fn subject_not_found(subject: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40401,
            format!("Subject '{subject}' not found."),
        )
    }

    pub fn version_not_found(subject: &str, version: i32) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40402,
            format!("Version {version} not found for subject '{subject}'."),
        )
    }

    pub fn schema_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, 40403, "Schema not found".into())
    }

    pub fn subject_level_not_found(subject: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        )
    }

    pub fn incompatible(messages: &[String]) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject: {}",
                messages.join("; ")
            ),
        )
    }

    pub fn invalid_schema(message: String) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, 42201, message)
    }

    pub fn invalid_version(version: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
            format!(
                "The specified version '{version}' is not a valid version id. Allowed values \
                 are between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }

    pub fn invalid_compatibility(level: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            format!(
                "Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive (got {level})"
            ),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            40101,
            "Unauthorized: this call needs the registry's credentials (HTTP Basic)".into(),
        )
    }

    /// Any other refusal of the HTTP layer (an unknown path, a method a path does not
    /// take, a body that is not UTF-8): the status as the error code, as Confluent's
    /// registry answers them.
    pub fn http(status: StatusCode, message: String) -> Self {
        Self::new(status, u32::from(status.as_u16()), message)
    }

    pub fn hard_delete() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42206,
            "Hard deletes (permanent=true) are not supported: versions are soft-deleted and their ids stay valid".into(),
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            50001,
            "Error in the backend data store".into(),
        )
    }
}

impl From<sqlx::Error> for RegistryError {
    fn from(error: sqlx::Error) -> Self {
        error!(%error, "Registry store failed.");
        Self::internal()
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({ "error_code": self.error_code, "message": self.message })),
        )
            .into_response();
        _ = response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}
