//! The runtime on a real broker (devbroker, or `$HABITAT_TEST_BROKERS`): the counting
//! example runs as a separate process that the tests SIGKILL, stop and restart.

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

#[test]
fn exactly_once_under_crashes() {
    const TOTAL: usize = 20_000;
    let setup = Setup::new("crash");
    let mut expected = BTreeMap::new();
    let input = records(0..TOTAL, &mut expected);
    let mut out = Reader::new(&setup.output);
    let mut rng = rand::rng();
    let mut instance = setup.start("0", &[]);
    let mut kills = 0;
    for (i, chunk) in input.chunks(TOTAL / 4).enumerate() {
        produce(&setup.input, chunk);
        // Kill mid-stream at a random point of this chunk's progress, sometimes twice.
        for _ in 0..if i % 2 == 0 { 2 } else { 1 } {
            let target = out.poll() + rng.random_range(200..2_000);
            out.await_count(
                target.min(i * TOTAL / 4 + chunk.len() - 100),
                "progress before a kill",
            );
            kill(&mut instance);
            kills += 1;
            instance = setup.start("0", &[]);
        }
    }
    out.await_count(TOTAL, "every record to be counted");
    assert!(kills >= 5, "{kills} kills");
    // Nothing more arrives: a marker record goes through last.
    produce(&setup.input, &[("t0/item/end".to_owned(), b"end".to_vec())]);
    out.await_count(TOTAL + 1, "the end marker");
    kill(&mut instance);
    let values: Vec<String> = out
        .values()
        .into_iter()
        .filter(|v| !v.starts_with("t0/item/end"))
        .collect();
    assert_eq!(values.len(), TOTAL);
    assert_exact(&values, &expected);
    let mut state = final_counts(&setup);
    assert_eq!(state.remove("t0/item/end"), Some(1));
    assert_eq!(state, expected);
}

#[test]
fn a_registry_outage_is_waited_out_without_aborting_or_restoring_again() {
    let setup = Setup::new("registry-outage");
    let mut expected = BTreeMap::new();
    let mut input = records(0..2_000, &mut expected);
    // Decoding this one fails once as if the registry were down; the second try succeeds.
    input.insert(
        1_000,
        ("t3/item/flaky".to_owned(), b"unavailable-once".to_vec()),
    );
    _ = expected.insert("t3/item/flaky".to_owned(), 1);
    let port = free_port();
    let mut instance = setup.start(
        "0",
        &[("HABITAT_METRICS_LISTEN", format!("127.0.0.1:{port}"))],
    );
    produce(&setup.input, &input);
    let mut out = Reader::new(&setup.output);
    out.await_count(2_001, "every record, the flaky one included");
    let metrics = wait_for(LONG, "the registry reported back", || {
        let metrics = devstack::process::http_get(port, "/metrics")?;
        let up = devstack::process::metric_value(
            &metrics,
            "habitat_dependency_up",
            &[("dependency", "registry")],
        )?;
        (up == 1.0).then_some(metrics)
    });
    kill(&mut instance);
    let value = |name: &str, labels: &[(&str, &str)]| {
        devstack::process::metric_value(&metrics, name, labels).unwrap_or(0.0)
    };
    // The record was read again once the registry answered: no abort, no second restore.
    assert_eq!(
        value("habitat_transactions_total", &[("outcome", "aborted")]),
        0.0
    );
    assert_eq!(
        value(
            "habitat_store_restore_seconds_count",
            &[("store", "counts")]
        ),
        1.0
    );
    let log = setup.log("0");
    assert!(log.contains("Reachable again."), "{log}");
    assert_eq!(out.records.len(), 2_001);
    assert_exact(&out.values(), &expected);
}

