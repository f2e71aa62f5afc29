//! The runtime on a real broker (devbroker, or `$HABITAT_TEST_BROKERS`): the counting
//! example runs as a separate process that the tests SIGKILL, stop and restart.

mod commits;
mod crashes;
mod merge;
mod served;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use habitat_runtime::{dlq, partition_for};
use rand::Rng;
use rdkafka::{
    Message,
    consumer::BaseConsumer,
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
};
use test_support::{client_config, create_topic_blocking, kafka, scratch_dir, unique, wait_for};

const PARTITIONS: i32 = 4;
const LONG: Duration = Duration::from_secs(180);

fn counter_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = profile.join("examples").join("counter");
    assert!(
        bin.is_file(),
        "{} missing: cargo test builds it",
        bin.display()
    );
    bin
}

/// A counter processor's topics and names, unique to one test.
struct Setup {
    name: String,
    input: String,
    output: String,
    config: PathBuf,
}

impl Setup {
    fn new(prefix: &str) -> Self {
        Self::with_config(prefix, "session_timeout_ms: 6000\n")
    }

    /// A setup whose processes also get the YAML lines `extra`.
    fn with_config(prefix: &str, extra: &str) -> Self {
        Self::build(prefix, extra, 1)
    }

    /// A setup with `inputs` input topics (`<name>.in`, `<name>.in2`, …).
    fn build(prefix: &str, extra: &str, inputs: usize) -> Self {
        let name = unique(prefix);
        let input = format!("{name}.in");
        let output = format!("{name}.out");
        let mut topics = vec![input.clone()];
        topics.extend((2..=inputs).map(|i| format!("{name}.in{i}")));
        for topic in topics.iter().chain([&output]) {
            create_topic_blocking(topic, PARTITIONS);
        }
        let config = scratch_dir().join(format!("{name}.yaml"));
        let interval = if extra.contains("commit_interval_ms") {
            ""
        } else {
            "commit_interval_ms: 50\n"
        };
        std::fs::write(
            &config,
            format!(
                "bootstrap_servers: \"{}\"\ninputs: {topics:?}\n{interval}transaction_timeout_ms: 10000\n{extra}kafka:\n  broker.address.family: v4\n",
                kafka().bootstrap
            ),
        )
        .expect("write config");
        Self {
            name,
            input,
            output,
            config,
        }
    }

    /// Starts instances `a` and `b`, each serving metrics, and waits until they share the
    /// partitions.
    fn start_pair(&self) -> [(Instance, u16); 2] {
        let pair = ["a", "b"].map(|name| {
            let port = free_port();
            let env = [("HABITAT_METRICS_LISTEN", format!("127.0.0.1:{port}"))];
            (self.start(name, &env), port)
        });
        let half = f64::from(PARTITIONS / 2);
        wait_for(LONG, "the partitions to be shared", || {
            (assigned(pair[0].1)? == half && assigned(pair[1].1)? == half).then_some(())
        });
        pair
    }

    /// Starts an instance; its log goes to the scratch directory.
    fn start(&self, instance: &str, extra_env: &[(&str, String)]) -> Instance {
        let log = scratch_dir().join(format!("{}-{instance}.log", self.name));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut command = Command::new(counter_binary());
        _ = command
            .env("COUNTER_NAME", &self.name)
            .env("COUNTER_OUTPUT", &self.output)
            .env("HABITAT_CONFIG", &self.config)
            .env("HABITAT_INSTANCE_ID", instance)
            .env("HABITAT_LOG", "warn,habitat_runtime=debug")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in extra_env {
            _ = command.env(k, v);
        }
        Instance(command.spawn().expect("start the counter"))
    }

    fn log(&self, instance: &str) -> String {
        std::fs::read_to_string(scratch_dir().join(format!("{}-{instance}.log", self.name)))
            .unwrap_or_default()
    }
}

