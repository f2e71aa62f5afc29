//! The engine's Kafka clients: their settings, their callbacks (rebalances queued for the
//! loop, lag to the metrics; the restore consumer quiet at a partition's end), and the
//! internal topics (changelogs, dead letters) it creates.

use rdkafka::config::RDKafkaLogLevel;

use super::*;
use crate::kafka::Rebalances;

pub(super) enum Rebalanced {
    Revoked,
    Assigned(Vec<i32>),
}

/// Consumer callbacks: rebalances are queued for the loop, lag goes to the metrics.
pub(super) struct EngineContext {
    pub(super) events: Rebalances<Rebalanced>,
    pub(super) metrics: Metrics,
    pub(super) inputs: Vec<String>,
}

impl ClientContext for EngineContext {
    fn stats(&self, statistics: Statistics) {
        self.metrics.record_lag(&statistics, &self.inputs);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::client_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::kafka::client_error(&self.metrics.dependencies, &error, reason);
    }
}

impl ConsumerContext for EngineContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            self.events.push(Rebalanced::Revoked);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions: BTreeSet<i32> =
                    list.elements().iter().map(|e| e.partition()).collect();
                self.events
                    .push(Rebalanced::Assigned(partitions.into_iter().collect()));
            }
            Rebalance::Error(error) => warn!(%error, "Rebalance failed."),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// The restore consumer's callbacks: reaching a partition's end is expected, not an error;
/// the broker going away is recorded.
pub(super) struct RestoreContext {
    pub(super) metrics: Metrics,
}

impl ClientContext for RestoreContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::client_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let end_of_partition = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !end_of_partition {
            crate::kafka::client_error(&self.metrics.dependencies, &error, reason);
        }
    }
}

impl ConsumerContext for RestoreContext {}

impl<P, C> Engine<P, C>
where
    P: Processor,
    C: Codec<In = P::In, Out = P::Out>,
{
    pub(super) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        _ = config.set("bootstrap.servers", &self.config.bootstrap_servers);
        config
    }

    pub(super) fn with_passthrough(&self, mut config: ClientConfig) -> ClientConfig {
        self.config.kafka.apply(&mut config);
        config
    }

    /// Runs until SIGTERM (returns `Ok`) or a fatal error.
    pub(super) fn changelog(&self, store: &str) -> String {
        self.topology.changelog_topic(self.processor.name(), store)
    }

    pub(super) fn dead_letter_topic(&self) -> String {
        self.topology.dead_letter_topic(self.processor.name())
    }

    pub(super) fn create_internal_topics(&self, partitions: i32) -> Result<(), EngineError> {
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
        for topic in self.processor.output_topics() {
            specs.push(self.topology.output_spec(topic, env).map_err(setup)?);
        }
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
                Ok(topic) => info!(%topic, "Topic created."),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(EngineError::Setup(format!("create {topic}: {code}")));
                }
            }
        }
        Ok(())
    }
}

pub(super) fn topic_partitions<X: ConsumerContext>(
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
