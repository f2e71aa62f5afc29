//! The HTTP API: `POST /v1/events`, `POST /v1/events:batch`, the Confluent REST v3 records
//! API ([`crate::v3`]), `/openapi.json`, `/healthz`, `/readyz`, `/metrics`. Errors are JSON
//! `{error_code, message, details: [{path, problem}]}` (`error_code` a number on v3 routes,
//! as Confluent's clients expect).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::Utc;
use contracts::records::Event;
use habitat_runtime::{Codec, CodecError, avro::AvroCodec, partition_for};
use prometheus::{IntCounterVec, Opts, Registry, TextEncoder};
use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, Consumer},
};
use serde::{Deserialize, Serialize};

use crate::{
    idempotency::{Claim, ClaimError, Idempotency},
    keys::{ApiKey, Keys, Unauthorized},
    registry::Schemas,
    validate::{Problem, Refusal, Stamp, Submission, event_of},
    writer::{Record, Writer, Written},
};

/// Limits of a request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of a request body (413 above).
    pub body_bytes: usize,
    /// Events of a batch (422 above).
    pub batch_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 1024 * 1024,
            batch_events: 500,
        }
    }
}

/// What the broker says of a topic: its partitions and their replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicShape {
    pub partitions: i32,
    pub replication_factor: i32,
}

/// The cluster's id and the shape of its topics, asked of the broker once each.
pub struct Partitions {
    client: ClientConfig,
    known: RwLock<HashMap<String, TopicShape>>,
    cluster: RwLock<Option<String>>,
}

impl Partitions {
    pub fn new(client: ClientConfig) -> Self {
        Self {
            client,
            known: RwLock::new(HashMap::new()),
            cluster: RwLock::new(None),
        }
    }

    /// The partition count of `topic`.
    pub async fn of(self: &Arc<Self>, topic: &str) -> Result<i32, String> {
        Ok(self.shape(topic).await?.partitions)
    }

    /// Partitions and replication factor of `topic`.
    pub async fn shape(self: &Arc<Self>, topic: &str) -> Result<TopicShape, String> {
        if let Some(shape) = self.known.read().expect("partitions lock").get(topic) {
            return Ok(*shape);
        }
        let name = topic.to_owned();
        let shape = self
            .ask(move |consumer| {
                let metadata = consumer
                    .fetch_metadata(Some(&name), Duration::from_secs(5))
                    .map_err(|e| e.to_string())?;
                let topic = metadata.topics().first();
                let partitions = topic.map_or(0, |t| t.partitions().len());
                let replicas = topic
                    .and_then(|t| t.partitions().first())
                    .map_or(0, |p| p.replicas().len());
                Ok(TopicShape {
                    partitions: i32::try_from(partitions)
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            format!("topic {name} has no partitions (does it exist?)")
                        })?,
                    replication_factor: i32::try_from(replicas).unwrap_or(i32::MAX),
                })
            })
            .await?;
        _ = self
            .known
            .write()
            .expect("partitions lock")
            .insert(topic.to_owned(), shape);
        Ok(shape)
    }

    /// The id the broker gives its cluster.
    pub async fn cluster_id(self: &Arc<Self>) -> Result<String, String> {
        if let Some(id) = self.cluster.read().expect("cluster lock").clone() {
            return Ok(id);
        }
        let id = self
            .ask(|consumer| {
                consumer
                    .client()
                    .fetch_cluster_id(Duration::from_secs(5))
                    .ok_or_else(|| "the broker did not tell its cluster id".to_owned())
            })
            .await?;
        *self.cluster.write().expect("cluster lock") = Some(id.clone());
        Ok(id)
    }

    async fn ask<T: Send + 'static>(
        self: &Arc<Self>,
        question: impl FnOnce(&BaseConsumer) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = this.client.create().map_err(|e| e.to_string())?;
            question(&consumer)
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Requests per API key per second or minute (a burst of as many), or none.
pub struct RateLimit {
    limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
}

impl RateLimit {
    pub fn per_second(rate: u32) -> Self {
        Self {
            limiter: std::num::NonZeroU32::new(rate)
                .map(|n| governor::RateLimiter::keyed(governor::Quota::per_second(n))),
        }
    }

    pub fn per_minute(rate: u32) -> Self {
        Self {
            limiter: std::num::NonZeroU32::new(rate)
                .map(|n| governor::RateLimiter::keyed(governor::Quota::per_minute(n))),
        }
    }

