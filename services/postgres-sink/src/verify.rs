//! Replay-to-verify, the auditor's check that replaying the topics produces the same
//! state.
//!
//! 1. In one snapshot of the live schema: read the sink's offsets and copy every table
//!    into `<schema>_verify_live` — the state those offsets produced.
//! 2. Rebuild: read every partition from the beginning up to those offsets into a fresh,
//!    migrated `<schema>_verify`, through the same code the sink writes with.
//! 3. Diff the two table by table and print what differs. `recorded_at` (when the sink
//!    wrote a log row) is the only column left out. Dead letters are operators' work
//!    (status, resolutions), not a function of the topics, and are not compared.
//!
//! On compacted topics the entity tables and the ledger — the latest state per key — are
//! compared whole. `event_log` is the audit history that outlives compaction: a record
//! cleaned from its topic since the sink logged it cannot be replayed, so `event_log` is
//! compared in the direction that holds — every record still on the topics is logged,
//! identical, once — and the rows no longer on the topics are counted, not compared.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use habitat_runtime::{
    avro::AvroCodec,
    config::{KafkaSettings, RegistryAuth},
};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use tokio::runtime::Handle;

use crate::{
    batch::Batch,
    sink::Records,
    store::{Partition, Store, options},
    tables::{ENTITIES, ident},
};

/// Where to read and write.
#[derive(Clone, Debug)]
pub struct Source {
    pub bootstrap_servers: String,
    pub schema_registry_url: String,
    pub schema_registry_auth: Option<RegistryAuth>,
    pub kafka: KafkaSettings,
}

/// How many records a rebuild took and how long.
#[derive(Clone, Debug, Serialize)]
pub struct Rebuilt {
    pub records: u64,
    pub seconds: f64,
    /// Time spent waiting for Postgres after the records of a batch were read and decoded
    /// (writes overlap reading the next batch; this is what they did not hide).
    pub waiting_seconds: f64,
    pub transactions: u64,
}

/// Rebuilds `store` from the topics: every partition of `targets` from its beginning up to
/// (not including) its target offset, in batches of `batch_max` records.
pub fn rebuild(
    source: &Source,
    store: &Store,
    targets: &BTreeMap<Partition, i64>,
    batch_max: u64,
    handle: &Handle,
) -> anyhow::Result<Rebuilt> {
    rebuild_reporting(source, store, targets, batch_max, handle, &mut |_, _| {})
}

