//! API keys: each bound to a set of tenants and the event types it may write; stored as
//! a SHA-256 of the secret (keys are 256-bit random, so a fast hash is enough), never
//! logged. A key reads `hsk_<id>_<secret>`: the id finds the row, the secret is compared
//! in constant time.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use contracts::records::CATALOG;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use subtle::ConstantTimeEq;

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

/// What a key was not granted (403).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    #[error("key {key} may not write for tenant {tenant}")]
    Tenant { key: String, tenant: String },
    #[error("key {key} may not write {event_type}")]
    EventType { key: String, event_type: String },
}

impl ApiKey {
    pub fn may_write(&self, tenant: &str, event_type: &str) -> Result<(), Forbidden> {
        let grants = |list: &[String], what: &str| list.iter().any(|g| g == ANY || g == what);
        if !grants(&self.tenants, tenant) {
            return Err(Forbidden::Tenant {
                key: self.name.clone(),
                tenant: tenant.to_owned(),
            });
        }
        if !grants(&self.event_types, event_type) {
            return Err(Forbidden::EventType {
                key: self.name.clone(),
                event_type: event_type.to_owned(),
            });
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

/// Why a key was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// A grant names an event type producers may not write, or none of the catalog.
    #[error("{0}")]
    Refused(String),
    #[error("the key store: {0}")]
    Database(#[from] sqlx::Error),
}

/// Every event type granted must be one producers may write (`*` grants all of those).
pub fn check_grants(event_types: &[String]) -> Result<(), CreateError> {
    for granted in event_types.iter().filter(|t| *t != ANY) {
        let info = CATALOG
            .iter()
            .find(|info| info.event_type == granted)
            .ok_or_else(|| {
                CreateError::Refused(format!("{granted} is not an event type of the catalog"))
            })?;
        if !info.producer_writable {
            return Err(CreateError::Refused(format!(
                "{granted} is written by the {} processor only; a key cannot grant it",
                info.writer
            )));
        }
    }
    Ok(())
}

/// Creates a key; returns it with its secret text, shown once.
pub async fn create(
    pool: &PgPool,
    name: &str,
    tenants: &[String],
    event_types: &[String],
) -> Result<(ApiKey, String), CreateError> {
    check_grants(event_types)?;
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
/// that time) in a bounded cache: at most `CACHE_ENTRIES` key ids, found or not.
///
/// A token that is not shaped like a key (`hsk_` + 12 hex digits + `_` + 64 hex digits)
/// is refused before any query. Failed authentications are counted per client address;
/// an address over its budget is refused (429) before any query until its minute is over
/// (a key already in the cache still passes: checking it costs nothing).
pub struct Keys {
    pool: PgPool,
    ttl: Duration,
    cache: moka::sync::Cache<String, Found>,
    failures: Option<Failures>,
}

/// Failed authentications per client address in a fixed window from the first; bounded.
struct Failures {
    limit: u32,
    window: Duration,
    counts: moka::sync::Cache<IpAddr, Arc<(Instant, AtomicU32)>>,
}

impl Failures {
    /// Time left until `peer` may try again, when it has used up its failures.
    fn blocked(&self, peer: IpAddr) -> Option<Duration> {
        let entry = self.counts.get(&peer)?;
        (entry.1.load(Ordering::Relaxed) >= self.limit)
            .then(|| self.window.saturating_sub(entry.0.elapsed()))
            .filter(|left| !left.is_zero())
    }

    fn count(&self, peer: IpAddr) {
        let entry = self
            .counts
            .get_with(peer, || Arc::new((Instant::now(), AtomicU32::new(0))));
        _ = entry.1.fetch_add(1, Ordering::Relaxed);
    }
}

/// Most key ids kept in the cache (hits and misses together).
pub const CACHE_ENTRIES: u64 = 10_000;

/// A cache of `entries` key ids for `ttl` (none kept when `ttl` is zero).
fn key_cache(entries: u64, ttl: Duration) -> moka::sync::Cache<String, Found> {
    let entries = if ttl.is_zero() { 0 } else { entries };
    moka::sync::Cache::builder()
        .max_capacity(entries)
        .time_to_live(ttl.max(Duration::from_millis(1)))
        .build()
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

/// Why the key store does not answer.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("{0}")]
    Failed(#[source] sqlx::Error),
    #[error("no answer within 2 s")]
    Silent,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unauthorized {
    #[error("missing Authorization: Bearer <api key>")]
    Missing,
    #[error("the API key is not valid")]
    Invalid,
    #[error("the API key was revoked")]
    Revoked,
    /// Too many failed authentications from this address (429).
    #[error("too many failed authentications from this address; retry after {0:?}")]
    TooManyFailures(Duration),
    /// The key store cannot be read (503): nothing is known of the key.
    #[error("the key store is unavailable: {0}")]
    StoreUnavailable(String),
}

/// The id and secret of a token shaped like a key, or `None`.
fn shape(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix("hsk_")?.split_once('_')?;
    let hex = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    (hex(id, 12) && hex(secret, 64)).then_some((id, secret))
}

impl Keys {
    /// Checks against `pool`, trusting what it read for `ttl`; no limit on failures.
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self {
            pool,
            ttl,
            cache: key_cache(CACHE_ENTRIES, ttl),
            failures: None,
        }
    }

    /// At most `entries` key ids in the cache (default `CACHE_ENTRIES`).
    #[must_use]
    pub fn with_cache_entries(mut self, entries: u64) -> Self {
        self.cache = key_cache(entries, self.ttl);
        self
    }

    /// At most `per_minute` failed authentications per client address in a minute
    /// (0: no limit); an address over it is answered 429 until the minute is over.
    #[must_use]
    pub fn with_failure_limit(mut self, per_minute: u32) -> Self {
        let window = Duration::from_secs(60);
        self.failures = (per_minute > 0).then(|| Failures {
            limit: per_minute,
            window,
            counts: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
        });
        self
    }

    /// The key a bearer token stands for, asked by a client at `peer` (when known).
    pub async fn check(
        &self,
        token: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<ApiKey, Unauthorized> {
        let outcome = self.lookup(token, peer).await;
        if let (Err(Unauthorized::Invalid | Unauthorized::Revoked), Some(peer), Some(failures)) =
            (&outcome, peer, &self.failures)
        {
            failures.count(peer);
        }
        outcome
    }

    async fn lookup(
        &self,
        token: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<ApiKey, Unauthorized> {
        let token = token.ok_or(Unauthorized::Missing)?;
        let (id, secret) = shape(token).ok_or(Unauthorized::Invalid)?;
        let found = match self.cache.get(id) {
            Some(found) => found,
            None => {
                // A query only for an address within its failed authentications.
                if let (Some(peer), Some(failures)) = (peer, &self.failures)
                    && let Some(left) = failures.blocked(peer)
                {
                    return Err(Unauthorized::TooManyFailures(left));
                }
                let found = sqlx::query(
                    "SELECT id, name, tenants, event_types, created_at, revoked_at, secret_sha256
                       FROM api_keys WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| Unauthorized::StoreUnavailable(e.to_string()))?
                .map(|r| (key_of(&r), r.get::<Vec<u8>, _>(6)));
                self.cache.insert(id.to_owned(), found.clone());
                found
            }
        };
        let (key, stored) = found.ok_or(Unauthorized::Invalid)?;
        if !bool::from(digest(secret).ct_eq(&stored)) {
            return Err(Unauthorized::Invalid);
        }
        if key.revoked_at.is_some() {
            return Err(Unauthorized::Revoked);
        }
        Ok(key)
    }

    /// Whether the key store answers (for `/readyz`), within two seconds.
    pub async fn reachable(&self) -> Result<(), Unreachable> {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(Duration::from_secs(2), ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(Unreachable::Failed(error)),
            Err(_) => Err(Unreachable::Silent),
        }
    }

    /// Key ids in the cache now (for tests of its bound).
    pub fn cached(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_store_that_does_not_answer_is_reported_unreachable() {
        // Nothing listens on port 1: every connection is refused.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(1))
            .connect_lazy("postgres://habitat@127.0.0.1:1/habitat")
            .expect("a lazy pool");
        let keys = Keys::new(pool, Duration::from_secs(5));
        assert!(keys.reachable().await.is_err());
    }

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
        assert!(error.to_string().contains("coop-b"), "{error}");
        assert_eq!(random_hex(32).len(), 64);
    }

    #[test]
    fn only_tokens_shaped_like_keys_are_looked_up() {
        let id = random_hex(6);
        let secret = random_hex(32);
        assert_eq!(
            shape(&format!("hsk_{id}_{secret}")),
            Some((id.as_str(), secret.as_str()))
        );
        for token in [
            "hsk_nope_nope".to_owned(),
            format!("hsk_{id}_{secret}0"),
            format!("hsk_{id}_{}", secret.to_uppercase()),
            format!("hsk_{id}{secret}"),
            format!("xsk_{id}_{secret}"),
            format!("hsk_{}_{secret}", &id[1..]),
        ] {
            assert_eq!(shape(&token), None, "{token}");
        }
    }
}
