//! The sink's configuration: defaults here, then a YAML file, then `HABITAT_*` variables,
//! then flags (see `main.rs`).

use std::{fmt, net::SocketAddr, time::Duration};

use contracts::topology::Topology;
use habitat_runtime::config::ConfigError;
pub use habitat_runtime::config::redact_url;
use habitat_runtime::config::{KafkaSettings, RegistryAuth};
use serde::{Deserialize, Serialize};

/// Everything the sink process is configured with.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// Consumer group, and the sink's name in `sink_offsets`.
    pub group_id: String,
    /// Postgres to write to (`postgres://user:password@host:port/database`).
    pub database_url: Option<String>,
    /// The Postgres schema of the tables (created and migrated on start).
    pub schema: String,
    /// Schema registry URL.
    pub schema_registry_url: Option<String>,
    /// HTTP Basic credentials for the registry, `user:password`.
    pub schema_registry_auth: Option<RegistryAuth>,
    /// Topics read; by default the context topics and every processor's dead-letter topic.
    pub inputs: Vec<String>,
    /// A batch (one Postgres transaction) is written after this many records…
    pub batch_max_records: usize,
    /// …or when the oldest record in it has waited this long…
    pub batch_interval_ms: u64,
    /// …or when nothing new has come for this long and Postgres is not busy with the batch
    /// before (the sink has caught up): a quiet stream is written at once. 0 turns this off.
    pub batch_idle_ms: u64,
    /// …or when the batch is this old and Postgres is not busy with the batch before, even
    /// if records keep coming: under a steady stream batches are written as Postgres
    /// frees, growing while the last is written (they size themselves to Postgres' pace).
    /// 0 turns this off.
    pub batch_linger_ms: u64,
    /// Postgres transactions a batch is written in at once, each on its own connection:
    /// the batch's partitions are split between them, and each transaction carries its
    /// partitions' rows and offsets (a key lives in one partition, so they never touch the
    /// same row).
    pub writers: usize,
    /// `session.timeout.ms` of the consumer.
    pub session_timeout_ms: u64,
    /// How long the broker, Postgres or the registry may stay unreachable before the sink
    /// gives up and exits (its supervisor restarts it); until then it waits, not ready.
    pub give_up_seconds: u64,
    /// How often the books' invariants (`invariant_breaks`) are counted into
    /// `habitat_books_breaks`, in seconds; 0: never.
    pub books_check_seconds: u64,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// librdkafka settings for the consumer (`security.protocol`, `sasl.*`…).
    pub kafka: KafkaSettings,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:19092".to_owned(),
            group_id: crate::SINK.to_owned(),
            database_url: None,
            schema: crate::DEFAULT_SCHEMA.to_owned(),
            schema_registry_url: None,
            schema_registry_auth: None,
            inputs: Vec::new(),
            batch_max_records: 10_000,
            batch_interval_ms: 100,
            batch_idle_ms: 5,
            batch_linger_ms: 20,
            writers: 2,
            session_timeout_ms: 10_000,
            give_up_seconds: habitat_runtime::retry::DEFAULT_GIVE_UP.as_secs(),
            books_check_seconds: 300,
            metrics_listen: None,
            kafka: KafkaSettings::default(),
        }
    }
}

impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("schema", &self.schema)
            .field("schema_registry_url", &self.schema_registry_url)
            .field("schema_registry_auth", &self.schema_registry_auth)
            .field("inputs", &self.inputs)
            .field("batch_max_records", &self.batch_max_records)
            .field("batch_interval_ms", &self.batch_interval_ms)
            .field("batch_idle_ms", &self.batch_idle_ms)
            .field("batch_linger_ms", &self.batch_linger_ms)
            .field("writers", &self.writers)
            .field("give_up_seconds", &self.give_up_seconds)
            .field("books_check_seconds", &self.books_check_seconds)
            .field("metrics_listen", &self.metrics_listen)
            .field("kafka", &self.kafka)
            .finish()
    }
}

