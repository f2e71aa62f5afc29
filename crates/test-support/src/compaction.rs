//! Compacted topics in tests: make the broker clean topics now, and read what is left.

use std::time::Duration;

use rdkafka::{
    Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
};

use rdkafka::ClientConfig;

use crate::{client_config, client_config_at as client_of, unique, wait_for};

/// Settings under which a broker cleans a compacted topic as soon as it can: segments
/// rolled after 100 ms, any share of dirty bytes, no compaction lag, tombstones removed at
/// once.
pub const EAGER: [(&str, &str); 5] = [
    ("segment.ms", "100"),
    ("min.cleanable.dirty.ratio", "0.01"),
    ("min.compaction.lag.ms", "0"),
    ("delete.retention.ms", "0"),
    ("cleanup.policy", "compact"),
];

/// Sets [`EAGER`] on these topics (AlterConfigs).
pub fn clean_eagerly(topics: &[&str]) {
    clean_eagerly_with(client_config(), topics);
}

/// [`clean_eagerly`] on the broker at `bootstrap`.
pub fn clean_eagerly_at(bootstrap: &str, topics: &[&str]) {
    clean_eagerly_with(client_of(bootstrap), topics);
}

fn clean_eagerly_with(config: ClientConfig, topics: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = config.create().expect("admin");
    let alters: Vec<AlterConfig<'_>> = topics
        .iter()
        .map(|topic| {
            EAGER.iter().fold(
                AlterConfig::new(ResourceSpecifier::Topic(topic)),
                |alter, (name, value)| alter.set(name, value),
            )
        })
        .collect();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(admin.alter_configs(
            &alters,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("alter_configs");
}

/// One record left on a topic.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Left {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    /// `None` for a tombstone.
    pub value: Option<String>,
}

/// Every record on `partitions` partitions of `topic`, read (read_committed) to the end.
pub fn records_on(topic: &str, partitions: i32) -> Vec<Left> {
    records_read(topic, partitions, "read_committed")
}

/// Every record on `partitions` partitions of `topic`, read to the end by a new consumer
/// of this `isolation.level`.
pub fn records_read(topic: &str, partitions: i32, isolation: &str) -> Vec<Left> {
    records_read_with(client_config(), topic, partitions, isolation)
}

/// [`records_on`] of the broker at `bootstrap`.
pub fn records_on_at(bootstrap: &str, topic: &str, partitions: i32) -> Vec<Left> {
    records_read_with(client_of(bootstrap), topic, partitions, "read_committed")
}

fn records_read_with(
    mut config: ClientConfig,
    topic: &str,
    partitions: i32,
    isolation: &str,
) -> Vec<Left> {
    let reader: BaseConsumer = config
        .set("group.id", unique("compaction-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(topic, partition, Offset::Beginning)
            .expect("partition");
    }
    // The topic's leaders known first: the client would otherwise find them on its next
    // scan of unknown topics, up to a second later.
    _ = reader.fetch_metadata(Some(topic), Duration::from_secs(10));
    reader.assign(&list).expect("assign");
    let mut left = Vec::new();
    let mut ended = 0;
    wait_for(Duration::from_secs(60), "the topic read to its end", || {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => left.push(Left {
                partition: message.partition(),
                offset: message.offset(),
                key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                value: message
                    .payload()
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
            }),
            Some(Err(KafkaError::PartitionEOF(_))) => ended += 1,
            Some(Err(error)) => panic!("consume {topic}: {error}"),
            None => {}
        }
        (ended >= partitions).then_some(())
    });
    left
}

/// Waits until every partition of these topics holds at most one record per key and no
/// tombstone: what a broker cleaning as [`EAGER`] says leaves.
pub fn await_compacted(topics: &[&str], partitions: i32) {
    await_compacted_by(topics, &|topic| records_on(topic, partitions));
}

/// [`await_compacted`] on the broker at `bootstrap`.
pub fn await_compacted_at(bootstrap: &str, topics: &[&str], partitions: i32) {
    await_compacted_by(topics, &|topic| records_on_at(bootstrap, topic, partitions));
}

fn await_compacted_by(topics: &[&str], read: &dyn Fn(&str) -> Vec<Left>) {
    wait_for(Duration::from_secs(120), "the topics compacted", || {
        topics
            .iter()
            .all(|topic| {
                let left = read(topic);
                let mut keys: Vec<(i32, &str)> =
                    left.iter().map(|r| (r.partition, r.key.as_str())).collect();
                keys.sort_unstable();
                let before = keys.len();
                keys.dedup();
                keys.len() == before && left.iter().all(|r| r.value.is_some())
            })
            .then_some(())
    });
}
