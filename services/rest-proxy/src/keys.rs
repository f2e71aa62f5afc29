//! API keys: each bound to a set of tenants and the event types it may write; stored as
//! a SHA-256 of the secret (keys are 256-bit random, so a fast hash is enough), never
//! logged. A key reads `hsk_<id>_<secret>`: the id finds the row, the secret is compared
//! in constant time.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

/// `*` in a key's tenants or event types grants all.
pub const ANY: &str = "*";

/// A key as the proxy checks it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub tenants: Vec<String>,
    pub event_types: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn may_write(&self, tenant: &str, event_type: &str) -> Result<(), String> {
        let grants = |list: &[String], what: &str| list.iter().any(|g| g == ANY || g == what);
        if !grants(&self.tenants, tenant) {
            return Err(format!(
                "key {} may not write for tenant {tenant}",
                self.name
            ));
        }
        if !grants(&self.event_types, event_type) {
            return Err(format!("key {} may not write {event_type}", self.name));
        }
        Ok(())
    }
}

/// The Postgres schema of the proxy's tables.
pub const SCHEMA: &str = "rest_proxy";

/// Creates the proxy's tables when missing.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::migrate!("./migrations").run(pool).await?;
    Ok(())
}

/// A pool on `url` with the proxy's schema (created and migrated) first on the path.
pub async fn connect(url: &str) -> Result<PgPool, sqlx::Error> {
    use std::str::FromStr;
    let options =
        sqlx::postgres::PgConnectOptions::from_str(url)?.options([("search_path", SCHEMA)]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await?;
    _ = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        .execute(&pool)
        .await?;
    migrate(&pool).await?;
    Ok(pool)
}

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn random_hex(bytes: usize) -> String {
    use std::fmt::Write;
    (0..bytes.div_ceil(16))
        .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
        .take(bytes)
        .fold(String::new(), |mut out, b| {
            _ = write!(out, "{b:02x}");
            out
        })
}

/// Creates a key; returns it with its secret text, shown once.
pub async fn create(
    pool: &PgPool,
    name: &str,
    tenants: &[String],
    event_types: &[String],
) -> Result<(ApiKey, String), sqlx::Error> {
    let id = random_hex(6);
    let secret = random_hex(32);
    let row = sqlx::query(
        "INSERT INTO api_keys (id, name, secret_sha256, tenants, event_types)
         VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
    )
    .bind(&id)
    .bind(name)
    .bind(digest(&secret))
    .bind(tenants)
    .bind(event_types)
    .fetch_one(pool)
    .await?;
    let key = ApiKey {
        id: id.clone(),
        name: name.to_owned(),
        tenants: tenants.to_vec(),
        event_types: event_types.to_vec(),
        created_at: row.get(0),
        revoked_at: None,
    };
    Ok((key, format!("hsk_{id}_{secret}")))
}

/// Every key, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<ApiKey>, sqlx::Error> {
    Ok(sqlx::query(
        "SELECT id, name, tenants, event_types, created_at, revoked_at FROM api_keys
          ORDER BY created_at DESC",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(key_of)
    .collect())
}

/// Revokes the key named `name`; false when there is no such live key.
pub async fn revoke(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected()
            == 1,
    )
}

/// Checks bearer tokens, keeping what it read for `ttl` (a revocation takes effect within
/// that time).
pub struct Keys {
    pool: PgPool,
    ttl: Duration,
    cache: RwLock<HashMap<String, (Instant, Found)>>,
}

/// A key id's row: the key and the digest of its secret; `None` when there is none.
type Found = Option<(ApiKey, Vec<u8>)>;

/// A key from a row of `id, name, tenants, event_types, created_at, revoked_at`.
fn key_of(row: &sqlx::postgres::PgRow) -> ApiKey {
    ApiKey {
        id: row.get(0),
        name: row.get(1),
        tenants: row.get(2),
        event_types: row.get(3),
        created_at: row.get(4),
        revoked_at: row.get(5),
    }
}

/// Why a token was refused (401).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unauthorized {
    #[error("missing Authorization: Bearer <api key>")]
    Missing,
    #[error("the API key is not valid")]
    Invalid,
    #[error("the API key was revoked")]
    Revoked,
}

impl Keys {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self {
            pool,
            ttl,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The key a bearer token stands for.
    pub async fn check(&self, token: Option<&str>) -> Result<ApiKey, Unauthorized> {
        let token = token.ok_or(Unauthorized::Missing)?;
        let (id, secret) = token
            .strip_prefix("hsk_")
            .and_then(|rest| rest.split_once('_'))
            .ok_or(Unauthorized::Invalid)?;
        let cached = self
            .cache
            .read()
            .expect("keys lock")
            .get(id)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, found)| found.clone());
        let found = match cached {
            Some(found) => found,
            None => {
                let found = sqlx::query(
                    "SELECT id, name, tenants, event_types, created_at, revoked_at, secret_sha256
                       FROM api_keys WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|_| Unauthorized::Invalid)?
                .map(|r| (key_of(&r), r.get::<Vec<u8>, _>(6)));
                _ = self
                    .cache
                    .write()
                    .expect("keys lock")
                    .insert(id.to_owned(), (Instant::now(), found.clone()));
                found
            }
        };
        let (key, stored) = found.ok_or(Unauthorized::Invalid)?;
        if !constant_time_eq(&digest(secret), &stored) {
            return Err(Unauthorized::Invalid);
        }
        if key.revoked_at.is_some() {
            return Err(Unauthorized::Revoked);
        }
        Ok(key)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants() {
        let key = ApiKey {
            id: "a".into(),
            name: "apps".into(),
            tenants: vec!["coop-a".into()],
            event_types: vec![ANY.into()],
            created_at: Utc::now(),
            revoked_at: None,
        };
        assert!(key.may_write("coop-a", "people.MemberRegistered").is_ok());
        let error = key
            .may_write("coop-b", "people.MemberRegistered")
            .expect_err("tenant");
        assert!(error.contains("coop-b"), "{error}");
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
        assert_eq!(random_hex(32).len(), 64);
    }
}
