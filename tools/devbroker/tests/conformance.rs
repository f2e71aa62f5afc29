//! Kafka transaction conformance, checked with rdkafka (librdkafka) and kcat.
//!
//! Every test runs against the broker of `test_support::kafka()`: a devbroker started for
//! this binary, or the broker named by `HABITAT_TEST_BROKERS` (so the same points can be
//! checked on Redpanda or Apache Kafka).

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

#[test]
fn a_topic_deleted_and_created_again_is_read_as_it_is_now() {
    let topic = unique("recreated");
    let read = create_write_read(&topic, 1, 0, "before");
    assert_eq!(values(&read), ["before"]);

    // Again with three partitions: fetches must not answer from what the broker knew of
    // the first one (one partition, its records).
    test_support::delete_topic_blocking(&topic);
    let read = create_write_read(&topic, 3, 2, "after");
    assert_eq!(read, [(0, "after".to_owned())]);
}

#[test]
fn commit_is_visible() {
    let topic = unique("commit");
    create_topic_blocking(&topic, 1);
    let producer = transactional_producer(&unique("txn"));
    producer.begin_transaction().expect("begin");
    for i in 0..5 {
        send(&producer, &topic, 0, &format!("r{i}"));
    }
    producer.commit_transaction(TIMEOUT).expect("commit");

    let reader = consumer("read_committed", None);
    assign_from_beginning(&reader, &topic, 1);
    let read = read_until(&reader, "five committed records", |seen| seen.len() >= 5);
    assert_eq!(values(&read), ["r0", "r1", "r2", "r3", "r4"]);
    assert_eq!(
        read.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
}

#[test]
fn abort_is_invisible_to_read_committed_and_visible_to_read_uncommitted() {
    let topic = unique("abort");
    create_topic_blocking(&topic, 1);
    let producer = transactional_producer(&unique("txn"));
    producer.begin_transaction().expect("begin");
    send(&producer, &topic, 0, "aborted-1");
    send(&producer, &topic, 0, "aborted-2");
    producer.flush(TIMEOUT).expect("flush");
    producer.abort_transaction(TIMEOUT).expect("abort");
    producer.begin_transaction().expect("begin");
    send(&producer, &topic, 0, "kept");
    producer.commit_transaction(TIMEOUT).expect("commit");

    let committed = consumer("read_committed", None);
    assign_from_beginning(&committed, &topic, 1);
    let read = read_until(&committed, "the committed record", |seen| {
        seen.iter().any(|(_, v)| v == "kept")
    });
    assert_eq!(values(&read), ["kept"]);

    let uncommitted = consumer("read_uncommitted", None);
    assign_from_beginning(&uncommitted, &topic, 1);
    let read = read_until(&uncommitted, "every record", |seen| {
        seen.iter().any(|(_, v)| v == "kept")
    });
    assert_eq!(values(&read), ["aborted-1", "aborted-2", "kept"]);
}

#[test]
fn open_transaction_is_invisible_until_commit() {
    let topic = unique("open");
    create_topic_blocking(&topic, 1);
    let producer = transactional_producer(&unique("txn"));
    producer.begin_transaction().expect("begin");
    send(&producer, &topic, 0, "pending-1");
    send(&producer, &topic, 0, "pending-2");
    producer.flush(TIMEOUT).expect("flush");

    // The records are on the broker: a read_uncommitted reader gets them.
    let uncommitted = consumer("read_uncommitted", None);
    assign_from_beginning(&uncommitted, &topic, 1);
    let read = read_until(&uncommitted, "the pending records", |seen| seen.len() >= 2);
    assert_eq!(values(&read), ["pending-1", "pending-2"]);

    // read_committed: the last stable offset holds at the transaction's first offset.
    let committed = consumer("read_committed", None);
    assert_eq!(watermarks(&committed, &topic), (0, 0));
    assign_from_beginning(&committed, &topic, 1);
    for _ in 0..5 {
        if let Some(message) = committed.poll(Duration::from_millis(100)) {
            panic!(
                "read a record of an open transaction: {:?}",
                message.map(|m| m.offset())
            );
        }
    }

    producer.commit_transaction(TIMEOUT).expect("commit");
    let read = read_until(&committed, "the records once committed", |seen| {
        seen.len() >= 2
    });
    assert_eq!(values(&read), ["pending-1", "pending-2"]);
}

#[test]
fn watermarks_and_last_stable_offset() {
    let topic = unique("marks");
    create_topic_blocking(&topic, 1);
    let producer = transactional_producer(&unique("txn"));
    producer.begin_transaction().expect("begin");
    for i in 0..3 {
        send(&producer, &topic, 0, &format!("c{i}"));
    }
    producer.commit_transaction(TIMEOUT).expect("commit");

    let committed = consumer("read_committed", None);
    let uncommitted = consumer("read_uncommitted", None);
    // Three records and their commit marker.
    assert_eq!(watermarks(&uncommitted, &topic), (0, 4));
    assert_eq!(watermarks(&committed, &topic), (0, 4));

    producer.begin_transaction().expect("begin");
    send(&producer, &topic, 0, "o0");
    send(&producer, &topic, 0, "o1");
    producer.flush(TIMEOUT).expect("flush");
    assert_eq!(watermarks(&uncommitted, &topic), (0, 6));
    assert_eq!(
        watermarks(&committed, &topic),
        (0, 4),
        "LSO at the open transaction"
    );

    producer.abort_transaction(TIMEOUT).expect("abort");
    assert_eq!(watermarks(&uncommitted, &topic), (0, 7));
    assert_eq!(
        watermarks(&committed, &topic),
        (0, 7),
        "LSO past the abort marker"
    );
}

#[test]
fn consume_transform_produce_with_offsets_in_the_transaction() {
    let input = unique("ctp-in");
    let output = unique("ctp-out");
    let group = unique("ctp-group");
    create_topic_blocking(&input, 1);
    create_topic_blocking(&output, 1);
    let source = plain_producer();
    for i in 0..10 {
        send(&source, &input, 0, &format!("in{i}"));
    }
    source.flush(TIMEOUT).expect("flush");

    let worker = consumer("read_committed", Some(&group));
    worker.subscribe(&[&input]).expect("subscribe");
    let producer = transactional_producer(&unique("ctp"));

    // Each cycle: read five, produce their transforms, commit offsets in the transaction.
    let cycle = |commit: bool| {
        producer.begin_transaction().expect("begin");
        let mut next = 0;
        for _ in 0..5 {
            let message = wait_for(TIMEOUT, "an input record", || {
                worker
                    .poll(Duration::from_millis(100))
                    .map(|m| m.expect("consume").detach())
            });
            let value =
                String::from_utf8_lossy(message.payload().unwrap_or_default()).to_uppercase();
            send(&producer, &output, 0, &value);
            next = message.offset() + 1;
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&input, 0, Offset::Offset(next))
            .expect("offset");
        let metadata = worker.group_metadata().expect("group metadata");
        producer
            .send_offsets_to_transaction(&offsets, &metadata, TIMEOUT)
            .expect("send offsets");
        if commit {
            producer.commit_transaction(TIMEOUT).expect("commit");
        } else {
            producer.flush(TIMEOUT).expect("flush");
            producer.abort_transaction(TIMEOUT).expect("abort");
        }
    };
    cycle(true);
    cycle(false);

    let committed = |consumer: &BaseConsumer| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&input, 0);
        consumer
            .committed_offsets(tpl, Timeout::After(TIMEOUT))
            .expect("committed offsets")
            .find_partition(&input, 0)
            .expect("partition")
            .offset()
    };
    assert_eq!(
        committed(&worker),
        Offset::Offset(5),
        "the aborted cycle's offsets are not committed"
    );

    let reader = consumer("read_committed", None);
    assign_from_beginning(&reader, &output, 1);
    let read = read_until(&reader, "the committed transforms", |seen| seen.len() >= 5);
    assert_eq!(values(&read), ["IN0", "IN1", "IN2", "IN3", "IN4"]);
    let (_, high) = watermarks(&reader, &output);
    assert!(
        high > 5,
        "the aborted transforms are in the log, only hidden"
    );
}

