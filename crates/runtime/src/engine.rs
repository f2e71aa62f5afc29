//! The exactly-once engine.
//!
//! Guarantee: every input record is reflected in the outputs, or dead-lettered, exactly
//! once as seen by `read_committed` consumers. It relies on Kafka transactions: the
//! outputs, the state stores' changelog records, the dead letters and the consumed
//! offsets of a batch are committed in one transaction with the consumer group's
//! metadata (KIP-447), so a batch is all there or not at all, and an instance that lost
//! its partitions (or was replaced under the same instance id) is fenced.
//!
//! The loop: poll → buffer per partition → merge the inputs in timestamp order → run the
//! processor → fire due timers → commit every `commit_interval` or `commit_max_records`,
//! or once no input has come for `commit_idle` (caught up: small batches when the stream is
//! quiet, full ones under load).
//! A transaction is open only inside [`Engine::commit`], so a rebalance never lands in
//! the middle of one; on revocation the uncommitted batch is dropped and the new owner
//! redoes it from the committed offsets. An abortable error aborts and rewinds to the
//! committed offsets with the stores restored from their changelogs; a fatal one (being
//! fenced included) stops the process.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use contracts::topology::{TopicSpec, Topology};
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, Statistics, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance},
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, Headers, OwnedHeaders},
    producer::{BaseRecord, Producer, ThreadedProducer},
    types::RDKafkaErrorCode as ErrorCode,
};
use tracing::{debug, error, info, info_span, warn};

use crate::{
    Clock, Codec, CodecError, Payload, ProcessError, Processor, Record, RuntimeConfig,
    dlq::DeadLetter,
    merge::Merger,
    metrics::Metrics,
    step::{self, Outcome},
    task::{Env, Output, TIMERS_STORE, TaskState, partition_for},
    watermark,
};

/// Why the engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Another instance with the same transactional id took over, or the group moved on.
    #[error("fenced: {0}")]
    Fenced(String),
    /// Kafka answered with an error that cannot be recovered from.
    #[error("fatal Kafka error: {0}")]
    Kafka(String),
    /// The processor failed in a way that is not a rejected record.
    #[error("processor error: {0}")]
    Processor(String),
    /// The configuration or the topics are not usable.
    #[error("{0}")]
    Setup(String),
}

/// What to do after a failed step of a transaction.
enum Failure {
    /// Abort, rewind to the committed offsets, go on.
    Abort(String),
    /// Stop the process.
    Stop(EngineError),
}

/// Seeks every partition of `committed` back to its committed offset (the beginning when
/// none). A seek that fails stops the instance: going on from the fetch position would pass
/// over records whose effects the abort just discarded.
fn seek_back(
    committed: &TopicPartitionList,
    mut seek: impl FnMut(&str, i32, Offset) -> Result<(), KafkaError>,
) -> Result<(), EngineError> {
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        seek(element.topic(), element.partition(), offset).map_err(|error| {
            EngineError::Kafka(format!(
                "rewinding {}[{}] to {offset:?} after an abort failed: {error}",
                element.topic(),
                element.partition()
            ))
        })?;
    }
    Ok(())
}

fn classify(error: &KafkaError) -> Failure {
    if let Some(code) = error.rdkafka_error_code()
        && matches!(
            code,
            ErrorCode::Fenced | ErrorCode::ProducerFenced | ErrorCode::InvalidProducerEpoch
        )
    {
        return Failure::Stop(EngineError::Fenced(error.to_string()));
    }
    match error {
        KafkaError::Transaction(e) if e.is_fatal() => {
            if matches!(e.code(), ErrorCode::Fenced | ErrorCode::ProducerFenced) {
                Failure::Stop(EngineError::Fenced(e.to_string()))
            } else {
                Failure::Stop(EngineError::Kafka(e.to_string()))
            }
        }
        other => Failure::Abort(other.to_string()),
    }
}

/// A record to produce, encoded.
#[derive(Debug)]
struct Encoded {
    topic: String,
    partition: i32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}

/// A consumed record waiting in its partition's merger. The decoded record and the dead
/// letter are boxed: a merger buffers thousands of these in a burst, most of them records
/// passed over, and an unboxed decoded event made every entry ~600 bytes to move on growth.
enum Pending<V> {
    Decoded {
        record: Box<Record<V>>,
        raw: (Option<Vec<u8>>, Option<Vec<u8>>),
    },
    Undecodable(Box<DeadLetter>),
    /// A record of a type the processor does not read: its offset moves on, nothing else.
    Passed {
        input: usize,
        offset: i64,
    },
}

/// The uncommitted work since the last commit.
#[derive(Default)]
struct Batch {
    produce: Vec<Encoded>,
    offsets: BTreeMap<(String, i32), i64>,
    records: usize,
    records_in: BTreeMap<String, u64>,
    passed: BTreeMap<String, u64>,
    dead_letters: BTreeMap<String, u64>,
    timers: u64,
    occurred: Vec<DateTime<Utc>>,
    started: Option<Instant>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.produce.is_empty() && self.offsets.is_empty() && self.started.is_none()
    }

    fn touch(&mut self) {
        _ = self.started.get_or_insert_with(Instant::now);
    }

    /// Whether the batch is to be committed before anything more goes in: it has been open
    /// `commit_interval` or holds `commit_max_records`. A long pass (a burst of records, or
    /// of timers) is cut here, so no record waits much beyond the interval for its commit.
    fn is_full(&self, config: &RuntimeConfig) -> bool {
        self.records >= config.commit_max_records
            || self
                .started
                .is_some_and(|s| s.elapsed() >= config.commit_interval())
    }
}

