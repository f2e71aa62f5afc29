//! The sink's Postgres: its schema (created and migrated on connect), the offsets it keeps,
//! and the transaction that writes a batch.
//!
//! Exactly once: a batch's rows and the next offsets of its partitions are written in one
//! transaction, and the offsets only move from the value this instance last read. If
//! another instance moved them meanwhile (the partition was reassigned while this one was
//! still writing — a zombie), nothing is written and the caller re-reads where it stands.

use std::{collections::BTreeMap, str::FromStr, sync::LazyLock, time::Duration};

use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    batch::{Batch, LOG_COLUMNS, Op, copy_log, json_array},
    stage::{self, BadPayload, LINE_COLUMNS, TextCopy, create_staging},
    tables::{ENTITIES, LEDGER, Statements, staging},
};

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Another instance moved these partitions' offsets: re-read them.
    #[error("offsets of {0:?} moved under this sink: another instance owns them now")]
    Conflict(Vec<(String, i32)>),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub use habitat_runtime::retry::is_transient_database as is_transient;

impl WriteError {
    /// Whether writing again may succeed: a transient database error.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Database(error) if is_transient(error))
    }
}

/// A partition: (topic, partition).
pub type Partition = (String, i32);

/// The sink's tables in one schema of one database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    schema: String,
    sink: String,
    statements: Statements,
}

/// A schema name the sink refuses.
#[derive(Debug, thiserror::Error)]
#[error("schema name {0:?}: use 1-63 lowercase letters, digits and _ (not starting with a digit)")]
pub struct BadSchemaName(pub String);

/// A Postgres schema name the sink accepts: lowercase letters, digits and `_`.
pub fn check_schema_name(schema: &str) -> Result<(), BadSchemaName> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(BadSchemaName(schema.to_owned()))
    }
}

/// Connect options for `url` with `schema` first on the search path.
pub fn options(url: &str, schema: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?.options([("search_path", schema)]))
}

/// The advisory lock every sink holds while it creates and migrates a schema.
const MIGRATION_LOCK: i64 = 0x6861_6269_7461_7401;

/// Creates `schema` when missing and applies the migrations in it. Instances starting
/// together take turns: `CREATE SCHEMA IF NOT EXISTS` is not safe against a concurrent
/// create (one of them fails on the catalog's unique index), so it runs under an advisory
/// lock, released when the connection closes.
pub async fn migrate(url: &str, schema: &str) -> anyhow::Result<()> {
    let conn = prepare_schema(url, schema, MIGRATION_LOCK, &sqlx::migrate!("./migrations")).await?;
    conn.close().await?;
    Ok(())
}

/// Creates `schema` when missing and runs `migrations` in it, holding the advisory `lock`
/// (a concurrent `CREATE SCHEMA IF NOT EXISTS` fails otherwise); returns the connection,
/// the lock still held until it closes.
pub async fn prepare_schema(
    url: &str,
    schema: &str,
    lock: i64,
    migrations: &sqlx::migrate::Migrator,
) -> anyhow::Result<PgConnection> {
    check_schema_name(schema)?;
    let mut conn = PgConnection::connect_with(&options(url, schema)?).await?;
    _ = sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock)
        .execute(&mut conn)
        .await?;
    _ = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut conn)
        .await?;
    migrations.run(&mut conn).await?;
    Ok(conn)
}

impl Store {
    /// Connects, creates and migrates `schema`, and reads the tables' columns.
    pub async fn connect(url: &str, schema: &str, sink: &str) -> anyhow::Result<Self> {
        Self::connect_for(url, schema, sink, 2).await
    }

