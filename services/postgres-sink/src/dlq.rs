//! Dead letters for operators: list them by processor and status, show one with its
//! payload decoded where possible, re-drive it to its source topic once the cause is
//! fixed, and resolve it — once — with who and why.

use std::time::Duration;

use chrono::{DateTime, Utc};
use habitat_runtime::{Codec, avro::AvroCodec, config::KafkaSettings};
use rdkafka::{
    ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{BaseProducer, BaseRecord, Producer},
};
use serde::Serialize;
use sqlx::PgPool;

/// Header a re-driven record carries: the dead letter's id.
pub const REDRIVEN_FROM: &str = "habitat.dlq.redriven_from";

/// A dead letter as operators see it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Letter {
    pub id: i64,
    pub processor: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub error_class: String,
    pub message: String,
    pub tenant_id: Option<String>,
    pub status: String,
    pub first_seen: DateTime<Utc>,
    pub redrive_count: i32,
    pub redriven_by: Option<String>,
    pub redriven_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
    pub record_key: Option<String>,
    #[serde(skip)]
    pub record_value: Option<Vec<u8>>,
}

/// Why an operation on a dead letter was refused.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("no dead letter {0}")]
    NotFound(i64),
    #[error("dead letter {id} was already resolved by {by} at {at}: {why}")]
    AlreadyResolved {
        id: i64,
        by: String,
        at: DateTime<Utc>,
        why: String,
    },
    #[error(
        "dead letter {id} was already re-driven by {by} at {at}; re-drive it again with --again"
    )]
    AlreadyRedriven {
        id: i64,
        by: String,
        at: DateTime<Utc>,
    },
    #[error(
        "dead letter {id} is being re-driven by {by} since {since}; if that re-drive died, \
         check the topic and re-drive it with --again after {} minutes",
        STALE_CLAIM.as_secs() / 60
    )]
    BeingRedriven {
        id: i64,
        by: String,
        since: DateTime<Utc>,
    },
    #[error("dead letter {0} holds no record to re-drive (a timer's letter); resolve it instead")]
    NothingToRedrive(i64),
    #[error("re-drive of dead letter {id} to {topic}: {error}")]
    Kafka {
        id: i64,
        topic: String,
        error: String,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

macro_rules! select_letters {
    ($condition:literal $(, $arg:expr)*) => {
        sqlx::query_as!(
            Letter,
            r#"SELECT id, processor, source_topic, source_partition, source_offset, error_class,
                      message, tenant_id, status, first_seen, redrive_count, redriven_by,
                      redriven_at, resolved_by, resolved_at, resolution,
                      encode(record_key, 'escape') AS record_key, record_value
                 FROM dead_letters "# + $condition $(, $arg)*
        )
    };
}

/// Dead letters, newest first, optionally of one processor and/or status.
pub async fn list(
    pool: &PgPool,
    processor: Option<&str>,
    status: Option<&str>,
) -> Result<Vec<Letter>, DlqError> {
    Ok(select_letters!(
        "WHERE ($1::text IS NULL OR processor = $1) AND ($2::text IS NULL OR status = $2)
         ORDER BY first_seen DESC, id DESC",
        processor,
        status
    )
    .fetch_all(pool)
    .await?)
}

/// One dead letter.
pub async fn get(pool: &PgPool, id: i64) -> Result<Letter, DlqError> {
    select_letters!("WHERE id = $1", id)
        .fetch_optional(pool)
        .await?
        .ok_or(DlqError::NotFound(id))
}

/// The letter's payload: the decoded event as JSON where the codec can read it, else
/// what is known about the bytes.
pub fn decoded_payload(letter: &Letter, codec: Option<&AvroCodec>) -> serde_json::Value {
    let Some(bytes) = &letter.record_value else {
        return serde_json::Value::Null;
    };
    if let Some(codec) = codec {
        match codec.decode(&letter.source_topic, bytes) {
            Ok(event) => return serde_json::to_value(&event).unwrap_or_default(),
            Err(error) => {
                return serde_json::json!({
                    "undecodable": error.to_string(),
                    "bytes": bytes.len(),
                    "text": String::from_utf8_lossy(bytes),
                });
            }
        }
    }
    serde_json::json!({ "bytes": bytes.len(), "text": String::from_utf8_lossy(bytes) })
}

/// Where a re-driven record landed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Redriven {
    pub topic: String,
    pub partition: i32,
}