/// One partition number of the inputs: its state and its buffered records.
struct Task<V> {
    state: TaskState,
    merger: Merger<Pending<V>>,
}

enum Rebalanced {
    Revoked,
    Assigned(Vec<i32>),
}

/// Consumer callbacks: rebalances are queued for the loop, lag goes to the metrics.
struct EngineContext {
    events: Mutex<Vec<Rebalanced>>,
    metrics: Metrics,
    inputs: Vec<String>,
}

impl ClientContext for EngineContext {
    fn stats(&self, statistics: Statistics) {
        self.metrics.record_lag(&statistics, &self.inputs);
    }
}

impl ConsumerContext for EngineContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            self.events
                .lock()
                .expect("events lock")
                .push(Rebalanced::Revoked);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions: BTreeSet<i32> =
                    list.elements().iter().map(|e| e.partition()).collect();
                self.events
                    .lock()
                    .expect("events lock")
                    .push(Rebalanced::Assigned(partitions.into_iter().collect()));
            }
            Rebalance::Error(error) => warn!(%error, "Rebalance failed."),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// The restore consumer's callbacks: reaching a partition's end is expected, not an error.
struct RestoreContext;

impl ClientContext for RestoreContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let end_of_partition = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !end_of_partition {
            warn!(%error, reason, "Restore consumer error.");
        }
    }
}

impl ConsumerContext for RestoreContext {}

/// A processor with its codec, configuration and clock, ready to run.
pub struct Engine<P: Processor, C> {
    processor: P,
    codec: C,
    config: RuntimeConfig,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    shutdown: Arc<AtomicBool>,
    handle: tokio::runtime::Handle,
    topology: Topology,
}

