//! The Confluent REST v3 records API, for tools that already speak it:
//! `POST /v3/clusters/{cluster_id}/topics/{topic_name}/records` with a `STRING` key and an
//! `AVRO` value named by `schema_id`, or by `subject` (TopicRecordNameStrategy:
//! `<topic>-<record full name>`) and `schema_version` (latest when absent), its `data` in
//! Avro's JSON encoding; `GET /v3/clusters`, `GET /v3/clusters/{cluster_id}` and
//! `GET /v3/clusters/{cluster_id}/topics` (the topics the proxy writes).
//!
//! A v3 record is held to the same contract as `/v1/events`: it must be a catalog record of
//! that topic, keep the rules at the door, be granted to the key, and its key and partition
//! are the ones SPEC §3 gives it (a request naming others is refused). It is written with
//! the catalog's current schema, read through the registry from the schema it names — so
//! the answer reports the schema id actually written. Errors have a numeric `error_code`.

use std::collections::BTreeSet;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine;
use chrono::{DateTime, Utc};
use contracts::{
    records::{CATALOG, Event},
    wire,
};
use habitat_runtime::{Codec, CodecError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    avro_json,
    http::{
        error::{ApiError, Dialect},
        pipeline::{Answer, Peer, authorize, handle, parse, record as event_record, write_one},
    },
    keys::ApiKey,
    registry::{Lookup, Registered},
    state::AppState,
    validate::{Problem, ids_and_currencies, rules, writable},
};

/// The v3 routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v3/clusters", get(list_clusters))
        .route("/v3/clusters/{cluster_id}", get(get_cluster))
        .route("/v3/clusters/{cluster_id}/topics", get(list_topics))
        .route(
            "/v3/clusters/{cluster_id}/topics/{topic_name}/records",
            post(produce),
        )
}

/// `POST …/records`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProduceRequest {
    #[serde(default)]
    pub partition_id: Option<i32>,
    #[serde(default)]
    pub headers: Vec<RequestHeader>,
    #[serde(default)]
    pub key: Option<RequestData>,
    #[serde(default)]
    pub value: Option<RequestData>,
    /// Accepted for compatibility; the record's timestamp is the time it is written.
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
}

/// A header: its value base64, or null.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestHeader {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
}

/// A key or value of a request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestData {
    #[serde(default, rename = "type")]
    pub format: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub subject_name_strategy: Option<String>,
    #[serde(default)]
    pub schema_id: Option<u32>,
    #[serde(default)]
    pub schema_version: Option<i32>,
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub data: Value,
}

fn not_found(code: u32, message: String) -> ApiError {
    let mut error = ApiError::new(StatusCode::NOT_FOUND, "not_found", message);
    error.confluent_code = Some(code);
    error
}

/// The topics the proxy writes: the catalog's context topics.
fn topics() -> BTreeSet<&'static str> {
    CATALOG.iter().map(|info| info.topic).collect()
}

async fn cluster(state: &AppState, asked: &str) -> Result<String, ApiError> {
    let id = state
        .partitions
        .cluster_id()
        .await
        .map_err(ApiError::unavailable)?;
    if id == asked {
        Ok(id)
    } else {
        Err(not_found(
            404,
            format!("Cluster {asked} could not be found."),
        ))
    }
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}/v3")
}

fn cluster_data(base: &str, id: &str) -> Value {
    json!({
        "kind": "KafkaCluster",
        "metadata": {"self": format!("{base}/clusters/{id}"), "resource_name": format!("crn:///kafka={id}")},
        "cluster_id": id,
        "topics": {"related": format!("{base}/clusters/{id}/topics")},
    })
}