/// How long a re-drive may hold its claim before `--again` may take it: far longer than a
/// publish takes (its Kafka timeouts are 30 s).
pub const STALE_CLAIM: Duration = Duration::from_secs(300);

/// Claims the letter for a re-drive (`REDRIVING`): a `NEW` one; with `again` also a
/// `REDRIVEN` one, or one whose re-drive died more than `STALE_CLAIM` ago. The status it
/// had, or why it cannot be claimed.
async fn claim(pool: &PgPool, id: i64, by: &str, again: bool) -> Result<String, DlqError> {
    let claimed = sqlx::query_scalar!(
        r#"UPDATE dead_letters AS d
              SET status = 'REDRIVING', redriving_by = $2, redriving_since = now()
             FROM (SELECT id, status FROM dead_letters WHERE id = $1 FOR UPDATE) AS before
            WHERE d.id = before.id
              AND d.record_value IS NOT NULL
              AND (before.status = 'NEW'
                   OR ($3 AND before.status = 'REDRIVEN')
                   OR ($3 AND before.status = 'REDRIVING'
                       AND d.redriving_since < now() - make_interval(secs => $4)))
        RETURNING before.status AS "status!""#,
        id,
        by,
        again,
        STALE_CLAIM.as_secs_f64()
    )
    .fetch_optional(pool)
    .await?;
    if let Some(status) = claimed {
        return Ok(status);
    }
    let letter = get(pool, id).await?;
    refuse_resolved(&letter)?;
    if letter.record_value.is_none() {
        return Err(DlqError::NothingToRedrive(id));
    }
    let holder = sqlx::query!(
        "SELECT redriving_by, redriving_since FROM dead_letters WHERE id = $1",
        id
    )
    .fetch_one(pool)
    .await?;
    Err(match letter.status.as_str() {
        "REDRIVING" => DlqError::BeingRedriven {
            id,
            by: holder.redriving_by.unwrap_or_default(),
            since: holder.redriving_since.unwrap_or_default(),
        },
        _ => DlqError::AlreadyRedriven {
            id,
            by: letter.redriven_by.unwrap_or_default(),
            at: letter.redriven_at.unwrap_or_default(),
        },
    })
}