/// [`rebuild`], telling `progress` (offsets read, offsets to read) as it goes.
pub fn rebuild_reporting(
    source: &Source,
    store: &Store,
    targets: &BTreeMap<Partition, i64>,
    batch_max: u64,
    handle: &Handle,
    report: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Rebuilt> {
    let started = Instant::now();
    // Offsets, not records: compaction and transaction markers leave gaps.
    let to_read: u64 = targets.values().map(|t| (*t).max(0) as u64).sum();
    // Offsets read, per partition and in all (kept as a sum, not summed per record).
    let mut read: BTreeMap<Partition, u64> = BTreeMap::new();
    let mut read_total: u64 = 0;
    let codec = AvroCodec::with_auth(
        &source.schema_registry_url,
        source.schema_registry_auth.as_ref(),
        handle.clone(),
    )?;
    let records = Records::new(codec, Arc::new(AtomicBool::new(false)));
    let mut client = ClientConfig::new();
    _ = client
        .set("bootstrap.servers", &source.bootstrap_servers)
        .set("group.id", "habitat-verify")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "20")
        .set("queued.max.messages.kbytes", "262144")
        // A fetch takes 256 KiB of each partition rather than 4 MiB: a batch then holds
        // records of every partition, to be dealt out evenly among the writers.
        .set("fetch.message.max.bytes", "262144")
        // The end of a partition closes it when compaction removed its target's record
        // and every record after it.
        .set("enable.partition.eof", "true");
    source.kafka.apply(&mut client);
    let consumer: BaseConsumer = client.create()?;
    // One topic at a time: an end-of-partition event names a partition, not its topic.
    let mut topics: BTreeMap<&str, BTreeMap<i32, i64>> = BTreeMap::new();
    for ((topic, partition), target) in targets {
        if *target > 0 {
            _ = topics
                .entry(topic.as_str())
                .or_default()
                .insert(*partition, *target);
        }
    }
    let mut committed: BTreeMap<Partition, i64> = store_offsets(store, handle, targets)?;
    let mut batch = Batch::default();
    let mut total = 0;
    let mut waiting = Duration::ZERO;
    let mut lanes = Lanes::start(store, targets, handle);
    let mut flush = |batch: &mut Batch, committed: &mut BTreeMap<Partition, i64>| {
        // Encoded for Postgres while the writers still write the batches before.
        let mut parts = Vec::with_capacity(WRITERS);
        let split = std::mem::take(batch).split_by(WRITERS, |topic, partition| {
            lanes.of(&(topic.to_owned(), partition))
        });
        for (lane, part) in split.into_iter().enumerate() {
            if !part.is_empty() {
                total += part.len();
                let expected = committed.clone();
                committed.extend(part.offsets.clone());
                parts.push((lane, store.prepare(part)?, expected));
            }
        }
        let before = Instant::now();
        for (lane, part, expected) in parts {
            lanes.send(lane, part, expected, handle)?;
        }
        waiting += before.elapsed();
        Ok::<_, anyhow::Error>(())
    };
    // The sink's next offset is one past a record it was given, and the same records are
    // given again here: each partition ends at its target's previous record, at the first
    // record past it when compaction removed that one since, or at the partition's end
    // when compaction removed every record from there.
    for (topic, partitions) in topics {
        let mut list = TopicPartitionList::new();
        for partition in partitions.keys() {
            list.add_partition_offset(topic, *partition, Offset::Beginning)?;
        }
        consumer.assign(&list)?;
        let mut open = partitions;
        let mut progress = Instant::now();
        while !open.is_empty() {
            if progress.elapsed() > STALL {
                anyhow::bail!("replay stalled: no record for {STALL:?} from {topic} {open:?}");
            }
            let message = match consumer.poll(Duration::from_millis(500)) {
                None => continue,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    progress = Instant::now();
                    if let Some(target) = open.remove(&partition) {
                        let key = (topic.to_owned(), partition);
                        let before = read.insert(key, target as u64).unwrap_or(0);
                        read_total += (target as u64).saturating_sub(before);
                        report(read_total, to_read);
                    }
                    continue;
                }
                Some(message) => message?,
            };
            progress = Instant::now();
            let Some(target) = open.get(&message.partition()).copied() else {
                continue;
            };
            let partition = (topic.to_owned(), message.partition());
            let now_read = (message.offset() + 1).min(target) as u64;
            let before = read.insert(partition, now_read).unwrap_or(0);
            read_total += now_read.saturating_sub(before);
            report(read_total, to_read);
            if message.offset() < target {
                records.add(&mut batch, &message)?;
            }
            if message.offset() + 1 >= target {
                _ = open.remove(&message.partition());
            }
            if batch.len() >= batch_max {
                flush(&mut batch, &mut committed)?;
            }
        }
    }
    flush(&mut batch, &mut committed)?;
    let before = Instant::now();
    let transactions = lanes.finish(handle)?;
    waiting += before.elapsed();
    Ok(Rebuilt {
        records: total,
        seconds: started.elapsed().as_secs_f64(),
        waiting_seconds: waiting.as_secs_f64(),
        transactions,
    })
}

/// Transactions a rebuild writes at once (on disjoint partitions).
const WRITERS: usize = 2;

/// Parts a writer holds besides the one it writes.
const QUEUED: usize = 2;

/// A prepared part and the offsets its partitions move from.
type Part = (crate::store::Prepared, BTreeMap<Partition, i64>);

/// The rebuild's writers. Each owns some partitions for the whole rebuild and writes their
/// parts in order, one transaction per part, as they come: a writer never waits for the
/// other's part of the same batch, as it would if each batch were written at once (whole
/// partitions seldom split a batch evenly, and the lighter part's backend would then
/// idle). The partitions are dealt out by their records, per topic (a rebuild reads one
/// topic at a time).
struct Lanes {
    of: HashMap<Partition, usize>,
    senders: Vec<tokio::sync::mpsc::Sender<Part>>,
    tasks: Vec<tokio::task::JoinHandle<Result<u64, crate::store::WriteError>>>,
}

