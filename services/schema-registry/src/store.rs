//! The registry's Postgres store.
//!
//! Registration runs in one transaction holding an advisory lock on its subject, so two
//! concurrent registrations of a subject cannot both pass the compatibility check against
//! the same latest version, and a schema keeps one global id (unique fingerprint).

use apache_avro::Schema;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use crate::{
    VersionRef,
    compatibility::{self, Level},
    error::{RegistryError, Result},
};

/// A registered version of a subject.
#[derive(Clone, Debug)]
pub struct Found {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    pub schema: String,
}

impl Found {
    pub fn to_json(&self) -> Value {
        json!({
            "subject": self.subject,
            "version": self.version,
            "id": self.id,
            "schema": self.schema,
        })
    }
}

/// What a compatibility check compares with.
#[derive(Clone, Copy, Debug)]
pub enum Against {
    /// One version (`latest`: the latest only).
    Version(VersionRef),
    /// What the subject's level names: every live version at a transitive level, the
    /// latest otherwise.
    Level,
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

/// The identity of a schema text: SHA-256 of its JSON re-serialised without whitespace.
fn fingerprint(text: &str) -> String {
    let normal = serde_json::from_str::<Value>(text)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| text.to_owned());
    format!("{:x}", Sha256::digest(normal.as_bytes()))
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        _ = sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The subjects with a live version (with `deleted`: also those soft-deleted).
    pub async fn subjects(&self, deleted: bool) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT subject FROM subject_versions WHERE $1 OR NOT deleted \
             ORDER BY subject",
        )
        .bind(deleted)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A subject's live versions (with `deleted`: also those soft-deleted).
    pub async fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<i32>> {
        Ok(sqlx::query_scalar(
            "SELECT version FROM subject_versions WHERE subject = $1 AND ($2 OR NOT deleted) \
             ORDER BY version",
        )
        .bind(subject)
        .bind(deleted)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn live_versions<'e, E>(&self, executor: E, subject: &str) -> Result<Vec<Found>>
    where
        E: sqlx::PgExecutor<'e>,
    {
        let rows = sqlx::query(
            "SELECT v.version, v.schema_id, s.schema FROM subject_versions v \
             JOIN schemas s ON s.id = v.schema_id \
             WHERE v.subject = $1 AND NOT v.deleted ORDER BY v.version",
        )
        .bind(subject)
        .fetch_all(executor)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| Found {
                subject: subject.to_owned(),
                version: row.get("version"),
                id: row.get("schema_id"),
                schema: row.get("schema"),
            })
            .collect())
    }

    pub async fn version(&self, subject: &str, version: VersionRef) -> Result<Found> {
        let versions = self.live_versions(&self.pool, subject).await?;
        if versions.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        match version {
            VersionRef::Latest => Ok(versions.last().cloned().expect("not empty")),
            VersionRef::Number(n) => versions
                .into_iter()
                .find(|v| v.version == n)
                .ok_or_else(|| RegistryError::version_not_found(subject, n)),
        }
    }

    pub async fn schema(&self, id: i32) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT schema FROM schemas WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn schema_versions(&self, id: i32) -> Result<Vec<(String, i32)>> {
        Ok(sqlx::query_as(
            "SELECT subject, version FROM subject_versions WHERE schema_id = $1 AND NOT deleted \
             ORDER BY subject, version",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn lookup(
        &self,
        subject: &str,
        text: &str,
        _schema: &Schema,
        deleted: bool,
    ) -> Result<Option<Found>> {
        let print = fingerprint(text);
        let found = sqlx::query(
            "SELECT v.version, v.schema_id, s.schema FROM subject_versions v \
             JOIN schemas s ON s.id = v.schema_id \
             WHERE v.subject = $1 AND ($3 OR NOT v.deleted) AND s.fingerprint = $2 \
             ORDER BY v.version LIMIT 1",
        )
        .bind(subject)
        .bind(&print)
        .bind(deleted)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.map(|row| Found {
            subject: subject.to_owned(),
            version: row.get("version"),
            id: row.get("schema_id"),
            schema: row.get("schema"),
        }))
    }

    /// Why `candidate` may not be registered after `against` at the subject's level.
    fn problems(level: Level, candidate: &Schema, against: &[Found]) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        for existing in against {
            let parsed = compatibility::parse(&existing.schema)?;
            problems.extend(level.problems(candidate, &parsed, existing.version));
        }
        Ok(problems)
    }

    fn checked_against(level: Level, versions: &[Found]) -> &[Found] {
        if level.transitive() {
            versions
        } else {
            versions.last().map_or(&[], std::slice::from_ref)
        }
    }

    /// Registers `text` under `subject`; returns its global id.
    pub async fn register(&self, subject: &str, text: &str, schema: &Schema) -> Result<i32> {
        let print = fingerprint(text);
        let mut tx = self.pool.begin().await?;
        _ = sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(subject)
            .execute(&mut *tx)
            .await?;
        let versions = self.live_versions(&mut *tx, subject).await?;
        let existing_id: Option<i32> =
            sqlx::query_scalar("SELECT id FROM schemas WHERE fingerprint = $1")
                .bind(&print)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(id) = existing_id
            && versions.iter().any(|v| v.id == id)
        {
            tx.commit().await?;
            return Ok(id);
        }
        let level = self.effective_level(&mut tx, subject).await?;
        let problems = Self::problems(level, schema, Self::checked_against(level, &versions))?;
        if !problems.is_empty() {
            return Err(RegistryError::incompatible(&problems));
        }
        let id = match existing_id {
            Some(id) => id,
            None => {
                sqlx::query_scalar(
                    "INSERT INTO schemas (schema, fingerprint) VALUES ($1, $2) \
                     ON CONFLICT (fingerprint) DO UPDATE SET fingerprint = EXCLUDED.fingerprint \
                     RETURNING id",
                )
                .bind(text)
                .bind(&print)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        _ = sqlx::query(
            "INSERT INTO subject_versions (subject, version, schema_id) \
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2 FROM subject_versions WHERE subject = $1",
        )
        .bind(subject)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Problems of `candidate` against a version, or against what the subject's level
    /// names.
    pub async fn compatibility_problems(
        &self,
        subject: &str,
        against: Against,
        candidate: &Schema,
    ) -> Result<Vec<String>> {
        let versions = self.live_versions(&self.pool, subject).await?;
        let mut tx = self.pool.begin().await?;
        let level = self.effective_level(&mut tx, subject).await?;
        tx.commit().await?;
        if versions.is_empty() {
            // Nothing to be incompatible with when asked by level, as when registering.
            return match against {
                Against::Level => Ok(Vec::new()),
                Against::Version(_) => Err(RegistryError::subject_not_found(subject)),
            };
        }
        let against: Vec<Found> = match against {
            Against::Level => Self::checked_against(level, &versions).to_vec(),
            Against::Version(VersionRef::Latest) => versions.last().cloned().into_iter().collect(),
            Against::Version(VersionRef::Number(n)) => vec![
                versions
                    .into_iter()
                    .find(|v| v.version == n)
                    .ok_or_else(|| RegistryError::version_not_found(subject, n))?,
            ],
        };
        Self::problems(level, candidate, &against)
    }

    /// Soft-deletes one live version; returns its number.
    pub async fn soft_delete_version(&self, subject: &str, version: VersionRef) -> Result<i32> {
        let found = self.version(subject, version).await?;
        _ = sqlx::query(
            "UPDATE subject_versions SET deleted = true WHERE subject = $1 AND version = $2",
        )
        .bind(subject)
        .bind(found.version)
        .execute(&self.pool)
        .await?;
        Ok(found.version)
    }

    pub async fn soft_delete(&self, subject: &str) -> Result<Vec<i32>> {
        Ok(sqlx::query_scalar(
            "UPDATE subject_versions SET deleted = true WHERE subject = $1 AND NOT deleted \
             RETURNING version",
        )
        .bind(subject)
        .fetch_all(&self.pool)
        .await
        .map(|mut versions: Vec<i32>| {
            versions.sort_unstable();
            versions
        })?)
    }

    async fn effective_level(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        subject: &str,
    ) -> Result<Level> {
        let level: String = sqlx::query_scalar(
            "SELECT level FROM compatibility WHERE subject IN ($1, '') \
             ORDER BY subject = '' LIMIT 1",
        )
        .bind(subject)
        .fetch_one(&mut **tx)
        .await?;
        level.parse().map_err(|_| RegistryError::internal())
    }

    pub async fn level(&self, subject: Option<&str>) -> Result<Level> {
        let mut tx = self.pool.begin().await?;
        let level = self.effective_level(&mut tx, subject.unwrap_or("")).await?;
        tx.commit().await?;
        Ok(level)
    }

    pub async fn subject_level(&self, subject: &str) -> Result<Option<Level>> {
        let level: Option<String> =
            sqlx::query_scalar("SELECT level FROM compatibility WHERE subject = $1")
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?;
        Ok(level.and_then(|l| l.parse().ok()))
    }

    pub async fn set_level(&self, subject: Option<&str>, level: Level) -> Result<()> {
        _ = sqlx::query(
            "INSERT INTO compatibility (subject, level) VALUES ($1, $2) \
             ON CONFLICT (subject) DO UPDATE SET level = EXCLUDED.level",
        )
        .bind(subject.unwrap_or(""))
        .bind(level.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