impl<P, C> Engine<P, C>
where
    P: Processor,
    C: Codec<In = P::In, Out = P::Out>,
{
    /// An engine on the wall clock, with its own metrics, stopped by [`Engine::shutdown_flag`].
    /// Registry and admin calls run on `handle`.
    pub fn new(
        processor: P,
        codec: C,
        config: RuntimeConfig,
        handle: tokio::runtime::Handle,
    ) -> Self {
        Self {
            metrics: Metrics::new(processor.name()),
            processor,
            codec,
            config,
            clock: Arc::new(crate::SystemClock),
            shutdown: Arc::new(AtomicBool::new(false)),
            handle,
            topology: Topology::embedded(),
        }
    }

    /// Runs timers on `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Reports to `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Setting this flag makes [`Engine::run`] commit its open batch and return.
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }

    /// The input topics: configured, or those `topics.yaml` names this processor a reader of.
    pub fn inputs(&self) -> Vec<String> {
        if self.config.inputs.is_empty() {
            self.topology.inputs_of(self.processor.name())
        } else {
            self.config.inputs.clone()
        }
    }

    /// The record types the processor reads, when its inputs come from `topics.yaml`
    /// (records of other types on those topics are passed over undecoded); `None` when
    /// the inputs are configured, and every record is decoded.
    pub fn reads(&self) -> Option<HashSet<String>> {
        self.config.inputs.is_empty().then(|| {
            self.topology
                .records_read_by(self.processor.name())
                .into_iter()
                .collect()
        })
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        _ = config.set("bootstrap.servers", &self.config.bootstrap_servers);
        config
    }

    fn with_passthrough(&self, mut config: ClientConfig) -> ClientConfig {
        self.config.kafka.apply(&mut config);
        config
    }

    /// Runs until SIGTERM (returns `Ok`) or a fatal error.
    pub fn run(self) -> Result<(), EngineError> {
        let name = self.processor.name().to_owned();
        let inputs = self.inputs();
        if inputs.is_empty() {
            return Err(EngineError::Setup(format!(
                "{name} has no input topics: set `inputs` or name it a reader in topics.yaml"
            )));
        }
        let group = self.config.group_id.clone().unwrap_or_else(|| name.clone());
        let context = EngineContext {
            events: Mutex::new(Vec::new()),
            metrics: self.metrics.clone(),
            inputs: inputs.clone(),
        };
        let mut consumer_config = self.client_config();
        _ = consumer_config
            .set("group.id", &group)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set(
                "session.timeout.ms",
                self.config.session_timeout_ms.to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (self.config.session_timeout_ms / 3).min(3_000).to_string(),
            )
            .set("fetch.wait.max.ms", "100")
            .set("statistics.interval.ms", "5000");
        if self.config.static_membership {
            _ = consumer_config.set(
                "group.instance.id",
                format!("{name}-{}", self.config.instance_id),
            );
        }
        let consumer: BaseConsumer<EngineContext> = self
            .with_passthrough(consumer_config)
            .create_with_context(context)
            .map_err(|e| EngineError::Setup(format!("consumer: {e}")))?;

        let mut producer_config = self.client_config();
        _ = producer_config
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("retry.backoff.ms", "10")
            .set("retry.backoff.max.ms", "100")
            .set(
                "transaction.timeout.ms",
                self.config.transaction_timeout_ms.to_string(),
            );
        if self.config.exactly_once {
            let transactional_id = format!("{name}-{}", self.config.instance_id);
            _ = producer_config.set("transactional.id", &transactional_id);
        }
        let producer: ThreadedProducer<_> = self
            .with_passthrough(producer_config)
            .create()
            .map_err(|e| EngineError::Setup(format!("producer: {e}")))?;
        let timeout = Duration::from_millis(self.config.transaction_timeout_ms);
        if self.config.exactly_once {
            producer
                .init_transactions(timeout)
                .map_err(|e| match classify(&e) {
                    Failure::Stop(stop) => stop,
                    Failure::Abort(msg) => EngineError::Kafka(format!("init transactions: {msg}")),
                })?;
        }

        let mut restore_config = self.client_config();
        _ = restore_config
            .set("group.id", format!("{group}-restore"))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "50");
        let restorer: BaseConsumer<RestoreContext> = self
            .with_passthrough(restore_config)
            .create_with_context(RestoreContext)
            .map_err(|e| EngineError::Setup(format!("restore consumer: {e}")))?;

        let mut partitions = HashMap::new();
        let input_partitions = topic_partitions(&consumer, &mut partitions, &inputs[0])?;
        for input in &inputs[1..] {
            let count = topic_partitions(&consumer, &mut partitions, input)?;
            if count != input_partitions {
                return Err(EngineError::Setup(format!(
                    "inputs must have the same partition count: {} has {input_partitions}, {input} has {count}",
                    inputs[0]
                )));
            }
        }
        if self.config.create_internal_topics {
            self.create_internal_topics(input_partitions)?;
        }

        consumer
            .subscribe(&inputs.iter().map(String::as_str).collect::<Vec<_>>())
            .map_err(|e| EngineError::Setup(format!("subscribe: {e}")))?;
        info!(processor = %name, group = %group, inputs = ?inputs, exactly_once = self.config.exactly_once, "Processor started.");
        self.metrics.set_ready(true);

        let mut running = Running {
            engine: &self,
            consumer,
            producer,
            restorer,
            reads: self.reads(),
            inputs,
            partitions,
            tasks: BTreeMap::new(),
            starts: HashMap::new(),
            ends: watermark::StableEnds::default(),
            batch: Batch::default(),
            paused: BTreeSet::new(),
        };
        let outcome = running.run_loop();
        running.close(outcome.is_ok());
        outcome
    }

    fn changelog(&self, store: &str) -> String {
        self.topology.changelog_topic(self.processor.name(), store)
    }

    fn dead_letter_topic(&self) -> String {
        self.topology.dead_letter_topic(self.processor.name())
    }

    fn create_internal_topics(&self, partitions: i32) -> Result<(), EngineError> {
        let name = self.processor.name();
        let env = &self.config.environment;
        let setup = |e: contracts::topology::TopologyError| EngineError::Setup(e.to_string());
        let mut specs: Vec<TopicSpec> = Vec::new();
        for store in self.processor.stores().into_iter().chain([TIMERS_STORE]) {
            specs.push(
                self.topology
                    .changelog_spec(name, store, env)
                    .map_err(setup)?,
            );
        }
        specs.push(self.topology.dead_letter_spec(name, env).map_err(setup)?);
        let admin: AdminClient<DefaultClientContext> = self
            .with_passthrough(self.client_config())
            .create()
            .map_err(|e| EngineError::Setup(format!("admin client: {e}")))?;
        let topics: Vec<_> = specs
            .iter()
            .map(|spec| {
                let mut topic = NewTopic::new(
                    &spec.name,
                    partitions.max(spec.partitions),
                    TopicReplication::Fixed(spec.replication_factor),
                );
                for (key, value) in &spec.config {
                    topic = topic.set(key, value);
                }
                topic
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self
            .handle
            .block_on(admin.create_topics(&topics, &options))
            .map_err(|e| EngineError::Setup(format!("create internal topics: {e}")))?;
        for result in results {
            match result {
                Ok(topic) => info!(%topic, "Internal topic created."),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(EngineError::Setup(format!("create {topic}: {code}")));
                }
            }
        }
        Ok(())
    }
}

fn topic_partitions<X: ConsumerContext>(
    consumer: &BaseConsumer<X>,
    cache: &mut HashMap<String, i32>,
    topic: &str,
) -> Result<i32, EngineError> {
    if let Some(count) = cache.get(topic) {
        return Ok(*count);
    }
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| EngineError::Setup(format!("metadata of {topic}: {e}")))?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            EngineError::Setup(format!(
                "topic {topic} does not exist; create it (habitat topics apply)"
            ))
        })?;
    let count = i32::try_from(count).unwrap_or(i32::MAX);
    _ = cache.insert(topic.to_owned(), count);
    Ok(count)
}

/// The engine's moving parts while it runs.
struct Running<'e, P: Processor, C> {
    engine: &'e Engine<P, C>,
    consumer: BaseConsumer<EngineContext>,
    producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    /// Restores stores from their changelogs; between restores, asks the broker where
    /// inputs end (its own connection: no wait behind the main consumer's fetch).
    restorer: BaseConsumer<RestoreContext>,
    inputs: Vec<String>,
    /// The record types the processor reads (`None`: every record is decoded).
    reads: Option<HashSet<String>>,
    partitions: HashMap<String, i32>,
    tasks: BTreeMap<i32, Task<P::In>>,
    /// The committed offset of each input partition when it was assigned: where reading
    /// starts, until the client reports a position.
    starts: HashMap<(String, i32), i64>,
    /// The inputs' last stable offsets as the broker last gave them.
    ends: watermark::StableEnds,
    batch: Batch,
    paused: BTreeSet<(String, i32)>,
}