#[test]
fn inputs_are_merged_in_timestamp_order() {
    let setup = Setup::build("merge", "session_timeout_ms: 6000\n", 2);
    let second = format!("{}.in2", setup.name);
    let base = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let key = "coop-m/item/1".to_owned();
    for (topic, value, second_offset) in [
        (&setup.input, "echo:a1", 1),
        (&setup.input, "echo:a3", 3),
        (&second, "echo:b2", 2),
        (&second, "echo:b4", 4),
        (&setup.input, "echo:a5", 5),
    ] {
        produce_at(
            topic,
            &[(key.clone(), value.as_bytes().to_vec())],
            Some(base + second_offset * 1_000),
        );
    }
    let mut out = Reader::new(&setup.output);
    let mut instance = setup.start("0", &[]);
    out.await_count(5, "every record echoed");
    kill(&mut instance);
    let order: Vec<String> = out
        .values()
        .iter()
        .map(|v| v.rsplit(':').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(order, ["a1", "b2", "a3", "b4", "a5"]);
}

#[test]
fn a_backlog_on_one_input_is_not_overtaken_by_a_later_record_of_the_other() {
    // Small buffers: the backlogged input empties between fetches again and again, while
    // the other input holds one later record the whole time. No idle allowance at all.
    let setup = Setup::build(
        "backlog",
        "session_timeout_ms: 6000\nmax_task_idle_ms: 0\nmax_buffered_records: 20\n",
        2,
    );
    let second = format!("{}.in2", setup.name);
    let base = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let key = "coop-b/item/1".to_owned();
    let backlog: Vec<(String, Vec<u8>)> = (0..3_000)
        .map(|i| (key.clone(), format!("echo:a{i}").into_bytes()))
        .collect();
    produce_at(&setup.input, &backlog, Some(base));
    produce_at(
        &second,
        &[(key.clone(), b"echo:close".to_vec())],
        Some(base + 1_000),
    );
    let mut out = Reader::new(&setup.output);
    let mut instance = setup.start("0", &[]);
    out.await_count(3_001, "every record echoed");
    kill(&mut instance);
    let values = out.values();
    let close = values.iter().position(|v| v.ends_with(":close"));
    assert_eq!(close, Some(3_000), "the later record must come last");
}

#[test]
fn an_open_transaction_on_one_input_does_not_hold_the_other() {
    let setup = Setup::build("open-txn", "session_timeout_ms: 6000\n", 2);
    let second = format!("{}.in2", setup.name);
    let key = "coop-o/item/1".to_owned();
    // A transaction on the second input that stays open for minutes: its record is not
    // readable, and what follows it on that input cannot be read before it ends.
    let open: ThreadedProducer<DefaultProducerContext> = client_config()
        .set("transactional.id", format!("{}-open", setup.name))
        .set("transaction.timeout.ms", "600000")
        .create()
        .expect("transactional producer");
    open.init_transactions(Duration::from_secs(30))
        .expect("init transactions");
    open.begin_transaction().expect("begin");
    open.send(
        BaseRecord::<str, [u8]>::to(&second)
            .key(key.as_str())
            .payload(b"echo:uncommitted".as_slice())
            .partition(partition_for(&key, PARTITIONS)),
    )
    .map_err(|(e, _)| e)
    .expect("send");
    open.flush(Duration::from_secs(30)).expect("in the log");
    produce(&setup.input, &[(key.clone(), b"echo:first".to_vec())]);

    let mut out = Reader::new(&setup.output);
    let mut instance = setup.start("0", &[]);
    // The first input's record goes through while the transaction is still open (the
    // merge asks where the second input's committed records end, not its high watermark).
    wait_for(Duration::from_secs(60), "the first input's record", || {
        (out.poll() >= 1).then_some(())
    });
    assert!(out.values()[0].ends_with(":first"), "{:?}", out.values());
    open.abort_transaction(Duration::from_secs(30))
        .expect("abort");
    kill(&mut instance);
}

#[test]
fn a_quiet_input_is_committed_without_waiting_out_the_interval() {
    // An interval of ten minutes: only the commit on idle input can show the outputs.
    let setup = Setup::with_config(
        "idle",
        "session_timeout_ms: 6000\ncommit_interval_ms: 600000\ncommit_idle_ms: 5\n",
    );
    let records: Vec<(String, Vec<u8>)> = (0..3).map(|i| (key(i), b"1".to_vec())).collect();
    produce(&setup.input, &records);
    let mut out = Reader::new(&setup.output);
    let mut instance = setup.start("0", &[]);
    wait_for(
        Duration::from_secs(60),
        "the three counts committed",
        || (out.poll() >= 3).then_some(()),
    );
    kill(&mut instance);
    let expected: BTreeMap<String, u64> = records.iter().map(|(k, _)| (k.clone(), 1)).collect();
    assert_exact(&out.values(), &expected);
}

#[test]
fn two_instances_one_killed_results_stay_exact() {
    let setup = Setup::new("move");
    let mut expected = BTreeMap::new();
    let mut out = Reader::new(&setup.output);
    let [(mut a, port_a), (mut b, _)] = setup.start_pair();
    produce(&setup.input, &records(0..3_000, &mut expected));
    out.await_count(1_000, "both instances working");
    kill(&mut b);
    produce(&setup.input, &records(3_000..6_000, &mut expected));
    out.await_count(6_000, "the survivor to take over");
    assert_eq!(assigned(port_a), Some(4.0), "a owns every partition");
    kill(&mut a);
    assert_eq!(out.records.len(), 6_000);
    assert_exact(&out.values(), &expected);
}

#[test]
fn at_least_once_writes_every_output_then_commits_the_offsets() {
    let setup = Setup::with_config("alo", "session_timeout_ms: 6000\nexactly_once: false\n");
    let mut expected = BTreeMap::new();
    let mut out = Reader::new(&setup.output);
    let _instance = setup.start("a", &[]);
    produce(&setup.input, &records(0..2_000, &mut expected));
    out.await_count(2_000, "every output");
    assert_exact(&out.values(), &expected);
    // The offsets follow the acknowledged outputs: all 2,000 inputs end up committed.
    let group: BaseConsumer = client_config()
        .set("group.id", &setup.name)
        .create()
        .expect("consumer");
    let mut partitions = rdkafka::TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        partitions.add_partition(&setup.input, partition);
    }
    wait_for(LONG, "every input offset committed", || {
        let committed = rdkafka::consumer::Consumer::committed_offsets(
            &group,
            partitions.clone(),
            Duration::from_secs(5),
        )
        .ok()?;
        let total: i64 = committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(n) => Some(n),
                _ => None,
            })
            .sum();
        (total == 2_000).then_some(())
    });
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