/// Answers a read-only route: authorized, counted, errors in Confluent's shape.
async fn read_only<F, Fut>(
    state: &AppState,
    route: &str,
    peer: Peer,
    headers: &HeaderMap,
    work: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Value, ApiError>>,
{
    let outcome = match authorize(state, headers, peer).await {
        Ok(_) => work().await,
        Err(error) => Err(error),
    };
    let response = match outcome {
        Ok(body) => (StatusCode::OK, Json(body)).into_response(),
        Err(error) => error.response(Dialect::Confluent),
    };
    state.metrics.count(route, response.status());
    response
}

/// `GET /v3/clusters`.
pub async fn list_clusters(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    read_only(&state, "/v3/clusters", peer, &headers, || async {
        let id = state
            .partitions
            .cluster_id()
            .await
            .map_err(ApiError::unavailable)?;
        let base = base_url(&headers);
        Ok(json!({
            "kind": "KafkaClusterList",
            "metadata": {"self": format!("{base}/clusters"), "next": null},
            "data": [cluster_data(&base, &id)],
        }))
    })
    .await
}

/// `GET /v3/clusters/{cluster_id}`.
pub async fn get_cluster(
    State(state): State<AppState>,
    Path(cluster_id): Path<String>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    read_only(
        &state,
        "/v3/clusters/{cluster_id}",
        peer,
        &headers,
        || async {
            let id = cluster(&state, &cluster_id).await?;
            Ok(cluster_data(&base_url(&headers), &id))
        },
    )
    .await
}

/// `GET /v3/clusters/{cluster_id}/topics`: the topics the proxy writes.
pub async fn list_topics(
    State(state): State<AppState>,
    Path(cluster_id): Path<String>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    read_only(&state, "/v3/clusters/{cluster_id}/topics", peer, &headers, || async {
        let id = cluster(&state, &cluster_id).await?;
        let base = format!("{}/clusters/{id}", base_url(&headers));
        let mut data = Vec::new();
        for topic in topics() {
            let shape = state
                .partitions
                .shape(topic)
                .await
                .map_err(ApiError::unavailable)?;
            let own = format!("{base}/topics/{topic}");
            data.push(json!({
                "kind": "KafkaTopic",
                "metadata": {"self": own, "resource_name": format!("crn:///kafka={id}/topic={topic}")},
                "cluster_id": id,
                "topic_name": topic,
                "is_internal": false,
                "replication_factor": shape.replication_factor,
                "partitions_count": shape.partitions,
                "partitions": {"related": format!("{own}/partitions")},
                "configs": {"related": format!("{own}/configs")},
                "partition_reassignments": {"related": format!("{own}/partitions/-/reassignment")},
            }));
        }
        Ok(json!({
            "kind": "KafkaTopicList",
            "metadata": {"self": format!("{base}/topics"), "next": null},
            "data": data,
        }))
    })
    .await
}

/// `POST /v3/clusters/{cluster_id}/topics/{topic_name}/records`.
pub async fn produce(
    State(state): State<AppState>,
    Path((cluster_id, topic_name)): Path<(String, String)>,
    peer: Peer,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    handle(
        &state,
        "/v3/clusters/{cluster_id}/topics/{topic_name}/records",
        Dialect::Confluent,
        peer,
        &headers,
        bytes,
        |state, key, bytes| async move {
            let cluster_id = cluster(&state, &cluster_id).await?;
            if !topics().contains(topic_name.as_str()) {
                return Err(not_found(
                    40403,
                    format!(
                        "This server does not host topic {topic_name}; records go to {}.",
                        topics().into_iter().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            let request: ProduceRequest = parse(&bytes)?;
            produce_record(&state, &key, &cluster_id, &topic_name, request).await
        },
    )
    .await
}

/// Header names clients may not send: the proxy's own.
const RESERVED_HEADERS: &str = "habitat.";

/// Stamps the record's identity as `/v1/events` does — a new event id, this key as its
/// producer, now as `occurred_at` — and returns what the client had put there as headers
/// (`habitat.client.event_id`, `.producer`, `.occurred_at`), for tracing only.
fn restamp(event: &mut Event, key: &ApiKey) -> Vec<(String, Option<Vec<u8>>)> {
    let version = event.version();
    let meta = event.meta_mut();
    let sent = [
        (
            "event_id",
            std::mem::replace(&mut meta.event_id, uuid::Uuid::now_v7().to_string()),
        ),
        (
            "producer",
            std::mem::replace(&mut meta.producer, format!("rest:{}", key.name)),
        ),
        (
            "occurred_at",
            std::mem::replace(&mut meta.occurred_at, Utc::now()).to_rfc3339(),
        ),
    ];
    // The record is written with this release's schema of its type, whatever the client's.
    meta.schema_version = version;
    sent.into_iter()
        .map(|(name, value)| {
            (
                format!("{RESERVED_HEADERS}client.{name}"),
                Some(value.into_bytes()),
            )
        })
        .collect()
}

fn lookup_error(error: Lookup, path: &str) -> ApiError {
    match error {
        Lookup::NotFound(problem) => ApiError::invalid(path, problem),
        Lookup::Unavailable(message) => ApiError::registry_unavailable(message),
    }
}

/// The schema a value names: by id, or by subject of this topic and version.
async fn named_schema(
    state: &AppState,
    topic: &str,
    value: &RequestData,
) -> Result<std::sync::Arc<Registered>, ApiError> {
    if let Some(format) = &value.format
        && format != "AVRO"
    {
        return Err(ApiError::invalid(
            "value.type",
            format!("{format:?}: values are AVRO records of the event catalog"),
        ));
    }
    if value.schema.is_some() {
        return Err(ApiError::invalid(
            "value.schema",
            "schemas are registered ahead of use; name one by schema_id or subject",
        ));
    }
    if let Some(strategy) = &value.subject_name_strategy
        && strategy != "TOPIC_RECORD_NAME"
    {
        return Err(ApiError::invalid(
            "value.subject_name_strategy",
            format!("{strategy:?}: subjects are TOPIC_RECORD_NAME (<topic>-<record full name>)"),
        ));
    }
    match (value.schema_id, &value.subject) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "value",
            "name the schema by schema_id or by subject, not both",
        )),
        (Some(_), None) if value.schema_version.is_some() => Err(ApiError::invalid(
            "value.schema_version",
            "schema_version goes with subject, not with schema_id",
        )),
        (Some(id), None) => state
            .schemas
            .by_id(id)
            .await
            .map_err(|e| lookup_error(e, "value.schema_id")),
        (None, Some(subject)) => {
            if !subject.starts_with(&format!("{topic}-")) {
                return Err(ApiError::invalid(
                    "value.subject",
                    format!(
                        "{subject:?} is not a subject of {topic} (TOPIC_RECORD_NAME: {topic}-<record full name>)"
                    ),
                ));
            }
            state
                .schemas
                .by_subject(subject, value.schema_version)
                .await
                .map_err(|e| lookup_error(e, "value.subject"))
        }
        (None, None) => Err(ApiError::invalid(
            "value",
            format!(
                "name the schema: schema_id, or subject ({topic}-<record full name>) with an optional schema_version"
            ),
        )),
    }
}

/// The catalog event a value holds: read in Avro's JSON encoding with the schema it
/// names, then through the registry into the catalog's current record.
async fn event_of(
    state: &AppState,
    topic: &str,
    value: &RequestData,
) -> Result<(Event, std::sync::Arc<Registered>), ApiError> {
    let registered = named_schema(state, topic, value).await?;
    let info = CATALOG
        .iter()
        .find(|info| info.full_name == registered.full_name && info.topic == topic);
    let Some(info) = info else {
        return Err(ApiError::invalid(
            if value.schema_id.is_some() {
                "value.schema_id"
            } else {
                "value.subject"
            },
            format!(
                "schema {} is {}, not an event record of {topic}",
                registered.id, registered.full_name
            ),
        ));
    };
    writable(info).map_err(|refusal| ApiError::from_refusal(refusal, "value.data.meta."))?;
    let avro = avro_json::decode(&value.data, &registered.schema, "value.data")
        .map_err(|p| ApiError::invalid(&p.path, p.problem))?;
    let binary = apache_avro::writer::datum::GenericDatumWriter::builder(&registered.schema)
        .build()
        .and_then(|w| w.write_value_to_vec(avro))
        .map_err(|e| ApiError::invalid("value.data", e.to_string()))?;
    let framed = wire::frame(registered.id, &binary);
    // As for encoding: a blocking thread only when the registry must be asked.
    let decoded = match state.codec.decode_cached(topic, &framed) {
        Some(decoded) => decoded,
        None => {
            let codec = state.codec.clone();
            let topic_name = topic.to_owned();
            tokio::task::spawn_blocking(move || codec.decode(&topic_name, &framed))
                .await
                .map_err(ApiError::internal)?
        }
    };
    let event = decoded.map_err(|error| match error {
        CodecError::Unavailable(m) => ApiError::registry_unavailable(m),
        CodecError::Unauthorized(m) => ApiError::registry_refused(m),
        other => ApiError::invalid("value.data", other.to_string()),
    })?;
    Ok((event, registered))
}

async fn produce_record(
    state: &AppState,
    key: &ApiKey,
    cluster_id: &str,
    topic: &str,
    request: ProduceRequest,
) -> Result<Answer, ApiError> {
    let value = request.value.as_ref().ok_or_else(|| {
        ApiError::invalid(
            "value",
            "a value is required: the record of a catalog event",
        )
    })?;
    if let Some(k) = &request.key
        && (k.format.as_deref().is_some_and(|f| f != "STRING")
            || k.schema_id.is_some()
            || k.subject.is_some()
            || k.schema.is_some())
    {
        return Err(ApiError::invalid(
            "key.type",
            "keys are STRING (the key SPEC §3 gives the record)",
        ));
    }
    let (mut event, registered) = event_of(state, topic, value).await?;
    let mut problems = Vec::new();
    let info = CATALOG
        .iter()
        .find(|info| info.full_name == registered.full_name);
    if let Some(info) = info
        && event.meta().event_type != info.event_type
    {
        problems.push(Problem {
            path: "value.data.meta.event_type".to_owned(),
            problem: format!("must be {:?} for {}", info.event_type, info.full_name),
        });
    }
    let json = serde_json::to_value(&event).unwrap_or_default();
    ids_and_currencies("value.data", &json, &mut problems);
    problems.extend(rules(&event, "value.data"));
    if !problems.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
            "the record breaks a rule of the catalog",
        )
        .with_details(problems));
    }
    key.may_write(&event.meta().tenant_id, event.event_type())?;

    let mut headers = Vec::with_capacity(request.headers.len() + 3);
    for (i, h) in request.headers.iter().enumerate() {
        if h.name.starts_with(RESERVED_HEADERS) {
            return Err(ApiError::invalid(
                &format!("headers[{i}].name"),
                format!("headers named {RESERVED_HEADERS}* are written by Habitat Streams"),
            ));
        }
        let value = match &h.value {
            None => None,
            Some(text) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| {
                        ApiError::invalid(
                            &format!("headers[{i}].value"),
                            format!("not base64: {e}"),
                        )
                    })?,
            ),
        };
        headers.push((h.name.clone(), value));
    }
    headers.extend(restamp(&mut event, key));
    let mut record = event_record(state, event).await?;
    if let Some(given) = request.key.as_ref().map(|k| &k.data)
        && given.as_str() != Some(record.key.as_str())
    {
        return Err(ApiError::invalid(
            "key.data",
            format!(
                "the record's key is {:?} (SPEC §3); leave the key out or give that one",
                record.key
            ),
        ));
    }
    if let Some(partition) = request.partition_id
        && partition != record.partition
    {
        return Err(ApiError::invalid(
            "partition_id",
            format!(
                "a tenant's records go to its partition, here {}; leave partition_id out or give that one",
                record.partition
            ),
        ));
    }
    record.headers = headers;
    let (written_id, _) = wire::unframe(&record.value).map_err(ApiError::internal)?;
    let key_size = record.key.len();
    let value_size = record.value.len();
    let written_schema = state
        .schemas
        .by_id(written_id)
        .await
        .map_err(|e| lookup_error(e, "value"))?;
    let written = write_one(state, record).await?;
    let timestamp = written
        .timestamp_ms
        .and_then(DateTime::<Utc>::from_timestamp_millis);
    Ok((
        StatusCode::OK,
        json!({
            "error_code": 200,
            "cluster_id": cluster_id,
            "topic_name": written.topic,
            "partition_id": written.partition,
            "offset": written.offset,
            "timestamp": timestamp,
            "key": {"type": "STRING", "size": key_size},
            "value": {
                "type": "AVRO",
                "subject": wire::subject(topic, &written_schema.full_name),
                "schema_id": written_id,
                "schema_version": written_schema.version,
                "size": value_size,
            },
        }),
    ))
}
