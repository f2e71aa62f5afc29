//! A batch: the records of one Postgres transaction, already in the form the SQL takes.
//!
//! Every record becomes one `event_log` row, appended with binary `COPY` (the payload: the
//! record's JSON without `meta`, kept as `json` text, which Postgres checks but does not
//! decompose). An entity row is built from its log row's payload and staged with one
//! `COPY` per table ([`crate::stage`]).
//! Within a batch only the last operation on a key reaches its table (the same key twice
//! in one merge would be refused, and the earlier state is overwritten anyway); the log
//! keeps every record.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use contracts::{payload::payload_json, records::Event};
use habitat_runtime::dlq::DeadLetter;
use serde::Serialize;

use crate::{
    copy::CopyWriter,
    tables::{entity_of_key, table_of_entity, table_of_record},
};

/// Where a record was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coordinates<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// The last operation of a batch on one key of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Upsert the row of the record logged at this index of the batch's log.
    Upsert(usize),
    /// Delete the row (a tombstone read at topic, partition).
    Delete(String, i32),
}

/// One `event_log` row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRow {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub tenant: Option<String>,
    pub occurred: Option<DateTime<Utc>>,
    pub schema_version: Option<i32>,
    pub producer: Option<String>,
    pub actor: Option<String>,
    pub correlation: Option<String>,
    pub causation: Option<String>,
    /// The record's fields but `meta` as JSON (REST conventions); `None` for a tombstone.
    pub payload: Option<String>,
}

/// The columns [`copy_log`] writes, in its order.
pub const LOG_COLUMNS: &str = "source_topic, source_partition, source_offset, record_key, \
     event_id, event_type, tenant_id, occurred_at, schema_version, producer, actor, \
     correlation_id, causation_id, payload";

/// `rows` as a binary `COPY` stream of [`LOG_COLUMNS`].
pub fn copy_log(rows: &[LogRow]) -> Vec<u8> {
    // Fields' lengths and the metadata's texts take ~320 bytes a row; the payload the rest.
    let bytes = rows
        .iter()
        .map(|row| 320 + row.payload.as_ref().map_or(0, String::len))
        .sum();
    let mut copy = CopyWriter::with_capacity(bytes);
    for row in rows {
        _ = copy
            .row(14)
            .text(Some(&row.topic))
            .int4(Some(row.partition))
            .int8(row.offset)
            .text(Some(&row.key))
            .text(row.event_id.as_deref())
            .text(row.event_type.as_deref())
            .text(row.tenant.as_deref())
            .timestamptz(row.occurred)
            .int4(row.schema_version)
            .text(row.producer.as_deref())
            .text(row.actor.as_deref())
            .text(row.correlation.as_deref())
            .text(row.causation.as_deref())
            .json(row.payload.as_deref());
    }
    copy.finish()
}

/// The rows and offsets of one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// `event_log` rows.
    pub log: Vec<LogRow>,
    /// Table → record key → last operation, in key order: a table's rows are then
    /// staged and merged in the order of its primary key, so that the merge walks the
    /// key's pages in order rather than at random (and a ledger transaction's lines
    /// follow each other).
    pub entities: BTreeMap<&'static str, BTreeMap<String, Op>>,
    /// `dead_letters` rows (JSON objects), with the partition they were read from.
    pub dead_letters: Vec<((String, i32), String)>,
    /// Dead letters by error class, for the metrics.
    pub dead_letter_classes: BTreeMap<String, u64>,
    /// (topic, partition) → the next offset to read once this batch is committed.
    pub offsets: BTreeMap<(String, i32), i64>,
    /// Records read, by topic.
    pub records: BTreeMap<String, u64>,
    /// `occurred_at` of every event, for the end-to-end latency.
    pub occurred: Vec<DateTime<Utc>>,
}

