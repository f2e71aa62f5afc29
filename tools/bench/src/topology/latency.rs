//! How long the measured rows took: each row of `event_log` from the `occurred_at` of the
//! posted event it descends from to the commit of the sink's transaction that wrote it.

use super::*;

/// The measured tenants' (`LIKE measured`) run: seconds from `started_at` to the last
/// commit, the p50/p95/p99 latency of every row in ms, and per record type its rows, p50
/// and p99 (slowest p99 first).
pub(super) async fn measured(
    pool: &PgPool,
    measured: &str,
    started_at: chrono::DateTime<chrono::Utc>,
) -> Result<(f64, [f64; 3], Vec<(String, i64, f64, f64)>)> {
    let last: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT max(pg_xact_commit_timestamp(xmin)) FROM habitat.event_log
          WHERE tenant_id LIKE $1",
    )
    .bind(measured)
    .fetch_one(pool)
    .await?;
    // Each row's latency, per record type and over all of them, in one pass.
    let rows: Vec<(bool, Option<String>, i64, Vec<f64>)> = sqlx::query_as(
        "SELECT GROUPING(l.event_type) = 1, l.event_type, count(*),
                percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY l.ms)
           FROM (SELECT d.event_type,
                        extract(epoch FROM pg_xact_commit_timestamp(d.xmin) - o.occurred_at)
                          * 1000 AS ms
                   FROM habitat.event_log d
                   JOIN habitat.event_log o ON o.event_id = d.correlation_id
                  WHERE d.tenant_id LIKE $1) l
          GROUP BY GROUPING SETS ((l.event_type), ())",
    )
    .bind(measured)
    .fetch_all(pool)
    .await?;
    let mut latency = [0.0; 3];
    let mut by_type = Vec::new();
    for (total, event_type, count, p) in rows {
        if total {
            latency = [p[0], p[1], p[2]];
        } else {
            by_type.push((event_type.unwrap_or_default(), count, p[0], p[2]));
        }
    }
    by_type.sort_by(|a, b| b.3.total_cmp(&a.3));
    let seconds = (last - started_at).as_seconds_f64();
    Ok((seconds, latency, by_type))
}
