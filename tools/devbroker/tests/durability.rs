//! devbroker with `--data-dir`: topics, records, committed offsets and the transaction
//! index survive a restart, and a transaction left open by the crash is never shown.

use std::{path::Path, time::Duration};

use devstack::broker::Durable;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer},
    producer::{BaseProducer, BaseRecord, Producer},
    util::Timeout,
};
use test_support::{scratch_dir, unique, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);

struct Running {
    broker: Durable,
}

impl Running {
    fn start(dir: &Path) -> Self {
        let broker = Durable::start(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            &dir.with_extension("log"),
        )
        .expect("start devbroker");
        Self { broker }
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        _ = config
            .set("bootstrap.servers", self.broker.addr().to_string())
            .set("broker.address.family", "v4");
        config
    }

    fn create_topic(&self, topic: &str) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().expect("admin");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(admin.create_topics(
                &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            ))
            .expect("create topic")
            .into_iter()
            .for_each(|r| _ = r.expect("topic created"));
    }

    fn kill(self) {
        self.broker.kill();
    }
}

fn read_committed(running: &Running, topic: &str, group: &str) -> BaseConsumer {
    let consumer: BaseConsumer = running
        .config()
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

fn next_value(consumer: &BaseConsumer) -> (i64, String) {
    wait_for(TIMEOUT, "a record", || {
        consumer.poll(Duration::from_millis(100)).map(|m| {
            let m = m.expect("consume");
            (
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )
        })
    })
}

#[test]
fn topics_records_offsets_survive_a_crash_and_open_transactions_stay_hidden() {
    let dir = scratch_dir().join(unique("durable"));
    let topic = unique("durable");
    let group = unique("group");

    let first = Running::start(&dir);
    first.create_topic(&topic);

    let producer: BaseProducer = first
        .config()
        .set("transactional.id", unique("txn"))
        // The transaction left open at the crash outlives the restart (the coordinator
        // keeps it) and is aborted when this timeout passes.
        .set("transaction.timeout.ms", "3000")
        .create()
        .expect("producer");
    producer.init_transactions(TIMEOUT).expect("init");
    producer.begin_transaction().expect("begin");
    for value in ["a", "b", "c"] {
        producer
            .send(BaseRecord::to(&topic).key(value).payload(value))
            .map_err(|(e, _)| e)
            .expect("send");
    }
    producer.commit_transaction(TIMEOUT).expect("commit");

    // Consume and commit past "a" only.
    let consumer = read_committed(&first, &topic, &group);
    assert_eq!(next_value(&consumer).1, "a");
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&topic, 0, Offset::Offset(1))
        .expect("offset");
    consumer
        .commit(&offsets, CommitMode::Sync)
        .expect("commit offsets");
    drop(consumer);

    // A transaction still open when the broker dies.
    producer.begin_transaction().expect("begin");
    producer
        .send(BaseRecord::to(&topic).key("open").payload("open"))
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(TIMEOUT).expect("flush");
    drop(producer);
    first.kill();

    let second = Running::start(&dir);
    let consumer = read_committed(&second, &topic, &group);
    let mut committed = TopicPartitionList::new();
    committed.add_partition(&topic, 0);
    let resumed = consumer
        .committed_offsets(committed, Timeout::After(TIMEOUT))
        .expect("committed offsets");
    assert_eq!(
        resumed
            .find_partition(&topic, 0)
            .expect("partition")
            .offset(),
        Offset::Offset(1)
    );
    assert_eq!(next_value(&consumer), (1, "b".to_owned()));
    assert_eq!(next_value(&consumer), (2, "c".to_owned()));

    // Later records are readable once the open transaction has timed out and been
    // aborted; its record never shows.
    let producer: BaseProducer = second.config().create().expect("producer");
    producer
        .send(BaseRecord::to(&topic).key("late").payload("late"))
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(TIMEOUT).expect("flush");
    assert_eq!(next_value(&consumer).1, "late");
    second.kill();
    std::fs::remove_dir_all(&dir).expect("remove the data directory");
}

#[test]
fn sigterm_stops_the_broker_cleanly_and_keeps_its_data() {
    let dir = scratch_dir().join(unique("sigterm"));
    let topic = unique("sigterm");
    let mut first = Running::start(&dir);
    let producer: BaseProducer = first
        .config()
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    first.create_topic(&topic);
    producer
        .send(BaseRecord::to(&topic).key("k").payload("kept"))
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(TIMEOUT).expect("flush");
    drop(producer);

    let pid = i32::try_from(first.broker.process.child.id()).expect("pid");
    assert!(devstack::process::signal(pid, libc::SIGTERM));
    let status = wait_for(TIMEOUT, "devbroker to exit", || {
        first.broker.process.child.try_wait().expect("wait")
    });
    assert!(status.success(), "exit status {status}");

    let second = Running::start(&dir);
    let consumer = read_committed(&second, &topic, &unique("group"));
    assert_eq!(next_value(&consumer), (0, "kept".to_owned()));
    second.kill();
    std::fs::remove_dir_all(&dir).expect("remove the data directory");
}
