//! End-to-end scenarios: the processors run as processes on devbroker, with the schema
//! registry on Postgres, and the tests post and read Avro events. Shared pieces here.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use chrono::Utc;
use contracts::records::Event;
use habitat_runtime::{Codec, avro::AvroCodec, partition_for};
use rdkafka::{
    Message,
    consumer::BaseConsumer,
    message::Headers,
    producer::{BaseProducer, BaseRecord, Producer},
};
use test_support::{client_config, create_topic_blocking, kafka, scratch_dir, unique, wait_for};

/// Partitions of the context topics.
pub const PARTITIONS: i32 = 6;
const TIMEOUT: Duration = Duration::from_secs(120);

/// The context topics, created on the test broker; a registry on a fresh database; a codec.
pub fn stack(runtime: &tokio::runtime::Runtime) -> (String, AvroCodec) {
    let registry = runtime
        .block_on(schema_registry::spawn_local(&test_support::database()))
        .expect("registry");
    let codec = AvroCodec::new(&registry, runtime.handle().clone()).expect("codec");
    for topic in ["habitat.people", "habitat.treasury", "habitat.agreements"] {
        create_topic_blocking(topic, PARTITIONS);
    }
    (registry, codec)
}

/// A runtime for the registry and the codec.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A processor binary of the workspace running against the test broker and registry.
pub struct Running(Child);

impl Running {
    /// Starts `name` with `HABITAT_*` settings for the test broker and `registry`; `extra`
    /// adds to or overrides them.
    pub fn start(name: &str, registry: &str, extra: &[(&str, String)]) -> Self {
        Self::start_with_args(name, registry, extra, &[])
    }

    /// Starts `name` as [`Running::start`] does, with command-line arguments.
    pub fn start_with_args(
        name: &str,
        registry: &str,
        extra: &[(&str, String)],
        args: &[&str],
    ) -> Self {
        let env = format!("HABITAT_{}_BIN", name.to_uppercase().replace('-', "_"));
        let bin = devstack::process::sibling_binary(name, &env).expect("the processor binary");
        let log = scratch_dir().join(format!("{name}-{}.log", unique("e2e")));
        let mut command = Command::new(bin);
        _ = command
            .env("HABITAT_BOOTSTRAP_SERVERS", &kafka().bootstrap)
            .env("HABITAT_SCHEMA_REGISTRY_URL", registry)
            .env("HABITAT_KAFKA_BROKER_ADDRESS_FAMILY", "v4")
            .env("HABITAT_LOG", "warn,habitat_runtime=info");
        for (key, value) in extra {
            _ = command.env(key, value);
        }
        let child = command
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the processor");
        Self(child)
    }
}

impl Running {
    /// The process id, to signal it.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).expect("a pid")
    }

    /// Whether the process is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        self.0.try_wait().expect("process status").is_none()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        _ = self.0.kill();
        _ = self.0.wait();
    }
}

/// Posts events to their topics, each to its tenant partition, stamped a millisecond apart.
pub fn post(codec: &AvroCodec, events: &[Event]) {
    let producer: BaseProducer = client_config()
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let start = Utc::now().timestamp_millis();
    for (i, event) in events.iter().enumerate() {
        let key = event.key();
        let value = codec.encode(event.topic(), event).expect("encode");
        let record = BaseRecord::to(event.topic())
            .key(key.as_str())
            .payload(value.as_slice())
            .partition(partition_for(&key, PARTITIONS))
            .timestamp(start + i64::try_from(i).expect("small"));
        producer.send(record).map_err(|(e, _)| e).expect("send");
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
}

/// Reads a context topic (read_committed), keeping the events of one tenant.
pub struct TopicReader {
    topic: String,
    consumer: BaseConsumer,
    pub events: Vec<Event>,
    /// The headers of each of `events` (name, value as text).
    pub headers: Vec<Vec<(String, String)>>,
    /// Pass over records that do not decode instead of failing.
    lenient: bool,
}

impl TopicReader {
    pub fn new(topic: &str) -> Self {
        let consumer = test_support::committed_reader(topic, PARTITIONS);
        Self {
            topic: topic.to_owned(),
            consumer,
            events: Vec::new(),
            headers: Vec::new(),
            lenient: false,
        }
    }

    /// A reader that passes over records that do not decode (a topic a test filled with
    /// garbage on purpose).
    #[must_use]
    pub fn lenient(mut self) -> Self {
        self.lenient = true;
        self
    }

    /// Reads until `found` answers, failing after two minutes.
    pub fn until<T>(
        &mut self,
        codec: &AvroCodec,
        tenant: &str,
        what: &str,
        mut found: impl FnMut(&[Event]) -> Option<T>,
    ) -> T {
        self.until_with_headers(codec, tenant, what, |events, _| found(events))
    }

    /// Reads until `found` answers from the events and their headers, failing after two
    /// minutes.
    pub fn until_with_headers<T>(
        &mut self,
        codec: &AvroCodec,
        tenant: &str,
        what: &str,
        mut found: impl FnMut(&[Event], &[Vec<(String, String)>]) -> Option<T>,
    ) -> T {
        wait_for(TIMEOUT, what, || {
            while let Some(message) = self.consumer.poll(Duration::from_millis(50)) {
                let message = message.expect("consume");
                let event = match codec.decode(&self.topic, message.payload().expect("a value")) {
                    Ok(event) => event,
                    Err(_) if self.lenient => continue,
                    Err(error) => panic!("decode: {error:?}"),
                };
                if event.meta().tenant_id == tenant {
                    self.events.push(event);
                    self.headers.push(
                        message
                            .headers()
                            .map(|headers| {
                                headers
                                    .iter()
                                    .map(|h| {
                                        (
                                            h.key.to_owned(),
                                            String::from_utf8_lossy(h.value.unwrap_or_default())
                                                .into_owned(),
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    );
                }
            }
            found(&self.events, &self.headers)
        })
    }
}