#[test]
fn zombie_is_fenced() {
    let topic = unique("zombie");
    create_topic_blocking(&topic, 1);
    let transactional_id = unique("txn");
    let zombie = transactional_producer(&transactional_id);
    zombie.begin_transaction().expect("begin");
    send(&zombie, &topic, 0, "from-zombie");
    zombie.flush(TIMEOUT).expect("flush");

    let successor = transactional_producer(&transactional_id);
    let error = zombie
        .commit_transaction(TIMEOUT)
        .expect_err("the zombie must not commit");
    match &error {
        KafkaError::Transaction(e) => assert!(
            e.is_fatal()
                || matches!(
                    e.code(),
                    RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
                ),
            "unexpected transaction error: {e}"
        ),
        other => panic!("unexpected error: {other}"),
    }

    successor.begin_transaction().expect("begin");
    send(&successor, &topic, 0, "from-successor");
    successor.commit_transaction(TIMEOUT).expect("commit");

    let reader = consumer("read_committed", None);
    assign_from_beginning(&reader, &topic, 1);
    let read = read_until(&reader, "the successor's record", |seen| {
        seen.iter().any(|(_, v)| v == "from-successor")
    });
    assert_eq!(values(&read), ["from-successor"]);
}

#[test]
fn zombie_between_transactions_is_fenced() {
    let topic = unique("idle-zombie");
    create_topic_blocking(&topic, 1);
    let transactional_id = unique("txn");
    let zombie = transactional_producer(&transactional_id);
    zombie.begin_transaction().expect("begin");
    send(&zombie, &topic, 0, "committed-by-zombie");
    zombie.commit_transaction(TIMEOUT).expect("commit");

    // The successor initialises while the zombie has no transaction open.
    let _successor = transactional_producer(&transactional_id);
    zombie.begin_transaction().expect("begin is local");
    send(&zombie, &topic, 0, "from-zombie");
    let error = zombie
        .commit_transaction(TIMEOUT)
        .expect_err("the zombie must not commit");
    assert!(
        matches!(&error, KafkaError::Transaction(e) if e.is_fatal() || e.txn_requires_abort()),
        "unexpected error: {error}"
    );
    let reader = consumer("read_committed", None);
    assign_from_beginning(&reader, &topic, 1);
    let read = read_until(&reader, "the first commit", |seen| !seen.is_empty());
    assert_eq!(values(&read), ["committed-by-zombie"]);
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
            "producer_left_mid_transaction",
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

/// Helper process: opens a transaction, produces, flushes, then waits to be killed.
#[test]
#[ignore = "run as a child process by the killed-producer tests"]
fn producer_left_mid_transaction() {
    let topic = std::env::var("CONFORMANCE_TOPIC").expect("CONFORMANCE_TOPIC");
    let producer: BaseProducer = client_config()
        .set(
            "transactional.id",
            std::env::var("CONFORMANCE_TXN_ID").expect("CONFORMANCE_TXN_ID"),
        )
        .set(
            "transaction.timeout.ms",
            std::env::var("CONFORMANCE_TXN_TIMEOUT_MS").expect("CONFORMANCE_TXN_TIMEOUT_MS"),
        )
        .create()
        .expect("producer");
    producer.init_transactions(TIMEOUT).expect("init");
    producer.begin_transaction().expect("begin");
    for i in 0..100 {
        send(&producer, &topic, 0, &format!("killed-{i}"));
    }
    producer.flush(TIMEOUT).expect("flush");
    println!("PRODUCED");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn sigkilled_producer_restarted_with_same_id_never_shows_its_transaction() {
    let topic = unique("killed");
    create_topic_blocking(&topic, 1);
    let transactional_id = unique("txn");
    let mut child = spawn_abandoning_producer(&topic, &transactional_id, 600_000);
    child.kill().expect("SIGKILL the producer");
    _ = child.wait();

    let uncommitted = consumer("read_uncommitted", None);
    assert_eq!(
        watermarks(&uncommitted, &topic).1,
        100,
        "the killed transaction's records are in the log"
    );

    // Restarting with the same transactional.id aborts the abandoned transaction.
    let restarted = transactional_producer(&transactional_id);
    restarted.begin_transaction().expect("begin");
    send(&restarted, &topic, 0, "after-restart");
    restarted.commit_transaction(TIMEOUT).expect("commit");

    let reader = consumer("read_committed", None);
    assign_from_beginning(&reader, &topic, 1);
    let read = read_until(&reader, "the restarted producer's record", |seen| {
        seen.iter().any(|(_, v)| v == "after-restart")
    });
    assert_eq!(values(&read), ["after-restart"]);
}

#[test]
fn sigkilled_producer_transaction_is_aborted_after_its_timeout() {
    let topic = unique("timeout");
    create_topic_blocking(&topic, 1);
    let mut child = spawn_abandoning_producer(&topic, &unique("txn"), 2_000);
    child.kill().expect("SIGKILL the producer");
    _ = child.wait();

    let other = plain_producer();
    send(&other, &topic, 0, "after-timeout");
    other.flush(TIMEOUT).expect("flush");

    // The LSO is stuck at 0 until the broker aborts the transaction on its timeout.
    let reader = consumer("read_committed", None);
    assign_from_beginning(&reader, &topic, 1);
    let read = read_until(
        &reader,
        "the record after the abandoned transaction",
        |seen| seen.iter().any(|(_, v)| v == "after-timeout"),
    );
    assert_eq!(values(&read), ["after-timeout"]);
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

#[test]
fn kcat_lists_metadata() {
    let topic = unique("kcat-meta");
    create_topic_blocking(&topic, 3);
    let listing = kcat_output(kcat().args(["-L", "-t", &topic]));
    assert!(
        listing.contains(&format!("topic \"{topic}\" with 3 partitions")),
        "{listing}"
    );
}

#[test]
fn kcat_consumes_committed_records() {
    let topic = unique("kcat-consume");
    create_topic_blocking(&topic, 1);
    let producer = transactional_producer(&unique("txn"));
    producer.begin_transaction().expect("begin");
    send(&producer, &topic, 0, "hidden");
    producer.flush(TIMEOUT).expect("flush");
    producer.abort_transaction(TIMEOUT).expect("abort");
    producer.begin_transaction().expect("begin");
    send(&producer, &topic, 0, "one");
    send(&producer, &topic, 0, "two");
    producer.commit_transaction(TIMEOUT).expect("commit");

    let consumed = kcat_output(kcat().args([
        "-C",
        "-t",
        &topic,
        "-o",
        "beginning",
        "-e",
        "-q",
        "-X",
        "isolation.level=read_committed",
    ]));
    assert_eq!(consumed.lines().collect::<Vec<_>>(), ["one", "two"]);
}

#[test]
fn consumer_group_rebalances_between_two_members() {
    let topic = unique("rebalance");
    let group = unique("group");
    create_topic_blocking(&topic, 4);
    let assigned = |consumer: &BaseConsumer| -> BTreeSet<i32> {
        consumer
            .assignment()
            .expect("assignment")
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect()
    };
    let first = consumer("read_committed", Some(&group));
    first.subscribe(&[&topic]).expect("subscribe");
    wait_for(TIMEOUT, "the first member to own every partition", || {
        _ = first.poll(Duration::from_millis(50));
        (assigned(&first).len() == 4).then_some(())
    });

    let second = consumer("read_committed", Some(&group));
    second.subscribe(&[&topic]).expect("subscribe");
    let (a, b) = wait_for(TIMEOUT, "the partitions to be shared", || {
        _ = first.poll(Duration::from_millis(50));
        _ = second.poll(Duration::from_millis(50));
        let (a, b) = (assigned(&first), assigned(&second));
        (a.len() == 2 && b.len() == 2).then_some((a, b))
    });
    assert!(a.is_disjoint(&b));
    assert_eq!(
        a.union(&b).copied().collect::<BTreeSet<_>>(),
        (0..4).collect()
    );

    drop(second);
    wait_for(
        TIMEOUT,
        "the first member to own every partition again",
        || {
            _ = first.poll(Duration::from_millis(50));
            (assigned(&first).len() == 4).then_some(())
        },
    );
}

/// Helper process: joins `CONFORMANCE_GROUP` on `CONFORMANCE_TOPIC` and keeps polling
/// (so it heartbeats) until it is killed.
#[test]
#[ignore = "run as a child process by the killed-member test"]
fn member_left_without_leaving() {
    let topic = std::env::var("CONFORMANCE_TOPIC").expect("CONFORMANCE_TOPIC");
    let group = std::env::var("CONFORMANCE_GROUP").expect("CONFORMANCE_GROUP");
    let member: BaseConsumer = client_config()
        .set("group.id", &group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer");
    member.subscribe(&[&topic]).expect("subscribe");
    let mut announced = false;
    loop {
        _ = member.poll(Duration::from_millis(50));
        if !announced && member.assignment().is_ok_and(|a| a.count() > 0) {
            println!("JOINED");
            announced = true;
        }
    }
}

#[test]
fn sigkilled_member_partitions_move_after_its_session_timeout() {
    let topic = unique("expiry");
    let group = unique("group");
    create_topic_blocking(&topic, 4);
    let survivor: BaseConsumer = client_config()
        .set("group.id", &group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer");
    survivor.subscribe(&[&topic]).expect("subscribe");
    let owned = |consumer: &BaseConsumer| consumer.assignment().map_or(0, |a| a.count());
    wait_for(TIMEOUT, "the survivor to own every partition", || {
        _ = survivor.poll(Duration::from_millis(50));
        (owned(&survivor) == 4).then_some(())
    });

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "member_left_without_leaving",
            "--ignored",
            "--nocapture",
        ])
        .env("CONFORMANCE_TOPIC", &topic)
        .env("CONFORMANCE_GROUP", &group)
        .env(test_support::BROKERS_ENV, &kafka().bootstrap)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the member process");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    _ = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("JOINED") {
                _ = tx.send(());
            }
        }
    });
    let mut joined = false;
    wait_for(TIMEOUT, "the partitions to be shared", || {
        _ = survivor.poll(Duration::from_millis(50));
        joined |= rx.try_recv().is_ok();
        (joined && owned(&survivor) == 2).then_some(())
    });

    child.kill().expect("SIGKILL the member");
    _ = child.wait();
    wait_for(TIMEOUT, "the killed member's partitions to move", || {
        _ = survivor.poll(Duration::from_millis(50));
        (owned(&survivor) == 4).then_some(())
    });
}
