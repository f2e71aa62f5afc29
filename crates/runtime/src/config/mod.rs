//! A processor's configuration: defaults here, then a YAML file, then `HABITAT_*`
//! environment variables, then flags (see [`crate::runner`]).

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::codec::CodecError;

mod env;

pub use env::{EnvUse, LOG_VARIABLES, apply_env_fields, process_variables, redacted};

/// Why a program cannot have its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    /// A variable or flag whose value does not parse; `shown` names it (with its value
    /// unless the value is a secret).
    #[error("{shown}: {source}")]
    Value {
        shown: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{}: {key}: {why}", path.display())]
    FileSetting {
        path: PathBuf,
        key: String,
        why: String,
    },
    #[error("expected KEY=VALUE, got {0}")]
    NotKeyValue(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl ConfigError {
    /// A `HABITAT_<field>` variable whose value does not parse (the value is shown).
    pub fn variable(
        field: &str,
        value: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Value {
            shown: format!("HABITAT_{field}={value}"),
            source: source.into(),
        }
    }

    /// A secret `HABITAT_<field>` variable whose value does not parse (the value is not shown).
    pub fn secret(
        field: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Value {
            shown: format!("HABITAT_{field}"),
            source: source.into(),
        }
    }
}

/// Everything a processor process is configured with.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// Consumer group; the processor's name when unset.
    pub group_id: Option<String>,
    /// This instance's stable id. The transactional id is `<processor>-<instance_id>`:
    /// keep it across restarts so a restarted instance fences its predecessor at once.
    pub instance_id: String,
    /// Join the group as a static member (`group.instance.id` = the transactional id): a
    /// restarted instance takes its predecessor's place at once, without a rebalance; but a
    /// stopped one does not leave the group, so its partitions move only after
    /// `session_timeout_ms`. Off: SIGTERM leaves the group and hands the partitions over.
    pub static_membership: bool,
    /// Input topics; by default the context topics whose records name this processor as
    /// a reader in `topics.yaml`.
    pub inputs: Vec<String>,
    /// Exactly-once (transactions) when true; at-least-once (offsets committed after the
    /// outputs are flushed) when false — for comparison only.
    pub exactly_once: bool,
    /// A transaction is committed this often while there is work…
    pub commit_interval_ms: u64,
    /// …or after this many records, whichever comes first…
    pub commit_max_records: usize,
    /// …or as soon as no input has arrived for this long (the processor has caught up), so
    /// a quiet stream's records are not held for the whole interval. Under load input never
    /// pauses and batches grow to the interval; 0 turns this off.
    pub commit_idle_ms: u64,
    /// How long a partition with several inputs waits for an empty input that is caught
    /// up (read to its end) before merging without it. An empty input that is behind
    /// always holds the merge, however long.
    pub max_task_idle_ms: u64,
    /// Records buffered per input partition before its fetching is paused.
    pub max_buffered_records: usize,
    /// `transaction.timeout.ms` of the producer.
    pub transaction_timeout_ms: u64,
    /// How long the broker or the schema registry may stay unreachable before the
    /// process gives up and exits (its supervisor restarts it); until then it waits,
    /// not ready.
    pub give_up_seconds: u64,
    /// `session.timeout.ms` of the consumer: how soon a dead instance's partitions move.
    pub session_timeout_ms: u64,
    /// How long restoring the stores of an assignment may take.
    pub restore_timeout_ms: u64,
    /// Schema registry URL (Avro processors).
    pub schema_registry_url: Option<String>,
    /// HTTP Basic credentials for the schema registry, `user:password`
    /// (`HABITAT_SCHEMA_REGISTRY_AUTH`); the registry requires them for writes.
    pub schema_registry_auth: Option<RegistryAuth>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// The `topics.yaml` environment internal topics are created for.
    pub environment: String,
    /// Create changelog and dead-letter topics that are missing.
    pub create_internal_topics: bool,
    /// Timers run on the wall clock moved by this many seconds (tests, replays).
    pub clock_offset_seconds: i64,
    /// librdkafka settings passed to every client (`security.protocol`, `sasl.*`,
    /// `ssl.*`…); they win over the runtime's own.
    pub kafka: KafkaSettings,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:19092".to_owned(),
            group_id: None,
            instance_id: "0".to_owned(),
            inputs: Vec::new(),
            static_membership: false,
            exactly_once: true,
            commit_interval_ms: 100,
            commit_max_records: 10_000,
            commit_idle_ms: 5,
            max_task_idle_ms: 20,
            max_buffered_records: 10_000,
            transaction_timeout_ms: 10_000,
            give_up_seconds: crate::retry::DEFAULT_GIVE_UP.as_secs(),
            session_timeout_ms: 10_000,
            restore_timeout_ms: 120_000,
            schema_registry_url: None,
            schema_registry_auth: None,
            metrics_listen: None,
            environment: "dev".to_owned(),
            create_internal_topics: true,
            clock_offset_seconds: 0,
            kafka: KafkaSettings::default(),
        }
    }
}

impl RuntimeConfig {
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms)
    }

    /// The retry policy for unreachable dependencies.
    pub fn retry_policy(&self) -> crate::retry::RetryPolicy {
        crate::retry::RetryPolicy::giving_up_after(Duration::from_secs(self.give_up_seconds))
    }

    pub fn commit_idle(&self) -> Duration {
        Duration::from_millis(self.commit_idle_ms)
    }

    pub fn max_task_idle(&self) -> Duration {
        Duration::from_millis(self.max_task_idle_ms)
    }

    /// Reads a YAML file over the defaults.
    pub fn from_yaml(text: &str) -> Result<Self, serde_norway::Error> {
        serde_norway::from_str(text)
    }

    /// Applies `HABITAT_*` variables from `vars`: `HABITAT_<FIELD>` for every setting
    /// (`HABITAT_COMMIT_INTERVAL_MS`, `HABITAT_STATIC_MEMBERSHIP`, `HABITAT_INPUTS` as a
    /// comma-separated list…) and `HABITAT_KAFKA_<NAME>` for a librdkafka setting
    /// (`HABITAT_KAFKA_SASL_PASSWORD` → `sasl.password`). Returns the names it read.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<String>, ConfigError> {
        apply_env_fields(self, vars, &[])
    }
}