impl SinkConfig {
    pub fn from_yaml(text: &str) -> Result<Self, serde_norway::Error> {
        serde_norway::from_str(text)
    }

    pub fn batch_interval(&self) -> Duration {
        Duration::from_millis(self.batch_interval_ms)
    }

    pub fn batch_idle(&self) -> Duration {
        Duration::from_millis(self.batch_idle_ms)
    }

    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    /// `writers`, at least one.
    pub fn writers(&self) -> usize {
        self.writers.max(1)
    }

    /// The topics to read: `inputs`, or the defaults of `topology`.
    pub fn topics(&self, topology: &Topology) -> Vec<String> {
        if !self.inputs.is_empty() {
            return self.inputs.clone();
        }
        let mut topics = topology.inputs_of(crate::SINK);
        topics.extend(
            topology
                .processors
                .iter()
                .map(|p| topology.dead_letter_topic(p)),
        );
        topics
    }

    /// The retry policy for unreachable dependencies.
    pub fn retry_policy(&self) -> habitat_runtime::retry::RetryPolicy {
        habitat_runtime::retry::RetryPolicy::giving_up_after(Duration::from_secs(
            self.give_up_seconds,
        ))
    }

    /// Applies `HABITAT_BOOTSTRAP_SERVERS`, `HABITAT_GROUP_ID`, `HABITAT_DATABASE_URL`,
    /// `HABITAT_SINK_SCHEMA`, `HABITAT_SCHEMA_REGISTRY_URL`, `HABITAT_METRICS_LISTEN`,
    /// `HABITAT_BATCH_MAX_RECORDS`, `HABITAT_BATCH_INTERVAL_MS`, `HABITAT_BATCH_IDLE_MS`,
    /// `HABITAT_BATCH_LINGER_MS`, `HABITAT_WRITERS`, `HABITAT_SESSION_TIMEOUT_MS`, `HABITAT_GIVE_UP_SECONDS`,
    /// `HABITAT_BOOKS_CHECK_SECONDS` and
    /// `HABITAT_KAFKA_<NAME>`. Returns the names it read.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<String>, ConfigError> {
        habitat_runtime::config::apply_env_fields(self, vars, &[("SINK_SCHEMA", "schema")])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_read_every_context_topic_and_every_dead_letter_topic() {
        let topics = SinkConfig::default().topics(&Topology::embedded());
        for topic in [
            "habitat.people",
            "habitat.treasury",
            "habitat.agreements",
            "habitat.dlq.patronage-aggregator",
            "habitat.dlq.distribution-recorder",
        ] {
            assert!(topics.iter().any(|t| t == topic), "{topic} in {topics:?}");
        }
    }

    #[test]
    fn env_overrides_and_the_password_never_prints() {
        let mut config = SinkConfig::from_yaml("schema: finance_a\nbatch_max_records: 500\n")
            .expect("valid yaml");
        config
            .apply_env([
                (
                    "HABITAT_DATABASE_URL".to_owned(),
                    "postgres://sink:s3cret@db:5432/habitat".to_owned(),
                ),
                ("HABITAT_BATCH_INTERVAL_MS".to_owned(), "20".to_owned()),
                ("HABITAT_WRITERS".to_owned(), "3".to_owned()),
                (
                    "HABITAT_KAFKA_SASL_PASSWORD".to_owned(),
                    "hunter2".to_owned(),
                ),
            ])
            .expect("valid env");
        assert_eq!(config.schema, "finance_a");
        assert_eq!(config.batch_max_records, 500);
        assert_eq!(config.batch_interval(), Duration::from_millis(20));
        assert_eq!(config.writers(), 3);
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("s3cret") && !printed.contains("hunter2"),
            "{printed}"
        );
        assert!(printed.contains("db:5432/habitat"), "{printed}");
        let error = config
            .apply_env([("HABITAT_BATCH_MAX_RECORDS".to_owned(), "many".to_owned())])
            .expect_err("not a number")
            .to_string();
        assert!(
            error.starts_with("HABITAT_BATCH_MAX_RECORDS=many: "),
            "{error}"
        );
    }
}