impl<P, C> Running<'_, P, C>
where
    P: Processor,
    C: Codec<In = P::In, Out = P::Out>,
{
    fn env(&self) -> Env {
        Env {
            processor: self.engine.processor.name().to_owned(),
            stores: self.engine.processor.stores(),
            timers: self.engine.processor.timers(),
            now: self.engine.clock.now(),
        }
    }

    fn run_loop(&mut self) -> Result<(), EngineError> {
        let config = &self.engine.config;
        let max_poll = 2_000;
        let idle = config.commit_idle();
        let mut last_input = Instant::now();
        while !self.engine.shutdown.load(Ordering::SeqCst) {
            let buffered = self.tasks.values().any(|t| !t.merger.is_empty());
            let mut wait = if buffered || !self.batch.is_empty() {
                Duration::from_millis(5)
            } else {
                Duration::from_millis(100)
            };
            let mut received = false;
            for _ in 0..max_poll {
                let polled = self.consumer.poll(wait);
                let rebalanced = !self
                    .consumer
                    .context()
                    .events
                    .lock()
                    .expect("events lock")
                    .is_empty();
                let accepted = match polled {
                    None => {
                        self.handle_rebalances()?;
                        break;
                    }
                    // A rebalance in this poll may have assigned the record's partition:
                    // open it first (the record is copied out of the client's buffer).
                    Some(Ok(message)) if rebalanced => {
                        let message = message.detach();
                        self.handle_rebalances()?;
                        accept(
                            self.engine,
                            &self.inputs,
                            self.reads.as_ref(),
                            &mut self.tasks,
                            &message,
                        )
                    }
                    // Read in place, in the client's buffer.
                    Some(Ok(message)) => accept(
                        self.engine,
                        &self.inputs,
                        self.reads.as_ref(),
                        &mut self.tasks,
                        &message,
                    ),
                    Some(Err(error)) => {
                        self.handle_rebalances()?;
                        Err(error)
                    }
                };
                match accepted {
                    Ok(Accepted::Buffered) => received = true,
                    Ok(Accepted::RegistryUnavailable(reason)) => {
                        // Not the record's fault: try again from the committed offsets.
                        warn!(%reason, "Schema registry unavailable; will retry.");
                        std::thread::sleep(Duration::from_millis(500));
                        self.fail(Failure::Abort(reason))?;
                    }
                    Ok(Accepted::RegistryRefused(reason)) => {
                        return Err(EngineError::Setup(format!(
                            "the schema registry refused the credentials: {reason}"
                        )));
                    }
                    Err(KafkaError::PartitionEOF(_)) => {}
                    Err(error) => {
                        if let KafkaError::MessageConsumptionFatal(code) = error {
                            return Err(if code == RDKafkaErrorCode::FencedInstanceId {
                                EngineError::Fenced(format!(
                                    "another instance joined the group as {}: {error}",
                                    self.engine.config.instance_id
                                ))
                            } else {
                                EngineError::Kafka(error.to_string())
                            });
                        }
                        warn!(%error, "Consumer error.");
                    }
                }
                wait = Duration::ZERO;
            }
            if received {
                last_input = Instant::now();
            }
            if let Err(failure) = self.process_ready().and_then(|()| self.fire_timers()) {
                self.fail(failure)?;
                continue;
            }
            let caught_up = !idle.is_zero() && last_input.elapsed() >= idle;
            let due = (caught_up && self.batch.started.is_some()) || self.batch.is_full(config);
            if due && let Err(failure) = self.commit() {
                self.fail(failure)?;
            }
            self.apply_backpressure();
        }
        info!("Shutting down: committing the open batch.");
        self.commit().or_else(|failure| self.fail(failure))
    }

    /// Handles a failed step: stops, or aborts and rewinds.
    fn fail(&mut self, failure: Failure) -> Result<(), EngineError> {
        match failure {
            Failure::Stop(error) => Err(error),
            Failure::Abort(reason) => {
                warn!(%reason, "Transaction aborted; rewinding to the committed offsets.");
                self.engine
                    .metrics
                    .transactions
                    .with_label_values(&["aborted"])
                    .inc();
                self.rewind()
            }
        }
    }

    fn close(&mut self, clean: bool) {
        self.engine.metrics.set_ready(false);
        if clean {
            self.consumer.unsubscribe();
        }
        info!(clean, "Processor stopped.");
    }

    fn handle_rebalances(&mut self) -> Result<(), EngineError> {
        let events =
            std::mem::take(&mut *self.consumer.context().events.lock().expect("events lock"));
        for event in events {
            match event {
                Rebalanced::Revoked => {
                    if !self.batch.is_empty() {
                        info!(
                            "Partitions revoked: the uncommitted batch is left to their next owner."
                        );
                    }
                    self.batch = Batch::default();
                    self.tasks.clear();
                    self.paused.clear();
                    self.ends.clear();
                    self.engine.metrics.assigned_partitions.set(0);
                }
                Rebalanced::Assigned(partitions) => {
                    let fresh: Vec<i32> = partitions
                        .iter()
                        .copied()
                        .filter(|p| !self.tasks.contains_key(p))
                        .collect();
                    self.open_tasks(&fresh).map_err(|f| match f {
                        Failure::Stop(e) => e,
                        Failure::Abort(m) => EngineError::Kafka(m),
                    })?;
                    self.engine
                        .metrics
                        .assigned_partitions
                        .set(i64::try_from(self.tasks.len()).unwrap_or(i64::MAX));
                    info!(partitions = ?partitions, "Partitions assigned and restored.");
                }
            }
        }
        Ok(())
    }

    /// Restores the stores of `partitions` and announces them to the processor.
    fn open_tasks(&mut self, partitions: &[i32]) -> Result<(), Failure> {
        if partitions.is_empty() {
            return Ok(());
        }
        self.engine.metrics.set_ready(false);
        let mut states: BTreeMap<i32, TaskState> = partitions
            .iter()
            .map(|p| (*p, TaskState::new(*p, &self.engine.processor.stores())))
            .collect();
        let stores: Vec<&str> = self
            .engine
            .processor
            .stores()
            .into_iter()
            .chain([TIMERS_STORE])
            .collect();
        for store in stores {
            self.restore_store(store, &mut states)?;
        }
        let env = self.env();
        for (partition, mut state) in states {
            let outputs = step::assigned(&self.engine.processor, &mut state, &env)
                .map_err(|e| Failure::Stop(EngineError::Processor(e.to_string())))?;
            self.emit(outputs)?;
            let merger = Merger::new(self.inputs.len());
            _ = self.tasks.insert(partition, Task { state, merger });
        }
        self.read_starts(partitions)?;
        self.engine.metrics.set_ready(true);
        Ok(())
    }

    /// Records where reading starts in each input partition of `partitions`.
    fn read_starts(&mut self, partitions: &[i32]) -> Result<(), Failure> {
        let mut list = TopicPartitionList::new();
        for topic in &self.inputs {
            for partition in partitions {
                list.add_partition(topic, *partition);
            }
        }
        let committed = self
            .consumer
            .committed_offsets(list, Duration::from_secs(10))
            .map_err(|e| Failure::Abort(format!("committed offsets: {e}")))?;
        for element in committed.elements() {
            let key = (element.topic().to_owned(), element.partition());
            match element.offset() {
                Offset::Offset(offset) => _ = self.starts.insert(key, offset),
                _ => _ = self.starts.remove(&key),
            }
        }
        Ok(())
    }

    /// Reads a store's changelog partitions from the beginning to their end. The end is
    /// the client's end-of-partition event, which comes after the last transaction marker,
    /// so a changelog ending in a marker does not hold the restore up.
    fn restore_store(
        &mut self,
        store: &str,
        states: &mut BTreeMap<i32, TaskState>,
    ) -> Result<(), Failure> {
        let started = Instant::now();
        let topic = self.engine.changelog(store);
        let mut list = TopicPartitionList::new();
        for partition in states.keys() {
            list.add_partition_offset(&topic, *partition, Offset::Beginning)
                .map_err(|e| Failure::Stop(EngineError::Kafka(e.to_string())))?;
        }
        self.restorer
            .assign(&list)
            .map_err(|e| Failure::Stop(EngineError::Kafka(format!("assign {topic}: {e}"))))?;
        let mut remaining: BTreeSet<i32> = states.keys().copied().collect();
        let deadline = started + Duration::from_millis(self.engine.config.restore_timeout_ms);
        let mut restored = 0_u64;
        while !remaining.is_empty() {
            if Instant::now() > deadline {
                return Err(Failure::Stop(EngineError::Kafka(format!(
                    "restoring {topic} partitions {remaining:?} took longer than {} ms",
                    self.engine.config.restore_timeout_ms
                ))));
            }
            match self.restorer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(message)) => {
                    let Some(state) = states.get_mut(&message.partition()) else {
                        continue;
                    };
                    let key =
                        String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
                    state.restore(store, key, message.payload().map(<[u8]>::to_vec));
                    restored += 1;
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => _ = remaining.remove(&partition),
                Some(Err(error)) => warn!(%error, %topic, "Restore consumer error."),
            }
        }
        self.restorer
            .unassign()
            .map_err(|e| Failure::Stop(EngineError::Kafka(e.to_string())))?;
        let seconds = started.elapsed().as_secs_f64();
        self.engine
            .metrics
            .restore_seconds
            .with_label_values(&[store])
            .observe(seconds);
        debug!(%topic, restored, seconds, "Store restored.");
        Ok(())
    }

    /// Runs the processor over every record its partition's merge order allows.
    fn process_ready(&mut self) -> Result<(), Failure> {
        let now = Instant::now();
        let idle = self.engine.config.max_task_idle();
        // One view of the processor and the clock per pass, not per record.
        let env = self.env();
        // The client's positions, read once per pass and only if a merge waits on an input.
        let mut positions: Option<TopicPartitionList> = None;
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for &partition in &partitions {
            loop {
                if self.batch.is_full(&self.engine.config) {
                    return Ok(());
                }
                let Some(task) = self.tasks.get_mut(&partition) else {
                    break;
                };
                let (consumer, inputs, starts) = (&self.consumer, &self.inputs, &self.starts);
                let (assigned, ends, asker) = (&partitions, &mut self.ends, &self.restorer);
                let caught_up = |input: usize| {
                    let topic = &inputs[input];
                    let positions = positions.get_or_insert_with(|| {
                        watermark::positions(consumer, inputs, assigned.iter().copied())
                    });
                    let start = starts.get(&(topic.clone(), partition)).copied();
                    ends.caught_up(consumer, asker, positions, start, topic, partition)
                };
                let Some(pending) = task.merger.pop(now, idle, caught_up) else {
                    break;
                };
                self.batch.touch();
                let (topic, offset) = match pending {
                    Pending::Decoded { record, raw } => {
                        let trace = record.value.as_ref().and_then(Payload::trace);
                        let span = info_span!(
                            "record",
                            topic = %record.topic,
                            partition,
                            offset = record.offset,
                            tenant = trace.as_ref().map(|t| t.tenant_id.as_str()),
                            event_id = trace.as_ref().map(|t| t.event_id.as_str()),
                            correlation_id = trace.as_ref().map(|t| t.correlation_id.as_str()),
                        );
                        let _entered = span.enter();
                        let task = self.tasks.get_mut(&partition).expect("task present");
                        let outcome = step::record(
                            &self.engine.processor,
                            &mut task.state,
                            &env,
                            &record,
                            raw,
                        )
                        .map_err(|e| Failure::Stop(EngineError::Processor(e.to_string())))?;
                        self.batch
                            .occurred
                            .push(trace.map_or(record.timestamp, |t| t.occurred_at));
                        self.settle(outcome)?;
                        (record.topic, record.offset)
                    }
                    Pending::Undecodable(letter) => {
                        let position = (letter.source_topic.clone(), letter.source_offset);
                        self.dead_letter(*letter)?;
                        position
                    }
                    Pending::Passed { input, offset } => {
                        let topic = self.inputs[input].clone();
                        *self.batch.passed.entry(topic.clone()).or_default() += 1;
                        (topic, offset)
                    }
                };
                *self.batch.records_in.entry(topic.clone()).or_default() += 1;
                self.batch.records += 1;
                _ = self.batch.offsets.insert((topic, partition), offset + 1);
            }
        }
        Ok(())
    }

    fn fire_timers(&mut self) -> Result<(), Failure> {
        let env = self.env();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for partition in partitions {
            let due = self.tasks[&partition].state.due_timers(env.now);
            for timer in due {
                if self.batch.is_full(&self.engine.config) {
                    // The rest fire after this batch's commit.
                    return Ok(());
                }
                self.batch.touch();
                let task = self.tasks.get_mut(&partition).expect("task present");
                let outcome = step::timer(&self.engine.processor, &mut task.state, &env, &timer)
                    .map_err(|e| Failure::Stop(EngineError::Processor(e.to_string())))?;
                debug!(timer = %timer.name, key = %timer.key, partition, "Timer fired.");
                self.batch.timers += 1;
                self.settle(outcome)?;
            }
        }
        Ok(())
    }

    fn settle(&mut self, outcome: Outcome<P::Out>) -> Result<(), Failure> {
        match outcome {
            Outcome::Emitted(outputs) => self.emit(outputs),
            Outcome::DeadLettered(letter) => self.dead_letter(letter),
        }
    }

    fn emit(&mut self, outputs: Vec<Output<P::Out>>) -> Result<(), Failure> {
        for output in outputs {
            let partitions = topic_partitions(&self.consumer, &mut self.partitions, &output.topic)
                .map_err(Failure::Stop)?;
            let value = match &output.value {
                None => None,
                Some(value) => Some(self.engine.codec.encode(&output.topic, value).map_err(
                    |e| match e {
                        CodecError::Unavailable(reason) => Failure::Abort(reason),
                        CodecError::Unauthorized(reason) => {
                            Failure::Stop(EngineError::Setup(reason))
                        }
                        other => Failure::Stop(EngineError::Processor(other.to_string())),
                    },
                )?),
            };
            self.batch.produce.push(Encoded {
                partition: partition_for(&output.key, partitions),
                key: Some(output.key.into_bytes()),
                topic: output.topic,
                value,
                headers: output.headers,
            });
        }
        Ok(())
    }

    fn dead_letter(&mut self, letter: DeadLetter) -> Result<(), Failure> {
        warn!(
            topic = %letter.source_topic,
            partition = letter.source_partition,
            offset = letter.source_offset,
            class = %letter.class,
            error = %letter.message,
            "Record dead-lettered."
        );
        let topic = self.engine.dead_letter_topic();
        let partitions = topic_partitions(&self.consumer, &mut self.partitions, &topic)
            .map_err(Failure::Stop)?;
        *self
            .batch
            .dead_letters
            .entry(letter.class.clone())
            .or_default() += 1;
        self.batch.produce.push(Encoded {
            partition: letter.source_partition.rem_euclid(partitions),
            headers: letter.headers(),
            topic,
            key: letter.key,
            value: letter.value,
        });
        Ok(())
    }

    /// Commits the batch: one transaction with its outputs, changelog records, dead
    /// letters and input offsets.
    fn commit(&mut self) -> Result<(), Failure> {
        let mut changelog = Vec::new();
        for task in self.tasks.values_mut() {
            for (store, key, value) in task.state.take_dirty() {
                changelog.push(Encoded {
                    topic: self.engine.changelog(&store),
                    partition: task.state.partition(),
                    key: Some(key.into_bytes()),
                    value,
                    headers: Vec::new(),
                });
            }
        }
        if self.batch.is_empty() && changelog.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let timeout = Duration::from_millis(self.engine.config.transaction_timeout_ms);
        let exactly_once = self.engine.config.exactly_once;
        if exactly_once {
            self.producer
                .begin_transaction()
                .map_err(|e| classify(&e))?;
        }
        let batch = std::mem::take(&mut self.batch);
        let mut out_by_topic: BTreeMap<&str, u64> = BTreeMap::new();
        for record in batch.produce.iter().chain(&changelog) {
            self.send(record).map_err(|e| classify(&e))?;
            *out_by_topic.entry(record.topic.as_str()).or_default() += 1;
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &batch.offsets {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| classify(&e))?;
        }
        if exactly_once {
            let group = self
                .consumer
                .group_metadata()
                .ok_or_else(|| Failure::Abort("no consumer group metadata".to_owned()))?;
            if offsets.count() > 0 {
                retry(|| {
                    self.producer
                        .send_offsets_to_transaction(&offsets, &group, timeout)
                })
                .map_err(|e| classify(&e))?;
            }
            // rdkafka's commit_transaction first calls its own flush, which waits in steps
            // of 100 ms while anything is in flight: settled here first, it returns at once.
            self.settle_in_flight(timeout)?;
            retry(|| self.producer.commit_transaction(timeout)).map_err(|e| classify(&e))?;
        } else {
            self.settle_in_flight(timeout)?;
            if offsets.count() > 0 {
                self.consumer
                    .commit(&offsets, CommitMode::Sync)
                    .map_err(|e| classify(&e))?;
            }
        }
        let metrics = &self.engine.metrics;
        debug!(
            records = batch.records,
            produced = batch.produce.len(),
            "Transaction committed."
        );
        metrics
            .commit_latency
            .observe(started.elapsed().as_secs_f64());
        metrics.transactions.with_label_values(&["committed"]).inc();
        for (topic, n) in &batch.records_in {
            metrics
                .records_in
                .with_label_values(&[topic.as_str()])
                .inc_by(*n);
        }
        for (topic, n) in &batch.passed {
            metrics
                .records_passed
                .with_label_values(&[topic.as_str()])
                .inc_by(*n);
        }
        for (topic, n) in out_by_topic {
            metrics.records_out.with_label_values(&[topic]).inc_by(n);
        }
        for (class, n) in &batch.dead_letters {
            metrics
                .dead_letters
                .with_label_values(&[class.as_str()])
                .inc_by(*n);
        }
        metrics.timers_fired.inc_by(batch.timers);
        let now = Utc::now();
        for occurred in &batch.occurred {
            let seconds = (now - *occurred).num_microseconds().unwrap_or(0) as f64 / 1e6;
            metrics.end_to_end_latency.observe(seconds.max(0.0));
        }
        for store in self
            .engine
            .processor
            .stores()
            .into_iter()
            .chain([TIMERS_STORE])
        {
            let entries: usize = self.tasks.values().map(|t| t.state.len(store)).sum();
            metrics
                .store_entries
                .with_label_values(&[store])
                .set(i64::try_from(entries).unwrap_or(i64::MAX));
        }
        Ok(())
    }

    /// Waits until every produced record is acknowledged (not rdkafka's `flush`, which
    /// polls in 100 ms steps and would put up to 100 ms into every batch; the producer's
    /// own thread serves the callbacks).
    fn settle_in_flight(&self, timeout: Duration) -> Result<(), Failure> {
        crate::waits::settled(&self.producer, timeout)
            .map_err(|_| classify(&KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)))
    }

    fn send(&self, record: &Encoded) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut base = BaseRecord::<[u8], [u8]>::to(&record.topic)
            .partition(record.partition)
            .headers(headers);
        if let Some(key) = &record.key {
            base = base.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            base = base.payload(value.as_slice());
        }
        loop {
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    base = back;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// After an abort: drop every uncommitted effect, seek back to the committed offsets
    /// and restore the stores from their changelogs.
    fn rewind(&mut self) -> Result<(), EngineError> {
        if self.engine.config.exactly_once
            && let Err(error) = self.producer.abort_transaction(Duration::from_millis(
                self.engine.config.transaction_timeout_ms,
            ))
        {
            // Nothing was open, or it is already aborted; a fatal state shows on the next begin.
            debug!(%error, "Abort answered an error.");
        }
        self.batch = Batch::default();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        self.tasks.clear();
        let committed = self
            .consumer
            .committed(Duration::from_secs(10))
            .map_err(|e| EngineError::Kafka(format!("committed offsets: {e}")))?;
        seek_back(&committed, |topic, partition, offset| {
            self.consumer
                .seek(topic, partition, offset, Duration::from_secs(10))
        })?;
        self.open_tasks(&partitions).map_err(|f| match f {
            Failure::Stop(e) => e,
            Failure::Abort(m) => EngineError::Kafka(m),
        })
    }

    /// Pauses fetching partitions whose buffer is full; resumes them when drained.
    fn apply_backpressure(&mut self) {
        let limit = self.engine.config.max_buffered_records;
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        for (partition, task) in &self.tasks {
            for (i, topic) in self.inputs.iter().enumerate() {
                let key = (topic.clone(), *partition);
                let buffered = task.merger.buffered(i);
                if buffered >= limit && !self.paused.contains(&key) {
                    pause.add_partition(topic, *partition);
                    _ = self.paused.insert(key);
                } else if buffered < limit / 2 && self.paused.remove(&key) {
                    resume.add_partition(topic, *partition);
                }
            }
        }
        if pause.count() > 0
            && let Err(error) = self.consumer.pause(&pause)
        {
            warn!(%error, "Pause failed.");
        }
        if resume.count() > 0
            && let Err(error) = self.consumer.resume(&resume)
        {
            warn!(%error, "Resume failed.");
        }
    }
}

