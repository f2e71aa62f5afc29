//! `Idempotency-Key`: the same key with the same request returns the first answer and
//! writes nothing more; the same key with another request is a conflict (409).
//!
//! The first request to claim a key (per API key) does the work and records its answer;
//! concurrent retries wait for that answer. A claim records its holder (this proxy process)
//! and when it was made. A claim older than the longest possible write (`takeover`) whose
//! answer was never recorded — its proxy died — is taken over by the next retry; nothing of
//! it was written, since a write that outlives its transaction timeout is aborted. An
//! answer of 5xx (nothing was written) is not kept, so a later retry does the work again.
//! The answer of a committed write is recorded with retries, in the background when the
//! store is down, while the client gets the real result at once: never a 503 after a
//! commit. Kept answers expire after `keep` (default 24 hours) and are purged.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use tracing::{info, warn};

/// What a claim found.
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// This request does the work.
    Mine,
    /// The first request's answer: status and body.
    Answered(u16, serde_json::Value),
    /// The key was used with another request.
    Conflict,
}

/// Why a claim could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another request holds the claim and did not answer in time: retry after `retry_after`.
    #[error("the first request with this Idempotency-Key is still in progress")]
    InProgress { retry_after: Duration },
    #[error("the idempotency store: {0}")]
    Store(#[from] sqlx::Error),
}

/// SHA-256 of the route and the body.
pub fn request_digest(route: &str, body: &[u8]) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(route.as_bytes());
    hash.update([0]);
    hash.update(body);
    hash.finalize().to_vec()
}

/// The idempotency records in Postgres.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pool: PgPool,
    /// This process: the holder of the claims it makes.
    holder: String,
    /// How long a retry waits for the first request's answer.
    pub wait: Duration,
    /// Age after which an unanswered claim is taken over: longer than any write can take.
    pub takeover: Duration,
    /// How long an answer is kept.
    pub keep: Duration,
}

/// Pauses between attempts to record an answer: quick at first, then every five seconds.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << attempt.min(7))).min(Duration::from_secs(5))
}

impl Idempotency {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            holder: uuid::Uuid::new_v4().to_string(),
            wait: Duration::from_secs(30),
            takeover: Duration::from_secs(120),
            keep: Duration::from_secs(24 * 60 * 60),
        }
    }

    /// Claims `key` for `request`, or finds who has it.
    pub async fn claim(
        &self,
        api_key: &str,
        key: &str,
        request: &[u8],
    ) -> Result<Claim, ClaimError> {
        let started = Instant::now();
        loop {
            // A new claim; or a takeover of an expired answer, or of a claim whose holder
            // left it unanswered for longer than any write takes.
            let claimed = sqlx::query(
                "INSERT INTO idempotency_keys
                        (api_key_id, idempotency_key, request_sha256, holder, claimed_at)
                 VALUES ($1, $2, $3, $4, now())
                 ON CONFLICT (api_key_id, idempotency_key) DO UPDATE
                    SET request_sha256 = EXCLUDED.request_sha256, holder = EXCLUDED.holder,
                        claimed_at = now(), status = NULL, response = NULL, expires_at = NULL
                  WHERE idempotency_keys.expires_at <= now()
                     OR (idempotency_keys.status IS NULL
                         AND idempotency_keys.request_sha256 = EXCLUDED.request_sha256
                         AND idempotency_keys.claimed_at
                             < now() - make_interval(secs => $5))",
            )
            .bind(api_key)
            .bind(key)
            .bind(request)
            .bind(&self.holder)
            .bind(self.takeover.as_secs_f64())
            .execute(&self.pool)
            .await?
            .rows_affected();
            if claimed == 1 {
                return Ok(Claim::Mine);
            }
            let row = sqlx::query(
                "SELECT request_sha256, status, response,
                        extract(epoch FROM claimed_at + make_interval(secs => $3) - now())::float8
                   FROM idempotency_keys
                  WHERE api_key_id = $1 AND idempotency_key = $2",
            )
            .bind(api_key)
            .bind(key)
            .bind(self.takeover.as_secs_f64())
            .fetch_optional(&self.pool)
            .await?;
            let mut takeover_in = self.takeover;
            if let Some(row) = row {
                if row.get::<Vec<u8>, _>(0) != request {
                    return Ok(Claim::Conflict);
                }
                if let (Some(status), Some(body)) = (
                    row.get::<Option<i32>, _>(1),
                    row.get::<Option<serde_json::Value>, _>(2),
                ) {
                    return Ok(Claim::Answered(u16::try_from(status).unwrap_or(500), body));
                }
                takeover_in = Duration::try_from_secs_f64(row.get::<f64, _>(3).max(0.0))
                    .unwrap_or(Duration::ZERO);
            }
            // In progress elsewhere (or just released): wait and look again.
            if started.elapsed() > self.wait {
                return Err(ClaimError::InProgress {
                    retry_after: takeover_in.max(Duration::from_secs(1)),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Records the answer of the claimed request. Tries a few times at once; if the store
    /// still refuses, keeps trying in the background (a retry meanwhile waits for it).
    pub async fn answer(&self, api_key: &str, key: &str, status: u16, body: serde_json::Value) {
        for attempt in 0..3 {
            match self.record(api_key, key, status, &body).await {
                Ok(()) => return,
                Err(error) => {
                    warn!(%error, attempt, "Recording an idempotent answer failed; retrying.");
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        let this = self.clone();
        let (api_key, key) = (api_key.to_owned(), key.to_owned());
        _ = tokio::spawn(async move {
            let mut attempt = 3;
            while let Err(error) = this.record(&api_key, &key, status, &body).await {
                warn!(%error, attempt, "Recording an idempotent answer failed; retrying.");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            info!(
                attempts = attempt + 1,
                "An idempotent answer was recorded late."
            );
        });
    }

    async fn record(
        &self,
        api_key: &str,
        key: &str,
        status: u16,
        body: &serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        let updated = sqlx::query(
            "UPDATE idempotency_keys
                SET status = $4, response = $5, expires_at = now() + make_interval(secs => $6)
              WHERE api_key_id = $1 AND idempotency_key = $2 AND holder = $3",
        )
        .bind(api_key)
        .bind(key)
        .bind(&self.holder)
        .bind(i32::from(status))
        .bind(body)
        .bind(self.keep.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            warn!("An idempotency claim was taken over before its answer was recorded.");
        }
        Ok(())
    }

    /// Releases the claim of a request that wrote nothing, so a retry does the work again.
    /// A claim that cannot be released is taken over later.
    pub async fn release(&self, api_key: &str, key: &str) {
        let released = sqlx::query(
            "DELETE FROM idempotency_keys
              WHERE api_key_id = $1 AND idempotency_key = $2 AND holder = $3",
        )
        .bind(api_key)
        .bind(key)
        .bind(&self.holder)
        .execute(&self.pool)
        .await;
        if let Err(error) = released {
            warn!(%error, "Releasing an idempotency claim failed; it will be taken over.");
        }
    }

    /// Deletes the answers kept past their time; how many.
    pub async fn purge(&self) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= now()")
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Purges expired answers every `every`, for as long as the process runs.
    pub fn purge_every(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                _ = ticks.tick().await;
                match this.purge().await {
                    Ok(0) => {}
                    Ok(purged) => info!(purged, "Expired idempotent answers purged."),
                    Err(error) => warn!(%error, "Purging expired idempotent answers failed."),
                }
            }
        })
    }
}