#[test]
fn sigterm_commits_and_leaves_the_group() {
    // A session timeout far longer than the wait below: partitions can only move because
    // the stopped instance left the group.
    let setup = Setup::with_config("sigterm", "session_timeout_ms: 120000\n");
    let mut expected = BTreeMap::new();
    let mut out = Reader::new(&setup.output);
    let [(mut a, port_a), (mut b, _)] = setup.start_pair();
    produce(&setup.input, &records(0..2_000, &mut expected));
    out.await_count(2_000, "both instances working");
    let pid = i32::try_from(b.0.id()).expect("pid");
    assert!(devstack::process::signal(pid, libc::SIGTERM));
    let status = wait_for(LONG, "b to stop", || b.0.try_wait().expect("wait"));
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    assert!(setup.log("b").contains("clean=true"), "{}", setup.log("b"));
    wait_for(Duration::from_secs(60), "a to take b's partitions", || {
        (assigned(port_a)? == 4.0).then_some(())
    });
    produce(&setup.input, &records(2_000..4_000, &mut expected));
    out.await_count(4_000, "a to count the rest");
    kill(&mut a);
    assert_eq!(out.records.len(), 4_000);
    assert_exact(&out.values(), &expected);
}

#[test]
fn poison_records_are_dead_lettered_with_headers() {
    let setup = Setup::new("poison");
    let mut expected = BTreeMap::new();
    let mut input = records(0..500, &mut expected);
    input.insert(100, ("t1/item/poisoned".to_owned(), b"poison".to_vec()));
    input.insert(300, ("t2/item/garbled".to_owned(), vec![0xff, 0x00, 0xfe]));
    let port = free_port();
    let mut instance = setup.start(
        "0",
        &[("HABITAT_METRICS_LISTEN", format!("127.0.0.1:{port}"))],
    );
    produce(&setup.input, &input);
    let mut out = Reader::new(&setup.output);
    out.await_count(500, "the good records");
    let mut dead = Reader::new(&format!("habitat.dlq.{}", setup.name));
    dead.await_count(2, "two dead letters");
    let metrics = wait_for(
        Duration::from_secs(30),
        "metrics to count every record",
        || {
            let body = devstack::process::http_get(port, "/metrics")?;
            (devstack::process::metric_value(&body, "habitat_records_in_total", &[]) == Some(502.0))
                .then_some(body)
        },
    );
    let probe = |path| devstack::process::http_get(port, path);
    assert_eq!(probe("/healthz").as_deref(), Some("ok\n"));
    assert_eq!(probe("/readyz").as_deref(), Some("ready\n"));
    kill(&mut instance);
    assert_exact(&out.values(), &expected);
    assert_eq!(dead.records.len(), 2);
    let by_key: BTreeMap<&str, _> = dead
        .records
        .iter()
        .map(|(k, v, h)| (k.as_str(), (v, h)))
        .collect();
    let (value, headers) = by_key["t1/item/poisoned"];
    assert_eq!(value.as_slice(), b"poison");
    let headers: BTreeMap<&str, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    assert_eq!(headers[dlq::headers::SOURCE_TOPIC], setup.input);
    assert_eq!(
        headers[dlq::headers::SOURCE_PARTITION],
        partition_for("t1/item/poisoned", PARTITIONS).to_string()
    );
    assert!(headers[dlq::headers::SOURCE_OFFSET].parse::<i64>().is_ok());
    assert_eq!(headers[dlq::headers::PROCESSOR], setup.name);
    assert_eq!(headers[dlq::headers::ERROR_CLASS], "poison");
    assert!(headers[dlq::headers::ERROR_MESSAGE].contains("carries poison"));
    assert!(headers.contains_key(dlq::headers::TIME));
    let (garbled, headers) = by_key["t2/item/garbled"];
    assert_eq!(garbled.as_slice(), [0xff, 0x00, 0xfe]);
    assert!(headers.iter().any(
        |(k, v)| k == dlq::headers::ERROR_CLASS && v == dlq::class::DESERIALIZATION.as_bytes()
    ));
    // Every consumed record is in the outputs or dead-lettered.
    for class in ["poison", dlq::class::DESERIALIZATION] {
        let count = devstack::process::metric_value(
            &metrics,
            "habitat_dead_letters_total",
            &[("class", class)],
        );
        assert_eq!(count, Some(1.0), "{class}: {metrics}");
    }
    let outputs = devstack::process::metric_value(
        &metrics,
        "habitat_records_out_total",
        &[("topic", &setup.output)],
    );
    assert_eq!(outputs, Some(500.0), "{metrics}");
}