/// What became of a consumed record.
enum Accepted {
    /// Buffered in its partition's merger (or dropped: not an input, or not assigned).
    Buffered,
    /// The registry could not be asked about its schema: the batch must be retried.
    RegistryUnavailable(String),
    /// The registry refused our credentials: the instance stops.
    RegistryRefused(String),
}

/// Buffers a consumed record in its partition's merger: decoded, passed over (a type the
/// processor does not read), or as a dead letter when it cannot be decoded.
fn accept<P, C>(
    engine: &Engine<P, C>,
    inputs: &[String],
    reads: Option<&HashSet<String>>,
    tasks: &mut BTreeMap<i32, Task<P::In>>,
    message: &impl Message,
) -> Result<Accepted, KafkaError>
where
    P: Processor,
    C: Codec<In = P::In, Out = P::Out>,
{
    let topic = message.topic();
    let partition = message.partition();
    let offset = message.offset();
    let Some(input) = inputs.iter().position(|t| t == topic) else {
        return Ok(Accepted::Buffered);
    };
    let Some(task) = tasks.get_mut(&partition) else {
        debug!(%topic, partition, "Record of a partition not assigned; dropped.");
        return Ok(Accepted::Buffered);
    };
    let timestamp = message
        .timestamp()
        .to_millis()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_else(Utc::now);
    if let (Some(reads), Some(bytes)) = (reads, message.payload())
        && !engine.codec.is_read(bytes, reads)
    {
        task.merger
            .push(input, timestamp, offset, Pending::Passed { input, offset });
        return Ok(Accepted::Buffered);
    }
    let raw_key = message.key().map(<[u8]>::to_vec);
    let value = match message.payload() {
        None => Ok(None),
        Some(bytes) => engine.codec.decode(topic, bytes).map(Some),
    };
    let pending = match value {
        Ok(value) => Pending::Decoded {
            record: Box::new(Record {
                topic: topic.to_owned(),
                partition,
                offset,
                timestamp,
                key: raw_key
                    .as_deref()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                value,
                headers: headers_of(message),
            }),
            raw: (raw_key, message.payload().map(<[u8]>::to_vec)),
        },
        Err(CodecError::Unavailable(reason)) => return Ok(Accepted::RegistryUnavailable(reason)),
        Err(CodecError::Unauthorized(reason)) => return Ok(Accepted::RegistryRefused(reason)),
        Err(error) => Pending::Undecodable(Box::new(DeadLetter::undecodable(
            (topic, partition, offset),
            engine.processor.name(),
            &error,
            engine.clock.now(),
            raw_key,
            message.payload().map(<[u8]>::to_vec),
        ))),
    };
    task.merger.push(input, timestamp, offset, pending);
    Ok(Accepted::Buffered)
}

