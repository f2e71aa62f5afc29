//! Compacted topics as Kafka cleans them: the latest value per key survives, tombstones go
//! after `delete.retention.ms`, offsets keep their gaps, transactions read the same after
//! cleaning, and the cleaning settings are taken and reported through the admin API.
//!
//! Kafka rolls a segment only on an append, so each wait writes a record under the key
//! `roll` while it polls (left out of every comparison); devbroker also rolls idle segments.

use std::collections::BTreeMap;

use rdkafka::{
    admin::{
        AdminClient, AdminOptions, AlterConfig, ConfigSource, NewTopic, ResourceSpecifier,
        TopicReplication,
    },
    client::DefaultClientContext,
};

use test_support::compaction::records_read;

use super::*;

/// Cleaning as soon as possible: tiny segments, any dirty share, no lag.
const EAGER: [(&str, &str); 4] = [
    ("cleanup.policy", "compact"),
    ("segment.ms", "100"),
    ("min.cleanable.dirty.ratio", "0.01"),
    ("min.compaction.lag.ms", "0"),
];

type Row = (i64, String, Option<String>);

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn admin() -> AdminClient<DefaultClientContext> {
    client_config().create().expect("admin client")
}

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(TIMEOUT))
}

/// Creates a one-partition topic with these configs; the broker's answer for it.
fn create(topic: &str, configs: &[(&str, &str)]) -> Result<(), RDKafkaErrorCode> {
    let mut new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (name, value) in configs {
        new = new.set(name, value);
    }
    let results = block_on(admin().create_topics(&[new], &options())).expect("create_topics");
    results[0].clone().map(|_| ()).map_err(|(_, code)| code)
}

/// A compacted topic at Kafka's default settings: nothing is cleaned for a week.
fn compacted_topic(prefix: &str) -> String {
    let topic = unique(prefix);
    create(&topic, &[("cleanup.policy", "compact")]).expect("a compacted topic");
    topic
}

/// Makes a topic clean as soon as possible from now on (through AlterConfigs).
fn clean_eagerly(topic: &str, delete_retention_ms: &str) {
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic))
        .set("delete.retention.ms", delete_retention_ms);
    for (name, value) in EAGER {
        alter = alter.set(name, value);
    }
    _ = block_on(admin().alter_configs(&[alter], &options())).expect("alter_configs");
}

fn put(producer: &BaseProducer, topic: &str, key: &str, value: Option<&str>) {
    let mut record = BaseRecord::<str, str>::to(topic).partition(0).key(key);
    if let Some(value) = value {
        record = record.payload(value);
    }
    producer
        .send(record)
        .map_err(|(error, _)| error)
        .expect("enqueue a record");
}

/// Every record of the topic from its start to its end, read by a new consumer.
fn read_all(topic: &str, isolation: &str) -> Vec<Row> {
    records_read(topic, 1, isolation)
        .into_iter()
        .map(|left| (left.offset, left.key, left.value))
        .collect()
}

fn without_roll(rows: &[Row]) -> Vec<Row> {
    rows.iter().filter(|r| r.1 != "roll").cloned().collect()
}

/// Polls until the topic read as `isolation` (the `roll` key left out) passes `cleaned`,
/// writing a `roll` record each time so that the segment before it can close.
fn await_cleaning(
    topic: &str,
    isolation: &str,
    what: &str,
    cleaned: impl Fn(&[Row]) -> bool,
) -> Vec<Row> {
    let roller = plain_producer();
    let mut rolls = 0;
    wait_for(Duration::from_secs(90), what, || {
        rolls += 1;
        put(&roller, topic, "roll", Some(&rolls.to_string()));
        roller.flush(TIMEOUT).expect("flush");
        let rows = without_roll(&read_all(topic, isolation));
        cleaned(&rows).then_some(rows)
    })
}

