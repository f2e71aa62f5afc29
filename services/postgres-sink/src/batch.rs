//! A batch: the records of one Postgres transaction, already in the form the SQL takes.
//!
//! Every record becomes one JSON row `{source_topic, …, record_key, event_id, event_type,
//! tenant_id, occurred_at, payload}` — the `event_log` row and, through its payload, the
//! entity row. Within a batch only the last operation on a key reaches its table (the
//! same key twice in one upsert would be refused, and the earlier state is overwritten
//! anyway); the log keeps every record.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use contracts::records::Event;
use habitat_runtime::dlq::DeadLetter;
use serde::Serialize;

use crate::tables::{entity_of_key, table_of_entity, table_of_record};

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
    /// The row (JSON) to upsert.
    Upsert(String),
    Delete,
}

/// The rows and offsets of one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// `event_log` rows (JSON objects).
    pub log: Vec<String>,
    /// Table → record key → last operation.
    pub entities: BTreeMap<&'static str, HashMap<String, Op>>,
    /// `dead_letters` rows (JSON objects).
    pub dead_letters: Vec<String>,
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
struct Row<'a> {
    source_topic: &'a str,
    source_partition: i32,
    source_offset: i64,
    record_key: &'a str,
    event_id: Option<&'a str>,
    event_type: Option<&'a str>,
    tenant_id: Option<&'a str>,
    occurred_at: Option<DateTime<Utc>>,
    payload: Option<&'a Event>,
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
        let meta = event.meta();
        let row = serde_json::to_string(&Row {
            source_topic: at.topic,
            source_partition: at.partition,
            source_offset: at.offset,
            record_key: key,
            event_id: Some(&meta.event_id),
            event_type: Some(&meta.event_type),
            tenant_id: Some(&meta.tenant_id),
            occurred_at: Some(meta.occurred_at),
            payload: Some(event),
        })
        .expect("an event serializes");
        self.occurred.push(meta.occurred_at);
        if let Some(table) = table_of_record(event.full_name()) {
            _ = self
                .entities
                .entry(table)
                .or_default()
                .insert(key.to_owned(), Op::Upsert(row.clone()));
        }
        self.log.push(row);
    }

    /// A tombstone: logged, and the key's row deleted.
    pub fn tombstone(&mut self, at: Coordinates<'_>, key: &str) {
        self.read(at);
        let row = serde_json::to_string(&Row {
            source_topic: at.topic,
            source_partition: at.partition,
            source_offset: at.offset,
            record_key: key,
            event_id: None,
            event_type: None,
            tenant_id: key.split('/').next(),
            occurred_at: None,
            payload: None,
        })
        .expect("a tombstone serializes");
        if let Some(table) = entity_of_key(key).and_then(table_of_entity) {
            _ = self
                .entities
                .entry(table)
                .or_default()
                .insert(key.to_owned(), Op::Delete);
        }
        self.log.push(row);
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
        self.dead_letters.push(row);
    }

    /// A record taken without any row (nothing to write, but its offset moves on).
    pub fn skip(&mut self, at: Coordinates<'_>) {
        self.read(at);
    }
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
        assert_eq!(batch.entities["members"]["coop-a/member/m-1"], Op::Delete);
        let row: serde_json::Value = serde_json::from_str(&batch.log[0]).expect("json");
        assert_eq!(row["tenant_id"], "coop-a");
        assert_eq!(row["payload"], serde_json::Value::Null);
    }
}
