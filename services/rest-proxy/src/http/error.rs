//! The one error type of the routes: JSON `{error_code, message, details: [{path,
//! problem}]}` (`error_code` a number on v3 routes, as Confluent's clients expect). A 5xx
//! is logged with its cause; its body says what the client can do, not what failed inside.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use tracing::{error, warn};

use crate::validate::{Problem, Refusal};

/// An error answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error_code: String,
    pub message: String,
    #[serde(default)]
    pub details: Vec<Problem>,
}

/// How a route words its errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `error_code` a word: `invalid_event`.
    Habitat,
    /// `error_code` a number, as Confluent's REST Proxy: the status, or a finer code such as
    /// 40403 (no such topic).
    Confluent,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    pub retry_after: Option<u64>,
    /// The v3 `error_code` when it is not the status.
    pub confluent_code: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error_code: code.to_owned(),
                message: message.into(),
                details: Vec::new(),
            },
            retry_after: None,
            confluent_code: None,
        }
    }

    pub fn with_details(mut self, details: Vec<Problem>) -> Self {
        self.body.details = details;
        self
    }

    /// 422 with one problem.
    pub fn invalid(path: &str, problem: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "the request is not valid",
        )
        .with_details(vec![Problem {
            path: path.to_owned(),
            problem: problem.into(),
        }])
    }

    /// The body in `dialect`.
    pub fn json(&self, dialect: Dialect) -> serde_json::Value {
        match dialect {
            Dialect::Habitat => serde_json::to_value(&self.body).unwrap_or_default(),
            Dialect::Confluent => serde_json::json!({
                "error_code": self.confluent_code.unwrap_or(u32::from(self.status.as_u16())),
                "message": self.body.message,
                "details": self.body.details,
            }),
        }
    }

    pub fn response(self, dialect: Dialect) -> Response {
        let mut response = (self.status, Json(self.json(dialect))).into_response();
        if let Some(seconds) = self.retry_after {
            _ = response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }

    /// 503 with `Retry-After`: nothing was written. The cause is logged; the body names
    /// what is unavailable, not how it failed.
    fn retry_later(code: &str, what: &str, cause: &dyn std::fmt::Display) -> Self {
        warn!(error = %cause, code, "Answered 503: {what} unavailable.");
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code,
            format!("{what} is unavailable; nothing was written: retry after Retry-After"),
        );
        error.retry_after = Some(5);
        error
    }

    /// The broker cannot be reached, or did not take the records.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        Self::retry_later("broker_unavailable", "the Kafka broker", &cause)
    }

    /// The key or idempotency store (Postgres) cannot be reached.
    pub fn store_unavailable(cause: impl std::fmt::Display) -> Self {
        Self::retry_later("store_unavailable", "the key store", &cause)
    }

    pub fn registry_unavailable(cause: impl std::fmt::Display) -> Self {
        Self::retry_later("registry_unavailable", "the schema registry", &cause)
    }

    /// The registry refused the proxy's credentials: misconfigured, logged; the body says
    /// no more than that.
    pub fn registry_refused(cause: impl std::fmt::Display) -> Self {
        error!(error = %cause, "The schema registry refused the proxy's credentials.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "registry_refused",
            "the proxy cannot use the schema registry (its credentials were refused); nothing was written",
        )
    }

    /// A failure inside the proxy: logged with its cause; the body is generic.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        error!(error = %cause, "Request failed inside the proxy.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the proxy failed to handle the request; nothing was written",
        )
    }

    pub fn from_refusal(refusal: Refusal, prefix: &str) -> Self {
        match refusal {
            Refusal::NotWritable { event_type, writer } => Self::new(
                StatusCode::FORBIDDEN,
                "not_writable",
                format!(
                    "{event_type} is written by the {writer} processor only; producers may not write it"
                ),
            )
            .with_details(vec![Problem {
                path: format!("{prefix}event_type"),
                problem: format!("written by {writer}"),
            }]),
            Refusal::UnknownEventType(name) => Self::new(
                StatusCode::NOT_FOUND,
                "unknown_event_type",
                format!("{name:?} is not an event type of the catalog"),
            ),
            Refusal::Invalid(problems) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_event",
                "the event does not match its schema or breaks a rule",
            )
            .with_details(
                problems
                    .into_iter()
                    .map(|p| Problem {
                        path: format!("{prefix}{}", p.path),
                        problem: p.problem,
                    })
                    .collect(),
            ),
        }
    }
}

/// A key not granted the tenant or the event type: 403 `forbidden`.
impl From<crate::keys::Forbidden> for ApiError {
    fn from(denied: crate::keys::Forbidden) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", denied.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.response(Dialect::Habitat)
    }
}
