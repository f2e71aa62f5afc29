//! `habitat outbox status`: what waits in an outbox and what was refused.

use postgres_sink::store::options;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

/// An outbox's state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    /// Rows not yet published.
    pub pending: i64,
    /// Age of the oldest of them, in seconds.
    pub lag_seconds: f64,
    pub dead_letters: i64,
    /// The newest dead letters: event id, type, reason.
    pub recent_dead_letters: Vec<(String, String, serde_json::Value)>,
}

/// Reads the state of the outbox in `schema`.
pub async fn status(database_url: &str, schema: &str) -> anyhow::Result<Status> {
    let mut conn = PgConnection::connect_with(&options(database_url, schema)?).await?;
    let (pending, lag): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM now() - min(occurred_at))::float8 FROM events",
    )
    .fetch_one(&mut conn)
    .await?;
    let dead_letters: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&mut conn)
        .await?;
    let recent_dead_letters = sqlx::query_as(
        "SELECT event_id::text, event_type, reason FROM dead_letters ORDER BY dead_at DESC LIMIT 10",
    )
    .fetch_all(&mut conn)
    .await?;
    conn.close().await?;
    Ok(Status {
        pending,
        lag_seconds: lag.unwrap_or_default().max(0.0),
        dead_letters,
        recent_dead_letters,
    })
}