/// HTTP Basic credentials for the schema registry, written `user:password` (as Confluent's
/// `basic.auth.user.info`); the password never prints.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegistryAuth {
    pub user: String,
    pub password: String,
}

impl std::str::FromStr for RegistryAuth {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (user, password) = text
            .trim_end()
            .split_once(':')
            .filter(|(user, _)| !user.is_empty())
            .ok_or("credentials are written user:password")?;
        Ok(Self {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }
}

impl TryFrom<String> for RegistryAuth {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<RegistryAuth> for String {
    fn from(auth: RegistryAuth) -> Self {
        format!("{}:{}", auth.user, auth.password)
    }
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:***", self.user)
    }
}

/// A URL with its password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<not a URL>".to_owned(),
    }
}

/// librdkafka settings; values of secret-looking keys never print.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct KafkaSettings(pub BTreeMap<String, String>);

impl KafkaSettings {
    pub fn is_secret(key: &str) -> bool {
        ["password", "secret", "jaas", "key.pem", "token"]
            .iter()
            .any(|s| key.contains(s))
    }

    /// Takes `KAFKA_<NAME>` (a `HABITAT_` variable without its prefix) as the librdkafka
    /// setting `<name>` with `_` read as `.`; ignores any other name.
    /// `false` (and nothing changed) for any other name.
    pub fn apply_env(&mut self, field: &str, value: String) -> bool {
        let Some(setting) = field.strip_prefix("KAFKA_") else {
            return false;
        };
        let key = setting.to_ascii_lowercase().replace('_', ".");
        _ = self.0.insert(key, value);
        true
    }

    /// Applies every setting to a client configuration.
    pub fn apply(&self, config: &mut rdkafka::ClientConfig) {
        for (key, value) in &self.0 {
            _ = config.set(key, value);
        }
    }
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if Self::is_secret(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k, shown)
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_env_and_secrets() {
        let mut config = RuntimeConfig::from_yaml(
            "bootstrap_servers: kafka:9092\ncommit_interval_ms: 250\nkafka:\n  security.protocol: SASL_SSL\n",
        )
        .expect("valid yaml");
        config
            .apply_env([
                ("HABITAT_INSTANCE_ID".to_owned(), "pod-3".to_owned()),
                (
                    "HABITAT_KAFKA_SASL_PASSWORD".to_owned(),
                    "hunter2".to_owned(),
                ),
                ("PATH".to_owned(), "/bin".to_owned()),
                (
                    "HABITAT_SCHEMA_REGISTRY_AUTH".to_owned(),
                    "habitat:s3cr:et".to_owned(),
                ),
            ])
            .expect("valid env");
        let auth = config.schema_registry_auth.clone().expect("registry auth");
        assert_eq!(
            (auth.user.as_str(), auth.password.as_str()),
            ("habitat", "s3cr:et")
        );
        assert_eq!(config.bootstrap_servers, "kafka:9092");
        assert_eq!(config.commit_interval(), Duration::from_millis(250));
        assert_eq!(config.instance_id, "pod-3");
        assert_eq!(config.kafka.0["sasl.password"], "hunter2");
        assert_eq!(config.kafka.0["security.protocol"], "SASL_SSL");
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("s3cr"), "{printed}");
        assert!(printed.contains("habitat:***"), "{printed}");
        assert!(":nobody".parse::<RegistryAuth>().is_err());
        assert!("nobody".parse::<RegistryAuth>().is_err());
        assert!(printed.contains("SASL_SSL"));
    }

    /// Production clusters: TLS with SASL SCRAM, OAUTHBEARER through an OIDC token
    /// endpoint, and zstd compression — librdkafka refuses a setting it was built without
    /// when the client is created.
    #[test]
    fn clients_take_tls_sasl_oauthbearer_oidc_and_zstd() {
        use rdkafka::producer::BaseProducer;
        let sets: [&[(&str, &str)]; 3] = [
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "habitat"),
                ("sasl.password", "secret"),
            ],
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "OAUTHBEARER"),
                ("sasl.oauthbearer.method", "oidc"),
                ("sasl.oauthbearer.client.id", "habitat"),
                ("sasl.oauthbearer.client.secret", "secret"),
                (
                    "sasl.oauthbearer.token.endpoint.url",
                    "https://127.0.0.1:1/token",
                ),
            ],
            &[("compression.type", "zstd")],
        ];
        for set in sets {
            let settings = KafkaSettings(
                set.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            );
            let mut config = rdkafka::ClientConfig::new();
            _ = config.set("bootstrap.servers", "127.0.0.1:1");
            settings.apply(&mut config);
            let created = config.create::<BaseProducer>();
            assert!(created.is_ok(), "{set:?}: {:?}", created.err());
        }
        let mut config = rdkafka::ClientConfig::new();
        _ = config.set("security.protocol", "NOT-A-PROTOCOL");
        assert!(config.create::<BaseProducer>().is_err());
    }
    #[test]
    fn unknown_fields_are_refused() {
        let error = RuntimeConfig::from_yaml("comit_interval_ms: 5\n").expect_err("typo");
        assert!(error.to_string().contains("comit_interval_ms"), "{error}");
    }
}