/// Re-drives the letter once: claims it (`REDRIVING`), publishes its original record to its
/// source topic and partition in a Kafka transaction, then marks it `REDRIVEN`. A resolved
/// letter is refused; a re-driven one is re-driven again only with `again`; of two
/// concurrent re-drives one publishes and the other is refused. A publish that fails gives
/// the letter its status back.
pub async fn redrive(
    pool: &PgPool,
    id: i64,
    by: &str,
    again: bool,
    bootstrap_servers: &str,
    kafka: &KafkaSettings,
) -> Result<Redriven, DlqError> {
    let before = claim(pool, id, by, again).await?;
    let letter = get(pool, id).await?;
    let Some(value) = letter.record_value.clone() else {
        return Err(DlqError::NothingToRedrive(id));
    };
    let key: Option<Vec<u8>> =
        sqlx::query_scalar!("SELECT record_key FROM dead_letters WHERE id = $1", id)
            .fetch_one(pool)
            .await?;
    let topic = letter.source_topic.clone();
    let partition = letter.source_partition;
    let servers = bootstrap_servers.to_owned();
    let settings = kafka.clone();
    let target = topic.clone();
    let kafka_error = |error: String| DlqError::Kafka {
        id,
        topic: topic.clone(),
        error,
    };
    // Err((error, settled)): `settled` when nothing can have been published (the failure
    // came before the commit); a commit that failed or timed out may have gone through.
    let published = tokio::task::spawn_blocking(move || -> Result<(), (String, bool)> {
        let before_commit = |e: String| (e, true);
        let mut config = ClientConfig::new();
        _ = config
            .set("bootstrap.servers", &servers)
            .set("transactional.id", format!("habitat-dlq-redrive-{id}"))
            .set("enable.idempotence", "true")
            .set("acks", "all");
        settings.apply(&mut config);
        let producer: BaseProducer = config.create().map_err(|e| before_commit(e.to_string()))?;
        let timeout = Duration::from_secs(30);
        producer
            .init_transactions(timeout)
            .map_err(|e| before_commit(e.to_string()))?;
        producer
            .begin_transaction()
            .map_err(|e| before_commit(e.to_string()))?;
        let id_text = id.to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: REDRIVEN_FROM,
            value: Some(id_text.as_bytes()),
        });
        let mut record = BaseRecord::to(&target)
            .payload(value.as_slice())
            .partition(partition)
            .headers(headers);
        if let Some(key) = &key {
            record = record.key(key.as_slice());
        }
        producer
            .send(record)
            .map_err(|(e, _)| before_commit(e.to_string()))?;
        producer
            .commit_transaction(timeout)
            .map_err(|e| (e.to_string(), false))
    })
    .await
    .map_err(|e| (e.to_string(), false))
    .and_then(|published| published);
    if let Err((error, settled)) = published {
        if !settled {
            // It may have been published: the claim stays, and `--again` after
            // STALE_CLAIM is a decision taken knowingly.
            return Err(kafka_error(format!(
                "{error}; the outcome is unknown, the letter stays REDRIVING"
            )));
        }
        // Nothing was published: the claim is given back.
        _ = sqlx::query!(
            "UPDATE dead_letters SET status = $2, redriving_by = NULL, redriving_since = NULL
              WHERE id = $1 AND status = 'REDRIVING'",
            id,
            before
        )
        .execute(pool)
        .await?;
        return Err(kafka_error(error));
    }
    _ = sqlx::query!(
        "UPDATE dead_letters SET status = 'REDRIVEN', redrive_count = redrive_count + 1,
                redriven_by = $2, redriven_at = now(), redriving_by = NULL,
                redriving_since = NULL
          WHERE id = $1",
        id,
        by
    )
    .execute(pool)
    .await?;
    Ok(Redriven {
        topic: letter.source_topic.clone(),
        partition,
    })
}

/// Marks the letter handled, with who and why; a second resolve is refused.
pub async fn resolve(pool: &PgPool, id: i64, by: &str, why: &str) -> Result<Letter, DlqError> {
    let updated = sqlx::query_scalar!(
        "UPDATE dead_letters SET status = 'RESOLVED', resolved_by = $2, resolution = $3,
                resolved_at = now()
          WHERE id = $1 AND status <> 'RESOLVED'
         RETURNING id",
        id,
        by,
        why
    )
    .fetch_optional(pool)
    .await?;
    let letter = get(pool, id).await?;
    if updated.is_none() {
        refuse_resolved(&letter)?;
    }
    Ok(letter)
}

fn refuse_resolved(letter: &Letter) -> Result<(), DlqError> {
    if letter.status == "RESOLVED" {
        return Err(DlqError::AlreadyResolved {
            id: letter.id,
            by: letter.resolved_by.clone().unwrap_or_default(),
            at: letter.resolved_at.unwrap_or_default(),
            why: letter.resolution.clone().unwrap_or_default(),
        });
    }
    Ok(())
}

/// A table of letters for the terminal.
pub fn render_list(letters: &[Letter]) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:>6}  {:<24} {:<9} {:<16} {:<32} {:<20} {}\n",
        "id", "processor", "status", "class", "source", "first seen", "message"
    );
    for l in letters {
        let source = format!(
            "{}/{}@{}",
            l.source_topic, l.source_partition, l.source_offset
        );
        let message: String = l.message.chars().take(80).collect();
        _ = writeln!(
            out,
            "{:>6}  {:<24} {:<9} {:<16} {:<32} {:<20} {}",
            l.id,
            l.processor,
            l.status,
            l.error_class,
            source,
            l.first_seen.format("%Y-%m-%d %H:%M:%S"),
            message
        );
    }
    _ = writeln!(out, "{} dead letter(s).", letters.len());
    out
}
