//! The sink's Postgres: its schema (created and migrated on connect), the offsets it keeps,
//! and the transaction that writes a batch.
//!
//! Exactly once: a batch's rows and the next offsets of its partitions are written in one
//! transaction, and the offsets only move from the value this instance last read. If
//! another instance moved them meanwhile (the partition was reassigned while this one was
//! still writing — a zombie), nothing is written and the caller re-reads where it stands.

use std::{collections::BTreeMap, str::FromStr, time::Duration};

use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    batch::{Batch, LOG_COLUMNS, Op, copy_log, json_array},
    tables::{LEDGER, Statements},
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

    /// Writes `batch` in one transaction, moving each of its partitions from the offset in
    /// `expected` to the batch's.
    pub async fn write(
        &self,
        batch: &Batch,
        expected: &BTreeMap<Partition, i64>,
    ) -> Result<(), WriteError> {
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
        if !batch.log.is_empty() {
            let mut copy = tx
                .copy_in_raw(&format!(
                    "COPY event_log ({LOG_COLUMNS}) FROM STDIN (FORMAT BINARY)"
                ))
                .await?;
            _ = copy.send(copy_log(&batch.log)).await?;
            _ = copy.finish().await?;
        }
        for (table, ops) in &batch.entities {
            let deleted: Vec<String> = ops
                .iter()
                .filter(|(_, op)| matches!(op, Op::Delete(..)))
                .map(|(key, _)| key.clone())
                .collect();
            if !deleted.is_empty() {
                _ = sqlx::query(&format!(
                    "DELETE FROM {} WHERE record_key = ANY($1)",
                    crate::tables::ident(table)
                ))
                .bind(&deleted)
                .execute(&mut *tx)
                .await?;
            }
            if *table == LEDGER {
                // A transaction's lines go with it, and are replaced when it is.
                let replaced: Vec<&String> = ops.keys().collect();
                _ = sqlx::query!(
                    "DELETE FROM ledger_lines WHERE record_key = ANY($1)",
                    &replaced as &[&String]
                )
                .execute(&mut *tx)
                .await?;
            }
            let mut rows = Rows::default();
            for op in ops.values() {
                if let Op::Upsert(topic, partition, offset) = op {
                    rows.topics.push(topic.clone());
                    rows.partitions.push(*partition);
                    rows.offsets.push(*offset);
                }
            }
            if rows.offsets.is_empty() {
                continue;
            }
            _ = sqlx::query(&self.statements.upserts[table])
                .bind(&rows.topics)
                .bind(&rows.partitions)
                .bind(&rows.offsets)
                .execute(&mut *tx)
                .await?;
            if *table == LEDGER {
                write_lines(&mut tx, &rows).await?;
            }
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

/// Log rows by their coordinates.
#[derive(Debug, Default)]
struct Rows {
    topics: Vec<String>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
}

/// Writes the lines of the ledger transactions logged at `rows`.
async fn write_lines(tx: &mut PgConnection, rows: &Rows) -> Result<(), sqlx::Error> {
    _ = sqlx::query!(
        "INSERT INTO ledger_lines (record_key, line_no, tenant_id, transaction_id, posted_on,
                                   currency, account, member_id, debit, credit, memo)
         SELECT e.record_key, l.line_no::int, e.tenant_id, t.transaction_id, t.posted_on,
                t.currency, l.account, l.member_id, l.debit, l.credit, l.memo
           FROM unnest($1::text[], $2::int4[], $3::int8[]) AS at(topic, part, pos)
          CROSS JOIN LATERAL (SELECT * FROM event_log
                               WHERE source_topic = at.topic AND source_partition = at.part
                                 AND source_offset = at.pos) AS e
          CROSS JOIN LATERAL jsonb_to_record(e.payload)
                AS t(transaction_id text, posted_on date, currency text, lines jsonb)
          CROSS JOIN LATERAL ROWS FROM (jsonb_to_recordset(t.lines)
                AS (account text, member_id text, debit numeric, credit numeric, memo text))
                WITH ORDINALITY AS l(account, member_id, debit, credit, memo, line_no)",
        &rows.topics,
        &rows.partitions,
        &rows.offsets
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        assert!(check_schema_name("habitat").is_ok());
        assert!(check_schema_name("habitat_replay_2").is_ok());
        for bad in ["", "Habitat", "a-b", "1abc", "x;drop"] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }
}
