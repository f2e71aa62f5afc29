//! The HTTP API: [`v1`] (`POST /v1/events`, `:batch`), [`v3`] (Confluent REST v3 records)
//! and [`ops`] (`/openapi.json`, `/healthz`, `/readyz`, `/metrics`), merged here. Every
//! write goes through [`pipeline`]; every error is an [`error::ApiError`]. Dependencies
//! point one way: the routes use the pipeline, the pipeline uses the error and the state.

pub mod error;
pub mod ops;
pub mod pipeline;
pub mod v1;
pub mod v3;

use axum::{Router, extract::DefaultBodyLimit};

use crate::state::AppState;

/// Every route, with the body limit of `state`.
pub fn router(state: AppState) -> Router {
    let limit = state.limits.body_bytes;
    Router::new()
        .merge(v1::router())
        .merge(v3::router())
        .merge(ops::router())
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