/// The headers of a consumed record, as (name, value) pairs.
pub fn headers_of(message: &impl Message) -> Vec<(String, Vec<u8>)> {
    message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

/// Retries a transactional call while Kafka calls its error retriable.
fn retry(mut call: impl FnMut() -> Result<(), KafkaError>) -> Result<(), KafkaError> {
    let mut attempts = 0;
    loop {
        match call() {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempts < 5 => {
                attempts += 1;
                warn!(error = %e, attempts, "Retrying a transactional call.");
            }
            other => return other,
        }
    }
}

/// Errors the processor returns that stop the engine.
impl From<ProcessError> for EngineError {
    fn from(error: ProcessError) -> Self {
        Self::Processor(error.to_string())
    }
}

/// Logs how the engine stopped.
pub fn report(outcome: &Result<(), EngineError>) {
    match outcome {
        Ok(()) => info!("Stopped cleanly."),
        Err(error) => error!(%error, "Stopped on an error."),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaErrorCode;

    use super::*;

    fn committed() -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset("in", 0, Offset::Offset(42))
            .expect("offset");
        list.add_partition_offset("in", 1, Offset::Invalid)
            .expect("offset");
        list.add_partition_offset("in", 2, Offset::Offset(7))
            .expect("offset");
        list
    }

    #[test]
    fn a_rewind_seeks_every_partition_to_its_committed_offset() {
        let mut seeks = Vec::new();
        seek_back(&committed(), |topic, partition, offset| {
            seeks.push((topic.to_owned(), partition, offset));
            Ok(())
        })
        .expect("rewound");
        assert_eq!(
            seeks,
            [
                ("in".to_owned(), 0, Offset::Offset(42)),
                ("in".to_owned(), 1, Offset::Beginning),
                ("in".to_owned(), 2, Offset::Offset(7)),
            ]
        );
    }

    #[test]
    fn a_seek_that_fails_after_an_abort_stops_the_instance() {
        let mut seeks = 0;
        let error = seek_back(&committed(), |_, partition, _| {
            seeks += 1;
            if partition == 1 {
                Err(KafkaError::Seek(RDKafkaErrorCode::State.to_string()))
            } else {
                Ok(())
            }
        })
        .expect_err("the failed seek stops it");
        assert_eq!(seeks, 2, "nothing after the failed seek");
        assert!(
            matches!(&error, EngineError::Kafka(m) if m.contains("in[1]") && m.contains("after an abort")),
            "{error}"
        );
    }
}
