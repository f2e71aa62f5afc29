//! What operators and tools ask: `/healthz`, `/readyz` (the broker answers a metadata
//! request and the key store a query), `/metrics`, the OpenAPI document at
//! `/openapi.json` and its reference page at `/docs`.

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::state::AppState;

/// The operational routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(crate::openapi::serve))
        .route("/docs", get(crate::openapi::page))
        .route("/docs/redoc.standalone.js", get(crate::openapi::redoc))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if let Err(error) = state.partitions.of("habitat.people").await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {error}\n"),
        );
    }
    match state.keys.reachable().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the key store (Postgres) is unreachable: {error}\n"),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
