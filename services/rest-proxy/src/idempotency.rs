//! `Idempotency-Key`: the same key with the same request returns the first answer and
//! writes nothing more; the same key with another request is a conflict (409).
//!
//! The first request to claim a key (per API key) does the work and records its answer;
//! concurrent retries wait for that answer. An answer of 5xx (nothing was written) is not
//! kept, so a later retry does the work again.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

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
    /// How long a retry waits for the first request's answer.
    pub wait: Duration,
}

impl Idempotency {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            wait: Duration::from_secs(30),
        }
    }

    /// Claims `key` for `request`, or finds who has it.
    pub async fn claim(
        &self,
        api_key: &str,
        key: &str,
        request: &[u8],
    ) -> Result<Claim, sqlx::Error> {
        let started = Instant::now();
        loop {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (api_key_id, idempotency_key, request_sha256)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(api_key)
            .bind(key)
            .bind(request)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(Claim::Mine);
            }
            let row = sqlx::query(
                "SELECT request_sha256, status, response FROM idempotency_keys
                  WHERE api_key_id = $1 AND idempotency_key = $2",
            )
            .bind(api_key)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
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
            }
            // In progress elsewhere (or just given up): wait and look again.
            if started.elapsed() > self.wait {
                return Err(sqlx::Error::Protocol(format!(
                    "the first request with Idempotency-Key {key} did not finish within {:?}",
                    self.wait
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Records the answer of the claimed request, or releases the claim (`None`).
    pub async fn finish(
        &self,
        api_key: &str,
        key: &str,
        answer: Option<(u16, serde_json::Value)>,
    ) -> Result<(), sqlx::Error> {
        match answer {
            Some((status, body)) => {
                _ = sqlx::query(
                    "UPDATE idempotency_keys SET status = $3, response = $4
                      WHERE api_key_id = $1 AND idempotency_key = $2",
                )
                .bind(api_key)
                .bind(key)
                .bind(i32::from(status))
                .bind(body)
                .execute(&self.pool)
                .await?;
            }
            None => {
                _ = sqlx::query(
                    "DELETE FROM idempotency_keys WHERE api_key_id = $1 AND idempotency_key = $2",
                )
                .bind(api_key)
                .bind(key)
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }
}