    /// As [`Store::connect`], with a connection for each of `writers` concurrent batch
    /// writes and two more (offsets read on a rebalance, reports).
    pub async fn connect_for(
        url: &str,
        schema: &str,
        sink: &str,
        writers: usize,
    ) -> anyhow::Result<Self> {
        migrate(url, schema).await?;
        let pool = PgPoolOptions::new()
            .max_connections(u32::try_from(writers).unwrap_or(u32::MAX).saturating_add(2))
            .acquire_timeout(Duration::from_secs(30))
            // Every session stages the entity rows of its batches in tables of its own.
            .after_connect(|conn, _| {
                static STAGING: LazyLock<String> =
                    LazyLock::new(|| create_staging(ENTITIES.iter().map(|(_, t)| *t)));
                Box::pin(async move {
                    _ = sqlx::Executor::execute(conn, STAGING.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(options(url, schema)?)
            .await?;
        let statements = Statements::load(&mut *pool.acquire().await?).await?;
        Ok(Self {
            pool,
            schema: schema.to_owned(),
            sink: sink.to_owned(),
            statements,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    pub fn statements(&self) -> &Statements {
        &self.statements
    }

    /// The next offset of each partition (`-1`: nothing read yet), creating the rows of
    /// partitions this sink has never read.
    pub async fn claim(
        &self,
        partitions: &[Partition],
    ) -> Result<BTreeMap<Partition, i64>, sqlx::Error> {
        let (topics, numbers): (Vec<String>, Vec<i32>) = partitions.iter().cloned().unzip();
        let mut tx = self.pool.begin().await?;
        _ = sqlx::query!(
            "INSERT INTO sink_offsets (sink, topic, partition, next_offset)
             SELECT $1, t, p, -1 FROM unnest($2::text[], $3::int4[]) AS i(t, p)
             ON CONFLICT DO NOTHING",
            self.sink,
            &topics,
            &numbers
        )
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query!(
            "SELECT topic, partition, next_offset FROM sink_offsets
              WHERE sink = $1 AND (topic, partition) IN
                    (SELECT t, p FROM unnest($2::text[], $3::int4[]) AS i(t, p))",
            self.sink,
            &topics,
            &numbers
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|r| ((r.topic, r.partition), r.next_offset))
            .collect())
    }

    /// Every offset this sink has stored.
    pub async fn offsets(&self) -> Result<BTreeMap<Partition, i64>, sqlx::Error> {
        Ok(sqlx::query!(
            "SELECT topic, partition, next_offset FROM sink_offsets WHERE sink = $1",
            self.sink
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| ((r.topic, r.partition), r.next_offset))
        .collect())
    }

    /// `batch` in the form its transaction sends: the log's `COPY` stream and every
    /// table's staged rows, made before the transaction begins so that Postgres does not
    /// wait for the sink to encode (a rebuild makes them while the batch before is
    /// written), and kept for a retry.
    /// Fails on a log row's payload the sink could not take apart (never one it made).
    pub fn prepare(&self, batch: Batch) -> Result<Prepared, BadPayload> {
        Ok(Prepared {
            log: (!batch.log.is_empty()).then(|| copy_log(&batch.log)),
            staged: stage(&self.statements, &batch)?,
            batch,
        })
    }

    /// Writes a prepared batch in one transaction, moving each of its partitions from the
    /// offset in `expected` to the batch's.
    pub async fn write(
        &self,
        prepared: &Prepared,
        expected: &BTreeMap<Partition, i64>,
    ) -> Result<(), WriteError> {
        let Prepared { batch, log, staged } = prepared;
        let mut tx = self.pool.begin().await?;
        let mut topics = Vec::with_capacity(batch.offsets.len());
        let mut numbers = Vec::with_capacity(batch.offsets.len());
        let mut from = Vec::with_capacity(batch.offsets.len());
        let mut to = Vec::with_capacity(batch.offsets.len());
        for ((topic, partition), next) in &batch.offsets {
            topics.push(topic.clone());
            numbers.push(*partition);
            from.push(
                expected
                    .get(&(topic.clone(), *partition))
                    .copied()
                    .unwrap_or(-1),
            );
            to.push(*next);
        }
        // First, so that a conflict costs nothing and concurrent writers of a partition
        // queue on its row.
        let moved = sqlx::query!(
            "UPDATE sink_offsets AS o SET next_offset = i.next, updated_at = now()
               FROM unnest($2::text[], $3::int4[], $4::int8[], $5::int8[]) AS i(topic, partition, expected, next)
              WHERE o.sink = $1 AND o.topic = i.topic AND o.partition = i.partition
                AND o.next_offset = i.expected
             RETURNING o.topic, o.partition",
            self.sink,
            &topics,
            &numbers,
            &from,
            &to
        )
        .fetch_all(&mut *tx)
        .await?;
        if moved.len() != topics.len() {
            let lost = topics
                .into_iter()
                .zip(numbers)
                .filter(|(t, p)| !moved.iter().any(|m| &m.topic == t && m.partition == *p))
                .collect();
            tx.rollback().await?;
            return Err(WriteError::Conflict(lost));
        }
        if let Some(log) = log {
            let mut copy = tx
                .copy_in_raw(&format!(
                    "COPY event_log ({LOG_COLUMNS}) FROM STDIN (FORMAT BINARY)"
                ))
                .await?;
            _ = copy.send(log.as_slice()).await?;
            _ = copy.finish().await?;
        }
        let mut filled = Vec::new();
        for (table, staged) in staged {
            if !staged.deleted.is_empty() {
                _ = sqlx::query(&format!(
                    "DELETE FROM {} WHERE record_key = ANY($1)",
                    crate::tables::ident(table)
                ))
                .bind(&staged.deleted)
                .execute(&mut *tx)
                .await?;
                if *table == LEDGER {
                    // A transaction's lines go with it (the merge replaces those of a
                    // transaction posted again).
                    _ = sqlx::query!(
                        "DELETE FROM ledger_lines WHERE record_key = ANY($1)",
                        &staged.deleted
                    )
                    .execute(&mut *tx)
                    .await?;
                }
            }
            if let Some(rows) = &staged.rows {
                copy_text(&mut tx, &format!("{} FROM STDIN", staging(table)), rows).await?;
                _ = sqlx::query(&self.statements.merges[table])
                    .execute(&mut *tx)
                    .await?;
                filled.push(stage::staging_name(table));
            }
            if let Some(lines) = &staged.lines {
                copy_text(
                    &mut tx,
                    &format!("ledger_lines ({LINE_COLUMNS}) FROM STDIN"),
                    lines,
                )
                .await?;
            }
        }
        if !filled.is_empty() {
            _ = sqlx::query(stage::CLEAR_STAGING)
                .bind(&filled)
                .execute(&mut *tx)
                .await?;
        }
        if !batch.dead_letters.is_empty() {
            _ = sqlx::query!(
                "INSERT INTO dead_letters (processor, source_topic, source_partition, source_offset,
                                           error_class, message, tenant_id, record_key, record_value,
                                           first_seen, read_topic, read_partition, read_offset)
                 SELECT processor, source_topic, source_partition, source_offset, error_class,
                        message, tenant_id, decode(record_key, 'hex'), decode(record_value, 'hex'),
                        first_seen, read_topic, read_partition, read_offset
                   FROM jsonb_to_recordset($1::text::jsonb) AS r(
                        processor text, source_topic text, source_partition integer,
                        source_offset bigint, error_class text, message text, tenant_id text,
                        record_key text, record_value text, first_seen timestamptz,
                        read_topic text, read_partition integer, read_offset bigint)
                 ON CONFLICT (read_topic, read_partition, read_offset) DO NOTHING",
                json_array(batch.dead_letters.iter().map(|(_, row)| row))
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A batch with its rows encoded for Postgres ([`Store::prepare`]).
#[derive(Debug)]
pub struct Prepared {
    batch: Batch,
    /// The log's rows, a binary `COPY` stream of [`LOG_COLUMNS`].
    log: Option<Vec<u8>>,
    staged: BTreeMap<&'static str, Staged>,
}

impl Prepared {
    /// The batch it was made from.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }
}

/// What a batch writes to one entity table, in the form the statements take.
#[derive(Debug, Default)]
struct Staged {
    /// Keys whose rows are deleted (tombstones).
    deleted: Vec<String>,
    /// The upserted rows, a text `COPY` stream of the table's columns.
    rows: Option<Vec<u8>>,
    /// The ledger's lines of those rows, a text `COPY` stream of [`LINE_COLUMNS`].
    lines: Option<Vec<u8>>,
}

/// The batch's entity rows, built before its transaction starts: each table's in the
/// order of their keys.
fn stage(
    statements: &Statements,
    batch: &Batch,
) -> Result<BTreeMap<&'static str, Staged>, BadPayload> {
    let mut out = BTreeMap::new();
    for (table, ops) in &batch.entities {
        let columns = &statements.columns[table];
        let mut staged = Staged::default();
        // A row's text is about as long as its payload.
        let mut rows = TextCopy::with_capacity(ops.len() * 512);
        let mut lines = TextCopy::with_capacity(if *table == LEDGER { ops.len() * 512 } else { 0 });
        for (key, op) in ops {
            match op {
                Op::Delete(..) => staged.deleted.push(key.clone()),
                Op::Upsert(logged) => {
                    let row = &batch.log[*logged];
                    let lines = (*table == LEDGER).then_some(&mut lines);
                    stage::entity_row(&mut rows, lines, columns, row)?;
                }
            }
        }
        staged.rows = (!rows.is_empty()).then(|| rows.into_bytes());
        staged.lines = (!lines.is_empty()).then(|| lines.into_bytes());
        _ = out.insert(*table, staged);
    }
    Ok(out)
}

/// `COPY <target> …` (text format) of `rows`.
async fn copy_text(tx: &mut PgConnection, target: &str, rows: &[u8]) -> Result<(), sqlx::Error> {
    let mut copy = tx.copy_in_raw(&format!("COPY {target}")).await?;
    _ = copy.send(rows).await?;
    _ = copy.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tables_rows_are_staged_in_the_order_of_their_keys() {
        let column = |name: &str| stage::Column {
            name: name.to_owned(),
            ty: "text".to_owned(),
        };
        let statements = Statements {
            columns: [(
                "members",
                vec![column("record_key"), column("display_name")],
            )]
            .into(),
            merges: BTreeMap::new(),
        };
        let mut batch = Batch::default();
        // Read in an order that is not the keys'.
        for (offset, member) in ["m-3", "m-10", "m-1", "m-2"].into_iter().enumerate() {
            let key = format!("coop-a/member/{member}");
            batch.log.push(crate::batch::LogRow {
                topic: "habitat.people".to_owned(),
                offset: i64::try_from(offset).expect("an offset"),
                key: key.clone(),
                payload: Some(format!(r#"{{"display_name":"{member}"}}"#)),
                ..crate::batch::LogRow::default()
            });
            _ = batch
                .entities
                .entry("members")
                .or_default()
                .insert(key, Op::Upsert(offset));
        }
        let staged = stage(&statements, &batch).expect("staged");
        let rows = staged["members"].rows.as_deref().expect("rows");
        assert_eq!(
            std::str::from_utf8(rows).expect("text"),
            "coop-a/member/m-1\tm-1\n\
             coop-a/member/m-10\tm-10\n\
             coop-a/member/m-2\tm-2\n\
             coop-a/member/m-3\tm-3\n"
        );
    }

    #[test]
    fn schema_names() {
        assert!(check_schema_name("habitat").is_ok());
        assert!(check_schema_name("habitat_replay_2").is_ok());
        for bad in ["", "Habitat", "a-b", "1abc", "x;drop"] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }
}