    pub fn unlimited() -> Self {
        Self { limiter: None }
    }

    /// `Err(wait)` when the key must wait before its next request.
    fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub keys: Arc<Keys>,
    pub rate: Arc<RateLimit>,
    pub idempotency: Idempotency,
    pub writer: Writer,
    pub codec: Arc<AvroCodec>,
    pub partitions: Arc<Partitions>,
    /// Schemas named by v3 requests.
    pub schemas: Arc<Schemas>,
    pub limits: Limits,
    pub metrics: HttpMetrics,
}

/// Requests by route and status, and the registry `/metrics` renders.
#[derive(Clone)]
pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "habitat_http_requests_total",
                "HTTP requests by route and status.",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique metric");
        Self { registry, requests }
    }
}

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
    pub(crate) status: StatusCode,
    pub(crate) body: ErrorBody,
    pub(crate) retry_after: Option<u64>,
    /// The v3 `error_code` when it is not the status.
    pub(crate) confluent_code: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
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

    pub(crate) fn with_details(mut self, details: Vec<Problem>) -> Self {
        self.body.details = details;
        self
    }

    /// 422 with one problem.
    pub(crate) fn invalid(path: &str, problem: impl Into<String>) -> Self {
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
    pub(crate) fn json(&self, dialect: Dialect) -> serde_json::Value {
        match dialect {
            Dialect::Habitat => serde_json::to_value(&self.body).unwrap_or_default(),
            Dialect::Confluent => serde_json::json!({
                "error_code": self.confluent_code.unwrap_or(u32::from(self.status.as_u16())),
                "message": self.body.message,
                "details": self.body.details,
            }),
        }
    }

    pub(crate) fn response(self, dialect: Dialect) -> Response {
        let mut response = (self.status, Json(self.json(dialect))).into_response();
        if let Some(seconds) = self.retry_after {
            _ = response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }

    /// 503 with `Retry-After`: nothing was written.
    fn retry_later(code: &str, message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        error.retry_after = Some(5);
        error
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::retry_later("broker_unavailable", message)
    }

    /// The key or idempotency store (Postgres) cannot be reached.
    pub(crate) fn store_unavailable(message: impl Into<String>) -> Self {
        Self::retry_later("store_unavailable", message)
    }

    /// The registry refused the proxy's credentials: misconfigured, logged; the body says
    /// no more than that.
    pub(crate) fn registry_refused(message: impl Into<String>) -> Self {
        tracing::error!(error = %message.into(), "The schema registry refused the proxy's credentials.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "registry_refused",
            "the proxy cannot use the schema registry (its credentials were refused); nothing was written",
        )
    }

    pub(crate) fn registry_unavailable(message: impl Into<String>) -> Self {
        Self::retry_later("registry_unavailable", message)
    }

    pub(crate) fn from_refusal(refusal: Refusal, prefix: &str) -> Self {
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.response(Dialect::Habitat)
    }
}

/// The answer for one accepted event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Accepted {
    pub event_id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    events: Vec<Submission>,
}

