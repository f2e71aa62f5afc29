//! devbroker SIGKILLed and restarted on its data directory and address while a
//! transactional producer, an idempotent producer and a group consumer keep running: the
//! clients carry on without being restarted, the broker never panics, and what
//! read_committed readers see is exact — every committed transaction once, nothing of an
//! aborted one, every acknowledged idempotent record once.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use devstack::broker::Durable;
use rdkafka::{
    ClientConfig, Message,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer},
    error::KafkaError,
    producer::{BaseProducer, BaseRecord, Producer},
};
use test_support::{scratch_dir, unique, wait_for};

/// Restarts in a row.
const ROUNDS: usize = 10;
const PARTITIONS: i32 = 3;
/// Long enough for a client to ride out a restart (a few seconds here).
const PATIENCE: Duration = Duration::from_secs(60);

fn config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    _ = config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500");
    config
}

fn create_topic(bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap).create().expect("admin");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .expect("create topic")
        .into_iter()
        .for_each(|r| _ = r.expect("topic created"));
}

/// Commits transactions of three records ("t<n>" to each partition) until stopped; an
/// abortable failure aborts and repeats the same `n`. Returns the `n` committed.
fn transactions(
    bootstrap: String,
    topic: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> Vec<usize> {
    let producer: BaseProducer = config(&bootstrap)
        .set("transactional.id", unique("restarts"))
        .set("transaction.timeout.ms", "30000")
        .set("linger.ms", "2")
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(PATIENCE)
        .expect("init_transactions");
    let mut committed = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        producer.begin_transaction().expect("begin");
        let outcome = (0..PARTITIONS)
            .try_for_each(|partition| {
                let value = format!("t{n}");
                producer
                    .send(
                        BaseRecord::to(&topic)
                            .partition(partition)
                            .key(&value)
                            .payload(&value),
                    )
                    .map_err(|(error, _)| error)
            })
            .and_then(|()| retrying(|| producer.commit_transaction(PATIENCE)));
        match outcome {
            Ok(()) => {
                committed.push(n);
                n += 1;
                _ = done.fetch_add(1, Ordering::Relaxed);
            }
            Err(KafkaError::Transaction(error)) if error.txn_requires_abort() => {
                if let Err(abort) = retrying(|| producer.abort_transaction(PATIENCE)) {
                    panic!("transaction {n}: abort after {error} failed: {abort:?}");
                }
            }
            Err(error) => panic!("transaction {n} failed beyond abort: {error:?}"),
        }
    }
    committed
}

/// A transactional call again while librdkafka calls its error retriable (as an
/// application does).
fn retrying(mut call: impl FnMut() -> Result<(), KafkaError>) -> Result<(), KafkaError> {
    loop {
        match call() {
            Err(KafkaError::Transaction(error)) if error.is_retriable() => {}
            other => return other,
        }
    }
}

/// Sends "i<n>" idempotently, one flush per ten records, until stopped. Returns how many
/// were acknowledged (all of them: a failure fails the test).
fn idempotent(
    bootstrap: String,
    topic: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> usize {
    let producer: BaseProducer = config(&bootstrap)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("idempotent producer");
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10 {
            let value = format!("i{sent}");
            producer
                .send(BaseRecord::to(&topic).key(&value).payload(&value))
                .map_err(|(error, _)| error)
                .expect("enqueue");
            sent += 1;
        }
        producer.flush(PATIENCE).expect("every record acknowledged");
        _ = done.fetch_add(10, Ordering::Relaxed);
    }
    sent
}

/// A read_committed member of a group, committing what it read, until stopped. Returns
/// the values it read with how often.
fn member(
    bootstrap: String,
    topic: String,
    group: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> BTreeMap<String, usize> {
    let consumer: BaseConsumer = config(&bootstrap)
        .set("group.id", &group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "30000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut seen = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let Ok(message) = message else {
            // Transport errors while the broker is down are reported and ridden out.
            continue;
        };
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        *seen.entry(value).or_default() += 1;
        _ = done.fetch_add(1, Ordering::Relaxed);
        // A commit that fails while the broker is down is made good by the next one.
        _ = consumer.commit_message(&message, CommitMode::Sync);
    }
    seen
}