impl Lanes {
    fn start(store: &Store, targets: &BTreeMap<Partition, i64>, handle: &Handle) -> Self {
        let (senders, tasks) = (0..WRITERS)
            .map(|_| {
                let (sender, mut parts) = tokio::sync::mpsc::channel::<Part>(QUEUED);
                let store = store.clone();
                let task = handle.spawn(async move {
                    let mut written = 0;
                    while let Some((part, expected)) = parts.recv().await {
                        store.write(&part, &expected).await?;
                        written += 1;
                    }
                    Ok(written)
                });
                (sender, task)
            })
            .unzip();
        Self {
            of: lanes_of(targets, WRITERS),
            senders,
            tasks,
        }
    }

    /// The writer of a partition.
    fn of(&self, partition: &Partition) -> usize {
        self.of.get(partition).copied().unwrap_or(0)
    }

    /// Queues a part for its writer, waiting while the writer's queue is full; a writer
    /// that stopped on an error gives its error.
    fn send(
        &mut self,
        lane: usize,
        part: crate::store::Prepared,
        expected: BTreeMap<Partition, i64>,
        handle: &Handle,
    ) -> anyhow::Result<()> {
        if handle
            .block_on(self.senders[lane].send((part, expected)))
            .is_err()
        {
            handle.block_on(&mut self.tasks[lane])??;
            anyhow::bail!("a rebuild's writer stopped");
        }
        Ok(())
    }

    /// Waits for every queued part to be written; the transactions written.
    fn finish(self, handle: &Handle) -> anyhow::Result<u64> {
        drop(self.senders);
        let mut transactions = 0;
        for task in self.tasks {
            transactions += handle.block_on(task)??;
        }
        Ok(transactions)
    }
}

/// How long a rebuild waits for the next record before it gives up.
const STALL: Duration = Duration::from_secs(60);

/// The writer of each partition: per topic, its partitions dealt out to `n` writers by
/// their records (the targets' offsets).
fn lanes_of(targets: &BTreeMap<Partition, i64>, n: usize) -> HashMap<Partition, usize> {
    let mut topics: BTreeMap<&str, Vec<(i32, usize)>> = BTreeMap::new();
    for ((topic, partition), target) in targets {
        topics
            .entry(topic.as_str())
            .or_default()
            .push((*partition, usize::try_from(*target).unwrap_or(0)));
    }
    let mut of = HashMap::new();
    for (topic, partitions) in topics {
        for (partition, lane) in crate::batch::deal(partitions, n) {
            _ = of.insert((topic.to_owned(), partition), lane);
        }
    }
    of
}

fn store_offsets(
    store: &Store,
    handle: &Handle,
    targets: &BTreeMap<Partition, i64>,
) -> anyhow::Result<BTreeMap<Partition, i64>> {
    let partitions: Vec<Partition> = targets.keys().cloned().collect();
    Ok(handle.block_on(store.claim(&partitions))?)
}

/// One row that differs.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Difference {
    pub table: String,
    pub key: String,
    /// `missing in replay`, `missing in live`, or `differs`.
    pub kind: String,
    /// Column → (live, replay), for rows in both.
    pub columns: BTreeMap<String, (Value, Value)>,
}

/// The outcome of a replay-to-verify.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub records_replayed: u64,
    pub seconds: f64,
    /// Rows compared per table (live side).
    pub rows: BTreeMap<String, i64>,
    /// Differences per table (all counted, at most 100 per table listed).
    pub counts: BTreeMap<String, i64>,
    /// `event_log` rows whose record is no longer on its topic (compacted away).
    pub compacted: i64,
    pub differences: Vec<Difference>,
}

impl Verification {
    pub fn is_clean(&self) -> bool {
        self.counts.values().all(|c| *c == 0)
    }