#[test]
fn zombie_instance_is_fenced_and_cannot_commit() {
    let setup = Setup::new("zombie");
    let mut expected = BTreeMap::new();
    let mut out = Reader::new(&setup.output);
    let mut zombie = setup.start("z", &[]);
    produce(&setup.input, &records(0..500, &mut expected));
    out.await_count(500, "the first instance to work");
    let pid = i32::try_from(zombie.0.id()).expect("pid");
    assert!(devstack::process::signal(pid, libc::SIGSTOP));
    // Its replacement, under the same instance id, fences it and takes over.
    let mut successor = setup.start("z", &[]);
    produce(&setup.input, &records(500..1_000, &mut expected));
    out.await_count(1_000, "the successor to take over");
    assert!(devstack::process::signal(pid, libc::SIGCONT));
    // The zombie rejoins the group; the first batch it tries to commit is refused.
    let mut next = 1_000;
    let status = wait_for(LONG, "the zombie to stop", || {
        produce(&setup.input, &records(next..next + 20, &mut expected));
        next += 20;
        zombie.0.try_wait().expect("wait")
    });
    assert!(
        !status.success(),
        "a fenced zombie exits non-zero: {status:?}"
    );
    let log = setup.log("z");
    assert!(
        log.to_lowercase().contains("fenced"),
        "the zombie says it was fenced:\n{log}"
    );
    out.await_count(next, "every record counted by the successor");
    kill(&mut successor);
    assert_eq!(out.records.len(), next);
    assert_exact(&out.values(), &expected);
}

#[test]
fn timer_due_before_a_crash_fires_once_after_the_restart() {
    // Static membership: each restart takes the killed instance's place at once.
    let setup = Setup::with_config(
        "timer",
        "static_membership: true\nsession_timeout_ms: 6000\n",
    );
    let mut out = Reader::new(&setup.output);
    let mut instance = setup.start("0", &[]);
    let scheduled_at = chrono::Utc::now();
    produce(
        &setup.input,
        &[("t5/item/1".to_owned(), b"timer:3".to_vec())],
    );
    out.await_count(1, "the timer to be scheduled");
    assert_eq!(out.values(), ["scheduled:t5/item/1"]);
    kill(&mut instance);
    wait_for(
        LONG,
        "the timer to fall due while the processor is down",
        || (chrono::Utc::now() > scheduled_at + chrono::TimeDelta::seconds(4)).then_some(()),
    );
    let mut instance = setup.start("0", &[]);
    out.await_count(2, "the timer to fire after the restart");
    // A later record goes through: the timer had its chance to fire twice.
    produce(&setup.input, &[("t5/item/1".to_owned(), b"after".to_vec())]);
    out.await_count(3, "a record after the timer");
    kill(&mut instance);
    let mut instance = setup.start("0", &[]);
    produce(&setup.input, &[("t5/item/1".to_owned(), b"again".to_vec())]);
    out.await_count(4, "a record after another restart");
    kill(&mut instance);
    let fired = out
        .values()
        .iter()
        .filter(|v| v.starts_with("fired:"))
        .count();
    assert_eq!(fired, 1, "{:?}", out.values());
}