#[derive(Serialize)]
struct LetterRow<'a> {
    processor: &'a str,
    source_topic: &'a str,
    source_partition: i32,
    source_offset: i64,
    error_class: &'a str,
    message: &'a str,
    tenant_id: Option<&'a str>,
    /// Hex, decoded by Postgres.
    record_key: Option<String>,
    record_value: Option<String>,
    first_seen: DateTime<Utc>,
    read_topic: &'a str,
    read_partition: i32,
    read_offset: i64,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            _ = write!(out, "{b:02x}");
            out
        })
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Records in the batch.
    pub fn len(&self) -> u64 {
        self.records.values().sum()
    }

    fn read(&mut self, at: Coordinates<'_>) {
        _ = self
            .offsets
            .insert((at.topic.to_owned(), at.partition), at.offset + 1);
        *self.records.entry(at.topic.to_owned()).or_default() += 1;
    }

    fn logged(&mut self, at: Coordinates<'_>, key: &str, event: Option<&Event>) {
        let mut row = LogRow {
            topic: at.topic.to_owned(),
            partition: at.partition,
            offset: at.offset,
            key: key.to_owned(),
            ..LogRow::default()
        };
        match event {
            Some(event) => {
                let meta = event.meta();
                row.event_id = Some(meta.event_id.clone());
                row.event_type = Some(meta.event_type.clone());
                row.tenant = Some(meta.tenant_id.clone());
                row.occurred = Some(meta.occurred_at);
                row.schema_version = Some(meta.schema_version);
                row.producer = Some(meta.producer.clone());
                row.actor = meta.actor.clone();
                row.correlation = Some(meta.correlation_id.clone());
                row.causation = meta.causation_id.clone();
                row.payload = Some(payload_json(event).expect("an event record serializes"));
            }
            None => row.tenant = key.split('/').next().map(str::to_owned),
        }
        self.log.push(row);
    }

    /// A decoded event: logged, and upserted into its entity's table.
    pub fn event(&mut self, at: Coordinates<'_>, key: Option<&str>, event: &Event) {
        self.read(at);
        let computed;
        let key = match key {
            Some(key) => key,
            None => {
                computed = event.key();
                &computed
            }
        };
        self.logged(at, key, Some(event));
        self.occurred.push(event.meta().occurred_at);
        if let Some(table) = table_of_record(event.full_name()) {
            let logged = self.log.len() - 1;
            _ = self
                .entities
                .entry(table)
                .or_default()
                .insert(key.to_owned(), Op::Upsert(logged));
        }
    }

    /// A tombstone: logged, and the key's row deleted.
    pub fn tombstone(&mut self, at: Coordinates<'_>, key: &str) {
        self.read(at);
        self.logged(at, key, None);
        if let Some(table) = entity_of_key(key).and_then(table_of_entity) {
            _ = self.entities.entry(table).or_default().insert(
                key.to_owned(),
                Op::Delete(at.topic.to_owned(), at.partition),
            );
        }
    }

    /// A dead letter read at `at` (a processor's dead-letter record, or a record the sink
    /// itself could not take).
    pub fn dead_letter(&mut self, at: Coordinates<'_>, letter: &DeadLetter) {
        self.read(at);
        let tenant = letter
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.split('/').next())
            .filter(|t| !t.is_empty());
        let row = serde_json::to_string(&LetterRow {
            processor: &letter.processor,
            source_topic: &letter.source_topic,
            source_partition: letter.source_partition,
            source_offset: letter.source_offset,
            error_class: &letter.class,
            message: &letter.message,
            tenant_id: tenant,
            record_key: letter.key.as_deref().map(hex),
            record_value: letter.value.as_deref().map(hex),
            first_seen: letter.time,
            read_topic: at.topic,
            read_partition: at.partition,
            read_offset: at.offset,
        })
        .expect("a dead letter serializes");
        *self
            .dead_letter_classes
            .entry(letter.class.clone())
            .or_default() += 1;
        self.dead_letters
            .push(((at.topic.to_owned(), at.partition), row));
    }

    /// Splits the batch into `n` batches by partition, each to be written in a transaction
    /// of its own (a key always lives in one partition, so they never touch the same row).
    /// The partitions are dealt out by size (see [`deal`]), so that the parts (written at
    /// once) take about as long as each other.
    pub fn split(self, n: usize) -> Vec<Batch> {
        let n = n.max(1);
        if n == 1 {
            return vec![self];
        }
        let mut sizes: HashMap<(&str, i32), usize> = HashMap::new();
        for row in &self.log {
            *sizes
                .entry((row.topic.as_str(), row.partition))
                .or_default() += 1;
        }
        for (topic, partition) in self.offsets.keys() {
            _ = sizes.entry((topic.as_str(), *partition)).or_default();
        }
        let dealt = by_topic(deal(sizes, n));
        self.split_by(n, |topic, partition| part_of(&dealt, topic, partition))
    }

    /// Splits the batch into `n` batches, partition `(topic, p)` going to part
    /// `part(topic, p)` (below `n`).
    pub fn split_by(self, n: usize, part: impl Fn(&str, i32) -> usize) -> Vec<Batch> {
        let n = n.max(1);
        let part = |topic: &str, partition: i32| part(topic, partition).min(n - 1);
        let mut parts: Vec<Batch> = (0..n).map(|_| Batch::default()).collect();
        // Where each log row went: (part, its index there).
        let mut moved = Vec::with_capacity(self.log.len());
        for row in self.log {
            let to = part(&row.topic, row.partition);
            moved.push((to, parts[to].log.len()));
            parts[to].log.push(row);
        }
        for (table, ops) in self.entities {
            for (key, op) in ops {
                let (to, op) = match op {
                    Op::Upsert(logged) => {
                        let (to, index) = moved[logged];
                        (to, Op::Upsert(index))
                    }
                    Op::Delete(topic, partition) => {
                        (part(&topic, partition), Op::Delete(topic, partition))
                    }
                };
                _ = parts[to].entities.entry(table).or_default().insert(key, op);
            }
        }
        for ((topic, partition), row) in self.dead_letters {
            parts[part(&topic, partition)]
                .dead_letters
                .push(((topic, partition), row));
        }
        for ((topic, partition), next) in self.offsets {
            _ = parts[part(&topic, partition)]
                .offsets
                .insert((topic, partition), next);
        }
        // The counts for the metrics go with a part that is written (an empty one is not).
        let first = parts.iter().position(|p| !p.is_empty()).unwrap_or(0);
        parts[first].records = self.records;
        parts[first].dead_letter_classes = self.dead_letter_classes;
        parts[first].occurred = self.occurred;
        parts
    }

    /// A record taken without any row (nothing to write, but its offset moves on).
    pub fn skip(&mut self, at: Coordinates<'_>) {
        self.read(at);
    }
}

