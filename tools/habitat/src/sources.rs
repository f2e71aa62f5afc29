//! Where the sink's commands read from: its Postgres (URL and schema) and the Kafka cluster
//! with its registry; a small runtime and a pool for a command.

use anyhow::{Context, Result};
use clap::Args;
use habitat_runtime::config::{KafkaSettings, RegistryAuth};
use postgres_sink::store::options;
use sqlx::PgPool;

/// The Postgres the sink writes to.
#[derive(Clone, Debug, Args)]
pub struct Database {
    /// Postgres URL (default: the local stack's).
    #[arg(
        long,
        env = "HABITAT_DATABASE_URL",
        default_value = "postgres://habitat@127.0.0.1:15432/habitat"
    )]
    pub database_url: String,
    /// Schema of the sink's tables.
    #[arg(long, env = "HABITAT_SINK_SCHEMA", default_value = postgres_sink::DEFAULT_SCHEMA)]
    pub schema: String,
}

/// The Kafka cluster and registry the topics are read from.
#[derive(Clone, Debug, Args)]
pub struct Topics {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "HABITAT_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:19092"
    )]
    pub bootstrap: String,
    /// Schema registry URL.
    #[arg(
        long,
        env = "HABITAT_SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:18081"
    )]
    pub registry: String,
    /// The registry's HTTP Basic credentials, `user:password`.
    #[arg(long, env = "HABITAT_SCHEMA_REGISTRY_AUTH", hide_env_values = true)]
    pub registry_auth: Option<RegistryAuth>,
    /// A librdkafka setting for the cluster, KEY=VALUE (repeat; `security.protocol`,
    /// `sasl.*`, `ssl.*`); `HABITAT_KAFKA_<NAME>` variables too.
    #[arg(long = "kafka", value_parser = habitat_runtime::runner::key_value)]
    pub kafka: Vec<(String, String)>,
}

impl Topics {
    /// The librdkafka settings: `HABITAT_KAFKA_*` variables, then `--kafka` flags.
    pub fn settings(&self) -> KafkaSettings {
        kafka_settings(&self.kafka)
    }
}

/// `HABITAT_KAFKA_*` variables, then `flags` over them.
pub fn kafka_settings(flags: &[(String, String)]) -> KafkaSettings {
    let mut settings = KafkaSettings::default();
    for (name, value) in std::env::vars() {
        if let Some(field) = name.strip_prefix("HABITAT_") {
            _ = settings.apply_env(field, value);
        }
    }
    settings.0.extend(flags.iter().cloned());
    settings
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub async fn pool(database: &Database) -> Result<PgPool> {
    postgres_sink::store::check_schema_name(&database.schema)?;
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options(&database.database_url, &database.schema)?)
        .await
        .with_context(|| {
            format!(
                "cannot connect to {}",
                postgres_sink::config::redact_url(&database.database_url)
            )
        })
}
