//! The sink's loop: read the context and dead-letter topics, turn each record into rows,
//! and write each batch, split by partition, in concurrent Postgres transactions that each
//! carry their partitions' rows and offsets.
//!
//! Offsets live in Postgres only. On every assignment the partitions are assigned at the
//! offsets stored there (read inside the rebalance callback, before any record of the
//! assignment is fetched), so what was written is never read twice and what was not is
//! never skipped. Offsets are also committed to Kafka after each batch, for lag tools
//! only.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use contracts::topology::Topology;
use habitat_runtime::{
    Codec, CodecError,
    avro::AvroCodec,
    dlq::{DeadLetter, class},
    health::{Dependencies, dependency},
    kafka::headers_of,
    metrics::Metrics,
    retry::RetryPolicy,
    waits,
};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
    error::KafkaError,
};
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use crate::{
    SINK,
    assign::{Rebalanced, SinkContext},
    batch::{Batch, Coordinates},
    cadence::{Cadence, Open},
    config::SinkConfig,
    store::{Partition, Prepared, Store, WriteError},
};

/// The sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    /// The registry could not decode a record: unreachable at shutdown, or refusing the
    /// sink's credentials.
    #[error("schema registry: {0}")]
    Registry(#[source] CodecError),
    /// An assignment could not be taken (its stored offsets, the assign itself).
    #[error("assignment failed: {0}")]
    Assignment(String),
    /// A batch writer's task died.
    #[error("batch writer: {0}")]
    Writer(#[from] tokio::task::JoinError),
    /// A dependency stayed unreachable longer than the give-up time.
    #[error("{0}")]
    GaveUp(String),
    /// A batch's rows could not be built (a defect: the sink builds them from its own log rows).
    #[error("batch rows: {0}")]
    Rows(#[from] crate::stage::BadPayload),
}

/// The sink with its store, codec and metrics, ready to run.
pub struct Sink {
    config: SinkConfig,
    store: Store,
    records: Records,
    metrics: Metrics,
    handle: Handle,
    shutdown: Arc<AtomicBool>,
}

/// Turns consumed records into batch entries: events, tombstones, dead letters.
pub struct Records {
    codec: AvroCodec,
    dead_letter_topics: BTreeSet<String>,
    shutdown: Arc<AtomicBool>,
    /// Where an unreachable registry is reported, and how long it is waited for.
    dependencies: Dependencies,
    policy: RetryPolicy,
}

impl Records {
    /// Records decoded with `codec`; a set `shutdown` ends a wait for the registry.
    pub fn new(codec: AvroCodec, shutdown: Arc<AtomicBool>) -> Self {
        let topology = Topology::embedded();
        let dead_letter_topics = topology
            .processors
            .iter()
            .map(|p| topology.dead_letter_topic(p))
            .collect();
        Self {
            codec,
            dead_letter_topics,
            shutdown,
            dependencies: Dependencies::default(),
            policy: RetryPolicy::default(),
        }
    }

    /// Reports an unreachable registry to `dependencies` and waits for it by `policy`.
    pub fn with_outages(mut self, dependencies: Dependencies, policy: RetryPolicy) -> Self {
        self.dependencies = dependencies;
        self.policy = policy;
        self
    }

    /// Adds `message` to `batch`: a dead letter of a processor, a tombstone, an event,
    /// or — when it cannot be decoded — the sink's own dead letter.
    pub fn add(&self, batch: &mut Batch, message: &impl Message) -> Result<(), SinkError> {
        let at = Coordinates {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        if self.dead_letter_topics.contains(message.topic()) {
            let letter = DeadLetter::from_record(
                &headers_of(message),
                message.key().map(<[u8]>::to_vec),
                message.payload().map(<[u8]>::to_vec),
            )
            .unwrap_or_else(|| {
                own_letter(
                    at,
                    message,
                    "a dead-letter record without its headers".to_owned(),
                    class::DESERIALIZATION,
                )
            });
            batch.dead_letter(at, &letter);
            return Ok(());
        }
        match message.payload() {
            None => match &key {
                Some(key) => batch.tombstone(at, key),
                None => batch.skip(at),
            },
            Some(bytes) => match self.decode(at.topic, bytes)? {
                Ok(event) => batch.event(at, key.as_deref(), &event),
                Err(error) => {
                    let class = match error {
                        CodecError::UnknownSchema(_) => class::UNKNOWN_SCHEMA,
                        _ => class::DESERIALIZATION,
                    };
                    let letter = own_letter(at, message, error.to_string(), class);
                    warn!(
                        topic = at.topic,
                        partition = at.partition,
                        offset = at.offset,
                        class,
                        error = %letter.message,
                        "Record dead-lettered."
                    );
                    batch.dead_letter(at, &letter);
                }
            },
        }
        Ok(())
    }

    /// Decodes, waiting out an unreachable registry (the record cannot be skipped).
    fn decode(
        &self,
        topic: &str,
        bytes: &[u8],
    ) -> Result<Result<contracts::records::Event, CodecError>, SinkError> {
        let dependencies = &self.dependencies;
        let mut delays = None;
        loop {
            match self.codec.decode(topic, bytes) {
                Err(CodecError::Unavailable(error)) => {
                    if self.shutdown.load(Ordering::SeqCst) {
                        return Err(SinkError::Registry(CodecError::Unavailable(error)));
                    }
                    dependencies.unreachable(dependency::REGISTRY, &error);
                    let delay = delays.get_or_insert_with(|| self.policy.delays()).next();
                    let Some(delay) = delay else {
                        return Err(SinkError::Registry(CodecError::Unavailable(error)));
                    };
                    std::thread::sleep(delay);
                }
                Err(refused @ CodecError::Unauthorized(_)) => {
                    return Err(SinkError::Registry(refused));
                }
                other => {
                    if delays.is_some() {
                        dependencies.reachable(dependency::REGISTRY);
                    }
                    return Ok(other);
                }
            }
        }
    }
}

/// A record the sink itself cannot take, as a dead letter.
fn own_letter(
    at: Coordinates<'_>,
    message: &impl Message,
    error: String,
    class: &str,
) -> DeadLetter {
    DeadLetter {
        source_topic: at.topic.to_owned(),
        source_partition: at.partition,
        source_offset: at.offset,
        processor: SINK.to_owned(),
        class: class.to_owned(),
        message: error,
        time: Utc::now(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
    }
}

impl Sink {
    pub fn new(
        config: SinkConfig,
        store: Store,
        codec: AvroCodec,
        metrics: Metrics,
        handle: Handle,
    ) -> Self {
        let shutdown = Arc::new(AtomicBool::new(false));
        let records = Records::new(codec, shutdown.clone())
            .with_outages(metrics.dependencies.clone(), config.retry_policy());
        Self {
            config,
            store,
            records,
            metrics,
            handle,
            shutdown,
        }
    }

    /// Set it to stop after the open batch is written.
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }

    /// Runs until the shutdown flag is set (then writes the open batch and returns) or
    /// something fails that a restart must fix. Call from a thread outside the async
    /// runtime.
    pub fn run(self) -> Result<(), SinkError> {
        let topics = self.config.topics(&Topology::embedded());
        let context = SinkContext {
            store: self.store.clone(),
            handle: self.handle.clone(),
            events: habitat_runtime::kafka::Rebalances::default(),
            metrics: self.metrics.clone(),
            inputs: topics.clone(),
            policy: self.config.retry_policy(),
        };
        let mut client = ClientConfig::new();
        _ = client
            .set("bootstrap.servers", &self.config.bootstrap_servers)
            .set("group.id", &self.config.group_id)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set(
                "session.timeout.ms",
                self.config.session_timeout_ms.to_string(),
            )
            .set("statistics.interval.ms", "5000")
            // Records come as soon as they are committed; this bounds only idle polls.
            .set(
                "fetch.wait.max.ms",
                habitat_runtime::kafka::IDLE_FETCH_WAIT_MS,
            )
            .set("queued.max.messages.kbytes", "65536");
        self.config.kafka.apply(&mut client);
        let consumer: BaseConsumer<SinkContext> = client.create_with_context(context)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        info!(topics = ?topics, schema = self.store.schema(), "Sink started.");
        let mut state = Loop {
            sink: &self,
            consumer: &consumer,
            committed: BTreeMap::new(),
            position: BTreeMap::new(),
            batch: Batch::default(),
            opened: None,
            writing: Vec::new(),
            last_probe: Instant::now(),
        };
        let outcome = state.run();
        consumer.unsubscribe();
        outcome
    }
}

mod outage;
mod writes;
use writes::Writing;

struct Loop<'a> {
    sink: &'a Sink,
    consumer: &'a BaseConsumer<SinkContext>,
    /// What Postgres holds for each assigned partition.
    committed: BTreeMap<Partition, i64>,
    /// The next offset to take per assigned partition.
    position: BTreeMap<Partition, i64>,
    batch: Batch,
    opened: Option<Instant>,
    /// The parts of the batch Postgres is writing, each on its own connection.
    writing: Vec<Writing>,
    /// When the broker was last probed during an outage.
    last_probe: Instant,
}

impl Loop<'_> {
    fn run(&mut self) -> Result<(), SinkError> {
        let cadence = Cadence::of(&self.sink.config);
        let mut last_input = Instant::now();
        loop {
            if let Some(failure) = self.consumer.context().events.take_failure() {
                return Err(SinkError::Assignment(failure));
            }
            self.rebalanced()?;
            if self.sink.shutdown.load(Ordering::SeqCst) {
                info!("Stopping: writing the open batch.");
                self.flush()?;
                return self.settle(false);
            }
            let wait = cadence.wait(self.opened.map(|o| o.elapsed()), !self.writing.is_empty());
            match self.consumer.poll(waits::whole_millis(wait)) {
                // Read in place, in the client's buffer.
                Some(Ok(message)) => {
                    self.broker_answered();
                    // A rebalance inside this poll may have moved the partition.
                    self.rebalanced()?;
                    self.take(&message)?;
                    last_input = Instant::now();
                }
                Some(Err(error)) if habitat_runtime::kafka::is_transient(&error) => {
                    self.sink
                        .metrics
                        .dependencies
                        .unreachable(dependency::BROKER, &error);
                }
                Some(Err(error @ KafkaError::MessageConsumptionFatal(_))) => {
                    return Err(error.into());
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(error)) => warn!(%error, "Consumer error."),
            }
            self.watch_broker()?;
            if self.written() {
                self.settle(true)?;
            }
            let open = self.opened.map(|opened| Open {
                records: self.batch.len(),
                age: opened.elapsed(),
                quiet: last_input.elapsed(),
                writing: !self.writing.is_empty(),
            });
            if cadence.write_now(open) {
                self.flush()?;
            }
        }
    }

    fn rebalanced(&mut self) -> Result<(), SinkError> {
        let events = self.consumer.context().events.take();
        for event in events {
            match event {
                Rebalanced::Revoked => {
                    // The batch being written finishes (or finds its offsets moved).
                    self.settle(false)?;
                    if !self.batch.is_empty() {
                        debug!(
                            records = self.batch.len(),
                            "Partitions revoked: open batch dropped."
                        );
                    }
                    self.drop_open();
                    self.committed.clear();
                    self.position.clear();
                }
                Rebalanced::Assigned(stored) => {
                    info!(
                        partitions = stored.len(),
                        "Partitions assigned at the offsets stored in Postgres."
                    );
                    for (partition, next) in stored {
                        _ = self.committed.insert(partition.clone(), next);
                        _ = self.position.insert(partition, next.max(0));
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds one record to the batch.
    fn take(&mut self, message: &impl Message) -> Result<(), SinkError> {
        let partition = (message.topic().to_owned(), message.partition());
        let Some(next) = self.position.get(&partition).copied() else {
            return Ok(()); // not (or no longer) assigned
        };
        if message.offset() < next {
            return Ok(()); // already written
        }
        self.sink.records.add(&mut self.batch, message)?;
        _ = self.position.insert(partition, message.offset() + 1);
        if self.opened.is_none() {
            self.opened = Some(Instant::now());
        }
        Ok(())
    }

    /// Drops the open batch (its partitions are re-read from the offsets in Postgres).
    fn drop_open(&mut self) {
        self.batch = Batch::default();
        self.opened = None;
    }
}