/// Every value of `topic`, read from the start with read_committed.
fn read_all(bootstrap: &str, topic: &str, expected: usize) -> BTreeMap<String, usize> {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", unique("reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut seen = BTreeMap::new();
    let mut total = 0;
    wait_for(PATIENCE, "every record read back", || {
        while let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("read");
            let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            *seen.entry(value).or_default() += 1;
            total += 1;
        }
        (total >= expected).then_some(())
    });
    // Nothing more than expected arrives.
    let extra = consumer.poll(Duration::from_secs(1));
    assert!(extra.is_none(), "more records than expected: {extra:?}");
    seen
}

fn panics_in(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("panicked"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn clients_carry_on_through_ten_broker_crashes_and_read_committed_stays_exact() {
    let dir = scratch_dir().join(unique("restarts"));
    let log = PathBuf::from(format!("{}.log", dir.display()));
    let first = Durable::start(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), &dir, &log)
        .expect("start devbroker");
    let listen = first.addr();
    let bootstrap = listen.to_string();
    let (txn_topic, plain_topic) = (unique("restarts-txn"), unique("restarts-plain"));
    create_topic(&bootstrap, &txn_topic);
    create_topic(&bootstrap, &plain_topic);

    let stop = Arc::new(AtomicBool::new(false));
    let progress: [Arc<AtomicUsize>; 3] = Default::default();
    let transactional = {
        let (b, t, s, d) = (
            bootstrap.clone(),
            txn_topic.clone(),
            stop.clone(),
            progress[0].clone(),
        );
        thread::spawn(move || transactions(b, t, s, d))
    };
    let plain = {
        let (b, t, s, d) = (
            bootstrap.clone(),
            plain_topic.clone(),
            stop.clone(),
            progress[1].clone(),
        );
        thread::spawn(move || idempotent(b, t, s, d))
    };
    let consumer = {
        let (b, t, s, d) = (
            bootstrap.clone(),
            txn_topic.clone(),
            stop.clone(),
            progress[2].clone(),
        );
        thread::spawn(move || member(b, t, unique("restarts-group"), s, d))
    };

    let mut running = first;
    for round in 0..=ROUNDS {
        // Every client makes progress on this incarnation before it is killed.
        let before: Vec<usize> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
        wait_for(
            PATIENCE,
            &format!("progress of every client in round {round}"),
            || {
                progress
                    .iter()
                    .zip(&before)
                    .all(|(now, before)| now.load(Ordering::Relaxed) > *before + 3)
                    .then_some(())
            },
        );
        if round == ROUNDS {
            break;
        }
        running.kill();
        running = Durable::start(listen, &dir, &log).expect("restart devbroker");
    }
    stop.store(true, Ordering::Relaxed);
    let committed = transactional.join().expect("transactional producer");
    let sent = plain.join().expect("idempotent producer");
    let member_saw = consumer.join().expect("group consumer");

    // Each committed transaction once per partition; nothing else.
    let read = read_all(
        &bootstrap,
        &txn_topic,
        committed.len() * PARTITIONS as usize,
    );
    let expected: BTreeMap<String, usize> = committed
        .iter()
        .map(|n| (format!("t{n}"), PARTITIONS as usize))
        .collect();
    assert_eq!(
        read, expected,
        "read_committed sees every committed transaction once"
    );
    // The group member read only committed values, and all of them up to where it stopped.
    assert!(
        member_saw.keys().all(|value| expected.contains_key(value)),
        "the member read an uncommitted value"
    );
    // Every acknowledged idempotent record once.
    let read = read_all(&bootstrap, &plain_topic, sent);
    assert_eq!(read.len(), sent, "every idempotent record, none twice");
    assert!(read.values().all(|count| *count == 1));

    let panics = panics_in(&log);
    assert!(panics.is_empty(), "devbroker panicked: {panics:?}");
    running.kill();
    std::fs::remove_dir_all(&dir).expect("remove the data directory");
}
