//! `POST /v1/events` and `POST /v1/events:batch`: events in the REST JSON conventions,
//! checked against the catalog and the rules at the door, stamped by the proxy and written
//! in one transaction per request (a batch all or nothing).

use axum::{
    Router,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::post,
};
use chrono::Utc;
use contracts::records::Event;
use serde::{Deserialize, Serialize};

use crate::{
    http::{
        error::{ApiError, Dialect},
        pipeline::{Peer, answer, handle, parse, record, write_one},
    },
    keys::ApiKey,
    state::AppState,
    validate::{Problem, Stamp, Submission, event_of},
};

/// The v1 routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", post(post_event))
        .route("/v1/events:batch", post(post_batch))
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
    key.may_write(&submission.tenant_id, &submission.event_type)?;
    Ok((event_id, event))
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
