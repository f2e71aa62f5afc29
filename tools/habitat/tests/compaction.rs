//! The compaction invariant end to end, for everything: the demo cooperative's year runs
//! through the REST proxy, the four processors and the sink; the broker then cleans every
//! context topic down to the latest record per key. A second, empty stack — fresh
//! processors (no offsets, no stores) and a fresh sink schema — is given what is left on
//! the cleaned topics (same partitions, keys, values, timestamps and headers), as a mirror
//! of the cluster would. It ends in the same entity tables and ledger, row for row
//! (`event_log`, the audit history that outlives compaction, aside), and every record a
//! processor owns was made again by the fresh processors, not merely copied.
//!
//! The processors' records are copied too, as they are on the topics a fresh processor
//! starts from: a decision that answers a processor's record (the stewards' approval
//! names the proposed set's hash) sits before the record a fresh processor makes again,
//! so the set it approves is the one on the topic.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::Stack;
use contracts::records::CATALOG;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::{Headers, OwnedHeaders},
    producer::{BaseProducer, BaseRecord, Producer},
};
use serde_json::Value;
use test_support::{
    compaction::{await_compacted_at, clean_eagerly_at, records_on_at},
    unique, wait_for,
};

const CONTEXTS: [&str; 3] = ["habitat.people", "habitat.treasury", "habitat.agreements"];
const PARTITIONS: i32 = 6;

/// Columns a fresh run writes differently by nature, left out of the comparison besides
/// the envelope (`postgres_sink::tables::ENVELOPE`: the record a row came from — a fresh
/// processor's record is a new event at a new offset): when the sink wrote the row, and,
/// in the ledger, the id of the processor record a posting came from (an
/// `AllocationApproved` made again has a new event id).
const NOT_COMPARED: [&str; 2] = ["recorded_at", "source_event_id"];

fn bootstrap(stack: &Stack) -> String {
    format!("127.0.0.1:{}", stack.broker_port)
}

/// Entities whose records the processors write.
fn processor_entities() -> Vec<&'static str> {
    let mut entities: Vec<&str> = CATALOG
        .iter()
        .filter(|info| !info.producer_writable)
        .filter_map(|info| info.key_pattern.split('/').nth(1))
        .collect();
    entities.sort_unstable();
    entities.dedup();
    entities
}

/// One record to copy.
struct Copied {
    topic: &'static str,
    partition: i32,
    key: String,
    value: Option<Vec<u8>>,
    timestamp: Option<i64>,
    headers: OwnedHeaders,
}

/// Copies the records left on `from`'s context topics to `to`, each to its partition, in
/// the order of their timestamps across the topics (the order they were first written in:
/// the processors merge their inputs by timestamp); returns how many per partition.
fn copy_records(from: &str, to: &str) -> BTreeMap<(&'static str, i32), i64> {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", from)
        .set("group.id", unique("mirror"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut records = Vec::new();
    for topic in CONTEXTS {
        let mut list = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            list.add_partition_offset(topic, partition, Offset::Beginning)
                .expect("partition");
        }
        reader.assign(&list).expect("assign");
        let mut ended = 0;
        wait_for(Duration::from_secs(60), "the topic read", || {
            match reader.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let mut headers = OwnedHeaders::new();
                    if let Some(given) = m.headers() {
                        for header in given.iter() {
                            headers = headers.insert(header);
                        }
                    }
                    records.push(Copied {
                        topic,
                        partition: m.partition(),
                        key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                        value: m.payload().map(<[u8]>::to_vec),
                        timestamp: m.timestamp().to_millis(),
                        headers,
                    });
                }
                Some(Err(KafkaError::PartitionEOF(_))) => ended += 1,
                Some(Err(error)) => panic!("read {topic}: {error}"),
                None => {}
            }
            (ended >= PARTITIONS).then_some(())
        });
    }
    records.sort_by_key(|r| r.timestamp);
    let writer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", to)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut copied = BTreeMap::new();
    for r in &records {
        *copied.entry((r.topic, r.partition)).or_insert(0) += 1;
        let mut record = BaseRecord::<str, [u8]>::to(r.topic)
            .key(r.key.as_str())
            .partition(r.partition)
            .headers(r.headers.clone());
        if let Some(value) = &r.value {
            record = record.payload(value.as_slice());
        }
        if let Some(at) = r.timestamp {
            record = record.timestamp(at);
        }
        habitat::kafka::send(&writer, record).expect("copy a record");
    }
    writer
        .flush(Duration::from_secs(30))
        .expect("copies acknowledged");
    copied
}