fn producer() -> ThreadedProducer<DefaultProducerContext> {
    client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces values under keys, each to its tenant partition, and waits for delivery.
fn produce(topic: &str, records: &[(String, Vec<u8>)]) {
    produce_at(topic, records, None);
}

/// Produces with an explicit record timestamp (milliseconds) when given.
fn produce_at(topic: &str, records: &[(String, Vec<u8>)], timestamp: Option<i64>) {
    let producer = producer();
    for (key, value) in records {
        let mut record = BaseRecord::<str, [u8]>::to(topic)
            .key(key.as_str())
            .payload(value.as_slice())
            .partition(partition_for(key, PARTITIONS));
        if let Some(timestamp) = timestamp {
            record = record.timestamp(timestamp);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
}

/// A consumed record: key, value, headers.
type Consumed = (String, Vec<u8>, Vec<(String, Vec<u8>)>);

/// Reads a topic from the beginning under read_committed.
struct Reader {
    consumer: BaseConsumer,
    records: Vec<Consumed>,
}

impl Reader {
    fn new(topic: &str) -> Self {
        let consumer = test_support::committed_reader(topic, PARTITIONS);
        Self {
            consumer,
            records: Vec::new(),
        }
    }

    fn poll(&mut self) -> usize {
        while let Some(message) = self.consumer.poll(Duration::from_millis(20)) {
            let message = message.expect("consume");
            let headers = habitat_runtime::kafka::headers_of(&message);
            self.records.push((
                String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                message.payload().unwrap_or_default().to_vec(),
                headers,
            ));
        }
        self.records.len()
    }

    fn values(&self) -> Vec<String> {
        self.records
            .iter()
            .map(|(_, v, _)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// Polls until `n` records are read.
    fn await_count(&mut self, n: usize, what: &str) {
        wait_for(LONG, what, || (self.poll() >= n).then_some(()));
    }
}

fn key(i: usize) -> String {
    format!("t{}/item/{}", i % 13, i % 200)
}

/// The `<key>=<n>` outputs are 1..=n once each per key, for exactly the expected keys.
fn assert_exact(values: &[String], expected: &BTreeMap<String, u64>) {
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for value in values {
        let (key, count) = value.rsplit_once('=').expect("key=count");
        seen.entry(key.to_owned())
            .or_default()
            .push(count.parse().expect("count"));
    }
    for (key, n) in expected {
        let mut counts = seen.remove(key).unwrap_or_default();
        counts.sort_unstable();
        assert_eq!(counts, (1..=*n).collect::<Vec<_>>(), "outputs of {key}");
    }
    assert!(
        seen.is_empty(),
        "outputs for keys never produced: {:?}",
        seen.keys()
    );
}

/// The last committed value per key of the counts changelog.
fn final_counts(setup: &Setup) -> BTreeMap<String, u64> {
    let mut reader = Reader::new(&format!("{}-counts-changelog", setup.name));
    // The end marker's count is the last change committed.
    wait_for(LONG, "the changelog to be read to its end", || {
        reader.poll();
        reader
            .records
            .iter()
            .any(|(k, _, _)| k == "t0/item/end")
            .then_some(())
    });
    let mut state = BTreeMap::new();
    for (key, value, _) in &reader.records {
        _ = state.insert(
            key.clone(),
            String::from_utf8_lossy(value).parse().expect("count"),
        );
    }
    state
}

/// A processor process, SIGKILLed when dropped (a failed test leaves nothing running).
struct Instance(Child);

impl Drop for Instance {
    fn drop(&mut self) {
        _ = self.0.kill();
        _ = self.0.wait();
    }
}

fn kill(instance: &mut Instance) {
    instance.0.kill().expect("SIGKILL");
    _ = instance.0.wait();
}

fn records(
    range: std::ops::Range<usize>,
    expected: &mut BTreeMap<String, u64>,
) -> Vec<(String, Vec<u8>)> {
    range
        .map(|i| {
            *expected.entry(key(i)).or_default() += 1;
            (key(i), i.to_string().into_bytes())
        })
        .collect()
}

fn free_port() -> u16 {
    devstack::process::free_port().expect("port")
}

/// The partitions an instance reports assigned.
fn assigned(port: u16) -> Option<f64> {
    devstack::process::metric_value(
        &devstack::process::http_get(port, "/metrics")?,
        "habitat_assigned_partitions",
        &[],
    )
}