/// Deals items of the given sizes out to `n` parts, the largest first to the lightest
/// part (ties to the lower part, then the lower item), and says which part each went to.
pub fn deal<K: Ord + Eq + std::hash::Hash>(
    sizes: impl IntoIterator<Item = (K, usize)>,
    n: usize,
) -> HashMap<K, usize> {
    let mut by_size: Vec<(K, usize)> = sizes.into_iter().collect();
    by_size.sort_by(|(a, x), (b, y)| y.cmp(x).then(a.cmp(b)));
    let mut load = vec![0_usize; n.max(1)];
    let mut dealt = HashMap::with_capacity(by_size.len());
    for (item, size) in by_size {
        let lightest = (0..load.len()).min_by_key(|i| (load[*i], *i)).unwrap_or(0);
        load[lightest] += size;
        _ = dealt.insert(item, lightest);
    }
    dealt
}

/// Parts keyed by topic, then partition: looked up by a borrowed topic, without making a
/// key per row.
pub type PartsByTopic = HashMap<String, HashMap<i32, usize>>;

/// `dealt` ([`deal`] of partitions) keyed by topic, then partition.
pub fn by_topic<T: AsRef<str>>(dealt: impl IntoIterator<Item = ((T, i32), usize)>) -> PartsByTopic {
    let mut parts = PartsByTopic::new();
    for ((topic, partition), part) in dealt {
        _ = parts
            .entry(topic.as_ref().to_owned())
            .or_default()
            .insert(partition, part);
    }
    parts
}