/// Keys of processor-owned records on `bootstrap`'s context topics whose latest record is
/// one of the copies (offsets below `copied`): what the fresh processors did not make again.
fn not_made_again(bootstrap: &str, copied: &BTreeMap<(&'static str, i32), i64>) -> Vec<String> {
    let entities = processor_entities();
    let mut latest: BTreeMap<(String, i32, String), i64> = BTreeMap::new();
    for topic in CONTEXTS {
        for left in records_on_at(bootstrap, topic, PARTITIONS) {
            let entity = left.key.split('/').nth(1).unwrap_or_default();
            if entities.contains(&entity) {
                let at = latest
                    .entry((topic.to_owned(), left.partition, left.key.clone()))
                    .or_insert(-1);
                *at = (*at).max(left.offset);
            }
        }
    }
    latest
        .into_iter()
        .filter(|((topic, partition, _), offset)| {
            let copies = copied
                .iter()
                .find(|((t, p), _)| t == topic && p == partition)
                .map_or(0, |(_, n)| *n);
            *offset < copies
        })
        .map(|((_, _, key), _)| key)
        .collect()
}

/// The schema id every subject has on a stack's registry.
fn schema_ids(stack: &Stack) -> BTreeMap<String, i64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::new();
    CATALOG
        .iter()
        .map(|info| {
            let subject = format!("{}-{}", info.topic, info.full_name);
            let url = format!(
                "http://127.0.0.1:{}/subjects/{subject}/versions/latest",
                stack.registry_port
            );
            let answer: Value = runtime
                .block_on(async { client.get(&url).send().await?.json().await })
                .expect("the registry answers");
            (subject, answer["id"].as_i64().expect("an id"))
        })
        .collect()
}

/// A connection to a stack's sink database.
fn sink_pool(runtime: &tokio::runtime::Runtime, stack: &Stack) -> sqlx::PgPool {
    let url = format!(
        "postgres://habitat@127.0.0.1:{}/habitat",
        stack.postgres_port
    );
    runtime
        .block_on(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&url),
        )
        .expect("the sink's database")
}

/// Every entity table and the ledger's lines of a sink: table → key → row (the compared
/// columns).
fn tables(
    runtime: &tokio::runtime::Runtime,
    pool: &sqlx::PgPool,
) -> BTreeMap<String, BTreeMap<String, Value>> {
    runtime.block_on(async {
        let dropped = postgres_sink::tables::ENVELOPE
            .iter()
            .chain(&NOT_COMPARED)
            .map(|c| format!("'{c}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut tables = BTreeMap::new();
        let entity_tables = postgres_sink::tables::ENTITIES.iter().map(|(_, t)| *t);
        for table in entity_tables.chain(["ledger_lines"]) {
            let key = if table == "ledger_lines" {
                "record_key || '#' || line_no"
            } else {
                "record_key"
            };
            let rows: Vec<(String, Value)> = sqlx::query_as(&format!(
                "SELECT {key}, to_jsonb(x) - ARRAY[{dropped}]::text[] FROM habitat.{table} x"
            ))
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("read {table}: {e}"));
            _ = tables.insert(table.to_owned(), rows.into_iter().collect());
        }
        tables
    })
}

/// What differs between two stacks' tables, at most 20 lines.
fn differences(
    a: &BTreeMap<String, BTreeMap<String, Value>>,
    b: &BTreeMap<String, BTreeMap<String, Value>>,
) -> Vec<String> {
    let mut found = Vec::new();
    for (table, rows) in a {
        let other = &b[table];
        for key in rows.keys().chain(other.keys()) {
            match (rows.get(key), other.get(key)) {
                (Some(x), Some(y)) if x == y => {}
                (x, y) => found.push(format!("{table} {key}: {x:?} / {y:?}")),
            }
        }
    }
    found.dedup();
    found.truncate(20);
    found
}

#[test]
fn a_cleaned_year_replayed_by_fresh_processors_and_a_fresh_sink_gives_the_same_tables() {
    let live = Stack::new();
    let output = live.habitat_with("up", &["--demo"], live.broker_port);
    assert!(
        output.status.success(),
        "habitat up --demo failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    clean_eagerly_at(&bootstrap(&live), &CONTEXTS);
    await_compacted_at(&bootstrap(&live), &CONTEXTS, PARTITIONS);

    let fresh = Stack::new();
    _ = fresh.run("up");
    assert_eq!(
        schema_ids(&live),
        schema_ids(&fresh),
        "both registries give each subject the same id (the copied values carry it)"
    );
    let copied = copy_records(&bootstrap(&live), &bootstrap(&fresh));
    let total: i64 = copied.values().sum();
    assert!(
        total >= 60,
        "the demo year's records left after cleaning: {total}"
    );

    // Both stacks settle to their final tables (timers of payments due fire on each); the
    // two are then the same, row for row.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (live_sink, fresh_sink) = (sink_pool(&runtime, &live), sink_pool(&runtime, &fresh));
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let tables = loop {
        let (a, b) = (tables(&runtime, &live_sink), tables(&runtime, &fresh_sink));
        let rows: usize = a.values().map(BTreeMap::len).sum();
        let differ = differences(&a, &b);
        if differ.is_empty() && rows > 0 {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fresh stack's tables differ from the live ones:\n{}",
            differ.join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let stale = not_made_again(&bootstrap(&fresh), &copied);
    assert!(
        stale.is_empty(),
        "processor records only copied, never made again: {stale:?}"
    );
    // Everything the year makes is there: the seal, the approved set, the ledger.
    for (table, at_least) in [
        ("patronage_seals", 1),
        ("allocations", 4),
        ("ledger_transactions", 15),
        ("ledger_lines", 30),
        ("payments", 20),
        ("late_changes", 1),
    ] {
        assert!(
            tables[table].len() >= at_least,
            "{table}: {} rows",
            tables[table].len()
        );
    }
}
