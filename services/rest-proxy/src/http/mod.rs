//! The HTTP API: [`v1`] (`POST /v1/events`, `:batch`), [`v3`] (Confluent REST v3 records)
//! and [`ops`] (`/openapi.json`, `/healthz`, `/readyz`, `/metrics`), merged here. Every
//! write goes through [`pipeline`]; every error is an [`error::ApiError`]. Dependencies
//! point one way: the routes use the pipeline, the pipeline uses the error and the state.

pub mod error;
pub mod ops;
pub mod pipeline;
pub mod v1;
pub mod v3;

use std::time::Instant;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};

use crate::state::AppState;

/// Every route, with the body limit of `state`; every request timed.
pub fn router(state: AppState) -> Router {
    let limit = state.limits.body_bytes;
    Router::new()
        .merge(v1::router())
        .merge(v3::router())
        .merge(ops::router())
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), timed))
        .with_state(state)
}

/// Observes each request's duration by route (its path template) and status.
async fn timed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .observe(&route, response.status(), started.elapsed());
    response
}