fn latest_per_key(rows: &[Row]) -> BTreeMap<String, Option<String>> {
    rows.iter().map(|r| (r.1.clone(), r.2.clone())).collect()
}

#[test]
fn the_latest_value_per_key_survives_cleaning_and_offsets_keep_their_gaps() {
    let topic = compacted_topic("compact-latest");
    let producer = plain_producer();
    for round in 0..10 {
        for key in ["a", "b", "c"] {
            put(&producer, &topic, key, Some(&format!("{key}{round}")));
        }
    }
    producer.flush(TIMEOUT).expect("flush");
    let before = read_all(&topic, "read_uncommitted");
    assert_eq!(before.len(), 30);
    clean_eagerly(&topic, "86400000");

    let after = await_cleaning(&topic, "read_uncommitted", "one record per key", |rows| {
        rows.len() == 3
    });
    assert_eq!(
        after,
        vec![
            (27, "a".into(), Some("a9".into())),
            (28, "b".into(), Some("b9".into())),
            (29, "c".into(), Some("c9".into())),
        ],
        "each key's latest record at its own offset"
    );
    assert_eq!(latest_per_key(&before), latest_per_key(&after));

    // A reader starting inside the cleaned range gets the next record left.
    let reader = consumer("read_uncommitted", None);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(5))
        .expect("partition offset");
    reader.assign(&tpl).expect("assign");
    let first = read_until(&reader, "a record after the gap", |seen| !seen.is_empty());
    assert_eq!(first[0], (27, "a9".to_owned()));
    // The log start stays: compaction removes records, not the beginning of the log.
    assert_eq!(watermarks(&reader, &topic).0, 0);
}

#[test]
fn a_tombstone_disappears_after_delete_retention() {
    let topic = compacted_topic("compact-tombstone");
    clean_eagerly(&topic, "1000");
    let producer = plain_producer();
    put(&producer, &topic, "gone", Some("v1"));
    put(&producer, &topic, "kept", Some("k1"));
    put(&producer, &topic, "gone", None);
    producer.flush(TIMEOUT).expect("flush");

    let cleaned = await_cleaning(
        &topic,
        "read_uncommitted",
        "the value under the tombstone cleaned",
        |rows| !rows.iter().any(|r| r.2.as_deref() == Some("v1")),
    );
    // Right after the first cleaning the tombstone may still be there (readers must see
    // the delete); it never comes back with the old value.
    assert!(
        cleaned.iter().all(|r| r.1 != "gone" || r.2.is_none()),
        "{cleaned:?}"
    );
    let gone = await_cleaning(
        &topic,
        "read_uncommitted",
        "the tombstone removed",
        |rows| !rows.iter().any(|r| r.1 == "gone"),
    );
    assert_eq!(gone, vec![(1, "kept".into(), Some("k1".into()))]);
}

#[test]
fn transactions_read_the_same_after_cleaning_and_aborted_records_never_return() {
    let topic = compacted_topic("compact-txn");
    let producer = transactional_producer(&unique("txn"));
    producer.begin_transaction().expect("begin");
    put(&producer, &topic, "a", Some("a-committed-1"));
    put(&producer, &topic, "b", Some("b-committed"));
    producer.commit_transaction(TIMEOUT).expect("commit");
    producer.begin_transaction().expect("begin");
    put(&producer, &topic, "a", Some("a-aborted"));
    put(&producer, &topic, "c", Some("c-aborted"));
    producer.flush(TIMEOUT).expect("flush");
    producer.abort_transaction(TIMEOUT).expect("abort");
    producer.begin_transaction().expect("begin");
    put(&producer, &topic, "a", Some("a-committed-2"));
    producer.commit_transaction(TIMEOUT).expect("commit");

    let committed_before = without_roll(&read_all(&topic, "read_committed"));
    let values_before: Vec<_> = committed_before.iter().map(|r| r.2.clone()).collect();
    assert_eq!(
        values_before,
        [
            Some("a-committed-1".into()),
            Some("b-committed".into()),
            Some("a-committed-2".into())
        ]
    );
    clean_eagerly(&topic, "1000");

    // Cleaned: the superseded a-committed-1 and the aborted records are gone, even for a
    // read_uncommitted reader.
    let uncommitted = await_cleaning(
        &topic,
        "read_uncommitted",
        "the cleaned transactions",
        |rows| rows.len() == 2,
    );
    let expected: Vec<Option<String>> =
        vec![Some("b-committed".into()), Some("a-committed-2".into())];
    assert_eq!(
        uncommitted.iter().map(|r| r.2.clone()).collect::<Vec<_>>(),
        expected
    );
    let committed = without_roll(&read_all(&topic, "read_committed"));
    assert_eq!(committed, uncommitted);
    assert_eq!(
        latest_per_key(&committed),
        latest_per_key(&committed_before),
        "a read_committed reader ends in the same state"
    );
}