    /// A human-readable report.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        _ = writeln!(
            out,
            "Replayed {} records in {:.1} s.",
            self.records_replayed, self.seconds
        );
        for (table, rows) in &self.rows {
            let count = self.counts.get(table).copied().unwrap_or(0);
            let verdict = if count == 0 {
                "same".to_owned()
            } else {
                format!("{count} difference(s)")
            };
            _ = writeln!(out, "  {table:<24} {rows:>9} rows  {verdict}");
        }
        if self.compacted > 0 {
            _ = writeln!(
                out,
                "  event_log: {} rows log records compacted off the topics since (kept, not replayable).",
                self.compacted
            );
        }
        for d in &self.differences {
            _ = writeln!(out, "{} {}: {}", d.table, d.key, d.kind);
            for (column, (live, replay)) in &d.columns {
                _ = writeln!(out, "    {column}: live {live} / replay {replay}");
            }
        }
        if self.is_clean() {
            out.push_str("No differences: replaying the topics gives the live tables.\n");
        }
        out
    }
}

/// Tables compared and the columns that identify their rows.
fn compared() -> Vec<(&'static str, &'static [&'static str])> {
    let mut tables: Vec<(&'static str, &'static [&'static str])> = ENTITIES
        .iter()
        .map(|(_, t)| (*t, &["record_key"][..]))
        .collect();
    tables.push(("ledger_lines", &["record_key", "line_no"]));
    tables.push((
        "event_log",
        &["source_topic", "source_partition", "source_offset"],
    ));
    tables
}

/// Replays the topics into a fresh schema next to `live` and diffs (see the module
/// docs). Keeps the two verification schemas when `keep`. Call from outside the async
/// runtime `handle` belongs to.
pub fn replay(
    database_url: &str,
    live: &str,
    sink: &str,
    source: &Source,
    keep: bool,
    handle: &Handle,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Verification> {
    let snapshot = format!("{live}_verify_live");
    let fresh = format!("{live}_verify");
    crate::store::check_schema_name(&fresh)?;
    let pool = handle.block_on(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options(database_url, live)?),
    )?;
    let targets = handle.block_on(async {
        for schema in [&snapshot, &fresh] {
            _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&pool)
                .await?;
        }
        let mut tx = pool.begin().await?;
        _ = sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        let targets: BTreeMap<Partition, i64> =
            sqlx::query("SELECT topic, partition, next_offset FROM sink_offsets WHERE sink = $1")
                .bind(sink)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|r| {
                    (
                        (r.get::<String, _>(0), r.get::<i32, _>(1)),
                        r.get::<i64, _>(2),
                    )
                })
                .collect();
        _ = sqlx::query(&format!("CREATE SCHEMA {snapshot}"))
            .execute(&mut *tx)
            .await?;
        for (table, _) in compared() {
            _ = sqlx::query(&format!(
                "CREATE TABLE {snapshot}.{t} AS SELECT * FROM {live}.{t}",
                t = ident(table)
            ))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(targets)
    })?;
    let context: BTreeMap<Partition, i64> = targets
        .into_iter()
        .filter(|((topic, _), _)| !topic.starts_with("habitat.dlq."))
        .collect();
    let store = handle.block_on(Store::connect(database_url, &fresh, "verify"))?;
    let rebuilt = rebuild_reporting(source, &store, &context, 10_000, handle, progress)?;
    let mut verification = Verification {
        records_replayed: rebuilt.records,
        seconds: rebuilt.seconds,
        rows: BTreeMap::new(),
        counts: BTreeMap::new(),
        compacted: 0,
        differences: Vec::new(),
    };
    handle.block_on(async {
        for (table, key) in compared() {
            let history = table == "event_log";
            if history {
                verification.compacted = only_in_live(&pool, &snapshot, &fresh, table, key).await?;
            }
            let (rows, count, found) = diff(&pool, &snapshot, &fresh, table, key, history).await?;
            _ = verification.rows.insert(table.to_owned(), rows);
            _ = verification.counts.insert(table.to_owned(), count);
            verification.differences.extend(found);
        }
        if !keep {
            for schema in [&snapshot, &fresh] {
                _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&pool)
                    .await?;
            }
        }
        Ok::<_, sqlx::Error>(())
    })?;
    Ok(verification)
}

/// `a.k = b.k AND …` over a table's key columns.
fn key_join(key: &[&str]) -> String {
    key.iter()
        .map(|k| format!("a.{0} = b.{0}", ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Rows of `table` in `live` with no row of the same key in `replay`.
async fn only_in_live(
    pool: &sqlx::PgPool,
    live: &str,
    replay: &str,
    table: &str,
    key: &[&str],
) -> Result<i64, sqlx::Error> {
    let t = ident(table);
    let join = key_join(key);
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {live}.{t} a WHERE NOT EXISTS (SELECT 1 FROM {replay}.{t} b WHERE {join})"
    ))
    .fetch_one(pool)
    .await
}

/// The rows of `table` that differ between `live` and `replay`; with `history`, a row only
/// in `live` is not a difference (its record was compacted off the topic).
async fn diff(
    pool: &sqlx::PgPool,
    live: &str,
    replay: &str,
    table: &str,
    key: &[&str],
    history: bool,
) -> Result<(i64, i64, Vec<Difference>), sqlx::Error> {
    let t = ident(table);
    let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {live}.{t}"))
        .fetch_one(pool)
        .await?;
    let columns = key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
    let join = key_join(key);
    let key_text = key
        .iter()
        .map(|k| format!("coalesce(a.{0}, b.{0})::text", ident(k)))
        .collect::<Vec<_>>()
        .join(" || '/' || ");
    let sql = format!(
        "WITH a AS (SELECT {columns}, to_jsonb(x) - 'recorded_at' AS row FROM {live}.{t} x),
              b AS (SELECT {columns}, to_jsonb(x) - 'recorded_at' AS row FROM {replay}.{t} x)
         SELECT {key_text} AS key, a.row AS live, b.row AS replay, count(*) OVER () AS total
           FROM a FULL JOIN b ON {join}
          WHERE a.row IS DISTINCT FROM b.row {only_replayable}
          ORDER BY 1 LIMIT 100",
        only_replayable = if history { "AND b.row IS NOT NULL" } else { "" }
    );
    let found = sqlx::query(&sql).fetch_all(pool).await?;
    let total = found.first().map_or(0, |r| r.get::<i64, _>("total"));
    let differences = found
        .into_iter()
        .map(|r| {
            let live: Option<Value> = r.get("live");
            let replay: Option<Value> = r.get("replay");
            let (kind, columns) = match (&live, &replay) {
                (Some(_), None) => ("missing in replay", BTreeMap::new()),
                (None, Some(_)) => ("missing in live", BTreeMap::new()),
                (Some(a), Some(b)) => ("differs", changed(a, b)),
                (None, None) => ("differs", BTreeMap::new()),
            };
            Difference {
                table: table.to_owned(),
                key: r.get("key"),
                kind: kind.to_owned(),
                columns,
            }
        })
        .collect();
    Ok((rows, total, differences))
}

fn changed(live: &Value, replay: &Value) -> BTreeMap<String, (Value, Value)> {
    let (Some(a), Some(b)) = (live.as_object(), replay.as_object()) else {
        return BTreeMap::new();
    };
    a.keys()
        .chain(b.keys())
        .filter_map(|k| {
            let (x, y) = (
                a.get(k).cloned().unwrap_or(Value::Null),
                b.get(k).cloned().unwrap_or(Value::Null),
            );
            (x != y).then(|| (k.clone(), (x, y)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_topic_is_dealt_out_to_the_writers_by_its_records() {
        let targets: BTreeMap<Partition, i64> = [
            (("a", 0), 100),
            (("a", 1), 60),
            (("a", 2), 50),
            (("b", 0), 5),
            (("b", 1), 7),
            (("b", 2), 0),
        ]
        .into_iter()
        .map(|((t, p), n)| ((t.to_owned(), p), n))
        .collect();
        let of = lanes_of(&targets, 2);
        let lane = |t: &str, p: i32| of[&(t.to_owned(), p)];
        // a: 100 | 60 + 50; b: 7 | 5 + 0 (the empty partition to the lighter writer).
        assert_eq!((lane("a", 0), lane("a", 1), lane("a", 2)), (0, 1, 1));
        assert_eq!((lane("b", 1), lane("b", 0), lane("b", 2)), (0, 1, 1));
    }

    #[test]
    fn changed_columns_only() {
        let live = serde_json::json!({"a": 1, "b": "x", "c": null});
        let replay = serde_json::json!({"a": 1, "b": "y", "d": 2});
        let found = changed(&live, &replay);
        assert_eq!(found.len(), 2);
        assert_eq!(found["b"], (Value::from("x"), Value::from("y")));
        assert_eq!(found["d"], (Value::Null, Value::from(2)));
    }
}
