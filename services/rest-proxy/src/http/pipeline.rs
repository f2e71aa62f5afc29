//! The pipeline every write goes through: authorise (a bounded, rate-limited key check),
//! rate-limit the key, read the body, then — once per `Idempotency-Key` — do the work, and
//! count the answer by route and status. Also the steps the versions share: parse a body,
//! encode a catalog event into its record, write one record.

use std::net::{IpAddr, SocketAddr};

use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, FromRequestParts, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use contracts::records::Event;
use habitat_runtime::{Codec, CodecError, partition_for};
use serde::{Deserialize, Serialize};

use crate::{
    http::error::{ApiError, Dialect},
    idempotency::{Claim, ClaimError},
    keys::{ApiKey, Unauthorized},
    state::AppState,
    validate::Problem,
    writer::{Record, Written},
};

fn body(bytes: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    bytes.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {limit} bytes"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                rejection.body_text(),
            )
        }
    })
}

pub fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut json).map_err(|error| {
        let path = error.path().to_string();
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the body is not a valid request",
        )
        .with_details(vec![Problem {
            path: if path == "." { String::new() } else { path },
            problem: error.into_inner().to_string(),
        }])
    })
}

/// The client's address, when the server was started with connection info.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

pub async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    peer: Peer,
) -> Result<ApiKey, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    state.keys.check(token, peer.0).await.map_err(|refused| {
        let message = refused.to_string();
        match refused {
            Unauthorized::StoreUnavailable(_) => ApiError::store_unavailable(message),
            Unauthorized::TooManyFailures(wait) => {
                let mut error =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_failures", message);
                error.retry_after = Some(wait.as_secs() + 1);
                error
            }
            Unauthorized::Missing => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).with_details(vec![
                    Problem {
                        path: "Authorization".to_owned(),
                        problem: "missing".to_owned(),
                    },
                ])
            }
            Unauthorized::Invalid | Unauthorized::Revoked => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
            }
        }
    })
}

/// The record of `event`: its topic, key, tenant partition and Avro value (current schema).
pub async fn record(state: &AppState, event: Event) -> Result<Record, ApiError> {
    let topic = event.topic();
    let key = event.key();
    let partitions = state
        .partitions
        .of(topic)
        .await
        .map_err(ApiError::unavailable)?;
    // Past the first record of a type the schema id is cached and encoding is a few
    // microseconds: done in place, without a hop to a blocking thread.
    let encoded = match state.codec.encode_cached(topic, &event) {
        Some(encoded) => encoded,
        None => {
            let codec = state.codec.clone();
            tokio::task::spawn_blocking(move || codec.encode(topic, &event))
                .await
                .map_err(ApiError::internal)?
        }
    };
    let value = encoded.map_err(|error| match error {
        CodecError::Unavailable(m) => ApiError::registry_unavailable(m),
        CodecError::Unauthorized(m) => ApiError::registry_refused(m),
        other => ApiError::internal(other),
    })?;
    Ok(Record {
        topic: topic.to_owned(),
        partition: partition_for(&key, partitions),
        key,
        value,
        headers: Vec::new(),
    })
}

/// Writes one record in a transaction: where it went, or 503.
pub async fn write_one(state: &AppState, record: Record) -> Result<Written, ApiError> {
    state
        .writer
        .write(vec![record])
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::unavailable("no acknowledgement"))
}

/// The answer to a request: its status and JSON body.
pub type Answer = (StatusCode, serde_json::Value);

pub fn answer<T: Serialize>(value: &T) -> Answer {
    (
        StatusCode::ACCEPTED,
        serde_json::to_value(value).unwrap_or_default(),
    )
}

/// The pipeline of a write: authorize, read the body, then — once per `Idempotency-Key`
/// — run `work`; count the answer by route and status.
pub async fn handle<F, Fut>(
    state: &AppState,
    route: &str,
    dialect: Dialect,
    peer: Peer,
    headers: &HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
    work: F,
) -> Response
where
    F: FnOnce(AppState, ApiKey, Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<Answer, ApiError>>,
{
    let outcome = async {
        let key = authorize(state, headers, peer).await?;
        if let Err(wait) = state.rate.check(&key.id) {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many requests for key {}; retry after {wait:?}",
                    key.name
                ),
            );
            error.retry_after = Some(wait.as_secs() + 1);
            return Err(error);
        }
        let bytes = body(bytes, state.limits.body_bytes)?;
        let Some(idempotency) = idempotency_key(headers)? else {
            return work(state.clone(), key, bytes).await;
        };
        let request = crate::idempotency::request_digest(route, &bytes);
        let claim = state
            .idempotency
            .claim(&key.id, &idempotency, &request)
            .await
            .map_err(|error| match error {
                ClaimError::InProgress { retry_after } => {
                    let mut refused = ApiError::new(
                        StatusCode::CONFLICT,
                        "idempotency_key_in_progress",
                        format!(
                            "the first request with this Idempotency-Key is still in progress; \
                             retry after {} s",
                            retry_after.as_secs().max(1)
                        ),
                    );
                    refused.retry_after = Some(retry_after.as_secs().max(1));
                    refused
                }
                ClaimError::Store(error) => ApiError::store_unavailable(error.to_string()),
            })?;
        match claim {
            Claim::Answered(status, body) => Ok((
                StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED),
                body,
            )),
            Claim::Conflict => Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another request",
            )),
            Claim::Mine => {
                let outcome = work(state.clone(), key.clone(), bytes).await;
                let store = &state.idempotency;
                match &outcome {
                    Ok((status, body)) => {
                        store
                            .answer(&key.id, &idempotency, status.as_u16(), body.clone())
                            .await;
                    }
                    // Nothing was written: a retry may try again.
                    Err(error) if error.status.is_server_error() => {
                        store.release(&key.id, &idempotency).await;
                    }
                    Err(error) => {
                        store
                            .answer(
                                &key.id,
                                &idempotency,
                                error.status.as_u16(),
                                error.json(dialect),
                            )
                            .await;
                    }
                }
                outcome
            }
        }
    }
    .await;
    let response = match outcome {
        Ok((status, body)) => (status, Json(body)).into_response(),
        Err(error) => error.response(dialect),
    };
    state.metrics.count(route, response.status());
    response
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(text) if (1..=255).contains(&text.len()) => Ok(Some(text.to_owned())),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_idempotency_key",
            "Idempotency-Key must be 1-255 visible ASCII characters",
        )),
    }
}