/// The part of a partition in `parts` (0 for one not dealt out).
pub fn part_of(parts: &PartsByTopic, topic: &str, partition: i32) -> usize {
    parts
        .get(topic)
        .and_then(|partitions| partitions.get(&partition))
        .copied()
        .unwrap_or(0)
}

/// `[row, row, …]` from JSON object texts.
pub fn json_array<'a>(rows: impl IntoIterator<Item = &'a String>) -> String {
    let mut out = String::from("[");
    for (i, row) in rows.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(row);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_arrays() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        let rows = ["{\"a\":1}".to_owned(), "{\"b\":2}".to_owned()];
        assert_eq!(json_array(&rows), "[{\"a\":1},{\"b\":2}]");
        assert_eq!(json_array(&[]), "[]");
    }

    #[test]
    fn the_last_operation_on_a_key_wins_and_the_log_keeps_all() {
        let mut batch = Batch::default();
        let at = |offset| Coordinates {
            topic: "habitat.people",
            partition: 2,
            offset,
        };
        batch.tombstone(at(7), "coop-a/member/m-1");
        batch.skip(at(8));
        assert_eq!(batch.log.len(), 1);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.offsets[&("habitat.people".to_owned(), 2)], 9);
        assert_eq!(
            batch.entities["members"]["coop-a/member/m-1"],
            Op::Delete("habitat.people".to_owned(), 2)
        );
        assert_eq!(batch.log[0].tenant.as_deref(), Some("coop-a"));
        assert_eq!(batch.log[0].payload, None);
    }

    /// A batch of members' tombstones read at these (partition, offset)s of one topic.
    fn tombstones(read: impl IntoIterator<Item = (i32, i64)>) -> Batch {
        let mut batch = Batch::default();
        for (partition, offset) in read {
            let at = Coordinates {
                topic: "habitat.people",
                partition,
                offset,
            };
            batch.tombstone(at, &format!("coop-{partition}/member/m-{offset}"));
        }
        batch
    }

    #[test]
    fn a_split_keeps_each_partition_whole() {
        let batch = tombstones([(0, 1), (1, 5), (2, 9), (1, 6), (0, 2)]);
        let parts = batch.split(2);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts.iter().map(|p| p.log.len()).sum::<usize>(), 5);
        assert_eq!(parts.iter().map(|p| p.offsets.len()).sum::<usize>(), 3);
        assert_eq!(parts.iter().map(Batch::len).sum::<u64>(), 5);
        for part in &parts {
            for row in &part.log {
                assert!(
                    part.offsets
                        .contains_key(&("habitat.people".to_owned(), row.partition))
                );
                assert!(
                    part.entities["members"].contains_key(&row.key),
                    "{}",
                    row.key
                );
            }
        }
    }

    #[test]
    fn a_split_deals_partitions_out_by_size() {
        // Six records of partition 0 and three of each of 1 and 2: 6 + 6 (a split by
        // partition number alone would give 9 + 3).
        let batch = tombstones(
            [(0, 6), (1, 3), (2, 3)]
                .into_iter()
                .flat_map(|(partition, count)| (0..count).map(move |offset| (partition, offset))),
        );
        let parts = batch.split(2);
        let mut sizes: Vec<usize> = parts.iter().map(|p| p.log.len()).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, [6, 6]);
        let alone = parts
            .iter()
            .find(|p| p.offsets.len() == 1)
            .expect("the large partition has a part of its own");
        assert!(alone.log.iter().all(|row| row.partition == 0));
    }

    #[test]
    fn the_counts_go_with_a_part_that_is_written() {
        // Only partitions that fall to one part: the other is empty and never written, so
        // the counts for the metrics must not be left on it.
        for partition in 0..4 {
            let mut batch = Batch::default();
            batch.skip(Coordinates {
                topic: "habitat.people",
                partition,
                offset: 7,
            });
            let parts = batch.split(2);
            let written: Vec<&Batch> = parts.iter().filter(|p| !p.is_empty()).collect();
            assert_eq!(written.len(), 1, "partition {partition}");
            assert_eq!(written[0].len(), 1, "partition {partition}");
        }
    }
}
