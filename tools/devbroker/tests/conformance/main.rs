//! Kafka transaction conformance, checked with rdkafka (librdkafka) and kcat.
//!
//! Every test runs against the broker of `test_support::kafka()`: a devbroker started for
//! this binary, or the broker named by `HABITAT_TEST_BROKERS` (so the same points can be
//! checked on Redpanda or Apache Kafka).

mod abandoned;
mod compaction;
mod groups;
mod transactions;

use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    time::Duration,
};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    producer::{BaseProducer, BaseRecord, Producer},
    types::RDKafkaErrorCode,
    util::Timeout,
};
use test_support::{client_config, create_topic_blocking, kafka, unique, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);

fn transactional_producer(transactional_id: &str) -> BaseProducer {
    let producer: BaseProducer = client_config()
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", "60000")
        .set("linger.ms", "5")
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(TIMEOUT)
        .expect("init_transactions");
    producer
}

fn plain_producer() -> BaseProducer {
    client_config()
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

fn send(producer: &BaseProducer, topic: &str, partition: i32, value: &str) {
    producer
        .send(
            BaseRecord::to(topic)
                .partition(partition)
                .key(value)
                .payload(value),
        )
        .map_err(|(error, _)| error)
        .expect("enqueue a record");
}

fn consumer(isolation: &str, group: Option<&str>) -> BaseConsumer {
    let mut config: ClientConfig = client_config();
    _ = config
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "group.id",
            group.map_or_else(|| unique("reader"), str::to_owned),
        )
        .set("fetch.wait.max.ms", "50");
    config.create().expect("consumer")
}

fn assign_from_beginning(consumer: &BaseConsumer, topic: &str, partitions: i32) {
    let mut tpl = TopicPartitionList::new();
    for partition in 0..partitions {
        tpl.add_partition_offset(topic, partition, Offset::Beginning)
            .expect("partition offset");
    }
    consumer.assign(&tpl).expect("assign");
}

/// Polls until `done` holds for the (offset, value) pairs read so far.
fn read_until(
    consumer: &BaseConsumer,
    what: &str,
    done: impl Fn(&[(i64, String)]) -> bool,
) -> Vec<(i64, String)> {
    let mut seen = Vec::new();
    wait_for(TIMEOUT, what, || {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume");
            let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            seen.push((message.offset(), value));
        }
        done(&seen).then(|| seen.clone())
    })
}

fn values(records: &[(i64, String)]) -> Vec<&str> {
    records.iter().map(|(_, v)| v.as_str()).collect()
}

fn watermarks(consumer: &BaseConsumer, topic: &str) -> (i64, i64) {
    consumer
        .fetch_watermarks(topic, 0, TIMEOUT)
        .expect("watermarks")
}

/// Creates `topic` with `partitions`, writes `value` to `partition` and reads the topic
/// back from the beginning with a new reader until a record comes.
fn create_write_read(
    topic: &str,
    partitions: i32,
    partition: i32,
    value: &str,
) -> Vec<(i64, String)> {
    create_topic_blocking(topic, partitions);
    let producer = plain_producer();
    send(&producer, topic, partition, value);
    producer.flush(TIMEOUT).expect("flush");
    let reader = consumer("read_committed", None);
    assign_from_beginning(&reader, topic, partitions);
    read_until(&reader, value, |seen| !seen.is_empty())
}

/// Runs this test binary's `producer_left_mid_transaction` helper as a separate process.
fn spawn_abandoning_producer(
    topic: &str,
    transactional_id: &str,
    timeout_ms: u32,
) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "abandoned::producer_left_mid_transaction",
            "--ignored",
            "--nocapture",
        ])
        .env("CONFORMANCE_TOPIC", topic)
        .env("CONFORMANCE_TXN_ID", transactional_id)
        .env("CONFORMANCE_TXN_TIMEOUT_MS", timeout_ms.to_string())
        .env(test_support::BROKERS_ENV, &kafka().bootstrap)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the producer process");
    devstack::process::read_until(&mut child, "PRODUCED", TIMEOUT).expect("the producer produced");
    child
}

fn kcat() -> Command {
    let mut command = Command::new("kcat");
    _ = command.args(["-b", &kafka().bootstrap]);
    command
}

fn kcat_output(command: &mut Command) -> String {
    let output = command
        .output()
        .expect("kcat is required for these tests: sudo apt-get install -y kcat");
    assert!(
        output.status.success(),
        "kcat failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}