/// The routes.
pub fn router(state: AppState) -> Router {
    let limit = state.limits.body_bytes;
    Router::new()
        .route("/v1/events", post(post_event))
        .route("/v1/events:batch", post(post_batch))
        .route("/v3/clusters", get(crate::v3::list_clusters))
        .route("/v3/clusters/{cluster_id}", get(crate::v3::get_cluster))
        .route(
            "/v3/clusters/{cluster_id}/topics",
            get(crate::v3::list_topics),
        )
        .route(
            "/v3/clusters/{cluster_id}/topics/{topic_name}/records",
            post(crate::v3::produce),
        )
        .route("/openapi.json", get(crate::openapi::serve))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

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

pub(crate) fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
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

pub(crate) async fn authorize(
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

fn stamp_event(
    key: &ApiKey,
    submission: &Submission,
    prefix: &str,
) -> Result<(String, Event), ApiError> {
    let event_id = uuid::Uuid::now_v7().to_string();
    let producer = format!("rest:{}", key.name);
    let event = event_of(
        submission,
        &Stamp {
            event_id: &event_id,
            producer: &producer,
            occurred_at: Utc::now(),
        },
    )
    .map_err(|refusal| ApiError::from_refusal(refusal, prefix))?;
    key.may_write(&submission.tenant_id, &submission.event_type)
        .map_err(|denied| ApiError::new(StatusCode::FORBIDDEN, "forbidden", denied))?;
    Ok((event_id, event))
}

/// The record of `event`: its topic, key, tenant partition and Avro value (current schema).
pub(crate) async fn record(state: &AppState, event: Event) -> Result<Record, ApiError> {
    let topic = event.topic();
    let key = event.key();
    let partitions = state
        .partitions
        .of(topic)
        .await
        .map_err(ApiError::unavailable)?;
    let codec = state.codec.clone();
    let value = tokio::task::spawn_blocking(move || codec.encode(topic, &event))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|error| match error {
            CodecError::Unavailable(m) => ApiError::registry_unavailable(m),
            CodecError::Unauthorized(m) => ApiError::registry_refused(m),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encode_failed",
                other.to_string(),
            ),
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
pub(crate) async fn write_one(state: &AppState, record: Record) -> Result<Written, ApiError> {
    state
        .writer
        .write(vec![record])
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::unavailable("no acknowledgement"))
}

pub(crate) fn count(state: &AppState, route: &str, status: StatusCode) {
    state
        .metrics
        .requests
        .with_label_values(&[route, status.as_str()])
        .inc();
}

/// The answer to a request: its status and JSON body.
pub(crate) type Answer = (StatusCode, serde_json::Value);

fn answer<T: Serialize>(value: &T) -> Answer {
    (
        StatusCode::ACCEPTED,
        serde_json::to_value(value).unwrap_or_default(),
    )
}

async fn post_event(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    handle(
        &state,
        "/v1/events",
        Dialect::Habitat,
        peer,
        &headers,
        bytes,
        |state, key, bytes| async move {
            let submission: Submission = parse(&bytes)?;
            let (event_id, event) = stamp_event(&key, &submission, "")?;
            let w = write_one(&state, record(&state, event).await?).await?;
            Ok(answer(&Accepted {
                event_id,
                topic: w.topic,
                partition: w.partition,
                offset: w.offset,
                key: w.key,
            }))
        },
    )
    .await
}

async fn post_batch(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    handle(
        &state,
        "/v1/events:batch",
        Dialect::Habitat,
        peer,
        &headers,
        bytes,
        |state, key, bytes| async move {
            let batch: BatchBody = parse(&bytes)?;
            if batch.events.is_empty() || batch.events.len() > state.limits.batch_events {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_batch",
                    format!(
                        "a batch holds 1 to {} events; this one has {}",
                        state.limits.batch_events,
                        batch.events.len()
                    ),
                )
                .with_details(vec![Problem {
                    path: "events".to_owned(),
                    problem: format!("{} events", batch.events.len()),
                }]));
            }
            // Every event is checked before anything is written.
            let mut stamped = Vec::with_capacity(batch.events.len());
            let mut problems = Vec::new();
            for (i, submission) in batch.events.iter().enumerate() {
                match stamp_event(&key, submission, &format!("events[{i}].")) {
                    Ok(ok) => stamped.push(ok),
                    Err(error) if error.status == StatusCode::FORBIDDEN => return Err(error),
                    Err(error) if error.status == StatusCode::NOT_FOUND => {
                        problems.push(Problem {
                            path: format!("events[{i}].event_type"),
                            problem: error.body.message,
                        });
                    }
                    Err(error) => problems.extend(error.body.details),
                }
            }
            if !problems.is_empty() {
                return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_event",
                "no event of the batch was written: some do not match their schema or break a rule",
            )
            .with_details(problems));
            }
            let mut records = Vec::with_capacity(stamped.len());
            let mut ids = Vec::with_capacity(stamped.len());
            for (event_id, event) in stamped {
                records.push(record(&state, event).await?);
                ids.push(event_id);
            }
            let written = state
                .writer
                .write(records)
                .await
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
            let accepted: Vec<Accepted> = ids
                .into_iter()
                .zip(written)
                .map(|(event_id, w)| Accepted {
                    event_id,
                    topic: w.topic,
                    partition: w.partition,
                    offset: w.offset,
                    key: w.key,
                })
                .collect();
            Ok(answer(&accepted))
        },
    )
    .await
}

/// The pipeline of a write: authorize, read the body, then — once per `Idempotency-Key`
/// — run `work`; count the answer by route and status.
pub(crate) async fn handle<F, Fut>(
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
    count(state, route, response.status());
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

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.partitions.of("habitat.people").await {
        Ok(_) => (StatusCode::OK, "ready\n".to_owned()),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {error}\n"),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        TextEncoder::new()
            .encode_to_string(&state.metrics.registry.gather())
            .unwrap_or_default(),
    )
}