#[test]
fn cleaning_settings_are_taken_reported_and_checked() {
    let topic = unique("compact-configs");
    create(
        &topic,
        &[
            ("cleanup.policy", "compact"),
            ("delete.retention.ms", "5000"),
        ],
    )
    .expect("created");
    let describe = |topic: &str| -> BTreeMap<String, (Option<String>, ConfigSource)> {
        let results =
            block_on(admin().describe_configs([&ResourceSpecifier::Topic(topic)], &options()))
                .expect("describe_configs");
        let resource = results.into_iter().next().unwrap().expect("described");
        resource
            .entries
            .into_iter()
            .map(|e| (e.name, (e.value, e.source)))
            .collect()
    };
    let configs = describe(&topic);
    assert_eq!(configs["cleanup.policy"].0.as_deref(), Some("compact"));
    assert_eq!(configs["delete.retention.ms"].0.as_deref(), Some("5000"));
    assert_ne!(configs["cleanup.policy"].1, ConfigSource::Default);
    // Unset settings are reported at their defaults.
    assert_eq!(configs["segment.bytes"].0.as_deref(), Some("1073741824"));
    assert_eq!(
        configs["min.cleanable.dirty.ratio"].0.as_deref(),
        Some("0.5")
    );

    let altered = block_on(
        admin().alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic(&topic))
                .set("cleanup.policy", "compact,delete")
                .set("retention.ms", "60000")],
            &options(),
        ),
    )
    .expect("alter_configs");
    assert!(altered[0].is_ok(), "{altered:?}");
    let configs = describe(&topic);
    assert_eq!(
        configs["cleanup.policy"].0.as_deref(),
        Some("compact,delete")
    );
    assert_eq!(configs["retention.ms"].0.as_deref(), Some("60000"));

    // An unknown policy is refused (rdkafka's Rust binding reports every AlterConfigs
    // resource as a success, so the refusal is read back instead).
    _ = block_on(admin().alter_configs(
        &[AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("cleanup.policy", "forever")],
        &options(),
    ))
    .expect("alter_configs");
    assert_eq!(
        describe(&topic)["cleanup.policy"].0.as_deref(),
        Some("compact,delete")
    );
    assert_eq!(
        create(&unique("bad-ratio"), &[("min.cleanable.dirty.ratio", "2")]),
        Err(RDKafkaErrorCode::InvalidConfig)
    );

    // A compacted topic refuses a record without a key.
    let producer = plain_producer();
    producer
        .send(
            BaseRecord::<str, str>::to(&topic)
                .partition(0)
                .payload("no key"),
        )
        .map_err(|(error, _)| error)
        .expect("enqueue a record");
    wait_for(TIMEOUT, "the keyless record answered", || {
        producer.poll(Duration::from_millis(50));
        (producer.in_flight_count() == 0).then_some(())
    });
    let rows = read_all(&topic, "read_uncommitted");
    assert!(rows.is_empty(), "{rows:?}");
}
