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
//! processor (a partition's timers due on the clock fire before its next record) → fire
//! due timers → commit every `commit_interval` or `commit_max_records`,
//! or once no input has come for `commit_idle` (caught up: small batches when the stream is
//! quiet, full ones under load).
//! A transaction is open only inside the commit (`producer`), so a rebalance never lands in
//! the middle of one; on revocation the uncommitted batch is dropped and the new owner
//! redoes it from the committed offsets. An abortable error aborts and rewinds to the
//! committed offsets with the stores restored from their changelogs; a fatal one (being
//! fenced included) stops the process.
//!
//! Rooms: this module holds the [`Engine`] and its loop; `clients` the Kafka clients'
//! settings, callbacks and internal topics; `intake` decoding into the mergers and
//! backpressure; `rebalance` and `restore` what an assignment does; `process` the
//! processor and timers; `producer` the transaction (the only place it is touched) and the
//! rewind; `batch` the open batch; `error` how errors are classified.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{
        Arc,
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
    message::{Header, OwnedHeaders},
    producer::{BaseRecord, Producer},
    types::RDKafkaErrorCode as ErrorCode,
};
use tracing::{debug, error, info, info_span, warn};

use crate::{
    Clock, Codec, CodecError, Payload, ProcessError, Processor, Record, RuntimeConfig,
    dlq::DeadLetter,
    health::dependency,
    kafka::{BrokerWatch, IDLE_FETCH_WAIT_MS, headers_of},
    merge::Merger,
    metrics::Metrics,
    served::ServedProducer,
    step::{self, Outcome},
    task::{Env, Output, TIMERS_STORE, TaskState, partition_for},
    watermark,
};

mod batch;
mod clients;
mod error;
mod intake;
mod outage;
mod process;
mod producer;
mod rebalance;
mod restore;

use batch::{Batch, Encoded, Pending, Task};
use clients::{EngineContext, Rebalanced, RestoreContext, topic_partitions};
pub use error::{EngineError, report};
use error::{Failure, classify};
use intake::{Accepted, accept};

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
            events: crate::kafka::Rebalances::default(),
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
            // A fetch returns as soon as a transaction commits records it asks for (the
            // broker's long poll); the wait bounds only the polls of an idle input. 100 ms
            // had an idle stack's broker answering ten empty fetches a second per processor.
            .set("fetch.wait.max.ms", IDLE_FETCH_WAIT_MS)
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
        let producer = ServedProducer::create(
            &self.with_passthrough(producer_config),
            BrokerWatch {
                dependencies: self.metrics.dependencies.clone(),
            },
        )
        .map_err(|e| EngineError::Setup(format!("producer: {e}")))?;
        let timeout = Duration::from_millis(self.config.transaction_timeout_ms);
        if self.config.exactly_once {
            // The broker may not be up yet (or restarting): waited for, as any outage.
            self.config
                .retry_policy()
                .blocking(
                    "initialising transactions",
                    || producer.init_transactions(timeout),
                    |error| {
                        crate::kafka::is_transient(error)
                            || matches!(error, KafkaError::Transaction(e) if e.is_retriable())
                    },
                )
                .map_err(|e| match classify(&e) {
                    Failure::Stop(stop) => stop,
                    Failure::Abort(_) => EngineError::Kafka {
                        during: "initialising transactions".to_owned(),
                        source: e,
                    },
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
            .create_with_context(RestoreContext {
                metrics: self.metrics.clone(),
            })
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
            registry_backoff: None,
            last_probe: Instant::now(),
        };
        let outcome = running.run_loop();
        running.close(outcome.is_ok());
        outcome
    }
}

/// The engine's moving parts while it runs.
struct Running<'e, P: Processor, C> {
    engine: &'e Engine<P, C>,
    consumer: BaseConsumer<EngineContext>,
    producer: ServedProducer<BrokerWatch>,
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
    /// While the registry is unreachable: the delays before the next tries.
    registry_backoff: Option<crate::retry::Delays>,
    /// When the broker was last probed during an outage.
    last_probe: Instant,
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
                let rebalanced = self.consumer.context().events.pending();
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
                    Ok(Accepted::Buffered) => {
                        received = true;
                        self.registry_answered();
                        if self.engine.metrics.dependencies.is_down(dependency::BROKER) {
                            self.engine
                                .metrics
                                .dependencies
                                .reachable(dependency::BROKER);
                        }
                    }
                    Ok(Accepted::RegistryUnavailable {
                        reason,
                        topic,
                        partition,
                        offset,
                    }) => {
                        // Not the record's fault: read it again once the registry answers.
                        // Nothing of it was taken, so only its partition goes back to it;
                        // the batch and the stores stay as they are.
                        self.await_registry(&reason)?;
                        self.consumer
                            .seek(
                                &topic,
                                partition,
                                Offset::Offset(offset),
                                Duration::from_secs(10),
                            )
                            .map_err(|source| EngineError::Kafka {
                                during: "seeking back to a record to decode again".to_owned(),
                                source,
                            })?;
                        break;
                    }
                    Ok(Accepted::RegistryRefused(reason)) => {
                        return Err(EngineError::Setup(format!(
                            "the schema registry refused the credentials: {reason}"
                        )));
                    }
                    Err(KafkaError::PartitionEOF(_)) => {}
                    Err(error) if crate::kafka::is_transient(&error) => {
                        self.engine
                            .metrics
                            .dependencies
                            .unreachable(dependency::BROKER, &error);
                    }
                    Err(error) => {
                        if let KafkaError::MessageConsumptionFatal(code) = error {
                            return Err(if code == RDKafkaErrorCode::FencedInstanceId {
                                EngineError::Fenced(format!(
                                    "another instance joined the group as {}: {error}",
                                    self.engine.config.instance_id
                                ))
                            } else {
                                EngineError::Kafka {
                                    during: "consuming".to_owned(),
                                    source: error,
                                }
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
            self.watch_broker()?;
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
}
